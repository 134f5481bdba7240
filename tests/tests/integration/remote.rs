//! The `ssh` and `slurm` providers against the real thing: sshd daemons on the namespace
//! hosts (keys and `known_hosts` made by the test), and the one-node Slurm cluster
//! scripts/test starts (slurmctld, slurmd, munge; two fake GPUs through gres). On both, a
//! declared cluster is planned, applied and destroyed; a worker lost mid-job (kill -9 on its
//! host, `scancel` of its Slurm job) is drift that plan names, apply replaces it, and the job
//! ends bit-identical to an uninterrupted run. `kiln up` runs a job on both and leaves nothing
//! behind.

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use kiln_tests::hosts::Hosts;
use kiln_tests::slurm::Slurm;
use kiln_tests::sshd::{PORT, Sshd};
use kiln_tests::{Destroyed, Sandbox, blobs_job_hcl, cluster_hcl, describe, signal, wait_until};

use crate::coordinator::wait_for_status;
use crate::infra::{ok, recorded_pid, visible_devices};

const T: Duration = Duration::from_secs(300);

/// A job long enough (17,400 steps, a checkpoint every 25) that a worker is lost well before
/// its end, on `cluster`, with up to 3 restarts.
fn job_on(cluster: &str) -> String {
    let job = blobs_job_hcl("chaos", 2, 4096, 300, 25)
        .replace("cluster = \"local\"", &format!("cluster = {cluster:?}"));
    let end = job.rfind('}').expect("job block ends");
    format!(
        "{}  restart {{\n    max_restarts = 3\n  }}\n}}\n",
        &job[..end]
    )
}

/// The parameters of the job run uninterrupted on two local workers (`kiln up`), once for
/// all the tests here.
fn reference() -> String {
    static DIGEST: OnceLock<String> = OnceLock::new();
    DIGEST
        .get_or_init(|| {
            let sandbox = Sandbox::new().with_files(&[
                ("cluster.hcl", &cluster_hcl(2)),
                ("job.hcl", &job_on("local")),
            ]);
            let out = sandbox
                .run(&["up", "."], Duration::from_secs(600))
                .expect("kiln up");
            assert!(out.status.success(), "{}", describe(&out));
            crate::recovery::digest(&out)
        })
        .clone()
}

/// `kiln plan`, once it shows a resource gone (`what` was lost).
fn plan_once_gone(sandbox: &Sandbox, what: &str) -> String {
    wait_until(T, &format!("plan to see {what}"), || {
        let plan = ok(sandbox, &["plan"]);
        if plan.contains("is gone") {
            Ok(plan)
        } else {
            Err(plan)
        }
    })
}

/// Whether a plan shows attribute `name` with `value` (`name   = value`, aligned).
fn shows(plan: &str, name: &str, value: &str) -> bool {
    plan.lines().any(|l| {
        l.trim()
            .strip_prefix(name)
            .and_then(|rest| rest.trim_start().strip_prefix('='))
            .is_some_and(|v| v.trim() == value)
    })
}

/// The coordinator URL `kiln apply` printed.
fn applied_url(applied: &str) -> String {
    applied
        .lines()
        .find_map(|l| l.split("coordinator at ").nth(1))
        .unwrap_or_else(|| panic!("no coordinator URL in\n{applied}"))
        .trim()
        .to_owned()
}

/// Submits the chaos job and waits for its checkpoint at step 50.
fn submit_and_wait_for_a_checkpoint(sandbox: &Sandbox, url: &str) {
    let out = sandbox
        .run(&["submit", "job.hcl", "--coordinator", url], T)
        .expect("submit");
    assert!(out.status.success(), "{}", describe(&out));
    wait_for_status(sandbox, url, "chaos-1", "a checkpoint", |s| {
        s["checkpoint_step"].as_u64().is_some_and(|c| c >= 50)
    });
}

