//! `kiln data push | list | show | pull` against a real `file://` store: content addressing,
//! no new version for content already held, uploads of only what is missing, verified pulls,
//! the store found from the configuration, and two pushes racing for one version number.

use std::process::Stdio;
use std::time::Duration;

use kiln_tests::{Sandbox, cluster_hcl, describe, wait_with_timeout};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

fn kiln(sandbox: &Sandbox, args: &[&str]) -> std::process::Output {
    sandbox.run(args, T).expect("kiln runs")
}

fn json(sandbox: &Sandbox, args: &[&str]) -> Value {
    let out = kiln(sandbox, args);
    assert!(out.status.success(), "kiln {args:?}: {}", describe(&out));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn pushes_are_content_addressed_and_pulls_verified() {
    let sandbox = Sandbox::new().with_files(&[
        (
            "raw/table.csv",
            "a,b,label\n1,10,0\n2,20,1\n3,30,1\n4,40,0\n",
        ),
        ("raw/notes/readme.txt", "the first notes\n"),
    ]);
    let store = format!("file://{}/store", sandbox.path().display());
    let push = |path: &str| {
        json(
            &sandbox,
            &[
                "data", "push", path, "--name", "demo", "--store", &store, "--json",
            ],
        )
    };

    let first = push("raw");
    assert_eq!(first["reference"], "demo@1");
    assert_eq!(
        (
            first["created"].as_bool(),
            first["uploaded_objects"].as_u64()
        ),
        (Some(true), Some(2))
    );
    // The same content again: no new version, nothing uploaded.
    let again = push("raw");
    assert_eq!(
        (again["reference"].as_str(), again["created"].as_bool()),
        (Some("demo@1"), Some(false))
    );
    assert_eq!(again["uploaded_objects"], 0);
    // One file changed: version 2, and only that file's bytes go up.
    std::fs::write(
        sandbox.path().join("raw/notes/readme.txt"),
        "the second notes\n",
    )
    .expect("edit");
    let second = push("raw");
    assert_eq!(second["reference"], "demo@2");
    assert_eq!(second["uploaded_objects"], 1);

    let listed = json(&sandbox, &["data", "list", "--store", &store, "--json"]);
    assert_eq!(listed[0]["name"], "demo");
    assert_eq!(listed[0]["versions"], serde_json::json!([1, 2]));

    // A single CSV file is described: samples, label, statistics of the other columns.
    let table = json(
        &sandbox,
        &[
            "data",
            "push",
            "raw/table.csv",
            "--name",
            "table",
            "--store",
            &store,
            "--json",
        ],
    );
    assert_eq!(table["uploaded_objects"], 0, "its bytes are already stored");
    let shown = json(
        &sandbox,
        &["data", "show", "table@latest", "--store", &store, "--json"],
    );
    assert_eq!(
        (shown["format"].as_str(), shown["samples"].as_u64()),
        (Some("csv"), Some(4))
    );
    assert_eq!(shown["label"], "label");
    assert_eq!(shown["features"][1]["name"], "b");
    assert_eq!(shown["features"][1]["mean"], 25.0);
    assert_eq!(
        shown["features"][1]["histogram"]["counts"]
            .as_array()
            .map(Vec::len),
        Some(10)
    );

    // Pulls give back each version's bytes.
    let pulled = json(
        &sandbox,
        &["data", "pull", "demo@1", "v1", "--store", &store, "--json"],
    );
    assert_eq!(pulled["written"], 2);
    let notes =
        std::fs::read_to_string(sandbox.path().join("v1/notes/readme.txt")).expect("pulled");
    assert_eq!(notes, "the first notes\n");
    // Into a directory holding a different file: refused, nothing overwritten.
    let out = kiln(
        &sandbox,
        &["data", "pull", "demo@2", "v1", "--store", &store],
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exists and differs"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.path().join("v1/notes/readme.txt")).expect("kept"),
        "the first notes\n"
    );

    // Unknown names and versions say what there is.
    let out = kiln(&sandbox, &["data", "show", "demo@7", "--store", &store]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no version 7; versions: 1, 2"),
        "{}",
        describe(&out)
    );
    let out = kiln(&sandbox, &["data", "show", "nope", "--store", &store]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(datasets: demo, table)"),
        "{}",
        describe(&out)
    );

    // A damaged object is found on pull, never written out.
    let objects = sandbox.path().join("store/data/objects");
    for shard in std::fs::read_dir(&objects).expect("objects") {
        for object in std::fs::read_dir(shard.expect("shard").path()).expect("shard") {
            std::fs::write(object.expect("object").path(), "rot").expect("damage");
        }
    }
    let out = kiln(
        &sandbox,
        &["data", "pull", "demo@2", "v2", "--store", &store],
    );
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds bytes whose SHA-256 is"),
        "{}",
        describe(&out)
    );
    assert!(!sandbox.path().join("v2/notes/readme.txt").exists());
}

