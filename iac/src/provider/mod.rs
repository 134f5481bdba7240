//! Providers turn a cluster's resources (its coordinator and one node per pool slot) into
//! running processes or machines.
//!
//! A provider serves two lifecycles:
//! - **Ephemeral** (`kiln up`): [`Provider::launch`] starts every node for one run,
//!   [`Provider::next_exit`] reports a node that ends, [`Provider::shutdown`] stops them all.
//! - **Declared** (`kiln plan / apply / destroy`): [`Provider::refresh`] looks at what the state
//!   records, [`Provider::plan`] diffs it against the configuration, [`Provider::apply`] carries
//!   out one change, [`Provider::destroy`] removes one resource. What these create outlives the
//!   command; the state (kept by the caller) is how later commands find it again.

mod any;
mod local;
mod process;
mod remote;
mod slurm;
mod ssh;
mod worker;

pub use any::AnyProvider;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

pub use local::LocalProvider;
pub use process::log_tail;

use crate::plan::{Action, Address, Change, Observed, Recorded, Resource, ResourceKind};
use crate::spec::{ClusterSpec, ProviderKind};

/// What every worker process is told at start.
#[derive(Debug, Clone)]
pub struct WorkerLaunch {
    /// The `kiln-worker` executable.
    pub worker_bin: PathBuf,
    /// Coordinator URL the workers connect to.
    pub coordinator_url: String,
    /// Join token (passed through the environment, never on the command line).
    pub join_token: String,
    /// The CA certificate file an `https://` coordinator is verified against.
    pub ca_file: Option<PathBuf>,
    /// Directory for per-node log files (`<node>.log`).
    pub log_dir: PathBuf,
}

impl WorkerLaunch {
    pub(crate) fn reach(&self) -> worker::Reach {
        worker::Reach {
            url: self.coordinator_url.clone(),
            join_token: self.join_token.clone(),
            ca_file: self.ca_file.clone(),
        }
    }
}

/// What [`Provider::apply`] needs besides the change itself.
#[derive(Debug, Clone)]
pub struct ApplyContext {
    /// The `kiln` executable (runs coordinators).
    pub kiln_bin: PathBuf,
    /// The `kiln-worker` executable (runs nodes).
    pub worker_bin: PathBuf,
    /// Directory for log files.
    pub log_dir: PathBuf,
    /// How long a destroyed process gets to exit after SIGTERM before it is killed.
    pub grace: Duration,
}

/// One provisioned node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `<pool>-<index>`.
    pub name: String,
    /// How its provider knows its worker: `pid 4242`, `pid 4242 on gpu1`, `Slurm job 17`.
    pub id: String,
    /// Where its worker's output goes.
    pub log: PathBuf,
}

/// A node whose worker process ended.
#[derive(Debug, Clone)]
pub struct NodeExit {
    /// The node.
    pub node: Node,
    /// How it ended.
    pub status: ExitStatus,
}

