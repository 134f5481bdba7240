//! The one conversion from validated specs to the wire form the coordinator and workers use.

use kiln_proto::v1;

use crate::spec::{Backend, ClusterSpec, Collective, DataSource, JobSpec, OptimizerSpec};

impl JobSpec {
    /// The job as submitted to the coordinator; `cluster` supplies the storage location.
    /// Everything the job declares travels, defaults filled in (they live in the loader
    /// only); limits that are not set travel as absent.
    pub fn to_wire(&self, cluster: &ClusterSpec) -> v1::JobSpec {
        let OptimizerSpec::Adam { learning_rate } = self.training.optimizer;
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
        };
        v1::JobSpec {
            name: self.name.clone(),
            model: Some(v1::ModelSpec {
                inputs: self.model.inputs,
                hidden: self.model.hidden.clone(),
                classes: self.model.classes,
                kind: "mlp".to_owned(),
            }),
            dataset: Some(v1::DatasetSpec {
                name: self.dataset.name.clone(),
                source: Some(source),
                features: self.dataset.features,
                classes: self.dataset.classes,
                validation_split: self.dataset.validation_split,
            }),
            training: Some(v1::TrainingSpec {
                workers: self.training.workers,
                batch_size: self.training.batch_size,
                epochs: self.training.epochs,
                seed: self.training.seed,
                learning_rate,
                max_steps: self.training.max_steps,
                min_workers: Some(self.training.min_workers),
                max_workers: self.training.max_workers,
                optimizer: "adam".to_owned(),
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
            }),
            checkpoint: Some(v1::CheckpointSpec {
                every_steps: self.checkpoint.every_steps,
                keep: self.checkpoint.keep,
            }),
            storage_url: cluster.storage.url.clone(),
            restart: Some(v1::RestartSpec {
                max_restarts: self.restart.max_restarts,
                backoff_ms: self.restart.backoff.as_millis() as u64,
            }),
            deploy: self.deploy.as_ref().map(|deploy| v1::DeploySpec {
                alias: deploy.alias.clone(),
                min_val_accuracy: deploy.gate.as_ref().map(|g| g.min_val_accuracy),
            }),
        }
    }
}
