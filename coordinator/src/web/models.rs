//! `/api/models`: the registries of the stores the coordinator's jobs use, read as `kiln
//! models` reads them — every model with its versions (metrics, job) and its aliases with
//! every move.

use std::collections::BTreeMap;

use kiln_proto::v1::{Job, StorageOptions};
use kiln_versions::registry::Registry;
use serde_json::{Value, json};

/// The distinct stores of `jobs`, each with the options to open it.
fn stores(jobs: &[Job]) -> BTreeMap<String, StorageOptions> {
    jobs.iter()
        .filter_map(|j| j.spec.as_ref())
        .filter(|s| !s.storage_url.is_empty())
        .map(|s| {
            (
                s.storage_url.clone(),
                s.storage_options.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// Every model of one registry.
async fn models(registry: &Registry) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for name in registry.names().await.map_err(|e| e.to_string())? {
        let mut versions = Vec::new();
        for v in registry.versions(&name).await.map_err(|e| e.to_string())? {
            let version = registry.get(&name, v).await.map_err(|e| e.to_string())?;
            versions.push(json!({
                "version": v,
                "created_unix_ms": version.created_unix_ms,
                "job": version.lineage.job_id,
                "val_accuracy": version.metrics.val_accuracy,
                "val_loss": version.metrics.val_loss,
                "train_loss": version.metrics.train_loss,
            }));
        }
        let mut aliases = serde_json::Map::new();
        for alias in registry.aliases(&name).await.map_err(|e| e.to_string())? {
            let moves = registry
                .history(&name, &alias)
                .await
                .map_err(|e| e.to_string())?;
            aliases.insert(alias, serde_json::to_value(moves).unwrap_or_default());
        }
        out.push(json!({ "name": name, "versions": versions, "aliases": aliases }));
    }
    Ok(out)
}

/// Each store of `jobs` with its models, or why it could not be read.
pub(super) async fn list(jobs: &[Job]) -> Value {
    let mut out = Vec::new();
    for (url, options) in stores(jobs) {
        let read = match Registry::open(&url, &options) {
            Ok(registry) => models(&registry).await,
            Err(e) => Err(e.to_string()),
        };
        out.push(match read {
            Ok(models) => json!({ "store": url, "models": models }),
            Err(error) => json!({ "store": url, "models": [], "error": error }),
        });
    }
    Value::Array(out)
}
