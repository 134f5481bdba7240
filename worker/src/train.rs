//! The data-parallel training loop of one rank.
//!
//! Each step every rank takes its slice of the global batch, runs forward/backward, flattens its
//! gradients into one buffer (with its share of the loss appended), all-reduces the buffer (mean)
//! and applies the same optimizer step. Because the per-rank loss is scaled by
//! `world / global_batch_len`, the mean over ranks is exactly the gradient of the mean loss over
//! the global batch, also for the short last batch of an epoch. So N ranks × batch b compute the
//! same update as 1 rank × batch N·b.
//!
//! Rank 0 checkpoints without stopping: at the step boundary it snapshots the model, the
//! optimizer and the position (clones of Burn's tensors, which are values: the next optimizer
//! step writes new buffers, it never mutates the ones a clone still holds), and a background task
//! encodes and uploads the snapshot while training goes on. At most one checkpoint is in flight;
//! it is reported to the [`Observer`] from this thread once committed, and waited for before
//! `train` returns, on errors too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use burn::module::{AutodiffModule, Module};
use burn::optim::GradientsParams;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder, RecorderError};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use kiln_proto::v1::Metrics;
use kiln_versions::data::FeatureStats;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{CheckpointError, CheckpointStore, InFlight};
use crate::collective::{Collective, CollectiveError, DeviceReduce};
use crate::data::{self, DataError, Samples};
use crate::model::Classifier;
use crate::model::params::{
    flatten_grads, flatten_grads_on_device, flatten_params, unflatten_grads,
    unflatten_grads_on_device,
};
use crate::optim::{Optim, Schedule, clip_global_norm};
use crate::spec::TrainSpec;

/// What one rank runs: a job spec and its place in the generation.
#[derive(Debug, Clone)]
pub struct Task {
    /// Job id (names the checkpoint directory).
    pub job_id: String,
    /// The job, decoded and checked.
    pub spec: TrainSpec,
    /// Checkpoint step to resume from, if any.
    pub resume_step: Option<u64>,
}

/// Receives what a rank reports while it trains. Only rank 0 reports.
pub trait Observer {
    /// Training progress, about twice a second and at the end of each epoch.
    fn progress(&mut self, metrics: &Metrics);
    /// A checkpoint was committed, in `commit_seconds` from its snapshot.
    fn checkpoint(&mut self, step: u64, manifest_url: &str, commit_seconds: f64);
    /// Something the user should hear about, such as a checkpoint skipped on resume.
    fn note(&mut self, message: &str);
}

/// How a rank's training ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Final metrics.
    pub metrics: Metrics,
    /// Final parameters, flattened in visit order.
    pub params: Vec<f32>,
    /// How long each checkpoint held training up (rank 0): taking the snapshot and waiting for
    /// the previous upload (the last one also waits for its own after the last step), or with
    /// [`CheckpointMode::Blocking`] the whole save.
    pub checkpoint_stalls: Vec<Duration>,
    /// Rank 0: per-feature statistics of the training split's inputs, the reference a
    /// registered version's live inputs are compared with (empty on other ranks).
    pub reference: Vec<FeatureStats>,
}

/// How rank 0 writes its checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckpointMode {
    /// Snapshot at the step boundary and upload in the background while training goes on.
    #[default]
    Background,
    /// Wait at the step boundary until the checkpoint is committed: the baseline that
    /// `kiln bench checkpoint` measures the background mode against.
    Blocking,
}

impl Outcome {
    /// SHA-256 of the final parameters as little-endian f32 in visit order: equal digests mean
    /// bit-identical models.
    pub fn params_digest(&self) -> String {
        let bytes: Vec<u8> = self.params.iter().flat_map(|p| p.to_le_bytes()).collect();
        kiln_proto::manifest::sha256_hex(&bytes)
    }
}

