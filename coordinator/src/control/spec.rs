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
    let need = match training.map_or(0, |t| t.min_workers) as usize {
        min if min > 0 && job.restarts > 0 => min.min(want),
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
    if training.workers == 0 || training.batch_size == 0 || training.epochs == 0 {
        return invalid("workers, batch_size and epochs must be at least 1");
    }
    if training.learning_rate.is_nan() || training.learning_rate <= 0.0 {
        return invalid("learning_rate must be positive");
    }
    if model.inputs == 0 || model.classes < 2 || model.inputs != dataset.features {
        return invalid("model inputs must equal the dataset's features, and classes be >= 2");
    }
    if dataset.source.is_none() || !(0.0..1.0).contains(&dataset.validation_split) {
        return invalid("the dataset needs a source and a validation_split in [0, 1)");
    }
    Ok(())
}
