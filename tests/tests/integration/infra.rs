//! `kiln plan / apply / destroy / state` with the local provider: a real detached coordinator
//! and worker processes, recorded state, drift after a kill, saved plans, the confirmation
//! prompt on a real terminal (through script(1)) and the state lock.

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kiln_tests::{
    Destroyed, Sandbox, bin, blobs_job_hcl, describe, port_after, signal, wait_until,
    wait_with_timeout,
};

const CLUSTER: &str = r#"variable "nodes" {
  type    = number
  default = 2
}

cluster "local" {
  provider = "local"
  node_pool "cpu" {
    count = var.nodes
  }
  state {
    path = ".kiln/state"
  }
}
"#;

const T: Duration = Duration::from_secs(60);

fn kiln(sandbox: &Sandbox, args: &[&str]) -> Output {
    sandbox.run(args, T).expect("kiln runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn ok(sandbox: &Sandbox, args: &[&str]) -> String {
    let out = kiln(sandbox, args);
    assert!(out.status.success(), "kiln {args:?}: {}", describe(&out));
    stdout(&out)
}

/// The pid `kiln state` records for `address`, e.g. `cluster.local.node_pool.cpu[1]`.
pub(crate) fn recorded_pid(sandbox: &Sandbox, address: &str) -> u32 {
    let state = ok(sandbox, &["state"]);
    let line = state
        .lines()
        .find(|l| l.starts_with(&format!("{address} ")))
        .unwrap_or_else(|| panic!("{address} not in the state:\n{state}"));
    let pid = line.split("(pid ").nth(1).expect("a pid");
    pid[..pid.find([',', ')', ' ']).expect("pid ends")]
        .parse()
        .expect("numeric pid")
}

fn wait_for_processes(sandbox: &Sandbox, count: usize) {
    wait_until(T, &format!("{count} processes"), || {
        let live = sandbox.processes();
        if live.len() == count {
            Ok(())
        } else {
            Err(live)
        }
    });
}

/// `kiln apply` on a pseudo-terminal, answering its prompt from the test.
struct Interactive {
    child: std::process::Child,
    output: mpsc::Receiver<String>,
    seen: String,
}

impl Interactive {
    fn start(sandbox: &Sandbox, args: &str) -> Self {
        let command = format!("'{}' {args}", bin("kiln").display());
        let mut child = Command::new("script")
            .args(["--quiet", "--return", "--command", &command, "/dev/null"])
            .current_dir(sandbox.path())
            .env("KILN_TEST_TAG", &sandbox.tag)
            .env("KILN_WORKER_BIN", bin("kiln-worker"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script(1) runs");
        let mut out = child.stdout.take().expect("stdout");
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0
                    || tx
                        .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                        .is_err()
                {
                    break;
                }
            }
        });
        Self {
            child,
            output,
            seen: String::new(),
        }
    }

    fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + T;
        while !self.seen.contains(text) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(chunk) => self.seen.push_str(&chunk),
                Err(_) => panic!("never saw {text:?}; output so far:\n{}", self.seen),
            }
        }
    }

    fn answer(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("answer");
        stdin.flush().expect("flush");
    }

    fn finish(mut self) -> (std::process::ExitStatus, String) {
        drop(self.child.stdin.take());
        let out = wait_with_timeout(self.child, T).expect("apply ends");
        self.seen.push_str(&String::from_utf8_lossy(&out.stdout));
        while let Ok(chunk) = self.output.try_recv() {
            self.seen.push_str(&chunk);
        }
        (out.status, self.seen)
    }
}

