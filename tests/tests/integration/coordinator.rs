//! A standalone `kiln coordinator` with workers started by hand: submit/follow, status, and the
//! join token check.

use std::process::Stdio;
use std::time::Duration;

use kiln_tests::cluster::{Cluster, Coordinator, Reaped, worker_command};
use kiln_tests::{
    Sandbox, blobs_job_hcl, cluster_hcl, describe, signal, wait_until, wait_with_timeout,
};

/// Stops a coordinator the planned way (SIGTERM) and waits for it.
fn stop(coordinator: Coordinator) {
    coordinator.process.stop();
}

/// Starts `kiln coordinator` on a port of its choosing and waits until it accepts connections.
fn coordinator(sandbox: &Sandbox) -> Coordinator {
    Coordinator::start(sandbox, "127.0.0.1:0")
}

#[test]
fn submit_follow_and_status_against_a_standalone_coordinator() {
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        ("job.hcl", &blobs_job_hcl("remote", 2, 1024, 2, 10)),
        ("token", "s3cret\n"),
        ("wrong-token", "guess\n"),
    ]);
    let mut cluster = Cluster::builder(sandbox).workers(2).start();
    let (sandbox, url) = (&cluster.sandbox, cluster.url());

    // A worker with the wrong token is refused and exits with the reason.
    let refused = worker_command(sandbox, &url, "wrong-token", "intruder")
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

    let out = sandbox
        .run(
            &["submit", "job.hcl", "--follow", "--coordinator", &url],
            Duration::from_secs(120),
        )
        .expect("submit finishes");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("submitted remote-1"));
    // The workers were idle before the job came, so its generation started within SubmitJob,
    // before --follow began to watch: the watch replays it, once, in order.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("remote-1: "))
        .collect();
    assert_eq!(events.first(), Some(&"submitted"), "{}", describe(&out));
    assert_eq!(
        events
            .iter()
            .filter(|e| e.starts_with("generation 1 started on 2 workers"))
            .count(),
        1,
        "{}",
        describe(&out)
    );
    assert_eq!(
        events.last(),
        Some(&"all ranks finished; the model is remote@1"),
        "{}",
        describe(&out)
    );

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
    // What the CLI printed is what the coordinator holds.
    let job = cluster.client().job("remote-1").expect("GetJob");
    assert_eq!(status["checkpoint_url"], job.checkpoint_url);
    assert_eq!(status["params_digest"], job.params_digest);
    assert_eq!(status["workers"], serde_json::json!(job.workers));

    let out = sandbox
        .run(
            &["status", "no-such-job", "--coordinator", &url],
            Duration::from_secs(30),
        )
        .expect("status finishes");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("error: no job no-such-job; known jobs: remote-1\n"),
        "{}",
        describe(&out)
    );

    // Stopping the coordinator (SIGTERM: a planned shutdown) makes its workers exit on their own.
    cluster.stop_coordinator();
    cluster.sandbox.assert_no_processes(Duration::from_secs(10));
}

