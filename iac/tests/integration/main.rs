//! Integration tests of `kiln-iac`, in one binary (one link on 2 cores).
//!
//! Fixtures are loaded through paths relative to the crate root (where cargo runs
//! integration tests), so diagnostics render them as `tests/fixtures/...`: the snapshots
//! hold no machine-specific path.

mod fmt;
mod invalid;
mod language;
mod robustness;
mod valid;

use std::path::{Path, PathBuf};

/// `tests/fixtures/<name>`, relative to the crate root.
pub fn fixture(name: &str) -> PathBuf {
    let path = Path::new("tests/fixtures").join(name);
    assert!(
        path.exists(),
        "{} not found: integration tests must run from the crate root (as `cargo test` does)",
        path.display()
    );
    path
}
