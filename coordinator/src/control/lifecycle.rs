//! The job state machine: submission (with the id claimed in the job's object store),
//! progress and checkpoint reports, the end of each rank's task, and the one place that
//! decides what the end of a generation means: success, a restart within the job's policy
//! (after its backoff), a planned new generation, or the job's failure.

use std::collections::BTreeMap;
use std::time::Duration;

use kiln_proto::v1::worker_command::Command;
use kiln_proto::v1::{
    CancelTask, CheckpointReport, Job, JobEvent, JobSpec, JobState, ProgressReport, TaskEnd,
};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::error::ControlError;
use super::spec::validate;
use super::storage;
use super::table::{State, resume_point};
use super::{Control, NEXT_JOB_KEY, log_failure, now_ms};

/// How many taken ids `submit` skips before it gives up on a store.
const MAX_CLAIM_TRIES: u32 = 100_000;

/// How a generation ended.
#[derive(Debug, Clone, Copy)]
pub(super) enum Ending {
    /// A worker died or a rank failed: counts against `max_restarts`, waits for the backoff.
    Failed,
    /// A worker was asked to leave and the ranks stopped together, at `checkpoint` if the
    /// job keeps checkpoints.
    Planned {
        /// The checkpoint committed at the stop.
        checkpoint: Option<u64>,
    },
}

