//! Configuration directories that share one object store: job ids are claimed in the store
//! itself, so no run writes into, or deletes from, another run's checkpoints — whether the
//! runs take turns, run at once, or one directory's state was wiped in between.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use kiln_tests::{Sandbox, blobs_job_hcl, cluster_hcl_with_storage, describe, wait_with_timeout};

fn sandbox(store: &Path) -> Sandbox {
    Sandbox::new().with_files(&[
        (
            "cluster.hcl",
            &cluster_hcl_with_storage(2, &format!("url = \"file://{}\"", store.display())),
        ),
        ("job.hcl", &blobs_job_hcl("shared", 2, 1024, 2, 5)),
    ])
}

/// The manifest path the summary of a successful `kiln up` names.
fn summary_manifest(out: &Output) -> PathBuf {
    assert!(out.status.success(), "{}", describe(out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let url = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("checkpoint"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no checkpoint in the summary\n{}", describe(out)));
    PathBuf::from(url.strip_prefix("file://").expect("a file:// URL"))
}

fn job_dirs(store: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(store.join("jobs"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

const T: Duration = Duration::from_secs(180);

#[test]
fn runs_in_turn_and_after_a_wiped_state_keep_their_own_checkpoints() {
    let store = tempfile::tempdir().expect("store");
    let (a, b) = (sandbox(store.path()), sandbox(store.path()));
    let first = summary_manifest(&a.run(&["up", "."], T).expect("up a"));
    let second = summary_manifest(&b.run(&["up", "."], T).expect("up b"));
    assert_ne!(first, second, "two runs, two job directories");
    // A's state is lost; its next run must not reuse (and prune) an id the store has seen.
    std::fs::remove_dir_all(a.path().join(".kiln/state")).expect("wipe state");
    let third = summary_manifest(&a.run(&["up", "."], T).expect("up a again"));
    for manifest in [&first, &second, &third] {
        assert!(manifest.is_file(), "{} was deleted", manifest.display());
    }
    assert_eq!(job_dirs(store.path()), ["shared-1", "shared-2", "shared-3"]);
    a.assert_no_processes(Duration::from_secs(5));
    b.assert_no_processes(Duration::from_secs(5));
}

#[test]
fn runs_at_once_never_share_a_job_directory() {
    let store = tempfile::tempdir().expect("store");
    let sandboxes: Vec<Sandbox> = (0..2).map(|_| sandbox(store.path())).collect();
    let children: Vec<_> = sandboxes
        .iter()
        .map(|s| {
            s.kiln(&["up", "."])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn kiln up")
        })
        .collect();
    let manifests: Vec<PathBuf> = children
        .into_iter()
        .map(|c| summary_manifest(&wait_with_timeout(c, T).expect("kiln up finishes")))
        .collect();
    assert_ne!(manifests[0], manifests[1]);
    for manifest in &manifests {
        assert!(manifest.is_file(), "{} was deleted", manifest.display());
    }
    assert_eq!(job_dirs(store.path()), ["shared-1", "shared-2"]);
}

#[test]
fn a_job_directory_without_a_claim_is_never_reused() {
    let store = tempfile::tempdir().expect("store");
    // Left by someone else (an older kiln, a copy by hand): its checkpoint must survive.
    let foreign = store.path().join("jobs/shared-1/checkpoints/5");
    std::fs::create_dir_all(&foreign).expect("mkdir");
    std::fs::write(foreign.join("manifest.json"), b"{}").expect("write");
    let sandbox = sandbox(store.path());
    let manifest = summary_manifest(&sandbox.run(&["up", "."], T).expect("up"));
    assert!(
        manifest.starts_with(store.path().join("jobs/shared-2")),
        "{}",
        manifest.display()
    );
    assert!(foreign.join("manifest.json").is_file());
    assert_eq!(
        std::fs::read_dir(store.path().join("jobs/shared-1"))
            .expect("dir")
            .count(),
        1,
        "nothing was written into the foreign directory"
    );
}