fn status(sandbox: &Sandbox, url: &str, job: &str) -> Option<serde_json::Value> {
    let out = sandbox
        .run(
            &["status", job, "--json", "--coordinator", url],
            Duration::from_secs(30),
        )
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// Polls `kiln status JOB --json` until `pred` holds.
pub(crate) fn wait_for_status(
    sandbox: &Sandbox,
    url: &str,
    job: &str,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_until(Duration::from_secs(120), what, || {
        match status(sandbox, url, job) {
            Some(s) if pred(&s) => Ok(s),
            other => Err(other),
        }
    })
}

/// `done` (a job's `kiln status --json`) succeeded after its coordinator was lost: in a new
/// generation, with no restart counted (the coordinator's loss is not the job's) and the
/// parameters of an uninterrupted run (`reference`, `sha256:…`).
pub(crate) fn assert_resumed_bit_identical(done: &serde_json::Value, reference: &str) {
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(
        done["generation"].as_u64() >= Some(2),
        "a new generation ran: {done}"
    );
    assert_eq!(
        done["restarts"], 0,
        "the coordinator's loss is not the job's: {done}"
    );
    assert_eq!(
        done["params_digest"],
        reference.trim_start_matches("sha256:"),
        "resumed after losing its coordinator, bit-identical to an uninterrupted run"
    );
}

/// A standalone coordinator and two workers, `a` and `b`, running the chaos job of
/// `recovery` with `max_restarts` until it has committed checkpoint `step` or later.
struct Running {
    sandbox: Sandbox,
    /// The address the first coordinator was given; its successors listen there too.
    listen: String,
    url: String,
}

impl Running {
    fn start(max_restarts: u32, step: u64) -> (Self, Coordinator, Reaped, Reaped) {
        let sandbox = Sandbox::new().with_files(&[
            ("cluster.hcl", &cluster_hcl(2)),
            ("job.hcl", &crate::recovery::job(max_restarts, "0s")),
            ("token", "s3cret\n"),
        ]);
        let coordinator = coordinator(&sandbox);
        let running = Self {
            sandbox,
            listen: coordinator.addr.to_string(),
            url: coordinator.url(),
        };
        let (a, b) = (running.worker("a"), running.worker("b"));
        let out = running
            .sandbox
            .run(
                &["submit", "job.hcl", "--coordinator", &running.url],
                Duration::from_secs(60),
            )
            .expect("submit");
        assert!(out.status.success(), "{}", describe(&out));
        running.wait_for_checkpoint(step);
        (running, coordinator, a, b)
    }

    fn wait_for_checkpoint(&self, step: u64) {
        self.wait_for(&format!("checkpoint >= {step}"), |s| {
            s["checkpoint_step"].as_u64().is_some_and(|c| c >= step)
        });
    }

    fn worker(&self, name: &str) -> Reaped {
        Reaped(
            worker_command(&self.sandbox, &self.url, "token", name)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn worker"),
        )
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        wait_for_status(&self.sandbox, &self.url, "chaos-1", what, pred)
    }
}

#[test]
fn a_coordinator_killed_mid_job_restarts_and_the_job_ends_bit_identical() {
    let reference = crate::recovery::uninterrupted_digest();
    let (running, first, _a, _b) = Running::start(0, 100);
    let Running {
        sandbox, listen, ..
    } = &running;

    drop(first); // SIGKILL
    let second = Coordinator::start(sandbox, listen);
    let done = running.wait_for("finished", |s| {
        s["state"] != "pending" && s["state"] != "running"
    });
    assert_resumed_bit_identical(&done, &reference);
    stop(second);
    sandbox.assert_no_processes(Duration::from_secs(10));
}

#[test]
fn a_job_failed_past_max_restarts_completes_after_kiln_resume() {
    let reference = crate::recovery::uninterrupted_digest();
    let (running, coordinator, a, b) = Running::start(0, 100);
    let Running { sandbox, url, .. } = &running;

    drop(b); // SIGKILL; max_restarts = 0
    let failed = running.wait_for("failed", |s| s["state"] == "failed");
    let cause = failed["message"].as_str().unwrap_or_default();
    assert!(
        cause.contains("(b, pid"),
        "the cause names the lost worker: {failed}"
    );
    assert!(
        !failed["last_failure"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );

    // The survivor may still be committing or pruning a checkpoint of the failed generation:
    // stop it, so that the store holds still for what follows.
    drop(a);
    // A step that is not a committed checkpoint, or one that does not verify, is refused
    // with the list of those that are; nothing is queued.
    let checkpoints = sandbox.path().join(".kiln/store/jobs/chaos-1/checkpoints");
    let mut committed: Vec<u64> = std::fs::read_dir(&checkpoints)
        .expect("checkpoints")
        .filter_map(|e| {
            let dir = e.ok()?.path();
            dir.join("manifest.json").exists().then_some(())?;
            dir.file_name()?.to_str()?.parse().ok()
        })
        .collect();
    committed.sort_unstable();
    assert!(committed.len() >= 2, "keep = 2: {committed:?}");
    let list = format!(
        "committed checkpoints: {}",
        committed
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    for step in ["7", "99999999"] {
        let out = sandbox
            .run(
                &["resume", "chaos-1", "--from", step, "--coordinator", url],
                Duration::from_secs(30),
            )
            .expect("resume");
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("has no committed checkpoint {step}; {list}")),
            "{}",
            describe(&out)
        );
    }
    let older = checkpoints.join(committed[0].to_string()).join("model.bin");
    let mut bytes = std::fs::read(&older).expect("model.bin");
    bytes[0] ^= 0xff;
    std::fs::write(&older, bytes).expect("corrupt");
    let out = sandbox
        .run(
            &[
                "resume",
                "chaos-1",
                "--from",
                &committed[0].to_string(),
                "--coordinator",
                url,
            ],
            Duration::from_secs(30),
        )
        .expect("resume");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "checkpoint {} of job chaos-1 does not verify",
            committed[0]
        )),
        "{}",
        describe(&out)
    );
    assert_eq!(
        status(sandbox, url, "chaos-1").expect("status")["state"],
        "failed"
    );

    let (_c, _d) = (running.worker("c"), running.worker("d"));
    let newest = committed[committed.len() - 1].to_string();
    let out = sandbox
        .run(
            &[
                "resume",
                "chaos-1",
                "--from",
                &newest,
                "--follow",
                "--coordinator",
                url,
            ],
            Duration::from_secs(120),
        )
        .expect("resume");
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("resumed by request from checkpoint {newest}")),
        "{stdout}"
    );
    // What the CLI said is what ran: no worker fell back to another checkpoint.
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("resuming from checkpoint"),
        "{}",
        describe(&out)
    );
    let done = status(sandbox, url, "chaos-1").expect("status");
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        done["params_digest"],
        reference.trim_start_matches("sha256:"),
        "{done}"
    );

    // Only a failed or cancelled job can be resumed.
    let out = sandbox
        .run(
            &["resume", "chaos-1", "--coordinator", url],
            Duration::from_secs(30),
        )
        .expect("resume");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only a failed or cancelled job"));
    stop(coordinator);
}

