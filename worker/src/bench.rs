//! The worker sides of `kiln bench`: one rank of a [`RingCollective`] benchmark, run as
//! `kiln-worker bench-allreduce`, and the checkpoint benchmark, run as
//! `kiln-worker bench-checkpoint` ([`run_checkpoint_bench`]).
//!
//! The coordinator starts one process per rank and talks to each over its standard streams:
//! the process binds its ring listener, prints the address as one line on stdout, reads the
//! comma-separated addresses of all ranks (in rank order) as one line from stdin, and joins the
//! ring. For every size it runs a small all-reduce (so the ranks start together), the warm-up
//! iterations, and the timed ones; rank 0 then prints one JSON line per size on stdout
//! ([`SizeResult`]). Timings are rank 0's wall time around each call. Logs go to stderr.
//!
//! This module does not compute bandwidths, medians or print tables: the coordinator does.

use std::io::{BufRead, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use kiln_proto::bench::{CheckpointBenchResult, RunKind, RunResult, SizeResult};
use kiln_proto::v1::{
    BlobsSource, CheckpointSpec, DatasetSpec, JobSpec, Metrics, TrainingSpec, dataset_spec::Source,
};

use crate::checkpoint::CheckpointStore;
use crate::collective::Collective;
use crate::collective::ring::{RingCollective, RingOptions};
use crate::model::{Registry, mlp};
use crate::optim;
use crate::spec::TrainSpec;
use crate::train::{self, CheckpointMode, Observer, Task};

/// Arguments of `kiln-worker bench-allreduce`.
#[derive(clap::Args, Debug, Clone)]
pub struct AllreduceBenchArgs {
    /// This process's rank, in `0..world-size`.
    #[arg(long)]
    pub rank: usize,
    /// Number of ranks.
    #[arg(long)]
    pub world_size: usize,
    /// Buffer sizes to measure, in bytes (multiples of 4), comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub sizes: Vec<usize>,
    /// Timed iterations per size.
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Untimed iterations per size before the timed ones.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Address to bind the ring listener to.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub bind: SocketAddr,
    /// How long to wait for the other ranks to join the ring, in seconds.
    #[arg(long, default_value_t = 60)]
    pub connect_timeout_secs: u64,
    /// Reduce-scatter receive chunk, in bytes (default: the ring's default).
    #[arg(long)]
    pub chunk_bytes: Option<usize>,
    /// SO_SNDBUF/SO_RCVBUF for the ring sockets, in bytes (default: kernel autotuning).
    #[arg(long)]
    pub socket_buffer_bytes: Option<usize>,
    /// How long to retry the sockets before sleeping, in microseconds (default: the ring's).
    #[arg(long)]
    pub spin_us: Option<u64>,
}

/// Runs one rank of the all-reduce benchmark; see the [module documentation](self).
pub fn run_allreduce_rank(args: AllreduceBenchArgs) -> anyhow::Result<()> {
    ensure!(args.world_size >= 1, "--world-size must be at least 1");
    ensure!(
        args.rank < args.world_size,
        "--rank {} is not below --world-size {}",
        args.rank,
        args.world_size
    );
    ensure!(args.iters >= 1, "--iters must be at least 1");
    if let Some(bad) = args.sizes.iter().find(|&&size| !size.is_multiple_of(4)) {
        bail!("size {bad} is not a whole number of f32s (a multiple of 4 bytes)");
    }

    let listener = TcpListener::bind(args.bind)
        .with_context(|| format!("binding the ring listener on {}", args.bind))?;
    let addr = listener
        .local_addr()
        .context("reading the listener address")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{addr}").context("printing the listener address")?;
    stdout.flush().context("printing the listener address")?;

    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the peer list from stdin")?;
    let peers = line
        .trim()
        .split(',')
        .map(|peer| {
            peer.trim()
                .parse::<SocketAddr>()
                .with_context(|| format!("peer address {peer:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    ensure!(
        peers.len() == args.world_size,
        "got {} peer addresses for a world of {}",
        peers.len(),
        args.world_size
    );
    ensure!(
        peers[args.rank] == addr,
        "peer list has {} for rank {}, but this rank listens on {addr}",
        peers[args.rank],
        args.rank
    );

    let mut options = RingOptions::default().with_socket_buffer_bytes(args.socket_buffer_bytes);
    if let Some(chunk) = args.chunk_bytes {
        options = options.with_chunk_bytes(chunk);
    }
    if let Some(spin) = args.spin_us {
        options = options.with_spin(Duration::from_micros(spin));
    }
    // The session only has to tell this ring from strangers on the same ports, and every rank
    // must derive the same one: the peer list is what they share.
    let session = peers.iter().fold(args.world_size as u64, |acc, peer| {
        acc.rotate_left(17) ^ u64::from(peer.port())
    });
    let mut ring = RingCollective::connect_with_options(
        &listener,
        args.rank,
        &peers,
        session,
        Duration::from_secs(args.connect_timeout_secs),
        options,
    )
    .context("joining the benchmark ring")?;
    tracing::info!(rank = args.rank, world = args.world_size, "ring connected");

    for &size in &args.sizes {
        let times = measure(&mut ring, size / 4, args.warmup, args.iters)
            .with_context(|| format!("all-reduce of {size} bytes"))?;
        if args.rank == 0 {
            let result = SizeResult {
                size_bytes: size as u64,
                ranks: args.world_size,
                times_s: times,
            };
            let json = serde_json::to_string(&result).context("encoding a result")?;
            writeln!(stdout, "{json}").context("printing a result")?;
            stdout.flush().context("printing a result")?;
        }
    }
    Ok(())
}

/// Times `iters` all-reduces of `elems` floats after `warmup` untimed ones, and checks the
/// result: every rank starts with `rank + 1` everywhere, so every element ends as the mean of
/// `1..=world`.
fn measure(
    ring: &mut RingCollective,
    elems: usize,
    warmup: usize,
    iters: usize,
) -> anyhow::Result<Vec<f64>> {
    let world = ring.world_size();
    let mut buf = vec![(ring.rank() + 1) as f32; elems];
    // Opens the size with every rank present, so the first timed call does not also measure
    // the slowest rank's allocation.
    ring.all_reduce_mean(&mut [0.0])?;
    for _ in 0..warmup {
        ring.all_reduce_mean(&mut buf)?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        ring.all_reduce_mean(&mut buf)?;
        times.push(start.elapsed().as_secs_f64());
    }
    let expected = (world + 1) as f32 / 2.0;
    if let Some((i, x)) = buf
        .iter()
        .enumerate()
        .find(|(_, x)| (**x - expected).abs() > 1e-4 * expected)
    {
        bail!("wrong result: element {i} is {x}, expected {expected}");
    }
    Ok(times)
}

/// Arguments of `kiln-worker bench-checkpoint`.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckpointBenchArgs {
    /// Hidden layer widths of the MLP, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1024,1024")]
    pub hidden: Vec<u32>,
    /// Input features (of the model and of the synthetic blobs).
    #[arg(long, default_value_t = 64)]
    pub inputs: u32,
    /// Output classes.
    #[arg(long, default_value_t = 10)]
    pub classes: u32,
    /// Samples per step.
    #[arg(long, default_value_t = 64)]
    pub batch_size: u32,
    /// Optimizer steps per run.
    #[arg(long, default_value_t = 300)]
    pub steps: u64,
    /// Checkpoint every this many steps (and at the end) in the runs that checkpoint.
    #[arg(long, default_value_t = 100)]
    pub every: u32,
    /// Committed checkpoints retained.
    #[arg(long, default_value_t = 3)]
    pub keep: u32,
    /// Runs of each kind, interleaved.
    #[arg(long, default_value_t = 5)]
    pub repeats: u32,
    /// Directory of the `file://` store (default: a new one under the system's temporary
    /// directory, removed at the end).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// After an unmeasured warm-up run, trains the same model `repeats` times each without
/// checkpoints, with background ones and with blocking ones (one of each per round, rotating
/// the order), one rank on this thread, checkpoints to a local `file://` store written through
/// `runtime`, and prints a [`CheckpointBenchResult`] on stdout.
pub fn run_checkpoint_bench(
    args: CheckpointBenchArgs,
    registry: &Registry,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<()> {
    ensure!(args.steps >= 1, "--steps must be at least 1");
    ensure!(args.every >= 1, "--every must be at least 1");
    ensure!(args.repeats >= 1, "--repeats must be at least 1");
    ensure!(args.batch_size >= 1, "--batch-size must be at least 1");
    ensure!(
        args.inputs >= 1 && args.classes >= 1,
        "--inputs and --classes must be at least 1"
    );
    let dir = match &args.dir {
        Some(dir) => ScratchDir::keep(dir.clone()),
        None => ScratchDir::create()?,
    };
    let url = url::Url::from_directory_path(&dir.path)
        .map_err(|()| anyhow::anyhow!("{} is not an absolute path", dir.path.display()))?;
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a listener")?;
    let peers = [listener
        .local_addr()
        .context("reading the listener address")?];
    let mut ring = RingCollective::connect(&listener, 0, &peers, 0, Duration::from_secs(1))
        .context("a one-rank ring")?;

    let mut run_once =
        |kind: RunKind, job_id: &str, steps: u64| -> anyhow::Result<train::Outcome> {
            let store = CheckpointStore::open(url.as_str(), &Default::default(), job_id)
                .context("opening the checkpoint store")?;
            let mut spec = TrainSpec::try_from(&bench_spec(&args, url.as_str()))?;
            spec.max_steps = Some(steps);
            let task = Task {
                job_id: job_id.to_owned(),
                spec,
                resume_step: None,
            };
            let mode = match kind {
                RunKind::Sync => CheckpointMode::Blocking,
                RunKind::None | RunKind::Async => CheckpointMode::Background,
            };
            let outcome = registry
                .train(
                    &task,
                    train::Context {
                        device: Default::default(),
                        collective: &mut ring,
                        device_reduce: None,
                        store: (kind != RunKind::None).then_some(&store),
                        runtime,
                        cancel: &AtomicBool::new(false),
                        leave: &AtomicBool::new(false),
                        observer: &mut Silent,
                    },
                    mode,
                )
                .with_context(|| format!("training run {job_id}"))?;
            tracing::info!(
                job_id,
                samples_per_sec = outcome.metrics.samples_per_sec,
                "run done"
            );
            Ok(outcome)
        };

    // The first run of a process is slower (page faults, allocator, caches): not measured.
    let warmup = run_once(RunKind::None, "bench-warmup", args.steps.min(100))?;
    let params = warmup.params.len() as u64;
    let kinds = [RunKind::None, RunKind::Async, RunKind::Sync];
    let mut runs = Vec::new();
    for repeat in 0..args.repeats {
        for i in 0..kinds.len() {
            let kind = kinds[(i + repeat as usize) % kinds.len()];
            let job_id = format!("bench-{repeat}-{kind:?}").to_ascii_lowercase();
            let outcome = run_once(kind, &job_id, args.steps)?;
            runs.push(RunResult {
                kind,
                repeat,
                samples_per_sec: outcome.metrics.samples_per_sec,
                stalls_s: outcome
                    .checkpoint_stalls
                    .iter()
                    .map(Duration::as_secs_f64)
                    .collect(),
                checkpoint_waits: outcome.metrics.checkpoint_waits,
            });
        }
    }
    let checkpoint_bytes = dir_bytes(
        &dir.path
            .join("jobs/bench-0-async/checkpoints")
            .join(args.steps.to_string()),
    )?;
    let result = CheckpointBenchResult {
        params,
        checkpoint_bytes,
        steps: args.steps,
        every: args.every,
        batch_size: args.batch_size,
        runs,
    };
    let mut stdout = std::io::stdout().lock();
    let json = serde_json::to_string(&result).context("encoding the result")?;
    writeln!(stdout, "{json}")
        .and_then(|()| stdout.flush())
        .context("printing the result")?;
    Ok(())
}

fn bench_spec(args: &CheckpointBenchArgs, storage_url: &str) -> JobSpec {
    JobSpec {
        name: "bench-checkpoint".into(),
        model: Some(mlp::spec(args.inputs, &args.hidden, args.classes)),
        dataset: Some(DatasetSpec {
            name: "blobs".into(),
            // Ten steps of samples an epoch; no validation split, whose evaluation would only
            // add the same time to every run.
            source: Some(Source::Blobs(BlobsSource {
                samples: u64::from(args.batch_size) * 10,
                seed: 1,
            })),
            features: args.inputs,
            classes: args.classes,
            validation_split: 0.0,
            pins: Vec::new(),
            fingerprints: Vec::new(),
        }),
        training: Some(TrainingSpec {
            workers: 1,
            batch_size: args.batch_size,
            epochs: None,
            seed: 7,
            optimizer: Some(optim::adam(0.001)),
            max_steps: Some(args.steps),
            ..TrainingSpec::default()
        }),
        checkpoint: Some(CheckpointSpec {
            every_steps: args.every,
            keep: args.keep,
        }),
        storage_url: storage_url.to_owned(),
        ..JobSpec::default()
    }
}

/// Total size of the files directly in `dir`.
fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        total += entry
            .metadata()
            .with_context(|| format!("reading {}", entry.path().display()))?
            .len();
    }
    Ok(total)
}

/// The benchmark's store directory; one it created is removed when dropped.
struct ScratchDir {
    path: PathBuf,
    remove: bool,
}

impl ScratchDir {
    fn keep(path: PathBuf) -> Self {
        Self {
            path,
            remove: false,
        }
    }

    fn create() -> anyhow::Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "kiln-bench-checkpoint-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, remove: true })
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if self.remove
            && let Err(error) = std::fs::remove_dir_all(&self.path)
        {
            tracing::warn!(path = %self.path.display(), %error, "could not remove the store");
        }
    }
}

/// An observer that ignores everything.
pub(crate) struct Silent;

impl Observer for Silent {
    fn progress(&mut self, _: &Metrics) {}
    fn checkpoint(&mut self, _: u64, _: &str, _: f64) {}
    fn note(&mut self, _: &str) {}
}
