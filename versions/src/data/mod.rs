//! Dataset versions: a file or a directory pushed into the object store becomes an
//! immutable, content-addressed version `NAME@N`.
//!
//! Layout under the storage URL:
//! - `data/objects/<h[..2]>/<h>`: every file's bytes, under their SHA-256 `h`, stored once
//!   whatever name or version refers to them;
//! - `data/datasets/<NAME>/versions/<N>.json`: version N's manifest (every file's path, size
//!   and hash, and what [`describe`] says of the data), created only if absent: two pushes
//!   that race for the same N cannot both win, and the loser takes N + 1;
//! - `data/datasets/<NAME>/content/<C>.json`: which version holds content `C` (the hash of
//!   the sorted path and hash list), so identical content pushed again makes no new version.
//!
//! A push lists the objects once, reads and hashes the files in parallel, and uploads only the
//! objects the store lacks. A pull verifies every object against its hash before it is
//! written, and writes each file whole (a temporary file renamed into place).

pub mod cache;
pub mod describe;

use std::collections::HashSet;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use cache::{Fetched, cache_dir, cached_path, fetch_blocking};
pub use describe::{Description, FeatureStats, Histogram};

use crate::{Selector, VersionRef, check_name};

/// Format version of the manifests this build writes.
pub const MANIFEST_VERSION: u32 = 1;

/// Why a data command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The storage URL cannot be opened.
    #[error(transparent)]
    Url(#[from] kiln_proto::store::StoreError),
    /// The object store failed.
    #[error("object store")]
    Store(#[from] object_store::Error),
    /// A local file could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Bad input: a name, a path, an argument.
    #[error("{0}")]
    Invalid(String),
    /// The data could not be described (a CSV that cannot be parsed, a missing label column).
    #[error("{0}")]
    Describe(String),
    /// No dataset of that name, or no such version.
    #[error("{0}")]
    NotFound(String),
    /// A stored record is not what this build can read.
    #[error("{what} is unreadable")]
    Record {
        /// Which record.
        what: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// An object's bytes do not hash to the name the manifest gives them.
    #[error("{path}: the stored object {expected} holds bytes whose SHA-256 is {actual}")]
    Corrupt {
        /// The file it stands for.
        path: String,
        /// The hash the manifest names.
        expected: String,
        /// The hash of what the store returned.
        actual: String,
    },
    /// Pulling would overwrite a different file.
    #[error("{0} exists and differs from the version's file; pull into an empty directory")]
    Exists(PathBuf),
}

impl DataError {
    /// Whether the user's input is at fault (rather than the store or the disk).
    pub fn is_bad_input(&self) -> bool {
        match self {
            DataError::Url(e) => e.is_bad_url(),
            DataError::Invalid(_)
            | DataError::Describe(_)
            | DataError::NotFound(_)
            | DataError::Exists(_) => true,
            _ => false,
        }
    }
}

/// One file of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path inside the dataset, `/`-separated (a pushed single file: its name).
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
}

/// `data/datasets/<NAME>/versions/<N>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetVersion {
    /// [`MANIFEST_VERSION`] when written.
    pub manifest_version: u32,
    /// The dataset's name.
    pub name: String,
    /// Its version number, from 1.
    pub version: u64,
    /// SHA-256 over the sorted `path NUL sha256 LF` lines: equal content, equal hash.
    pub content_hash: String,
    /// When it was pushed.
    pub created_unix_ms: u64,
    /// Who pushed it (`user@host`).
    pub created_by: String,
    /// The path it was pushed from, as given.
    pub source: String,
    /// Every file, by path.
    pub files: Vec<FileEntry>,
    /// Their sizes' sum.
    pub total_bytes: u64,
    /// What the data is.
    #[serde(flatten)]
    pub description: Description,
}

impl DatasetVersion {
    /// `NAME@N`.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// What [`DataStore::push`] did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The version that holds the content: new, or the one that already did.
    pub version: DatasetVersion,
    /// Whether this push created it.
    pub created: bool,
    /// Objects the store lacked and got.
    pub uploaded_objects: u64,
    /// Their bytes.
    pub uploaded_bytes: u64,
    /// Wall time of the push.
    pub seconds: f64,
}

