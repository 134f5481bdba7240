//! The coordinator's `/metrics`: Prometheus metrics in the OpenMetrics text format
//! (`prometheus-client`), read from a [`Snapshot`] at each scrape. Per-job series exist only
//! for running jobs, so labels stay bounded however many jobs the state keeps.

use kiln_proto::v1::{Job, JobState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

use crate::control::Snapshot;

/// The content type of [`encode`]'s text.
pub(super) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every job state, as a label.
const JOB_STATES: [(JobState, &str); 5] = [
    (JobState::Pending, "pending"),
    (JobState::Running, "running"),
    (JobState::Succeeded, "succeeded"),
    (JobState::Failed, "failed"),
    (JobState::Cancelled, "cancelled"),
];

/// Every worker state, as [`crate::control::WorkerView`] names them.
const WORKER_STATES: [&str; 3] = ["busy", "idle", "joining"];

/// Optimizer steps per second of a running job: samples per second over the global batch.
fn steps_per_second(job: &Job) -> f64 {
    let batch = job
        .spec
        .as_ref()
        .and_then(|s| s.training.as_ref())
        .map_or(0, |t| t.batch_size);
    let global = f64::from(batch) * job.workers.len() as f64;
    let rate = job.metrics.map_or(0.0, |m| m.samples_per_sec);
    if global > 0.0 { rate / global } else { 0.0 }
}

/// The OpenMetrics text of `snapshot` and the checkpoint commit latencies `commits`.
pub(super) fn encode(snapshot: &Snapshot, commits: Histogram) -> String {
    let mut registry = Registry::with_prefix("kiln");
    let jobs = Family::<StateLabels, Gauge>::default();
    for (state, label) in JOB_STATES {
        let n = snapshot.jobs.iter().filter(|j| j.state() == state).count();
        jobs.get_or_create(&StateLabels { state: label })
            .set(n as i64);
    }
    registry.register("jobs", "Jobs by state", jobs);
    let workers = Family::<StateLabels, Gauge>::default();
    for label in WORKER_STATES {
        let n = snapshot.workers.iter().filter(|w| w.state == label).count();
        workers
            .get_or_create(&StateLabels { state: label })
            .set(n as i64);
    }
    registry.register(
        "workers",
        "Registered workers: busy (running a task), idle, joining (command stream not open yet)",
        workers,
    );
    let restarts = Counter::<u64>::default();
    restarts.inc_by(snapshot.jobs.iter().map(|j| u64::from(j.restarts)).sum());
    registry.register(
        "job_restarts",
        "Generations restarted after a failure, over every job",
        restarts,
    );
    let rate = Family::<JobLabels, FloatGauge>::default();
    let step = Family::<JobLabels, Gauge>::default();
    let loss = Family::<JobLabels, FloatGauge>::default();
    let accuracy = Family::<JobLabels, FloatGauge>::default();
    let val_loss = Family::<JobLabels, FloatGauge>::default();
    for job in snapshot
        .jobs
        .iter()
        .filter(|j| j.state() == JobState::Running)
    {
        let labels = JobLabels {
            job: job.id.clone(),
        };
        rate.get_or_create(&labels).set(steps_per_second(job));
        let Some(m) = job.metrics else { continue };
        step.get_or_create(&labels)
            .set(i64::try_from(m.step).unwrap_or(i64::MAX));
        loss.get_or_create(&labels).set(m.loss);
        if let Some(a) = m.val_accuracy {
            accuracy.get_or_create(&labels).set(a);
        }
        if let Some(l) = m.val_loss {
            val_loss.get_or_create(&labels).set(l);
        }
    }
    registry.register(
        "job_steps_per_second",
        "Optimizer steps per second of each running job",
        rate,
    );
    registry.register("job_step", "Steps done by each running job", step);
    registry.register("job_loss", "Training loss of each running job", loss);
    registry.register(
        "job_val_accuracy",
        "Validation accuracy of each running job at its latest finished epoch",
        accuracy,
    );
    registry.register(
        "job_val_loss",
        "Validation loss of each running job at its latest finished epoch",
        val_loss,
    );
    registry.register_with_unit(
        "checkpoint_commit",
        "Time from a checkpoint's snapshot to its manifest committed, as rank 0 reported it",
        Unit::Seconds,
        commits,
    );
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}
