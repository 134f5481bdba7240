//! `kiln serve REF`: a registered model answering the Open Inference Protocol (V2) over HTTP.
//! Serving runs with the Burn runtime, in the worker binary that offers the model's kind
//! (`kiln-worker serve`); this command finds the registry's store and becomes that process
//! (exec), so signals and the exit status are the server's own.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;

use super::common::worker_binary;
use super::data::StoreArg;
use super::error::CliError;

/// How `kiln serve` serves.
pub struct ServeOptions<'a> {
    /// NAME@ALIAS, NAME@N or NAME.
    pub reference: &'a str,
    /// Address to listen on.
    pub listen: &'a str,
    /// Most rows one forward pass takes.
    pub max_batch_size: u32,
    /// How long a batch waits for more requests.
    pub max_delay: Duration,
    /// How often an alias is looked up again.
    pub watch_interval: Duration,
    /// Where to write the URL once listening.
    pub ready_file: Option<&'a Path>,
    /// The worker binary (default: the bundled one).
    pub worker: Option<&'a PathBuf>,
    /// How drift is judged; `None`: not watched.
    pub drift: Option<kiln_versions::drift::Settings>,
}

/// `kiln serve`: never returns on success (the process becomes the server).
pub fn serve(store: &StoreArg<'_>, options: &ServeOptions<'_>) -> Result<(), CliError> {
    let storage = store.resolve()?;
    let binary = match options.worker {
        Some(path) => path.clone(),
        None => worker_binary()?,
    };
    let mut cmd = std::process::Command::new(&binary);
    cmd.arg("serve")
        .args(["--model", options.reference])
        .args(["--store", &storage.url])
        .args(["--listen", options.listen])
        .arg(format!("--max-batch-size={}", options.max_batch_size))
        .arg(format!("--max-delay-us={}", options.max_delay.as_micros()))
        .arg(format!(
            "--watch-interval-ms={}",
            options.watch_interval.as_millis().max(1)
        ));
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    for (flag, value) in [
        ("--store-endpoint", storage.endpoint.clone()),
        ("--store-region", storage.region.clone()),
        (
            "--store-access-key-id-file",
            path(&storage.access_key_id_file),
        ),
        (
            "--store-secret-access-key-file",
            path(&storage.secret_access_key_file),
        ),
    ] {
        if let Some(value) = value {
            cmd.arg(flag).arg(value);
        }
    }
    match &options.drift {
        Some(drift) => {
            drift
                .check()
                .map_err(|e| CliError::bad_input(anyhow!("drift: {e}")))?;
            cmd.arg(format!("--psi-threshold={}", drift.psi_threshold))
                .arg(format!("--drift-window={}", drift.window))
                .arg(format!("--drift-min-samples={}", drift.min_samples));
        }
        None => {
            cmd.arg("--no-drift");
        }
    }
    if let Some(file) = options.ready_file {
        cmd.arg("--ready-file").arg(file);
    }
    let error = cmd.exec();
    Err(CliError::infra(anyhow!(
        "cannot run {} serve: {error}",
        binary.display()
    )))
}
