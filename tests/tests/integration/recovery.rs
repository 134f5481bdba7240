//! Failure recovery under `kiln up`: worker processes killed with SIGKILL at random steps are
//! replaced, the job resumes from its last committed checkpoint and ends with parameters
//! bit-identical to an uninterrupted run; a corrupt checkpoint is skipped for the previous one;
//! past `max_restarts` the job fails with its cause; `kiln logs -f` follows a job across a
//! restart.

use std::io::{BufRead, BufReader};
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kiln_tests::{Sandbox, blobs_job_hcl, cluster_hcl, describe, signal, wait_with_timeout};

const T: Duration = Duration::from_secs(180);

/// 4096 − round(0.1 × 4096) = 3686 training samples / (2 × 32) = 58 steps an epoch, 1740 in
/// all; a checkpoint every 25.
pub(crate) fn job(max_restarts: u32, backoff: &str) -> String {
    let job = blobs_job_hcl("chaos", 2, 4096, 30, 25);
    let end = job.rfind('}').expect("job block ends");
    format!(
        "{}  restart {{\n    max_restarts = {max_restarts}\n    backoff      = \"{backoff}\"\n  }}\n}}\n",
        &job[..end]
    )
}

fn sandbox(max_restarts: u32, backoff: &str) -> Sandbox {
    Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        ("job.hcl", &job(max_restarts, backoff)),
    ])
}

/// `params        sha256:<hex>` from the summary.
pub(crate) fn digest(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("params"))
        .map(|d| d.trim().to_owned())
        .unwrap_or_else(|| panic!("no params digest in\n{}", describe(out)))
}

/// A `kiln up` whose stderr (the job's events) the test reads line by line.
struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Up {
    fn start(sandbox: &Sandbox) -> Self {
        Self::start_with(sandbox, &["up", "."])
    }

    fn start_with(sandbox: &Sandbox, args: &[&str]) -> Self {
        let mut child = sandbox
            .kiln(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kiln up");
        let lines = lines_of(child.stderr.take().expect("stderr"));
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads events until one satisfies `pred`, returning it.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("never saw {what}; events:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Waits for a committed checkpoint at `step` or later.
    fn wait_for_checkpoint(&mut self, step: u64) {
        self.wait_for(&format!("checkpoint >= {step}"), |l| {
            checkpoint_step(l).is_some_and(|s| s >= step)
        });
    }

    fn finish(self) -> (Output, String) {
        let out = wait_with_timeout(self.child, T).expect("kiln up ends");
        let mut events = self.seen;
        events.extend(self.lines.try_iter());
        (out, events.join("\n"))
    }
}

/// The lines of `output` as they come.
fn lines_of(output: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

fn checkpoint_step(line: &str) -> Option<u64> {
    line.split("checkpoint ")
        .nth(1)?
        .strip_suffix(" committed")?
        .parse()
        .ok()
}

/// Live worker processes of the sandbox (the bundled `kiln-worker` or a worker binary of
/// one's own, all named `*-worker`).
fn workers(sandbox: &Sandbox) -> Vec<u32> {
    sandbox
        .processes()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let cmdline = String::from_utf8_lossy(&c);
                let exe = cmdline.split('\0').next().unwrap_or_default();
                exe.ends_with("-worker")
            })
        })
        .collect()
}

/// xorshift64: the chaos is random, and its seed is printed so a failure can be replayed.
pub(crate) struct Rng(u64);

