//! Background checkpoints: training goes on while a checkpoint uploads, every checkpoint is
//! reported only once committed and verifies against its manifest, retention keeps exactly
//! `keep`, a failed upload is skipped (the final one fails training), cancellation waits for
//! the upload in flight, and neither checkpointing nor resuming from a background snapshot
//! changes the final parameters by a bit.
//!
//! The store is gated rather than slow: the manifest (the commit) of checkpoint N is held until
//! training has reported progress at step N + `every`, so a loop that blocked on the upload
//! would never get there (the gate times out and the run fails).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use kiln_proto::v1::{
    BlobsSource, CheckpointSpec, DatasetSpec, JobSpec, Metrics, TrainingSpec, dataset_spec::Source,
};
use kiln_worker::checkpoint::CheckpointStore;
use kiln_worker::collective::ring::RingCollective;
use kiln_worker::model::{Registry, mlp};
use kiln_worker::optim;
use kiln_worker::spec::TrainSpec;
use kiln_worker::train::{CheckpointMode, Context, Observer, Outcome, Task, TrainError};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use tokio::sync::watch;

const EVERY: u64 = 5;
const STEPS: u64 = 30;
const KEEP: u32 = 2;
const JOB: &str = "async-ckpt";
/// How long the gate waits before failing the upload: only a loop that blocks reaches it.
const GATE_TIMEOUT: Duration = Duration::from_secs(60);

/// Every step is an epoch (36 training samples, batch 36), so rank 0 reports progress at every
/// step boundary, before it looks at its checkpoints.
fn spec(storage_url: &str) -> JobSpec {
    JobSpec {
        name: JOB.into(),
        model: Some(mlp::spec(8, &[16, 16], 3)),
        dataset: Some(DatasetSpec {
            name: "blobs".into(),
            source: Some(Source::Blobs(BlobsSource {
                samples: 40,
                seed: 5,
            })),
            features: 8,
            classes: 3,
            validation_split: 0.1,
            pins: Vec::new(),
            fingerprints: Vec::new(),
        }),
        training: Some(TrainingSpec {
            workers: 1,
            batch_size: 36,
            epochs: Some(1000),
            seed: 9,
            optimizer: Some(optim::adam(0.01)),
            max_steps: Some(STEPS),
            ..TrainingSpec::default()
        }),
        checkpoint: Some(CheckpointSpec {
            every_steps: EVERY as u32,
            keep: KEEP,
        }),
        storage_url: storage_url.to_owned(),
        ..JobSpec::default()
    }
}

/// A local store whose manifest writes wait until training has reached a later step, and
/// optionally fail for one checkpoint.
#[derive(Debug)]
struct GatedStore {
    inner: LocalFileSystem,
    /// The last step training reported; `u64::MAX` opens every gate.
    reached: watch::Receiver<u64>,
    /// The step whose manifest write fails.
    fail_step: Option<u64>,
}

impl fmt::Display for GatedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GatedStore({})", self.inner)
    }
}

impl GatedStore {
    async fn before_put(&self, location: &Path) -> object_store::Result<()> {
        if location.filename() != Some("manifest.json") {
            return Ok(());
        }
        let parts: Vec<_> = location.parts().collect();
        let step: u64 = parts[parts.len() - 2]
            .as_ref()
            .parse()
            .expect("checkpoint directories are steps");
        let fail = |message: String| object_store::Error::Generic {
            store: "gated",
            source: message.into(),
        };
        if self.fail_step == Some(step) {
            return Err(fail(format!("injected failure of checkpoint {step}")));
        }
        let target = (step + EVERY).min(STEPS);
        let mut reached = self.reached.clone();
        match tokio::time::timeout(GATE_TIMEOUT, reached.wait_for(|s| *s >= target)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(fail(format!(
                "training never reached step {target} while checkpoint {step} was uploading"
            ))),
        }
    }
}

