//! A valid configuration decodes to exactly the expected specs, defaults included.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::load_dir;
use kiln_iac::spec::{
    Backend, CheckpointSpec, ClusterSpec, Collective, CoordinatorSpec, DataSource, DatasetSpec,
    JobSpec, ModelSpec, NodePoolSpec, OptimizerSpec, Placement, ProviderKind, RestartSpec,
    StateSpec, StorageSpec, TlsSpec, TrainingSpec, WorkerSpec,
};
use kiln_iac::spec::{DeploySpec, Gate, Metric, MonitorSpec, ServeSpec};

use crate::fixture;

fn mlp(inputs: u32, hidden: &[u32], classes: u32) -> ModelSpec {
    let attributes = serde_json::json!({"inputs": inputs, "hidden": hidden, "classes": classes});
    ModelSpec {
        kind: "mlp".into(),
        attributes: attributes.as_object().cloned().unwrap_or_default(),
    }
}

/// A node pool with only `name` and `count` set.
fn pool(name: &str, count: u32) -> NodePoolSpec {
    NodePoolSpec {
        name: name.into(),
        count,
        cpus_per_node: 1,
        memory_gb: None,
        gpus_per_node: 0,
        gpu_type: None,
        labels: BTreeMap::new(),
        placement: Placement::Local,
    }
}

/// `coordinator` when the block is absent.
fn default_coordinator() -> CoordinatorSpec {
    CoordinatorSpec {
        listen: "127.0.0.1:0".parse().expect("address"),
        advertise: None,
        join_token_file: None,
        heartbeat_interval: Duration::from_secs(1),
        lease_ttl: Duration::from_secs(3),
        replicas: 1,
        tls: None,
        http_listen: None,
    }
}

/// `restart` when the block is absent.
fn no_restart() -> RestartSpec {
    RestartSpec {
        max_restarts: 0,
        backoff: Duration::from_secs(5),
    }
}

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
                pool("cpu", 2),
                NodePoolSpec {
                    cpus_per_node: 4,
                    gpus_per_node: 1,
                    ..pool("gpu", 1)
                },
            ],
            storage: StorageSpec {
                url: format!("file://{}", base.join(".kiln/store").display()),
                ..StorageSpec::default()
            },
            state: StateSpec::Embedded {
                path: base.join(".kiln/state"),
            },
            coordinator: default_coordinator(),
            worker: WorkerSpec::default(),
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
            node_pools: vec![pool("default", 1)],
            storage: StorageSpec {
                url: format!("file://{}/.kiln/store", base.display()),
                ..StorageSpec::default()
            },
            state: StateSpec::Embedded {
                path: base.join(".kiln").join("state"),
            },
            coordinator: default_coordinator(),
            worker: WorkerSpec::default(),
        }
    );

    // Non-file URLs pass through unchanged; absolute state paths stay as written.
    let remote = &config.clusters["remote_store"];
    assert_eq!(remote.storage.url, "file:///var/lib/kiln/checkpoints");
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
            model: mlp(32, &[64, 64], 4),
            dataset: DatasetSpec {
                name: "blobs".into(),
                source: DataSource::Blobs {
                    samples: 8192,
                    seed: 7,
                },
                features: 32,
                classes: 4,
                validation_split: 0.25,
                pins: Vec::new(),
            },
            training: TrainingSpec {
                workers: 3,
                min_workers: 3,
                max_workers: 3,
                batch_size: 64,
                epochs: Some(5),
                max_steps: None,
                seed: 42,
                backend: Backend::Cpu,
                collective: Collective::Ring,
                optimizer: OptimizerSpec::Adam {
                    learning_rate: 0.01,
                    betas: [0.9, 0.999],
                },
                lr_schedule: None,
                clip_grad_norm: None,
                bucket_mb: 25,
            },
            checkpoint: CheckpointSpec {
                every_steps: 50,
                keep: 2,
            },
            restart: no_restart(),
            deploy: None,
            footprint: config.jobs["quickstart"].footprint,
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
            model: mlp(4, &[], 3),
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
                pins: Vec::new(),
            },
            training: TrainingSpec {
                workers: 1,
                min_workers: 1,
                max_workers: 1,
                batch_size: 8,
                epochs: Some(2),
                max_steps: None,
                seed: 0,
                backend: Backend::Cpu,
                collective: Collective::Ring,
                optimizer: OptimizerSpec::Adam {
                    learning_rate: 0.001,
                    betas: [0.9, 0.999],
                },
                lr_schedule: None,
                clip_grad_norm: None,
                bucket_mb: 25,
            },
            checkpoint: CheckpointSpec {
                every_steps: 100,
                keep: 3,
            },
            restart: no_restart(),
            deploy: None,
            footprint: config.jobs["tabular"].footprint,
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

