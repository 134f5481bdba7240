//! What the coordinator's HTTP side reads (metrics, the dashboard): a consistent snapshot of
//! the jobs and workers, a job's curve, the checkpoint commit latencies. Read-only.

use kiln_proto::v1::Job;
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;

use super::Control;
use super::history::History;

/// One registered worker as the dashboard and metrics see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerView {
    /// Its id (`w-3`).
    pub id: String,
    /// Its node's name.
    pub node: String,
    /// `busy` (running a task of `job`), `idle` (attached, free) or `joining` (registered,
    /// its command stream not open yet).
    pub state: &'static str,
    /// The job it runs a task of.
    pub job: Option<String>,
}

/// Every job and worker at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Jobs, by id.
    pub jobs: Vec<Job>,
    /// Workers, by id.
    pub workers: Vec<WorkerView>,
}

impl Control {
    /// The jobs and workers now, under one hold of the lock.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.lock();
        let workers = state
            .workers
            .iter()
            .map(|(id, w)| WorkerView {
                id: id.clone(),
                node: w.node_name.clone(),
                state: match (&w.task, &w.commands) {
                    (Some(_), _) => "busy",
                    (None, Some(_)) => "idle",
                    (None, None) => "joining",
                },
                job: w.task.as_ref().map(|(job, _)| job.clone()),
            })
            .collect();
        Snapshot {
            jobs: state.jobs.values().cloned().collect(),
            workers,
        }
    }

    /// Job `id`'s curve and marks; `None` for a job this coordinator saw no progress of.
    pub fn history(&self, id: &str) -> Option<History> {
        self.lock().histories.get(id).cloned()
    }

    /// The latencies of the checkpoint commits reported so far (seconds).
    pub fn checkpoint_commits(&self) -> Histogram {
        self.inner.checkpoint_commits.clone()
    }
}
