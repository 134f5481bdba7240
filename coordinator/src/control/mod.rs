//! The control plane's core: the worker registry with leases, the job state machine
//! (`Pending → Running → Succeeded | Failed | Cancelled`), gang placement, rendezvous, and the
//! event feed. gRPC handlers ([`crate::service`]) are thin wrappers over [`Control`].
//!
//! All mutable state sits behind one mutex; every job transition is written to the
//! [`StateStore`] before it is announced, so a restarted coordinator sees what clients saw.

mod error;
mod events;
mod spec;
mod storage;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kiln_proto::Message;
use kiln_proto::v1::{
    Assignment, CancelTask, CheckpointReport, Goodbye, Job, JobEvent, JobSpec, JobState,
    ProgressReport, RegisterRequest, RegisterResponse, TaskEnd, WorkerCommand,
    worker_command::Command,
};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

pub use self::error::ControlError;
use self::events::EventLogs;
use self::spec::{validate, workers_needed};
use crate::state::{StateError, StateStore};

/// Lease timing handed to workers at registration.
#[derive(Debug, Clone, Copy)]
pub struct LeaseConfig {
    /// How often workers heartbeat.
    pub heartbeat_interval: Duration,
    /// A worker silent for this long is dead.
    pub ttl: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            ttl: Duration::from_secs(3),
        }
    }
}

/// The stream of commands to one worker.
pub type CommandSender = mpsc::Sender<Result<WorkerCommand, tonic::Status>>;

struct Worker {
    node_name: String,
    pid: u32,
    collective_addr: String,
    last_seen: Instant,
    commands: Option<CommandSender>,
    /// The job (and generation) whose task this worker runs, until it reports the task's end.
    task: Option<(String, u64)>,
}

impl Worker {
    fn describe(&self, id: &str) -> String {
        format!("worker {id} ({}, pid {})", self.node_name, self.pid)
    }
}

/// How a generation ended.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// A worker died or a rank failed: counts against `max_restarts`, waits for the backoff.
    Failed,
    /// A worker was asked to leave and the ranks stopped together, at `checkpoint` if the
    /// job keeps checkpoints.
    Planned {
        /// The checkpoint committed at the stop.
        checkpoint: Option<u64>,
    },
}

/// Per-generation bookkeeping that need not survive a restart.
#[derive(Default)]
struct Generation {
    done: BTreeSet<u32>,
}

#[derive(Default)]
struct State {
    workers: BTreeMap<String, Worker>,
    jobs: BTreeMap<String, Job>,
    /// Submission order of pending jobs (FIFO: a big job is never starved by small ones).
    queue: Vec<String>,
    generations: BTreeMap<String, Generation>,
    /// Jobs waiting out their restart backoff: not scheduled before the instant.
    held_until: BTreeMap<String, Instant>,
    next_worker: u64,
    next_job: u64,
    logs: EventLogs,
}

/// The coordinator's control plane. Cheap to clone.
#[derive(Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    store: Arc<dyn StateStore>,
    events: broadcast::Sender<JobEvent>,
    join_token: String,
    lease: LeaseConfig,
    shutdown: CancellationToken,
    /// This state's identity in object stores: job ids are claimed under it.
    store_owner: String,
}