#[test]
fn apply_repairs_drift_resizes_under_a_lock_and_destroys() {
    let job = blobs_job_hcl("small", 2, 512, 1, 10);
    let sandbox = Sandbox::new().with_files(&[("cluster.hcl", CLUSTER), ("job.hcl", &job)]);
    let _cleanup = Destroyed(&sandbox);

    let plan = ok(&sandbox, &["plan"]);
    assert!(plan.contains("+ cluster.local.coordinator"), "{plan}");
    assert!(
        plan.contains("Plan: 3 to add, 0 to change, 0 to destroy."),
        "{plan}"
    );

    // No terminal and no --auto-approve: refused, nothing started.
    let out = kiln(&sandbox, &["apply"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--auto-approve"));
    assert!(sandbox.processes().is_empty());

    let applied = ok(&sandbox, &["apply", "--auto-approve"]);
    assert!(applied.contains("3 added"), "{applied}");
    wait_for_processes(&sandbox, 3);
    let plan = ok(&sandbox, &["plan"]);
    assert!(plan.starts_with("No changes."), "{plan}");
    // The applied cluster runs jobs; submit finds its coordinator through the state.
    let submitted = ok(&sandbox, &["submit", ".", "--follow"]);
    assert!(submitted.contains("succeeded"), "{submitted}");

    // Drift: a worker dies behind kiln's back.
    let victim = recorded_pid(&sandbox, "cluster.local.node_pool.cpu[1]");
    assert!(signal(victim, "KILL"));
    wait_for_processes(&sandbox, 2);
    let plan = ok(&sandbox, &["plan"]);
    assert!(
        plan.contains("# cluster.local.node_pool.cpu[1] is gone and will be re-created"),
        "{plan}"
    );
    assert!(plan.contains(&format!("pid {victim}")), "{plan}");
    assert!(
        plan.contains("Plan: 1 to add, 0 to change, 0 to destroy."),
        "{plan}"
    );
    // The same for scripts.
    let plan: serde_json::Value =
        serde_json::from_str(&ok(&sandbox, &["plan", "--json"])).expect("plan JSON");
    assert_eq!(
        (plan["add"].as_u64(), plan["destroy"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(plan["changes"][0]["action"], "create", "{plan}");
    let state: serde_json::Value =
        serde_json::from_str(&ok(&sandbox, &["state", "--json"])).expect("state JSON");
    let resources = state["resources"].as_array().expect("resources");
    assert_eq!(resources.len(), 3, "{state}");
    let victim_record = resources
        .iter()
        .find(|r| r["address"] == "cluster.local.node_pool.cpu[1]")
        .expect("the victim");
    assert_eq!(victim_record["running"], false, "{state}");
    assert!(
        victim_record["gone"]
            .as_str()
            .is_some_and(|g| g.contains(&victim.to_string())),
        "{state}"
    );
    assert_eq!(
        resources.iter().filter(|r| r["running"] == true).count(),
        2,
        "{state}"
    );
    ok(&sandbox, &["apply", "--auto-approve"]);
    wait_for_processes(&sandbox, 3);
    assert_ne!(
        recorded_pid(&sandbox, "cluster.local.node_pool.cpu[1]"),
        victim
    );
    assert!(ok(&sandbox, &["plan"]).starts_with("No changes."));

    // Grow the pool by one: exactly one create, saved to a plan file.
    let plan = ok(
        &sandbox,
        &["plan", "--var", "nodes=3", "--out", "grow.plan"],
    );
    assert!(plan.contains("+ cluster.local.node_pool.cpu[2]"), "{plan}");
    assert_eq!(plan.matches("will be created").count(), 1, "{plan}");
    assert!(
        plan.contains("Plan: 1 to add, 0 to change, 0 to destroy."),
        "{plan}"
    );

    // An apply waiting at its prompt holds the lock: a second apply is refused, naming it.
    let mut first = Interactive::start(&sandbox, "apply --var nodes=3");
    first.wait_for("Only 'yes' is accepted");
    let out = kiln(&sandbox, &["apply", "grow.plan"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(
        stderr.contains("locked by `kiln apply` (pid"),
        "{}",
        describe(&out)
    );
    first.answer("yes");
    let (status, seen) = first.finish();
    assert!(status.success(), "{seen}");
    assert!(seen.contains("1 added"), "{seen}");
    wait_for_processes(&sandbox, 4);

    // The saved plan was made before that apply: it is stale now.
    let out = kiln(&sandbox, &["apply", "grow.plan"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stale"));
    assert_eq!(sandbox.processes().len(), 4);

    let destroyed = ok(&sandbox, &["destroy", "--auto-approve"]);
    assert!(destroyed.contains("4 destroyed"), "{destroyed}");
    sandbox.assert_no_processes(Duration::from_secs(10));
    let state = ok(&sandbox, &["state"]);
    assert!(state.ends_with("no resources\n"), "{state}");
}

#[test]
fn a_declined_prompt_changes_nothing() {
    let sandbox = Sandbox::new().with_files(&[("cluster.hcl", CLUSTER)]);
    let _cleanup = Destroyed(&sandbox);
    let mut apply = Interactive::start(&sandbox, "apply");
    apply.wait_for("Only 'yes' is accepted");
    apply.answer("no");
    let (status, seen) = apply.finish();
    assert_eq!(status.code(), Some(1), "{seen}");
    assert!(seen.contains("nothing was changed"), "{seen}");
    assert!(sandbox.processes().is_empty());
    let state = ok(&sandbox, &["state"]);
    assert!(state.contains("state serial 0"), "{state}");
}

#[test]
fn client_commands_find_the_applied_coordinator_and_say_when_it_is_gone() {
    // Bound on every interface, on a port the coordinator picks: what apply records and
    // prints is a URL a client can use.
    let cluster = CLUSTER.replace(
        "  state {",
        "  coordinator {\n    listen = \"0.0.0.0:0\"\n  }\n  state {",
    );
    let job = blobs_job_hcl("long", 2, 4096, 200, 1000);
    let sandbox = Sandbox::new().with_files(&[("cluster.hcl", &cluster), ("job.hcl", &job)]);
    let _cleanup = Destroyed(&sandbox);
    let applied = ok(&sandbox, &["apply", "--auto-approve"]);
    let port = port_after(&applied, "cluster local: coordinator at http://127.0.0.1:");
    assert!(port.is_some_and(|p| p > 0), "{applied}");
    assert!(!applied.contains("http://0.0.0.0"), "{applied}");
    wait_for_processes(&sandbox, 3);

    // None of these is told where the coordinator is: each finds it through the state.
    assert!(ok(&sandbox, &["submit", "."]).contains("submitted long-1"));
    assert!(ok(&sandbox, &["status", "-C", "."]).contains("long-1"));
    assert!(ok(&sandbox, &["cancel", "long-1"]).contains("long-1 cancelled"));
    assert!(ok(&sandbox, &["resume", "long-1"]).contains("resumed by request"));
    let status = ok(&sandbox, &["status", "long-1", "--json"]);
    assert!(status.contains("\"id\": \"long-1\""), "{status}");
    assert!(ok(&sandbox, &["cancel", "long-1"]).contains("long-1 cancelled"));

    // The recorded coordinator dies: every client command says so, none falls back.
    let coordinator = recorded_pid(&sandbox, "cluster.local.coordinator");
    assert!(signal(coordinator, "KILL"));
    wait_for_processes(&sandbox, 2);
    for args in [&["status"][..], &["cancel", "long-1"], &["submit", "."]] {
        let out = kiln(&sandbox, args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("is not running") && stderr.contains("run `kiln apply`"),
            "{args:?}: {}",
            describe(&out)
        );
    }
}

/// `CUDA_VISIBLE_DEVICES` of a live process, from its environment (`None` once it is gone).
pub(crate) fn visible_devices(pid: u32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ
        .split(|b| *b == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .find_map(|entry| entry.strip_prefix("CUDA_VISIBLE_DEVICES="))
        .map(str::to_owned)
}

#[test]
fn each_local_node_sees_its_own_gpus_and_a_machine_with_too_few_is_refused() {
    const GPU_CLUSTER: &str = r#"cluster "local" {
  provider = "local"
  node_pool "gpu" {
    count         = 2
    gpus_per_node = 2
  }
  node_pool "cpu" {
    count = 1
  }
}
"#;
    let sandbox = Sandbox::new().with_files(&[("cluster.hcl", GPU_CLUSTER)]);
    let _cleanup = Destroyed(&sandbox);
    // The test double stands for a machine with that many GPUs.
    let apply = |gpus| {
        sandbox
            .run_on_fake_gpus(&["apply", "--auto-approve"], gpus, T)
            .expect("kiln apply ends")
    };
    let out = apply(3);
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cluster.local.node_pool.gpu[1]")
            && stderr.contains("needs the machine's GPUs 2 to 3, but this machine has 3"),
        "{}",
        describe(&out)
    );

    let out = apply(4);
    assert!(out.status.success(), "{}", describe(&out));
    for (node, devices) in [("gpu[0]", "0,1"), ("gpu[1]", "2,3"), ("cpu[0]", "")] {
        let pid = recorded_pid(&sandbox, &format!("cluster.local.node_pool.{node}"));
        assert_eq!(visible_devices(pid).as_deref(), Some(devices), "{node}");
    }
}
