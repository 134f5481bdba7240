//! Workers on other hosts: a coordinator in one network namespace, two workers in two others
//! (real TCP over the bridge, nothing on loopback), the client on this host. One worker's host
//! is cut off mid-job: its lease expires, the job goes on from its last checkpoint on the
//! worker that is left; once the link is back the cut-off worker registers again and a job
//! that needs both workers runs.

use std::process::Stdio;
use std::time::Duration;

use kiln_tests::cluster::Reaped;
use kiln_tests::hosts::Hosts;
use kiln_tests::{Sandbox, bin, blobs_job_hcl, cluster_hcl, describe, wait_until};

use crate::coordinator::wait_for_status;

const T: Duration = Duration::from_secs(120);

#[test]
fn workers_on_other_hosts_train_survive_a_partition_and_rejoin() {
    let hosts = Hosts::lock();
    let [coordinator_host, a, b] = &hosts.hosts[..] else {
        panic!("three hosts: {:?}", hosts.hosts);
    };
    // Elastic: the job may go on with one worker while the other is cut off.
    let job = crate::recovery::job(3, "1s").replacen(
        "workers    = 2",
        "workers     = 2\n    min_workers = 1",
        1,
    );
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        ("job.hcl", &job),
        ("pair.hcl", &blobs_job_hcl("pair", 2, 512, 2, 8)),
        ("token", "s3cret\n"),
    ]);
    let listen = format!("{}:0", coordinator_host.ip);
    let _coordinator = Reaped(
        coordinator_host
            .command(
                &sandbox,
                &bin("kiln"),
                &[
                    "coordinator",
                    "--listen",
                    &listen,
                    "--state",
                    ".kiln/state",
                    "--join-token-file",
                    "token",
                    "--ready-file",
                    "ready",
                ],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coordinator"),
    );
    let url = wait_until(Duration::from_secs(30), "the coordinator to listen", || {
        std::fs::read_to_string(sandbox.path().join("ready")).map_err(|e| e.to_string())
    });
    let url = url.trim().to_owned();
    assert!(
        url.starts_with(&format!("http://{}:", coordinator_host.ip)),
        "{url}"
    );
    let worker = |host: &kiln_tests::hosts::Host, name: &str| {
        let log = std::fs::File::create(sandbox.path().join(format!("{name}.log"))).expect("log");
        Reaped(
            host.command(
                &sandbox,
                &bin("kiln-worker"),
                &["--coordinator", &url, "--join-token-file", "token"],
            )
            .env("KILN_NODE_NAME", name)
            .env("KILN_RECONNECT_TIMEOUT_SECS", "60")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("worker"),
        )
    };
    let _workers = [worker(a, "a"), worker(b, "b")];
    let out = sandbox
        .run(&["submit", "job.hcl", "--coordinator", &url], T)
        .expect("submit");
    assert!(out.status.success(), "{}", describe(&out));
    wait_for_status(&sandbox, &url, "chaos-1", "a checkpoint", |s| {
        s["checkpoint_step"].as_u64().is_some_and(|c| c >= 50)
    });

    b.link(false);
    let recovered = wait_for_status(&sandbox, &url, "chaos-1", "a generation without b", |s| {
        s["generation"].as_u64() >= Some(2) && s["state"] == "running"
    });
    assert!(
        recovered["last_failure"]
            .as_str()
            .is_some_and(|f| f.contains("lease")),
        "the cut-off worker was lost by its lease: {recovered}"
    );
    b.link(true);
    let done = wait_for_status(&sandbox, &url, "chaos-1", "the job to finish", |s| {
        s["state"] != "pending" && s["state"] != "running"
    });
    assert_eq!(done["state"], "succeeded", "{done}");

    // b registered again: a job that needs both workers runs.
    let out = sandbox
        .run(
            &["submit", "pair.hcl", "--coordinator", &url, "--follow"],
            T,
        )
        .expect("submit");
    assert!(
        out.status.success(),
        "{}\nb's log:\n{}",
        describe(&out),
        std::fs::read_to_string(sandbox.path().join("b.log")).unwrap_or_default()
    );
}