#[test]
fn ssh_and_slurm_pools_decode_with_their_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("key"), "a key\n").expect("write key");
    std::fs::write(
        dir.path().join("c.hcl"),
        r#"
cluster "far" {
  provider = "ssh"
  coordinator { listen = "0.0.0.0:7070" }
  worker { env = { NCCL_SOCKET_IFNAME = "eth0" } }
  node_pool "gpu" {
    hosts         = ["gpu1", "gpu2"]
    identity_file = "key"
  }
}
cluster "hpc" {
  provider = "slurm"
  coordinator { listen = "0.0.0.0:7071" }
  node_pool "gpu" {
    count      = 3
    time_limit = "90m30s"
  }
}
"#,
    )
    .expect("write config");
    let config = load_dir(dir.path()).unwrap_or_else(|d| panic!("{d}"));
    let far = &config.clusters["far"];
    assert_eq!(far.provider, ProviderKind::Ssh);
    assert_eq!(far.node_pools[0].count, 2, "one node per host by default");
    assert_eq!(
        far.worker.env.get("NCCL_SOCKET_IFNAME").map(String::as_str),
        Some("eth0")
    );
    let Placement::Ssh(ssh) = &far.node_pools[0].placement else {
        panic!("an ssh pool: {:?}", far.node_pools[0].placement);
    };
    assert_eq!(ssh.hosts, ["gpu1", "gpu2"]);
    assert_eq!((ssh.port, ssh.remote_dir.as_str()), (22, ".kiln"));
    assert_eq!(ssh.connect_timeout, Duration::from_secs(10));
    assert_eq!(ssh.user, None);
    assert!(ssh.identity_file.as_ref().is_some_and(|k| k.is_absolute()));
    let hpc = &config.clusters["hpc"];
    assert_eq!(
        hpc.node_pools[0].placement,
        Placement::Slurm(kiln_iac::spec::SlurmPlacement {
            partition: None,
            time_limit: Some(Duration::from_secs(90 * 60 + 30)),
        })
    );
    // Two warnings: `file://` storage on each (their coordinators are declared).
    assert_eq!(config.warnings.len(), 2, "{:?}", config.warnings);
}

