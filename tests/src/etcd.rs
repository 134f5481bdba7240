//! A real single-member etcd for a test: its own data directory and loopback ports, started
//! from the binary `KILN_ETCD` names (scripts/test sets it), killed and reaped on drop.
//! `restart` keeps the data, as a restarted etcd of a real cluster does.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cluster::Reaped;
use crate::wait_until;

/// A running etcd.
pub struct Etcd {
    process: Option<Reaped>,
    data: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Etcd {
    /// Starts etcd on fresh loopback ports and waits until it reports healthy.
    pub fn start() -> Etcd {
        let mut etcd = Etcd {
            process: None,
            data: tempfile::tempdir().expect("tempdir"),
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.spawn();
        etcd
    }

    /// The client URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn log(&self) -> PathBuf {
        self.data.path().join("etcd.log")
    }

    fn spawn(&mut self) {
        let binary = std::env::var("KILN_ETCD").unwrap_or_else(|_| {
            panic!("KILN_ETCD is not set: run the suite with ./scripts/test, which installs etcd")
        });
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.log()).expect("etcd log");
        let child = Command::new(&binary)
            .args(["--name", "t0", "--data-dir"])
            .arg(self.data.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("t0={peer}")])
            .args([
                "--initial-cluster-state",
                "new",
                "--logger=zap",
                "--log-level=warn",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
        self.process = Some(Reaped(child));
        let addr = format!("127.0.0.1:{}", self.client_port);
        wait_until(Duration::from_secs(30), "etcd to report healthy", || {
            health(&addr).ok_or_else(|| std::fs::read_to_string(self.log()).unwrap_or_default())
        });
    }

    /// Kills etcd (SIGKILL) and starts it again on the same data and ports.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Kills etcd (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        drop(self.process.take());
    }
}

/// `Some` once etcd's `/health` says so.
fn health(addr: &str) -> Option<()> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    body.contains("\"health\":\"true\"").then_some(())
}
