//! The coordinator's HTTP side: `/metrics` read by Prometheus's own parser, the JSON API,
//! and the dashboard in a real browser (Debian's headless Chromium): the page loads, the
//! running job's curve grows between two looks, the registry's models are listed, and a
//! screenshot is written.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kiln_tests::{Destroyed, Sandbox, blobs_job_hcl, cluster_hcl, describe, wait_until};
use serde_json::Value;

const T: Duration = Duration::from_secs(120);

fn kiln_ok(sandbox: &Sandbox, args: &[&str]) -> String {
    let out = sandbox.run(args, T).expect("kiln runs");
    assert!(out.status.success(), "kiln {args:?}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn get_json(url: &str) -> Value {
    let text = ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .into_string()
        .expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url} is not JSON ({e}): {text}"))
}

/// The browser: `KILN_CHROMIUM`, else Debian's `chromium`.
fn chromium() -> String {
    std::env::var("KILN_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// Headless Chromium on `url` with `args`: stdout. Its page scripts run (and their fetches
/// finish) within a virtual time budget before it dumps or shoots.
fn browse(profile: &Path, url: &str, args: &[&str]) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=4000",
            "--window-size=1100,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); install Debian's chromium or set KILN_CHROMIUM",
                chromium()
            )
        });
    assert!(out.status.success(), "chromium: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The number in `attr="N"` of the curve's `<svg>` in a dumped DOM.
fn curve_attr(dom: &str, attr: &str) -> u64 {
    let svg = dom
        .split("<svg id=\"curve\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no curve in the page:\n{dom}"));
    let head = &svg[..svg.find('>').expect("tag ends")];
    let value = head
        .split(&format!("{attr}=\""))
        .nth(1)
        .unwrap_or_else(|| panic!("no {attr} in {head}"));
    value[..value.find('"').expect("quoted")]
        .parse()
        .expect("a number")
}

#[test]
fn metrics_parse_and_the_dashboard_draws_a_growing_curve_in_chromium() {
    let jobs = format!(
        "{}{}",
        blobs_job_hcl("quick", 2, 512, 1, 5),
        blobs_job_hcl("long", 2, 20_000, 400, 200)
    );
    let sandbox =
        Sandbox::new().with_files(&[("cluster.hcl", &cluster_hcl(2)), ("jobs.hcl", &jobs)]);
    let _cleanup = Destroyed(&sandbox);
    let applied = kiln_ok(&sandbox, &["apply", "--auto-approve"]);
    let url = applied
        .lines()
        .find_map(|l| l.strip_prefix("cluster local: dashboard and metrics at "))
        .unwrap_or_else(|| panic!("no dashboard URL in\n{applied}"))
        .trim()
        .to_owned();
    kiln_ok(
        &sandbox,
        &["submit", "jobs.hcl", "--job", "quick", "--follow"],
    );
    kiln_ok(&sandbox, &["submit", "jobs.hcl", "--job", "long"]);
    let long = wait_until(T, "the long job to step", || {
        let jobs = get_json(&format!("{url}/api/jobs"));
        jobs.as_array()
            .into_iter()
            .flatten()
            .find(|j| {
                j["name"] == "long"
                    && j["state"] == "running"
                    && j["metrics"]["step"].as_u64() > Some(0)
            })
            .map(|j| j["id"].as_str().expect("id").to_owned())
            .ok_or(jobs)
    });

    // Prometheus's parser reads every metric; the numbers are the coordinator's.
    let samples = crate::serving::metrics(&url);
    let sample = |name: &str, label: (&str, &str)| -> Option<f64> {
        samples
            .iter()
            .find(|s| s["name"] == name && s["labels"][label.0] == label.1)
            .and_then(|s| s["value"].as_f64())
    };
    assert_eq!(
        sample("kiln_jobs", ("state", "running")),
        Some(1.0),
        "{samples:?}"
    );
    assert_eq!(sample("kiln_jobs", ("state", "succeeded")), Some(1.0));
    assert_eq!(sample("kiln_workers", ("state", "busy")), Some(2.0));
    assert!(sample("kiln_job_step", ("job", &long)).is_some_and(|s| s > 0.0));
    assert!(sample("kiln_job_steps_per_second", ("job", &long)).is_some_and(|s| s > 0.0));
    assert!(
        samples
            .iter()
            .any(|s| s["name"] == "kiln_checkpoint_commit_seconds_count"
                && s["value"].as_f64() > Some(0.0)),
        "the quick job's checkpoints were timed: {samples:?}"
    );

    // The page loads in a real browser and draws the running job; a second look later
    // shows more of its curve.
    let profile = tempfile::tempdir().expect("profile");
    let first = browse(profile.path(), &url, &["--dump-dom"]);
    assert!(first.contains(&format!("data-job=\"{long}\"")), "{first}");
    let before = curve_attr(&first, "data-points");
    assert!(before > 0, "no point drawn:\n{first}");
    wait_until(T, "more progress reports", || {
        let history = get_json(&format!("{url}/api/jobs/{long}"));
        let points = history["history"]["points"].as_array().map_or(0, Vec::len) as u64;
        if points > before + 2 {
            Ok(())
        } else {
            Err(points)
        }
    });
    let second = browse(profile.path(), &url, &["--dump-dom"]);
    let after = curve_attr(&second, "data-points");
    assert!(
        after > before,
        "the curve did not grow: {before} then {after} points"
    );
    assert!(curve_attr(&second, "data-checkpoints") > 0, "{second}");
    // The quick job's model, from the registry, with its version.
    assert!(
        second.contains("<h3 class=\"model\">quick</h3>"),
        "{second}"
    );

    let shot = sandbox.path().join("dashboard.png");
    browse(
        profile.path(),
        &url,
        &[&format!("--screenshot={}", shot.display())],
    );
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    // Kept where a person can look at it.
    let kept = kiln_tests::bin_dir().join("dashboard.png");
    std::fs::copy(&shot, &kept).expect("copy the screenshot");

    // An unknown job is a JSON 404.
    match ureq::get(&format!("{url}/api/jobs/nope")).call() {
        Err(ureq::Error::Status(404, r)) => {
            let body: Value = serde_json::from_str(&r.into_string().expect("body")).expect("JSON");
            assert!(
                body["error"].as_str().is_some_and(|e| e.contains("nope")),
                "{body}"
            );
        }
        other => panic!("{other:?}"),
    }
    kiln_ok(&sandbox, &["cancel", &long]);
}
