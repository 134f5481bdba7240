//! The end of a job whose ranks all finished with the same parameters: its model becomes a
//! version in the registry of the job's store (`kiln_versions::registry`), with its lineage
//! and final metrics, and then the job succeeds. While the version is written the job stays
//! running ("registering the model") and a lost worker no longer matters. When the deploy
//! block names an alias, its gates are checked (`kiln_versions::gate`) and the alias moves
//! only if they pass; the verdict stays on the job (`Job.deployment`). A registry that
//! cannot be written leaves the job succeeded, saying why its model was not registered: the
//! checkpoint holds it either way.

use kiln_proto::v1::{
    DeploySpec, Deployment, FeatureStats, GateCheck, Job, JobState, dataset_spec::Source,
};
use kiln_versions::gate::{self, Gate, Metric};
use kiln_versions::registry::{
    DataLineage, Lineage, Metrics, ModelVersion, Registry, RegistryError,
};

use super::Control;
use super::error::ControlError;
use super::now_ms;
use super::table::State;

/// The canonical spec: the wire encoding, which prost writes in field order, so equal specs
/// are equal bytes.
fn canonical_spec(job: &Job) -> Vec<u8> {
    use kiln_proto::Message;
    job.spec.clone().unwrap_or_default().encode_to_vec()
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
        let reference = match state.generations.get_mut(id) {
            Some(generation) => {
                generation.registering = true;
                std::mem::take(&mut generation.reference)
            }
            None => Vec::new(),
        };
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
        let (lineage, metrics) = record(&job, binary, reference);
        self.announce(
            state,
            job,
            "all ranks finished; registering the model".into(),
        );
        let deploy = spec.deploy.unwrap_or_default();
        let options = spec.storage_options.unwrap_or_default();
        let (control, id, url) = (self.clone(), id.to_owned(), spec.storage_url);
        self.spawn(async move {
            let registry = Registry::open(&url, &options);
            let registered = match &registry {
                Ok(registry) => registry.register(&name, lineage, metrics).await,
                Err(e) => Err(RegistryError::Invalid(kiln_proto::error_chain(e))),
            };
            let deployment = match (&registry, &registered) {
                (Ok(registry), Ok(version)) if !deploy.alias.is_empty() => {
                    Some(deployment(registry, version, &deploy).await)
                }
                _ => None,
            };
            let mut state = control.lock();
            let message = match registered {
                Ok(version) => {
                    let reference = version.reference();
                    tracing::info!(job = %id, model = %reference, "model registered");
                    let said = deployment.as_ref().map(said).unwrap_or_default();
                    if let Some(job) = state.jobs.get_mut(&id) {
                        job.model_version.clone_from(&reference);
                        job.deployment = deployment;
                    }
                    format!("all ranks finished; the model is {reference}{said}")
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

/// Checks the deploy block's gates for `version` and moves its alias when they pass.
async fn deployment(
    registry: &Registry,
    version: &ModelVersion,
    deploy: &DeploySpec,
) -> Deployment {
    let gates: Vec<Gate> = deploy
        .gates
        .iter()
        .filter_map(|g| {
            Some(Gate {
                metric: Metric::parse(&g.metric)?,
                threshold: g.threshold,
                min_absolute_change: g.min_absolute_change,
                min_relative_change: g.min_relative_change,
            })
        })
        .collect();
    let mut out = Deployment {
        alias: deploy.alias.clone(),
        ..Deployment::default()
    };
    if gates.len() != deploy.gates.len() {
        // The loader accepts only known metrics: a spec from elsewhere named another.
        out.error = "a gate names a metric this coordinator cannot check".to_owned();
        return out;
    }
    match gate::deploy(
        registry,
        version,
        &deploy.alias,
        &gates,
        &kiln_versions::data::who(),
    )
    .await
    {
        Ok(decision) => {
            out.deployed = decision.deployed;
            out.previous = decision.previous;
            out.checks = decision
                .checks
                .into_iter()
                .map(|c| GateCheck {
                    metric: c.metric,
                    rule: c.rule,
                    passed: c.passed,
                    summary: c.summary,
                })
                .collect();
        }
        Err(e) => out.error = kiln_proto::error_chain(&e),
    }
    out
}

/// The end of the job's message for `deployment`.
fn said(deployment: &Deployment) -> String {
    let alias = &deployment.alias;
    if deployment.deployed {
        format!(", now {alias:?}")
    } else if !deployment.error.is_empty() {
        format!("; not deployed: {}", deployment.error)
    } else {
        let failed = deployment
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{} {}", c.rule, c.summary))
            .collect::<Vec<_>>()
            .join("; ");
        format!("; not deployed as {alias:?}: {failed}")
    }
}

/// The lineage and metrics of `job`'s model, whose training inputs rank 0 described as
/// `reference`.
fn record(
    job: &Job,
    worker_binary_sha256: Option<String>,
    reference: Vec<FeatureStats>,
) -> (Lineage, Metrics) {
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
    let canonical = canonical_spec(job);
    let lineage = Lineage {
        job_id: job.id.clone(),
        spec_sha256: kiln_proto::manifest::sha256_hex(&canonical),
        spec: hex::encode(&canonical),
        kiln_version: env!("CARGO_PKG_VERSION").to_owned(),
        worker_binary_sha256,
        generations: job.generation,
        restarts: job.restarts,
        checkpoint: job.checkpoint_url.clone(),
        checkpoint_step: job.checkpoint_step,
        data,
        data_source,
        reference: reference.into_iter().map(Into::into).collect(),
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