#[test]
fn chaos_three_worker_kills_and_a_coordinator_kill_end_bit_identical() {
    let reference = crate::recovery::uninterrupted_digest();
    let mut rng = crate::recovery::Rng::seeded();
    let (running, mut coordinator_process, a, b) = Running::start(3, 50);
    let mut workers = [a, b];
    let coordinator_round = rng.below(4);
    let mut at = 50;
    let mut generation = 0;
    for round in 0..4 {
        at += 100 + rng.below(200);
        // A kill counts only while a generation runs, and a new one (after the previous kill)
        // at that: the checkpoint step alone survives a coordinator restart while the job
        // waits for its workers.
        let now = running.wait_for(&format!("a new generation past checkpoint {at}"), |s| {
            s["state"] == "running"
                && s["generation"].as_u64() > Some(generation)
                && s["checkpoint_step"].as_u64().is_some_and(|c| c >= at)
        });
        generation = now["generation"].as_u64().unwrap_or_default();
        if round == coordinator_round {
            eprintln!("round {round}: kill -9 the coordinator after checkpoint {at}");
            drop(coordinator_process);
            coordinator_process = Coordinator::start(&running.sandbox, &running.listen);
        } else {
            let victim = rng.below(2) as usize;
            eprintln!("round {round}: kill -9 worker {victim} after checkpoint {at}");
            // The test plays the provider: the killed worker is replaced by a new one.
            workers[victim] = running.worker(&format!("replacement-{round}"));
        }
    }
    let done = running.wait_for("finished", |s| {
        s["state"] != "pending" && s["state"] != "running"
    });
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["restarts"], 3, "three worker deaths: {done}");
    assert_eq!(
        done["params_digest"],
        reference.trim_start_matches("sha256:"),
        "{done}"
    );
    stop(coordinator_process);
}

#[test]
fn elastic_a_lost_worker_not_replaced_leaves_one_that_sees_every_sample_once() {
    let job = crate::recovery::job(1, "1s")
        .replace("workers    = 2\n", "workers    = 2\n    min_workers = 1\n");
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        ("job.hcl", &job),
        ("token", "s3cret\n"),
    ]);
    let audit = sandbox.path().join("audit");
    std::fs::create_dir(&audit).expect("audit dir");
    let coordinator = coordinator(&sandbox);
    let url = coordinator.url();
    let start = |name: &str| {
        Reaped(
            worker_command(&sandbox, &url, "token", name)
                .env("KILN_SAMPLE_AUDIT_DIR", &audit)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn worker"),
        )
    };
    let (_a, b) = (start("a"), start("b"));
    let out = sandbox
        .run(
            &["submit", "job.hcl", "--coordinator", &url],
            Duration::from_secs(60),
        )
        .expect("submit");
    assert!(out.status.success(), "{}", describe(&out));
    wait_for_status(&sandbox, &url, "chaos-1", "checkpointed", |s| {
        s["checkpoint_step"].as_u64().is_some_and(|c| c >= 100)
    });
    drop(b); // SIGKILL, and no replacement comes.
    let done = wait_for_status(&sandbox, &url, "chaos-1", "finished", |s| {
        s["state"] != "pending" && s["state"] != "running"
    });
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["workers"].as_array().map(Vec::len), Some(1), "{done}");
    assert_eq!(done["restarts"], 1, "{done}");

    // The committed trajectory: each step as logged by the last generation that ran it (a
    // failed generation's steps past its checkpoint were redone by the next one).
    let mut logs: Vec<(u64, std::time::SystemTime, std::path::PathBuf)> = std::fs::read_dir(&audit)
        .expect("audit logs")
        .map(|e| {
            let path = e.expect("entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let from = name
                .split(".from-")
                .nth(1)
                .and_then(|r| r.split('.').next());
            let modified = std::fs::metadata(&path).and_then(|m| m.modified());
            (
                from.and_then(|f| f.parse().ok())
                    .expect("from-STEP in the name"),
                modified.expect("mtime"),
                path,
            )
        })
        .collect();
    logs.sort();
    assert!(logs.len() >= 2, "two generations logged: {logs:?}");
    let mut steps: std::collections::BTreeMap<u64, (u32, Vec<u32>)> = Default::default();
    for (_, _, path) in &logs {
        for line in std::fs::read_to_string(path).expect("log").lines() {
            let mut fields = line.split(' ').map(|f| f.parse::<u64>().expect("number"));
            let (step, epoch) = (fields.next().expect("step"), fields.next().expect("epoch"));
            steps.insert(step, (epoch as u32, fields.map(|i| i as u32).collect()));
        }
    }
    let last = *steps.keys().last().expect("steps");
    assert_eq!(
        steps.keys().copied().collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>()
    );
    let batch_sizes: std::collections::BTreeSet<usize> =
        steps.values().map(|(_, b)| b.len()).collect();
    assert!(
        batch_sizes.contains(&64) && batch_sizes.contains(&32),
        "world 2 then 1: {batch_sizes:?}"
    );
    let mut epochs: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
    for (epoch, batch) in steps.into_values() {
        epochs.entry(epoch).or_default().extend(batch);
    }
    assert_eq!(epochs.len(), 30, "every epoch ran");
    for (epoch, mut seen) in epochs {
        seen.sort_unstable();
        assert!(
            seen.iter().copied().eq(0..3686),
            "epoch {epoch}: every training sample exactly once ({} seen)",
            seen.len()
        );
    }
    stop(coordinator);
}

