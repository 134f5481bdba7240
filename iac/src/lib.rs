//! kiln infrastructure-as-code: HCL configuration directories → typed, validated specs
//! ([`spec`]), diagnostics that point at `file:line:col` ([`Diagnostic`]), and the
//! [`provider::Provider`] seam through which clusters get their worker nodes.
//!
//! This crate does not run jobs or talk to the coordinator; it only describes and provisions.
#![warn(missing_docs)]

mod diag;
mod load;
pub mod provider;
pub mod spec;
mod wire;

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use load::load_dir;
