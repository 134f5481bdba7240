//! `kiln data push | list | show | pull`: dataset versions in the object store
//! (`kiln_versions::data`), found from `--store URL` or, without it, from the storage of the
//! configuration in the directory (`-C`, default `.`). No coordinator is involved.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use kiln_iac::spec::StorageSpec;
use kiln_versions::VersionRef;
use kiln_versions::data::{DataError, DataStore, DatasetVersion};

use super::error::CliError;

/// Where the data lives: `--store` or the configuration directory.
pub struct StoreArg<'a> {
    /// `--store URL` (a `file://` URL, or a plain path).
    pub url: Option<&'a str>,
    /// The configuration directory to take the storage from.
    pub dir: &'a Path,
}

impl StoreArg<'_> {
    /// The storage: `--store` (a plain or relative path made an absolute `file://` URL; an
    /// `s3://` one configured by the AWS_* environment alone), else the `storage` block of the
    /// configuration's clusters, whose URLs must agree.
    pub fn resolve(&self) -> Result<StorageSpec, CliError> {
        if let Some(url) = self.url {
            return Ok(StorageSpec {
                url: absolute_url(url),
                ..StorageSpec::default()
            });
        }
        let options = kiln_iac::LoadOptions {
            clusters_only: true,
            ..kiln_iac::LoadOptions::from_env()
        };
        let config = kiln_iac::load_dir_with(self.dir, &options).map_err(|e| {
            CliError::bad_input(anyhow!(
                "no --store given, and the configuration in {} to take the storage from does not load; pass --store URL\n\n{e}",
                self.dir.display()
            ))
        })?;
        let mut stores: Vec<(&String, &StorageSpec)> = config
            .clusters
            .iter()
            .map(|(name, c)| (name, &c.storage))
            .collect();
        stores.sort_by(|a, b| a.1.url.cmp(&b.1.url));
        stores.dedup_by(|a, b| a.1.url == b.1.url);
        match stores.as_slice() {
            [(_, storage)] => Ok((*storage).clone()),
            [] => Err(CliError::bad_input(anyhow!(
                "no --store given, and the configuration in {} declares no cluster; pass --store URL",
                self.dir.display()
            ))),
            several => Err(CliError::bad_input(anyhow!(
                "the clusters of {} use different stores ({}); pick one with --store",
                self.dir.display(),
                several
                    .iter()
                    .map(|(name, storage)| format!("{name}: {}", storage.url))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    fn open(&self) -> Result<DataStore, CliError> {
        let storage = self.resolve()?;
        DataStore::open(&storage.url, &storage.options()).map_err(cli_error)
    }
}

/// A URL for `--store`: `file://` with an absolute path for a plain or relative path.
fn absolute_url(url: &str) -> String {
    let path = match url.strip_prefix("file://") {
        Some(path) => path,
        None if url.contains("://") => return url.to_owned(),
        None => url,
    };
    let path = PathBuf::from(path);
    let absolute = if path.is_absolute() {
        path
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    format!("file://{}", absolute.display())
}

fn cli_error(e: DataError) -> CliError {
    if e.is_bad_input() {
        CliError::bad_input(e)
    } else {
        CliError::infra(e)
    }
}

fn parse_ref(text: &str) -> Result<VersionRef, CliError> {
    text.parse()
        .map_err(|e: String| CliError::bad_input(anyhow!(e)))
}

fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(CliError::infra)?;
    println!("{text}");
    Ok(())
}

/// `1.5 MiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `kiln data push PATH --name NAME`.
pub async fn push(
    store: &StoreArg<'_>,
    path: &Path,
    name: &str,
    label: Option<&str>,
    json: bool,
) -> Result<(), CliError> {
    let data = store.open()?;
    let pushed = data.push(path, name, label).await.map_err(cli_error)?;
    let v = &pushed.version;
    if json {
        return print_json(&serde_json::json!({
            "reference": v.reference(),
            "name": v.name,
            "version": v.version,
            "created": pushed.created,
            "content_hash": v.content_hash,
            "files": v.files.len(),
            "total_bytes": v.total_bytes,
            "uploaded_objects": pushed.uploaded_objects,
            "uploaded_bytes": pushed.uploaded_bytes,
            "seconds": pushed.seconds,
            "store": data.url(),
        }));
    }
    let what = format!("{} files, {}", v.files.len(), size(v.total_bytes));
    if pushed.created {
        println!(
            "{}: {what}; {} new objects uploaded ({}) in {:.2} s",
            v.reference(),
            pushed.uploaded_objects,
            size(pushed.uploaded_bytes),
            pushed.seconds
        );
    } else {
        println!(
            "{} already holds this content ({what}); no new version",
            v.reference()
        );
    }
    Ok(())
}

/// `kiln data list [NAME]`.
pub async fn list(store: &StoreArg<'_>, name: Option<&str>, json: bool) -> Result<(), CliError> {
    let data = store.open()?;
    if let Some(name) = name {
        kiln_versions::check_name(name).map_err(|e| CliError::bad_input(anyhow!(e)))?;
        let mut versions = Vec::new();
        for n in data.versions(name).await.map_err(cli_error)? {
            let reference = parse_ref(&format!("{name}@{n}"))?;
            versions.push(data.get(&reference).await.map_err(cli_error)?);
        }
        if json {
            return print_json(&versions);
        }
        if versions.is_empty() {
            println!("no versions of {name:?} in {}", data.url());
        }
        for v in &versions {
            println!(
                "{:<24} {:>6} files {:>10}  {:>8} samples  {}  {}",
                v.reference(),
                v.files.len(),
                size(v.total_bytes),
                v.description
                    .samples
                    .map_or_else(|| "-".to_owned(), |s| s.to_string()),
                v.description.format,
                v.created_by
            );
        }
        return Ok(());
    }
    let listed = data.list(None).await.map_err(cli_error)?;
    if json {
        return print_json(&listed);
    }
    if listed.is_empty() {
        println!("no datasets in {}", data.url());
    }
    for l in &listed {
        println!(
            "{:<24} {} versions, latest {}@{}",
            l.name,
            l.versions.len(),
            l.name,
            l.versions.last().copied().unwrap_or(0)
        );
    }
    Ok(())
}

/// `kiln data show NAME@VER`.
pub async fn show(store: &StoreArg<'_>, reference: &str, json: bool) -> Result<(), CliError> {
    let data = store.open()?;
    let v = data.get(&parse_ref(reference)?).await.map_err(cli_error)?;
    if json {
        return print_json(&v);
    }
    print_version(&v);
    Ok(())
}

fn print_version(v: &DatasetVersion) {
    let d = &v.description;
    println!("{}", v.reference());
    println!("  content   sha256:{}", v.content_hash);
    println!("  pushed    by {} from {}", v.created_by, v.source);
    println!("  files     {} ({})", v.files.len(), size(v.total_bytes));
    println!("  format    {}", d.format);
    if let Some(samples) = d.samples {
        println!("  samples   {samples}");
    }
    if let Some(label) = &d.label {
        println!("  label     {label}");
    }
    const SHOWN: usize = 20;
    for f in v.files.iter().take(SHOWN) {
        println!(
            "    {:<40} {:>10}  {}",
            f.path,
            size(f.size),
            &f.sha256[..12]
        );
    }
    if v.files.len() > SHOWN {
        println!(
            "    … and {} more (--json lists all)",
            v.files.len() - SHOWN
        );
    }
    if !d.features.is_empty() {
        println!(
            "  {:<20} {:>8} {:>12} {:>12} {:>12} {:>12}",
            "feature", "count", "mean", "std", "min", "max"
        );
        for f in d.features.iter().take(SHOWN) {
            println!(
                "  {:<20} {:>8} {:>12.4} {:>12.4} {:>12.4} {:>12.4}",
                f.name, f.count, f.mean, f.std, f.min, f.max
            );
        }
        if d.features.len() > SHOWN {
            println!(
                "  … and {} more features (--json lists all)",
                d.features.len() - SHOWN
            );
        }
    }
}

/// `kiln data pull NAME@VER DIR`.
pub async fn pull(
    store: &StoreArg<'_>,
    reference: &str,
    dir: &Path,
    json: bool,
) -> Result<(), CliError> {
    let data = store.open()?;
    let v = data.get(&parse_ref(reference)?).await.map_err(cli_error)?;
    let pulled = data.pull(&v, dir).await.map_err(cli_error)?;
    if json {
        return print_json(&serde_json::json!({
            "reference": v.reference(),
            "dir": dir.display().to_string(),
            "written": pulled.written,
            "unchanged": pulled.unchanged,
            "bytes": pulled.bytes,
        }));
    }
    println!(
        "{} → {}: {} files written ({}), {} already there",
        v.reference(),
        dir.display(),
        pulled.written,
        size(pulled.bytes),
        pulled.unchanged
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_arguments_become_absolute_file_urls() {
        assert_eq!(absolute_url("file:///srv/store"), "file:///srv/store");
        assert_eq!(absolute_url("/srv/store"), "file:///srv/store");
        let here = std::env::current_dir().expect("cwd");
        assert_eq!(
            absolute_url("file://rel/store"),
            format!("file://{}", here.join("rel/store").display())
        );
        assert_eq!(absolute_url("s3://bucket/x"), "s3://bucket/x");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
    }
}
