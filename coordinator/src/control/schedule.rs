//! Gang placement, first come first served: the oldest pending job starts when as many idle
//! workers as it needs are attached; jobs behind it wait their turn, so a large job is never
//! starved by small ones. Jobs that wait are told why.

use std::collections::BTreeMap;

use kiln_proto::v1::worker_command::Command;
use kiln_proto::v1::{Assignment, JobState};
use tokio::time::Instant;

use super::error::ControlError;
use super::fit::Needs;
use super::spec::workers_needed;
use super::table::{Generation, State, Worker};
use super::{Control, log_failure};

impl Control {
    /// [`Self::schedule_locked`] with the lock taken.
    pub(super) fn schedule(&self) {
        let mut state = self.lock();
        log_failure("cannot schedule", self.schedule_locked(&mut state));
    }

    /// Starts every job at the head of the queue that can start now.
    pub(super) fn schedule_locked(&self, state: &mut State) -> Result<(), ControlError> {
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
            let needs = Needs::of(job);
            let idle: Vec<String> = state
                .workers
                .iter()
                .filter(|(_, w)| w.idle() && w.misfit(&needs).is_none())
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
                worker.send(Command::Assign(Assignment {
                    job_id: id.clone(),
                    generation: job.generation,
                    rank: rank as u32,
                    world_size: idle.len() as u32,
                    peers: peers.clone(),
                    spec: job.spec.clone(),
                    resume_step: job.checkpoint_step,
                    store_owner: self.inner.store_owner.clone(),
                }));
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
            self.announce(state, job, message);
        }
        self.report_waiting(state);
        Ok(())
    }

    /// Says why each queued job waits, in its `message` and as an event when that changes:
    /// how many workers the first one needs and has (of those it fits on, and why the others
    /// do not fit), or which job the others queue behind.
    fn report_waiting(&self, state: &mut State) {
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
                let (reason, fit) = waiting_for(&state.workers, &Needs::of(job), need);
                job.workers_fit = fit as u32;
                job.workers_registered = state.workers.len() as u32;
                job.workers_needed = need as u32;
                reason
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
}

/// Why the job at the head of the queue, whose ranks need `needs`, waits for `need` workers,
/// and how many registered workers fit it.
fn waiting_for(
    workers: &BTreeMap<String, Worker>,
    needs: &Needs<'_>,
    need: usize,
) -> (String, usize) {
    let plural = if need == 1 { "" } else { "s" };
    let (mut misfits, mut fitting, mut idle) = (Vec::new(), 0, 0);
    for (id, w) in workers {
        match w.misfit(needs) {
            Some(why) => misfits.push(format!("{id}: {why}")),
            None => {
                fitting += 1;
                idle += usize::from(w.idle());
            }
        }
    }
    if !workers.is_empty() && !workers.values().any(|w| w.offers(needs.kind)) {
        let mut offered: Vec<&str> = workers
            .values()
            .flat_map(|w| w.model_kinds.iter().map(String::as_str))
            .collect();
        offered.sort_unstable();
        offered.dedup();
        let message = format!(
            "pending: no registered worker trains model kind {:?} (they offer: {}); needs {need} worker{plural} whose binary does",
            needs.kind,
            offered.join(", ")
        );
        return (message, fitting);
    }
    if fitting >= need || misfits.is_empty() {
        let message =
            format!("pending: needs {need} worker{plural}, {fitting} registered ({idle} idle)");
        return (message, fitting);
    }
    let with = if needs.backend == "cuda" {
        format!(" with {} each", needs.gpu_words())
    } else {
        String::new()
    };
    // A few reasons say enough: the message is one line of `kiln status`.
    const SHOWN: usize = 4;
    let more = match misfits.len() {
        n if n > SHOWN => format!("; and {} more", n - SHOWN),
        _ => String::new(),
    };
    let message = format!(
        "pending: needs {need} worker{plural}{with}, {fitting} of {} registered fit ({idle} idle); {}{more}",
        workers.len(),
        misfits[..misfits.len().min(SHOWN)].join("; ")
    );
    (message, fitting)
}
