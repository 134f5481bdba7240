//! What control-plane calls fail with, and the one mapping of each to a gRPC code.

use kiln_proto::ServiceError;
use kiln_proto::store::StoreError;

use crate::state::StateError;

/// What a control-plane call can fail with; each maps to one gRPC code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The join token is wrong.
    #[error("invalid join token")]
    BadToken,
    /// A worker RPC without the secret its worker id was registered with.
    #[error("worker {0:?}: missing or wrong worker secret")]
    WrongWorkerSecret(String),
    /// No such worker (it never registered, or its lease expired).
    #[error("unknown worker {0:?}")]
    UnknownWorker(String),
    /// No such job.
    #[error("no job {id}; {}", known_jobs(.known))]
    UnknownJob {
        /// The id asked for.
        id: String,
        /// The ids the coordinator knows, oldest first.
        known: Vec<String>,
    },
    /// The request is malformed.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The request is about a generation that is no longer (or not yet) the job's current one.
    #[error("stale request: {0}")]
    Stale(String),
    /// The caller may not make this request (e.g. a worker that holds no rank of the job).
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// The coordinator is shutting down.
    #[error("the coordinator is shutting down")]
    ShuttingDown,
    /// The durable state failed.
    #[error("state store")]
    State(#[from] StateError),
    /// The job's object store could not be opened, read or claimed.
    #[error("object store of job {job}")]
    Storage {
        /// The job (or job name) whose store it is.
        job: String,
        /// The cause.
        #[source]
        source: StoreError,
    },
}

impl ServiceError for ControlError {
    fn code(&self) -> tonic::Code {
        match self {
            ControlError::BadToken | ControlError::WrongWorkerSecret(_) => {
                tonic::Code::Unauthenticated
            }
            ControlError::UnknownWorker(_) | ControlError::UnknownJob { .. } => {
                tonic::Code::NotFound
            }
            ControlError::Invalid(_) => tonic::Code::InvalidArgument,
            ControlError::Stale(_) => tonic::Code::FailedPrecondition,
            ControlError::NotAllowed(_) => tonic::Code::PermissionDenied,
            ControlError::ShuttingDown => tonic::Code::Unavailable,
            ControlError::State(_) => tonic::Code::Internal,
            ControlError::Storage { source, .. } if source.is_bad_url() => {
                tonic::Code::InvalidArgument
            }
            ControlError::Storage { .. } => tonic::Code::Unavailable,
        }
    }
}

/// `known jobs: a, b` (the newest 20), or that there are none.
fn known_jobs(known: &[String]) -> String {
    const SHOWN: usize = 20;
    match known.len() {
        0 => "the coordinator has no jobs".to_owned(),
        n if n <= SHOWN => format!("known jobs: {}", known.join(", ")),
        n => format!(
            "known jobs: {}, and {} more (`kiln status` lists them all)",
            known[n - SHOWN..].join(", "),
            n - SHOWN
        ),
    }
}