#[test]
fn the_store_comes_from_the_configuration_and_racing_pushes_both_land() {
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(1)),
        ("a/x.txt", "one\n"),
        ("b/x.txt", "two\n"),
    ]);
    // Two pushes of different content at once: one gets version 1, the other version 2.
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|dir| {
            sandbox
                .kiln(&["data", "push", dir, "--name", "race", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn kiln data push")
        })
        .collect();
    let mut versions: Vec<u64> = children
        .into_iter()
        .map(|child| {
            let out = wait_with_timeout(child, T).expect("push ends");
            assert!(out.status.success(), "{}", describe(&out));
            let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
            v["version"].as_u64().expect("a version")
        })
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, [1, 2]);
    // The cluster's default store: `.kiln/store` of the configuration directory.
    assert!(
        sandbox
            .path()
            .join(".kiln/store/data/datasets/race/versions/2.json")
            .exists()
    );
    let shown = json(&sandbox, &["data", "list", "race", "--json"]);
    let contents: Vec<&str> = shown
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["content_hash"].as_str().expect("hash"))
        .collect();
    assert_eq!(contents.len(), 2);
    assert_ne!(contents[0], contents[1]);
}

#[test]
fn a_job_trains_from_a_dataset_version_and_a_missing_version_is_located() {
    // Two separable classes: x < 0 is class 0.
    let mut csv = String::from("x,y,label\n");
    for i in 0..200 {
        let x = f64::from(i) / 100.0 - 1.0;
        csv.push_str(&format!("{x},{},{}\n", x * 0.5, u8::from(x >= 0.0)));
    }
    let job = |source: &str| {
        format!(
            r#"job "versioned" {{
  cluster = "local"
  model "mlp" {{
    inputs  = 2
    hidden  = [8]
    classes = 2
  }}
  dataset "points" {{
    source  = "{source}"
    label   = "label"
    classes = 2
  }}
  training {{
    workers    = 2
    batch_size = 16
    epochs     = 3
  }}
}}
"#
        )
    };
    let sandbox =
        Sandbox::new().with_files(&[("cluster.hcl", &cluster_hcl(2)), ("raw/points.csv", &csv)]);
    let pushed = json(
        &sandbox,
        &[
            "data",
            "push",
            "raw/points.csv",
            "--name",
            "points",
            "--json",
        ],
    );
    assert_eq!(pushed["reference"], "points@1");

    std::fs::write(sandbox.path().join("job.hcl"), job("kiln://points@4")).expect("job");
    let out = kiln(&sandbox, &["validate", "."]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Cannot read \"kiln://points@4\"")
            && stderr.contains("has no version 4; versions: 1")
            && stderr.contains("job.hcl:"),
        "{}",
        describe(&out)
    );

    std::fs::write(sandbox.path().join("job.hcl"), job("kiln://points@latest")).expect("job");
    let out = sandbox
        .run(&["up", "."], Duration::from_secs(120))
        .expect("kiln up");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("succeeded"),
        "{}",
        describe(&out)
    );
    // The model's lineage names the version, pinned: `@latest` became `@1`.
    let model = json(&sandbox, &["models", "show", "versioned@1", "--json"]);
    let data = &model["lineage"]["data"][0];
    assert_eq!(
        (data["reference"].as_str(), data["path"].as_str()),
        (Some("points@1"), Some("points.csv"))
    );
    let shown = json(&sandbox, &["data", "show", "points@1", "--json"]);
    assert_eq!(data["sha256"], shown["files"][0]["sha256"]);

    // The same file read directly: fingerprinted at submission, the same bytes, the same hash.
    std::fs::write(sandbox.path().join("job.hcl"), job("file://raw/points.csv")).expect("job");
    let out = sandbox
        .run(&["up", "."], Duration::from_secs(120))
        .expect("kiln up");
    assert!(out.status.success(), "{}", describe(&out));
    let model = json(&sandbox, &["models", "show", "versioned@2", "--json"]);
    let data = &model["lineage"]["data"][0];
    assert!(
        data["reference"]
            .as_str()
            .is_some_and(|r| r.starts_with("file://") && r.ends_with("raw/points.csv")),
        "{model}"
    );
    assert_eq!(data["sha256"], shown["files"][0]["sha256"]);
}