// `ObjectStore` is an `async_trait`; these are its methods desugared by hand.
impl ObjectStore for GatedStore {
    fn put_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> BoxFuture<'c, object_store::Result<PutResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            self.before_put(location).await?;
            self.inner.put_opts(location, payload, opts).await
        })
    }

    fn put_multipart_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        opts: PutMultipartOptions,
    ) -> BoxFuture<'c, object_store::Result<Box<dyn MultipartUpload>>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.inner.put_multipart_opts(location, opts)
    }

    fn get_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        options: GetOptions,
    ) -> BoxFuture<'c, object_store::Result<GetResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.inner.get_opts(location, options)
    }

    fn delete<'a, 'b, 'c>(&'a self, location: &'b Path) -> BoxFuture<'c, object_store::Result<()>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.inner.delete(location)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_delimiter<'a, 'b, 'c>(
        &'a self,
        prefix: Option<&'b Path>,
    ) -> BoxFuture<'c, object_store::Result<ListResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.inner.list_with_delimiter(prefix)
    }

    fn copy<'a, 'b, 'c, 'd>(
        &'a self,
        from: &'b Path,
        to: &'c Path,
    ) -> BoxFuture<'d, object_store::Result<()>>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        self.inner.copy(from, to)
    }

    fn copy_if_not_exists<'a, 'b, 'c, 'd>(
        &'a self,
        from: &'b Path,
        to: &'c Path,
    ) -> BoxFuture<'d, object_store::Result<()>>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        self.inner.copy_if_not_exists(from, to)
    }
}

/// Records progress (opening the store's gates) and checkpoint reports, verifying each
/// reported checkpoint against its manifest at once.
struct Recorder {
    reached: watch::Sender<u64>,
    last_step: u64,
    /// (checkpoint step, last progress step when it was reported).
    reports: Vec<(u64, u64)>,
    verify: CheckpointStore,
    runtime: tokio::runtime::Handle,
    /// Set the cancel flag (and open the gates) at this progress step.
    cancel_at: Option<(u64, Arc<AtomicBool>)>,
    notes: Vec<String>,
}

impl Observer for Recorder {
    fn progress(&mut self, metrics: &Metrics) {
        self.last_step = metrics.step;
        match &self.cancel_at {
            Some((step, cancel)) if metrics.step >= *step => {
                cancel.store(true, Ordering::SeqCst);
                self.reached.send_replace(u64::MAX);
            }
            _ => {
                self.reached.send_replace(metrics.step);
            }
        }
    }

    fn checkpoint(&mut self, step: u64, manifest_url: &str, _: f64) {
        assert_eq!(manifest_url, self.verify.manifest_url(step));
        let objects = self
            .runtime
            .block_on(self.verify.load(step))
            .unwrap_or_else(|e| panic!("checkpoint {step} does not verify when reported: {e:?}"));
        assert_eq!(objects.len(), 3, "model, optimizer and state");
        self.reports.push((step, self.last_step));
    }

    fn note(&mut self, message: &str) {
        self.notes.push(message.to_owned());
    }
}