/// Waits for the job to end after a lost node was replaced: it succeeded in a later
/// generation with the parameters of an uninterrupted run.
fn assert_recovered(sandbox: &Sandbox, url: &str, reference: &str) {
    let done = wait_for_status(sandbox, url, "chaos-1", "the job to finish", |s| {
        s["state"] != "pending" && s["state"] != "running"
    });
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(done["generation"].as_u64() >= Some(2), "{done}");
    assert_eq!(
        done["params_digest"],
        reference.trim_start_matches("sha256:"),
        "bit-identical to an uninterrupted run: {done}"
    );
}

fn ssh_cluster(sandbox: &Sandbox, hosts: &[&str], known_hosts: &str) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    format!(
        r#"cluster "far" {{
  provider = "ssh"
  coordinator {{
    listen = "127.30.0.1:0"
  }}
  worker {{
    env = {{ KILN_TEST_TAG = "{tag}" }}
  }}
  node_pool "cpu" {{
    hosts            = [{hosts}]
    port             = {PORT}
    identity_file    = "ssh/client_key"
    known_hosts_file = "{known_hosts}"
    remote_dir       = "{dir}/remote"
    connect_timeout  = "2s"
  }}
}}
"#,
        tag = sandbox.tag,
        hosts = hosts.join(", "),
        dir = sandbox.path().display(),
    )
}

#[test]
fn ssh_hosts_train_survive_a_killed_worker_and_refuse_a_wrong_host_key() {
    let reference = reference();
    let hosts = Hosts::lock();
    let [_, a, b] = &hosts.hosts[..] else {
        panic!("three hosts: {:?}", hosts.hosts);
    };
    let sandbox = Sandbox::new().with_files(&[("job.hcl", &job_on("far"))]);
    let _sshd = Sshd::start(&sandbox, &[a, b]);
    let _cleanup = Destroyed(&sandbox);

    // A known_hosts file with another key for the host: refused, nothing started.
    let impostor = sandbox.path().join("ssh/impostor");
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&impostor)
            .status()
            .expect("ssh-keygen")
            .success()
    );
    let key = std::fs::read_to_string(impostor.with_extension("pub")).expect("key");
    let wrong = format!(
        "[{}]:{PORT} {}",
        a.ip,
        key.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
    );
    std::fs::write(sandbox.path().join("ssh/wrong_known_hosts"), wrong).expect("write");
    std::fs::write(
        sandbox.path().join("cluster.hcl"),
        ssh_cluster(&sandbox, &[&a.ip, &b.ip], "ssh/wrong_known_hosts"),
    )
    .expect("write");
    let out = sandbox.run(&["apply", "--auto-approve"], T).expect("apply");
    let said = describe(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("host key"), "{said}");
    assert!(said.contains("ssh-keyscan"), "{said}");
    assert!(
        !sandbox.path().join("remote/bin").exists(),
        "nothing was copied to a host whose key is wrong"
    );
    ok(&sandbox, &["destroy", "--auto-approve"]);

    std::fs::write(
        sandbox.path().join("cluster.hcl"),
        ssh_cluster(&sandbox, &[&a.ip, &b.ip], "ssh/known_hosts"),
    )
    .expect("write");
    let plan = ok(&sandbox, &["plan"]);
    assert!(plan.contains("+ cluster.far.node_pool.cpu[1]"), "{plan}");
    assert!(shows(&plan, "host", &format!("{:?}", b.ip)), "{plan}");
    let applied = ok(&sandbox, &["apply", "--auto-approve"]);
    assert!(applied.contains("3 added"), "{applied}");
    assert!(applied.contains(&format!("on {}", b.ip)), "{applied}");
    let copies: Vec<_> = std::fs::read_dir(sandbox.path().join("remote/bin"))
        .expect("the binary was copied")
        .collect();
    assert_eq!(copies.len(), 1, "one copy, named by its hash: {copies:?}");
    assert!(ok(&sandbox, &["plan"]).starts_with("No changes."));
    let url = applied_url(&applied);

    submit_and_wait_for_a_checkpoint(&sandbox, &url);
    // kill -9 of the worker on b.
    let victim = recorded_pid(&sandbox, "cluster.far.node_pool.cpu[1]");
    assert!(signal(victim, "KILL"));
    let plan = plan_once_gone(&sandbox, "the killed worker");
    assert!(
        plan.contains("# cluster.far.node_pool.cpu[1] is gone and will be re-created"),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("pid {victim} on {} is no longer running", b.ip)),
        "{plan}"
    );
    let repaired = ok(&sandbox, &["apply", "--auto-approve"]);
    assert!(repaired.contains("1 added"), "{repaired}");
    assert_recovered(&sandbox, &url, &reference);

    // A host cut off is a drift line, not a hang (`ok` gives plan a deadline of its own; how
    // long it takes is in docs/benchmarks.md).
    b.link(false);
    let plan = ok(&sandbox, &["plan"]);
    b.link(true);
    assert!(plan.contains("cannot be reached"), "{plan}");

    let destroyed = ok(&sandbox, &["destroy", "--auto-approve"]);
    assert!(destroyed.contains("3 destroyed"), "{destroyed}");
    sandbox.assert_no_processes(Duration::from_secs(10));

    // A copy damaged on the host fails its hash check and is sent again.
    let copy = copies[0].as_ref().expect("entry").path();
    std::fs::write(&copy, "#!/bin/sh\necho not kiln\n").expect("damage the copy");
    ok(&sandbox, &["apply", "--auto-approve"]);
    assert!(
        std::fs::read(&copy).expect("copy")
            == std::fs::read(kiln_tests::bin("kiln-worker")).expect("worker"),
        "the damaged copy was replaced by the worker binary"
    );
    ok(&sandbox, &["destroy", "--auto-approve"]);
    sandbox.assert_no_processes(Duration::from_secs(10));
}

