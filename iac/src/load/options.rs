//! Where variable values come from besides the files: `--var`, `--var-file` and the
//! environment, as the embedding program hands them to the loader.

use std::path::PathBuf;
use std::sync::Arc;

use crate::models::ModelCatalog;

/// Prefix of the environment variables that set input variables: `KILN_VAR_workers`.
pub const ENV_PREFIX: &str = "KILN_VAR_";

/// Where variable values come from, besides the declarations' defaults.
///
/// Precedence, lowest first: `default` < environment (`KILN_VAR_NAME`) < `var_files` (in
/// order) < `vars` (in order). A later source replaces an earlier one; values are not merged.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--var NAME=VALUE`, in command-line order (the last one for a name wins). A value is
    /// read as an HCL expression when it is a valid one of the declared type, else as a
    /// string; for `type = string` it is always the string as written.
    pub vars: Vec<(String, String)>,
    /// `--var-file FILE`: HCL files of `NAME = VALUE` lines, in order (a later file wins).
    /// Relative paths are relative to the current directory, like any command-line path.
    pub var_files: Vec<PathBuf>,
    /// Whether to read `KILN_VAR_NAME` from the process environment.
    pub env: bool,
    /// Environment entries such as `("KILN_VAR_workers", "3")`, read as if they were in the
    /// process environment (and taking precedence over it): for embedding and tests, which
    /// cannot safely change the process environment.
    pub env_vars: Vec<(String, String)>,
    /// Who says which model kinds a cluster's worker binary offers, and checks each `model`
    /// block against its schema. `None`: model blocks are read but not checked (for
    /// embedders that check them elsewhere; every `kiln` command gives one).
    pub catalog: Option<Arc<dyn ModelCatalog>>,
    /// Decode the clusters only, skipping the jobs: for commands that need a cluster's
    /// storage (`kiln data`, `kiln models`), which a job that cannot load (its dataset
    /// version is gone, say) must not stand in the way of.
    pub clusters_only: bool,
}

impl LoadOptions {
    /// Defaults and the process environment: what [`load_dir`](crate::load_dir) uses.
    pub fn from_env() -> LoadOptions {
        LoadOptions {
            env: true,
            ..LoadOptions::default()
        }
    }
}

/// Splits a `--var` argument `NAME=VALUE` at the first `=` (usable as a clap value parser).
///
/// # Errors
///
/// A message when there is no `=` or the name is empty.
pub fn parse_var_arg(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected NAME=VALUE, got {arg:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn var_arguments_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_var_arg("a=b=c"),
            Ok(("a".to_owned(), "b=c".to_owned()))
        );
        assert!(parse_var_arg("a").is_err());
        assert!(parse_var_arg("=x").is_err());
    }
}