impl Rng {
    /// Seeded from `KILN_CHAOS_SEED`, else the clock; prints the seed.
    pub(crate) fn seeded() -> Self {
        let seed = std::env::var("KILN_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1
            });
        eprintln!("chaos seed {seed} (KILN_CHAOS_SEED={seed} replays it)");
        Self(seed)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

pub(crate) fn uninterrupted_digest() -> String {
    let sandbox = sandbox(0, "0s");
    let out = sandbox.run(&["up", "."], T).expect("kiln up");
    assert!(out.status.success(), "{}", describe(&out));
    digest(&out)
}

#[test]
fn killed_workers_are_replaced_and_the_run_ends_bit_identical() {
    let reference = uninterrupted_digest();
    let sandbox = sandbox(3, "0s");
    kill_and_compare(&sandbox, &["up", "."], 3, 300, &reference);
}

/// The custom-model example: its own worker binary and model kind, SGD with Nesterov
/// momentum, a cosine schedule with warm-up and gradient clipping.
#[test]
fn a_model_kind_of_ones_own_resumes_bit_identical_too() {
    let example = std::fs::read_to_string("../examples/custom-model/job.hcl").expect("example");
    let binary = format!(
        "worker_binary={}",
        kiln_tests::bin("resmlp-worker").display()
    );
    let args = ["up", ".", "--var", &binary];
    let reference = {
        let sandbox = Sandbox::new().with_files(&[("job.hcl", &example)]);
        let out = sandbox.run(&args, T).expect("kiln up");
        assert!(out.status.success(), "{}", describe(&out));
        digest(&out)
    };
    let sandbox = Sandbox::new().with_files(&[("job.hcl", &example)]);
    kill_and_compare(&sandbox, &args, 1, 400, &reference);
}

/// Runs `kiln ARGS` in `sandbox`, kills a random worker `kills` times (each after a
/// checkpoint up to `spread` steps past the last kill), and checks that the job recovers each
/// time and ends with parameters whose digest is `reference`.
fn kill_and_compare(sandbox: &Sandbox, args: &[&str], kills: u64, spread: u64, reference: &str) {
    let mut rng = Rng::seeded();
    let mut up = Up::start_with(sandbox, args);
    let mut at = 0;
    for kill in 1..=kills {
        at += 50 + rng.below(spread);
        up.wait_for_checkpoint(at);
        let live = workers(sandbox);
        assert_eq!(live.len(), 2, "two workers run: {live:?}");
        let victim = live[rng.below(2) as usize];
        let killed = Instant::now();
        assert!(signal(victim, "KILL"));
        eprintln!("kill {kill}: worker pid {victim} after checkpoint {at}");
        up.wait_for("the restarted generation", |l| {
            l.contains(&format!("generation {} started", kill + 1))
        });
        // The next generation needs the survivor, which is free only once it has left the
        // all-reduce it was in when its peer died: no waiting for a collective timeout.
        let restarted = killed.elapsed();
        assert!(
            restarted < Duration::from_secs(10),
            "the survivor left the collective and the job restarted {restarted:?} after the kill"
        );
    }
    let (out, events) = up.finish();
    assert!(out.status.success(), "{}\n{events}", describe(&out));
    assert!(
        events.contains("resuming from checkpoint"),
        "resumed from checkpoints:\n{events}"
    );
    assert_eq!(
        events
            .matches("was killed by signal 9; replaced by pid")
            .count() as u64,
        kills,
        "{events}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("restarts      {kills}")),
        "{stdout}"
    );
    assert_eq!(
        digest(&out),
        reference,
        "a run killed and resumed {kills} times ends bit-identical to an uninterrupted one"
    );
    sandbox.assert_no_processes(Duration::from_secs(10));
}

#[test]
fn a_corrupt_newest_checkpoint_is_skipped_for_the_previous_one() {
    let reference = uninterrupted_digest();
    // The backoff leaves time to damage the checkpoint the restart will resume from; keeping
    // five leaves an older one to fall back to.
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        // Two restarts: the provider replaces each killed worker within that budget.
        (
            "job.hcl",
            &job(2, "2s").replace("keep        = 2", "keep        = 5"),
        ),
    ]);
    let mut up = Up::start(&sandbox);
    up.wait_for_checkpoint(100);
    // Every rank at once: a survivor would go on committing the checkpoint it had in flight.
    for pid in workers(&sandbox) {
        assert!(signal(pid, "KILL"));
    }
    let failed = up.wait_for("the restart announcement", |l| l.contains("resumes from"));
    let step: u64 = failed
        .split("resumes from checkpoint ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no checkpoint in {failed:?}"));
    // Reports lag: a commit the coordinator has not heard of yet is damaged too, so the
    // restart must fall back below `step`.
    let checkpoints = sandbox.path().join(".kiln/store/jobs/chaos-1/checkpoints");
    let mut damaged = Vec::new();
    for entry in std::fs::read_dir(&checkpoints).expect("checkpoints") {
        let dir = entry.expect("entry").path();
        let Some(at) = dir
            .file_name()
            .and_then(|n| n.to_str()?.parse::<u64>().ok())
        else {
            continue;
        };
        if at < step || !dir.join("manifest.json").exists() {
            continue;
        }
        let model = dir.join("model.bin");
        let mut bytes = std::fs::read(&model).expect("model object");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&model, bytes).expect("flip one byte");
        damaged.push(at);
    }
    assert!(damaged.contains(&step), "{step} not committed: {damaged:?}");

    let note = up.wait_for("the fallback note", |l| l.contains("unusable"));
    assert!(
        note.contains(&format!("up to {step} are unusable")),
        "{note} (damaged {damaged:?})"
    );
    let (out, events) = up.finish();
    assert!(out.status.success(), "{}\n{events}", describe(&out));
    assert_eq!(digest(&out), reference, "resumed from an older checkpoint");
    sandbox.assert_no_processes(Duration::from_secs(10));
}