impl std::fmt::Display for NodeExit {
    /// `worker cpu-1 (pid 4242) was killed by signal 9`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::os::unix::process::ExitStatusExt;
        write!(f, "worker {} ({}) ", self.node.name, self.node.id)?;
        match (self.status.code(), self.status.signal()) {
            (Some(code), _) => write!(f, "exited with code {code}"),
            (None, Some(signal)) => write!(f, "was killed by signal {signal}"),
            (None, None) => write!(f, "ended ({})", self.status),
        }
    }
}

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The provider kind cannot run here.
    #[error("provider {0:?} is not available in this build")]
    Unsupported(ProviderKind),
    /// A process could not be started.
    #[error("cannot start {bin} for {node}")]
    Spawn {
        /// The executable.
        bin: PathBuf,
        /// The node or coordinator.
        node: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The log directory could not be created.
    #[error("cannot create the log directory {0}")]
    Logs(PathBuf, #[source] std::io::Error),
    /// A resource was created but did not become ready.
    #[error("{resource} did not start: {detail}")]
    NotReady {
        /// The resource's address.
        resource: String,
        /// What was seen (exit status, log tail, timeout).
        detail: String,
    },
    /// A resource's attributes or handle cannot be acted on.
    #[error("{resource}: {detail}")]
    Invalid {
        /// The resource's address.
        resource: String,
        /// What is wrong.
        detail: String,
    },
    /// A resource could not be stopped.
    #[error("cannot stop {resource}")]
    Stop {
        /// The resource's address.
        resource: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Which changed attributes no provider can apply to a running worker or coordinator:
/// everything but a node's labels (which only the state carries).
pub(crate) fn forces_replacement(address: &Address, attribute: &str) -> bool {
    !(matches!(address.kind, ResourceKind::Node { .. }) && attribute == "labels")
}

/// What a change removes before anything else: the live resource of a delete or replacement.
pub(crate) fn to_destroy(change: &Change) -> Option<&Recorded> {
    match change.action {
        Action::Delete | Action::Replace => change.before.as_ref(),
        Action::Create | Action::Update => None,
    }
}

/// What a change starts (`Ok`), or, when it starts nothing, what the state records after it
/// (`Err`): nothing after a delete; after an update, the new attributes on the live
/// resource's handle (only attributes that need no restart change in place).
pub(crate) fn to_start(change: &Change) -> Result<&Resource, Option<Recorded>> {
    let Some(after) = &change.after else {
        return Err(None);
    };
    match (&change.action, &change.before) {
        (Action::Update, Some(before)) => Err(Some(Recorded {
            address: after.address.clone(),
            attrs: after.attrs.clone(),
            handle: before.handle.clone(),
        })),
        _ => Ok(after),
    }
}

/// How a worker that had to be killed (or whose end could not be read) is reported.
pub(crate) fn killed_status() -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus::from_raw(9)
}

/// Provisions and tears down the resources of a cluster.
pub trait Provider {
    /// Starts one worker per node of every pool of `cluster`, for the lifetime of this
    /// provider (ephemeral).
    fn launch(
        &mut self,
        cluster: &ClusterSpec,
        launch: &WorkerLaunch,
    ) -> impl Future<Output = Result<Vec<Node>, ProviderError>> + Send;

    /// Starts a launched node's worker again after it ended (ephemeral).
    fn relaunch(
        &mut self,
        node: &Node,
        launch: &WorkerLaunch,
    ) -> impl Future<Output = Result<Node, ProviderError>> + Send;

    /// Waits until some launched node's worker ends; pending forever when there are none.
    fn next_exit(&mut self) -> impl Future<Output = NodeExit> + Send;

    /// Stops every launched node: waits up to `grace` for workers to exit on their own (they
    /// do once the coordinator is gone), then kills the rest. Every process is reaped.
    fn shutdown(&mut self, grace: Duration) -> impl Future<Output = Vec<NodeExit>> + Send;

    /// Looks at each recorded resource: does it still exist as recorded?
    fn refresh(&self, recorded: &[Recorded]) -> Vec<Observed>;

    /// The changes that turn `observed` into `desired`, in the order they must be applied.
    fn plan(&self, desired: &[Resource], observed: &[Observed]) -> Vec<Change> {
        crate::plan::diff(desired, observed, forces_replacement)
    }

    /// Carries out one change. `state` is the state as it stands before the change (new nodes
    /// find their cluster's coordinator in it). Returns the new record, `None` after a delete.
    fn apply(
        &mut self,
        change: &Change,
        state: &[Recorded],
        cx: &ApplyContext,
    ) -> impl Future<Output = Result<Option<Recorded>, ProviderError>> + Send;

    /// Stops and removes one recorded resource; nothing happens if it is already gone.
    fn destroy(
        &mut self,
        resource: &Recorded,
        grace: Duration,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;
}