/// What [`DataStore::pull`] did.
#[derive(Debug, Clone, Copy)]
pub struct Pulled {
    /// Files written.
    pub written: u64,
    /// Files already there with the right content.
    pub unchanged: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// A summary line of [`DataStore::list`].
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// The dataset's name.
    pub name: String,
    /// Its version numbers, ascending.
    pub versions: Vec<u64>,
}

/// The dataset versions of one storage URL.
pub struct DataStore {
    store: Arc<dyn ObjectStore>,
    /// `<url prefix>/data`.
    root: Path,
    url: String,
}

impl DataStore {
    /// Opens the data of the storage `url`.
    pub fn open(url: &str) -> Result<Self, DataError> {
        Ok(Self {
            store: kiln_proto::store::open_url(url)?,
            root: kiln_proto::store::url_prefix(url)?.child("data"),
            url: url.trim_end_matches('/').to_owned(),
        })
    }

    /// The storage URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn object(&self, sha256: &str) -> Path {
        self.root.child("objects").child(&sha256[..2]).child(sha256)
    }

    fn dataset(&self, name: &str) -> Path {
        self.root.child("datasets").child(name)
    }

    /// Pushes the file or directory `source` as a version of `name`, or finds the version
    /// that already holds its content. `label` names the CSV label column.
    pub async fn push(
        &self,
        source: &FsPath,
        name: &str,
        label: Option<&str>,
    ) -> Result<Pushed, DataError> {
        let started = Instant::now();
        check_name(name).map_err(DataError::Invalid)?;
        let (root, paths) = walk(source)?;
        let existing: HashSet<String> = self
            .store
            .list(Some(&self.root.child("objects")))
            .map_ok(|meta| meta.location.filename().unwrap_or_default().to_owned())
            .try_collect()
            .await?;
        let sent = Mutex::new(HashSet::new());
        let uploads = Mutex::new((0u64, 0u64));
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
        let mut files: Vec<FileEntry> = futures::stream::iter(paths.iter())
            .map(|rel| {
                let full = root.join(rel);
                let (existing, sent, uploads) = (&existing, &sent, &uploads);
                async move {
                    let (bytes, sha256) = read_and_hash(full).await?;
                    let fresh = !existing.contains(&sha256) && lock(sent).insert(sha256.clone());
                    if fresh {
                        self.put_object(&sha256, bytes.clone()).await?;
                        let mut totals = lock(uploads);
                        totals.0 += 1;
                        totals.1 += bytes.len() as u64;
                    }
                    Ok::<_, DataError>(FileEntry {
                        path: rel.clone(),
                        size: bytes.len() as u64,
                        sha256,
                    })
                }
            })
            .buffer_unordered(parallel)
            .try_collect()
            .await?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let content_hash = content_hash(&files);
        let (uploaded_objects, uploaded_bytes) = *lock(&uploads);
        let done = |version, created| Pushed {
            version,
            created,
            uploaded_objects,
            uploaded_bytes,
            seconds: started.elapsed().as_secs_f64(),
        };
        if let Some(version) = self.holding(name, &content_hash).await? {
            return Ok(done(version, false));
        }
        let description = {
            let (root, paths, label) = (root.clone(), paths.clone(), label.map(str::to_owned));
            tokio::task::spawn_blocking(move || describe::describe(&root, &paths, label.as_deref()))
                .await
                .map_err(|e| DataError::Describe(format!("describing the data failed: {e}")))??
        };
        let mut manifest = DatasetVersion {
            manifest_version: MANIFEST_VERSION,
            name: name.to_owned(),
            version: 0,
            content_hash: content_hash.clone(),
            created_unix_ms: now_ms(),
            created_by: who(),
            source: source.display().to_string(),
            total_bytes: files.iter().map(|f| f.size).sum(),
            files,
            description,
        };
        // A version number another push took first goes to the next one.
        loop {
            manifest.version = self.versions(name).await?.last().copied().unwrap_or(0) + 1;
            let body =
                serde_json::to_vec_pretty(&manifest).map_err(|source| DataError::Record {
                    what: manifest.reference(),
                    source,
                })?;
            let at = self.version_path(name, manifest.version);
            match self.create(&at, body.into()).await {
                Ok(()) => break,
                Err(DataError::Store(object_store::Error::AlreadyExists { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        let marker = serde_json::json!({ "version": manifest.version }).to_string();
        // Only an index: a lost race leaves the earlier version as the holder.
        match self
            .create(
                &self.content_path(name, &content_hash),
                marker.into_bytes().into(),
            )
            .await
        {
            Ok(()) | Err(DataError::Store(object_store::Error::AlreadyExists { .. })) => {}
            Err(e) => return Err(e),
        }
        Ok(done(manifest, true))
    }

    async fn put_object(&self, sha256: &str, bytes: Bytes) -> Result<(), DataError> {
        match self
            .create(&self.object(sha256), PutPayload::from_bytes(bytes))
            .await
        {
            // Another push stored the same bytes meanwhile.
            Ok(()) | Err(DataError::Store(object_store::Error::AlreadyExists { .. })) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn create(&self, at: &Path, payload: PutPayload) -> Result<(), DataError> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        self.store.put_opts(at, payload, options).await?;
        Ok(())
    }

    fn version_path(&self, name: &str, version: u64) -> Path {
        self.dataset(name)
            .child("versions")
            .child(format!("{version}.json"))
    }

    fn content_path(&self, name: &str, content_hash: &str) -> Path {
        self.dataset(name)
            .child("content")
            .child(format!("{content_hash}.json"))
    }

    /// The version of `name` that holds content `content_hash`, if one does.
    async fn holding(
        &self,
        name: &str,
        content_hash: &str,
    ) -> Result<Option<DatasetVersion>, DataError> {
        let marker = match self.store.get(&self.content_path(name, content_hash)).await {
            Ok(found) => found.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        #[derive(Deserialize)]
        struct Marker {
            version: u64,
        }
        let marker: Marker =
            serde_json::from_slice(&marker).map_err(|source| DataError::Record {
                what: format!("the content index of {name}"),
                source,
            })?;
        self.manifest(name, marker.version).await.map(Some)
    }

    /// The version numbers of `name`, ascending (empty when it has none).
    pub async fn versions(&self, name: &str) -> Result<Vec<u64>, DataError> {
        let mut out: Vec<u64> = self
            .store
            .list(Some(&self.dataset(name).child("versions")))
            .try_filter_map(|meta| async move {
                Ok(meta
                    .location
                    .filename()
                    .and_then(|f| f.strip_suffix(".json"))
                    .and_then(|n| n.parse::<u64>().ok()))
            })
            .try_collect()
            .await?;
        out.sort_unstable();
        Ok(out)
    }

    /// Every dataset (or just `name`) with its versions, by name.
    pub async fn list(&self, name: Option<&str>) -> Result<Vec<Listed>, DataError> {
        let names = match name {
            Some(name) => vec![name.to_owned()],
            None => {
                let listing = self
                    .store
                    .list_with_delimiter(Some(&self.root.child("datasets")))
                    .await?;
                let mut names: Vec<String> = listing
                    .common_prefixes
                    .iter()
                    .filter_map(|p| p.filename().map(str::to_owned))
                    .collect();
                names.sort();
                names
            }
        };
        let mut out = Vec::new();
        for name in names {
            let versions = self.versions(&name).await?;
            out.push(Listed { name, versions });
        }
        Ok(out)
    }

    /// The manifest `reference` names, or which names or versions there are.
    pub async fn get(&self, reference: &VersionRef) -> Result<DatasetVersion, DataError> {
        let versions = self.versions(&reference.name).await?;
        let Some(&latest) = versions.last() else {
            let known: Vec<String> = self.list(None).await?.into_iter().map(|l| l.name).collect();
            return Err(DataError::NotFound(format!(
                "no dataset {:?} in {}{}",
                reference.name,
                self.url,
                if known.is_empty() {
                    " (it holds none; `kiln data push` makes one)".to_owned()
                } else {
                    format!(" (datasets: {})", known.join(", "))
                }
            )));
        };
        let version = match reference.selector {
            Selector::Latest => latest,
            Selector::Number(n) if versions.contains(&n) => n,
            Selector::Number(n) => {
                return Err(DataError::NotFound(format!(
                    "dataset {:?} has no version {n}; versions: {}",
                    reference.name,
                    versions
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        };
        self.manifest(&reference.name, version).await
    }

    async fn manifest(&self, name: &str, version: u64) -> Result<DatasetVersion, DataError> {
        let body = self
            .store
            .get(&self.version_path(name, version))
            .await?
            .bytes()
            .await?;
        serde_json::from_slice(&body).map_err(|source| DataError::Record {
            what: format!("the manifest of {name}@{version}"),
            source,
        })
    }

    /// The bytes of `file`, verified against its hash.
    pub async fn read(&self, file: &FileEntry) -> Result<Bytes, DataError> {
        let bytes = self
            .store
            .get(&self.object(&file.sha256))
            .await?
            .bytes()
            .await?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != file.sha256 {
            return Err(DataError::Corrupt {
                path: file.path.clone(),
                expected: file.sha256.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Writes every file of `version` under `dir`, verified; a file already there with the
    /// same content is left alone, one that differs is an error (nothing is overwritten).
    pub async fn pull(&self, version: &DatasetVersion, dir: &FsPath) -> Result<Pulled, DataError> {
        let mut pulled = Pulled {
            written: 0,
            unchanged: 0,
            bytes: 0,
        };
        let io = |path: &FsPath| {
            let path = path.to_owned();
            move |source| DataError::Io { path, source }
        };
        for file in &version.files {
            let target = dir.join(&file.path);
            if let Ok(there) = std::fs::read(&target) {
                if hex::encode(Sha256::digest(&there)) == file.sha256 {
                    pulled.unchanged += 1;
                    continue;
                }
                return Err(DataError::Exists(target));
            }
            let bytes = self.read(file).await?;
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            let partial = target.with_extension("kiln-partial");
            std::fs::write(&partial, &bytes).map_err(io(&partial))?;
            std::fs::rename(&partial, &target).map_err(io(&target))?;
            pulled.written += 1;
            pulled.bytes += bytes.len() as u64;
        }
        Ok(pulled)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The folder the files of `source` are relative to, and their paths (`/`-separated,
/// sorted): `source` itself when it is a file, else every file below it.
fn walk(source: &FsPath) -> Result<(PathBuf, Vec<String>), DataError> {
    let io = |path: &FsPath| {
        let path = path.to_owned();
        move |source| DataError::Io { path, source }
    };
    let meta = std::fs::metadata(source).map_err(io(source))?;
    if meta.is_file() {
        let name = source
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| DataError::Invalid(format!("{}: not a file name", source.display())))?;
        let parent = source.parent().unwrap_or(FsPath::new("")).to_owned();
        return Ok((parent, vec![name.to_owned()]));
    }
    let mut out = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let dir = source.join(&rel);
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let path = rel.join(entry.file_name());
            let kind = std::fs::metadata(entry.path()).map_err(io(&entry.path()))?;
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                let text = path.to_str().ok_or_else(|| {
                    DataError::Invalid(format!("{}: not a UTF-8 file name", path.display()))
                })?;
                out.push(text.replace(std::path::MAIN_SEPARATOR, "/"));
            }
        }
    }
    if out.is_empty() {
        return Err(DataError::Invalid(format!(
            "{} holds no file to push",
            source.display()
        )));
    }
    out.sort();
    Ok((source.to_owned(), out))
}

async fn read_and_hash(path: PathBuf) -> Result<(Bytes, String), DataError> {
    tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&path).map_err(|source| DataError::Io {
            path: path.clone(),
            source,
        })?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Ok((Bytes::from(bytes), sha256))
    })
    .await
    .map_err(|e| DataError::Invalid(format!("reading a file failed: {e}")))?
}

/// SHA-256 over the sorted `path NUL sha256 LF` lines.
fn content_hash(files: &[FileEntry]) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.path.as_bytes());
        h.update([0]);
        h.update(f.sha256.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `user@host`, for the record of who pushed.
pub fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}
