//! The one conversion from validated specs to the wire form the coordinator and workers use.

use kiln_proto::v1;

use crate::spec::{ClusterSpec, DataSource, JobSpec, OptimizerSpec};

impl JobSpec {
    /// The job as submitted to the coordinator; `cluster` supplies the storage location.
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
                max_steps: 0,
            }),
            checkpoint: Some(v1::CheckpointSpec {
                every_steps: self.checkpoint.every_steps,
                keep: self.checkpoint.keep,
            }),
            storage_url: cluster.storage.url.clone(),
        }
    }
}