const JOB_PREFIX: &str = "jobs/";
const NEXT_JOB_KEY: &str = "meta/next_job";
/// How many taken ids `submit` skips before it gives up on a store.
const MAX_CLAIM_TRIES: u32 = 100_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Control {
    /// Loads the durable state. Jobs that were running when a previous coordinator stopped are
    /// queued again ahead of the pending ones, to resume from their last checkpoint.
    pub fn new(
        store: Arc<dyn StateStore>,
        join_token: String,
        lease: LeaseConfig,
    ) -> Result<Self, ControlError> {
        let mut state = State::default();
        for (_, bytes) in store.list(JOB_PREFIX)? {
            let job = Job::decode(bytes.as_slice()).map_err(|e| StateError::Io(Box::new(e)))?;
            state.jobs.insert(job.id.clone(), job);
        }
        state.next_job = store
            .get(NEXT_JOB_KEY)?
            .and_then(|b| String::from_utf8(b).ok()?.parse().ok())
            .unwrap_or(1);
        let store_owner = storage::store_owner(store.as_ref())?;
        let (events, _) = broadcast::channel(1024);
        let control = Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                store,
                events,
                join_token,
                lease,
                shutdown: CancellationToken::new(),
                store_owner,
            }),
        };
        // Jobs that were running go first, in submission order: their workers are gone with the
        // old coordinator (they register again), so each resumes from its last checkpoint in a
        // new generation. That is the coordinator's failure, not the job's: no restart counted.
        let mut queued: Vec<&mut Job> = state
            .jobs
            .values_mut()
            .filter(|j| matches!(j.state(), JobState::Pending | JobState::Running))
            .collect();
        queued.sort_by_key(|j| (j.state() != JobState::Running, j.submitted_unix_ms));
        let mut resumed = Vec::new();
        for job in queued {
            if job.state() == JobState::Running {
                job.set_state(JobState::Pending);
                control.save(job)?;
                resumed.push(job.clone());
            }
            state.queue.push(job.id.clone());
        }
        for job in resumed {
            let from = resume_point(&job);
            let message = format!(
                "the coordinator restarted while generation {} ran; generation {} resumes {from}",
                job.generation,
                job.generation + 1
            );
            tracing::info!(job = %job.id, %message, "resuming");
            control.announce(&mut state, job, message);
        }
        *control.lock() = state;
        Ok(control)
    }

    /// Marks every unfinished (pending or running) job in `store` failed with `cause` and
    /// returns their ids: for a state whose only user was a process that died (`kiln up`), so
    /// that [`Control::new`] does not run them again unannounced.
    pub fn abandon_unfinished(
        store: &dyn StateStore,
        cause: &str,
    ) -> Result<Vec<String>, ControlError> {
        let mut abandoned = Vec::new();
        for (key, bytes) in store.list(JOB_PREFIX)? {
            let mut job = Job::decode(bytes.as_slice()).map_err(|e| StateError::Io(Box::new(e)))?;
            if job.state().is_terminal() {
                continue;
            }
            job.message = format!("{cause} while the job was {}", job.state().label());
            job.set_state(JobState::Failed);
            job.finished_unix_ms = now_ms();
            store.put(&key, &job.encode_to_vec())?;
            abandoned.push(job.id);
        }
        Ok(abandoned)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Expires leases until [`Self::shutdown`]; run it as a task.
    pub async fn reap_leases(self) {
        let period = self.inner.lease.heartbeat_interval / 4;
        loop {
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                () = self.inner.shutdown.cancelled() => return,
            }
            let expired: Vec<String> = {
                let state = self.lock();
                state
                    .workers
                    .iter()
                    .filter(|(_, w)| w.last_seen.elapsed() > self.inner.lease.ttl)
                    .map(|(id, _)| id.clone())
                    .collect()
            };
            for id in expired {
                self.worker_lost(&id, "its lease expired");
            }
        }
    }

    /// Resolves when the coordinator starts shutting down.
    pub async fn stopped(&self) {
        self.inner.shutdown.cancelled().await;
    }

    /// Ends every worker's command stream (so workers exit) and stops background tasks.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let mut state = self.lock();
        for worker in state.workers.values_mut() {
            send(
                worker,
                Command::Goodbye(Goodbye {
                    reason: "the coordinator is shutting down".to_owned(),
                }),
            );
            worker.commands = None;
        }
    }

    /// Admits a worker that presents the join token.
    pub fn register(&self, req: RegisterRequest) -> Result<RegisterResponse, ControlError> {
        if req.join_token != self.inner.join_token {
            return Err(ControlError::BadToken);
        }
        if req.collective_addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(ControlError::Invalid(format!(
                "collective_addr {:?} is not host:port",
                req.collective_addr
            )));
        }
        let mut state = self.lock();
        state.next_worker += 1;
        let id = format!("w-{}", state.next_worker);
        tracing::info!(worker = %id, node = %req.node_name, pid = req.pid, "worker registered");
        state.workers.insert(
            id.clone(),
            Worker {
                node_name: req.node_name,
                pid: req.pid,
                collective_addr: req.collective_addr,
                last_seen: Instant::now(),
                commands: None,
                task: None,
            },
        );
        Ok(RegisterResponse {
            worker_id: id,
            heartbeat_interval_ms: self.inner.lease.heartbeat_interval.as_millis() as u32,
            lease_ttl_ms: self.inner.lease.ttl.as_millis() as u32,
        })
    }

    /// Renews a worker's lease.
    pub fn heartbeat(&self, worker_id: &str) -> Result<(), ControlError> {
        let mut state = self.lock();
        let worker = state
            .workers
            .get_mut(worker_id)
            .ok_or_else(|| ControlError::UnknownWorker(worker_id.to_owned()))?;
        worker.last_seen = Instant::now();
        Ok(())
    }

    /// Opens the command stream of a worker; the worker becomes schedulable.
    pub fn attach(&self, worker_id: &str, commands: CommandSender) -> Result<(), ControlError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(ControlError::ShuttingDown);
        }
        {
            let mut state = self.lock();
            let worker = state
                .workers
                .get_mut(worker_id)
                .ok_or_else(|| ControlError::UnknownWorker(worker_id.to_owned()))?;
            worker.commands = Some(commands.clone());
        }
        // A closed stream is a dead (or departed) worker: the provider's process is gone.
        let control = self.clone();
        let id = worker_id.to_owned();
        tokio::spawn(async move {
            tokio::select! {
                () = commands.closed() => control.worker_lost(&id, "its connection closed"),
                () = control.inner.shutdown.cancelled() => {}
            }
        });
        self.schedule()
    }

    /// Forgets a worker; the generation it was part of fails.
    fn worker_lost(&self, worker_id: &str, cause: &str) {
        let task = {
            let mut state = self.lock();
            let Some(worker) = state.workers.remove(worker_id) else {
                return;
            };
            let who = worker.describe(worker_id);
            tracing::info!(worker = %worker_id, cause, "worker lost");
            worker
                .task
                .map(|(job, generation)| (job, generation, format!("{who} was lost: {cause}")))
        };
        if let Some((job_id, generation, cause)) = task
            && let Err(e) = self.generation_failed(&job_id, generation, cause)
        {
            tracing::error!(error = %kiln_proto::error_chain(&e), "cannot record a failure");
        }
        if let Err(e) = self.schedule() {
            tracing::error!(error = %kiln_proto::error_chain(&e), "cannot schedule");
        }
    }

    /// Generation `generation` of job `id` failed with `cause`. Within the job's restart policy
    /// the generation ends (its other ranks are told to stop at once) and the job goes back to
    /// the front of the queue, to resume from its last committed checkpoint after the backoff;
    /// past it the job fails. A failure of a generation that already ended is ignored.
    fn generation_failed(
        &self,
        id: &str,
        generation: u64,
        cause: String,
    ) -> Result<(), ControlError> {
        self.generation_ended(id, generation, cause, Ending::Failed)
    }

    /// Ends generation `generation` of running job `id` and queues the next one (see
    /// [`Self::generation_failed`]). A planned ending (a preempted worker left after a
    /// checkpoint) neither counts against `max_restarts` nor waits for the backoff.
    fn generation_ended(
        &self,
        id: &str,
        generation: u64,
        cause: String,
        ending: Ending,
    ) -> Result<(), ControlError> {
        let mut state = self.lock();
        let Some(job) = current_job(&mut state, id, generation)? else {
            return Ok(());
        };
        let policy = job
            .spec
            .as_ref()
            .and_then(|s| s.restart)
            .unwrap_or_default();
        // Progress reports lag; a checkpoint proves the step was reached.
        let at_step = job
            .metrics
            .map_or(0, |m| m.step)
            .max(job.checkpoint_step.unwrap_or(0));
        let backoff = match ending {
            Ending::Planned { checkpoint } => {
                // Rank 0's own report of it may come later, and would then be stale.
                if checkpoint.is_some() {
                    job.checkpoint_step = checkpoint;
                }
                Duration::ZERO
            }
            Ending::Failed => {
                job.last_failure = format!("{cause} (generation {generation}, step {at_step})");
                if job.restarts >= policy.max_restarts {
                    let message = match policy.max_restarts {
                        0 => cause,
                        n => format!("{cause}; no restarts left (max_restarts = {n})"),
                    };
                    drop(state);
                    return self.finish(id, JobState::Failed, message);
                }
                job.restarts += 1;
                Duration::from_millis(policy.backoff_ms)
            }
        };
        job.set_state(JobState::Pending);
        let job = job.clone();
        self.save(&job)?;
        for worker in job.workers.iter().filter_map(|w| state.workers.get(w)) {
            if worker.task.as_ref() == Some(&(id.to_owned(), generation)) {
                send(
                    worker,
                    Command::Cancel(CancelTask {
                        job_id: id.to_owned(),
                        generation,
                        reason: format!("generation {generation} ended: {cause}"),
                    }),
                );
            }
        }
        state.generations.remove(id);
        state.queue.retain(|q| q != id);
        // It ran before anything now queued was admitted: it keeps its turn.
        state.queue.insert(0, id.to_owned());
        state
            .held_until
            .insert(id.to_owned(), Instant::now() + backoff);
        let from = resume_point(&job);
        let next = generation + 1;
        let message = match ending {
            Ending::Planned { .. } => {
                format!("{cause} → generation {next} resumes {from} (planned)")
            }
            Ending::Failed => format!(
                "{cause} at step {at_step} → restart {}/{}: generation {next} resumes {from}{}",
                job.restarts,
                policy.max_restarts,
                if backoff.is_zero() {
                    String::new()
                } else {
                    format!(" after {backoff:?}")
                }
            ),
        };
        tracing::info!(job = %id, %message, "generation ended");
        self.announce(&mut state, job, message);
        drop(state);
        let control = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(backoff).await;
            if let Err(e) = control.schedule() {
                tracing::error!(error = %kiln_proto::error_chain(&e), "cannot schedule");
            }
        });
        Ok(())
    }

    /// Stores a new job and tries to place it. Its id, `<name>-<n>`, is claimed in the job's
    /// object store first: an id another coordinator state claimed there (or a job directory
    /// it left without a claim) is skipped, so no two jobs ever share checkpoints.
    pub async fn submit(&self, spec: JobSpec) -> Result<String, ControlError> {
        validate(&spec)?;
        let id = self.claim_id(&spec).await?;
        {
            let mut state = self.lock();
            let job = Job {
                id: id.clone(),
                spec: Some(spec),
                state: JobState::Pending as i32,
                submitted_unix_ms: now_ms(),
                ..Job::default()
            };
            self.save(&job)?;
            state.jobs.insert(id.clone(), job.clone());
            state.queue.push(id.clone());
            self.announce(&mut state, job, "submitted".into());
        }
        self.schedule()?;
        Ok(id)
    }

    /// The next `<name>-<n>` whose directory in the job's store this state can claim.
    async fn claim_id(&self, spec: &JobSpec) -> Result<String, ControlError> {
        for _ in 0..MAX_CLAIM_TRIES {
            let id = {
                let mut state = self.lock();
                let id = format!("{}-{}", spec.name, state.next_job);
                state.next_job += 1;
                self.inner
                    .store
                    .put(NEXT_JOB_KEY, state.next_job.to_string().as_bytes())?;
                id
            };
            if spec.storage_url.is_empty() {
                return Ok(id);
            }
            if storage::claim(&spec.storage_url, &id, &self.inner.store_owner).await? {
                return Ok(id);
            }
        }
        Err(ControlError::Invalid(format!(
            "no free job id for {:?} in {} after {MAX_CLAIM_TRIES} tries",
            spec.name, spec.storage_url
        )))
    }

    /// The job `id` as it is now.
    pub fn job(&self, id: &str) -> Result<Job, ControlError> {
        cloned_job(&self.lock(), id)
    }

    /// Every job, oldest first.
    pub fn jobs(&self) -> Vec<Job> {
        let mut jobs: Vec<Job> = self.lock().jobs.values().cloned().collect();
        jobs.sort_by_key(|j| j.submitted_unix_ms);
        jobs
    }

    /// Cancels a pending or running job; a finished job is returned unchanged.
    pub fn cancel(&self, id: &str) -> Result<Job, ControlError> {
        let job = self.job(id)?;
        if !job.state().is_terminal() {
            self.finish(id, JobState::Cancelled, "cancelled by request".into())?;
        }
        self.job(id)
    }

    /// Queues a failed or cancelled job again, to resume from `from_step` or its last committed
    /// checkpoint (the newest in the store, also when its commit was never reported), with its
    /// restart budget renewed. A `from_step` that is not a committed
    /// checkpoint that verifies against its manifest is refused, naming those that are.
    pub async fn resume(&self, id: &str, from_step: Option<u64>) -> Result<Job, ControlError> {
        let resumable = |job: &Job| {
            if matches!(job.state(), JobState::Failed | JobState::Cancelled) {
                Ok(())
            } else {
                Err(ControlError::Invalid(format!(
                    "job {id} is {}; only a failed or cancelled job can be resumed",
                    job.state().label()
                )))
            }
        };
        let job = self.job(id)?;
        resumable(&job)?;
        let url = job.spec.map(|s| s.storage_url).unwrap_or_default();
        let from_step = match from_step {
            Some(step) => {
                storage::verify_checkpoint(&url, id, step).await?;
                Some(step)
            }
            // The manifest is the commit: a checkpoint committed after the last one reported
            // (its report lost with a killed coordinator) is where the job stopped.
            None if !url.is_empty() => storage::newest_committed(&url, id)
                .await?
                .filter(|n| job.checkpoint_step.is_none_or(|known| *n > known)),
            None => None,
        };
        let resumed = {
            let mut state = self.lock();
            let Some(job) = state.jobs.get_mut(id) else {
                return Err(unknown_job(&state, id));
            };
            resumable(job)?;
            if let Some(step) = from_step {
                job.checkpoint_step = Some(step);
            }
            job.set_state(JobState::Pending);
            job.restarts = 0;
            job.finished_unix_ms = 0;
            let from = resume_point(job);
            job.message = format!("resumed by request {from}");
            let job = job.clone();
            self.save(&job)?;
            state.queue.push(id.to_owned());
            let message = job.message.clone();
            self.announce(&mut state, job.clone(), message);
            job
        };
        self.schedule()?;
        Ok(resumed)
    }

    /// Subscribes to job events: returns the job's logged events so far (to replay), the job
    /// as it is now, and the feed of every later event.
    pub fn watch(
        &self,
        id: &str,
    ) -> Result<(Vec<JobEvent>, Job, broadcast::Receiver<JobEvent>), ControlError> {
        // Under the lock, the log and the subscription meet without a gap or an overlap.
        let state = self.lock();
        let job = cloned_job(&state, id)?;
        Ok((state.logs.since(id, 0), job, self.inner.events.subscribe()))
    }

    /// The job's logged events after `seq` and the job as it is now: for a watcher that fell
    /// behind the live feed.
    pub fn events_since(&self, id: &str, seq: u64) -> Result<(Vec<JobEvent>, Job), ControlError> {
        let state = self.lock();
        Ok((state.logs.since(id, seq), cloned_job(&state, id)?))
    }

    /// Records metrics from rank 0.
    pub fn progress(&self, report: ProgressReport) -> Result<(), ControlError> {
        let mut state = self.lock();
        let job = current_job(&mut state, &report.job_id, report.generation)?;
        if let Some(job) = job {
            if report.metrics.is_some() {
                job.metrics = report.metrics;
            }
            let job = job.clone();
            self.announce(&mut state, job, report.note);
        }
        Ok(())
    }

    /// Records a committed checkpoint.
    pub fn checkpoint(&self, report: CheckpointReport) -> Result<(), ControlError> {
        let mut state = self.lock();
        if let Some(job) = current_job(&mut state, &report.job_id, report.generation)? {
            job.checkpoint_step = Some(report.step);
            job.checkpoint_url = report.manifest_url;
            let job = job.clone();
            self.save(&job)?;
            self.announce_routine(
                &mut state,
                job,
                format!("checkpoint {} committed", report.step),
            );
        }
        Ok(())
    }

    /// A worker finished (or failed) its task. The job succeeds when every rank has finished.
    pub fn task_end(&self, end: TaskEnd) -> Result<(), ControlError> {
        let outcome = {
            let mut state = self.lock();
            let worker = state
                .workers
                .get_mut(&end.worker_id)
                .ok_or_else(|| ControlError::UnknownWorker(end.worker_id.clone()))?;
            if worker.task.as_ref() != Some(&(end.job_id.clone(), end.generation)) {
                return Ok(());
            }
            worker.task = None;
            let who = worker.describe(&end.worker_id);
            if end.preempted {
                // It is leaving: never schedule it again (its stream closes when it exits).
                state.workers.remove(&end.worker_id);
                tracing::info!(worker = %end.worker_id, "worker left");
            }
            let Some(job) = current_job(&mut state, &end.job_id, end.generation)? else {
                drop(state);
                return self.schedule();
            };
            let rank = job
                .workers
                .iter()
                .position(|w| *w == end.worker_id)
                .unwrap_or_default() as u32;
            if end.preempted {
                Err(format!("rank {rank} ({who}) left: {}", end.error))
            } else if !end.ok {
                Err(format!("rank {rank} ({who}) failed: {}", end.error))
            } else {
                if rank == 0 {
                    job.metrics = end.final_metrics;
                    job.params_digest = end.params_digest;
                }
                let world = job.workers.len();
                let generation = state.generations.entry(end.job_id.clone()).or_default();
                generation.done.insert(rank);
                Ok(generation.done.len() == world)
            }
        };
        match outcome {
            Err(cause) if end.peer_failed => {
                // A symptom of a peer's failure. The lost worker's own signal (its stream
                // closing, its lease expiring) names the real cause and normally arrives within
                // milliseconds; only if none has by the time a lease would expire does the
                // symptom stand as the cause.
                let control = self.clone();
                let wait = self.inner.lease.ttl + self.inner.lease.heartbeat_interval;
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    if let Err(e) = control.generation_failed(&end.job_id, end.generation, cause) {
                        tracing::error!(error = %kiln_proto::error_chain(&e), "cannot record a failure");
                    }
                });
            }
            Err(cause) if end.preempted => {
                let ending = Ending::Planned {
                    checkpoint: end.checkpoint_step,
                };
                self.generation_ended(&end.job_id, end.generation, cause, ending)?;
            }
            Err(cause) => self.generation_failed(&end.job_id, end.generation, cause)?,
            Ok(true) => self.finish(
                &end.job_id,
                JobState::Succeeded,
                "all ranks finished".to_owned(),
            )?,
            Ok(false) => {}
        }
        self.schedule()
    }

    /// Moves a job to a terminal state and tells its other workers to stop.
    fn finish(&self, id: &str, to: JobState, message: String) -> Result<(), ControlError> {
        let mut state = self.lock();
        let Some(job) = state.jobs.get_mut(id) else {
            return Err(unknown_job(&state, id));
        };
        if job.state().is_terminal() {
            return Ok(());
        }
        job.set_state(to);
        job.message = message.clone();
        job.finished_unix_ms = now_ms();
        let job = job.clone();
        self.save(&job)?;
        state.queue.retain(|q| q != id);
        state.generations.remove(id);
        state.held_until.remove(id);
        if to != JobState::Succeeded {
            for worker_id in &job.workers {
                if let Some(worker) = state.workers.get(worker_id)
                    && worker.task.as_ref().is_some_and(|(j, _)| j == id)
                {
                    send(
                        worker,
                        Command::Cancel(CancelTask {
                            job_id: id.to_owned(),
                            generation: job.generation,
                            reason: message.clone(),
                        }),
                    );
                }
            }
        }
        tracing::info!(job = %id, state = to.label(), %message, "job finished");
        self.announce(&mut state, job, message);
        Ok(())
    }

    /// Gang placement, first come first served: the oldest pending job starts when as many
    /// idle workers as it needs are attached; jobs behind it wait their turn.
    fn schedule(&self) -> Result<(), ControlError> {
        let mut state = self.lock();
        while let Some(id) = state.queue.first().cloned() {
            let Some(job) = state.jobs.get(&id) else {
                state.queue.remove(0);
                continue;
            };
            if state
                .held_until
                .get(&id)
                .is_some_and(|t| *t > Instant::now())
            {
                // Restart backoff; a timer schedules again when it is over.
                break;
            }
            let (want, need) = workers_needed(job);
            let idle: Vec<String> = state
                .workers
                .iter()
                .filter(|(_, w)| w.commands.is_some() && w.task.is_none())
                .map(|(id, _)| id.clone())
                .take(want)
                .collect();
            if idle.len() < need {
                break;
            }
            state.queue.remove(0);
            state.held_until.remove(&id);
            let peers: Vec<String> = idle
                .iter()
                .map(|w| state.workers[w].collective_addr.clone())
                .collect();
            let job = state
                .jobs
                .get_mut(&id)
                .ok_or_else(|| ControlError::Invalid(format!("job {id} vanished")))?;
            job.generation += 1;
            job.set_state(JobState::Running);
            job.workers = idle.clone();
            let job = job.clone();
            self.save(&job)?;
            state.generations.insert(id.clone(), Generation::default());
            for (rank, worker_id) in idle.iter().enumerate() {
                let worker = state
                    .workers
                    .get_mut(worker_id)
                    .ok_or_else(|| ControlError::UnknownWorker(worker_id.clone()))?;
                worker.task = Some((id.clone(), job.generation));
                send(
                    worker,
                    Command::Assign(Assignment {
                        job_id: id.clone(),
                        generation: job.generation,
                        rank: rank as u32,
                        world_size: idle.len() as u32,
                        peers: peers.clone(),
                        spec: job.spec.clone(),
                        resume_step: job.checkpoint_step,
                        store_owner: self.inner.store_owner.clone(),
                    }),
                );
            }
            let nodes: Vec<String> = idle.iter().map(|w| state.workers[w].describe(w)).collect();
            let resume = match (job.restarts, job.checkpoint_step) {
                (0, _) => String::new(),
                (_, Some(step)) => format!(", resuming from checkpoint {step}"),
                (_, None) => ", starting over (no checkpoint yet)".to_owned(),
            };
            let message = format!(
                "generation {} started on {} workers{resume}: {}",
                job.generation,
                idle.len(),
                nodes.join(", ")
            );
            let mut job = job;
            job.message.clone_from(&message);
            state.jobs.insert(id.clone(), job.clone());
            self.announce(&mut state, job, message);
        }
        self.report_waiting(&mut state);
        Ok(())
    }

    /// Says why each queued job waits, in its `message` and as an event when that changes:
    /// how many workers the first one needs and has, or which job the others queue behind.
    fn report_waiting(&self, state: &mut State) {
        let registered = state.workers.len();
        let idle = state
            .workers
            .values()
            .filter(|w| w.commands.is_some() && w.task.is_none())
            .count();
        let now = Instant::now();
        let queue = state.queue.clone();
        for (i, id) in queue.iter().enumerate() {
            if state.held_until.get(id).is_some_and(|t| *t > now) {
                // The restart message said when it resumes.
                continue;
            }
            let Some(job) = state.jobs.get_mut(id) else {
                continue;
            };
            let reason = if i == 0 {
                let (_, need) = workers_needed(job);
                format!(
                    "pending: needs {need} worker{}, {registered} registered ({idle} idle)",
                    if need == 1 { "" } else { "s" }
                )
            } else {
                format!("pending: queued behind {}", queue[0])
            };
            if job.message != reason {
                job.message.clone_from(&reason);
                let job = job.clone();
                self.announce(state, job, reason);
            }
        }
    }

    fn save(&self, job: &Job) -> Result<(), ControlError> {
        self.inner
            .store
            .put(&format!("{JOB_PREFIX}{}", job.id), &job.encode_to_vec())?;
        Ok(())
    }

    /// Publishes a change of `job`. An event with a message is logged first (under the same
    /// lock as [`Self::watch`]), so a watcher gets it exactly once: replayed or live.
    fn announce(&self, state: &mut State, job: Job, message: String) {
        self.publish(state, job, message, false);
    }

    /// [`Self::announce`] for a routine event, which a live display may fold.
    fn announce_routine(&self, state: &mut State, job: Job, message: String) {
        self.publish(state, job, message, true);
    }

    fn publish(&self, state: &mut State, job: Job, message: String, routine: bool) {
        let seq = if message.is_empty() {
            0
        } else {
            state.logs.record(&job.id, &message, routine)
        };
        // No subscribers is fine: nobody is watching.
        let _ = self.inner.events.send(JobEvent {
            job: Some(job),
            message,
            seq,
            routine,
        });
    }
}

