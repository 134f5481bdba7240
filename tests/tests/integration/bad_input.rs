//! Bad input gets a clear message, exit code 2, and starts (or leaves) no process.

use std::time::Duration;

use kiln_tests::{Sandbox, blobs_job_hcl, cluster_hcl, describe};

fn assert_rejected(sandbox: &Sandbox, args: &[&str], expect: &[&str]) {
    let out = sandbox
        .run(args, Duration::from_secs(30))
        .expect("kiln finishes");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in expect {
        assert!(
            stderr.contains(needle),
            "missing {needle:?} in\n{}",
            describe(&out)
        );
    }
    sandbox.assert_no_processes(Duration::from_secs(2));
}

#[test]
fn missing_directory() {
    let sandbox = Sandbox::new();
    assert_rejected(&sandbox, &["up", "no-such-dir"], &["no-such-dir"]);
}

#[test]
fn hcl_syntax_error_points_at_the_line() {
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        (
            "job.hcl",
            "job \"x\" {\n  cluster = \"local\"\n  model \"mlp\" {\n    inputs = \n",
        ),
    ]);
    assert_rejected(&sandbox, &["up", "."], &["job.hcl:"]);
}

#[test]
fn unknown_cluster_is_named() {
    let job =
        blobs_job_hcl("j", 2, 512, 1, 10).replace("cluster = \"local\"", "cluster = \"locl\"");
    let sandbox = Sandbox::new().with_files(&[("cluster.hcl", &cluster_hcl(2)), ("job.hcl", &job)]);
    assert_rejected(&sandbox, &["up", "."], &["job.hcl:2:", "locl", "local"]);
}

#[test]
fn more_workers_than_nodes() {
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        ("job.hcl", &blobs_job_hcl("j", 3, 512, 1, 10)),
    ]);
    assert_rejected(&sandbox, &["up", "."], &["job.hcl:", "workers"]);
}

#[test]
fn validate_accepts_the_examples() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let sandbox = Sandbox::new();
    for name in ["quickstart", "csv"] {
        let dir = examples.join(name);
        let out = sandbox
            .run(
                &["validate", dir.to_str().expect("utf-8 path")],
                Duration::from_secs(30),
            )
            .expect("kiln validate finishes");
        assert!(out.status.success(), "{name}: {}", describe(&out));
    }
}

#[test]
fn validate_json_reports_every_error_with_its_location() {
    let job =
        blobs_job_hcl("j", 3, 512, 1, 10).replace("cluster = \"local\"", "cluster = \"locl\"");
    let cluster = cluster_hcl(2).replace("count = 2", "count = 2\n    gpus_per_nod = 0");
    let sandbox = Sandbox::new().with_files(&[("cluster.hcl", &cluster), ("job.hcl", &job)]);
    let out = sandbox
        .run(&["validate", ".", "--json"], Duration::from_secs(30))
        .expect("kiln validate finishes");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json on stdout");
    assert_eq!(report["valid"], false, "{report}");
    let diags = report["diagnostics"].as_array().expect("diagnostics");
    let at = |file: &str, line: u64| {
        diags
            .iter()
            .any(|d| d["file"].as_str().is_some_and(|f| f.ends_with(file)) && d["line"] == line)
    };
    assert!(at("cluster.hcl", 5), "unknown attribute located: {report}");
    assert!(at("job.hcl", 2), "unknown cluster located: {report}");
}

#[test]
fn var_flag_overrides_the_default() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart");
    let dir = examples.to_str().expect("utf-8 path");
    let sandbox = Sandbox::new();
    let out = sandbox
        .run(
            &["validate", dir, "--var", "workers=0"],
            Duration::from_secs(30),
        )
        .expect("kiln validate finishes");
    assert_eq!(
        out.status.code(),
        Some(2),
        "workers = 0 is invalid: {}",
        describe(&out)
    );
    let out = sandbox
        .run(
            &["validate", dir, "--var", "workers=3"],
            Duration::from_secs(30),
        )
        .expect("kiln validate finishes");
    assert!(
        out.status.success(),
        "3 nodes for 3 workers: {}",
        describe(&out)
    );
}
