//! The object-store layout the control plane and the workers share: a storage URL opened as an
//! [`ObjectStore`] and a prefix, a job's directory `jobs/<id>/` with its **claim** (which
//! coordinator state owns that id in this store), and the read side of checkpoints
//! (`jobs/<id>/checkpoints/<step>/`, listed and loaded with every object verified against the
//! [manifest](crate::manifest)). Writing checkpoints and retention belong to the worker.
//!
//! Job ids are only unique within one coordinator's state, while a store may be shared by many
//! (two configuration directories with the same `storage.url`, a state that was wiped). The
//! claim makes them unique per store: `jobs/<id>/claim.json` is created with a conditional put
//! (create-if-absent), so of two coordinators that pick the same id exactly one gets it, and a
//! job directory that holds anything without a claim of ours is someone else's.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreScheme, PutMode, PutOptions};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::manifest::{CheckpointManifest, MANIFEST_NAME, ManifestError};
use crate::v1::StorageOptions;

/// Name of the claim object inside a job directory.
pub const CLAIM_NAME: &str = "claim.json";

/// Why the store could not be opened, read or claimed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The storage URL is not one object_store understands.
    #[error("invalid storage URL {url:?}")]
    Url {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The object store failed.
    #[error("object store")]
    Store(#[from] object_store::Error),
    /// A credentials file of the `storage` block could not be read.
    #[error("cannot read the {what} file {path}")]
    Credentials {
        /// Which credential.
        what: &'static str,
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A manifest or claim is not valid JSON for its format.
    #[error("{what} is unreadable")]
    Record {
        /// Which record.
        what: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// An object does not match the manifest.
    #[error("checkpoint {step} is corrupt")]
    Corrupt {
        /// The checkpoint's step.
        step: u64,
        /// Which object and how.
        #[source]
        source: ManifestError,
    },
    /// The job directory belongs to another job of the same id (another coordinator's state).
    #[error("{url} belongs to another job: {detail}")]
    NotOurs {
        /// The job directory.
        url: String,
        /// Whose it is.
        detail: String,
    },
}

impl StoreError {
    /// The checkpoint itself is bad (corrupt, truncated, half-deleted), as opposed to the
    /// store being unreachable: another checkpoint may still serve.
    pub fn is_unusable_checkpoint(&self) -> bool {
        matches!(
            self,
            StoreError::Corrupt { .. }
                | StoreError::Record { .. }
                | StoreError::Store(object_store::Error::NotFound { .. })
        )
    }

    /// The URL or the store's settings are wrong (bad input), as opposed to a store that
    /// failed.
    pub fn is_bad_url(&self) -> bool {
        matches!(
            self,
            StoreError::Url { .. } | StoreError::Credentials { .. }
        )
    }
}

/// `jobs/<id>/claim.json`: who owns a job id in this store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobClaim {
    /// Format version of this record.
    pub version: u32,
    /// The job id claimed.
    pub job_id: String,
    /// The claiming coordinator state's identity (stable across its restarts).
    pub owner: String,
    /// When the claim was made.
    pub claimed_unix_ms: u64,
}

/// What [`JobStore::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The id is ours: claimed now, or by this owner before.
    Ours,
    /// Someone else's: another owner's claim, or a directory with objects and no claim.
    Taken(String),
}

/// The URL schemes [`JobStore::open`] can open in this build: every worker of a job must
/// reach the same store, so a per-process `memory://` store is not one of them. `s3://` is
/// any S3-compatible server, configured by the usual `AWS_*` environment and the `storage`
/// block's [`StorageOptions`].
pub const SCHEMES: &[&str] = &["file", "s3"];

/// [`SCHEMES`] for messages: "`file://`".
pub fn scheme_list() -> String {
    SCHEMES
        .iter()
        .map(|s| format!("`{s}://`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The object store of the storage `url` (`file:///…`; a scheme of [`SCHEMES`]), with the
/// `storage` block's `options` for an `s3://` one (a `file://` store has none).
pub fn open_url(url: &str, options: &StorageOptions) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let parsed = Url::parse(url).map_err(|e| url_error(url, Box::new(e)))?;
    if !SCHEMES.contains(&parsed.scheme()) {
        let why = format!("this build opens only {} storage", scheme_list());
        return Err(url_error(url, why.into()));
    }
    Ok(if parsed.scheme() == "file" {
        // Retention deletes whole checkpoints: let the local store drop emptied directories.
        Arc::new(LocalFileSystem::new().with_automatic_cleanup(true))
    } else if parsed.scheme() == "s3" {
        let store = s3_builder(options)?
            .with_url(url)
            .build()
            .map_err(|e| url_error(url, Box::new(e)))?;
        Arc::new(store)
    } else {
        let (store, _) =
            object_store::parse_url(&parsed).map_err(|e| url_error(url, Box::new(e)))?;
        Arc::from(store)
    })
}

/// Credentials, region and endpoint from AWS_*, overridden by what the `storage` block sets
/// (never from the URL, which is printed and kept in state). Create-only puts are
/// If-None-Match: * (the builder's default).
fn s3_builder(options: &StorageOptions) -> Result<AmazonS3Builder, StoreError> {
    let mut builder = AmazonS3Builder::from_env();
    if !options.endpoint.is_empty() {
        builder = builder
            .with_endpoint(&options.endpoint)
            .with_allow_http(options.endpoint.starts_with("http://"));
    }
    if !options.region.is_empty() {
        builder = builder.with_region(&options.region);
    }
    let read = |what, path: &str| {
        std::fs::read_to_string(path)
            .map(|secret| secret.trim().to_owned())
            .map_err(|source| StoreError::Credentials {
                what,
                path: path.to_owned(),
                source,
            })
    };
    if !options.access_key_id_file.is_empty() {
        builder = builder.with_access_key_id(read("access key id", &options.access_key_id_file)?);
    }
    if !options.secret_access_key_file.is_empty() {
        builder = builder
            .with_secret_access_key(read("secret access key", &options.secret_access_key_file)?);
    }
    Ok(builder)
}

/// The prefix inside its object store that the storage `url` names: its path, as
/// `object_store::parse_url` derives it (file URLs percent-decoded).
pub fn url_prefix(url: &str) -> Result<Path, StoreError> {
    let parsed = Url::parse(url).map_err(|e| url_error(url, Box::new(e)))?;
    if parsed.scheme() == "file" {
        Path::from_url_path(parsed.path()).map_err(|e| url_error(url, Box::new(e)))
    } else {
        ObjectStoreScheme::parse(&parsed)
            .and_then(|(_, path)| Ok(Path::parse(path)?))
            .map_err(|e| url_error(url, Box::new(e)))
    }
}

/// One job's directory in one object store.
#[derive(Clone)]
pub struct JobStore {
    store: Arc<dyn ObjectStore>,
    /// `<url path>/jobs/<job>`.
    root: Path,
    /// The same location as a URL, for messages.
    root_url: String,
    job_id: String,
}

impl JobStore {
    /// Opens the directory of `job_id` under the storage `url` (`file:///…`, `s3://…`).
    pub fn open(url: &str, options: &StorageOptions, job_id: &str) -> Result<Self, StoreError> {
        Self::with_object_store(open_url(url, options)?, url, job_id)
    }

    /// Opens the directory of `job_id` in `store`, an object store for the bucket (or file
    /// system) of `url`: the URL's path is the prefix, as with [`JobStore::open`]. For stores
    /// built in code, such as tests' wrappers.
    pub fn with_object_store(
        store: Arc<dyn ObjectStore>,
        url: &str,
        job_id: &str,
    ) -> Result<Self, StoreError> {
        let base = url_prefix(url)?;
        Ok(Self {
            store,
            root: base.child("jobs").child(job_id),
            root_url: format!("{}/jobs/{job_id}", url.trim_end_matches('/')),
            job_id: job_id.to_owned(),
        })
    }

    /// The job id.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The underlying object store.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// `jobs/<job>/checkpoints`.
    pub fn checkpoints_root(&self) -> Path {
        self.root.child("checkpoints")
    }

    /// `jobs/<job>/checkpoints/<step>`.
    pub fn checkpoint_dir(&self, step: u64) -> Path {
        self.checkpoints_root().child(step.to_string())
    }

    /// The URL of the manifest of `step`.
    pub fn manifest_url(&self, step: u64) -> String {
        format!("{}/checkpoints/{step}/{MANIFEST_NAME}", self.root_url)
    }

    /// Claims the job id for `owner` with a create-if-absent put. An id already claimed by
    /// `owner` is ours again (a coordinator that restarted between claiming and recording);
    /// any other claim, or a directory that holds objects without a claim, is
    /// [`Claim::Taken`] and left untouched.
    pub async fn claim(&self, owner: &str) -> Result<Claim, StoreError> {
        let path = self.root.child(CLAIM_NAME);
        if let Some(found) = self.read_claim().await? {
            return Ok(self.judge(&found, owner));
        }
        let mut listing = self.store.list(Some(&self.root));
        if let Some(object) = listing.try_next().await? {
            if object.location.filename() == Some(CLAIM_NAME) {
                // Claimed between our read and the listing.
                return Ok(match self.read_claim().await? {
                    Some(found) => self.judge(&found, owner),
                    None => Claim::Taken("claimed concurrently".to_owned()),
                });
            }
            return Ok(Claim::Taken(format!(
                "it holds {} and no claim (written by an older kiln, or by hand)",
                object.location
            )));
        }
        let claim = JobClaim {
            version: 1,
            job_id: self.job_id.clone(),
            owner: owner.to_owned(),
            claimed_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        let bytes = serde_json::to_vec_pretty(&claim).map_err(|source| StoreError::Record {
            what: format!("the claim of {}", self.job_id),
            source,
        })?;
        let create = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self.store.put_opts(&path, bytes.into(), create).await {
            Ok(_) => Ok(Claim::Ours),
            // Another coordinator created it between our look and our put.
            Err(object_store::Error::AlreadyExists { .. }) => match self.read_claim().await? {
                Some(found) => Ok(self.judge(&found, owner)),
                None => Ok(Claim::Taken("claimed concurrently".to_owned())),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Fails unless the job id is claimed by `owner`: a writer's check before it writes into
    /// the directory.
    pub async fn check_claim(&self, owner: &str) -> Result<(), StoreError> {
        let detail = match self.read_claim().await? {
            Some(found) => match self.judge(&found, owner) {
                Claim::Ours => return Ok(()),
                Claim::Taken(detail) => detail,
            },
            None => "it has no claim for this job".to_owned(),
        };
        Err(StoreError::NotOurs {
            url: self.root_url.clone(),
            detail,
        })
    }

    fn judge(&self, found: &JobClaim, owner: &str) -> Claim {
        if found.owner == owner && found.job_id == self.job_id {
            Claim::Ours
        } else {
            Claim::Taken(format!(
                "claimed by another coordinator state ({}) at unix ms {}",
                found.owner, found.claimed_unix_ms
            ))
        }
    }

    async fn read_claim(&self) -> Result<Option<JobClaim>, StoreError> {
        let bytes = match self.store.get(&self.root.child(CLAIM_NAME)).await {
            Ok(got) => got.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Record {
                what: format!("{}/{CLAIM_NAME}", self.root_url),
                source,
            })
    }

    /// Steps that have a checkpoint directory, ascending, each with whether it is committed
    /// (has a manifest).
    pub async fn steps(&self) -> Result<BTreeMap<u64, bool>, StoreError> {
        let root = self.checkpoints_root();
        let mut steps = BTreeMap::new();
        let mut listing = self.store.list(Some(&root));
        while let Some(meta) = listing.try_next().await? {
            let mut parts = meta.location.prefix_match(&root).into_iter().flatten();
            let (Some(dir), Some(file)) = (parts.next(), parts.next()) else {
                continue;
            };
            if let Ok(step) = dir.as_ref().parse::<u64>() {
                let committed = steps.entry(step).or_insert(false);
                *committed |= file.as_ref() == MANIFEST_NAME;
            }
        }
        Ok(steps)
    }

    /// Committed checkpoint steps, ascending.
    pub async fn committed(&self) -> Result<Vec<u64>, StoreError> {
        Ok(self
            .steps()
            .await?
            .into_iter()
            .filter_map(|(step, committed)| committed.then_some(step))
            .collect())
    }

    /// Reads checkpoint `step`, verifying every object against the manifest.
    pub async fn load(&self, step: u64) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
        let dir = self.checkpoint_dir(step);
        let manifest = self
            .store
            .get(&dir.child(MANIFEST_NAME))
            .await?
            .bytes()
            .await?;
        let manifest: CheckpointManifest =
            serde_json::from_slice(&manifest).map_err(|source| StoreError::Record {
                what: format!("the manifest of checkpoint {step}"),
                source,
            })?;
        let mut out = BTreeMap::new();
        for entry in &manifest.objects {
            let bytes = self
                .store
                .get(&dir.child(entry.name.as_str()))
                .await?
                .bytes()
                .await?;
            entry
                .verify(&bytes)
                .map_err(|source| StoreError::Corrupt { step, source })?;
            out.insert(entry.name.clone(), bytes.to_vec());
        }
        Ok(out)
    }
}

fn url_error(url: &str, source: Box<dyn std::error::Error + Send + Sync>) -> StoreError {
    StoreError::Url {
        url: url.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(dir: &tempfile::TempDir, id: &str) -> JobStore {
        let url = Url::from_directory_path(dir.path()).expect("abs path");
        JobStore::open(url.as_str(), &StorageOptions::default(), id).expect("open")
    }

    #[tokio::test]
    async fn a_claim_is_exclusive_and_a_foreign_directory_is_taken() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = job(&dir, "q-1");
        assert_eq!(a.claim("state-a").await.expect("claim"), Claim::Ours);
        // The same owner again (a restart between claiming and recording) keeps it.
        assert_eq!(a.claim("state-a").await.expect("claim"), Claim::Ours);
        assert!(matches!(
            a.claim("state-b").await.expect("claim"),
            Claim::Taken(_)
        ));
        a.check_claim("state-a").await.expect("ours");
        let err = a.check_claim("state-b").await.expect_err("not ours");
        assert!(matches!(err, StoreError::NotOurs { .. }), "{err}");

        // A job directory from before claims existed is never taken over.
        let old = dir.path().join("jobs/q-2/checkpoints/10");
        std::fs::create_dir_all(&old).expect("mkdir");
        std::fs::write(old.join(MANIFEST_NAME), b"{}").expect("write");
        assert!(matches!(
            job(&dir, "q-2").claim("state-a").await.expect("claim"),
            Claim::Taken(_)
        ));
    }

    #[tokio::test]
    async fn concurrent_claims_have_one_winner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let claims = futures::future::join_all((0..8).map(|i| {
            let store = job(&dir, "race-1");
            async move { store.claim(&format!("state-{i}")).await.expect("claim") }
        }))
        .await;
        let winners = claims.iter().filter(|c| **c == Claim::Ours).count();
        assert_eq!(winners, 1, "{claims:?}");
    }
}
