//! The model kinds of a worker binary, learnt by running it: `BINARY models --json` for the
//! catalog (asked once per binary and command), `BINARY models check` for one model. This is
//! how `kiln validate` (and every command that loads a configuration) checks `model` blocks
//! against the binary the cluster's nodes will run.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use kiln_iac::models::{Catalog, CheckReport, CheckRequest, ModelCatalog};

use super::common::worker_binary;

/// Asks worker binaries by running them.
#[derive(Default)]
pub struct BinaryCatalog {
    known: Mutex<HashMap<PathBuf, Catalog>>,
}

impl BinaryCatalog {
    fn binary(binary: Option<&Path>) -> Result<PathBuf, String> {
        match binary {
            Some(path) => Ok(path.to_owned()),
            None => worker_binary().map_err(|e| e.to_string()),
        }
    }
}

/// Runs `binary` with `args`, `input` on its stdin, and returns its stdout.
fn run(binary: &Path, args: &[&str], input: &[u8]) -> Result<Vec<u8>, String> {
    let shown = binary.display();
    let mut child = Command::new(binary)
        .args(args)
        .env_remove("KILN_JOIN_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("Running `{shown}` failed: {e}."))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| format!("Writing to `{shown}` failed: {e}."))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("Waiting for `{shown}` failed: {e}."))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "`{shown} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            stderr.trim()
        ));
    }
    Ok(output.stdout)
}

impl ModelCatalog for BinaryCatalog {
    fn catalog(&self, binary: Option<&Path>) -> Result<Catalog, String> {
        let binary = Self::binary(binary)?;
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(catalog) = known.get(&binary) {
            return Ok(catalog.clone());
        }
        let stdout = run(&binary, &["models", "--json"], &[])?;
        let catalog: Catalog = serde_json::from_slice(&stdout).map_err(|e| {
            format!(
                "`{} models --json` did not print a model catalog: {e}. Is it a kiln worker binary?",
                binary.display()
            )
        })?;
        known.insert(binary, catalog.clone());
        Ok(catalog)
    }

    fn check(&self, binary: Option<&Path>, request: &CheckRequest) -> Result<CheckReport, String> {
        let binary = Self::binary(binary)?;
        let input = serde_json::to_vec(request).map_err(|e| e.to_string())?;
        let stdout = run(&binary, &["models", "check"], &input)?;
        serde_json::from_slice(&stdout).map_err(|e| {
            format!(
                "`{} models check` did not print a check report: {e}",
                binary.display()
            )
        })
    }
}
