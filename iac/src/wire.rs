//! The one conversion from validated specs to the wire form the coordinator and workers use.

use kiln_proto::v1;

use crate::spec::{
    Backend, ClusterSpec, Collective, DataSource, JobSpec, OptimizerSpec, ScheduleKind,
};

impl JobSpec {
    /// The job as submitted to the coordinator; `cluster` supplies the storage location.
    /// Everything the job declares travels, defaults filled in (they live in the loader
    /// only); limits that are not set travel as absent.
    pub fn to_wire(&self, cluster: &ClusterSpec) -> v1::JobSpec {
        let optimizer = match &self.training.optimizer {
            OptimizerSpec::Sgd {
                learning_rate,
                momentum,
                nesterov,
                weight_decay,
            } => v1::OptimizerSpec {
                kind: "sgd".into(),
                learning_rate: *learning_rate,
                momentum: *momentum,
                nesterov: *nesterov,
                weight_decay: *weight_decay,
                ..Default::default()
            },
            OptimizerSpec::Adam {
                learning_rate,
                betas,
            } => v1::OptimizerSpec {
                kind: "adam".into(),
                learning_rate: *learning_rate,
                beta1: betas[0],
                beta2: betas[1],
                ..Default::default()
            },
            OptimizerSpec::AdamW {
                learning_rate,
                betas,
                weight_decay,
            } => v1::OptimizerSpec {
                kind: "adamw".into(),
                learning_rate: *learning_rate,
                beta1: betas[0],
                beta2: betas[1],
                weight_decay: *weight_decay,
                ..Default::default()
            },
        };
        let lr_schedule = self.training.lr_schedule.as_ref().map(|s| {
            let mut wire = v1::LrSchedule {
                warmup_steps: s.warmup_steps,
                ..Default::default()
            };
            match &s.kind {
                ScheduleKind::Constant => wire.kind = "constant".into(),
                ScheduleKind::Step { step_size, gamma } => {
                    wire.kind = "step".into();
                    wire.step_size = *step_size;
                    wire.gamma = *gamma;
                }
                ScheduleKind::Cosine {
                    min_lr,
                    decay_steps,
                } => {
                    wire.kind = "cosine".into();
                    wire.min_lr = *min_lr;
                    wire.decay_steps = *decay_steps;
                }
            }
            wire
        });
        let source = match &self.dataset.source {
            DataSource::Blobs { samples, seed } => {
                v1::dataset_spec::Source::Blobs(v1::BlobsSource {
                    samples: *samples,
                    seed: *seed,
                })
            }
            DataSource::Csv { path, label } => v1::dataset_spec::Source::Csv(v1::CsvSource {
                path: path.display().to_string(),
                label: label.clone(),
            }),
            DataSource::Idx { images, labels } => v1::dataset_spec::Source::Idx(v1::IdxSource {
                images: images.display().to_string(),
                labels: labels.display().to_string(),
            }),
            DataSource::Npy { x, y } => v1::dataset_spec::Source::Npy(v1::NpySource {
                x: x.display().to_string(),
                y: y.display().to_string(),
            }),
        };
        v1::JobSpec {
            name: self.name.clone(),
            model: Some(v1::ModelSpec {
                kind: self.model.kind.clone(),
                attributes: serde_json::Value::Object(self.model.attributes.clone()).to_string(),
            }),
            dataset: Some(v1::DatasetSpec {
                name: self.dataset.name.clone(),
                source: Some(source),
                features: self.dataset.features,
                classes: self.dataset.classes,
                validation_split: self.dataset.validation_split,
                pins: self
                    .dataset
                    .pins
                    .iter()
                    .map(|pin| v1::DataPin {
                        storage_url: pin.storage_url.clone(),
                        name: pin.name.clone(),
                        version: pin.version,
                        content_hash: pin.content_hash.clone(),
                        path: pin.file.path.clone(),
                        size: pin.file.size,
                        sha256: pin.file.sha256.clone(),
                        local_path: pin.local.display().to_string(),
                    })
                    .collect(),
                // Filled in when the job is submitted (`kiln_versions::data::fingerprint`).
                fingerprints: Vec::new(),
            }),
            training: Some(v1::TrainingSpec {
                workers: self.training.workers,
                batch_size: self.training.batch_size,
                epochs: self.training.epochs,
                seed: self.training.seed,
                max_steps: self.training.max_steps,
                min_workers: Some(self.training.min_workers),
                max_workers: self.training.max_workers,
                optimizer: Some(optimizer),
                lr_schedule,
                clip_grad_norm: self.training.clip_grad_norm,
                backend: match self.training.backend {
                    Backend::Cpu => "cpu",
                    Backend::Cuda => "cuda",
                }
                .to_owned(),
                collective: match self.training.collective {
                    Collective::Ring => "ring",
                    Collective::Nccl => "nccl",
                }
                .to_owned(),
                gpu_type: match self.training.backend {
                    Backend::Cuda => cluster.gpu_type().unwrap_or_default().to_owned(),
                    Backend::Cpu => String::new(),
                },
                bucket_mb: self.training.bucket_mb,
            }),
            checkpoint: Some(v1::CheckpointSpec {
                every_steps: self.checkpoint.every_steps,
                keep: self.checkpoint.keep,
            }),
            storage_url: cluster.storage.url.clone(),
            storage_options: Some(cluster.storage.options()),
            restart: Some(v1::RestartSpec {
                max_restarts: self.restart.max_restarts,
                backoff_ms: self.restart.backoff.as_millis() as u64,
            }),
            deploy: self.deploy.as_ref().map(|deploy| v1::DeploySpec {
                alias: deploy.alias.clone().unwrap_or_default(),
                model: deploy.model.clone().unwrap_or_default(),
                gates: deploy
                    .gates
                    .iter()
                    .map(|gate| v1::Gate {
                        metric: gate.metric.name().to_owned(),
                        threshold: gate.threshold,
                        min_absolute_change: gate.min_absolute_change,
                        min_relative_change: gate.min_relative_change,
                    })
                    .collect(),
            }),
        }
    }
}
