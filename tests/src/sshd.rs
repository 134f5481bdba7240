//! Real `sshd` daemons on the namespace hosts ([`crate::hosts`]), for the `ssh` provider's
//! tests: a client key and host keys made by the test (`ssh-keygen`), an `authorized_keys`
//! and a `known_hosts` file naming each host's key. Every daemon is stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cluster::Reaped;
use crate::hosts::Host;
use crate::{Sandbox, wait_until};

/// The port the daemons listen on (not 22, so `port` is exercised).
pub const PORT: u16 = 2222;

/// sshd on some hosts, and the client's files, under `<sandbox>/ssh/`.
pub struct Sshd {
    /// The client's private key (authorized on every host).
    pub identity_file: PathBuf,
    /// Every host's key, as `[IP]:PORT KEY` lines.
    pub known_hosts_file: PathBuf,
    _daemons: Vec<Reaped>,
}

fn keygen(path: &Path) -> String {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen (Debian: openssh-client)");
    assert!(status.success(), "ssh-keygen failed");
    let public = std::fs::read_to_string(path.with_extension("pub")).expect("public key");
    // `TYPE KEY COMMENT` → `TYPE KEY`.
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Sshd {
    /// Starts sshd on each of `hosts` (port [`PORT`]), accepting a key made here.
    pub fn start(sandbox: &Sandbox, hosts: &[&Host]) -> Sshd {
        let dir = sandbox.path().join("ssh");
        std::fs::create_dir_all(&dir).expect("ssh dir");
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let identity_file = dir.join("client_key");
        let client = keygen(&identity_file);
        std::fs::write(dir.join("authorized_keys"), format!("{client}\n")).expect("authorized");
        let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("sshd (Debian: openssh-server)");
        let mut known = String::new();
        let mut daemons = Vec::new();
        for host in hosts {
            let key = dir.join(format!("host_key_{}", host.ns));
            known.push_str(&format!("[{}]:{PORT} {}\n", host.ip, keygen(&key)));
            let config = dir.join(format!("sshd_{}.conf", host.ns));
            std::fs::write(
                &config,
                format!(
                    "ListenAddress {ip}:{PORT}\nHostKey {key}\nAuthorizedKeysFile {dir}/authorized_keys\n\
                     PidFile {dir}/sshd_{ns}.pid\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n",
                    ip = host.ip,
                    key = key.display(),
                    dir = dir.display(),
                    ns = host.ns,
                ),
            )
            .expect("sshd config");
            let log =
                std::fs::File::create(dir.join(format!("sshd_{}.log", host.ns))).expect("log");
            let child = host
                .command(sandbox, Path::new(sshd), &["-D", "-e", "-f"])
                .arg(&config)
                // The daemon is not the test's to count among its leftovers.
                .env_remove("KILN_TEST_TAG")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("sshd");
            daemons.push(Reaped(child));
            let addr = format!("{}:{PORT}", host.ip);
            wait_until(Duration::from_secs(20), "sshd to listen", || {
                std::net::TcpStream::connect_timeout(
                    &addr.parse().expect("address"),
                    Duration::from_millis(200),
                )
                .map(drop)
                .map_err(|e| e.to_string())
            });
        }
        let known_hosts_file = dir.join("known_hosts");
        std::fs::write(&known_hosts_file, known).expect("known_hosts");
        Sshd {
            identity_file,
            known_hosts_file,
            _daemons: daemons,
        }
    }
}
