//! kiln worker: the agent that registers with the coordinator, holds its lease and runs
//! assignments ([`agent`]), and the training runtime it drives: datasets and sharding
//! ([`data`]), Burn models ([`model`]), the rank's training loop ([`train`]), gradient
//! all-reduce ([`collective`]) and checkpoints in object storage ([`checkpoint`]).
//!
//! The worker knows nothing of scheduling or HCL: it does what its assignment says.
#![warn(missing_docs)]

pub mod agent;
pub mod bench;
pub mod capability;
pub mod checkpoint;
pub mod collective;
pub mod data;
pub mod model;
pub mod spec;
pub mod train;
