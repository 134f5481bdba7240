//! Model kinds come from the worker binary: `models --json` lists them with their attribute
//! schemas, and `kiln validate` checks a `model` block against the schema of the binary the
//! cluster declares, with the same located diagnostics as for everything else.

use std::process::Command;
use std::time::Duration;

use kiln_tests::{Sandbox, bin, describe};

const T: Duration = Duration::from_secs(60);

fn catalog(binary: &str) -> serde_json::Value {
    let out = Command::new(bin(binary))
        .args(["models", "--json"])
        .output()
        .expect("run the worker binary");
    assert!(out.status.success(), "{}", describe(&out));
    serde_json::from_slice(&out.stdout).expect("a JSON catalog")
}

fn kinds(catalog: &serde_json::Value) -> Vec<&str> {
    catalog["kinds"]
        .as_array()
        .expect("kinds")
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect()
}

#[test]
fn worker_binaries_describe_their_kinds() {
    let bundled = catalog("kiln-worker");
    assert_eq!(kinds(&bundled), ["mlp", "cnn"]);
    let cnn = &bundled["kinds"][1];
    let kernel = cnn["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == "kernel_size"))
        .expect("kernel_size");
    assert_eq!(
        (&kernel["type"], &kernel["required"], &kernel["default"]),
        (&"integer".into(), &false.into(), &3.into())
    );
    let own = catalog("resmlp-worker");
    assert_eq!(kinds(&own), ["mlp", "cnn", "resmlp"]);
}

/// The custom-model example with `edit` applied, validated against its real binary.
fn validate_example(edit: impl Fn(String) -> String) -> (bool, String) {
    let example = std::fs::read_to_string("../examples/custom-model/job.hcl").expect("example");
    let sandbox = Sandbox::new().with_files(&[("job.hcl", &edit(example))]);
    let binary = format!("worker_binary={}", bin("resmlp-worker").display());
    let out = sandbox
        .run(&["validate", ".", "--var", &binary], T)
        .expect("kiln validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn validate_checks_a_kind_of_ones_own_against_its_binary() {
    let (ok, text) = validate_example(|hcl| hcl);
    assert!(ok, "{text}");
    assert!(
        text.contains("job resmlp: model resmlp with 5,028 parameters"),
        "{text}"
    );

    let (ok, text) = validate_example(|hcl| hcl.replace("    width   = 32", "    widht   = 32"));
    assert!(!ok);
    assert!(
        text.contains("Unknown attribute `widht`")
            && text.contains("did you mean `width`?")
            && text.contains("job.hcl:46:5"),
        "{text}"
    );

    let (ok, text) = validate_example(|hcl| hcl.replace("model \"resmlp\"", "model \"resmpl\""));
    assert!(!ok);
    assert!(
        text.contains("Unknown model kind \"resmpl\"") && text.contains("did you mean `resmlp`?"),
        "{text}"
    );

    // The kind checks the data: its own message and hint, at its attribute.
    let (ok, text) = validate_example(|hcl| hcl.replace("    inputs  = 16", "    inputs  = 12"));
    assert!(!ok);
    assert!(
        text.contains("Model `inputs` (12) does not match the dataset's feature count (16)")
            && text.contains("job.hcl:45:15")
            && text.contains("set `inputs = 16`"),
        "{text}"
    );

    let (ok, text) =
        validate_example(|hcl| hcl.replace("    blocks  = 2", "    blocks  = \"two\""));
    assert!(!ok);
    assert!(
        text.contains("`blocks`") && text.contains("whole number"),
        "{text}"
    );
}

#[test]
fn the_bundled_binary_knows_no_kind_of_another() {
    let example = std::fs::read_to_string("../examples/custom-model/job.hcl").expect("example");
    let without_binary = example.replace("  worker {\n    binary = var.worker_binary\n  }\n", "");
    assert_ne!(without_binary, example);
    let sandbox = Sandbox::new().with_files(&[("job.hcl", &without_binary)]);
    let out = sandbox.run(&["validate", "."], T).expect("kiln validate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr.contains("Unknown model kind \"resmlp\"")
            && stderr.contains("the bundled `kiln-worker`")
            && stderr.contains("known model kinds: `mlp`, `cnn`"),
        "{stderr}"
    );

    let missing = example.replace(
        "default     = \"../../target/release/resmlp-worker\"",
        "default     = \"no/such/worker\"",
    );
    let sandbox = Sandbox::new().with_files(&[("job.hcl", &missing)]);
    let out = sandbox.run(&["validate", "."], T).expect("kiln validate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Worker binary")
            && stderr.contains("no/such/worker")
            && stderr.contains("does not exist"),
        "{stderr}"
    );
}