#[test]
fn loads_every_attribute_of_the_schema() {
    let dir = fixture("full");
    let config = load_dir(&dir).unwrap_or_else(|d| panic!("{d}"));
    let base = dir.canonicalize().expect("canonical");
    assert_eq!(
        config.clusters["gpu"],
        ClusterSpec {
            name: "gpu".into(),
            provider: ProviderKind::Local,
            node_pools: vec![NodePoolSpec {
                cpus_per_node: 8,
                memory_gb: Some(64),
                gpus_per_node: 1,
                gpu_type: Some("h100".into()),
                labels: [("team", "ml"), ("kiln.dev/tier", "gold")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                ..pool("trainers", 2)
            }],
            storage: StorageSpec {
                url: "file:///var/lib/kiln/checkpoints".into(),
                ..StorageSpec::default()
            },
            state: StateSpec::Etcd {
                endpoints: vec![
                    "10.0.0.1:2379".into(),
                    "https://etcd-2.internal:2379".into()
                ],
                prefix: "/kiln/prod/".into(),
            },
            coordinator: CoordinatorSpec {
                listen: "0.0.0.0:7070".parse().expect("address"),
                advertise: Some("https://kiln.internal:7070".into()),
                join_token_file: Some(base.join("secrets/join-token")),
                heartbeat_interval: Duration::from_millis(500),
                lease_ttl: Duration::from_secs(2),
                replicas: 3,
                tls: Some(TlsSpec {
                    cert_file: base.join("secrets/tls/coordinator.pem"),
                    key_file: base.join("secrets/tls/coordinator-key.pem"),
                    ca_file: base.join("secrets/tls/ca.pem"),
                }),
                http_listen: Some("0.0.0.0:7071".parse().expect("address")),
            },
            worker: WorkerSpec::default(),
        }
    );

    let full = &config.jobs["full"];
    assert_eq!(
        full.training,
        TrainingSpec {
            workers: 2,
            min_workers: 1,
            max_workers: 2,
            batch_size: 16,
            epochs: Some(10),
            max_steps: Some(500),
            seed: 9,
            backend: Backend::Cuda,
            collective: Collective::Nccl,
            optimizer: OptimizerSpec::Adam {
                learning_rate: 0.0003,
                betas: [0.9, 0.999],
            },
            lr_schedule: None,
            clip_grad_norm: None,
            bucket_mb: 25,
        }
    );
    assert_eq!((full.checkpoint.every_steps, full.checkpoint.keep), (50, 5));
    assert_eq!(
        full.restart,
        RestartSpec {
            max_restarts: 3,
            backoff: Duration::from_secs(90),
        }
    );
    assert_eq!(
        full.deploy,
        Some(DeploySpec {
            model: Some("digits".into()),
            alias: Some("production".into()),
            gates: vec![
                Gate {
                    metric: Metric::ValAccuracy,
                    threshold: Some(0.95),
                    min_absolute_change: Some(0.002),
                    min_relative_change: Some(0.01),
                },
                Gate {
                    metric: Metric::ValLoss,
                    threshold: Some(0.5),
                    min_absolute_change: None,
                    min_relative_change: None,
                },
            ],
            serve: Some(ServeSpec {
                listen: "0.0.0.0:8081".parse().expect("address"),
                max_batch_size: 64,
                max_delay: Duration::from_millis(2),
                watch_interval: Duration::from_secs(2),
                // min_samples keeps its default, 200, within the window of 500.
                monitor: Some(MonitorSpec {
                    psi_threshold: 0.1,
                    window: 500,
                    min_samples: 200,
                }),
            }),
        })
    );
    let wire = full.to_wire(&config.clusters["gpu"]);
    let training = wire.training.expect("training");
    assert_eq!((training.epochs, training.max_steps), (Some(10), Some(500)));
    assert_eq!(wire.storage_url, "file:///var/lib/kiln/checkpoints");
    assert_eq!(wire.storage_options, Some(Default::default()));

    // An s3:// store's settings: credentials as absolute paths, on the wire as they are.
    let archive = &config.clusters["archive"];
    assert_eq!(
        archive.storage,
        StorageSpec {
            url: "s3://models/team".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: Some("eu-west-1".into()),
            access_key_id_file: Some(base.join("secrets/s3-key-id")),
            secret_access_key_file: Some(base.join("secrets/s3-secret")),
        }
    );
    let options = full.to_wire(archive).storage_options.expect("options");
    assert_eq!(
        (options.endpoint.as_str(), options.region.as_str()),
        ("http://127.0.0.1:9000", "eu-west-1")
    );
    assert_eq!(
        options.secret_access_key_file,
        base.join("secrets/s3-secret").display().to_string()
    );

    // Only `max_steps`: no epoch limit, absent on the wire.
    let steps_only = &config.jobs["steps_only"];
    assert_eq!(
        (steps_only.training.epochs, steps_only.training.max_steps),
        (None, Some(100))
    );
    assert_eq!(steps_only.restart.backoff, Duration::from_millis(250));
    assert_eq!(
        steps_only.deploy,
        Some(DeploySpec {
            model: None,
            alias: Some("staging".into()),
            gates: vec![Gate {
                metric: Metric::ValAccuracy,
                threshold: Some(0.9),
                min_absolute_change: None,
                min_relative_change: None,
            }],
            serve: None,
        })
    );
    let training = steps_only
        .to_wire(&config.clusters["gpu"])
        .training
        .expect("training");
    assert_eq!((training.epochs, training.max_steps), (None, Some(100)));

    // Neither: the declared epochs, no step limit, absent on the wire.
    let valid = load_dir(&fixture("valid")).unwrap_or_else(|d| panic!("{d}"));
    let quickstart = &valid.jobs["quickstart"];
    let training = quickstart
        .to_wire(&valid.clusters["local"])
        .training
        .expect("training");
    assert_eq!((training.epochs, training.max_steps), (Some(5), None));
}

#[test]
fn epochs_default_to_one_without_max_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("main.hcl"),
        r#"cluster "c" {
  provider = "local"
  node_pool "p" { count = 1 }
}
job "j" {
  cluster = "c"
  model "mlp" {
    inputs  = 2
    classes = 2
  }
  dataset "d" {
    source   = "synthetic:blobs"
    samples  = 10
    features = 2
    classes  = 2
  }
  training {
    workers    = 1
    batch_size = 2
  }
}
"#,
    )
    .expect("write config");
    let config = load_dir(dir.path()).unwrap_or_else(|d| panic!("{d}"));
    let training = &config.jobs["j"].training;
    assert_eq!((training.epochs, training.max_steps), (Some(1), None));
}

