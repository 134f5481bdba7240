//! Tests that need an NVIDIA GPU: the `cuda` feature and `KILN_GPU_TESTS=1`
//! (`scripts/gpu-check` runs them). Without the switch the binary runs nothing and says so;
//! it never reports a test as passed that did not run.
//!
//! They check the device path piece by piece: the probe, NCCL's library, the all-reduce of a
//! tensor's own device memory (at an offset inside CubeCL's pool, over several buckets,
//! writing nothing around it), a join that a missing rank would hang and an abort ends,
//! training with NCCL at world size 1 ending bit-identical to training on the same GPU without
//! a collective, and checkpoints that move between the GPU and the CPU.

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use burn::tensor::{Tensor, TensorData};
use kiln_proto::v1::{
    BlobsSource, CheckpointSpec, DatasetSpec, JobSpec, Metrics, TrainingSpec, dataset_spec::Source,
};
use kiln_worker::checkpoint::CheckpointStore;
use kiln_worker::collective::nccl::{self, NcclReduce};
use kiln_worker::collective::ring::RingCollective;
use kiln_worker::collective::{CollectiveError, DeviceReduce};
use kiln_worker::gpu::{self, GpuInner};
use kiln_worker::model::{Registry, mlp};
use kiln_worker::optim;
use kiln_worker::spec::TrainSpec;
use kiln_worker::train::{CheckpointMode, Context, Observer, Task};

type Outcome = Result<(), String>;

