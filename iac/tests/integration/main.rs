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
use std::sync::Arc;

use kiln_iac::models::{Catalog, CheckReport, CheckRequest, ModelCatalog};
use kiln_iac::spec::Config;
use kiln_iac::{Diagnostics, LoadOptions};
use kiln_worker::model::Registry;

/// The built-in model kinds, answered in process by the worker library: what the bundled
/// `kiln-worker` answers to `models --json` and `models check` (the end-to-end tests ask the
/// real binary). A cluster's own `worker { binary }` is not consulted.
struct Builtin(Registry);

impl ModelCatalog for Builtin {
    fn catalog(&self, _: Option<&Path>) -> Result<Catalog, String> {
        Ok(self.0.catalog())
    }

    fn check(&self, _: Option<&Path>, request: &CheckRequest) -> Result<CheckReport, String> {
        Ok(self.0.check(request))
    }
}

/// Options with no variables, no environment, and the built-in model kinds.
pub fn no_env() -> LoadOptions {
    LoadOptions {
        catalog: Some(Arc::new(Builtin(Registry::builtin()))),
        ..LoadOptions::default()
    }
}

/// `kiln_iac::load_dir` with the built-in model kinds.
pub fn load_dir(dir: &Path) -> Result<Config, Diagnostics> {
    kiln_iac::load_dir_with(
        dir,
        &LoadOptions {
            env: true,
            ..no_env()
        },
    )
}

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
