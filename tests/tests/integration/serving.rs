//! `kiln serve` driven by a real HTTP client (ureq) over loopback: the Open Inference
//! Protocol's health, metadata and infer; answers equal to `kiln models predict`'s; every
//! mistake a JSON error with a 4xx; batched answers equal to unbatched ones; and an alias
//! moved under load with no request failing, each answered by the version it started on;
//! drift rising on shifted inputs and staying quiet on unshifted ones.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kiln_tests::cluster::Reaped;
use kiln_tests::{Sandbox, cluster_hcl, describe, points_csv, points_job_hcl, wait_until};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(180);

/// The points job with `epochs` a variable, so that two runs make two different versions.
const EPOCHS: &str = "variable \"epochs\" {\n  default = 4\n}\n\n";

fn sandbox() -> Sandbox {
    Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        ("points.csv", &points_csv()),
        (
            "job.hcl",
            &format!("{EPOCHS}{}", points_job_hcl("var.epochs")),
        ),
    ])
}

fn kiln_ok(sandbox: &Sandbox, args: &[&str]) -> String {
    let out = sandbox.run(args, T).expect("kiln runs");
    assert!(out.status.success(), "kiln {args:?}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The CSV's features, row by row.
fn features() -> Vec<[f64; 2]> {
    points_csv()
        .lines()
        .skip(1)
        .map(|l| {
            let mut f = l.split(',').map(|v| v.parse::<f64>().expect("number"));
            [f.next().expect("x"), f.next().expect("y")]
        })
        .collect()
}

/// A running `kiln serve`.
struct Server {
    process: Reaped,
    url: String,
}

fn serve(sandbox: &Sandbox, name: &str, args: &[&str]) -> Server {
    let ready = sandbox.path().join(format!("{name}.url"));
    let log = std::fs::File::create(sandbox.path().join(format!("{name}.log"))).expect("log");
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    all.extend(["--listen", "127.0.0.1:0", "--ready-file"]);
    let ready_arg = ready.display().to_string();
    all.push(&ready_arg);
    let process = Reaped(
        sandbox
            .kiln(&all)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kiln serve"),
    );
    let url = wait_until(T, "kiln serve to listen", || {
        std::fs::read_to_string(&ready).map_err(|e| e.to_string())
    });
    wait_until(T, "the model to be ready", || {
        get(&format!("{url}/v2/health/ready")).map(drop).ok_or(())
    });
    Server { process, url }
}

/// Status, content type and JSON body of a request.
fn call(request: ureq::Request, body: Option<&str>) -> (u16, String, Value) {
    let response = match body {
        Some(body) => request.send_string(body),
        None => request.call(),
    };
    let response = match response {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("no HTTP answer: {e}"),
    };
    let status = response.status();
    let content_type = response.content_type().to_owned();
    let text = response.into_string().expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, content_type, value)
}

/// The body of a 200 GET, `None` otherwise.
fn get(url: &str) -> Option<Value> {
    match ureq::get(url).call() {
        Ok(r) => serde_json::from_str(&r.into_string().ok()?).ok(),
        Err(_) => None,
    }
}

fn infer_body(rows: &[[f64; 2]]) -> String {
    json!({
        "id": "t",
        "inputs": [{ "name": "input", "datatype": "FP32", "shape": [rows.len(), 2], "data": rows }],
    })
    .to_string()
}

/// Logits, predicted classes and the version of an infer answer.
fn infer(url: &str, model: &str, rows: &[[f64; 2]]) -> (Vec<f64>, Vec<u64>, String) {
    let (status, _, body) = call(
        ureq::post(&format!("{url}/v2/models/{model}/infer")),
        Some(&infer_body(rows)),
    );
    assert_eq!(status, 200, "{body}");
    let output = |name: &str| {
        body["outputs"]
            .as_array()
            .and_then(|o| o.iter().find(|o| o["name"] == name))
            .unwrap_or_else(|| panic!("no {name} in {body}"))["data"]
            .as_array()
            .expect("data")
            .clone()
    };
    (
        output("logits").iter().filter_map(Value::as_f64).collect(),
        output("predicted_class")
            .iter()
            .filter_map(Value::as_u64)
            .collect(),
        body["model_version"]
            .as_str()
            .expect("model_version")
            .to_owned(),
    )
}

/// `kiln models predict REF --split all --json`: logits and prediction by source row.
fn predictions(sandbox: &Sandbox, reference: &str) -> Vec<(Vec<f64>, u64)> {
    let out = kiln_ok(
        sandbox,
        &["models", "predict", reference, "--split", "all", "--json"],
    );
    let report: Value = serde_json::from_str(&out).expect("JSON");
    let mut rows: Vec<(u64, Vec<f64>, u64)> = report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["row"].as_u64().expect("row"),
                r["logits"]
                    .as_array()
                    .expect("logits")
                    .iter()
                    .filter_map(Value::as_f64)
                    .collect(),
                r["prediction"].as_u64().expect("prediction"),
            )
        })
        .collect();
    rows.sort_by_key(|(row, _, _)| *row);
    rows.into_iter().map(|(_, l, p)| (l, p)).collect()
}

