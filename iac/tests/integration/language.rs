//! The HCL language: variables and where their values come from, locals, functions, `for`
//! expressions, conditionals and templates; sensitive values; JSON diagnostics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{load_dir, no_env};
use kiln_iac::spec::{Backend, Config, DataSource, NodePoolSpec, OptimizerSpec, Placement};
use kiln_iac::{Diagnostics, LoadOptions, Severity, load_dir_with};

use crate::fixture;

fn load(dir: &Path, options: &LoadOptions) -> Config {
    load_dir_with(dir, options).unwrap_or_else(|d| panic!("{d}"))
}

fn fail(dir: &Path, options: &LoadOptions) -> Diagnostics {
    match load_dir_with(dir, options) {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        // The errors only: a `deploy` block also draws a warning.
        Err(diagnostics) => Diagnostics(
            diagnostics
                .0
                .into_iter()
                .filter(|d| d.severity == Severity::Error)
                .collect(),
        ),
    }
}

/// A directory holding `files` (name, text).
fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write fixture file");
    }
    dir
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn variables_locals_functions_and_templates_evaluate() {
    let dir = fixture("expressions");
    let config = load(&dir, &no_env());
    let base = dir.canonicalize().expect("canonical");

    let cluster = &config.clusters["local"];
    assert_eq!(
        cluster.node_pools,
        [
            NodePoolSpec {
                name: "cpu".into(),
                count: 2,         // var.pools[0].count
                cpus_per_node: 2, // ceil(1.5)
                memory_gb: None,
                gpus_per_node: 0,
                gpu_type: None,
                // merge(var.labels, { run = "${local.name}-${format("%03d", local.seed)}" })
                labels: labels(&[("team", "ml"), ("run", "demo-042")]),
                placement: Placement::Local,
            },
            NodePoolSpec {
                name: "big".into(),
                count: 1,
                cpus_per_node: 1,
                memory_gb: Some(32), // 16 * 2
                gpus_per_node: 0,    // var.use_cuda ? 1 : 0
                gpu_type: None,      // null: not set
                // a heredoc with a `%{ for }` directive
                labels: labels(&[("summary", "team=ml\n")]),
                placement: Placement::Local,
            },
        ]
    );
    assert_eq!(
        cluster.storage.url,
        format!("file://{}", base.join(".kiln/demo").display())
    );

    let job = &config.jobs["demo"];
    // length(split(",", file("features.txt"))): the file is read relative to the directory.
    assert_eq!(job.model.attributes["inputs"], 8);
    assert_eq!(job.dataset.features, 8);
    // [for i in range(local.depth) : local.width * (i + 1)] with width = max(16, 8) * 2
    assert_eq!(job.model.attributes["hidden"], serde_json::json!([32, 64]));
    assert_eq!(
        job.dataset.source,
        DataSource::Blobs {
            samples: 8192, // 1024 * 8
            seed: 42,      // local.seed = 40 + 2
        }
    );
    assert_eq!(job.dataset.validation_split, 0.25); // 1 / 4
    let training = &job.training;
    assert_eq!(
        (training.workers, training.min_workers, training.max_workers),
        (2, 2, 3)
    );
    assert_eq!(training.batch_size, 64); // coalesce(null, 64)
    assert_eq!(training.epochs, Some(3)); // tonumber("3")
    assert_eq!(training.backend, Backend::Cpu);
    assert_eq!(
        training.optimizer,
        OptimizerSpec::Adam {
            learning_rate: 0.01,
            betas: [0.9, 0.999],
        }
    );
    assert_eq!((job.checkpoint.every_steps, job.checkpoint.keep), (100, 3));
    assert_eq!(
        job.deploy.as_ref().and_then(|d| d.alias.as_deref()),
        Some("demo-v2")
    );
}

#[test]
fn variable_values_override_defaults_in_order() {
    let project = fixture("expressions");
    let cuda = LoadOptions {
        vars: vec![("use_cuda".into(), "true".into())],
        ..no_env()
    };
    let config = load(&project, &cuda);
    let big = &config.clusters["local"].node_pools[1];
    assert_eq!(
        (big.gpus_per_node, big.gpu_type.as_deref()),
        (1, Some("a100"))
    );
    assert_eq!(config.jobs["demo"].training.backend, Backend::Cuda);
}

