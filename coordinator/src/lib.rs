//! kiln coordinator: the control plane ([`control`]: worker registry and leases, gang
//! scheduling, rendezvous, job lifecycle, event feed), its gRPC face ([`service`]), durable
//! state ([`state`]), the `kiln` CLI commands ([`cli`]) and declared infrastructure
//! (`kiln plan / apply / destroy`, [`infra`]).
//!
//! The coordinator never links Burn: it schedules and observes training, workers do it.
#![warn(missing_docs)]

pub mod bench;
pub mod cli;
pub mod control;
mod follow;
pub mod infra;
pub mod service;
pub mod state;