struct Run {
    result: Result<Outcome, TrainError>,
    reports: Vec<(u64, u64)>,
    last_step: u64,
    notes: Vec<String>,
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    url: String,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = url::Url::from_directory_path(dir.path())
            .expect("absolute path")
            .to_string();
        Self {
            runtime: tokio::runtime::Runtime::new().expect("runtime"),
            dir,
            url,
        }
    }

    /// The directories under the job's `checkpoints/`, committed or not.
    fn checkpoint_dirs(&self) -> Vec<String> {
        let dir = self.dir.path().join("jobs").join(JOB).join("checkpoints");
        std::fs::read_dir(dir)
            .expect("checkpoint directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn store(&self) -> CheckpointStore {
        CheckpointStore::open(&self.url, &Default::default(), JOB).expect("open store")
    }

    /// Trains with checkpoints through a [`GatedStore`] (`resume_step` from the plain one).
    fn train(&self, fail_step: Option<u64>, cancel_at: Option<u64>) -> Run {
        let (reached_tx, reached_rx) = watch::channel(0);
        let gated = CheckpointStore::with_object_store(
            Arc::new(GatedStore {
                inner: LocalFileSystem::new().with_automatic_cleanup(true),
                reached: reached_rx,
                fail_step,
            }),
            &self.url,
            JOB,
        )
        .expect("gated store");
        let cancel = Arc::new(AtomicBool::new(false));
        let mut recorder = Recorder {
            reached: reached_tx,
            last_step: 0,
            reports: Vec::new(),
            verify: self.store(),
            runtime: self.runtime.handle().clone(),
            cancel_at: cancel_at.map(|step| (step, cancel.clone())),
            notes: Vec::new(),
        };
        let result = self.run(&self.url, Some(&gated), None, &cancel, &mut recorder);
        Run {
            result,
            reports: recorder.reports,
            last_step: recorder.last_step,
            notes: recorder.notes,
        }
    }

    fn run(
        &self,
        storage_url: &str,
        store: Option<&CheckpointStore>,
        resume_step: Option<u64>,
        cancel: &AtomicBool,
        observer: &mut dyn Observer,
    ) -> Result<Outcome, TrainError> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let peers = [listener.local_addr().expect("addr")];
        let mut ring = RingCollective::connect(&listener, 0, &peers, 1, Duration::from_secs(5))
            .expect("one-rank ring");
        Registry::builtin().train(
            &Task {
                job_id: JOB.into(),
                spec: TrainSpec::try_from(&spec(storage_url)).expect("a valid spec"),
                resume_step,
            },
            Context {
                device: Default::default(),
                collective: &mut ring,
                device_reduce: None,
                store,
                runtime: self.runtime.handle(),
                cancel,
                leave: &AtomicBool::new(false),
                observer,
            },
            CheckpointMode::Background,
        )
    }

    /// Final parameters of an uninterrupted run without checkpoints.
    fn reference(&self) -> Vec<f32> {
        self.run("", None, None, &AtomicBool::new(false), &mut Quiet)
            .expect("training without checkpoints")
            .params
    }
}

struct Quiet;

impl Observer for Quiet {
    fn progress(&mut self, _: &Metrics) {}
    fn checkpoint(&mut self, _: u64, _: &str, _: f64) {}
    fn note(&mut self, _: &str) {}
}

#[test]
fn training_runs_ahead_of_uploads_and_ends_bit_identical() {
    let harness = Harness::new();
    let run = harness.train(None, None);
    let outcome = run.result.expect("training with background checkpoints");

    // Every checkpoint is reported once, in order, after training went on past it: the gate
    // held its manifest until progress at step + EVERY had been reported.
    let steps: Vec<u64> = run.reports.iter().map(|r| r.0).collect();
    assert_eq!(
        steps,
        (1..=STEPS / EVERY).map(|i| i * EVERY).collect::<Vec<_>>()
    );
    for &(step, reported_at) in &run.reports {
        assert!(
            reported_at >= (step + EVERY).min(STEPS),
            "checkpoint {step} reported at step {reported_at}"
        );
    }
    // Each checkpoint's commit waited for progress at the step where the next one is due, so
    // the loop normally finds it still in flight there and waits (it can only miss if the
    // upload finishes between two statements of the training thread, every time).
    let waits = outcome.metrics.checkpoint_waits;
    assert!(
        (1..=(STEPS / EVERY - 1) as u32).contains(&waits),
        "checkpoint waits: {waits}"
    );
    assert_eq!(outcome.checkpoint_stalls.len(), (STEPS / EVERY) as usize);

    // Retention kept exactly the newest KEEP, and they verify.
    let store = harness.store();
    let committed = harness
        .runtime
        .block_on(store.committed())
        .expect("list checkpoints");
    assert_eq!(committed, [STEPS - EVERY, STEPS]);
    for step in committed {
        harness
            .runtime
            .block_on(store.load(step))
            .unwrap_or_else(|e| panic!("checkpoint {step}: {e:?}"));
    }
    let dirs = harness.checkpoint_dirs().len();
    assert_eq!(
        dirs, KEEP as usize,
        "older checkpoints are deleted, not left partial"
    );

    // Checkpointing does not change training, and a background snapshot is exactly the state
    // after its step: resuming from it ends where the uninterrupted run ended.
    let reference = harness.reference();
    assert_eq!(
        outcome.params, reference,
        "checkpointed run vs no checkpoints"
    );
    let resumed = harness
        .run(
            &harness.url,
            Some(&store),
            Some(STEPS - EVERY),
            &AtomicBool::new(false),
            &mut Quiet,
        )
        .expect("resumed training");
    assert_eq!(
        resumed.params,
        reference,
        "resumed from step {}",
        STEPS - EVERY
    );
}