#[test]
fn served_answers_equal_kilns_predictions_and_every_mistake_is_a_json_error() {
    let sandbox = sandbox();
    kiln_ok(&sandbox, &["up", "."]);
    let server = serve(&sandbox, "v1", &["points@1"]);
    let url = &server.url;

    assert_eq!(
        get(&format!("{url}/v2/health/live")),
        Some(json!({ "live": true }))
    );
    assert_eq!(
        get(&format!("{url}/v2/health/ready")),
        Some(json!({ "ready": true }))
    );
    assert_eq!(
        get(&format!("{url}/v2")).expect("server metadata")["name"],
        "kiln"
    );
    let metadata = get(&format!("{url}/v2/models/points")).expect("model metadata");
    assert_eq!(metadata["inputs"][0]["shape"], json!([-1, 2]), "{metadata}");
    assert_eq!(metadata["inputs"][0]["datatype"], "FP32");
    assert_eq!(metadata["outputs"][2]["name"], "predicted_class");
    assert_eq!(
        get(&format!("{url}/v2/models/points/versions/1/ready")),
        Some(json!({ "name": "points", "ready": true }))
    );

    // Every row of the CSV in one request: kiln's own predictions, row by row.
    let rows = features();
    let (logits, classes, version) = infer(url, "points", &rows);
    assert_eq!(version, "1");
    let expected = predictions(&sandbox, "points@1");
    assert_eq!(expected.len(), rows.len());
    for (i, (want_logits, want_class)) in expected.iter().enumerate() {
        assert_eq!(classes[i], *want_class, "row {i}");
        for (got, want) in logits[i * 2..i * 2 + 2].iter().zip(want_logits) {
            assert!((got - want).abs() < 1e-6, "row {i}: {got} vs {want}");
        }
    }

    let infer_url = format!("{url}/v2/models/points/infer");
    let good = |shape: Value, data: Value| {
        json!({ "inputs": [{ "name": "input", "datatype": "FP32", "shape": shape, "data": data }] })
            .to_string()
    };
    let mistakes: Vec<(ureq::Request, Option<String>, u16, &str)> = vec![
        (ureq::post(&infer_url), Some("{not json".into()), 400, "not JSON"),
        (ureq::post(&infer_url), Some("{}".into()), 400, "no `inputs`"),
        (
            ureq::post(&infer_url),
            Some(good(json!([1, 3]), json!([1, 2, 3]))),
            400,
            "this model takes [-1, 2]",
        ),
        (
            ureq::post(&infer_url),
            Some(good(json!([2, 2]), json!([1, 2, 3]))),
            400,
            "holds 3 values",
        ),
        (
            ureq::post(&infer_url),
            Some(good(json!([1, 2]), json!(["a", 2]))),
            400,
            "not a number",
        ),
        (
            ureq::post(&infer_url),
            Some(
                json!({ "inputs": [{ "name": "input", "datatype": "INT32", "shape": [1, 2], "data": [1, 2] }] })
                    .to_string(),
            ),
            400,
            "takes \"FP32\"",
        ),
        (
            ureq::post(&infer_url),
            Some(
                json!({ "inputs": [{ "name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2] }] })
                    .to_string(),
            ),
            400,
            "unknown input \"x\"",
        ),
        (
            ureq::post(&format!("{url}/v2/models/other/infer")),
            Some(good(json!([1, 2]), json!([1, 2]))),
            404,
            "no model \"other\"",
        ),
        (
            ureq::post(&format!("{url}/v2/models/points/versions/7/infer")),
            Some(good(json!([1, 2]), json!([1, 2]))),
            404,
            "version 7 is not served",
        ),
        (ureq::get(&infer_url), None, 405, "infer is POST"),
        (ureq::get(&format!("{url}/v3/nothing")), None, 404, "Open Inference Protocol"),
    ];
    for (request, body, status, says) in mistakes {
        let shown = format!("{} {}", request.method(), request.url());
        let (got, content_type, answer) = call(request, body.as_deref());
        assert_eq!(got, status, "{shown}: {answer}");
        assert_eq!(content_type, "application/json", "{shown}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(says),
            "{shown}: {error:?} should say {says:?}"
        );
    }
    // The server is still there after all of them.
    assert_eq!(infer(url, "points", &rows[..1]).2, "1");

    // /metrics, read by Prometheus's own parser (the Python client's OpenMetrics parser).
    let samples = metrics(url);
    let sample = |name: &str, labels: &[(&str, &str)]| -> f64 {
        samples
            .iter()
            .filter(|s| s["name"] == name)
            .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
            .map(|s| s["value"].as_f64().expect("value"))
            .sum()
    };
    let ok = [("model", "points"), ("version", "1"), ("code", "200")];
    assert_eq!(sample("kiln_serve_requests_total", &ok), 2.0, "{samples:?}");
    assert_eq!(
        sample("kiln_serve_requests_total", &[("code", "400")]),
        7.0,
        "the seven malformed requests"
    );
    assert_eq!(sample("kiln_serve_requests_total", &[("code", "404")]), 2.0);
    assert_eq!(
        sample(
            "kiln_serve_request_duration_seconds_count",
            &[("version", "1")]
        ),
        2.0
    );
    assert!(sample("kiln_serve_request_duration_seconds_sum", &[]) > 0.0);
    assert_eq!(sample("kiln_serve_batch_rows_count", &[]), 2.0);
    assert_eq!(
        sample("kiln_serve_batch_rows_sum", &[]),
        (rows.len() + 1) as f64
    );
    assert_eq!(
        sample("kiln_serve_model_version", &[("model", "points")]),
        1.0
    );

    // SIGTERM ends the server even while a client holds a keep-alive connection open.
    let mut held =
        std::net::TcpStream::connect(url.trim_start_matches("http://")).expect("connect");
    std::io::Write::write_all(
        &mut held,
        b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
    )
    .expect("request");
    let mut first = [0u8; 12];
    std::io::Read::read_exact(&mut held, &mut first).expect("an answer");
    assert_eq!(&first, b"HTTP/1.1 200");
    let mut server = server;
    assert!(kiln_tests::signal(server.process.0.id(), "TERM"));
    let status = wait_until(
        Duration::from_secs(10),
        "kiln serve to exit on SIGTERM",
        || {
            server
                .process
                .0
                .try_wait()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "running".to_owned())
        },
    );
    assert!(status.success(), "{status}");
    drop(held);
}

/// The samples of `/metrics` as the Prometheus Python client's OpenMetrics parser reads
/// them: `[{name, labels, value}]`.
pub(crate) fn metrics(url: &str) -> Vec<Value> {
    let response = ureq::get(&format!("{url}/metrics"))
        .call()
        .expect("/metrics");
    assert!(
        response
            .content_type()
            .starts_with("application/openmetrics-text"),
        "{}",
        response.content_type()
    );
    let text = response.into_string().expect("text");
    let python = std::env::var_os("KILN_PYTHON").unwrap_or_else(|| "python3".into());
    let parse = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(python)
        .args(["-c", parse])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python runs");
    assert!(
        out.status.success(),
        "the parser refused /metrics ({}):\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn an_alias_moved_under_load_fails_no_request_and_batching_changes_no_answer() {
    let sandbox = sandbox();
    kiln_ok(&sandbox, &["up", "."]);
    kiln_ok(&sandbox, &["up", ".", "--var", "epochs=7"]);
    kiln_ok(&sandbox, &["models", "alias", "points", "prod", "1"]);
    let served = serve(
        &sandbox,
        "prod",
        &[
            "points@prod",
            "--watch-interval",
            "200ms",
            "--max-delay",
            "2ms",
        ],
    );
    let unbatched = serve(
        &sandbox,
        "unbatched",
        &["points@1", "--max-batch-size", "1"],
    );
    let rows = Arc::new(features());
    let v2 = predictions(&sandbox, "points@2");

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let (url, rows, stop) = (served.url.clone(), Arc::clone(&rows), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                let mut i = client;
                while !stop.load(Ordering::Relaxed) {
                    let row = i % rows.len();
                    let (logits, _, version) = infer(&url, "points", &rows[row..row + 1]);
                    answers.push((row, logits, version));
                    i += 8;
                }
                answers
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    kiln_ok(&sandbox, &["models", "alias", "points", "prod", "2"]);
    wait_until(T, "answers from version 2", || {
        let (_, _, version) = infer(&served.url, "points", &rows[..1]);
        if version == "2" { Ok(()) } else { Err(version) }
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);

    let mut by_version = [0usize; 2];
    for client in clients {
        // `infer` asserts every answer is a 200: a failed request fails the client.
        let answers = client.join().expect("no request failed");
        let versions: Vec<&str> = answers.iter().map(|(_, _, v)| v.as_str()).collect();
        let first_two = versions
            .iter()
            .position(|v| *v == "2")
            .unwrap_or(versions.len());
        assert!(
            versions[first_two..].iter().all(|v| *v == "2"),
            "once swapped, version 2 answers: {versions:?}"
        );
        for (row, logits, version) in answers {
            if version == "1" {
                by_version[0] += 1;
                let (alone, _, _) = infer(&unbatched.url, "points", &rows[row..row + 1]);
                assert_eq!(
                    logits, alone,
                    "row {row}: batched and unbatched answers differ"
                );
            } else {
                by_version[1] += 1;
                for (got, want) in logits.iter().zip(&v2[row].0) {
                    assert!((got - want).abs() < 1e-6, "row {row} on version 2");
                }
            }
        }
    }
    assert!(
        by_version[0] > 0 && by_version[1] > 0,
        "requests on both sides of the move: {by_version:?}"
    );
    let served_version = metrics(&served.url)
        .into_iter()
        .find(|s| s["name"] == "kiln_serve_model_version")
        .expect("the served version's gauge");
    assert_eq!(served_version["value"], 2.0);
}

#[test]
fn a_cnn_takes_images_as_n_c_h_w_and_answers_as_kiln_predicts() {
    let sandbox = crate::export::cnn_sandbox();
    kiln_ok(&sandbox, &["up", "."]);
    let server = serve(&sandbox, "cnn", &["images@latest"]);
    let metadata = get(&format!("{}/v2/models/images", server.url)).expect("metadata");
    let side = kiln_tests::IMAGE_SIDE;
    assert_eq!(
        metadata["inputs"][0]["shape"],
        json!([-1, 1, side, side]),
        "{metadata}"
    );
    // The first 5 images, scaled as in training (uint8 / 255), nested [N, C, H, W].
    let (pixels, _) = kiln_tests::quadrant_images(400);
    let images: Vec<Vec<Vec<Vec<f32>>>> = pixels
        .chunks(side * side)
        .take(5)
        .map(|image| {
            vec![
                image
                    .chunks(side)
                    .map(|row| row.iter().map(|p| f32::from(*p) / 255.0).collect())
                    .collect(),
            ]
        })
        .collect();
    let body = json!({
        "inputs": [{ "name": "input", "datatype": "FP32", "shape": [5, 1, side, side], "data": images }],
    });
    let (status, _, answer) = call(
        ureq::post(&format!("{}/v2/models/images/infer", server.url)),
        Some(&body.to_string()),
    );
    assert_eq!(status, 200, "{answer}");
    let expected = predictions(&sandbox, "images@latest");
    let classes: Vec<u64> = answer["outputs"][2]["data"]
        .as_array()
        .expect("classes")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    let logits: Vec<f64> = answer["outputs"][0]["data"]
        .as_array()
        .expect("logits")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let width = kiln_tests::IMAGE_CLASSES;
    for (i, (want_logits, want_class)) in expected.iter().take(5).enumerate() {
        assert_eq!(classes[i], *want_class, "image {i}");
        for (got, want) in logits[i * width..(i + 1) * width].iter().zip(want_logits) {
            assert!((got - want).abs() < 1e-4, "image {i}: {got} vs {want}");
        }
    }
}

/// `kiln models drift REF --server URL --json`, parsed.
fn drift_report(sandbox: &Sandbox, reference: &str, url: &str) -> Value {
    let out = kiln_ok(
        sandbox,
        &["models", "drift", reference, "--server", url, "--json"],
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Each feature's `(psi, drifted)` in a drift report, by name.
fn drift_by_feature(report: &Value) -> Vec<(String, f64, bool)> {
    report["features"]
        .as_array()
        .expect("features")
        .iter()
        .map(|f| {
            (
                f["name"].as_str().expect("name").to_owned(),
                f["psi"].as_f64().expect("psi"),
                f["drifted"].as_bool().expect("drifted"),
            )
        })
        .collect()
}

#[test]
fn drift_rises_on_shifted_inputs_and_stays_quiet_on_unshifted_ones() {
    let sandbox = sandbox();
    kiln_ok(&sandbox, &["up", "."]);
    // The version keeps statistics of its training split (180 of the 240 rows), by column.
    let shown: Value = serde_json::from_str(&kiln_ok(
        &sandbox,
        &["models", "show", "points@1", "--json"],
    ))
    .expect("JSON");
    let reference = shown["lineage"]["reference"].as_array().expect("reference");
    let names: Vec<&str> = reference
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(names, ["x", "y"], "{shown}");
    assert_eq!(reference[0]["count"], 180);
    assert!(reference[0]["min"].as_f64().expect("min") >= -1.0);
    assert!(reference[0]["max"].as_f64().expect("max") < 1.0);

    let server = serve(
        &sandbox,
        "drift",
        &[
            "points@1",
            "--drift-window",
            "200",
            "--drift-min-samples",
            "100",
        ],
    );
    let url = &server.url;
    // Not judged before min_samples inputs.
    let rows = features();
    infer(url, "points", &rows[..50]);
    let early = drift_report(&sandbox, "points@1", url);
    assert_eq!(
        (early["samples"].as_u64(), early["evaluated"].as_bool()),
        (Some(50), Some(false)),
        "{early}"
    );
    // Inputs drawn as the training inputs were: quiet.
    for chunk in rows.chunks(8) {
        infer(url, "points", chunk);
    }
    let quiet = drift_report(&sandbox, "points@1", url);
    assert_eq!(quiet["samples"], 200, "{quiet}");
    for (name, psi, drifted) in drift_by_feature(&quiet) {
        assert!(
            !drifted && psi < 0.2,
            "{name}: PSI {psi} on unshifted inputs"
        );
    }
    // x shifted by 2 (its whole range), y as in training: x drifts, y does not.
    let shifted: Vec<[f64; 2]> = rows.iter().take(200).map(|[x, y]| [x + 2.0, *y]).collect();
    for chunk in shifted.chunks(8) {
        infer(url, "points", chunk);
    }
    let report = drift_report(&sandbox, "points@1", url);
    let by_feature = drift_by_feature(&report);
    assert!(by_feature[0].2 && by_feature[0].1 > 1.0, "{report}");
    assert!(!by_feature[1].2 && by_feature[1].1 < 0.2, "{report}");
    assert_eq!(report["drifted_share"], 0.5);
    let table = kiln_ok(&sandbox, &["models", "drift", "points@1", "--server", url]);
    assert!(table.contains("drift: 1 of 2 features (50%): x"), "{table}");

    // The metric per feature and the log line follow within the monitor's second.
    wait_until(T, "the drift metrics", || {
        let samples = metrics(url);
        let drifted = |feature: &str| {
            samples
                .iter()
                .find(|s| {
                    s["name"] == "kiln_serve_drift_drifted" && s["labels"]["feature"] == feature
                })
                .and_then(|s| s["value"].as_f64())
        };
        match (drifted("x"), drifted("y")) {
            (Some(1.0), Some(0.0)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let log = sandbox.path().join("drift.log");
    wait_until(T, "the drift log line", || {
        let text = std::fs::read_to_string(&log).map_err(|e| e.to_string())?;
        text.lines()
            .find(|l| l.contains("1 of 2 input features of points@1 drifted") && l.ends_with(": x"))
            .map(drop)
            .ok_or(text)
    });

    // Asked about what the server does not serve: refused, exit 2.
    let other = sandbox
        .run(
            &["models", "drift", "points@2", "--server", url.as_str()],
            T,
        )
        .expect("kiln runs");
    assert_eq!(other.status.code(), Some(2), "{}", describe(&other));
    assert!(
        String::from_utf8_lossy(&other.stderr)
            .contains("serves points@1 (version 1), not points@2"),
        "{}",
        describe(&other)
    );
}

#[test]
fn a_declared_server_is_applied_serves_the_deployed_alias_once_trained_and_is_destroyed() {
    let deploy = r#"  deploy {
    alias = "production"
    serve {
      listen         = "127.0.0.1:0"
      watch_interval = "200ms"
      monitor {
        window      = 100
        min_samples = 50
      }
    }
  }
}
"#;
    let job = points_job_hcl("3");
    let job = format!(
        "{}{deploy}",
        job.trim_end().strip_suffix('}').expect("a block")
    );
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        ("points.csv", &points_csv()),
        ("job.hcl", &job),
    ]);
    let _cleanup = kiln_tests::Destroyed(&sandbox);
    let plan = kiln_ok(&sandbox, &["plan"]);
    assert!(plan.contains("+ job.points.serve"), "{plan}");
    assert!(plan.contains("Plan: 4 to add"), "{plan}");

    // Applied before the job ever trained: it listens and waits for points@production.
    let applied = kiln_ok(&sandbox, &["apply", "--auto-approve"]);
    let line = applied
        .lines()
        .find(|l| l.starts_with("job points: points@production served at "))
        .unwrap_or_else(|| panic!("{applied}"));
    let url = line.rsplit(' ').next().expect("url").to_owned();
    let (status, _, body) = call(ureq::get(&format!("{url}/v2/health/ready")), None);
    assert_eq!((status, &body), (503, &json!({ "ready": false })));

    kiln_ok(&sandbox, &["submit", "job.hcl", "--follow"]);
    wait_until(T, "the deployed version to be served", || {
        get(&format!("{url}/v2/health/ready")).ok_or(())
    });
    let rows = features();
    let (_, classes, version) = infer(&url, "points", &rows);
    assert_eq!(version, "1");
    let expected: Vec<u64> = predictions(&sandbox, "points@production")
        .into_iter()
        .map(|(_, class)| class)
        .collect();
    assert_eq!(classes, expected);

    // `kiln models drift` finds the applied server by itself, with the block's settings.
    let out = kiln_ok(
        &sandbox,
        &["models", "drift", "points@production", "--json"],
    );
    let report: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(report["settings"]["window"], 100, "{report}");
    assert_eq!(report["samples"], 100, "{report}");
    assert_eq!(report["evaluated"], true, "{report}");

    let state: Value =
        serde_json::from_str(&kiln_ok(&sandbox, &["state", "--json"])).expect("JSON");
    let server = state["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["address"] == "job.points.serve")
        .unwrap_or_else(|| panic!("{state}"));
    assert_eq!(server["running"], true, "{server}");
    assert_eq!(server["attributes"]["model"], "points@production");

    let destroyed = kiln_ok(&sandbox, &["destroy", "--auto-approve"]);
    assert!(
        destroyed.contains("job.points.serve: destroyed"),
        "{destroyed}"
    );
    assert!(
        ureq::get(&format!("{url}/v2/health/live")).call().is_err(),
        "the server still answers after destroy"
    );
}

#[test]
fn a_version_whose_checkpoint_is_gone_ends_the_server_with_the_cause() {
    let sandbox = sandbox();
    kiln_ok(&sandbox, &["up", "."]);
    std::fs::remove_dir_all(sandbox.path().join(".kiln/store/jobs/points-1/checkpoints"))
        .expect("remove the checkpoints");
    let out = sandbox
        .run(&["serve", "points@1", "--listen", "127.0.0.1:0"], T)
        .expect("kiln serve ends");
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reading checkpoint"),
        "{}",
        describe(&out)
    );
}
