//! `kiln models export` and `kiln models predict` end to end: two runs of one job give
//! byte-identical `model.safetensors`, and a NumPy forward pass written from docs/export.md
//! alone (`tests/python/export_forward.py`, with Python's `safetensors` and `numpy`)
//! reproduces kiln's own predictions on the validation split, for an MLP on a CSV and for a
//! CNN on `uint8` images (inputs scaled by 1/255).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kiln_proto::formats::{DType, npy_bytes};
use kiln_tests::{
    IMAGE_CLASSES, IMAGE_SIDE, Sandbox, cluster_hcl, describe, points_csv, points_job_hcl,
    quadrant_images,
};
use serde_json::Value;

const T: Duration = Duration::from_secs(180);

fn kiln_json(sandbox: &Sandbox, args: &[&str]) -> Value {
    let out = sandbox.run(args, T).expect("kiln runs");
    assert!(out.status.success(), "kiln {args:?}: {}", describe(&out));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// The Python with `numpy` and `safetensors`: `KILN_PYTHON` (`./scripts/test` sets it to the
/// environment it installs them into), else `python3`.
fn python() -> PathBuf {
    let python = std::env::var_os("KILN_PYTHON").map_or_else(|| "python3".into(), PathBuf::from);
    let probe = Command::new(&python)
        .args(["-c", "import numpy, safetensors"])
        .output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "{} lacks numpy or safetensors ({probe:?}): run the suite with ./scripts/test, which installs them",
        python.display()
    );
    python
}

/// Exports `reference` into `dir`, predicts its validation split, and runs the NumPy forward
/// pass on `data`; returns the export's summary.
fn export_and_reproduce(sandbox: &Sandbox, reference: &str, dir: &str, data: &str) -> Value {
    let exported = kiln_json(
        sandbox,
        &["models", "export", reference, "--out", dir, "--json"],
    );
    let predicted = kiln_json(sandbox, &["models", "predict", reference, "--json"]);
    assert!(predicted["samples"].as_u64() > Some(0), "{predicted}");
    let predictions = sandbox.path().join(format!("{dir}.predictions.json"));
    std::fs::write(&predictions, predicted.to_string()).expect("write predictions");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/export_forward.py");
    let out = Command::new(python())
        .arg(script)
        .arg(sandbox.path().join(dir))
        .arg(&predictions)
        .arg(sandbox.path().join(data))
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{}", describe(&out));
    let compared: Value = serde_json::from_slice(&out.stdout).expect("JSON from python");
    assert_eq!(compared["samples"], predicted["samples"], "{compared}");
    assert_eq!(compared["mismatched"], serde_json::json!([]), "{compared}");
    exported
}

#[test]
fn an_mlp_export_is_deterministic_and_numpy_reproduces_its_predictions() {
    let job = &points_job_hcl("5");
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        ("points.csv", &points_csv()),
        ("job.hcl", job),
    ]);
    for _ in 0..2 {
        let out = sandbox.run(&["up", "."], T).expect("kiln up");
        assert!(out.status.success(), "{}", describe(&out));
    }
    let first = export_and_reproduce(&sandbox, "points@1", "first", "points.csv");
    assert_eq!(first["tensors"], 6, "{first}");
    // The same job again: the same parameters, so the same bytes, though Burn's parameter
    // ids differ between the two processes that trained them.
    kiln_json(
        &sandbox,
        &["models", "export", "points@2", "--out", "second", "--json"],
    );
    for file in ["model.safetensors", "config.json"] {
        let read = |dir: &str| std::fs::read(sandbox.path().join(dir).join(file)).expect(file);
        assert!(read("first") == read("second"), "{file} differs");
    }
    let config: Value = serde_json::from_slice(
        &std::fs::read(sandbox.path().join("first/config.json")).expect("config"),
    )
    .expect("config JSON");
    assert_eq!(config["feature_names"], serde_json::json!(["x", "y"]));
    assert_eq!(config["input_scaling"], "none");
    assert_eq!(config["tensors"][0]["name"], "layers.0.weight");
    assert_eq!(config["tensors"][0]["shape"], serde_json::json!([2, 8]));

    // A version that does not exist: exit 2, naming those that do.
    let out = sandbox
        .run(&["models", "export", "points@7", "--out", "x"], T)
        .expect("kiln runs");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("versions: 1-2"),
        "{}",
        describe(&out)
    );
}

/// A sandbox with a small CNN job `images` on 400 uint8 quadrant images (`x.npy`, `y.npy`).
pub(crate) fn cnn_sandbox() -> Sandbox {
    let (pixels, labels) = quadrant_images(400);
    let side = IMAGE_SIDE as u64;
    let job = format!(
        r#"job "images" {{
  cluster = "local"
  model "cnn" {{
    input_shape = [1, {side}, {side}]
    channels    = [3]
    hidden      = [8]
    classes     = {IMAGE_CLASSES}
  }}
  dataset "quadrants" {{
    source  = "file://x.npy"
    labels  = "file://y.npy"
    classes = {IMAGE_CLASSES}
  }}
  training {{
    workers    = 1
    batch_size = 16
    epochs     = 2
    seed       = 5
    optimizer "adam" {{
      learning_rate = 0.01
    }}
  }}
}}
"#
    );
    let sandbox = Sandbox::new().with_files(&[("cluster.hcl", &cluster_hcl(1)), ("job.hcl", &job)]);
    std::fs::write(
        sandbox.path().join("x.npy"),
        npy_bytes(DType::U8, &[400, 1, side, side], &pixels),
    )
    .expect("write x");
    std::fs::write(
        sandbox.path().join("y.npy"),
        npy_bytes(DType::U8, &[400], &labels),
    )
    .expect("write y");
    sandbox
}

#[test]
fn numpy_reproduces_a_cnn_on_uint8_images() {
    let sandbox = cnn_sandbox();
    let side = IMAGE_SIDE as u64;
    let out = sandbox.run(&["up", "."], T).expect("kiln up");
    assert!(out.status.success(), "{}", describe(&out));
    export_and_reproduce(&sandbox, "images@latest", "exported", "x.npy");
    let config: Value = serde_json::from_slice(
        &std::fs::read(sandbox.path().join("exported/config.json")).expect("config"),
    )
    .expect("config JSON");
    assert_eq!(config["input_scaling"], "divide_by_255");
    // Defaults the job left out are written as the model was built with them.
    assert_eq!(config["attributes"]["kernel_size"], 3, "{config}");
    assert_eq!(config["input_shape"], serde_json::json!([1, side, side]));
}
