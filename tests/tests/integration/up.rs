//! `kiln up` runs a job across real worker processes to success, leaves verifiable
//! checkpoints, and leaves no process behind — also when interrupted.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use kiln_proto::manifest::CheckpointManifest;
use kiln_tests::{Sandbox, blobs_job_hcl, cluster_hcl, describe, port_after, wait_until};

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
    // DIR defaults to the current directory, as for every other command.
    let out = sandbox
        .run(&["up"], Duration::from_secs(180))
        .expect("kiln up finishes");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout.contains("succeeded"), "{}", describe(&out));
    // Not on a terminal: no colour codes in what kiln prints or in the workers' logs.
    assert!(!out.stderr.contains(&0x1b), "{}", describe(&out));
    for log in ["cpu-0.log", "cpu-1.log"] {
        let text = std::fs::read(sandbox.path().join(".kiln/logs").join(log)).expect("log");
        assert!(
            !text.contains(&0x1b),
            "{log}: {}",
            String::from_utf8_lossy(&text)
        );
    }
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
    // SIGHUP (the terminal closed) is an interrupt like Ctrl-C.
    for signal in ["INT", "HUP"] {
        interrupt_up(signal);
    }
}

fn interrupt_up(signal: &str) {
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        // Long enough that it is still training when interrupted; an early checkpoint shows
        // that it trains.
        ("job.hcl", &blobs_job_hcl("long", 2, 8192, 200, 10)),
    ]);
    let child = sandbox
        .kiln(&["up", "."])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kiln up");
    let pid = child.id();
    // Interrupted while it trains: once its first checkpoint is committed.
    wait_until(Duration::from_secs(60), "the job to train", || {
        has_checkpoint(sandbox.path(), "long-1")
            .then_some(())
            .ok_or_else(|| sandbox.processes())
    });
    assert!(kiln_tests::signal(pid, signal));
    let out = kiln_tests::wait_with_timeout(child, Duration::from_secs(30)).expect("kiln exits");
    assert!(!out.status.success(), "an interrupted job is not a success");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cancel"), "SIG{signal}: {}", describe(&out));
    sandbox.assert_no_processes(Duration::from_secs(5));
}

#[test]
fn a_signal_while_up_is_still_starting_stops_everything_it_started() {
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        ("job.hcl", &blobs_job_hcl("early", 2, 8192, 200, 1000)),
    ]);
    let child = sandbox
        .kiln(&["up", "."])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kiln up");
    // As soon as the first worker exists: before the job is followed, maybe before it is
    // submitted.
    wait_until(Duration::from_secs(60), "a worker to start", || {
        let live = sandbox.processes();
        if live.len() >= 2 { Ok(()) } else { Err(live) }
    });
    assert!(kiln_tests::signal(child.id(), "TERM"));
    let out = kiln_tests::wait_with_timeout(child, Duration::from_secs(60)).expect("kiln exits");
    assert!(!out.status.success(), "{}", describe(&out));
    assert_ne!(
        out.status.code(),
        None,
        "kiln up handled the signal instead of dying of it: {}",
        describe(&out)
    );
    sandbox.assert_no_processes(Duration::from_secs(10));
}

/// A job in `dir`'s store has committed a checkpoint.
fn has_checkpoint(dir: &Path, job: &str) -> bool {
    std::fs::read_dir(dir.join(".kiln/store/jobs").join(job).join("checkpoints"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .any(|e| e.path().join("manifest.json").exists())
}

#[test]
fn a_job_left_by_a_killed_up_is_named_marked_failed_and_resumes_on_request() {
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        ("job.hcl", &blobs_job_hcl("orphan", 2, 2048, 40, 20)),
    ]);
    let mut child = sandbox
        .kiln(&["up", "."])
        // Its workers give up on their dead coordinator quickly.
        .env("KILN_RECONNECT_TIMEOUT_SECS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kiln up");
    wait_until(Duration::from_secs(120), "a committed checkpoint", || {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "kiln up ended early"
        );
        has_checkpoint(sandbox.path(), "orphan-1")
            .then_some(())
            .ok_or("none yet")
    });
    child.kill().expect("kill -9 kiln up");
    child.wait().expect("reap");
    sandbox.assert_no_processes(Duration::from_secs(30));

    let out = sandbox
        .run(
            &["up", ".", "--resume", "orphan-1"],
            Duration::from_secs(180),
        )
        .expect("kiln up --resume");
    assert!(out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "job orphan-1 was left unfinished by a `kiln up` that died; it is marked failed"
        ),
        "{}",
        describe(&out)
    );
    assert!(
        stderr.contains("orphan-1: resumed by request from checkpoint"),
        "{}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("job orphan-1 succeeded"),
        "{}",
        describe(&out)
    );
    // Nothing else is left to run: a plain `kiln up` now runs a new job at once.
    let out = sandbox
        .run(&["up", "."], Duration::from_secs(180))
        .expect("kiln up");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("left unfinished"),
        "{}",
        describe(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("job orphan-2 succeeded"));
    sandbox.assert_no_processes(Duration::from_secs(5));
}

#[test]
fn the_configured_listen_address_is_used_and_announced_as_a_reachable_url() {
    // Every interface, on a port the coordinator picks.
    let cluster = cluster_hcl(1).replace(
        "  state {",
        "  coordinator {\n    listen = \"0.0.0.0:0\"\n  }\n  state {",
    );
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster),
        ("job.hcl", &blobs_job_hcl("listen", 1, 512, 1, 100)),
    ]);
    let out = sandbox
        .run(&["up", "."], Duration::from_secs(180))
        .expect("kiln up");
    assert!(out.status.success(), "{}", describe(&out));
    // Announced on loopback, with the port it was given; the workers reached it there.
    let port = port_after(
        &String::from_utf8_lossy(&out.stderr),
        "coordinator on http://127.0.0.1:",
    );
    assert!(port.is_some_and(|p| p > 0), "{}", describe(&out));
}

#[test]
fn on_a_terminal_the_bar_never_shows_0_of_0_and_checkpoints_fold_into_it() {
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        ("job.hcl", &blobs_job_hcl("tty", 2, 2048, 3, 5)),
    ]);
    // script(1) gives kiln a pseudo-terminal and records what it draws.
    let command = format!("{} up .", kiln_tests::bin("kiln").display());
    let out = std::process::Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .current_dir(sandbox.path())
        .env("KILN_TEST_TAG", &sandbox.tag)
        .env("KILN_WORKER_BIN", kiln_tests::bin("kiln-worker"))
        .stdin(Stdio::null())
        .output()
        .expect("script(1) runs kiln up");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("job tty-1 succeeded"), "{screen}");
    assert!(!screen.contains("0/0 steps"), "{screen}");
    // Checkpoints every 5 of 87 steps: folded into the status line, not 18 lines.
    assert!(!screen.contains("tty-1: checkpoint"), "{screen}");
    assert!(screen.contains("tty-1: generation 1 started"), "{screen}");
    sandbox.assert_no_processes(Duration::from_secs(5));
}