#[test]
fn a_failed_upload_is_skipped_and_the_next_checkpoint_commits() {
    let harness = Harness::new();
    let run = harness.train(Some(2 * EVERY), None);
    let outcome = run
        .result
        .expect("training goes on past a failed checkpoint");
    // Checkpoint 10 was never committed nor reported; every later one was.
    let steps: Vec<u64> = run.reports.iter().map(|r| r.0).collect();
    let mut expected: Vec<u64> = (1..=STEPS / EVERY).map(|i| i * EVERY).collect();
    expected.retain(|&s| s != 2 * EVERY);
    assert_eq!(steps, expected);
    assert!(
        run.notes.len() == 1
            && run.notes[0].contains("checkpoint 10 was not committed")
            && run.notes[0].contains("injected failure of checkpoint 10"),
        "{:?}",
        run.notes
    );
    // Nothing of the failed upload is visible: retention deleted its manifest-less directory
    // with the other old ones.
    let committed = harness
        .runtime
        .block_on(harness.store().committed())
        .expect("list checkpoints");
    assert_eq!(committed, [STEPS - EVERY, STEPS]);
    let dirs = harness.checkpoint_dirs();
    assert_eq!(dirs.len(), KEEP as usize, "{dirs:?}");
    assert_eq!(
        outcome.params,
        harness.reference(),
        "a skipped checkpoint changes nothing"
    );
}

#[test]
fn a_failed_final_checkpoint_fails_training() {
    let harness = Harness::new();
    let run = harness.train(Some(STEPS), None);
    let error = run
        .result
        .expect_err("training cannot end without its final checkpoint");
    let chain = kiln_proto::error_chain(&error);
    assert!(
        matches!(error, TrainError::Checkpoint(_))
            && chain.contains(&format!("injected failure of checkpoint {STEPS}")),
        "{chain}"
    );
    assert_eq!(run.last_step, STEPS, "every step was trained");
    let committed = harness
        .runtime
        .block_on(harness.store().committed())
        .expect("list checkpoints");
    assert_eq!(committed, [STEPS - 2 * EVERY, STEPS - EVERY]);
}

#[test]
fn cancelling_waits_for_the_checkpoint_in_flight() {
    let harness = Harness::new();
    // The cancel flag is set while step 10 is reported, just before checkpoint 10 starts: the
    // loop stops at the next boundary, with the upload still running.
    let run = harness.train(None, Some(2 * EVERY));
    assert!(
        matches!(run.result, Err(TrainError::Cancelled)),
        "{:?}",
        run.result.as_ref().err()
    );
    assert_eq!(
        run.reports.iter().map(|r| r.0).collect::<Vec<_>>(),
        [EVERY, 2 * EVERY],
        "the checkpoint in flight is committed and reported before train returns"
    );
    let committed = harness
        .runtime
        .block_on(harness.store().committed())
        .expect("list checkpoints");
    assert_eq!(committed, [EVERY, 2 * EVERY]);
}
