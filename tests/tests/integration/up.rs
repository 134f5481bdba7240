//! `kiln up` runs a job across real worker processes to success, leaves verifiable
//! checkpoints, and leaves no process behind — also when interrupted.

use std::time::Duration;

use kiln_proto::manifest::CheckpointManifest;
use kiln_tests::{Sandbox, blobs_job_hcl, cluster_hcl, describe};

fn val_accuracy(stdout: &str) -> Option<f64> {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("val accuracy"))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn up_trains_to_accuracy_with_verified_checkpoints_and_no_leftovers() {
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        ("job.hcl", &blobs_job_hcl("e2e", 2, 2048, 3, 20)),
    ]);
    let out = sandbox
        .run(&["up", "."], Duration::from_secs(180))
        .expect("kiln up finishes");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout.contains("succeeded"), "{}", describe(&out));
    let acc = val_accuracy(&stdout).unwrap_or_else(|| panic!("no accuracy in {}", describe(&out)));
    assert!(acc >= 0.9, "val accuracy {acc} < 0.9\n{}", describe(&out));

    // 1843 training samples / (2 × 32) = 29 steps an epoch, 87 in all; checkpoints every 20
    // and at the end, two kept: 80 and 87.
    let checkpoints = sandbox.path().join(".kiln/store/jobs/e2e-1/checkpoints");
    let mut steps: Vec<u64> = std::fs::read_dir(&checkpoints)
        .expect("checkpoint dir")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    steps.sort_unstable();
    assert_eq!(steps, vec![80, 87], "retention keeps the newest 2");
    for step in steps {
        let dir = checkpoints.join(step.to_string());
        let manifest: CheckpointManifest =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
                .expect("manifest json");
        assert_eq!(manifest.step, step);
        assert_eq!(manifest.job_id, "e2e-1");
        assert!(manifest.objects.len() >= 3, "{manifest:?}");
        for entry in &manifest.objects {
            let bytes = std::fs::read(dir.join(&entry.name)).expect("object");
            entry
                .verify(&bytes)
                .expect("object matches its manifest entry");
        }
    }
    assert!(
        stdout.contains("checkpoints/87/manifest.json"),
        "summary names the final checkpoint\n{}",
        describe(&out)
    );
    sandbox.assert_no_processes(Duration::from_secs(5));
}

#[test]
fn csv_dataset_trains() {
    let sandbox = Sandbox::new();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/csv");
    for name in ["cluster.hcl", "job.hcl", "data/train.csv"] {
        let to = sandbox.path().join(name);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(example.join(name), to).expect("copy example");
    }
    let out = sandbox
        .run(&["up", "."], Duration::from_secs(180))
        .expect("kiln up finishes");
    assert!(out.status.success(), "{}", describe(&out));
    let acc = val_accuracy(&String::from_utf8_lossy(&out.stdout)).expect("accuracy");
    assert!(acc >= 0.9, "csv example reaches {acc}");
    sandbox.assert_no_processes(Duration::from_secs(5));
}

#[test]
fn interrupted_up_cancels_and_reaps_every_worker() {
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        // Long enough that it is still training when interrupted.
        ("job.hcl", &blobs_job_hcl("long", 2, 8192, 200, 1000)),
    ]);
    let child = sandbox
        .kiln(&["up", "."])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kiln up");
    let pid = child.id();
    // Wait until both workers exist (kiln up itself is the third tagged process).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while sandbox.processes().len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "workers never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(kiln_tests::signal(pid, "INT"));
    let out = kiln_tests::wait_with_timeout(child, Duration::from_secs(30)).expect("kiln exits");
    assert!(!out.status.success(), "an interrupted job is not a success");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cancel"), "{}", describe(&out));
    sandbox.assert_no_processes(Duration::from_secs(5));
}