/// What `scontrol show job -o ID` says of a job.
fn scontrol(id: &str) -> String {
    let out = Command::new("scontrol")
        .args(["show", "job", "-o", id])
        .output()
        .expect("scontrol");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Slurm job id `kiln state` records for `address`.
fn recorded_job(sandbox: &Sandbox, address: &str) -> String {
    let state = ok(sandbox, &["state"]);
    let line = state
        .lines()
        .find(|l| l.starts_with(&format!("{address} ")))
        .unwrap_or_else(|| panic!("{address} not in the state:\n{state}"));
    let id = line.split("(Slurm job ").nth(1).expect("a job id");
    id[..id.find(')').expect("id ends")].to_owned()
}

const SLURM_CLUSTER: &str = r#"cluster "hpc" {
  provider = "slurm"
  coordinator {
    listen = "127.0.0.1:0"
  }
  worker {
    env = { KILN_FAKE_GPUS = "1" }
  }
  node_pool "gpu" {
    count         = 2
    cpus_per_node = 1
    memory_gb     = 1
    gpus_per_node = 1
    partition     = "debug"
    time_limit    = "30m"
  }
}
"#;

#[test]
fn slurm_jobs_get_their_gres_gpus_and_a_cancelled_node_is_replaced_bit_identical() {
    let reference = reference();
    let _slurm = Slurm::lock();
    let sandbox =
        Sandbox::new().with_files(&[("cluster.hcl", SLURM_CLUSTER), ("job.hcl", &job_on("hpc"))]);
    let _cleanup = Destroyed(&sandbox);
    let plan = ok(&sandbox, &["plan"]);
    assert!(shows(&plan, "partition", "\"debug\""), "{plan}");
    assert!(plan.contains("Plan: 3 to add"), "{plan}");
    let applied = ok(&sandbox, &["apply", "--auto-approve"]);
    assert!(applied.contains("3 added"), "{applied}");
    let url = applied_url(&applied);

    let jobs = [
        recorded_job(&sandbox, "cluster.hpc.node_pool.gpu[0]"),
        recorded_job(&sandbox, "cluster.hpc.node_pool.gpu[1]"),
    ];
    for id in &jobs {
        let shown = scontrol(id);
        for expected in [
            "Partition=debug",
            "TimeLimit=00:30:00",
            "NumCPUs=1",
            "MinMemoryNode=1G",
            "gpu:1",
            "JobName=kiln-hpc-gpu-",
        ] {
            assert!(shown.contains(expected), "{expected} in {shown}");
        }
    }
    // Each worker sees the GPU Slurm gave it, and only that one.
    let devices = wait_until(T, "both workers to run", || {
        let mut seen: Vec<String> = sandbox
            .processes()
            .into_iter()
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|exe| exe.ends_with("kiln-worker"))
            })
            .filter_map(visible_devices)
            .collect();
        seen.sort();
        if seen.len() == 2 { Ok(seen) } else { Err(seen) }
    });
    assert_eq!(devices, ["0", "1"]);

    submit_and_wait_for_a_checkpoint(&sandbox, &url);
    let cancelled = Command::new("scancel")
        .arg(&jobs[1])
        .status()
        .expect("scancel");
    assert!(cancelled.success());
    let plan = plan_once_gone(&sandbox, "the cancelled job");
    assert!(
        plan.contains("# cluster.hpc.node_pool.gpu[1] is gone and will be re-created"),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("Slurm job {} is", jobs[1])),
        "{plan}"
    );
    let repaired = ok(&sandbox, &["apply", "--auto-approve"]);
    assert!(repaired.contains("1 added"), "{repaired}");
    assert_recovered(&sandbox, &url, &reference);

    let destroyed = ok(&sandbox, &["destroy", "--auto-approve"]);
    assert!(destroyed.contains("3 destroyed"), "{destroyed}");
    sandbox.assert_no_processes(Duration::from_secs(30));
    for id in &jobs {
        let shown = scontrol(id);
        assert!(
            !shown.contains("JobState=RUNNING") && !shown.contains("JobState=PENDING"),
            "{shown}"
        );
    }
}

