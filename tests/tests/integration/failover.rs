//! Coordinators on one etcd: one leads, the others stand by and point to it. Killing the
//! leader with SIGKILL mid-job hands the job to a standby within one election TTL plus a
//! second; the job goes on from its last committed checkpoint in a new generation and ends
//! bit-identical to an uninterrupted run. A leader stopped the planned way hands over at once.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kiln_tests::cluster::{CLIENT_TOKEN_FILE, Client, Reaped, worker_command};
use kiln_tests::etcd::Etcd;
use kiln_tests::{Sandbox, cluster_hcl, describe, wait_until};

use crate::coordinator::{assert_resumed_bit_identical, wait_for_status};

/// One `kiln coordinator` on the test's etcd.
struct Replica {
    process: Reaped,
    url: String,
}

impl Replica {
    fn start(sandbox: &Sandbox, etcd: &Etcd, name: &str, election_ttl: &str) -> Replica {
        let ready = format!("{name}.ready");
        let log = std::fs::File::create(sandbox.path().join(format!("{name}.log"))).expect("log");
        let process = Reaped(
            sandbox
                .kiln(&[
                    "coordinator",
                    "--listen",
                    "127.0.0.1:0",
                    "--etcd",
                    &etcd.endpoint(),
                    "--join-token-file",
                    "token",
                    "--client-token-file",
                    CLIENT_TOKEN_FILE,
                    "--election-ttl",
                    election_ttl,
                    "--ready-file",
                    &ready,
                ])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start coordinator"),
        );
        let url = wait_until(Duration::from_secs(30), "the coordinator to listen", || {
            std::fs::read_to_string(sandbox.path().join(&ready)).map_err(|e| e.to_string())
        });
        Replica {
            process,
            url: url.trim().to_owned(),
        }
    }

    /// Whether it leads now (`Err`: what it said instead).
    fn leads(&self) -> Result<(), String> {
        let found = Client::connect(&self.url, None)
            .map_err(|e| e.to_string())?
            .find_leader()
            .map_err(|e| e.to_string())?;
        if found.is_leader {
            Ok(())
        } else {
            Err(format!("standby; leader {:?}", found.leader_url))
        }
    }
}

fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

/// A one-node cluster whose state is in `etcd`, with `more` (blocks) in it.
fn etcd_cluster(etcd: &Etcd, more: &str) -> String {
    format!(
        r#"cluster "local" {{
  provider = "local"
  node_pool "cpu" {{
    count = 1
  }}
  state {{
    backend   = "etcd"
    endpoints = ["{}"]
  }}{more}
}}
"#,
        etcd.endpoint()
    )
}

fn sandbox() -> Sandbox {
    Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        ("job.hcl", &crate::recovery::job(0, "0s")),
        ("token", "s3cret\n"),
        // Where client commands look for it by default.
        (CLIENT_TOKEN_FILE, CLIENT_TOKEN),
    ])
}

const CLIENT_TOKEN: &str = "client-s3cret";