#[test]
fn a_waiting_job_says_why_its_clock_runs_and_ctrl_c_detaches() {
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        ("job.hcl", &blobs_job_hcl("wait", 2, 1024, 2, 10)),
        ("token", "s3cret\n"),
    ]);
    let coordinator = coordinator(&sandbox);
    let url = coordinator.url();
    let follower = sandbox
        .kiln(&["submit", "job.hcl", "--follow", "--coordinator", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("submit --follow");
    let waiting = wait_for_status(&sandbox, &url, "wait-1", "waiting", |s| {
        s["message"] == "pending: needs 2 workers, 0 registered (0 idle)"
            && s["elapsed_secs"].as_f64().is_some_and(|e| e >= 0.5)
    });
    assert_eq!(waiting["state"], "pending", "{waiting}");
    let out = sandbox
        .run(
            &["status", "wait-1", "--coordinator", &url],
            Duration::from_secs(30),
        )
        .expect("status");
    let text = String::from_utf8_lossy(&out.stdout);
    let after: f64 = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("job wait-1 pending after "))
        .and_then(|l| l.strip_suffix('s'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", describe(&out)));
    assert!(after >= 0.5, "an unfinished job's clock runs: {text}");

    // Ctrl-C detaches: the follower exits 0 and says how to come back; the job waits on.
    assert!(signal(follower.id(), "INT"));
    let out = wait_with_timeout(follower, Duration::from_secs(30)).expect("follower exits");
    assert!(out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("wait-1: pending: needs 2 workers, 0 registered (0 idle)"),
        "the wait was printed: {}",
        describe(&out)
    );
    assert!(
        stderr.contains("detached from wait-1") && stderr.contains("kiln status -f wait-1"),
        "{}",
        describe(&out)
    );

    let _a = Reaped(
        worker_command(&sandbox, &url, "token", "a")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("worker"),
    );
    wait_for_status(&sandbox, &url, "wait-1", "one worker counted", |s| {
        s["state"] == "pending" && s["message"] == "pending: needs 2 workers, 1 registered (1 idle)"
    });
    let out = sandbox
        .run(
            &["cancel", "wait-1", "--coordinator", &url],
            Duration::from_secs(30),
        )
        .expect("cancel");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        status(&sandbox, &url, "wait-1").expect("status")["state"],
        "cancelled"
    );
    // Following again replays the job's events in order, then its summary.
    let out = sandbox
        .run(
            &["status", "-f", "wait-1", "--coordinator", &url],
            Duration::from_secs(30),
        )
        .expect("status -f");
    assert_eq!(
        out.status.code(),
        Some(1),
        "a cancelled job: {}",
        describe(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("wait-1: "))
        .collect();
    assert_eq!(
        events,
        [
            "submitted",
            "pending: needs 2 workers, 0 registered (0 idle)",
            "pending: needs 2 workers, 1 registered (1 idle)",
            "cancelled by request"
        ],
        "{}",
        describe(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("job wait-1 cancelled after"));
    stop(coordinator);
}

#[test]
fn an_unreachable_coordinator_is_named_once_with_exit_code_3() {
    // Where a coordinator listened and no longer does.
    let sandbox = Sandbox::new().with_files(&[("token", "s3cret\n")]);
    let gone = coordinator(&sandbox);
    let url = gone.url();
    stop(gone);
    let out = sandbox
        .run(&["status", "--coordinator", &url], Duration::from_secs(30))
        .expect("status");
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot reach the coordinator at {url}")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("tcp connect error: tcp connect error"),
        "no repeated causes: {stderr}"
    );
}
