//! kiln infrastructure-as-code: HCL configuration directories → typed, validated specs
//! ([`spec`]), with input variables, locals and a function library ([`LoadOptions`]),
//! diagnostics that point at `file:line:col` ([`Diagnostic`]), and the
//! [`provider::Provider`] seam through which clusters get their worker nodes.
//!
//! This crate does not run jobs or talk to the coordinator; it only describes and provisions.
//! The language is documented for users in `docs/hcl.md`.
#![warn(missing_docs)]

mod diag;
mod expr;
pub mod fmt;
pub mod footprint;
mod load;
pub mod models;
pub mod plan;
pub mod provider;
pub mod spec;
mod wire;

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use load::{ENV_PREFIX, LoadOptions, load_dir, load_dir_with, parse_duration, parse_var_arg};