#[test]
fn examples_load_with_their_documented_values() {
    let defaults = crate::no_env();
    let quickstart = kiln_iac::load_dir_with(Path::new("../examples/quickstart"), &defaults)
        .unwrap_or_else(|d| panic!("{d}"));
    let job = &quickstart.jobs["quickstart"];
    let cluster = &quickstart.clusters["local"];
    assert_eq!(cluster.node_count(), 2);
    assert_eq!(job.model, mlp(32, &[64, 64], 4));
    assert_eq!((job.dataset.features, job.dataset.classes), (32, 4));
    assert_eq!(
        (job.training.workers, job.training.epochs, job.training.seed),
        (2, Some(5), 42)
    );
    let wire = job.to_wire(cluster);
    let training = wire.training.expect("training");
    assert_eq!(
        (
            training.workers,
            training.batch_size,
            training.epochs,
            training.max_steps
        ),
        (2, 64, Some(5), None)
    );

    let csv = kiln_iac::load_dir_with(Path::new("../examples/csv"), &defaults)
        .unwrap_or_else(|d| panic!("{d}"));
    let job = &csv.jobs["csv-classifier"];
    assert_eq!(csv.clusters["local"].node_count(), 2);
    assert_eq!(
        (
            &job.model.attributes["inputs"],
            &job.model.attributes["classes"]
        ),
        (&serde_json::json!(4), &serde_json::json!(3))
    );
    assert_eq!((job.dataset.features, job.dataset.classes), (4, 3));
    assert_eq!((job.training.workers, job.training.epochs), (2, Some(20)));

    // One variable sizes both the cluster and the job.
    let one = kiln_iac::LoadOptions {
        vars: vec![("workers".into(), "1".into())],
        ..crate::no_env()
    };
    let config = kiln_iac::load_dir_with(Path::new("../examples/quickstart"), &one)
        .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(config.clusters["local"].node_count(), 1);
    assert_eq!(config.jobs["quickstart"].training.workers, 1);
}
