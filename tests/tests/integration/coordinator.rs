//! A standalone `kiln coordinator` with workers started by hand: submit/follow, status, and the
//! join token check.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_tests::{Sandbox, bin, blobs_job_hcl, cluster_hcl, describe, wait_with_timeout};

/// Kills and reaps the child when dropped, so a failing test leaves nothing behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn worker(sandbox: &Sandbox, url: &str, token_file: &str, name: &str) -> Command {
    let mut cmd = Command::new(bin("kiln-worker"));
    cmd.args(["--coordinator", url, "--join-token-file", token_file])
        .env("KILN_NODE_NAME", name)
        .env("KILN_TEST_TAG", &sandbox.tag)
        .env_remove("KILN_JOIN_TOKEN")
        .current_dir(sandbox.path())
        .stdin(Stdio::null());
    cmd
}

#[test]
fn submit_follow_and_status_against_a_standalone_coordinator() {
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        ("job.hcl", &blobs_job_hcl("remote", 2, 1024, 2, 10)),
        ("token", "s3cret\n"),
        ("wrong-token", "guess\n"),
    ]);
    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{listen}");
    let _coordinator = Reaped(
        sandbox
            .kiln(&[
                "coordinator",
                "--listen",
                &listen,
                "--state",
                "state",
                "--join-token-file",
                "token",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start coordinator"),
    );

    // A worker with the wrong token is refused and exits with the reason.
    let refused = worker(&sandbox, &url, "wrong-token", "intruder")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn worker");
    let out = wait_with_timeout(refused, Duration::from_secs(30)).expect("refused worker exits");
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid join token"),
        "{}",
        describe(&out)
    );

    let _workers: Vec<Reaped> = ["a", "b"]
        .iter()
        .map(|n| {
            Reaped(
                worker(&sandbox, &url, "token", n)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn worker"),
            )
        })
        .collect();

    let out = sandbox
        .run(
            &["submit", "job.hcl", "--follow", "--coordinator", &url],
            Duration::from_secs(120),
        )
        .expect("submit finishes");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("submitted remote-1"));

    let out = sandbox
        .run(
            &["status", "remote-1", "--json", "--coordinator", &url],
            Duration::from_secs(30),
        )
        .expect("status finishes");
    assert!(out.status.success(), "{}", describe(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["workers"].as_array().map(Vec::len), Some(2));
    assert!(
        status["checkpoint_url"]
            .as_str()
            .is_some_and(|u| u.ends_with("manifest.json"))
    );

    let out = sandbox
        .run(
            &["status", "no-such-job", "--coordinator", &url],
            Duration::from_secs(30),
        )
        .expect("status finishes");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown job"),
        "{}",
        describe(&out)
    );

    // Stopping the coordinator makes its workers exit on their own.
    drop(_coordinator);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sandbox.processes().is_empty() {
        assert!(
            Instant::now() < deadline,
            "workers outlived their coordinator"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
