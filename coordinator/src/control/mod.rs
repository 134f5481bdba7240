//! The control plane's core: the worker registry with leases (`registry`), gang placement
//! (`schedule`), the job state machine `Pending → Running → Succeeded | Failed | Cancelled`
//! (`lifecycle`), rendezvous, and the event feed (`events`). gRPC handlers
//! ([`crate::service`]) are thin wrappers over [`Control`].
//!
//! All mutable state sits behind one mutex (`table`); a decision and what it does (say, a
//! lost worker failing its generation, the job failing or going back to the queue, the next
//! job placed) happen under one hold of it. Every job transition is written to the
//! [`StateStore`] before it is announced, so a restarted coordinator sees what clients saw.
//! Every background task (lease expiry, stream watchers, restart backoffs, the wait for a
//! failure's real cause) runs under one [`TaskTracker`] that [`Control::shutdown`] cancels
//! and [`Control::drained`] awaits.

mod error;
mod events;
mod fit;
mod history;
mod lifecycle;
mod logs;
mod recent;
mod registration;
mod registry;
mod rendezvous;
mod schedule;
mod spec;
mod storage;
mod table;
#[cfg(test)]
mod tests;
mod view;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kiln_proto::Message;
use kiln_proto::v1::worker_command::Command;
use kiln_proto::v1::{Goodbye, Job, JobEvent, JobState};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::error::ControlError;
pub use self::history::{History, Mark, Point};
pub use self::table::CommandSender;
use self::table::{State, resume_point};
pub use self::view::{Snapshot, WorkerView};
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
    tasks: TaskTracker,
    /// This state's identity in object stores: job ids are claimed under it.
    store_owner: String,
    /// How long rank 0's checkpoint commits took, as reported (seconds).
    checkpoint_commits: Histogram,
    /// The id of each job whose worker log grew.
    log_feed: broadcast::Sender<String>,
}

const JOB_PREFIX: &str = "jobs/";
const NEXT_JOB_KEY: &str = "meta/next_job";

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
                tasks: TaskTracker::new(),
                store_owner,
                checkpoint_commits: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
                log_feed: broadcast::channel(1024).0,
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

    /// Runs `task` in the background until it ends or the coordinator shuts down.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let shutdown = self.inner.shutdown.clone();
        self.inner.tasks.spawn(async move {
            tokio::select! {
                () = task => {}
                () = shutdown.cancelled() => {}
            }
        });
    }

    /// Runs `then` after `delay`, unless the coordinator shuts down first.
    fn after(&self, delay: Duration, then: impl FnOnce(&Control) + Send + 'static) {
        let control = self.clone();
        self.spawn(async move {
            tokio::time::sleep(delay).await;
            then(&control);
        });
    }

    /// Ends every worker's command stream and cancels background tasks. With `goodbye`,
    /// workers are told first, and exit; without (a leader handing over), they take the end
    /// of the stream for a lost coordinator and register again with the next leader.
    pub fn shutdown(&self, goodbye: bool) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        let mut state = self.lock();
        for worker in state.workers.values_mut() {
            if goodbye {
                worker.send(Command::Goodbye(Goodbye {
                    reason: "the coordinator is shutting down".to_owned(),
                }));
            }
            worker.commands = None;
        }
    }

    /// Resolves when the coordinator starts shutting down.
    pub async fn stopped(&self) {
        self.inner.shutdown.cancelled().await;
    }

    /// Resolves once [`Self::shutdown`] was called and every background task has ended.
    pub async fn drained(&self) {
        self.inner.shutdown.cancelled().await;
        self.inner.tasks.wait().await;
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

/// Logs a failure of a background action (there is no caller to return it to).
fn log_failure(what: &str, result: Result<(), ControlError>) {
    if let Err(e) = result {
        tracing::error!(error = %kiln_proto::error_chain(&e), "{what}");
    }
}
