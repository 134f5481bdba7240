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

#[test]
fn validate_reports_once_on_text_and_only_json_with_json() {
    let job =
        blobs_job_hcl("j", 2, 512, 1, 10).replace("cluster = \"local\"", "cluster = \"locl\"");
    let sandbox = Sandbox::new().with_files(&[("cluster.hcl", &cluster_hcl(2)), ("job.hcl", &job)]);
    let out = sandbox
        .run(&["validate", "."], Duration::from_secs(30))
        .expect("validate");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim_end().ends_with("\n1 error"), "{stderr}");
    assert!(
        !stderr.contains("error(s)"),
        "one summary, not two: {stderr}"
    );
    let out = sandbox
        .run(&["validate", ".", "--json"], Duration::from_secs(30))
        .expect("validate --json");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(out.stderr.is_empty(), "{}", describe(&out));
}

#[test]
fn broken_hcl_links_are_located_errors() {
    for (name, target) in [("job.hcl", "missing.hcl"), ("loop.hcl", "loop.hcl")] {
        let sandbox = Sandbox::new().with_files(&[("cluster.hcl", &cluster_hcl(2))]);
        std::os::unix::fs::symlink(target, sandbox.path().join(name)).expect("symlink");
        assert_rejected(
            &sandbox,
            &["validate", "."],
            &[
                "Error: Cannot read configuration file",
                &format!("in ./{name}\n"),
            ],
        );
    }
}

#[test]
fn a_csv_with_only_a_header_is_refused_by_validate() {
    let job = blobs_job_hcl("j", 2, 512, 1, 10)
        .replace(
            "source           = \"synthetic:blobs\"",
            "source = \"file://train.csv\"\n    format = \"csv\"\n    label = \"label\"",
        )
        .replace("    samples          = 512\n", "")
        .replace("    seed             = 7\n", "")
        .replace("    features         = 16\n", "");
    let header = (0..16).map(|i| format!("f{i},")).collect::<String>() + "label\n";
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        ("job.hcl", &job),
        ("train.csv", &header),
    ]);
    assert_rejected(
        &sandbox,
        &["validate", "."],
        &["job.hcl:", "leaves no training data", "no data rows"],
    );
    // One row: the validation split (0.1 of 1, rounded) leaves it for training.
    let row = (0..16).map(|i| format!("{i},")).collect::<String>() + "1\n";
    std::fs::write(sandbox.path().join("train.csv"), header + &row).expect("write");
    let out = sandbox
        .run(&["validate", "."], Duration::from_secs(30))
        .expect("validate");
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn a_var_of_the_wrong_type_is_named_by_its_own_type() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart");
    let sandbox = Sandbox::new();
    assert_rejected(
        &sandbox,
        &[
            "validate",
            examples.to_str().expect("utf-8 path"),
            "--var",
            "epochs=true",
        ],
        &["got bool `true`"],
    );
}

/// A quickstart-sized job whose MLP has `hidden` as given.
fn wide_model(hidden: &str, memory_gb: Option<u32>) -> Sandbox {
    let mut cluster = cluster_hcl(1);
    if let Some(gb) = memory_gb {
        cluster = cluster.replace("count = 1", &format!("count = 1\n    memory_gb = {gb}"));
    }
    let job = blobs_job_hcl("wide", 1, 512, 1, 10).replace("hidden  = [32]", hidden);
    Sandbox::new().with_files(&[("cluster.hcl", &cluster), ("job.hcl", &job)])
}

#[test]
fn validate_states_the_model_size_and_refuses_one_a_node_cannot_hold() {
    let out = wide_model("hidden  = [32]", None)
        .run(&["validate", "."], Duration::from_secs(30))
        .expect("validate");
    assert!(out.status.success(), "{}", describe(&out));
    // 16·32+32 + 32·4+4
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("job wide: model mlp with 676 parameters, about"),
        "{}",
        describe(&out)
    );
    let sandbox = wide_model("hidden  = [100000, 100000]", Some(4));
    assert_rejected(
        &sandbox,
        &["validate", "."],
        &[
            "job.hcl:3:",
            "needs about",
            "node pool \"cpu\" has 4.0 GiB (`memory_gb = 4`)",
            "10,002,200,004 parameters",
        ],
    );
}

#[test]
fn a_worker_that_dies_of_its_model_shows_its_last_words() {
    // Far beyond this machine: validate warns, and the worker's allocation fails.
    let sandbox = wide_model("hidden  = [200000, 200000]", None);
    let out = sandbox
        .run(&["validate", "."], Duration::from_secs(30))
        .expect("validate");
    assert!(out.status.success(), "a warning only: {}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Warning: The model of job \"wide\" needs about"),
        "{}",
        describe(&out)
    );
    let out = sandbox
        .run(&["up", "."], Duration::from_secs(120))
        .expect("kiln up");
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("last lines of") && stderr.contains("memory allocation of"),
        "the worker's own words: {}",
        describe(&out)
    );
    sandbox.assert_no_processes(Duration::from_secs(5));
}

