//! What the control plane reads from a job's spec: the checks a client-built spec must pass
//! (the HCL loader checks the rest, with locations), and how many workers a generation needs.

use kiln_proto::v1::{Job, JobSpec};

use super::error::ControlError;

/// How many workers the next generation of `job` asks for, and the fewest it may start with.
pub(super) fn workers_needed(job: &Job) -> (usize, usize) {
    let training = job.spec.as_ref().and_then(|s| s.training.as_ref());
    let want = training.map_or(1, |t| t.workers) as usize;
    // Elastic: a generation after a failure, whose backoff gave replacements their chance,
    // may run with as few as `min_workers`.
    let need = match training.and_then(|t| t.min_workers) {
        Some(min) if job.restarts > 0 => (min as usize).clamp(1, want),
        _ => want,
    };
    (want, need)
}

/// Checks what a client-built spec must hold; the HCL loader checks the rest with locations.
pub(super) fn validate(spec: &JobSpec) -> Result<(), ControlError> {
    let invalid = |m: &str| Err(ControlError::Invalid(m.to_owned()));
    let (Some(model), Some(dataset), Some(training)) = (&spec.model, &spec.dataset, &spec.training)
    else {
        return invalid("a job needs model, dataset and training");
    };
    if spec.name.is_empty()
        || !spec
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return invalid("the job name must be non-empty and use only letters, digits, '-' and '_'");
    }
    if training.workers == 0 || training.batch_size == 0 || training.epochs == Some(0) {
        return invalid("workers, batch_size and epochs must be at least 1");
    }
    if training.epochs.is_none() && training.max_steps.is_none() {
        return invalid("a job needs epochs or max_steps (or both)");
    }
    if training.max_steps == Some(0)
        || training
            .min_workers
            .is_some_and(|m| m == 0 || m > training.workers)
    {
        return invalid("max_steps must be at least 1, and min_workers in 1..=workers");
    }
    if model.kind.is_empty()
        || serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&model.attributes)
            .is_err()
    {
        return invalid("the model needs a kind and its attributes as a JSON object");
    }
    let Some(optimizer) = &training.optimizer else {
        return invalid("the job needs an optimizer");
    };
    if !matches!(optimizer.kind.as_str(), "sgd" | "adam" | "adamw") {
        return invalid("the optimizer must be \"sgd\", \"adam\" or \"adamw\"");
    }
    if optimizer.learning_rate.is_nan() || optimizer.learning_rate <= 0.0 {
        return invalid("learning_rate must be positive");
    }
    if dataset.features == 0 || dataset.classes < 2 {
        return invalid("the dataset needs at least 1 feature and 2 classes");
    }
    if dataset.source.is_none() || !(0.0..1.0).contains(&dataset.validation_split) {
        return invalid("the dataset needs a source and a validation_split in [0, 1)");
    }
    Ok(())
}

/// The model kind a job trains.
pub(super) fn model_kind(job: &Job) -> &str {
    job.spec
        .as_ref()
        .and_then(|s| s.model.as_ref())
        .map_or("", |m| m.kind.as_str())
}