/// A test: its name and its body.
type Test = (&'static str, fn() -> Outcome);

fn main() -> ExitCode {
    if std::env::var("KILN_GPU_TESTS").as_deref() != Ok("1") {
        println!("GPU tests: none run (set KILN_GPU_TESTS=1 on a machine with an NVIDIA GPU)");
        return ExitCode::SUCCESS;
    }
    // SAFETY: no other thread exists yet.
    #[allow(unsafe_code)]
    unsafe {
        nccl::set_non_blocking();
    }
    let tests: [Test; 5] = [
        ("the driver lists a GPU", probe),
        (
            "nccl averages a tensor's device memory in place, bucket by bucket",
            reduce_in_place,
        ),
        (
            "an abort ends a join that waits for a rank that never comes",
            abort_ends_a_join,
        ),
        (
            "training with nccl at world size 1 matches training without a collective",
            train_with_nccl,
        ),
        (
            "checkpoints written on the GPU resume on the CPU and the other way round",
            checkpoints_cross_backends,
        ),
    ];
    let mut failed = 0;
    for (name, test) in tests {
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(test)
            .unwrap_or_else(|p| Err(format!("panicked: {}", panic_text(&*p))));
        match outcome {
            Ok(()) => println!("ok      {name} ({:.1?})", started.elapsed()),
            Err(why) => {
                failed += 1;
                println!("FAILED  {name}: {why}");
            }
        }
    }
    println!(
        "GPU tests: {} passed, {failed} failed",
        tests.len() - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

fn probe() -> Outcome {
    let gpus = gpu::devices()?;
    let first = gpus.first().ok_or("no GPU listed")?;
    println!("        {} ({} MiB)", first.name, first.memory_bytes >> 20);
    gpu::device()?;
    println!(
        "        NCCL {}",
        nccl::version().map_err(|e| e.to_string())?
    );
    Ok(())
}

/// An abort handle of a single-rank ring: the join and the reduce poll it.
fn abort_handle() -> Result<(RingCollective, kiln_worker::collective::AbortHandle), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let ring = RingCollective::connect(&listener, 0, &[addr], 1, Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let handle = ring.abort_handle();
    Ok((ring, handle))
}

fn reduce_in_place() -> Outcome {
    let device = gpu::device()?;
    let (_ring, abort) = abort_handle()?;
    let id = nccl::unique_id().map_err(|e| e.to_string())?;
    // 64-byte buckets: 1000 floats take 63 calls.
    let mut reduce = NcclReduce::join(&id, 0, 1, device.index, 64, Duration::from_secs(30), abort)
        .map_err(|e| e.to_string())?;
    let read = |t: Tensor<GpuInner, 1>| -> Result<Vec<f32>, String> {
        t.into_data().to_vec().map_err(|e| format!("{e:?}"))
    };
    // Tensors around it, so the reduced one sits at an offset in CubeCL's pool and a write
    // past its ends shows.
    let before: Vec<Tensor<GpuInner, 1>> =
        (0..3).map(|i| Tensor::ones([37 + i], &device)).collect();
    let values: Vec<f32> = (0..1000).map(|i| i as f32 * 0.25 - 7.0).collect();
    let data = || TensorData::new(values.clone(), [values.len()]);
    let flat = Tensor::<GpuInner, 1>::from_data(data(), &device);
    let after: Vec<Tensor<GpuInner, 1>> = (0..3).map(|i| Tensor::ones([41 + i], &device)).collect();
    // The mean over one rank is the tensor itself.
    let reduced = reduce.all_reduce_mean(flat).map_err(|e| e.to_string())?;
    if read(reduced)? != values {
        return Err("the mean over one rank changed the values".into());
    }
    for neighbour in before.into_iter().chain(after) {
        if read(neighbour)?.iter().any(|v| *v != 1.0) {
            return Err("a neighbouring tensor was written".into());
        }
    }
    // A tensor sharing the buffer is left alone: the reduce works on a copy then.
    let shared = Tensor::<GpuInner, 1>::from_data(data(), &device);
    let other = shared.clone();
    let reduced = reduce.all_reduce_mean(shared).map_err(|e| e.to_string())?;
    (read(reduced)? == values && read(other)? == values)
        .then_some(())
        .ok_or_else(|| "a shared tensor was written".to_owned())
}

fn abort_ends_a_join() -> Outcome {
    let device = gpu::device()?;
    let (_ring, abort) = abort_handle()?;
    let id = nccl::unique_id().map_err(|e| e.to_string())?;
    let trigger = abort.clone();
    let aborter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        trigger.abort();
    });
    let started = Instant::now();
    // Rank 1 of 2 never joins: only the abort can end this.
    let joined = NcclReduce::join(
        &id,
        0,
        2,
        device.index,
        1 << 20,
        Duration::from_secs(60),
        abort,
    );
    let _ = aborter.join();
    let took = started.elapsed();
    match joined {
        Err(CollectiveError::Aborted) if took < Duration::from_secs(5) => Ok(()),
        Err(CollectiveError::Aborted) => Err(format!("the abort took {took:?}")),
        Err(e) => Err(format!("expected an abort, got: {e}")),
        Ok(_) => Err("joined a communicator with a missing rank".into()),
    }
}

struct Quiet;

impl Observer for Quiet {
    fn progress(&mut self, _: &Metrics) {}
    fn checkpoint(&mut self, _: u64, _: &str, _: f64) {}
    fn note(&mut self, _: &str) {}
}

fn job(max_steps: u64) -> JobSpec {
    JobSpec {
        name: "gpu".into(),
        model: Some(mlp::spec(8, &[32, 32], 3)),
        dataset: Some(DatasetSpec {
            name: "blobs".into(),
            source: Some(Source::Blobs(BlobsSource {
                samples: 640,
                seed: 3,
            })),
            features: 8,
            classes: 3,
            validation_split: 0.1,
            pins: Vec::new(),
            fingerprints: Vec::new(),
        }),
        training: Some(TrainingSpec {
            workers: 1,
            batch_size: 32,
            epochs: Some(10),
            seed: 11,
            optimizer: Some(optim::adam(0.01)),
            max_steps: Some(max_steps),
            backend: "cuda".into(),
            ..TrainingSpec::default()
        }),
        checkpoint: Some(CheckpointSpec {
            every_steps: 10,
            keep: 5,
        }),
        ..JobSpec::default()
    }
}

/// How one run of [`job`] trains.
#[derive(Clone, Copy)]
struct Run<'a> {
    on_gpu: bool,
    /// The gradients through NCCL (on the GPU only).
    nccl: bool,
    max_steps: u64,
    store: Option<&'a CheckpointStore>,
    resume_step: Option<u64>,
}

