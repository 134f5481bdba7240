//! A valid configuration decodes to exactly the expected specs, defaults included.

use std::path::PathBuf;

use kiln_iac::load_dir;
use kiln_iac::spec::{
    CheckpointSpec, ClusterSpec, DataSource, DatasetSpec, JobSpec, ModelSpec, NodePoolSpec,
    OptimizerSpec, ProviderKind, StateSpec, StorageSpec, TrainingSpec,
};

use crate::fixture;

fn canonical_fixture_dir() -> PathBuf {
    fixture("valid")
        .canonicalize()
        .expect("the valid fixture directory canonicalizes")
}

#[test]
fn loads_every_cluster_with_defaults() {
    let config = load_dir(&fixture("valid")).unwrap_or_else(|d| panic!("{d}"));
    let base = canonical_fixture_dir();
    assert_eq!(config.dir, base);
    assert_eq!(
        config.clusters.keys().collect::<Vec<_>>(),
        ["local", "minimal", "remote_store"]
    );

    let local = &config.clusters["local"];
    assert_eq!(
        *local,
        ClusterSpec {
            name: "local".into(),
            provider: ProviderKind::Local,
            node_pools: vec![
                NodePoolSpec {
                    name: "cpu".into(),
                    count: 2,
                    cpus_per_node: 1,
                    gpus_per_node: 0,
                },
                NodePoolSpec {
                    name: "gpu".into(),
                    count: 1,
                    cpus_per_node: 4,
                    gpus_per_node: 1,
                },
            ],
            storage: StorageSpec {
                url: format!("file://{}", base.join(".kiln/store").display()),
            },
            state: StateSpec::Embedded {
                path: base.join(".kiln/state"),
            },
        }
    );
    assert_eq!(local.node_count(), 3);

    // Only the required attributes: storage and state resolve their defaults against the
    // configuration directory, not the current directory.
    assert_eq!(
        config.clusters["minimal"],
        ClusterSpec {
            name: "minimal".into(),
            provider: ProviderKind::Local,
            node_pools: vec![NodePoolSpec {
                name: "default".into(),
                count: 1,
                cpus_per_node: 1,
                gpus_per_node: 0,
            }],
            storage: StorageSpec {
                url: format!("file://{}/.kiln/store", base.display()),
            },
            state: StateSpec::Embedded {
                path: base.join(".kiln").join("state"),
            },
        }
    );

    // Non-file URLs pass through unchanged; absolute state paths stay as written.
    let remote = &config.clusters["remote_store"];
    assert_eq!(remote.storage.url, "s3://kiln-checkpoints/runs");
    assert_eq!(
        remote.state,
        StateSpec::Embedded {
            path: PathBuf::from("/var/lib/kiln/state"),
        }
    );
}

#[test]
fn loads_a_fully_specified_blobs_job() {
    let config = load_dir(&fixture("valid")).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        config.jobs.keys().collect::<Vec<_>>(),
        ["quickstart", "tabular"]
    );
    assert_eq!(
        config.jobs["quickstart"],
        JobSpec {
            name: "quickstart".into(),
            file: PathBuf::from("tests/fixtures/valid/jobs.hcl"),
            cluster: "local".into(),
            model: ModelSpec {
                inputs: 32,
                hidden: vec![64, 64],
                classes: 4,
            },
            dataset: DatasetSpec {
                name: "blobs".into(),
                source: DataSource::Blobs {
                    samples: 8192,
                    seed: 7,
                },
                features: 32,
                classes: 4,
                validation_split: 0.25,
            },
            training: TrainingSpec {
                workers: 3,
                batch_size: 64,
                epochs: 5,
                seed: 42,
                optimizer: OptimizerSpec::Adam {
                    learning_rate: 0.01,
                },
            },
            checkpoint: CheckpointSpec {
                every_steps: 50,
                keep: 2,
            },
        }
    );
}

#[test]
fn loads_a_minimal_csv_job_with_defaults() {
    let config = load_dir(&fixture("valid")).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        config.jobs["tabular"],
        JobSpec {
            name: "tabular".into(),
            file: PathBuf::from("tests/fixtures/valid/tabular.hcl"),
            cluster: "minimal".into(),
            model: ModelSpec {
                inputs: 4,
                hidden: vec![],
                classes: 3,
            },
            dataset: DatasetSpec {
                name: "iris".into(),
                source: DataSource::Csv {
                    path: canonical_fixture_dir().join("data/iris.csv"),
                    label: "species".into(),
                },
                // Read from the header: five columns minus the label.
                features: 4,
                classes: 3,
                validation_split: 0.1,
            },
            training: TrainingSpec {
                workers: 1,
                batch_size: 8,
                epochs: 2,
                seed: 0,
                optimizer: OptimizerSpec::Adam {
                    learning_rate: 0.001,
                },
            },
            checkpoint: CheckpointSpec {
                every_steps: 100,
                keep: 3,
            },
        }
    );
}

#[test]
fn paths_follow_the_directory_as_given() {
    // Through an absolute path, the job's file is absolute too; the specs are the same.
    let relative = load_dir(&fixture("valid")).unwrap_or_else(|d| panic!("{d}"));
    let absolute_dir = canonical_fixture_dir();
    let absolute = load_dir(&absolute_dir).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        absolute.jobs["tabular"].file,
        absolute_dir.join("tabular.hcl")
    );
    assert_eq!(absolute.clusters, relative.clusters);
    assert_eq!(
        absolute.jobs["tabular"].dataset,
        relative.jobs["tabular"].dataset
    );
}

#[test]
fn whole_numbers_written_with_a_zero_fraction_are_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("c.hcl"),
        "cluster \"c\" {\n  provider = \"local\"\n  node_pool \"p\" { count = 2.0 }\n}\n",
    )
    .expect("write config");
    let config = load_dir(dir.path()).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(config.clusters["c"].node_pools[0].count, 2);
    assert!(config.jobs.is_empty());
}