/// `kiln up` of a small job on `cluster.hcl` in `sandbox`: it succeeds, and nothing of it is
/// left running.
fn up_succeeds(sandbox: &Sandbox, cluster: &str) {
    std::fs::write(
        sandbox.path().join("job.hcl"),
        blobs_job_hcl("small", 2, 512, 2, 8)
            .replace("cluster = \"local\"", &format!("cluster = {cluster:?}")),
    )
    .expect("write");
    let out = sandbox.run(&["up", "."], T).expect("kiln up");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("succeeded"),
        "{}",
        describe(&out)
    );
    sandbox.assert_no_processes(Duration::from_secs(30));
}

#[test]
fn kiln_up_runs_a_job_on_ssh_hosts_and_leaves_nothing_behind() {
    let hosts = Hosts::lock();
    let [_, a, b] = &hosts.hosts[..] else {
        panic!("three hosts: {:?}", hosts.hosts);
    };
    let sandbox = Sandbox::new();
    let _sshd = Sshd::start(&sandbox, &[a, b]);
    std::fs::write(
        sandbox.path().join("cluster.hcl"),
        ssh_cluster(&sandbox, &[&a.ip, &b.ip], "ssh/known_hosts"),
    )
    .expect("write");
    up_succeeds(&sandbox, "far");
}

#[test]
fn kiln_up_runs_a_job_as_slurm_jobs_and_leaves_none_behind() {
    let _slurm = Slurm::lock();
    let sandbox = Sandbox::new().with_files(&[(
        "cluster.hcl",
        &SLURM_CLUSTER.replace("cluster \"hpc\"", "cluster \"burst\""),
    )]);
    up_succeeds(&sandbox, "burst");
    let queued = Command::new("squeue")
        .args(["--noheader", "--name=kiln-burst-gpu-0,kiln-burst-gpu-1"])
        .output()
        .expect("squeue");
    assert!(queued.status.success());
    assert_eq!(
        String::from_utf8_lossy(&queued.stdout).trim(),
        "",
        "no job left in the queue"
    );
}
