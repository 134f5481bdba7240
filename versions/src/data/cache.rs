//! The local copies of version files that jobs read: `<cache>/<sha256>/<file name>`, written
//! only after the bytes were verified against their hash (a temporary file renamed into
//! place), so a file found there is whole. The file name is kept because loaders tell
//! formats apart by it (`.csv`, `-ubyte`, `.npy`).

use std::path::{Path as FsPath, PathBuf};

use super::{DataError, DataStore, DatasetVersion, FileEntry};
use crate::VersionRef;
use kiln_proto::v1::StorageOptions;

/// Where the cache is: `KILN_DATA_CACHE`, else `$XDG_CACHE_HOME/kiln/data`, else
/// `$HOME/.cache/kiln/data`, else `kiln-data` in the temporary directory.
pub fn cache_dir() -> PathBuf {
    let env = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("KILN_DATA_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("kiln/data")))
        .or_else(|| env("HOME").map(|d| d.join(".cache/kiln/data")))
        .unwrap_or_else(|| std::env::temp_dir().join("kiln-data"))
}

/// Where `file` lives in the cache `cache`.
pub fn cached_path(cache: &FsPath, file: &FileEntry) -> PathBuf {
    let name = file.path.rsplit('/').next().unwrap_or(&file.path);
    cache.join(&file.sha256).join(name)
}

impl DataStore {
    /// A verified local copy of `file` in `cache`: the one there (of the right size), or
    /// fetched from the store and verified now.
    pub async fn cached(&self, file: &FileEntry, cache: &FsPath) -> Result<PathBuf, DataError> {
        let target = cached_path(cache, file);
        if std::fs::metadata(&target).is_ok_and(|m| m.len() == file.size) {
            return Ok(target);
        }
        let bytes = self.read(file).await?;
        let io = |path: &FsPath| {
            let path = path.to_owned();
            move |source| DataError::Io { path, source }
        };
        let dir = target.parent().unwrap_or(cache);
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let partial = dir.join(format!(".partial-{}", std::process::id()));
        std::fs::write(&partial, &bytes).map_err(io(&partial))?;
        std::fs::rename(&partial, &target).map_err(io(&target))?;
        Ok(target)
    }
}

/// A file of a version, fetched into the cache.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The version it belongs to.
    pub version: DatasetVersion,
    /// The file.
    pub file: FileEntry,
    /// Its local copy.
    pub local: PathBuf,
}

/// Fetches the file `path` of the version `reference` names (or its only file) from the
/// store at `url` (with the `storage` block's `options`) into the cache, on a thread of its
/// own: callable from synchronous code, also inside an async runtime (the configuration loader).
pub fn fetch_blocking(
    url: &str,
    options: &StorageOptions,
    reference: &VersionRef,
    path: Option<&str>,
) -> Result<Fetched, DataError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| DataError::Io {
                    path: PathBuf::from("(async runtime)"),
                    source,
                })?;
            runtime.block_on(async {
                let store = DataStore::open(url, options)?;
                let version = store.get(reference).await?;
                let file = pick(&version, path)?.clone();
                let local = store.cached(&file, &cache_dir()).await?;
                Ok(Fetched {
                    version,
                    file,
                    local,
                })
            })
        })
        .join()
        .unwrap_or_else(|_| Err(DataError::Invalid("fetching the data panicked".into())))
    })
}

/// The file `path` of `version`, or its only file.
fn pick<'a>(version: &'a DatasetVersion, path: Option<&str>) -> Result<&'a FileEntry, DataError> {
    let listed = || {
        version
            .files
            .iter()
            .take(10)
            .map(|f| f.path.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (path, version.files.as_slice()) {
        (None, [only]) => Ok(only),
        (None, files) => Err(DataError::Invalid(format!(
            "{} has {} files; name one: `kiln://{}/PATH` (files: {}{})",
            version.reference(),
            files.len(),
            version.reference(),
            listed(),
            if files.len() > 10 { ", …" } else { "" }
        ))),
        (Some(path), files) => files.iter().find(|f| f.path == path).ok_or_else(|| {
            DataError::NotFound(format!(
                "{} has no file {path:?} (files: {}{})",
                version.reference(),
                listed(),
                if files.len() > 10 { ", …" } else { "" }
            ))
        }),
    }
}
