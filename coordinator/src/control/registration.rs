//! The end of a job whose ranks all finished with the same parameters: its model becomes a
//! version in the registry of the job's store (`kiln_versions::registry`), with its lineage
//! and final metrics, and then the job succeeds. While the version is written the job stays
//! running ("registering the model") and a lost worker no longer matters. A registry that
//! cannot be written leaves the job succeeded, saying why its model was not registered: the
//! checkpoint holds it either way.

use kiln_proto::v1::{Job, JobState, dataset_spec::Source};
use kiln_versions::registry::{DataLineage, Lineage, Metrics, Registry};

use super::Control;
use super::error::ControlError;
use super::now_ms;
use super::table::State;

/// Bytes of the canonical spec's hash input: the wire encoding, which prost writes in field
/// order, so equal specs hash equal.
fn spec_sha256(job: &Job) -> String {
    use kiln_proto::Message;
    let spec = job.spec.clone().unwrap_or_default();
    kiln_proto::manifest::sha256_hex(&spec.encode_to_vec())
}

impl Control {
    /// Every rank of job `id` finished with the same parameters: registers its model where
    /// the job keeps checkpoints, then marks it succeeded.
    pub(super) fn complete(&self, state: &mut State, id: &str) -> Result<(), ControlError> {
        let Some(job) = state.jobs.get(id).cloned() else {
            return Err(state.unknown_job(id));
        };
        let spec = job.spec.clone().unwrap_or_default();
        if spec.storage_url.is_empty() {
            let message = "all ranks finished (no storage: no model registered)".to_owned();
            return self.finish(state, id, JobState::Succeeded, message);
        }
        if let Some(generation) = state.generations.get_mut(id) {
            generation.registering = true;
        }
        let name = spec
            .deploy
            .as_ref()
            .map(|d| d.model.clone())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| spec.name.clone());
        let binary = job
            .workers
            .first()
            .and_then(|w| state.workers.get(w))
            .map(|w| w.binary_sha256.clone())
            .filter(|h| !h.is_empty());
        let (lineage, metrics) = record(&job, binary);
        self.announce(
            state,
            job,
            "all ranks finished; registering the model".into(),
        );
        let (control, id, url) = (self.clone(), id.to_owned(), spec.storage_url);
        self.spawn(async move {
            let registered = match Registry::open(&url) {
                Ok(registry) => registry.register(&name, lineage, metrics).await,
                Err(e) => Err(e),
            };
            let mut state = control.lock();
            let message = match registered {
                Ok(version) => {
                    let reference = version.reference();
                    if let Some(job) = state.jobs.get_mut(&id) {
                        job.model_version.clone_from(&reference);
                    }
                    tracing::info!(job = %id, model = %reference, "model registered");
                    format!("all ranks finished; the model is {reference}")
                }
                Err(e) => {
                    let why = kiln_proto::error_chain(&e);
                    tracing::warn!(job = %id, %why, "the model could not be registered");
                    format!("all ranks finished; the model was not registered: {why}")
                }
            };
            let result = control.finish(&mut state, &id, JobState::Succeeded, message);
            super::log_failure("cannot finish a registered job", result);
        });
        Ok(())
    }
}

/// The lineage and metrics of `job`'s model.
fn record(job: &Job, worker_binary_sha256: Option<String>) -> (Lineage, Metrics) {
    let spec = job.spec.clone().unwrap_or_default();
    let dataset = spec.dataset.unwrap_or_default();
    let data = dataset
        .pins
        .iter()
        .map(|pin| DataLineage {
            reference: format!("{}@{}", pin.name, pin.version),
            content_hash: pin.content_hash.clone(),
            path: pin.path.clone(),
            sha256: pin.sha256.clone(),
        })
        .chain(dataset.fingerprints.iter().map(|f| DataLineage {
            reference: format!("file://{}", f.path),
            content_hash: f.sha256.clone(),
            path: f.path.clone(),
            sha256: f.sha256.clone(),
        }))
        .collect::<Vec<_>>();
    let data_source = data.is_empty().then(|| match &dataset.source {
        Some(Source::Blobs(b)) => {
            format!("synthetic:blobs (samples {}, seed {})", b.samples, b.seed)
        }
        Some(Source::Csv(c)) => format!("file://{}", c.path),
        Some(Source::Idx(i)) => format!("file://{} with labels file://{}", i.images, i.labels),
        Some(Source::Npy(n)) => format!("file://{} with labels file://{}", n.x, n.y),
        None => "(none)".to_owned(),
    });
    let m = job.metrics.unwrap_or_default();
    let lineage = Lineage {
        job_id: job.id.clone(),
        spec_sha256: spec_sha256(job),
        kiln_version: env!("CARGO_PKG_VERSION").to_owned(),
        worker_binary_sha256,
        generations: job.generation,
        restarts: job.restarts,
        checkpoint: job.checkpoint_url.clone(),
        data,
        data_source,
    };
    let metrics = Metrics {
        val_accuracy: m.val_accuracy,
        val_loss: m.val_loss,
        train_loss: m.loss,
        steps: m.step,
        samples_seen: m.samples_seen,
        wall_seconds: (now_ms() - job.submitted_unix_ms).max(0) as f64 / 1000.0,
    };
    (lineage, metrics)
}
