//! The model registry end to end: every succeeded `kiln up` registers a version with its
//! lineage, `kiln models` reads it without a coordinator, aliases move, roll back, keep their
//! history, and concurrent moves never lose one.

use std::process::{Command, Stdio};
use std::time::Duration;

use kiln_tests::{Sandbox, bin, blobs_job_hcl, cluster_hcl, describe, wait_with_timeout};
use serde_json::Value;

const T: Duration = Duration::from_secs(120);

fn json(sandbox: &Sandbox, args: &[&str]) -> Value {
    let out = sandbox.run(args, T).expect("kiln runs");
    assert!(out.status.success(), "kiln {args:?}: {}", describe(&out));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn sha256_of(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a hash")
        .to_owned()
}

#[test]
fn succeeded_jobs_become_versions_with_lineage_and_aliases_keep_their_history() {
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        ("job.hcl", &blobs_job_hcl("small", 2, 512, 1, 10)),
    ]);
    for version in ["small@1", "small@2"] {
        let out = sandbox.run(&["up", "."], T).expect("kiln up");
        assert!(out.status.success(), "{}", describe(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("model         {version}")),
            "{stdout}"
        );
    }

    let listed = json(&sandbox, &["models", "list", "--json"]);
    assert_eq!(
        (listed[0]["name"].as_str(), listed[0]["versions"].as_u64()),
        (Some("small"), Some(2))
    );
    let first = json(&sandbox, &["models", "show", "small@1", "--json"]);
    let second = json(&sandbox, &["models", "show", "small", "--json"]);
    assert_eq!(first["lineage"]["job_id"], "small-1");
    assert_eq!(second["lineage"]["job_id"], "small-2");
    // The same configuration twice: the same canonical spec.
    assert_eq!(
        first["lineage"]["spec_sha256"],
        second["lineage"]["spec_sha256"]
    );
    assert_eq!(
        first["lineage"]["worker_binary_sha256"].as_str(),
        Some(sha256_of(&bin("kiln-worker")).as_str())
    );
    assert!(
        first["lineage"]["data_source"]
            .as_str()
            .is_some_and(|s| s.starts_with("synthetic:blobs"))
    );
    assert!(
        first["lineage"]["checkpoint"]
            .as_str()
            .is_some_and(|c| c.contains("/jobs/small-1/checkpoints/"))
    );
    assert!(first["metrics"]["steps"].as_u64() > Some(0));
    assert!(first["metrics"]["val_accuracy"].as_f64().is_some());

    // Moves, a rollback, and the history of them all.
    json(
        &sandbox,
        &[
            "models",
            "alias",
            "small",
            "production",
            "1",
            "--reason",
            "first cut",
            "--json",
        ],
    );
    json(
        &sandbox,
        &["models", "alias", "small", "production", "2", "--json"],
    );
    let back = json(
        &sandbox,
        &["models", "rollback", "small", "production", "--json"],
    );
    assert_eq!(
        (back["from"].as_u64(), back["to"].as_u64()),
        (Some(2), Some(1))
    );
    let held = json(&sandbox, &["models", "show", "small@production", "--json"]);
    assert_eq!(held["version"], 1);
    let history = json(
        &sandbox,
        &["models", "history", "small@production", "--json"],
    );
    let moves: Vec<(Option<u64>, u64, &str)> = history
        .as_array()
        .expect("moves")
        .iter()
        .map(|m| {
            (
                m["from"].as_u64(),
                m["to"].as_u64().expect("to"),
                m["reason"].as_str().expect("reason"),
            )
        })
        .collect();
    assert_eq!(
        moves,
        [
            (None, 1, "first cut"),
            (Some(1), 2, "set by hand"),
            (Some(2), 1, "rollback from version 2")
        ]
    );
    let out = sandbox
        .run(&["models", "alias", "small", "production", "9"], T)
        .expect("kiln runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no version 9; versions: 1-2"),
        "{}",
        describe(&out)
    );
}

#[test]
fn concurrent_alias_moves_never_lose_one() {
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(1)),
        ("job.hcl", &blobs_job_hcl("race", 1, 256, 1, 10)),
    ]);
    for _ in 0..2 {
        let out = sandbox.run(&["up", "."], T).expect("kiln up");
        assert!(out.status.success(), "{}", describe(&out));
    }
    // Eight moves at once, to versions 1 and 2 in turn.
    let children: Vec<_> = (0..8)
        .map(|i| {
            let to = (1 + i % 2).to_string();
            sandbox
                .kiln(&["models", "alias", "race", "staging", &to, "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn kiln models alias")
        })
        .collect();
    let mut won = Vec::new();
    for child in children {
        let out = wait_with_timeout(child, T).expect("kiln ends");
        if out.status.success() {
            let moved: Value = serde_json::from_slice(&out.stdout).expect("JSON");
            won.push((
                moved["seq"].as_u64().expect("seq"),
                moved["to"].as_u64().expect("to"),
            ));
        } else {
            // A loser changed nothing and says who won.
            assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("moved meanwhile (to version"),
                "{}",
                describe(&out)
            );
        }
    }
    won.sort_unstable();
    assert!(!won.is_empty());
    let history = json(&sandbox, &["models", "history", "race@staging", "--json"]);
    let recorded: Vec<(u64, u64)> = history
        .as_array()
        .expect("moves")
        .iter()
        .map(|m| {
            (
                m["seq"].as_u64().expect("seq"),
                m["to"].as_u64().expect("to"),
            )
        })
        .collect();
    // Every move that was reported done is in the history, and nothing else is.
    assert_eq!(recorded, won);
    let held = json(&sandbox, &["models", "show", "race@staging", "--json"]);
    assert_eq!(held["version"].as_u64(), won.last().map(|w| w.1));
}
