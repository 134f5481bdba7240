//! Client authentication against a coordinator `kiln apply` started: client commands find
//! the client token the coordinator wrote (or take `KILN_TOKEN` / `--token-file`); a call
//! without it, or with a wrong one, is refused `Unauthenticated`. No token or worker secret
//! ever shows in a log, a state file, `kiln state`, a process's arguments or an error.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use kiln_proto::v1::RegisterRequest;
use kiln_tests::cluster::Client;
use kiln_tests::{Destroyed, Sandbox, blobs_job_hcl, cluster_hcl, describe};

const T: Duration = Duration::from_secs(120);

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every file under `dir`, read as bytes.
fn files(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn client_calls_need_the_token_and_no_secret_leaks() {
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(1)),
        ("job.hcl", &blobs_job_hcl("auth", 1, 256, 1, 4)),
    ]);
    let applied = Destroyed(&sandbox);
    let mut outputs = Vec::new();
    let out = sandbox.run(&["apply", "--auto-approve"], T).expect("apply");
    assert!(out.status.success(), "{}", describe(&out));
    outputs.push(out);
    let state = sandbox.path().join(".kiln/state");
    let client_token = std::fs::read_to_string(state.join("client-token")).expect("client token");
    let join_token = std::fs::read_to_string(state.join("join-token")).expect("join token");
    let (client_token, join_token) = (client_token.trim(), join_token.trim());
    use std::os::unix::fs::PermissionsExt;
    for name in ["client-token", "join-token"] {
        let mode = std::fs::metadata(state.join(name))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name} is readable by its owner only");
    }

    // The configuration's own client finds the token the coordinator wrote.
    let out = sandbox
        .run(&["submit", ".", "--follow"], T)
        .expect("submit");
    assert!(out.status.success(), "{}", describe(&out));
    outputs.push(out);
    let url = String::from_utf8_lossy(&sandbox.run(&["state"], T).expect("state").stdout)
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("the coordinator's URL in `kiln state`")
        .trim_end_matches([',', ')'])
        .to_owned();

    // From elsewhere, without a token: refused, saying how to present one.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let elsewhere = elsewhere.path().to_str().expect("UTF-8 path");
    let out = sandbox
        .run(&["status", "--coordinator", &url, "-C", elsewhere], T)
        .expect("status");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(text(&out).contains("KILN_TOKEN"), "{}", describe(&out));
    outputs.push(out);
    // A wrong token is refused too; the right one from KILN_TOKEN or --token-file admits.
    std::fs::write(sandbox.path().join("wrong"), "not-the-token").expect("write");
    let out = sandbox
        .run(
            &[
                "status",
                "--coordinator",
                &url,
                "-C",
                elsewhere,
                "--token-file",
                "wrong",
            ],
            T,
        )
        .expect("status");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        text(&out).contains("not this coordinator's"),
        "{}",
        describe(&out)
    );
    outputs.push(out);
    let out = sandbox
        .kiln(&["status", "auth-1", "--coordinator", &url, "-C", elsewhere])
        .env("KILN_TOKEN", client_token)
        .output()
        .expect("status");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(text(&out).contains("succeeded"), "{}", describe(&out));
    outputs.push(out);

    // Raw calls: no token, a wrong one → Unauthenticated, echoing neither.
    for token in [None, Some("wrong")] {
        let mut client = Client::connect(&url, token).expect("connect");
        let refused = client.job("auth-1").expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
        assert!(!refused.message().contains(client_token));
    }
    // A worker's secret, to look for below.
    let mut client = Client::connect(&url, None).expect("connect");
    let secret = client
        .register(RegisterRequest {
            join_token: join_token.to_owned(),
            node_name: "probe".into(),
            collective_addr: "127.0.0.1:1".into(),
            ..RegisterRequest::default()
        })
        .expect("register")
        .worker_secret;
    assert_eq!(secret.len(), 64, "32 random bytes in hex");
    outputs.push(sandbox.run(&["state"], T).expect("state"));
    outputs.push(
        sandbox
            .run(&["status", "auth-1", "--json"], T)
            .expect("status"),
    );

    // Nothing shows any of them, but the token files themselves.
    let mut seen: Vec<(String, Vec<u8>)> = outputs
        .iter()
        .enumerate()
        .map(|(i, out)| {
            (
                format!("output {i}"),
                [&out.stdout[..], &out.stderr[..]].concat(),
            )
        })
        .collect();
    files(sandbox.path(), &mut seen);
    seen.retain(|(name, _)| !name.ends_with("-token"));
    for pid in sandbox.processes() {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        seen.push((format!("arguments of {pid}"), cmdline));
    }
    for (what, secret) in [
        ("client token", client_token),
        ("join token", join_token),
        ("worker secret", secret.as_str()),
    ] {
        for (name, bytes) in &seen {
            assert!(!contains(bytes, secret), "the {what} shows in {name}");
        }
    }
    drop(applied);
}
