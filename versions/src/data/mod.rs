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
pub mod fingerprint;

use std::collections::HashSet;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use kiln_proto::v1::StorageOptions;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use cache::{Fetched, cache_dir, cached_path, fetch_blocking};
pub use describe::{Description, FeatureStats, Histogram};
pub use fingerprint::fingerprint;

use crate::layout::now_ms;
use crate::{Selector, VersionRef, check_name};
use fingerprint::CHUNK;

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
    /// For a `file://` store, the folder of `data/objects` on this machine: small files are
    /// written there directly, from the threads that hash them.
    local_objects: Option<PathBuf>,
}

impl DataStore {
    /// Opens the data of the storage `url` (with the `storage` block's `options`).
    pub fn open(url: &str, options: &StorageOptions) -> Result<Self, DataError> {
        let root = kiln_proto::store::url_prefix(url)?.child("data");
        let local_objects = url
            .starts_with("file://")
            .then(|| PathBuf::from(format!("/{root}/objects")));
        Ok(Self {
            store: kiln_proto::store::open_url(url, options)?,
            root,
            url: url.trim_end_matches('/').to_owned(),
            local_objects,
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
        let (root, listed) = walk(source)?;
        let paths: Vec<String> = listed.iter().map(|(path, _)| path.clone()).collect();
        let existing: HashSet<String> = self
            .store
            .list(Some(&self.root.child("objects")))
            .map_ok(|meta| meta.location.filename().unwrap_or_default().to_owned())
            .try_collect()
            .await?;
        let existing = Arc::new(existing);
        let sent = Arc::new(Mutex::new(HashSet::new()));
        let uploads = Arc::new(Mutex::new((0u64, 0u64)));
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
        // Into a local store, small files go the short way: read, hashed and written by the
        // same thread, without a hop through the async runtime per file.
        let (local, rest): (Vec<_>, Vec<_>) = listed
            .iter()
            .cloned()
            .partition(|(_, size)| self.local_objects.is_some() && *size <= WHOLE_FILE_LIMIT);
        let mut files = match self.local_objects.clone() {
            Some(objects) if !local.is_empty() => {
                let (root, existing, sent, uploads) = (
                    root.clone(),
                    existing.clone(),
                    sent.clone(),
                    uploads.clone(),
                );
                tokio::task::spawn_blocking(move || {
                    let pool = Pool {
                        existing: &existing,
                        sent: &sent,
                        uploads: &uploads,
                    };
                    push_local(&root, &objects, &local, parallel, &pool)
                })
                .await
                .map_err(|e| DataError::Invalid(format!("pushing the files failed: {e}")))??
            }
            _ => Vec::new(),
        };
        let (existing, sent, uploads) = (&*existing, &*sent, &*uploads);
        let more: Vec<FileEntry> = futures::stream::iter(rest.iter())
            .map(|(rel, size)| {
                let (full, size) = (root.join(rel), *size);
                async move {
                    let fresh = |sha256: &String| {
                        !existing.contains(sha256) && lock(sent).insert(sha256.clone())
                    };
                    // A small file is read once, hashed and sent from memory; a large one is
                    // streamed twice (hashed, then sent only if missing), never held whole.
                    let sha256 = if size <= WHOLE_FILE_LIMIT {
                        let (bytes, sha256) = read_and_hash(full.clone()).await?;
                        if fresh(&sha256) {
                            self.put_object(&sha256, bytes).await?;
                            count(uploads, size);
                        }
                        sha256
                    } else {
                        let sha256 = hash_file(full.clone()).await?;
                        if fresh(&sha256) {
                            self.upload_large(&full, &sha256).await?;
                            count(uploads, size);
                        }
                        sha256
                    };
                    Ok::<_, DataError>(FileEntry {
                        path: rel.clone(),
                        size,
                        sha256,
                    })
                }
            })
            .buffer_unordered(parallel)
            .try_collect()
            .await?;
        files.extend(more);
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let content_hash = content_hash(&files);
        let (uploaded_objects, uploaded_bytes) = *lock(uploads);
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
            if crate::layout::create(&*self.store, &at, body.into()).await? {
                break;
            }
        }
        let marker = serde_json::json!({ "version": manifest.version }).to_string();
        // Only an index: a lost race leaves the earlier version as the holder.
        crate::layout::create(
            &*self.store,
            &self.content_path(name, &content_hash),
            marker.into_bytes().into(),
        )
        .await?;
        Ok(done(manifest, true))
    }

    /// Streams the file at `path`, whose SHA-256 is `sha256`, into its object: written under
    /// a staging name while it is hashed again, and moved into place only if the bytes sent
    /// are the bytes hashed (the file may change meanwhile).
    async fn upload_large(&self, path: &FsPath, sha256: &str) -> Result<(), DataError> {
        use tokio::io::AsyncReadExt;
        let io = |source| DataError::Io {
            path: path.to_owned(),
            source,
        };
        let staging = self.root.child("staging").child(format!(
            "{sha256}.{}.{}",
            std::process::id(),
            now_ms()
        ));
        let upload = self.store.put_multipart(&staging).await?;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, CHUNK);
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = file.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            writer.wait_for_capacity(2).await?;
            writer.write(&buf[..n]);
        }
        writer.finish().await?;
        let sent = hex::encode(hasher.finalize());
        if sent != sha256 {
            let _ = self.store.delete(&staging).await;
            return Err(DataError::Invalid(format!(
                "{} changed while it was pushed; push it again",
                path.display()
            )));
        }
        match self
            .store
            .rename_if_not_exists(&staging, &self.object(sha256))
            .await
        {
            Ok(()) => Ok(()),
            // Another push stored the same bytes meanwhile.
            Err(object_store::Error::AlreadyExists { .. }) => {
                self.store.delete(&staging).await?;
                Ok(())
            }
            // S3 has no copy-if-absent; the name is the content's hash, so a plain rename
            // that overwrites a concurrent push's object writes the same bytes.
            Err(object_store::Error::NotImplemented) => {
                Ok(self.store.rename(&staging, &self.object(sha256)).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn put_object(&self, sha256: &str, bytes: Bytes) -> Result<(), DataError> {
        // A plain put: the name is the content's hash, so a concurrent push of the same bytes
        // writes the same object, and replacing it changes nothing (a local store renames
        // instead of linking and unlinking).
        self.store
            .put(&self.object(sha256), PutPayload::from_bytes(bytes))
            .await?;
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
        Ok(crate::layout::numbered(&*self.store, &self.dataset(name).child("versions")).await?)
    }

    /// Every dataset (or just `name`) with its versions, by name.
    pub async fn list(&self, name: Option<&str>) -> Result<Vec<Listed>, DataError> {
        let names = match name {
            Some(name) => vec![name.to_owned()],
            None => crate::layout::children(&*self.store, &self.root.child("datasets")).await?,
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
/// sorted) with their sizes: `source` itself when it is a file, else every file below it.
fn walk(source: &FsPath) -> Result<(PathBuf, Vec<(String, u64)>), DataError> {
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
        return Ok((parent, vec![(name.to_owned(), meta.len())]));
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
                out.push((text.replace(std::path::MAIN_SEPARATOR, "/"), kind.len()));
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

/// What the threads of a push share: the objects the store had, those sent since, and the
/// count of what was uploaded.
struct Pool<'a> {
    existing: &'a HashSet<String>,
    sent: &'a Mutex<HashSet<String>>,
    uploads: &'a Mutex<(u64, u64)>,
}

impl Pool<'_> {
    /// Whether `sha256` still has to be stored (and, if so, that this caller stores it).
    fn claim(&self, sha256: &str) -> bool {
        !self.existing.contains(sha256) && lock(self.sent).insert(sha256.to_owned())
    }
}

/// Reads, hashes and stores `files` (paths under `root`, with sizes) into the local objects
/// folder `objects`, on `threads` threads.
fn push_local(
    root: &FsPath,
    objects: &FsPath,
    files: &[(String, u64)],
    threads: usize,
    pool: &Pool<'_>,
) -> Result<Vec<FileEntry>, DataError> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = Mutex::new(Vec::with_capacity(files.len()));
    let work = || -> Result<(), DataError> {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some((rel, _)) = files.get(i) else {
                return Ok(());
            };
            let path = root.join(rel);
            let bytes = std::fs::read(&path).map_err(|source| DataError::Io {
                path: path.clone(),
                source,
            })?;
            let sha256 = hex::encode(Sha256::digest(&bytes));
            if pool.claim(&sha256) {
                write_object(objects, &sha256, &bytes, i)?;
                count(pool.uploads, bytes.len() as u64);
            }
            lock(&done).push(FileEntry {
                path: rel.clone(),
                size: bytes.len() as u64,
                sha256,
            });
        }
    };
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.clamp(1, files.len().max(1)))
            .map(|_| s.spawn(work))
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err(DataError::Invalid("a push thread panicked".into())))
        })
    })?;
    Ok(done
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// Writes object `sha256` into the local objects folder: a temporary file renamed into place
/// (replacing an object of the same name replaces it with the same bytes).
fn write_object(objects: &FsPath, sha256: &str, bytes: &[u8], n: usize) -> Result<(), DataError> {
    let dir = objects.join(&sha256[..2]);
    let partial = dir.join(format!(".partial-{}-{n}", std::process::id()));
    let io = |path: &FsPath| {
        let path = path.to_owned();
        move |source| DataError::Io { path, source }
    };
    if let Err(e) = std::fs::write(&partial, bytes) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(io(&partial)(e));
        }
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        std::fs::write(&partial, bytes).map_err(io(&partial))?;
    }
    std::fs::rename(&partial, dir.join(sha256)).map_err(io(&dir))
}

/// Files up to this size are read whole; larger ones are streamed in [`CHUNK`]s.
const WHOLE_FILE_LIMIT: u64 = 16 << 20;

fn count(uploads: &Mutex<(u64, u64)>, bytes: u64) {
    let mut totals = lock(uploads);
    totals.0 += 1;
    totals.1 += bytes;
}

/// SHA-256 of the file at `path`, read in [`CHUNK`]s.
async fn hash_file(path: PathBuf) -> Result<String, DataError> {
    tokio::task::spawn_blocking(move || fingerprint::hash_path(&path).map(|(_, sha256)| sha256))
        .await
        .map_err(|e| DataError::Invalid(format!("hashing a file failed: {e}")))?
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
