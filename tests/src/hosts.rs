//! The multi-host harness: "hosts" are network namespaces on one bridge, each with its own
//! loopback-range address (127.30.0.x; scripts/hosts.sh makes them, scripts/test brings them up
//! and down and names them in `KILN_TEST_HOSTS`). A process started on a host runs in its
//! namespace (`ip netns exec`), so traffic between hosts is real TCP over veth links, and a
//! host can be cut off and reconnected (its link down, then up).
//!
//! The namespaces are shared by the whole suite: tests that use them take [`Hosts::lock`].

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};

use crate::Sandbox;

/// One host: its namespace and address.
#[derive(Debug, Clone)]
pub struct Host {
    /// The network namespace.
    pub ns: String,
    /// Its address on the bridge.
    pub ip: String,
}

/// The hosts of `KILN_TEST_HOSTS`, held by one test at a time.
pub struct Hosts {
    /// The hosts, in order.
    pub hosts: Vec<Host>,
    _held: MutexGuard<'static, ()>,
}

static HELD: Mutex<()> = Mutex::new(());

impl Hosts {
    /// Takes the hosts for this test (waiting for another test that holds them).
    pub fn lock() -> Hosts {
        let list = std::env::var("KILN_TEST_HOSTS").unwrap_or_else(|_| {
            panic!("KILN_TEST_HOSTS is not set: run the suite with ./scripts/test, which makes the network namespaces")
        });
        let hosts = list
            .split(',')
            .filter_map(|entry| {
                let (ns, ip) = entry.split_once('=')?;
                Some(Host {
                    ns: ns.to_owned(),
                    ip: ip.to_owned(),
                })
            })
            .collect();
        Hosts {
            hosts,
            _held: HELD
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        }
    }
}

impl Host {
    /// `program args…` on this host, in `sandbox`'s directory and carrying its tag.
    pub fn command(&self, sandbox: &Sandbox, program: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns])
            .arg(program)
            .args(args)
            .env("KILN_TEST_TAG", &sandbox.tag)
            .current_dir(sandbox.path())
            .stdin(Stdio::null());
        cmd
    }

    /// Cuts this host off the bridge (`up = false`) or reconnects it.
    pub fn link(&self, up: bool) {
        let status = Command::new("ip")
            .args(["link", "set", &format!("{}-br", self.ns)])
            .arg(if up { "up" } else { "down" })
            .status()
            .expect("ip link");
        assert!(status.success(), "ip link set {}-br failed", self.ns);
    }
}
