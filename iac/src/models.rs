//! Where the loader learns which model kinds exist: a cluster's worker binary describes its
//! kinds and their attributes (`kiln-worker models --json`) and checks a model against its
//! data (`kiln-worker models check`). The loader asks through [`ModelCatalog`]; the CLI's
//! implementation runs the binary, an embedder may answer in process.

use std::path::Path;

pub use kiln_proto::models::{Catalog, CheckReport, CheckRequest};

/// Answers what a worker binary offers.
pub trait ModelCatalog: Send + Sync {
    /// The kinds of the worker binary `binary` (`None`: the bundled `kiln-worker`).
    ///
    /// # Errors
    ///
    /// Why the binary could not be asked (not found, failed, answered nonsense).
    fn catalog(&self, binary: Option<&Path>) -> Result<Catalog, String>;

    /// Whether the model of `request` can be built on its data, and its size.
    ///
    /// # Errors
    ///
    /// Why the binary could not be asked.
    fn check(&self, binary: Option<&Path>, request: &CheckRequest) -> Result<CheckReport, String>;
}

impl std::fmt::Debug for dyn ModelCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ModelCatalog")
    }
}
