//! `kiln models export | predict`: a registered version's weights handed over as safetensors
//! with their config, or its predictions on the dataset it trained on. The registry keeps the
//! job's wire spec and checkpoint; a worker binary (it links Burn, the coordinator does not)
//! rebuilds the model from them (`kiln-worker export | predict`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::anyhow;
use kiln_proto::Message;
use kiln_versions::registry::{ModelRef, ModelVersion, Registry};
use serde_json::Value;

use super::common::worker_binary;
use super::data::StoreArg;
use super::error::{CliError, ResultExt};
use super::models::{cli_error, print_json};

/// The version `reference` names, with the wire spec to send a worker: the registered one,
/// its storage pointed at the store the version was found in.
async fn version_and_spec(
    store: &StoreArg<'_>,
    reference: &str,
) -> Result<(ModelVersion, Vec<u8>), CliError> {
    let storage = store.resolve()?;
    let registry = Registry::open(&storage.url, &storage.options()).map_err(cli_error)?;
    let reference = ModelRef::parse(reference).map_err(cli_error)?;
    let version = registry.resolve(&reference).await.map_err(cli_error)?;
    let lineage = &version.lineage;
    let (Ok(bytes), Some(_)) = (hex::decode(&lineage.spec), lineage.checkpoint_step) else {
        return Err(CliError::bad_input(anyhow!(
            "{} was registered without its spec and checkpoint step (by an older kiln); its weights are in {}",
            version.reference(),
            lineage.checkpoint
        )));
    };
    let mut spec = kiln_proto::v1::JobSpec::decode(bytes.as_slice())
        .map_err(|e| CliError::infra(anyhow!("{}'s spec: {e}", version.reference())))?;
    spec.storage_url = registry.url().to_owned();
    spec.storage_options = Some(storage.options());
    Ok((version, spec.encode_to_vec()))
}

/// Runs `worker SUBCOMMAND --job J --step N ARGS` with `spec` on stdin; its JSON stdout.
fn run_worker(
    worker: Option<&Path>,
    version: &ModelVersion,
    spec: &[u8],
    subcommand: &str,
    args: &[&str],
) -> Result<Value, CliError> {
    use std::io::Write;
    let binary = match worker {
        Some(path) => path.to_owned(),
        None => worker_binary()?,
    };
    let step = version
        .lineage
        .checkpoint_step
        .unwrap_or_default()
        .to_string();
    let mut child = Command::new(&binary)
        .arg(subcommand)
        .args(["--job", &version.lineage.job_id, "--step", &step])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CliError::infra(anyhow!("starting {}: {e}", binary.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(spec).infra()?;
    }
    let out = child.wait_with_output().infra()?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(CliError::infra(anyhow!(
            "{} {subcommand} of {} failed ({}): {}",
            binary.display(),
            version.reference(),
            out.status,
            stderr.trim()
        )));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        CliError::infra(anyhow!(
            "{} {subcommand} printed no JSON: {e}",
            binary.display()
        ))
    })
}

/// `kiln models export REF --out DIR`.
pub async fn export(
    store: &StoreArg<'_>,
    reference: &str,
    out: &Path,
    worker: Option<&PathBuf>,
    json: bool,
) -> Result<(), CliError> {
    let (version, spec) = version_and_spec(store, reference).await?;
    let out_arg = out.display().to_string();
    let mut report = run_worker(
        worker.map(PathBuf::as_path),
        &version,
        &spec,
        "export",
        &["--out", &out_arg],
    )?;
    if json {
        report["model"] = version.reference().into();
        return print_json(&report);
    }
    println!(
        "{} exported to {} ({} tensors)",
        version.reference(),
        out.display(),
        report["tensors"]
    );
    for file in report["files"].as_array().into_iter().flatten() {
        println!(
            "  {:<40} {:>10} bytes  sha256:{}",
            file["path"].as_str().unwrap_or_default(),
            file["bytes"],
            file["sha256"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

/// `kiln models predict REF [--split S]`.
pub async fn predict(
    store: &StoreArg<'_>,
    reference: &str,
    split: &str,
    worker: Option<&PathBuf>,
    json: bool,
) -> Result<(), CliError> {
    let (version, spec) = version_and_spec(store, reference).await?;
    let mut report = run_worker(
        worker.map(PathBuf::as_path),
        &version,
        &spec,
        "predict",
        &["--split", split],
    )?;
    if json {
        report["model"] = version.reference().into();
        report["split"] = split.into();
        return print_json(&report);
    }
    let accuracy = report["accuracy"]
        .as_f64()
        .map_or_else(|| "-".to_owned(), |a| format!("{a:.4}"));
    println!(
        "{} on the {split} split: {} samples, accuracy {accuracy}",
        version.reference(),
        report["samples"]
    );
    println!("  {:>8} {:>6} {:>10}", "row", "label", "predicted");
    for row in report["rows"].as_array().into_iter().flatten() {
        println!(
            "  {:>8} {:>6} {:>10}",
            row["row"], row["label"], row["prediction"]
        );
    }
    Ok(())
}