#[test]
fn a_standby_takes_over_from_a_killed_leader_and_the_job_ends_bit_identical() {
    let reference = crate::recovery::uninterrupted_digest();
    let etcd = Etcd::start();
    let sandbox = sandbox();
    let ttl = Duration::from_secs(2);
    let a = Replica::start(&sandbox, &etcd, "a", "2s");
    wait_until(
        Duration::from_secs(30),
        "the first coordinator to lead",
        || a.leads(),
    );
    let b = Replica::start(&sandbox, &etcd, "b", "2s");
    let found = Client::connect(&b.url, None)
        .expect("connect")
        .find_leader()
        .expect("FindLeader");
    assert!(!found.is_leader, "the second coordinator stands by");
    wait_until(
        Duration::from_secs(10),
        "the standby to know the leader",
        || {
            let found = Client::connect(&b.url, None)
                .map_err(|e| e.to_string())?
                .find_leader();
            match found {
                Ok(f) if f.leader_url == a.url => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );

    // Workers and clients are given every coordinator, the standby first.
    let urls = format!("{},{}", b.url, a.url);
    let _workers: Vec<Reaped> = ["w0", "w1"]
        .iter()
        .map(|name| {
            Reaped(
                worker_command(&sandbox, &urls, "token", name)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn worker"),
            )
        })
        .collect();
    let out = sandbox
        .run(
            &["submit", "job.hcl", "--coordinator", &urls],
            Duration::from_secs(60),
        )
        .expect("submit");
    assert!(out.status.success(), "{}", describe(&out));
    wait_for_status(&sandbox, &urls, "chaos-1", "a committed checkpoint", |s| {
        s["checkpoint_step"].as_u64().is_some_and(|c| c >= 100)
    });

    // A follower given every coordinator goes on under the next leader.
    let follower = sandbox
        .kiln(&["status", "chaos-1", "-f", "--coordinator", &urls])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln status -f");
    std::thread::sleep(Duration::from_millis(500));

    drop(a.process); // SIGKILL
    let killed = Instant::now();
    wait_until(Duration::from_secs(30), "the standby to lead", || b.leads());
    let took = killed.elapsed();
    eprintln!("the standby led {took:?} after the kill");
    assert!(
        took <= ttl + Duration::from_secs(1),
        "a standby leads within one election TTL plus a second, not {took:?}\n{}",
        log(sandbox.path(), "b")
    );

    let done = wait_for_status(&sandbox, &b.url, "chaos-1", "the job to finish", |s| {
        s["state"] != "pending" && s["state"] != "running"
    });
    assert_resumed_bit_identical(&done, &reference);
    let followed =
        kiln_tests::wait_with_timeout(follower, Duration::from_secs(60)).expect("follow ends");
    assert!(followed.status.success(), "{}", describe(&followed));
    assert!(
        String::from_utf8_lossy(&followed.stderr).contains("following the next leader"),
        "{}",
        describe(&followed)
    );
    b.process.stop();
    sandbox.assert_no_processes(Duration::from_secs(40));
}

#[test]
fn a_standby_names_the_leader_and_a_stopped_leader_hands_over_at_once() {
    let etcd = Etcd::start();
    let sandbox = sandbox();
    // A long TTL: a hand-over that is quick did not wait for the lease to expire.
    let a = Replica::start(&sandbox, &etcd, "a", "30s");
    wait_until(
        Duration::from_secs(30),
        "the first coordinator to lead",
        || a.leads(),
    );
    let b = Replica::start(&sandbox, &etcd, "b", "30s");
    wait_until(
        Duration::from_secs(10),
        "the standby to refuse naming the leader",
        || {
            let mut client =
                Client::connect(&b.url, Some(CLIENT_TOKEN)).map_err(|e| e.to_string())?;
            match client.job("nope-1") {
                Err(status) => match kiln_proto::standby_refusal(&status) {
                    Some(Some(leader)) if leader == a.url => Ok(()),
                    other => Err(format!("{status:?} {other:?}")),
                },
                Ok(job) => Err(format!("a standby answered {job:?}")),
            }
        },
    );
    // A client given only the standby reaches the leader through it.
    let out = sandbox
        .run(
            &["status", "nope-1", "--coordinator", &b.url],
            Duration::from_secs(30),
        )
        .expect("status");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no job nope-1"),
        "the leader's own answer: {}",
        describe(&out)
    );

    a.process.stop(); // SIGTERM: resigns
    let stopped = Instant::now();
    wait_until(Duration::from_secs(20), "the standby to lead", || b.leads());
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "the hand-over did not wait for the 30 s lease: {:?}",
        stopped.elapsed()
    );
    b.process.stop();
    sandbox.assert_no_processes(Duration::from_secs(10));
}

#[test]
fn apply_runs_the_declared_coordinators_on_etcd_and_a_standby_answers_once_the_leader_dies() {
    let etcd = Etcd::start();
    let cluster = etcd_cluster(&etcd, "\n  coordinator {\n    replicas = 2\n  }");
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster),
        ("job.hcl", &kiln_tests::blobs_job_hcl("etcd", 1, 512, 2, 8)),
    ]);
    let _destroy = kiln_tests::Destroyed(&sandbox);
    let t = Duration::from_secs(120);
    let out = sandbox.run(&["apply", "--auto-approve"], t).expect("apply");
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("3 added"), "{stdout}");
    let state =
        String::from_utf8_lossy(&sandbox.run(&["state"], t).expect("state").stdout).into_owned();
    assert!(state.contains("cluster.local.coordinator[1]"), "{state}");
    let out = sandbox
        .run(&["submit", ".", "--follow"], t)
        .expect("submit");
    assert!(out.status.success(), "{}", describe(&out));

    // Kill whichever leads: the client finds the other one through the recorded URLs.
    let urls: Vec<String> = state
        .split_whitespace()
        .filter(|w| w.starts_with("http://"))
        .map(|w| w.trim_end_matches([',', ')']).to_owned())
        .collect();
    assert_eq!(urls.len(), 2, "{state}");
    let leader = urls
        .iter()
        .find(|u| {
            Client::connect(u, None)
                .ok()
                .and_then(|mut c| c.find_leader().ok())
                .is_some_and(|f| f.is_leader)
        })
        .expect("one leads")
        .clone();
    let port = leader.rsplit(':').next().expect("a port");
    let pid = sandbox
        .processes()
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("coordinator"))
                && std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).is_ok()
                && listens_on(*pid, port)
        })
        .expect("the leader's process");
    assert!(kiln_tests::signal(pid, "KILL"));
    let out = sandbox
        .run(&["status", "etcd-1", "--json"], t)
        .expect("status");
    assert!(
        out.status.success(),
        "the standby answers: {}",
        describe(&out)
    );
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(job["state"], "succeeded", "{job}");
    // destroy stops every replica and node it recorded (the killed one is already gone).
    let out = sandbox
        .run(&["destroy", "--auto-approve"], t)
        .expect("destroy");
    assert!(out.status.success(), "{}", describe(&out));
    sandbox.assert_no_processes(Duration::from_secs(10));
}

