//! kiln coordinator: the control plane ([`control`]: worker registry and leases, gang
//! scheduling, rendezvous, job lifecycle, event feed), its gRPC face ([`service`]), durable
//! state ([`state`]), leader election on etcd ([`leader`]) and the `kiln` CLI commands ([`cli`], declared infrastructure and the
//! benchmark drivers among them).
//!
//! The coordinator never links Burn: it schedules and observes training, workers do it.
#![warn(missing_docs)]

pub mod cli;
pub mod control;
mod follow;
pub mod leader;
pub mod service;
pub mod state;
pub mod web;
