//! End-to-end tests: the `kiln` CLI and `kiln-worker` processes, on loopback.

mod auth;
mod bad_input;
mod coordinator;
mod dashboard;
mod data;
mod datasets;
mod deploy;
mod export;
mod failover;
mod fmt;
mod hosts;
mod infra;
mod models;
mod recovery;
mod registry;
mod remote;
mod rendezvous;
mod s3;
mod serving;
mod shared_store;
mod tls;
mod up;
