//! kiln worker: the agent that registers with the coordinator, holds its lease and runs
//! assignments ([`agent`]), and the training runtime it drives: datasets and sharding
//! ([`data`]), the model API and the built-in kinds ([`model`]), optimizers and schedules
//! ([`optim`]), the rank's training loop ([`train`]), gradient all-reduce ([`collective`]) and
//! checkpoints in object storage ([`checkpoint`]).
//!
//! A worker binary of one's own depends on this crate, adds its kinds to a
//! [`model::Registry`] and calls [`cli::main`]; see `docs/models.md`.
//!
//! The worker knows nothing of scheduling or HCL: it does what its assignment says.
#![warn(missing_docs)]

pub mod agent;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod collective;
pub mod data;
pub mod export;
#[cfg(feature = "cuda")]
pub mod gpu;
pub mod logs;
pub mod model;
pub mod optim;
pub mod overhead;
pub mod resources;
pub mod route;
pub mod serve;
pub mod spec;
pub mod train;
