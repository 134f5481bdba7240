//! `kiln models list | show | alias | rollback | history`: the model registry in the object
//! store (`kiln_versions::registry`), found like `kiln data` finds its store. No coordinator
//! is involved.

use anyhow::anyhow;
use kiln_versions::registry::{AliasMove, ModelRef, ModelVersion, Registry, RegistryError};

use super::data::StoreArg;
use super::error::CliError;

pub(super) fn cli_error(e: RegistryError) -> CliError {
    if e.is_bad_input() {
        CliError::bad_input(e)
    } else {
        CliError::infra(e)
    }
}

pub(super) fn open(store: &StoreArg<'_>) -> Result<Registry, CliError> {
    let storage = store.resolve()?;
    Registry::open(&storage.url, &storage.options()).map_err(cli_error)
}

pub(super) fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(CliError::infra)?;
    println!("{text}");
    Ok(())
}

/// `2026-12-02 18:03:24 UTC`.
fn when(unix_ms: u64) -> String {
    i64::try_from(unix_ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || format!("{unix_ms} ms"),
            |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

/// `kiln models list [NAME]`.
pub async fn list(store: &StoreArg<'_>, name: Option<&str>, json: bool) -> Result<(), CliError> {
    let registry = open(store)?;
    let names = match name {
        Some(name) => vec![name.to_owned()],
        None => registry.names().await.map_err(cli_error)?,
    };
    let mut rows = Vec::new();
    for name in names {
        let versions = registry.versions(&name).await.map_err(cli_error)?;
        let mut aliases = serde_json::Map::new();
        for alias in registry.aliases(&name).await.map_err(cli_error)? {
            if let Some(last) = registry
                .history(&name, &alias)
                .await
                .map_err(cli_error)?
                .last()
            {
                aliases.insert(alias, last.to.into());
            }
        }
        rows.push(serde_json::json!({
            "name": name,
            "versions": versions.len(),
            "latest": versions.last(),
            "aliases": aliases,
        }));
    }
    if json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        println!("no models in {}", registry.url());
    }
    for row in &rows {
        let aliases: Vec<String> = row["aliases"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(alias, v)| format!("{alias} → {v}"))
            .collect();
        println!(
            "{:<24} {} versions, latest {}{}",
            row["name"].as_str().unwrap_or_default(),
            row["versions"],
            row["latest"],
            if aliases.is_empty() {
                String::new()
            } else {
                format!("; {}", aliases.join(", "))
            }
        );
    }
    Ok(())
}

/// `kiln models show NAME@VER|NAME@ALIAS`.
pub async fn show(store: &StoreArg<'_>, reference: &str, json: bool) -> Result<(), CliError> {
    let registry = open(store)?;
    let reference = ModelRef::parse(reference).map_err(cli_error)?;
    let version = registry.resolve(&reference).await.map_err(cli_error)?;
    if json {
        return print_json(&version);
    }
    print_version(&version);
    Ok(())
}

fn print_version(v: &ModelVersion) {
    let (l, m) = (&v.lineage, &v.metrics);
    println!(
        "{}  (registered {})",
        v.reference(),
        when(v.created_unix_ms)
    );
    println!("  job           {}", l.job_id);
    println!("  spec          sha256:{}", l.spec_sha256);
    println!(
        "  trained by    kiln {}, worker binary {}",
        l.kiln_version,
        l.worker_binary_sha256
            .as_deref()
            .map_or_else(|| "(not reported)".to_owned(), |h| format!("sha256:{h}"))
    );
    println!(
        "  generations   {} ({} restarts)",
        l.generations, l.restarts
    );
    println!("  checkpoint    {}", l.checkpoint);
    for d in &l.data {
        println!(
            "  data          {} {} (sha256:{})",
            d.reference, d.path, d.sha256
        );
    }
    if let Some(source) = &l.data_source {
        println!("  data          {source}");
    }
    if let Some(acc) = m.val_accuracy {
        println!("  val accuracy  {acc:.4}");
    }
    if let Some(loss) = m.val_loss {
        println!("  val loss      {loss:.5}");
    }
    println!("  train loss    {:.5}", m.train_loss);
    println!(
        "  trained       {} steps, {} samples in {:.1} s",
        m.steps, m.samples_seen, m.wall_seconds
    );
}

/// `kiln models alias NAME ALIAS VERSION [--reason TEXT]`.
pub async fn alias(
    store: &StoreArg<'_>,
    name: &str,
    alias: &str,
    version: u64,
    reason: Option<&str>,
    json: bool,
) -> Result<(), CliError> {
    let registry = open(store)?;
    let reason = reason.unwrap_or("set by hand");
    let moved = registry
        .set_alias(name, alias, version, reason, &kiln_versions::data::who())
        .await
        .map_err(cli_error)?;
    print_move(name, &moved, json)
}

/// `kiln models rollback NAME ALIAS`.
pub async fn rollback(
    store: &StoreArg<'_>,
    name: &str,
    alias: &str,
    json: bool,
) -> Result<(), CliError> {
    let registry = open(store)?;
    let moved = registry
        .rollback(name, alias, &kiln_versions::data::who())
        .await
        .map_err(cli_error)?;
    print_move(name, &moved, json)
}

fn print_move(name: &str, moved: &AliasMove, json: bool) -> Result<(), CliError> {
    if json {
        return print_json(moved);
    }
    match moved.from {
        Some(from) => println!(
            "{name}@{} → version {} (was {from}; move {})",
            moved.alias, moved.to, moved.seq
        ),
        None => println!(
            "{name}@{} → version {} (first set; move {})",
            moved.alias, moved.to, moved.seq
        ),
    }
    Ok(())
}

/// `kiln models history NAME[@ALIAS]`.
pub async fn history(store: &StoreArg<'_>, target: &str, json: bool) -> Result<(), CliError> {
    let registry = open(store)?;
    let (name, only) = match target.split_once('@') {
        Some((name, alias)) => (name, Some(alias.to_owned())),
        None => (target, None),
    };
    kiln_versions::check_name(name).map_err(|e| CliError::bad_input(anyhow!(e)))?;
    let aliases = match only {
        Some(alias) => vec![alias],
        None => registry.aliases(name).await.map_err(cli_error)?,
    };
    let mut moves = Vec::new();
    for alias in &aliases {
        moves.extend(registry.history(name, alias).await.map_err(cli_error)?);
    }
    moves.sort_by_key(|m| (m.unix_ms, m.seq));
    if json {
        return print_json(&moves);
    }
    if moves.is_empty() {
        println!("no alias of {name} has moved yet");
    }
    for m in &moves {
        println!(
            "{}  {:<12} {:>5} → {:<5} {:<24} {}",
            when(m.unix_ms),
            m.alias,
            m.from.map_or_else(|| "-".to_owned(), |v| v.to_string()),
            m.to,
            m.who,
            m.reason
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_civil_utc() {
        assert_eq!(super::when(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::when(1_796_230_800_000), "2026-12-02 17:00:00 UTC");
        assert_eq!(super::when(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
