//! `kiln fmt`: `--check` reports without writing (exit 2), `fmt` rewrites keeping comments,
//! and a syntax error leaves every file alone.

use std::time::Duration;

use kiln_tests::{Sandbox, describe};

const MESSY: &str = "# the cluster\ncluster \"local\" {\nprovider=\"local\" # only one\n    node_pool \"cpu\" {\n  count = 2\n      cpus_per_node    = 1\n  }\n\n\n}\n";
const CANONICAL: &str = "# the cluster\ncluster \"local\" {\n  provider = \"local\" # only one\n  node_pool \"cpu\" {\n    count         = 2\n    cpus_per_node = 1\n  }\n}\n";

fn read(sandbox: &Sandbox, name: &str) -> String {
    std::fs::read_to_string(sandbox.path().join(name)).expect("read back")
}

#[test]
fn check_reports_fmt_rewrites_then_check_passes() {
    let sandbox =
        Sandbox::new().with_files(&[("cluster.hcl", MESSY), ("job.hcl", "job \"j\" {\n}\n")]);
    let timeout = Duration::from_secs(30);

    let out = sandbox
        .run(&["fmt", "--check", "."], timeout)
        .expect("kiln finishes");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("cluster.hcl"), "{}", describe(&out));
    assert!(
        !stdout.contains("job.hcl"),
        "job.hcl is canonical: {}",
        describe(&out)
    );
    assert!(
        stdout.contains("+  provider = \"local\" # only one"),
        "a diff: {}",
        describe(&out)
    );
    assert_eq!(
        read(&sandbox, "cluster.hcl"),
        MESSY,
        "--check writes nothing"
    );

    let out = sandbox.run(&["fmt", "."], timeout).expect("kiln finishes");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "./cluster.hcl");
    assert_eq!(read(&sandbox, "cluster.hcl"), CANONICAL);

    let out = sandbox
        .run(&["fmt", "--check"], timeout)
        .expect("kiln finishes");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(out.stdout.is_empty(), "{}", describe(&out));
}

#[test]
fn syntax_error_is_located_and_nothing_is_rewritten() {
    let broken = "job \"j\" {\n  cluster = \n}\n";
    let sandbox = Sandbox::new().with_files(&[("a.hcl", MESSY), ("b.hcl", broken)]);
    let out = sandbox
        .run(&["fmt", "."], Duration::from_secs(30))
        .expect("kiln finishes");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("b.hcl:2:"), "{}", describe(&out));
    assert_eq!(read(&sandbox, "a.hcl"), MESSY);
    assert_eq!(read(&sandbox, "b.hcl"), broken);
}