impl Control {
    /// Stores a new job and tries to place it. Its id, `<name>-<n>`, is claimed in the job's
    /// object store first: an id another coordinator state claimed there (or a job directory
    /// it left without a claim) is skipped, so no two jobs ever share checkpoints.
    pub async fn submit(&self, spec: JobSpec) -> Result<String, ControlError> {
        validate(&spec)?;
        let id = self.claim_id(&spec).await?;
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
        self.schedule_locked(&mut state)?;
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
            if storage::claim(spec, &id, &self.inner.store_owner).await? {
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
        self.lock().cloned_job(id)
    }

    /// Every job, oldest first.
    pub fn jobs(&self) -> Vec<Job> {
        let mut jobs: Vec<Job> = self.lock().jobs.values().cloned().collect();
        jobs.sort_by_key(|j| j.submitted_unix_ms);
        jobs
    }

    /// Cancels a pending or running job; a finished job is returned unchanged.
    pub fn cancel(&self, id: &str) -> Result<Job, ControlError> {
        let mut state = self.lock();
        let job = state.cloned_job(id)?;
        if job.state().is_terminal() {
            return Ok(job);
        }
        self.finish(
            &mut state,
            id,
            JobState::Cancelled,
            "cancelled by request".into(),
        )?;
        self.schedule_locked(&mut state)?;
        state.cloned_job(id)
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
        let spec = job.spec.clone().unwrap_or_default();
        let from_step = match from_step {
            Some(step) => {
                storage::verify_checkpoint(&spec, id, step).await?;
                Some(step)
            }
            // The manifest is the commit: a checkpoint committed after the last one reported
            // (its report lost with a killed coordinator) is where the job stopped.
            None if !spec.storage_url.is_empty() => storage::newest_committed(&spec, id)
                .await?
                .filter(|n| job.checkpoint_step.is_none_or(|known| *n > known)),
            None => None,
        };
        let mut state = self.lock();
        let Some(job) = state.jobs.get_mut(id) else {
            return Err(state.unknown_job(id));
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
        self.schedule_locked(&mut state)?;
        Ok(job)
    }

    /// Subscribes to job events: returns the job's logged events so far (to replay), the job
    /// as it is now, and the feed of every later event.
    pub fn watch(
        &self,
        id: &str,
    ) -> Result<(Vec<JobEvent>, Job, broadcast::Receiver<JobEvent>), ControlError> {
        // Under the lock, the log and the subscription meet without a gap or an overlap.
        let state = self.lock();
        let job = state.cloned_job(id)?;
        Ok((state.logs.since(id, 0), job, self.inner.events.subscribe()))
    }

    /// The job's logged events after `seq` and the job as it is now: for a watcher that fell
    /// behind the live feed.
    pub fn events_since(&self, id: &str, seq: u64) -> Result<(Vec<JobEvent>, Job), ControlError> {
        let state = self.lock();
        Ok((state.logs.since(id, seq), state.cloned_job(id)?))
    }

    /// Records metrics from rank 0.
    pub fn progress(&self, report: ProgressReport) -> Result<(), ControlError> {
        let mut state = self.lock();
        if let Some(job) = state.current_job(&report.job_id, report.generation)? {
            if report.metrics.is_some() {
                job.metrics = report.metrics;
            }
            let job = job.clone();
            if let Some(metrics) = &report.metrics {
                let generation = report.generation;
                state
                    .histories
                    .progress(&job.id, generation, metrics, now_ms());
            }
            self.announce(&mut state, job, report.note);
        }
        Ok(())
    }

    /// Records a committed checkpoint.
    pub fn checkpoint(&self, report: CheckpointReport) -> Result<(), ControlError> {
        let mut state = self.lock();
        if let Some(job) = state.current_job(&report.job_id, report.generation)? {
            job.checkpoint_step = Some(report.step);
            job.checkpoint_url = report.manifest_url;
            let job = job.clone();
            self.save(&job)?;
            self.inner.checkpoint_commits.observe(report.commit_seconds);
            let (generation, step) = (report.generation, report.step);
            state
                .histories
                .checkpoint(&job.id, generation, step, now_ms());
            self.announce_routine(
                &mut state,
                job,
                format!("checkpoint {} committed", report.step),
            );
        }
        Ok(())
    }

    /// A worker finished (or failed, or left) its task. The job succeeds when every rank has
    /// finished; any other end ends the generation.
    pub fn task_end(&self, end: TaskEnd) -> Result<(), ControlError> {
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
        let Some(job) = state.current_job(&end.job_id, end.generation)? else {
            return self.schedule_locked(&mut state);
        };
        let rank = job
            .workers
            .iter()
            .position(|w| *w == end.worker_id)
            .unwrap_or_default() as u32;
        if end.preempted {
            let cause = format!("rank {rank} ({who}) left: {}", end.error);
            let ending = Ending::Planned {
                checkpoint: end.checkpoint_step,
            };
            self.end_generation(&mut state, &end.job_id, end.generation, cause, ending)?;
        } else if !end.ok && end.refused {
            let cause = format!("rank {rank} ({who}) cannot run the job: {}", end.error);
            self.finish(&mut state, &end.job_id, JobState::Failed, cause)?;
        } else if !end.ok && end.peer_failed {
            // A symptom of a peer's failure. The lost worker's own signal (its stream closing,
            // its lease expiring) names the real cause and normally arrives within
            // milliseconds; only if none has by the time a lease would expire does the symptom
            // stand as the cause.
            let cause = format!("rank {rank} ({who}) failed: {}", end.error);
            let wait = self.inner.lease.ttl + self.inner.lease.heartbeat_interval;
            self.after(wait, move |control| {
                let mut state = control.lock();
                let result = control
                    .end_generation(
                        &mut state,
                        &end.job_id,
                        end.generation,
                        cause,
                        Ending::Failed,
                    )
                    .and_then(|()| control.schedule_locked(&mut state));
                log_failure("cannot record a failure", result);
            });
        } else if !end.ok {
            let cause = format!("rank {rank} ({who}) failed: {}", end.error);
            self.end_generation(
                &mut state,
                &end.job_id,
                end.generation,
                cause,
                Ending::Failed,
            )?;
        } else {
            if rank == 0 {
                job.metrics = end.final_metrics;
                job.params_digest = end.params_digest.clone();
            }
            let world = job.workers.len();
            let generation = state.generations.entry(end.job_id.clone()).or_default();
            generation.done.insert(rank, end.params_digest);
            if rank == 0 {
                generation.reference = end.reference;
            }
            if generation.done.len() == world {
                // Data-parallel ranks apply the same averaged gradients to the same start:
                // parameters that differ mean a broken all-reduce, never a model to keep.
                match diverged(&generation.done) {
                    None => self.complete(&mut state, &end.job_id)?,
                    Some(why) => self.finish(&mut state, &end.job_id, JobState::Failed, why)?,
                }
            }
        }
        self.schedule_locked(&mut state)
    }

    /// Ends generation `generation` of running job `id` (a generation that already ended is
    /// ignored). A failure within the job's restart policy stops its other ranks and puts the
    /// job back at the front of the queue, to resume from its last committed checkpoint after
    /// the backoff; past the policy the job fails. A planned ending (a preempted worker left
    /// after a checkpoint) neither counts against `max_restarts` nor waits for the backoff.
    pub(super) fn end_generation(
        &self,
        state: &mut State,
        id: &str,
        generation: u64,
        cause: String,
        ending: Ending,
    ) -> Result<(), ControlError> {
        // Every rank finished: a worker lost now takes nothing with it.
        if state.generations.get(id).is_some_and(|g| g.registering) {
            return Ok(());
        }
        let Some(job) = state.current_job(id, generation)? else {
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
                    return self.finish(state, id, JobState::Failed, message);
                }
                job.restarts += 1;
                Duration::from_millis(policy.backoff_ms)
            }
        };
        let from = resume_point(job);
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
        job.message.clone_from(&message);
        job.set_state(JobState::Pending);
        let job = job.clone();
        self.save(&job)?;
        state
            .histories
            .restart(id, generation, at_step, &cause, now_ms());
        for worker in job.workers.iter().filter_map(|w| state.workers.get(w)) {
            if worker.task.as_ref() == Some(&(id.to_owned(), generation)) {
                worker.send(Command::Cancel(CancelTask {
                    job_id: id.to_owned(),
                    generation,
                    reason: format!("generation {generation} ended: {cause}"),
                }));
            }
        }
        state.generations.remove(id);
        state.queue.retain(|q| q != id);
        // It ran before anything now queued was admitted: it keeps its turn.
        state.queue.insert(0, id.to_owned());
        state
            .held_until
            .insert(id.to_owned(), Instant::now() + backoff);
        tracing::info!(job = %id, %message, "generation ended");
        self.announce(state, job, message);
        if !backoff.is_zero() {
            self.after(backoff, Control::schedule);
        }
        Ok(())
    }