/// Whether process `pid` has a listening socket on `port` (from /proc: no tools needed).
fn listens_on(pid: u32, port: &str) -> bool {
    let Ok(port) = port.parse::<u16>() else {
        return false;
    };
    let hex = format!(":{port:04X} ");
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")?
                        .strip_suffix(']')
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&hex) && l.split_whitespace().nth(3) == Some("0A"))
        .any(|l| {
            l.split_whitespace()
                .nth(9)
                .is_some_and(|i| inodes.iter().any(|x| x == i))
        })
}

#[test]
fn kiln_up_on_etcd_keeps_its_job_in_the_shared_state() {
    let etcd = Etcd::start();
    let cluster = etcd_cluster(&etcd, "");
    let sandbox = sandbox().with_files(&[
        ("cluster.hcl", &cluster),
        (
            "job.hcl",
            &kiln_tests::blobs_job_hcl("shared", 1, 256, 2, 4),
        ),
    ]);
    let out = sandbox
        .run(&["up", "."], Duration::from_secs(120))
        .expect("up");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("elected leader"),
        "{}",
        describe(&out)
    );
    // A coordinator started later on the same etcd knows the job.
    let a = Replica::start(&sandbox, &etcd, "a", "2s");
    wait_until(Duration::from_secs(30), "it to lead", || a.leads());
    let out = sandbox
        .run(
            &["status", "shared-1", "--json", "--coordinator", &a.url],
            Duration::from_secs(30),
        )
        .expect("status");
    assert!(out.status.success(), "{}", describe(&out));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(job["state"], "succeeded", "{job}");
    a.process.stop();
}

#[test]
fn a_restart_of_etcd_mid_job_loses_nothing() {
    let mut etcd = Etcd::start();
    let sandbox = sandbox().with_files(&[(
        "job.hcl",
        &kiln_tests::blobs_job_hcl("steady", 1, 4096, 30, 25),
    )]);
    let a = Replica::start(&sandbox, &etcd, "a", "3s");
    wait_until(Duration::from_secs(30), "it to lead", || a.leads());
    let _worker = Reaped(
        worker_command(&sandbox, &a.url, "token", "w0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn worker"),
    );
    let out = sandbox
        .run(
            &["submit", "job.hcl", "--coordinator", &a.url],
            Duration::from_secs(60),
        )
        .expect("submit");
    assert!(out.status.success(), "{}", describe(&out));
    wait_for_status(&sandbox, &a.url, "steady-1", "a checkpoint", |s| {
        s["checkpoint_step"].as_u64().is_some_and(|c| c >= 50)
    });
    // Down for less than the election lease: the leader keeps it, and its state.
    etcd.restart();
    let done = wait_for_status(&sandbox, &a.url, "steady-1", "the job to finish", |s| {
        s["state"] != "pending" && s["state"] != "running"
    });
    assert_eq!(
        done["state"],
        "succeeded",
        "{done}\n{}",
        log(sandbox.path(), "a")
    );
    assert_eq!(done["generation"], 1, "nothing restarted: {done}");
    a.leads().expect("still the leader");
    a.process.stop();
    // What it wrote is in etcd: a new coordinator reads the job back.
    let b = Replica::start(&sandbox, &etcd, "b", "3s");
    wait_until(Duration::from_secs(30), "it to lead", || b.leads());
    let again = wait_for_status(&sandbox, &b.url, "steady-1", "the job", |_| true);
    assert_eq!(again["state"], "succeeded", "{again}");
    b.process.stop();
}
