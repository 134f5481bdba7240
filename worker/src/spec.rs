//! The job as this worker trains it: the wire spec decoded once, checked, into the typed
//! spec the training loop trusts. Defaults are not filled in here: the configuration loader
//! fills them, and the wire carries every value.

use kiln_proto::v1;

/// What a rank trains: the model, the data, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSpec {
    /// The model kind.
    pub model_kind: String,
    /// Its attributes (checked against the kind's schema when the model is built).
    pub model_attributes: serde_json::Map<String, serde_json::Value>,
    /// The dataset and its validation split.
    pub dataset: v1::DatasetSpec,
    /// Samples per rank per step.
    pub batch_size: usize,
    /// Passes over the training split; `None`: until `max_steps`.
    pub epochs: Option<u32>,
    /// Optimizer steps to stop after; `None`: every epoch.
    pub max_steps: Option<u64>,
    /// Seed of the initial parameters and the sample order.
    pub seed: u64,
    /// The optimizer and its learning rate.
    pub optimizer: v1::OptimizerSpec,
    /// How the learning rate changes; `None`: constant.
    pub lr_schedule: Option<v1::LrSchedule>,
    /// Clip the averaged gradient to this global L2 norm.
    pub clip_grad_norm: Option<f64>,
    /// When to checkpoint; `None`: never.
    pub checkpoint: Option<CheckpointPolicy>,
    /// Compute backend, as declared ("cpu", "cuda").
    pub backend: String,
    /// Gradient all-reduce, as declared ("ring", "nccl").
    pub collective: String,
    /// Bytes per NCCL all-reduce call (`bucket_mb`).
    pub bucket_bytes: usize,
}

/// `checkpoint { every_steps, keep }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// A checkpoint every this many steps (at least 1).
    pub every_steps: u64,
    /// Committed checkpoints kept (at least 1).
    pub keep: usize,
}

/// A wire spec this worker cannot train from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid job spec: {0}")]
pub struct SpecError(pub String);

impl TryFrom<&v1::JobSpec> for TrainSpec {
    type Error = SpecError;

    fn try_from(spec: &v1::JobSpec) -> Result<Self, SpecError> {
        let bad = |what: &str| SpecError(what.to_owned());
        let model = spec.model.clone().ok_or_else(|| bad("no model"))?;
        let dataset = spec.dataset.clone().ok_or_else(|| bad("no dataset"))?;
        let training = spec.training.as_ref().ok_or_else(|| bad("no training"))?;
        let model_attributes = match model.attributes.as_str() {
            "" => serde_json::Map::new(),
            text => serde_json::from_str(text)
                .map_err(|e| SpecError(format!("model attributes are not a JSON object: {e}")))?,
        };
        let optimizer = training
            .optimizer
            .clone()
            .ok_or_else(|| bad("no optimizer"))?;
        if !matches!(optimizer.kind.as_str(), "sgd" | "adam" | "adamw") {
            return Err(SpecError(format!(
                "optimizer {:?} is not built",
                optimizer.kind
            )));
        }
        if !(optimizer.learning_rate > 0.0 && optimizer.learning_rate.is_finite()) {
            return Err(bad("the learning rate must be positive"));
        }
        if let Some(schedule) = &training.lr_schedule
            && !matches!(schedule.kind.as_str(), "constant" | "step" | "cosine")
        {
            return Err(SpecError(format!(
                "learning-rate schedule {:?} is not built",
                schedule.kind
            )));
        }
        if training.batch_size == 0 {
            return Err(bad("batch_size must be at least 1"));
        }
        if training.epochs.is_none() && training.max_steps.is_none() {
            return Err(bad("no epochs and no max_steps: training would not end"));
        }
        let checkpoint = match &spec.checkpoint {
            Some(c) if c.every_steps > 0 => Some(CheckpointPolicy {
                every_steps: u64::from(c.every_steps),
                keep: (c.keep as usize).max(1),
            }),
            _ => None,
        };
        Ok(TrainSpec {
            model_kind: if model.kind.is_empty() {
                "mlp".to_owned()
            } else {
                model.kind
            },
            model_attributes,
            dataset,
            batch_size: training.batch_size as usize,
            epochs: training.epochs,
            max_steps: training.max_steps,
            seed: training.seed,
            optimizer,
            lr_schedule: training.lr_schedule.clone(),
            clip_grad_norm: training.clip_grad_norm,
            checkpoint,
            backend: training.backend.clone(),
            collective: training.collective.clone(),
            // 0: a spec from before the attribute, which gets its default (25 MiB).
            bucket_bytes: match training.bucket_mb {
                0 => 25,
                mb => mb as usize,
            } << 20,
        })
    }
}
