//! The `kiln` commands, one module per family: `config` (validate, fmt), `up` (the whole job
//! on the embedded default), `serve` (a standalone coordinator), `jobs` (the client commands
//! on a running coordinator), `infra` (plan, apply, destroy, state), `data` (dataset versions in
//! the object store), `models` (the model registry there), `export` (a version's weights and predictions, through a worker binary) and `bench`; `catalog`
//! asks worker binaries for their model kinds; `common`
//! holds what they share, `error` the [`CliError`] each returns with its exit code:
//! 1 = the job failed or was cancelled, 2 = bad input (HCL, arguments, a refused request),
//! 3 = infrastructure (coordinator unreachable, state locked, workers could not start).

pub mod bench;
mod catalog;
pub mod commands;
mod common;
mod config;
pub mod data;
pub mod drift;
mod error;
pub mod export;
pub mod inference;
pub mod infra;
mod jobs;
pub mod load;
pub mod logs;
pub mod models;
mod serve;
pub mod tls;
mod up;

pub use catalog::BinaryCatalog;
pub use common::{ClientFlags, Target};
pub use common::{DEFAULT_COORDINATOR, worker_binary};
pub use config::{fmt, validate};
pub use error::CliError;
pub use jobs::{DEFAULT_STATE_DIR, cancel, resume, status, submit, target};
pub use serve::{CoordinatorOptions, coordinator};
pub use up::up;