/// The running job `id` if `generation` is its current one (reports from an older generation
/// are stale and ignored).
fn current_job<'a>(
    state: &'a mut State,
    id: &str,
    generation: u64,
) -> Result<Option<&'a mut Job>, ControlError> {
    if !state.jobs.contains_key(id) {
        return Err(unknown_job(state, id));
    }
    // Returning the borrow keeps the miss path above (the borrow checker cannot yet see that
    // a `get_mut` miss leaves `state` free).
    Ok(state
        .jobs
        .get_mut(id)
        .filter(|job| job.state() == JobState::Running && job.generation == generation))
}

/// The job `id` as it is in `state`.
fn cloned_job(state: &State, id: &str) -> Result<Job, ControlError> {
    state
        .jobs
        .get(id)
        .cloned()
        .ok_or_else(|| unknown_job(state, id))
}

/// The error for a job id the coordinator does not know, listing those it does.
fn unknown_job(state: &State, id: &str) -> ControlError {
    let mut jobs: Vec<&Job> = state.jobs.values().collect();
    jobs.sort_by_key(|j| j.submitted_unix_ms);
    ControlError::UnknownJob {
        id: id.to_owned(),
        known: jobs.iter().map(|j| j.id.clone()).collect(),
    }
}

/// Where the next generation of `job` starts: `from checkpoint N` or `from the start`.
fn resume_point(job: &Job) -> String {
    job.checkpoint_step.map_or_else(
        || "from the start".to_owned(),
        |s| format!("from checkpoint {s}"),
    )
}

fn send(worker: &Worker, command: Command) {
    if let Some(tx) = &worker.commands {
        // A full or closed stream means the worker is going away; its loss is handled there.
        let _ = tx.try_send(Ok(WorkerCommand {
            command: Some(command),
        }));
    }
}
