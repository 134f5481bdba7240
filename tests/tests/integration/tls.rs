//! TLS between workers, clients and the coordinator: `kiln tls init` makes a cluster's CA and
//! the coordinator's certificate (files 0600, never overwritten); a cluster whose
//! `coordinator` block has `tls` trains under `kiln up` and under `kiln apply` over https,
//! workers and the CLI verifying the coordinator against the CA. Plaintext to a TLS port, a
//! missing CA and a foreign CA each fail at once with a message that says what to do.

use std::os::unix::fs::PermissionsExt;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use kiln_tests::{Destroyed, Sandbox, blobs_job_hcl, describe, wait_with_timeout};

const T: Duration = Duration::from_secs(120);

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A one-node cluster whose coordinator serves TLS with the files of `kiln tls init tls`.
fn tls_cluster() -> String {
    r#"cluster "local" {
  provider = "local"
  node_pool "cpu" {
    count = 1
  }
  coordinator {
    tls {
      cert_file = "tls/coordinator.pem"
      key_file  = "tls/coordinator-key.pem"
      ca_file   = "tls/ca.pem"
    }
  }
}
"#
    .to_owned()
}

fn init(sandbox: &Sandbox) {
    let out = sandbox.run(&["tls", "init", "tls"], T).expect("tls init");
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn tls_init_writes_owner_only_files_and_never_overwrites() {
    let sandbox = Sandbox::new();
    let out = sandbox
        .run(
            &["tls", "init", "tls", "--host", "kiln.internal", "--json"],
            T,
        )
        .expect("tls init");
    assert!(out.status.success(), "{}", describe(&out));
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        made["hosts"],
        serde_json::json!(["localhost", "127.0.0.1", "::1", "kiln.internal"])
    );
    for file in [
        "ca.pem",
        "ca-key.pem",
        "coordinator.pem",
        "coordinator-key.pem",
    ] {
        let path = sandbox.path().join("tls").join(file);
        let mode = std::fs::metadata(&path)
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let before = std::fs::read(sandbox.path().join("tls/ca-key.pem")).expect("key");
    let again = sandbox.run(&["tls", "init", "tls"], T).expect("tls init");
    assert_eq!(again.status.code(), Some(2), "{}", describe(&again));
    assert!(
        stderr(&again).contains("never overwrites"),
        "{}",
        describe(&again)
    );
    assert_eq!(
        std::fs::read(sandbox.path().join("tls/ca-key.pem")).expect("key"),
        before,
        "the CA's key is as it was"
    );
}

#[test]
fn kiln_up_trains_over_tls() {
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &tls_cluster()),
        ("job.hcl", &blobs_job_hcl("tls", 1, 256, 2, 4)),
    ]);
    init(&sandbox);
    let out = sandbox.run(&["up", "."], T).expect("kiln up");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("coordinator on https://"),
        "{}",
        describe(&out)
    );
}

#[test]
fn an_applied_tls_cluster_serves_verified_clients_and_refuses_the_rest_at_once() {
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &tls_cluster()),
        ("job.hcl", &blobs_job_hcl("tls", 1, 256, 2, 4)),
    ]);
    init(&sandbox);
    let _destroy = Destroyed(&sandbox);
    let out = sandbox.run(&["apply", "--auto-approve"], T).expect("apply");
    assert!(out.status.success(), "{}", describe(&out));
    // Workers verify the coordinator with the CA the provider handed them; the CLI with the
    // one apply recorded.
    let out = sandbox
        .run(&["submit", ".", "--follow"], T)
        .expect("submit");
    assert!(out.status.success(), "{}", describe(&out));

    let state =
        String::from_utf8_lossy(&sandbox.run(&["state"], T).expect("state").stdout).into_owned();
    let url = state
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap_or_else(|| panic!("an https URL in `kiln state`:\n{state}"))
        .trim_end_matches([',', ')'])
        .to_owned();
    let plaintext = url.replacen("https://", "http://", 1);
    let started = Instant::now();
    let out = sandbox
        .run(&["status", "--coordinator", &plaintext], T)
        .expect("status");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "no hang: {:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(stderr(&out).contains("https:// URL"), "{}", describe(&out));

    let out = sandbox
        .run(&["status", "--coordinator", &url], T)
        .expect("status");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(stderr(&out).contains("--tls-ca-file"), "{}", describe(&out));

    let out = sandbox
        .run(&["tls", "init", "foreign"], T)
        .expect("tls init");
    assert!(out.status.success(), "{}", describe(&out));
    let out = sandbox
        .run(
            &[
                "status",
                "--coordinator",
                &url,
                "--tls-ca-file",
                "foreign/ca.pem",
            ],
            T,
        )
        .expect("status");
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(stderr(&out).contains("certificate"), "{}", describe(&out));

    let out = sandbox
        .run(
            &[
                "status",
                "tls-1",
                "--coordinator",
                &url,
                "--tls-ca-file",
                "tls/ca.pem",
            ],
            T,
        )
        .expect("status");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("succeeded"),
        "{}",
        describe(&out)
    );

    // A worker given no CA for the https coordinator is refused before it trains.
    let worker = std::process::Command::new(kiln_tests::bin("kiln-worker"))
        .args(["--coordinator", &url])
        .env("KILN_JOIN_TOKEN", "x")
        .env_remove("KILN_TLS_CA_FILE")
        .env("KILN_TEST_TAG", &sandbox.tag)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("worker");
    let out = wait_with_timeout(worker, Duration::from_secs(20)).expect("the worker exits");
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("--tls-ca-file"), "{}", describe(&out));
    // One that speaks plaintext to the TLS port gives up at its deadline, saying what to check.
    let worker = std::process::Command::new(kiln_tests::bin("kiln-worker"))
        .args(["--coordinator", &plaintext, "--connect-timeout-secs", "2"])
        .env("KILN_JOIN_TOKEN", "x")
        .env("KILN_TEST_TAG", &sandbox.tag)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("worker");
    let out = wait_with_timeout(worker, Duration::from_secs(20)).expect("the worker exits");
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("https:// URL"), "{}", describe(&out));
}
