//! The control plane's tables, behind its one mutex: registered workers, jobs, the queue,
//! per-generation bookkeeping and the event logs, with the lookups every part shares.

use std::collections::BTreeMap;

use kiln_proto::v1::worker_command::Command;
use kiln_proto::v1::{Job, JobState, Resources, WorkerCommand};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::error::ControlError;
use super::events::EventLogs;
use super::fit::{self, Needs};
use super::history::Histories;
use super::logs::WorkerLogs;

/// The stream of commands to one worker.
pub type CommandSender = mpsc::Sender<Result<WorkerCommand, tonic::Status>>;

/// A registered worker.
pub(super) struct Worker {
    pub(super) node_name: String,
    pub(super) pid: u32,
    pub(super) collective_addr: String,
    pub(super) last_seen: Instant,
    /// `None` until the worker opens its command stream (then it is schedulable).
    pub(super) commands: Option<CommandSender>,
    /// The job (and generation) whose task this worker runs, until it reports the task's end.
    pub(super) task: Option<(String, u64)>,
    /// The model kinds its binary trains.
    pub(super) model_kinds: Vec<String>,
    /// Its CPUs, memory and GPUs, and the backends and collectives its binary was built with.
    pub(super) resources: Resources,
    /// SHA-256 of its executable, as it reported it (empty when it did not).
    pub(super) binary_sha256: String,
    /// The secret it was given at registration (hex), which its later RPCs carry.
    pub(super) secret: String,
}

impl Worker {
    pub(super) fn describe(&self, id: &str) -> String {
        format!("worker {id} ({}, pid {})", self.node_name, self.pid)
    }

    /// Attached and not running a task.
    pub(super) fn idle(&self) -> bool {
        self.commands.is_some() && self.task.is_none()
    }

    /// Whether its binary trains model `kind`.
    pub(super) fn offers(&self, kind: &str) -> bool {
        self.model_kinds.iter().any(|k| k == kind)
    }

    /// Why a rank that `needs` cannot run here; `None` when it can.
    pub(super) fn misfit(&self, needs: &Needs<'_>) -> Option<String> {
        fit::misfit(&self.model_kinds, &self.resources, needs)
    }

    /// Sends `command` on the worker's stream, if it has one.
    pub(super) fn send(&self, command: Command) {
        if let Some(tx) = &self.commands {
            // A full or closed stream means the worker is going away; its loss is handled there.
            let _ = tx.try_send(Ok(WorkerCommand {
                command: Some(command),
            }));
        }
    }
}

/// Per-generation bookkeeping that need not survive a restart.
#[derive(Default)]
pub(super) struct Generation {
    /// Ranks that finished their task, with the digest of the parameters each ended with.
    pub(super) done: BTreeMap<u32, String>,
    /// The NCCL unique id rank 0 published for this generation's communicator.
    pub(super) collective_id: Option<Vec<u8>>,
    /// Every rank finished and the model is being registered: the generation has nothing
    /// left to lose.
    pub(super) registering: bool,
    /// Rank 0's statistics of the training inputs, for the registered version's lineage.
    pub(super) reference: Vec<kiln_proto::v1::FeatureStats>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) workers: BTreeMap<String, Worker>,
    pub(super) jobs: BTreeMap<String, Job>,
    /// Submission order of pending jobs (FIFO: a big job is never starved by small ones).
    pub(super) queue: Vec<String>,
    pub(super) generations: BTreeMap<String, Generation>,
    /// Jobs waiting out their restart backoff: not scheduled before the instant.
    pub(super) held_until: BTreeMap<String, Instant>,
    pub(super) next_worker: u64,
    pub(super) next_job: u64,
    pub(super) logs: EventLogs,
    pub(super) histories: Histories,
    pub(super) worker_logs: WorkerLogs,
}

impl State {
    /// The running job `id` if `generation` is its current one (reports from an older
    /// generation are stale and ignored).
    pub(super) fn current_job(
        &mut self,
        id: &str,
        generation: u64,
    ) -> Result<Option<&mut Job>, ControlError> {
        if !self.jobs.contains_key(id) {
            return Err(self.unknown_job(id));
        }
        // Returning the borrow keeps the miss path above (the borrow checker cannot yet see
        // that a `get_mut` miss leaves `self` free).
        Ok(self
            .jobs
            .get_mut(id)
            .filter(|job| job.state() == JobState::Running && job.generation == generation))
    }

    /// The job `id` as it is now.
    pub(super) fn cloned_job(&self, id: &str) -> Result<Job, ControlError> {
        self.jobs
            .get(id)
            .cloned()
            .ok_or_else(|| self.unknown_job(id))
    }

    /// The error for a job id the coordinator does not know, listing those it does.
    pub(super) fn unknown_job(&self, id: &str) -> ControlError {
        let mut jobs: Vec<&Job> = self.jobs.values().collect();
        jobs.sort_by_key(|j| j.submitted_unix_ms);
        ControlError::UnknownJob {
            id: id.to_owned(),
            known: jobs.iter().map(|j| j.id.clone()).collect(),
        }
    }
}

/// Where the next generation of `job` starts: `from checkpoint N` or `from the start`.
pub(super) fn resume_point(job: &Job) -> String {
    job.checkpoint_step.map_or_else(
        || "from the start".to_owned(),
        |s| format!("from checkpoint {s}"),
    )
}