/// A cluster with 8 nodes and a job whose workers, alias and hidden layers come from
/// variables `workers` (number), `alias` (string) and `hidden` (any).
fn precedence_dir() -> tempfile::TempDir {
    dir_with(&[
        (
            "variables.hcl",
            "variable \"workers\" {\n  type    = number\n  default = 1\n}\n\nvariable \"alias\" {\n  type    = string\n  default = \"default\"\n}\n\nvariable \"hidden\" {\n  default = [4]\n}\n",
        ),
        (
            "main.hcl",
            r#"cluster "c" {
  provider = "local"
  node_pool "p" { count = 8 }
}

job "j" {
  cluster = "c"
  model "mlp" {
    inputs  = 2
    hidden  = var.hidden
    classes = 2
  }
  dataset "d" {
    source   = "synthetic:blobs"
    samples  = 100
    features = 2
    classes  = 2
  }
  training {
    workers    = var.workers
    batch_size = 4
  }
  deploy {
    model = var.alias
  }
}
"#,
        ),
        ("three.kvars", "workers = 3\n"),
        ("five.kvars", "workers = 5\nalias   = \"from-file\"\n"),
    ])
}

fn workers(dir: &Path, options: &LoadOptions) -> u32 {
    load(dir, options).jobs["j"].training.workers
}

#[test]
fn precedence_is_default_then_environment_then_files_then_command_line() {
    let dir = precedence_dir();
    let dir = dir.path();
    let file = |name: &str| dir.join(name);
    let env = vec![("KILN_VAR_workers".to_owned(), "2".to_owned())];

    assert_eq!(workers(dir, &no_env()), 1);
    let with_env = LoadOptions {
        env_vars: env.clone(),
        ..no_env()
    };
    assert_eq!(workers(dir, &with_env), 2);
    let with_file = LoadOptions {
        var_files: vec![file("three.kvars")],
        ..with_env.clone()
    };
    assert_eq!(workers(dir, &with_file), 3);
    let with_var = LoadOptions {
        vars: vec![("workers".into(), "4".into())],
        ..with_file.clone()
    };
    assert_eq!(workers(dir, &with_var), 4);

    // Among files and among `--var`s, the later one wins.
    let files = LoadOptions {
        var_files: vec![file("three.kvars"), file("five.kvars")],
        ..no_env()
    };
    assert_eq!(workers(dir, &files), 5);
    let vars = LoadOptions {
        vars: vec![
            ("workers".into(), "6".into()),
            ("workers".into(), "7".into()),
        ],
        ..files
    };
    assert_eq!(workers(dir, &vars), 7);

    // `load_dir` reads the process environment; explicit entries are for tests.
    assert!(LoadOptions::from_env().env);
    assert!(!no_env().env);
}

#[test]
fn command_line_values_parse_as_hcl_when_they_fit_the_type() {
    let dir = precedence_dir();
    let options = LoadOptions {
        vars: vec![
            // A string variable takes the text as it is, even when it reads as a number.
            ("alias".into(), "3".into()),
            // An untyped variable takes an HCL value when the text is one.
            ("hidden".into(), "[8, 8]".into()),
        ],
        env_vars: vec![("KILN_VAR_workers".into(), "min(5, 6)".into())],
        ..no_env()
    };
    let config = load(dir.path(), &options);
    let job = &config.jobs["j"];
    assert_eq!(
        job.deploy.as_ref().and_then(|d| d.model.as_deref()),
        Some("3")
    );
    assert_eq!(job.model.attributes["hidden"], serde_json::json!([8, 8]));
    assert_eq!(job.training.workers, 5);
}

#[test]
fn bad_values_from_outside_the_directory_are_located() {
    let dir = precedence_dir();
    let dir = dir.path();
    let shown = |d: &Diagnostics| {
        d.iter()
            .map(|d| {
                let file = d.file.file_name().map(|f| f.to_string_lossy().into_owned());
                format!(
                    "{}:{}:{} {}",
                    file.unwrap_or_default(),
                    d.line,
                    d.col,
                    d.summary
                )
            })
            .collect::<Vec<_>>()
    };

    // Not a number: reported at the declared type, naming where the value came from.
    let diagnostics = fail(
        dir,
        &LoadOptions {
            vars: vec![("workers".into(), "two".into())],
            ..no_env()
        },
    );
    assert_eq!(
        shown(&diagnostics),
        [
            "variables.hcl:2:13 Wrong type for variable \"workers\": expected a number, got string \"two\""
        ]
    );
    assert_eq!(
        diagnostics.0[0].detail.as_deref(),
        Some("The value was set by `--var workers=two`.")
    );

    // An undeclared `--var`, with a suggestion.
    let diagnostics = fail(
        dir,
        &LoadOptions {
            vars: vec![("wrokers".into(), "2".into())],
            ..no_env()
        },
    );
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(
        diagnostics.0[0].summary,
        "Value for undeclared variable \"wrokers\" given with `--var wrokers=...`"
    );
    assert_eq!(
        diagnostics.0[0].hint.as_deref(),
        Some("did you mean `workers`?")
    );

    // In a variable file: at the value there, and at the name of an undeclared one.
    std::fs::write(dir.join("bad.kvars"), "workers = \"many\"\nwokrers = 2\n").expect("write");
    let diagnostics = fail(
        dir,
        &LoadOptions {
            var_files: vec![dir.join("bad.kvars")],
            ..no_env()
        },
    );
    assert_eq!(
        shown(&diagnostics),
        [
            "bad.kvars:1:11 Wrong type for variable \"workers\": expected a number, got string \"many\"",
            "bad.kvars:2:1 Value for undeclared variable \"wokrers\"",
        ]
    );
    insta::assert_snapshot!(
        "bad_variable_file",
        diagnostics
            .to_string()
            .replace(&dir.display().to_string(), "DIR")
    );

    // A variable file that does not exist.
    let diagnostics = fail(
        dir,
        &LoadOptions {
            var_files: vec![PathBuf::from("no-such.kvars")],
            ..no_env()
        },
    );
    assert_eq!(diagnostics.0[0].summary, "Cannot read variable file");
    assert_eq!(diagnostics.0[0].file, Path::new("no-such.kvars"));
}