/// Why training stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// The job spec cannot be trained from.
    #[error("invalid job spec: {0}")]
    Spec(String),
    /// The dataset could not be loaded.
    #[error("dataset")]
    Data(#[from] DataError),
    /// The all-reduce failed (a peer died or the ring was aborted).
    #[error("all-reduce")]
    Collective(#[from] CollectiveError),
    /// A checkpoint could not be written or read.
    #[error("checkpoint")]
    Checkpoint(#[from] CheckpointError),
    /// A model or optimizer record could not be encoded or decoded.
    #[error("record")]
    Record(#[from] RecorderError),
    /// The checkpoint's training state is unreadable.
    #[error("checkpoint state")]
    State(#[from] serde_json::Error),
    /// The task was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The sample audit log could not be written.
    #[error("sample audit log")]
    Audit(#[source] std::io::Error),
    /// A worker of the generation was asked to leave: every rank stopped after `step`, once
    /// rank 0 had committed `checkpoint` there (`None` when the job keeps no checkpoints).
    #[error("stopped after step {step} for a departing worker")]
    Left {
        /// The last step taken.
        step: u64,
        /// The checkpoint committed at that step.
        checkpoint: Option<u64>,
    },
}

/// Training position and metrics stored with every checkpoint (`state.json`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Position {
    /// Optimizer steps completed.
    step: u64,
    /// Current epoch.
    epoch: u32,
    /// Samples of this epoch's order already consumed (global, over all ranks).
    offset: u64,
    /// Loss of the last step.
    loss: f64,
    /// Validation accuracy of the last finished epoch.
    val_accuracy: Option<f64>,
    /// Validation loss (mean cross-entropy) of the last finished epoch.
    #[serde(default)]
    val_loss: Option<f64>,
    /// Steps the learning-rate decay spans, fixed by the first generation.
    #[serde(default)]
    schedule_steps: Option<u64>,
    /// Training samples stepped on since the job began, over every rank and generation.
    #[serde(default)]
    samples_seen: u64,
}

pub(crate) const MODEL_OBJECT: &str = "model.bin";
const OPTIMIZER_OBJECT: &str = "optimizer.bin";
const STATE_OBJECT: &str = "state.json";
/// Validation runs in batches of this many samples to bound memory.
const EVAL_BATCH: usize = 1024;

type Rec = BinBytesRecorder<FullPrecisionSettings>;

/// Everything a rank needs besides the task itself.
pub struct Context<'a, B: AutodiffBackend> {
    /// Device the model lives on.
    pub device: B::Device,
    /// The all-reduce among the ranks of this generation.
    pub collective: &'a mut dyn Collective,
    /// Where set, gradients are all-reduced through this on the device instead of through
    /// `collective` on the host (which still carries the departure barrier).
    pub device_reduce: Option<&'a mut dyn DeviceReduce<B::InnerBackend>>,
    /// Checkpoint storage (read by every rank on resume, written by rank 0); `None` disables
    /// checkpoints.
    pub store: Option<&'a CheckpointStore>,
    /// Runtime for the object store's async I/O.
    pub runtime: &'a tokio::runtime::Handle,
    /// Set to stop at the next step boundary.
    pub cancel: &'a AtomicBool,
    /// Set when this worker is asked to leave (SIGTERM). Every rank votes through the
    /// all-reduce, so all of them stop at the same step boundary, after rank 0 has committed a
    /// checkpoint of that step.
    pub leave: &'a AtomicBool,
    /// Progress sink (used on rank 0).
    pub observer: &'a mut dyn Observer,
}

/// Trains `model` (freshly initialised from the job's seed) on `task` as one rank of
/// `ctx.collective` and returns the final metrics and parameters, writing checkpoints as
/// `mode` says. [`crate::model::Registry::train`] builds the model of the task's kind and
/// calls this.
pub fn train_with<B, M>(
    task: &Task,
    mut ctx: Context<'_, B>,
    mode: CheckpointMode,
    model: M,
) -> Result<Outcome, TrainError>
where
    B: AutodiffBackend,
    M: Classifier<B> + AutodiffModule<B> + 'static,
    M::InnerModule: Classifier<B::InnerBackend>,
{
    let mut checkpoints = Checkpoints {
        mode,
        in_flight: None,
        waits: 0,
        stalls: Vec::new(),
    };
    let result = run(task, &mut ctx, &mut checkpoints, model);
    if let Err(error) = &result {
        // The upload must not outlive the task, and what it commits is a checkpoint a restart
        // can resume from.
        if let Err(failed) = checkpoints.settle(ctx.runtime, &mut *ctx.observer, Failure::Fatal) {
            tracing::warn!(
                error = %kiln_proto::error_chain(error),
                checkpoint = %kiln_proto::error_chain(&failed),
                "the checkpoint in flight failed too"
            );
        }
    }
    result
}

/// Rank 0's checkpoints in flight (at most one) and what they cost the training loop.
struct Checkpoints {
    mode: CheckpointMode,
    in_flight: Option<InFlight>,
    /// Checkpoints that were due while the previous one was still uploading.
    waits: u32,
    stalls: Vec<Duration>,
}

impl Checkpoints {
    /// Reports the checkpoint in flight if its task has ended.
    fn poll(
        &mut self,
        runtime: &tokio::runtime::Handle,
        observer: &mut dyn Observer,
    ) -> Result<(), CheckpointError> {
        if self.in_flight.as_ref().is_some_and(InFlight::is_finished) {
            self.settle(runtime, observer, Failure::Skip)?;
        }
        Ok(())
    }

    /// Waits for the checkpoint in flight, if any, and reports it once committed. A store
    /// that failed under it fails training only where `failure` says so; otherwise the
    /// uncommitted checkpoint is skipped (a directory without a manifest, invisible to
    /// readers and deleted by a later retention) and the next one retries.
    fn settle(
        &mut self,
        runtime: &tokio::runtime::Handle,
        observer: &mut dyn Observer,
        failure: Failure,
    ) -> Result<(), CheckpointError> {
        let Some(in_flight) = self.in_flight.take() else {
            return Ok(());
        };
        let step = in_flight.step();
        match in_flight.wait(runtime) {
            Ok(committed) => {
                tracing::info!("checkpoint {step} committed in {:.3}s", committed.seconds);
                observer.checkpoint(step, &committed.url, committed.seconds);
            }
            Err(e) if failure == Failure::Skip && e.is_store_failure() => {
                let error = kiln_proto::error_chain(&e);
                tracing::warn!(step, %error, "checkpoint failed; the next one retries");
                observer.note(&format!(
                    "checkpoint {step} was not committed (the store failed: {error}); training goes on and the next checkpoint retries"
                ));
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// What a failed store means for the checkpoint being settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// A periodic checkpoint: skipped, training goes on.
    Skip,
    /// The final checkpoint or the one a departure waits for: training cannot end without it.
    Fatal,
}

fn run<B, M>(
    task: &Task,
    ctx: &mut Context<'_, B>,
    checkpoints: &mut Checkpoints,
    mut model: M,
) -> Result<Outcome, TrainError>
where
    B: AutodiffBackend,
    M: Classifier<B> + AutodiffModule<B> + 'static,
    M::InnerModule: Classifier<B::InnerBackend>,
{
    let spec = &task.spec;
    // Without a policy only the final checkpoint is written, so it is the one kept.
    let every = spec.checkpoint.map_or(0, |c| c.every_steps);
    let keep = spec.checkpoint.map_or(1, |c| c.keep);
    let (rank, world) = (ctx.collective.rank(), ctx.collective.world_size());
    let device = ctx.device.clone();

    let splits = data::load(&spec.dataset)?;
    let n = splits.train.len();
    if n == 0 {
        return Err(TrainError::Spec("the training split is empty".into()));
    }
    let global_batch = spec.batch_size * world;

    let mut optim = Optim::<B, M>::new(&spec.optimizer).map_err(TrainError::Spec)?;
    let schedule = Schedule::new(spec.optimizer.learning_rate, spec.lr_schedule.as_ref());
    let mut pos = Position {
        step: 0,
        epoch: 0,
        offset: 0,
        loss: 0.0,
        val_accuracy: None,
        val_loss: None,
        schedule_steps: None,
        samples_seen: 0,
    };
    if let (Some(wanted), Some(store)) = (task.resume_step, ctx.store) {
        let (step, objects) = ctx.runtime.block_on(load_usable(store, wanted))?;
        if step < wanted && rank == 0 {
            ctx.observer.note(&format!(
                "resuming from checkpoint {step}: the newer ones up to {wanted} are unusable (see the worker log)"
            ));
        } else if step > wanted && rank == 0 {
            ctx.observer.note(&format!(
                "resuming from checkpoint {step}: checkpoint {wanted} and the older ones are unusable or gone, and {step} was committed after it"
            ));
        }
        let get = |name: &str| {
            objects
                .get(name)
                .cloned()
                .ok_or_else(|| CheckpointError::Missing {
                    step,
                    name: name.to_owned(),
                })
        };
        model = model.load_record(Rec::default().load(get(MODEL_OBJECT)?, &device)?);
        optim = optim.load(get(OPTIMIZER_OBJECT)?, &device)?;
        pos = serde_json::from_slice(&get(STATE_OBJECT)?)?;
    }

    // From the position: a resumed generation may have another world size (elastic), so the
    // rest of this epoch and the later ones are counted in its own global batches.
    let steps_per_epoch = n.div_ceil(global_batch) as u64;
    // No epoch limit: as many as `max_steps` takes (the spec has one of the two).
    let epochs = spec.epochs.map_or(u64::MAX, u64::from);
    let epochs_left = epochs.saturating_sub(u64::from(pos.epoch));
    let remaining = match epochs_left {
        0 => 0,
        _ => (n as u64)
            .saturating_sub(pos.offset)
            .div_ceil(global_batch as u64)
            .saturating_add((epochs_left - 1).saturating_mul(steps_per_epoch)),
    };
    let mut total_steps = pos.step.saturating_add(remaining);
    if let Some(max_steps) = spec.max_steps {
        total_steps = total_steps.min(max_steps);
    }
    tracing::info!(
        "rank {rank} of {world}: {} training samples, steps {} to {total_steps}{}",
        n,
        pos.step + 1,
        match task.resume_step {
            Some(_) => format!(", resumed from the checkpoint of step {}", pos.step),
            None => String::new(),
        }
    );
    let mut audit = SampleAudit::open(&task.job_id, rank, task.resume_step)?;
    let horizon = *pos
        .schedule_steps
        .get_or_insert_with(|| schedule.horizon(total_steps));
    let mut order = data::epoch_order(spec.seed, pos.epoch, n);
    let mut buf = Vec::new();
    let mut window = (Instant::now(), 0u64);
    let (run_start, mut trained) = (Instant::now(), 0u64);
    let mut last_report = Instant::now();

    while pos.step < total_steps {
        if ctx.cancel.load(Ordering::Relaxed) {
            return Err(TrainError::Cancelled);
        }
        let start = pos.offset as usize;
        let batch = &order[start..(start + global_batch).min(n)];
        audit.record(pos.step + 1, pos.epoch, batch)?;
        let (lo, hi) = data::rank_range(batch.len(), rank, world);
        let scale = world as f32 / batch.len() as f32;

        let leave = ctx.leave.load(Ordering::Relaxed);
        let local = (lo < hi).then(|| {
            let (x, y) = splits.train.gather(&batch[lo..hi]);
            let loss =
                summed_loss(&model, x, &y, splits.train.features(), &device).mul_scalar(scale);
            let value = scalar(loss.clone());
            (GradientsParams::from_grads(loss.backward(), &model), value)
        });
        let (grads, leaving) = match local {
            // One rank has nothing to reduce: its gradients go to the optimizer as they are,
            // without the flat buffer's two copies (a few percent of a step).
            // (A device collective still runs, so NCCL is exercised at world size 1 too.)
            Some((grads, loss))
                if world == 1 && spec.clip_grad_norm.is_none() && ctx.device_reduce.is_none() =>
            {
                pos.loss = f64::from(loss);
                (grads, leave)
            }
            local => {
                let (grads, loss) = local.unwrap_or_else(|| (GradientsParams::new(), 0.0));
                if let Some(reduce) = ctx.device_reduce.as_deref_mut() {
                    let (grads, loss, leaving) = reduce_on_device(
                        &model,
                        grads,
                        loss,
                        leave,
                        spec.clip_grad_norm,
                        reduce,
                        &device,
                    )?;
                    pos.loss = loss;
                    (grads, leaving)
                } else {
                    buf.clear();
                    flatten_grads(&model, grads, &mut buf);
                    buf.push(loss);
                    buf.push(if leave { 1.0 } else { 0.0 });
                    ctx.collective.all_reduce_mean(&mut buf)?;
                    let leaving = buf.pop().unwrap_or_default() > 0.0;
                    pos.loss = f64::from(buf.pop().unwrap_or_default());
                    if let Some(max_norm) = spec.clip_grad_norm {
                        clip_global_norm(&mut buf, max_norm);
                    }
                    (unflatten_grads(&model, &buf, &device), leaving)
                }
            }
        };
        model = optim.step(schedule.rate(pos.step, horizon), model, grads);

        pos.step += 1;
        pos.offset += batch.len() as u64;
        pos.samples_seen += batch.len() as u64;
        window.1 += batch.len() as u64;
        trained += batch.len() as u64;
        let epoch_done = pos.offset as usize >= n;
        // The validation metrics are measured at each epoch's end and on the final model,
        // which is what the deploy gate judges.
        if (epoch_done || pos.step == total_steps) && rank == 0 && !splits.validation.is_empty() {
            let (accuracy, loss) = evaluate(&model.valid(), &splits.validation, &device);
            pos.val_accuracy = Some(accuracy);
            pos.val_loss = Some(loss);
        }
        if epoch_done && rank == 0 {
            let validation = pos
                .val_accuracy
                .zip(pos.val_loss)
                .map_or_else(String::new, |(a, l)| {
                    format!(", val accuracy {a:.4}, val loss {l:.5}")
                });
            tracing::info!(
                "epoch {} done at step {}: loss {:.5}{validation}",
                pos.epoch + 1,
                pos.step,
                pos.loss
            );
        }
        if epoch_done {
            pos.epoch += 1;
            pos.offset = 0;
            order = data::epoch_order(spec.seed, pos.epoch, n);
        }
        if rank == 0 && (epoch_done || last_report.elapsed().as_millis() >= 500) {
            ctx.observer.progress(&metrics(
                &pos,
                total_steps,
                window.1,
                window.0.elapsed().as_secs_f64(),
                checkpoints.waits,
            ));
            window = (Instant::now(), 0);
            last_report = Instant::now();
        }
        checkpoints.poll(ctx.runtime, &mut *ctx.observer)?;
        let due = every > 0 && pos.step.is_multiple_of(every);
        if let Some(store) = ctx
            .store
            .filter(|_| rank == 0 && (due || leaving || pos.step == total_steps))
        {
            let stall = Instant::now();
            if checkpoints.in_flight.is_some() {
                checkpoints.waits += 1;
                checkpoints.settle(ctx.runtime, &mut *ctx.observer, Failure::Skip)?;
            }
            // The snapshot: clones of the tensors after this step, encoded off this thread.
            let model_record = model.valid().into_record();
            let optim_record = optim.snapshot();
            let state = serde_json::to_vec(&pos)?;
            let step = pos.step;
            let encode_error = move |e: RecorderError| CheckpointError::Encode {
                step,
                source: Box::new(e),
            };
            let encode = move || {
                Ok(vec![
                    (
                        MODEL_OBJECT,
                        Rec::default()
                            .record(model_record, ())
                            .map_err(encode_error)?,
                    ),
                    (OPTIMIZER_OBJECT, optim_record().map_err(encode_error)?),
                    (STATE_OBJECT, state),
                ])
            };
            checkpoints.in_flight = Some(store.save_in_background(ctx.runtime, step, keep, encode));
            if checkpoints.mode == CheckpointMode::Blocking {
                let last = leaving || pos.step == total_steps;
                let failure = if last { Failure::Fatal } else { Failure::Skip };
                checkpoints.settle(ctx.runtime, &mut *ctx.observer, failure)?;
            }
            checkpoints.stalls.push(stall.elapsed());
        }
        if leaving {
            let checkpoint = match ctx.store {
                Some(_) => {
                    if rank == 0 {
                        checkpoints.settle(ctx.runtime, &mut *ctx.observer, Failure::Fatal)?;
                    }
                    // A barrier: no rank reports its end before the checkpoint is committed.
                    ctx.collective.all_reduce_mean(&mut [0.0])?;
                    Some(pos.step)
                }
                None => None,
            };
            return Err(TrainError::Left {
                step: pos.step,
                checkpoint,
            });
        }
    }
    // The rate is over the whole loop, not the last reporting window. The final checkpoint is
    // committed (and reported) before training ends: waiting for it is that checkpoint's stall.
    let loop_secs = run_start.elapsed().as_secs_f64();
    if checkpoints.in_flight.is_some() {
        let wait = Instant::now();
        checkpoints.settle(ctx.runtime, &mut *ctx.observer, Failure::Fatal)?;
        if let Some(last) = checkpoints.stalls.last_mut() {
            *last += wait.elapsed();
        }
    }
    let final_metrics = metrics(&pos, total_steps, trained, loop_secs, checkpoints.waits);
    if rank == 0 {
        ctx.observer.progress(&final_metrics);
    }
    let params = flatten_params(&model);
    tracing::info!(
        "finished at step {} in {loop_secs:.1}s ({:.0} samples/s)",
        pos.step,
        final_metrics.samples_per_sec
    );
    Ok(Outcome {
        metrics: final_metrics,
        params,
        checkpoint_stalls: std::mem::take(&mut checkpoints.stalls),
        reference: if rank == 0 {
            splits.train.reference()
        } else {
            Vec::new()
        },
    })
}

/// One step's all-reduce on the device: the gradients, this rank's share of the loss and its
/// departure vote in one flat tensor, reduced in place; the mean loss and whether any rank
/// leaves come back as two floats, the gradients stay where they are (clipped there too).
fn reduce_on_device<B: AutodiffBackend, M: Module<B>>(
    model: &M,
    grads: GradientsParams,
    loss: f32,
    leave: bool,
    clip_grad_norm: Option<f64>,
    reduce: &mut dyn DeviceReduce<B::InnerBackend>,
    device: &B::Device,
) -> Result<(GradientsParams, f64, bool), TrainError> {
    let vote = if leave { 1.0 } else { 0.0 };
    let flat = flatten_grads_on_device(model, grads, &[loss, vote], device);
    let n = flat.dims()[0] - 2;
    let flat = reduce.all_reduce_mean(flat)?;
    let tail: Vec<f32> = flat
        .clone()
        .slice(n..n + 2)
        .into_data()
        .iter::<f32>()
        .collect();
    let mut grads = flat.slice(0..n);
    if let Some(max_norm) = clip_grad_norm {
        // The norm in f32 on the device; every rank clips the same reduced values alike.
        let norm = f64::from(scalar(grads.clone().powi_scalar(2).sum().sqrt()));
        if norm > max_norm && norm > 0.0 {
            grads = grads.mul_scalar((max_norm / norm) as f32);
        }
    }
    Ok((
        unflatten_grads_on_device(model, &grads),
        f64::from(tail[0]),
        tail[1] > 0.0,
    ))
}

/// Where `KILN_SAMPLE_AUDIT_DIR` asks rank 0 to log every step's global batch (`step epoch
/// index...` lines, one file per generation): the record from which a test, or a user
/// auditing a run, can check that every sample of an epoch was trained on exactly once along
/// the committed trajectory, across failures and world-size changes.
struct SampleAudit(Option<std::io::BufWriter<std::fs::File>>);

impl SampleAudit {
    fn open(job_id: &str, rank: usize, resume_step: Option<u64>) -> Result<Self, TrainError> {
        let Some(dir) = std::env::var_os("KILN_SAMPLE_AUDIT_DIR").filter(|_| rank == 0) else {
            return Ok(Self(None));
        };
        let name = format!(
            "{job_id}.from-{}.{}.log",
            resume_step.unwrap_or(0),
            std::process::id()
        );
        let file = std::fs::File::create(std::path::Path::new(&dir).join(name))
            .map_err(TrainError::Audit)?;
        Ok(Self(Some(std::io::BufWriter::new(file))))
    }

    fn record(&mut self, step: u64, epoch: u32, batch: &[u32]) -> Result<(), TrainError> {
        use std::io::Write;
        let Some(out) = &mut self.0 else {
            return Ok(());
        };
        let indices: Vec<String> = batch.iter().map(u32::to_string).collect();
        writeln!(out, "{step} {epoch} {}", indices.join(" "))
            .and_then(|()| out.flush())
            .map_err(TrainError::Audit)
    }
}

/// The checkpoint to resume from: `wanted` if it loads and verifies, else the newest older
/// commit that does, else the newest newer one. Every rank reads the same store, so all of them
/// pick the same one.
async fn load_usable(
    store: &CheckpointStore,
    wanted: u64,
) -> Result<(u64, std::collections::BTreeMap<String, Vec<u8>>), CheckpointError> {
    // `wanted`, then older commits, newest first. Last, newer commits: the generation that
    // failed may have committed more (and retention may have deleted `wanted`) before it
    // stopped; every commit lies on the same trajectory, so resuming there is exact too.
    let committed = store.committed().await?;
    let mut candidates = vec![wanted];
    candidates.extend(committed.iter().rev().filter(|s| **s < wanted));
    candidates.extend(committed.iter().rev().filter(|s| **s > wanted));
    let mut last = None;
    for step in candidates {
        match store.load(step).await {
            Ok(objects) => return Ok((step, objects)),
            Err(e) if e.is_unusable_checkpoint() => {
                tracing::warn!(
                    step,
                    error = %kiln_proto::error_chain(&e),
                    "checkpoint unusable; trying another"
                );
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(CheckpointError::Missing {
        step: wanted,
        name: "manifest.json".to_owned(),
    }))
}

fn metrics(
    pos: &Position,
    total_steps: u64,
    samples: u64,
    secs: f64,
    checkpoint_waits: u32,
) -> Metrics {
    Metrics {
        epoch: pos.epoch,
        step: pos.step,
        total_steps,
        loss: pos.loss,
        val_accuracy: pos.val_accuracy,
        val_loss: pos.val_loss,
        samples_per_sec: if secs > 0.0 {
            samples as f64 / secs
        } else {
            0.0
        },
        checkpoint_waits,
        samples_seen: pos.samples_seen,
    }
}

fn inputs<B: Backend>(
    x: Vec<f32>,
    rows: usize,
    features: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(x, [rows, features]), device)
}

fn targets<B: Backend>(y: &[u32], device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(
        TensorData::new(y.iter().map(|&c| i64::from(c)).collect(), [y.len(), 1]),
        device,
    )
}

/// Sum (not mean) of the cross-entropy of each sample: the caller scales it.
fn summed_loss<B: Backend, M: Classifier<B>>(
    model: &M,
    x: Vec<f32>,
    y: &[u32],
    features: usize,
    device: &B::Device,
) -> Tensor<B, 1> {
    let logits = model.forward(inputs(x, y.len(), features, device));
    log_softmax(logits, 1)
        .gather(1, targets(y, device))
        .sum()
        .neg()
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f32 {
    t.into_data().iter::<f32>().next().unwrap_or(f32::NAN)
}

/// The fraction of `samples` whose arg-max logit is the label, and their mean cross-entropy.
fn evaluate<B: Backend, M: Classifier<B>>(
    model: &M,
    samples: &Samples,
    device: &B::Device,
) -> (f64, f64) {
    let (mut correct, mut loss) = (0usize, 0f64);
    let all: Vec<u32> = (0..samples.len() as u32).collect();
    for chunk in all.chunks(EVAL_BATCH) {
        let (x, y) = samples.gather(chunk);
        let logits = model.forward(inputs(x, y.len(), samples.features(), device));
        let summed = log_softmax(logits.clone(), 1)
            .gather(1, targets(&y, device))
            .sum()
            .neg();
        loss += f64::from(scalar(summed));
        let predicted = logits.argmax(1).into_data();
        correct += predicted
            .iter::<i64>()
            .zip(&y)
            .filter(|(p, t)| *p == i64::from(**t))
            .count();
    }
    let n = samples.len() as f64;
    (correct as f64 / n, loss / n)
}
