//! Image data as people have it: a CNN trains end to end with `kiln up` on IDX files (gzipped
//! images, plain labels, as MNIST ships them) and on NPY arrays, generated here. Mistakes in
//! the files are located errors at `kiln validate`.

use std::io::Write;
use std::time::Duration;

use kiln_proto::formats::{DType, idx_bytes, npy_bytes};
use kiln_tests::{IMAGE_CLASSES, IMAGE_SIDE, Sandbox, cluster_hcl, describe, quadrant_images};

const T: Duration = Duration::from_secs(180);
const SIDE: usize = IMAGE_SIDE;
const CLASSES: usize = IMAGE_CLASSES;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).expect("compress");
    gz.finish().expect("compress")
}

fn cnn_job(dataset: &str) -> String {
    format!(
        r#"job "cnn" {{
  cluster = "local"
  model "cnn" {{
    input_shape = [1, {SIDE}, {SIDE}]
    channels    = [4, 8]
    hidden      = [16]
    classes     = {CLASSES}
  }}
{dataset}
  training {{
    workers    = 2
    batch_size = 16
    epochs     = 4
    seed       = 3
    optimizer "adam" {{
      learning_rate = 0.01
    }}
  }}
}}
"#
    )
}

/// Trains the CNN on `dataset` and returns the summary.
fn train(sandbox: &Sandbox) -> String {
    let out = sandbox.run(&["up", "."], T).expect("kiln up");
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let accuracy: f64 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("val accuracy"))
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no validation accuracy in\n{stdout}"));
    assert!(accuracy > 0.9, "the CNN learnt the quadrants: {stdout}");
    assert!(stdout.contains("val loss"), "{stdout}");
    stdout
}

/// A sandbox with the CNN job on IDX files `data/images` (gzipped when `gz`) and
/// `data/labels`, holding `pixels` and `labels`; `extra` is added to the job.
fn idx_sandbox(pixels: &[u8], labels: &[u8], gz: bool, extra: &str) -> Sandbox {
    let images_file = if gz {
        "images-idx3-ubyte.gz"
    } else {
        "images-idx3-ubyte"
    };
    let dataset = format!(
        r#"  dataset "quadrants" {{
    format  = "idx"
    source  = "file://data/{images_file}"
    labels  = "file://data/labels-idx1-ubyte"
    classes = 4
  }}
{extra}"#
    );
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        ("job.hcl", &cnn_job(&dataset)),
    ]);
    let data = sandbox.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let n = labels.len() as u32;
    let images = idx_bytes(DType::U8, &[n, SIDE as u32, SIDE as u32], pixels);
    let images = if gz { gzip(&images) } else { images };
    std::fs::write(data.join(images_file), images).expect("write");
    let labels = idx_bytes(DType::U8, &[n], labels);
    std::fs::write(data.join("labels-idx1-ubyte"), labels).expect("write");
    sandbox
}

#[test]
fn a_cnn_trains_on_gzipped_idx_images() {
    let (pixels, labels) = quadrant_images(800);
    train(&idx_sandbox(&pixels, &labels, true, ""));
}

#[test]
fn a_cnn_trains_on_npy_arrays_and_file_mistakes_are_located() {
    let (pixels, labels) = quadrant_images(800);
    let floats: Vec<u8> = pixels
        .iter()
        .flat_map(|&p| (f32::from(p) / 255.0).to_le_bytes())
        .collect();
    let classes: Vec<u8> = labels
        .iter()
        .flat_map(|&c| i64::from(c).to_le_bytes())
        .collect();
    let dataset = r#"  dataset "quadrants" {
    source  = "file://x.npy"
    labels  = "file://y.npy"
    classes = 4
  }"#;
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        ("job.hcl", &cnn_job(dataset)),
    ]);
    let x = npy_bytes(DType::F32, &[800, 1, SIDE as u64, SIDE as u64], &floats);
    std::fs::write(sandbox.path().join("x.npy"), &x).expect("write");
    std::fs::write(
        sandbox.path().join("y.npy"),
        npy_bytes(DType::I64, &[800], &classes),
    )
    .expect("write");
    train(&sandbox);

    // Fewer labels than samples: found from the headers, at `labels`.
    std::fs::write(
        sandbox.path().join("y.npy"),
        npy_bytes(DType::I64, &[799], &classes[..799 * 8]),
    )
    .expect("write");
    let out = sandbox.run(&["validate", "."], T).expect("validate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr.contains("has 799 labels but") && stderr.contains("job.hcl:11:"),
        "{stderr}"
    );

    // A shape that does not multiply to the features: located at `input_shape`.
    std::fs::write(
        sandbox.path().join("y.npy"),
        npy_bytes(DType::I64, &[800], &classes),
    )
    .expect("write");
    let job = cnn_job(dataset).replace("input_shape = [1, 8, 8]", "input_shape = [1, 8, 9]");
    std::fs::write(sandbox.path().join("job.hcl"), job).expect("write");
    let out = sandbox.run(&["validate", "."], T).expect("validate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`input_shape` 1×8×9 = 72 features, but the dataset has 64")
            && stderr.contains("job.hcl:4:"),
        "{stderr}"
    );
}

#[test]
fn a_label_out_of_range_fails_the_job_at_once_naming_the_file() {
    let (pixels, mut labels) = quadrant_images(200);
    labels[57] = 9;
    let restart = "  restart {\n    max_restarts = 3\n    backoff      = \"0s\"\n  }";
    let sandbox = idx_sandbox(&pixels, &labels, false, restart);
    let out = sandbox.run(&["up", "."], T).expect("kiln up");
    let text = describe(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("labels-idx1-ubyte: label 9 of sample 57 is not a class index in 0..4"),
        "{text}"
    );
    // No restart would read other data: the job fails without using its budget.
    assert!(!text.contains("→ restart"), "{text}");
}
