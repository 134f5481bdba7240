//! Checkpoints in object storage: `jobs/<job>/checkpoints/<step>/` holds the objects of one
//! snapshot and a [`CheckpointManifest`] written **last**. The manifest is the commit point: a
//! directory without one is a partial upload and is never read, and every object is checked
//! against the manifest's size and SHA-256 before it is used.
//!
//! [`CheckpointStore::save_in_background`] encodes and writes a snapshot on the runtime's
//! blocking pool while training goes on; what to snapshot and when belongs to `train`.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use kiln_proto::manifest::{CheckpointManifest, MANIFEST_NAME, ObjectEntry};
use kiln_proto::store::{JobStore, StoreError};
use kiln_proto::v1::StorageOptions;
use object_store::ObjectStore;
use object_store::path::Path;

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Opening the store, reading or verifying a checkpoint, or the job's claim failed.
    #[error(transparent)]
    Read(#[from] StoreError),
    /// The object store failed while writing.
    #[error("object store")]
    Store(#[from] object_store::Error),
    /// The manifest could not be encoded.
    #[error("manifest of step {step} could not be encoded")]
    Manifest {
        /// The checkpoint's step.
        step: u64,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The manifest does not list an object the reader needs.
    #[error("checkpoint {step} has no object {name:?}")]
    Missing {
        /// The checkpoint's step.
        step: u64,
        /// The object.
        name: String,
    },
    /// The snapshot could not be encoded into the checkpoint's objects.
    #[error("checkpoint {step} could not be encoded")]
    Encode {
        /// The checkpoint's step.
        step: u64,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The background task writing a checkpoint panicked, or the runtime shut down under it.
    #[error("the task writing checkpoint {step} failed")]
    Task {
        /// The checkpoint's step.
        step: u64,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl CheckpointError {
    /// The checkpoint itself is bad (corrupt, truncated, half-deleted), as opposed to the
    /// store being unreachable: an older checkpoint may still serve.
    pub fn is_unusable_checkpoint(&self) -> bool {
        match self {
            CheckpointError::Read(e) => e.is_unusable_checkpoint(),
            CheckpointError::Missing { .. } => true,
            _ => false,
        }
    }

    /// The store failed (unreachable, refused, timed out) rather than the snapshot or the
    /// code: a later checkpoint may well succeed.
    pub fn is_store_failure(&self) -> bool {
        match self {
            CheckpointError::Store(_) => true,
            CheckpointError::Read(e) => !e.is_unusable_checkpoint() && !e.is_bad_url(),
            _ => false,
        }
    }
}

/// The checkpoints of one job in one object store.
#[derive(Clone)]
pub struct CheckpointStore {
    job: JobStore,
}

impl CheckpointStore {
    /// Opens the checkpoints of `job_id` under the storage `url` (`file:///…`, `s3://…`),
    /// with the `storage` block's `options`.
    pub fn open(
        url: &str,
        options: &StorageOptions,
        job_id: &str,
    ) -> Result<Self, CheckpointError> {
        Ok(Self {
            job: JobStore::open(url, options, job_id)?,
        })
    }

    /// Opens the checkpoints of `job_id` in `store`, an object store for the bucket (or file
    /// system) of `url`: the URL's path is the prefix, as with [`CheckpointStore::open`]. For
    /// stores built in code, such as tests' wrappers.
    pub fn with_object_store(
        store: Arc<dyn ObjectStore>,
        url: &str,
        job_id: &str,
    ) -> Result<Self, CheckpointError> {
        Ok(Self {
            job: JobStore::with_object_store(store, url, job_id)?,
        })
    }

    /// The job's directory: its claim and the read side of its checkpoints.
    pub fn job(&self) -> &JobStore {
        &self.job
    }

    fn store(&self) -> &Arc<dyn ObjectStore> {
        self.job.object_store()
    }

    /// The URL of the manifest of `step`.
    pub fn manifest_url(&self, step: u64) -> String {
        self.job.manifest_url(step)
    }

    /// Writes `objects` as checkpoint `step`, then its manifest (the commit). Returns the
    /// manifest's URL.
    pub async fn save(
        &self,
        step: u64,
        objects: Vec<(&str, Vec<u8>)>,
    ) -> Result<String, CheckpointError> {
        let dir = self.job.checkpoint_dir(step);
        let mut entries = Vec::with_capacity(objects.len());
        for (name, bytes) in objects {
            entries.push(ObjectEntry::describe(name, &bytes));
            self.store().put(&dir.child(name), bytes.into()).await?;
        }
        let manifest = CheckpointManifest {
            version: CheckpointManifest::VERSION,
            job_id: self.job.job_id().to_owned(),
            step,
            objects: entries,
        };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|source| CheckpointError::Manifest { step, source })?;
        self.store()
            .put(&dir.child(MANIFEST_NAME), json.into())
            .await?;
        Ok(self.manifest_url(step))
    }

    /// Starts checkpoint `step` in the background: on the runtime's blocking pool, `encode`
    /// turns the snapshot into objects, which are [saved](Self::save) (the manifest last, the
    /// commit), then [retention](Self::retain) keeps the newest `keep`. The caller owns the
    /// returned handle and waits for it; the encoding and hashing never occupy the runtime's
    /// async workers.
    pub fn save_in_background<F>(
        &self,
        runtime: &tokio::runtime::Handle,
        step: u64,
        keep: usize,
        encode: F,
    ) -> InFlight
    where
        F: FnOnce() -> Result<Vec<(&'static str, Vec<u8>)>, CheckpointError> + Send + 'static,
    {
        let (store, io) = (self.clone(), runtime.clone());
        let task = runtime.spawn_blocking(move || {
            let start = std::time::Instant::now();
            let objects = encode()?;
            let encoded = start.elapsed();
            let bytes: usize = objects.iter().map(|(_, b)| b.len()).sum();
            io.block_on(async {
                let url = store.save(step, objects).await?;
                let saved = start.elapsed();
                let committed = Committed {
                    url,
                    seconds: saved.as_secs_f64(),
                };
                // The checkpoint is committed whatever retention does: a failed delete leaves
                // old checkpoints for the next retention, never an unreported commit.
                if let Err(e) = store.retain(keep).await {
                    tracing::warn!(step, error = %kiln_proto::error_chain(&e), "retention failed");
                }
                tracing::debug!(
                    step,
                    bytes,
                    encode_ms = encoded.as_secs_f64() * 1e3,
                    save_ms = (saved - encoded).as_secs_f64() * 1e3,
                    retain_ms = (start.elapsed() - saved).as_secs_f64() * 1e3,
                    "checkpoint committed"
                );
                Ok(committed)
            })
        });
        InFlight { step, task }
    }

    /// Reads checkpoint `step`, verifying every object against the manifest.
    pub async fn load(&self, step: u64) -> Result<BTreeMap<String, Vec<u8>>, CheckpointError> {
        Ok(self.job.load(step).await?)
    }

    /// Committed checkpoint steps, ascending.
    pub async fn committed(&self) -> Result<Vec<u64>, CheckpointError> {
        Ok(self.job.committed().await?)
    }

    /// Deletes every checkpoint older than the newest `keep` committed ones, partial uploads
    /// included. The manifest goes first, so an interrupted delete leaves an uncommitted
    /// directory, never a committed one with missing objects.
    pub async fn retain(&self, keep: usize) -> Result<(), CheckpointError> {
        let steps = self.job.steps().await?;
        let committed: Vec<u64> = steps
            .iter()
            .filter_map(|(step, committed)| committed.then_some(*step))
            .collect();
        let Some(&oldest_kept) = committed
            .iter()
            .rev()
            .nth(keep.max(1) - 1)
            .or(committed.first())
        else {
            return Ok(());
        };
        for step in steps.into_keys().filter(|s| *s < oldest_kept) {
            let dir = self.job.checkpoint_dir(step);
            let mut objects: Vec<Path> = self
                .store()
                .list(Some(&dir))
                .map_ok(|m| m.location)
                .try_collect()
                .await?;
            objects.sort_by_key(|p| p.filename() != Some(MANIFEST_NAME));
            for object in objects {
                self.store().delete(&object).await?;
            }
        }
        Ok(())
    }
}

/// A checkpoint being written by [`CheckpointStore::save_in_background`].
///
/// Dropping it does not stop the task, which runs to its end unobserved: whoever starts one
/// waits for it.
#[must_use = "a checkpoint in flight is committed only once its task is waited for"]
pub struct InFlight {
    step: u64,
    task: tokio::task::JoinHandle<Result<Committed, CheckpointError>>,
}

/// A checkpoint committed in the background.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// Its manifest's URL.
    pub url: String,
    /// How long the commit took, from the snapshot's encoding to the manifest written.
    pub seconds: f64,
}

impl InFlight {
    /// The checkpoint's step.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Whether the task has ended, so [`InFlight::wait`] returns at once.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Blocks the calling thread (which must not be one of `runtime`'s async workers) until
    /// the checkpoint is committed and retention ran.
    pub fn wait(self, runtime: &tokio::runtime::Handle) -> Result<Committed, CheckpointError> {
        let step = self.step;
        runtime
            .block_on(self.task)
            .map_err(|source| CheckpointError::Task { step, source })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &tempfile::TempDir) -> CheckpointStore {
        let url = url::Url::from_directory_path(dir.path()).expect("abs path");
        CheckpointStore::open(url.as_str(), &Default::default(), "job-1").expect("open")
    }

    #[tokio::test]
    async fn save_load_verify_and_retain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(&dir);
        for step in [10, 20, 30] {
            store
                .save(
                    step,
                    vec![("a.bin", vec![step as u8; 100]), ("b.json", b"{}".to_vec())],
                )
                .await
                .expect("save");
        }
        // A partial upload: objects but no manifest.
        let partial = dir.path().join("jobs/job-1/checkpoints/40");
        std::fs::create_dir_all(&partial).expect("mkdir");
        std::fs::write(partial.join("a.bin"), b"half").expect("write");
        assert_eq!(store.committed().await.expect("list"), vec![10, 20, 30]);

        let loaded = store.load(20).await.expect("load");
        assert_eq!(loaded["a.bin"], vec![20u8; 100]);

        // Flip one byte of step 30's object: load reports corruption.
        let obj = dir.path().join("jobs/job-1/checkpoints/30/a.bin");
        let mut bytes = std::fs::read(&obj).expect("read");
        bytes[7] ^= 0xff;
        std::fs::write(&obj, bytes).expect("write");
        let err = store.load(30).await.expect_err("corrupt");
        assert!(
            matches!(
                err,
                CheckpointError::Read(StoreError::Corrupt { step: 30, .. })
            ),
            "{err}"
        );

        store.retain(2).await.expect("retain");
        assert_eq!(store.committed().await.expect("list"), vec![20, 30]);
        assert!(
            !dir.path()
                .join("jobs/job-1/checkpoints/10")
                .join("a.bin")
                .exists()
        );
        // The partial upload is newer than the oldest kept one: it stays.
        assert!(partial.join("a.bin").exists());
    }
}