#[test]
fn state_and_destroy_on_a_fresh_directory_create_nothing() {
    let sandbox = Sandbox::new().with_files(&[("cluster.hcl", &cluster_hcl(1))]);
    for args in [&["state", "."][..], &["destroy", ".", "--auto-approve"]] {
        let out = sandbox.run(args, Duration::from_secs(30)).expect("kiln");
        assert!(out.status.success(), "{}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("nothing was applied there"),
            "{}",
            describe(&out)
        );
    }
    assert!(!sandbox.path().join(".kiln").exists());
}

#[test]
fn a_cuda_job_needs_the_machines_gpus_and_a_cuda_binary_and_never_trains_on_the_cpu() {
    let cluster = cluster_hcl(1).replace("count = 1", "count = 1\n    gpus_per_node = 1");
    let job = blobs_job_hcl("gpu", 1, 512, 1, 10).replace(
        "    seed       = 42\n",
        "    seed       = 42\n    backend    = \"cuda\"\n",
    );
    let sandbox = Sandbox::new().with_files(&[("cluster.hcl", &cluster), ("job.hcl", &job)]);
    let out = sandbox
        .run(&["validate", "."], Duration::from_secs(30))
        .expect("validate");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("was built without the CUDA backend: no worker of cluster"),
        "{}",
        describe(&out)
    );
    // `KILN_FAKE_GPUS` stands for the machine's GPUs: first none, then one.
    let up = |gpus| {
        sandbox
            .run_on_fake_gpus(&["up", "."], gpus, Duration::from_secs(120))
            .expect("kiln up")
    };
    let out = up(0);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("node cpu-0: node 0 of a pool with gpus_per_node = 1 needs the machine's GPU 0, but this machine has 0"),
        "{}",
        describe(&out)
    );
    let out = up(1);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("job gpu-1 cannot be placed on cluster \"local\"")
            && stderr.contains("its binary was built without the \"cuda\" backend"),
        "{}",
        describe(&out)
    );
    assert!(
        !stdout.contains("val accuracy"),
        "nothing was trained: {stdout}"
    );
    sandbox.assert_no_processes(Duration::from_secs(5));
}

#[test]
fn a_deploy_block_without_a_gate_registers_the_model_and_moves_its_alias() {
    let job = format!(
        "{}\njob \"later\" {{\n  cluster = \"local\"\n  model \"mlp\" {{\n    inputs = 4\n    hidden = [8]\n    classes = 2\n  }}\n  dataset \"blobs\" {{\n    source = \"synthetic:blobs\"\n    samples = 64\n    features = 4\n    classes = 2\n  }}\n  training {{\n    workers = 1\n    batch_size = 8\n  }}\n  deploy {{\n    model = \"later-model\"\n    alias = \"production\"\n  }}\n}}\n",
        cluster_hcl(1)
    );
    let sandbox = Sandbox::new().with_files(&[("main.hcl", &job)]);
    let out = sandbox
        .run(&["validate", "--json", "."], Duration::from_secs(30))
        .expect("validate --json");
    assert!(out.status.success(), "{}", describe(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["diagnostics"], serde_json::json!([]), "{json}");
    // The model is registered under `model`, and with no gate the alias moves.
    let out = sandbox
        .run(&["up", "."], Duration::from_secs(120))
        .expect("kiln up");
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("model         later-model@1")
            && stdout.contains("deployed      \"production\" (it held none before)"),
        "{}",
        describe(&out)
    );
    let out = sandbox
        .run(
            &["models", "history", "later-model"],
            Duration::from_secs(30),
        )
        .expect("kiln models history");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("job later-1 (no gate)"),
        "{}",
        describe(&out)
    );
}

#[test]
fn completions_are_shell_scripts_that_know_every_command() {
    let sandbox = Sandbox::new();
    let out = sandbox
        .run(&["completions", "bash"], Duration::from_secs(30))
        .expect("kiln completions");
    assert!(out.status.success(), "{}", describe(&out));
    let script = String::from_utf8_lossy(&out.stdout);
    for command in ["serve", "apply", "completions", "models"] {
        assert!(
            script.contains(command),
            "{command} in the bash completions"
        );
    }
    let path = sandbox.path().join("kiln.bash");
    std::fs::write(&path, script.as_bytes()).expect("write");
    let checked = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("bash");
    assert!(checked.status.success(), "{}", describe(&checked));
    let out = sandbox
        .run(&["completions", "tcsh"], Duration::from_secs(30))
        .expect("kiln completions");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values"));
}