#[test]
fn past_max_restarts_the_job_fails_with_its_cause() {
    let sandbox = sandbox(1, "0s");
    let mut up = Up::start(&sandbox);
    up.wait_for_checkpoint(50);
    assert!(signal(workers(&sandbox)[0], "KILL"));
    up.wait_for("generation 2", |l| l.contains("generation 2 started"));
    up.wait_for_checkpoint(100);
    assert!(signal(workers(&sandbox)[0], "KILL"));
    let (out, events) = up.finish();
    assert_eq!(out.status.code(), Some(1), "{}\n{events}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("{events}\n{stderr}");
    assert!(all.contains("no restarts left (max_restarts = 1)"), "{all}");
    sandbox.assert_no_processes(Duration::from_secs(10));
}

#[test]
fn sigterm_checkpoints_at_the_next_step_and_leaves_without_a_restart() {
    let reference = uninterrupted_digest();
    // No restarts allowed: a planned departure must not need one.
    let sandbox = sandbox(0, "0s");
    let mut up = Up::start(&sandbox);
    up.wait_for_checkpoint(60);
    let leaver = workers(&sandbox)[0];
    assert!(signal(leaver, "TERM"));
    // The job's event, not the provider's "replaced … (planned)" line, which may come first.
    let ended = up.wait_for("the planned end of generation 1", |l| {
        l.contains("(planned)") && l.contains("left: stopped after step")
    });
    assert!(ended.contains("left: stopped after step"), "{ended}");
    let step: u64 = ended
        .split("stopped after step ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no step in {ended:?}"));
    assert!(
        ended.contains(&format!("resumes from checkpoint {step} ")),
        "the checkpoint is the step it stopped at: {ended}"
    );
    let replaced = |l: &str| {
        l.contains(&format!(
            "(pid {leaver}) exited with code 0; replaced by pid"
        )) && l.contains("(planned)")
    };
    // It may have come before the job's event, among the lines already read.
    if !up.seen.iter().any(|l| replaced(l)) {
        up.wait_for("the replacement", replaced);
    }
    let (out, events) = up.finish();
    assert!(out.status.success(), "{}\n{events}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("restarts"),
        "no restart counted:\n{stdout}"
    );
    assert_eq!(digest(&out), reference, "{events}");
    sandbox.assert_no_processes(Duration::from_secs(10));
}

#[test]
fn kiln_logs_follows_a_job_across_a_restart_each_line_tagged_with_rank_and_generation() {
    // Long enough (17400 steps) to be killed while the follow watches.
    let job = blobs_job_hcl("chaos", 2, 4096, 300, 25);
    let end = job.rfind('}').expect("job block ends");
    let job = format!(
        "{}  restart {{\n    max_restarts = 1\n    backoff      = \"0s\"\n  }}\n}}\n",
        &job[..end]
    );
    let sandbox = Sandbox::new().with_files(&[("cluster.hcl", &cluster_hcl(2)), ("job.hcl", &job)]);
    let mut up = Up::start(&sandbox);
    let line = up.wait_for("the coordinator's URL", |l| {
        l.contains("coordinator on http://")
    });
    let url = line
        .split("coordinator on ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .expect("a URL")
        .to_owned();
    up.wait_for("generation 1", |l| l.contains("generation 1 started"));
    let mut follow = sandbox
        .kiln(&["logs", "chaos-1", "-f", "--coordinator", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln logs -f");
    let followed = lines_of(follow.stdout.take().expect("stdout"));
    let mut text = Vec::new();
    // Killed once both ranks have sent lines (rank 0 a checkpoint's): a killed process's
    // unsent lines die with it.
    let seen = |text: &[String], rank: &str, what: &str| {
        text.iter()
            .any(|l| l.starts_with(&format!("[gen 1 rank {rank} ")) && l.contains(what))
    };
    while !(seen(&text, "0", "checkpoint 25 committed") && seen(&text, "1", "training samples")) {
        let line = followed
            .recv_timeout(T)
            .unwrap_or_else(|_| panic!("no checkpoint line; so far:\n{}", text.join("\n")));
        text.push(line);
    }
    assert!(signal(workers(&sandbox)[0], "KILL"));
    up.wait_for("generation 2", |l| l.contains("generation 2 started"));
    up.wait_for_checkpoint(1000);
    // One rank's lines only, of both generations (sent in batches: polled until there).
    let rank1 = kiln_tests::wait_until(T, "rank 1's lines of generation 2", || {
        let out = sandbox
            .run(
                &["logs", "chaos-1", "--rank", "1", "--coordinator", &url],
                T,
            )
            .expect("kiln logs --rank 1");
        assert!(out.status.success(), "{}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("[gen 2 rank 1 ") {
            Ok(text)
        } else {
            Err(text)
        }
    });
    assert!(rank1.lines().all(|l| l.contains(" rank 1 ")), "{rank1}");
    let (out, events) = up.finish();
    assert!(out.status.success(), "{}\n{events}", describe(&out));

    // The follow ended by itself with the job, and saw both generations of both ranks.
    let status = wait_with_timeout(follow, T).expect("kiln logs -f ends");
    assert!(status.status.success(), "{}", describe(&status));
    text.extend(followed.try_iter());
    let text = text.join("\n");
    for tag in [
        "[gen 1 rank 0 ",
        "[gen 1 rank 1 ",
        "[gen 2 rank 0 ",
        "[gen 2 rank 1 ",
    ] {
        assert!(text.contains(tag), "no line of {tag}in\n{text}");
    }
    assert!(
        text.lines().any(|l| l.starts_with("[gen 2 rank 0 ")
            && l.contains("resumed from the checkpoint of step")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("[gen 2 rank 0 ") && l.contains("finished at step 17400")),
        "{text}"
    );
}