    /// Moves a job to a terminal state and tells its other workers to stop.
    pub(super) fn finish(
        &self,
        state: &mut State,
        id: &str,
        to: JobState,
        message: String,
    ) -> Result<(), ControlError> {
        let Some(job) = state.jobs.get_mut(id) else {
            return Err(state.unknown_job(id));
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
                    worker.send(Command::Cancel(CancelTask {
                        job_id: id.to_owned(),
                        generation: job.generation,
                        reason: message.clone(),
                    }));
                }
            }
        }
        tracing::info!(job = %id, state = to.label(), %message, "job finished");
        self.announce(state, job, message);
        Ok(())
    }
}

/// Why the ranks' final parameters show that they diverged; `None` when they agree (ranks
/// that report no digest are not compared).
fn diverged(done: &BTreeMap<u32, String>) -> Option<String> {
    let reported: Vec<(&u32, &String)> = done.iter().filter(|(_, d)| !d.is_empty()).collect();
    let first = reported.first()?.1;
    reported.iter().any(|(_, d)| *d != first).then(|| {
        let each: Vec<String> = reported
            .iter()
            .map(|(rank, d)| format!("rank {rank} sha256:{}", &d[..d.len().min(12)]))
            .collect();
        format!(
            "the ranks ended with different parameters ({}): their all-reduce diverged",
            each.join(", ")
        )
    })
}