impl Default for Run<'_> {
    fn default() -> Self {
        Self {
            on_gpu: true,
            nccl: false,
            max_steps: 30,
            store: None,
            resume_step: None,
        }
    }
}

/// Trains [`job`] as `run` says and returns the final parameters.
fn train(run: Run<'_>) -> Result<Vec<f32>, String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut ring = RingCollective::connect(&listener, 0, &[addr], 1, Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let task = Task {
        job_id: "gpu".into(),
        spec: TrainSpec::try_from(&job(run.max_steps)).map_err(|e| e.to_string())?,
        resume_step: run.resume_step,
    };
    let (cancel, leave) = (AtomicBool::new(false), AtomicBool::new(false));
    let outcome = if run.on_gpu {
        let device = gpu::device()?;
        let mut nccl = match run.nccl {
            true => Some(
                NcclReduce::join(
                    &nccl::unique_id().map_err(|e| e.to_string())?,
                    0,
                    1,
                    device.index,
                    25 << 20,
                    Duration::from_secs(30),
                    ring.abort_handle(),
                )
                .map_err(|e| e.to_string())?,
            ),
            false => None,
        };
        let ctx = Context {
            device,
            collective: &mut ring,
            device_reduce: nccl.as_mut().map(|n| n as &mut dyn DeviceReduce<GpuInner>),
            store: run.store,
            runtime: runtime.handle(),
            cancel: &cancel,
            leave: &leave,
            observer: &mut Quiet,
        };
        Registry::builtin().train_on_gpu(&task, ctx, CheckpointMode::Background)
    } else {
        let ctx = Context {
            device: Default::default(),
            collective: &mut ring,
            device_reduce: None,
            store: run.store,
            runtime: runtime.handle(),
            cancel: &cancel,
            leave: &leave,
            observer: &mut Quiet,
        };
        Registry::builtin().train(&task, ctx, CheckpointMode::Background)
    };
    let params = outcome.map_err(|e| e.to_string())?.params;
    if params.iter().all(|p| p.is_finite()) {
        Ok(params)
    } else {
        Err("parameters that are not finite".into())
    }
}

fn train_with_nccl() -> Outcome {
    let plain = train(Run::default())?;
    let reduced = train(Run {
        nccl: true,
        ..Run::default()
    })?;
    (plain == reduced)
        .then_some(())
        .ok_or_else(|| "the parameters differ".to_owned())
}

/// GPU 0→10, CPU 10→20, GPU 20→30 through the checkpoints, against 30 steps on the GPU:
/// the same up to the backends' rounding.
fn checkpoints_cross_backends() -> Outcome {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let url = format!("file://{}", dir.path().display());
    let store =
        CheckpointStore::open(&url, &Default::default(), "gpu").map_err(|e| e.to_string())?;
    let leg = |on_gpu, max_steps, resume_step| {
        train(Run {
            on_gpu,
            max_steps,
            store: Some(&store),
            resume_step,
            ..Run::default()
        })
    };
    leg(true, 10, None)?;
    leg(false, 20, Some(10))?;
    let relayed = leg(true, 30, Some(20))?;
    let straight = train(Run::default())?;
    let worst = relayed
        .iter()
        .zip(&straight)
        .map(|(a, b)| (a - b).abs() / a.abs().max(b.abs()).max(1e-3))
        .fold(0.0f32, f32::max);
    println!("        worst relative difference {worst:e}");
    (relayed.len() == straight.len() && worst < 1e-3)
        .then_some(())
        .ok_or_else(|| format!("the relayed run differs by up to {worst:e}"))
}