const SECRET: &str = "hunter2-correct-horse";

#[test]
fn sensitive_values_are_never_printed() {
    let dir = dir_with(&[
        (
            "variables.hcl",
            r#"variable "token" {
  type      = string
  sensitive = true
}

variable "pin" {
  type      = number
  sensitive = true
  default   = 73519

  validation {
    condition     = var.pin > 99999
    error_message = "The PIN ${var.pin} is too short."
  }
}

variable "port" {
  type      = number
  sensitive = true
}
"#,
        ),
        (
            "clusters.hcl",
            r#"locals {
  url = "${upper(var.token)}/x"
}

cluster "direct" {
  provider = "local"
  node_pool "p" { count = 1 }
  storage { url = var.token }
}

cluster "derived" {
  provider = "local"
  node_pool "p" { count = 1 }
  storage { url = local.url }
}

cluster "typed" {
  provider = "local"
  node_pool "p" { count = var.token }
}
"#,
        ),
    ]);
    let options = LoadOptions {
        vars: vec![
            ("token".into(), SECRET.into()),
            ("port".into(), "x-8471-y".into()),
        ],
        ..no_env()
    };
    let diagnostics = fail(dir.path(), &options);
    let rendered = diagnostics.to_string();
    let json = diagnostics.to_json();
    for text in [&rendered, &json] {
        for secret in [SECRET, &SECRET.to_uppercase(), "73519", "x-8471-y"] {
            assert!(!text.contains(secret), "{secret:?} printed in:\n{text}");
        }
    }
    let summaries: Vec<&str> = diagnostics.iter().map(|d| d.summary.as_str()).collect();
    assert_eq!(
        summaries,
        [
            "Invalid value for `url`: (sensitive) has no scheme",
            "Invalid value for `url`: (sensitive) has no scheme",
            "Wrong type for `count`: expected a whole number, got string (sensitive)",
            "Invalid value for variable \"pin\"",
            "Wrong type for variable \"port\": expected a number, got a string (sensitive)",
        ],
        "{rendered}"
    );
    assert!(rendered.contains("`var.pin` is (sensitive)"), "{rendered}");
    assert!(rendered.contains("`--var port=...`"), "{rendered}");
}

#[test]
fn a_cycle_of_locals_is_named_in_order() {
    let diagnostics = load_dir(&fixture("invalid/local_cycle")).expect_err("a cycle");
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(
        diagnostics.0[0].summary,
        "Cycle in local values: local.workers → local.total → local.workers"
    );

    let dir = dir_with(&[("locals.hcl", "locals {\n  a = local.a + 1\n}\n")]);
    let diagnostics = load_dir_with(dir.path(), &no_env()).expect_err("a cycle");
    assert_eq!(
        diagnostics.0[0].summary,
        "Cycle in local values: local.a → local.a"
    );
}

#[test]
fn diagnostics_render_as_json() {
    let diagnostics = load_dir(&fixture("multi")).expect_err("invalid");
    let json: serde_json::Value = serde_json::from_str(&diagnostics.to_json()).expect("valid JSON");
    assert_eq!(json["valid"], false);
    assert_eq!(json["error_count"], 4);
    assert_eq!(json["warning_count"], 0);
    let first = &json["diagnostics"][0];
    assert_eq!(first["severity"], "error");
    assert_eq!(first["summary"], "Unknown provider \"aws\"");
    assert_eq!(first["file"], "tests/fixtures/multi/a_cluster.hcl");
    assert_eq!(
        (first["line"].as_u64(), first["col"].as_u64()),
        (Some(3), Some(14))
    );
    assert_eq!(first["width"], 5);
    assert_eq!(first["hint"], "known providers: `local`, `ssh`, `slurm`");
    assert!(first["detail"].is_null());
}
