//! The deploy block end to end against a standalone coordinator: data pushed as a version, a
//! job trained from `kiln://NAME@1`, its model registered with lineage, the gate checked on
//! the validation split and against the alias's holder, the alias moved only when every rule
//! passes, and a run that fails the gate registered without moving it.

use std::time::Duration;

use kiln_tests::cluster::Cluster;
use kiln_tests::{Sandbox, cluster_hcl, describe, points_csv};
use serde_json::Value;

const T: Duration = Duration::from_secs(120);

fn json(sandbox: &Sandbox, args: &[&str]) -> Value {
    let out = sandbox.run(args, T).expect("kiln runs");
    assert!(out.status.success(), "kiln {args:?}: {}", describe(&out));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

const JOB: &str = r#"job "gated" {
  cluster = "local"
  model "mlp" {
    inputs  = 2
    hidden  = [8]
    classes = 2
  }
  dataset "points" {
    source           = "kiln://points@1"
    label            = "label"
    classes          = 2
    validation_split = 0.25
  }
  training {
    workers    = 2
    batch_size = 16
    epochs     = 10
    seed       = 3
    optimizer "adam" {
      learning_rate = 0.05
    }
  }
  deploy {
    model = "points-model"
    alias = "production"
    gate {
      metric    = "val_accuracy"
      threshold = 0.6
    }
    gate {
      metric              = "val_loss"
      min_absolute_change = 0.01
    }
  }
}
"#;

#[test]
fn the_gate_moves_the_alias_only_for_a_model_that_passes_it() {
    let sandbox = Sandbox::new().with_files(&[
        ("cluster.hcl", &cluster_hcl(2)),
        ("raw/points.csv", &points_csv()),
        ("job.hcl", JOB),
    ]);
    let pushed = json(
        &sandbox,
        &[
            "data",
            "push",
            "raw/points.csv",
            "--name",
            "points",
            "--json",
        ],
    );
    assert_eq!(pushed["reference"], "points@1");
    // The deploy block is built: validate has nothing to say about it.
    let out = sandbox.run(&["validate", "."], T).expect("validate");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("Warning"),
        "{}",
        describe(&out)
    );

    let cluster = Cluster::builder(sandbox).workers(2).start();
    let (sandbox, url) = (&cluster.sandbox, cluster.url());
    let submit = || {
        let out = sandbox
            .run(&["submit", "job.hcl", "--follow", "--coordinator", &url], T)
            .expect("submit finishes");
        // A model that fails the gate is still a succeeded job.
        assert!(out.status.success(), "{}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // The first version: no holder to compare with, the threshold holds, the alias moves.
    let first = submit();
    assert!(
        first.contains("model         points-model@1")
            && first.contains("deployed      \"production\" (it held none before)")
            && first.contains("pass val_accuracy threshold: val_accuracy ")
            && first.contains("pass val_loss min_absolute_change: no version holds the alias yet"),
        "{first}"
    );
    let model = json(
        sandbox,
        &["models", "show", "points-model@production", "--json"],
    );
    assert_eq!(model["version"], 1);
    assert_eq!(model["lineage"]["data"][0]["reference"], "points@1");
    let accuracy = model["metrics"]["val_accuracy"].as_f64().expect("measured");
    assert!(accuracy >= 0.6, "{model}");
    let history = json(
        sandbox,
        &["models", "history", "points-model@production", "--json"],
    );
    assert_eq!(history.as_array().map(Vec::len), Some(1), "{history}");
    assert!(
        history[0]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("gate passed: val_accuracy")),
        "{history}"
    );

    // The same job again trains the same model: its loss is not 0.01 better than version 1's,
    // so version 2 is registered and the alias stays.
    let second = submit();
    assert!(
        second.contains("model         points-model@2")
            && second.contains("not deployed  \"production\" stays where it was: the gate failed")
            && second.contains(
                "FAIL val_loss min_absolute_change: val_loss decreased by 0.000000 over version 1"
            ),
        "{second}"
    );
    let status = json(
        sandbox,
        &["status", "gated-2", "--json", "--coordinator", &url],
    );
    let deployment = &status["deployment"];
    assert_eq!(
        (
            &deployment["alias"],
            &deployment["deployed"],
            &deployment["previous"]
        ),
        (
            &Value::from("production"),
            &Value::from(false),
            &Value::from(1)
        ),
        "{status}"
    );
    let checks: Vec<(&str, &str, bool)> = deployment["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["metric"].as_str().expect("metric"),
                c["rule"].as_str().expect("rule"),
                c["passed"].as_bool().expect("passed"),
            )
        })
        .collect();
    assert_eq!(
        checks,
        [
            ("val_accuracy", "threshold", true),
            ("val_loss", "min_absolute_change", false)
        ]
    );
    let held = json(
        sandbox,
        &["models", "show", "points-model@production", "--json"],
    );
    assert_eq!(held["version"], 1);
    let history = json(
        sandbox,
        &["models", "history", "points-model@production", "--json"],
    );
    assert_eq!(history.as_array().map(Vec::len), Some(1), "{history}");
}
