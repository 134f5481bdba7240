//! Data-parallel equivalence: N ranks × batch b over the real TCP ring end with the same
//! parameters as 1 rank × batch N·b from the same start over the same samples. This checks
//! sharding, gradient flattening, the all-reduce and the optimizer step together.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use kiln_proto::v1::{
    BlobsSource, CheckpointSpec, DatasetSpec, JobSpec, LrSchedule, Metrics, OptimizerSpec,
    TrainingSpec, dataset_spec::Source,
};
use kiln_worker::collective::ring::RingCollective;
use kiln_worker::collective::{Collective, CollectiveError, DeviceReduce};
use kiln_worker::model::{Registry, mlp};
use kiln_worker::optim;
use kiln_worker::spec::TrainSpec;
use kiln_worker::train::{CheckpointMode, Context, Observer, Task};

struct Quiet;

impl Observer for Quiet {
    fn progress(&mut self, _: &Metrics) {}
    fn checkpoint(&mut self, _: u64, _: &str, _: f64) {}
    fn note(&mut self, _: &str) {}
}

fn spec(workers: u32, batch_size: u32, max_steps: u64) -> JobSpec {
    JobSpec {
        name: "ddp".into(),
        model: Some(mlp::spec(8, &[16, 16], 3)),
        dataset: Some(DatasetSpec {
            name: "blobs".into(),
            // 310 samples, 31 held out: 279 to train on, so epochs end in a short batch.
            source: Some(Source::Blobs(BlobsSource {
                samples: 310,
                seed: 5,
            })),
            features: 8,
            classes: 3,
            validation_split: 0.1,
            pins: Vec::new(),
            fingerprints: Vec::new(),
        }),
        training: Some(TrainingSpec {
            workers,
            batch_size,
            epochs: Some(100),
            seed: 9,
            optimizer: Some(optim::adam(0.01)),
            max_steps: Some(max_steps),
            ..TrainingSpec::default()
        }),
        checkpoint: Some(CheckpointSpec {
            every_steps: 0,
            keep: 1,
        }),
        storage_url: String::new(),
        ..JobSpec::default()
    }
}

/// A [`DeviceReduce`] that stages the tensor through a ring of its own: the stand-in, on the
/// CPU, for a collective that reduces device memory, so the loop's device path (flatten on the
/// device, reduce, clip, slice back) runs here.
struct Staged(RingCollective);

impl DeviceReduce<NdArray> for Staged {
    fn all_reduce_mean(
        &mut self,
        flat: Tensor<NdArray, 1>,
    ) -> Result<Tensor<NdArray, 1>, CollectiveError> {
        let device = flat.device();
        let mut buf: Vec<f32> = flat.into_data().to_vec().expect("f32");
        self.0.all_reduce_mean(&mut buf)?;
        let n = buf.len();
        Ok(Tensor::from_data(TensorData::new(buf, [n]), &device))
    }
}

fn listeners(world: usize) -> (Vec<TcpListener>, Vec<SocketAddr>) {
    let listeners: Vec<TcpListener> = (0..world)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let peers = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr"))
        .collect();
    (listeners, peers)
}

/// Trains `spec` with `world` ranks (threads, real TCP ring) and returns each rank's parameters.
fn run(world: usize, spec: JobSpec) -> Vec<Vec<f32>> {
    run_with(world, spec, false)
}

/// [`run`], with the gradients reduced through a [`Staged`] device collective when `on_device`.
fn run_with(world: usize, spec: JobSpec, on_device: bool) -> Vec<Vec<f32>> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (listeners, peers) = listeners(world);
    let (staged_listeners, staged_peers) = listeners_for(on_device, world);
    std::thread::scope(|s| {
        let handles: Vec<_> = listeners
            .iter()
            .enumerate()
            .map(|(rank, listener)| {
                let (peers, spec, handle) = (&peers, spec.clone(), runtime.handle());
                let staged = staged_listeners.get(rank).map(|l| (l, &staged_peers));
                s.spawn(move || {
                    let mut ring =
                        RingCollective::connect(listener, rank, peers, 1, Duration::from_secs(10))
                            .expect("ring");
                    let mut staged = staged.map(|(listener, peers)| {
                        Staged(
                            RingCollective::connect(
                                listener,
                                rank,
                                peers,
                                2,
                                Duration::from_secs(10),
                            )
                            .expect("staged ring"),
                        )
                    });
                    let cancel = AtomicBool::new(false);
                    let task = Task {
                        job_id: "ddp".into(),
                        spec: TrainSpec::try_from(&spec).expect("a valid spec"),
                        resume_step: None,
                    };
                    let outcome = Registry::builtin()
                        .train(
                            &task,
                            Context {
                                device: Default::default(),
                                collective: &mut ring,
                                device_reduce: staged
                                    .as_mut()
                                    .map(|s| s as &mut dyn DeviceReduce<NdArray>),
                                store: None,
                                runtime: handle,
                                cancel: &cancel,
                                leave: &AtomicBool::new(false),
                                observer: &mut Quiet,
                            },
                            CheckpointMode::Background,
                        )
                        .expect("training");
                    outcome.params
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank thread"))
            .collect()
    })
}

/// No second ring when the gradients stay on the host.
fn listeners_for(on_device: bool, world: usize) -> (Vec<TcpListener>, Vec<SocketAddr>) {
    if on_device {
        listeners(world)
    } else {
        (Vec::new(), Vec::new())
    }
}

fn assert_close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    let mut worst = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        let rel = (x - y).abs() / x.abs().max(y.abs()).max(1e-3);
        worst = worst.max(rel);
    }
    assert!(
        worst <= 1e-5,
        "parameters differ: worst relative difference {worst:e}"
    );
}

fn check(world: usize, batch: u32) {
    check_with(world, batch, |_| {});
}

/// `world` ranks × `batch` against 1 rank × `world · batch`, with the training block changed
/// by `tune` in both.
fn check_with(world: usize, batch: u32, tune: impl Fn(&mut TrainingSpec)) {
    let tuned = |mut spec: JobSpec| {
        if let Some(training) = spec.training.as_mut() {
            tune(training);
        }
        spec
    };
    // 40 steps cross two epoch boundaries, each ending in a short, unevenly split batch.
    let steps = 40;
    let sharded = run(world, tuned(spec(world as u32, batch, steps)));
    let single = run(1, tuned(spec(1, batch * world as u32, steps)));
    // No step: the initial parameters.
    let initial = run(1, tuned(spec(1, batch, 0))).remove(0);
    for rank in &sharded[1..] {
        assert_eq!(rank, &sharded[0], "ranks end bit-identical");
    }
    assert_ne!(single[0], initial, "training changed the parameters");
    assert_close(&sharded[0], &single[0]);
}

#[test]
fn reducing_on_the_device_ends_bit_identical_to_reducing_on_the_host() {
    let host = run(2, spec(2, 8, 40));
    let device = run_with(2, spec(2, 8, 40), true);
    assert_eq!(device[0], device[1], "ranks end bit-identical");
    assert_eq!(
        device[0], host[0],
        "the same floats are reduced the same way"
    );
    // World size 1 takes the device path too (the host path skips the flat buffer there).
    assert_eq!(run_with(1, spec(1, 16, 40), true), run(1, spec(1, 16, 40)));
}

#[test]
fn two_ranks_match_one_rank_with_double_batch() {
    check(2, 8);
}

#[test]
fn three_ranks_match_one_rank_with_triple_batch() {
    check(3, 5);
}

#[test]
fn sgd_with_nesterov_momentum_cosine_warmup_and_clipping_shard_exactly() {
    check_with(2, 8, |training| {
        training.optimizer = Some(OptimizerSpec {
            kind: "sgd".into(),
            learning_rate: 0.05,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 1e-4,
            ..OptimizerSpec::default()
        });
        training.lr_schedule = Some(LrSchedule {
            kind: "cosine".into(),
            warmup_steps: 5,
            min_lr: 0.001,
            ..LrSchedule::default()
        });
        training.clip_grad_norm = Some(0.5);
    });
}

#[test]
fn adamw_with_a_step_schedule_shards_exactly() {
    check_with(2, 8, |training| {
        training.optimizer = Some(OptimizerSpec {
            kind: "adamw".into(),
            learning_rate: 0.01,
            beta1: 0.9,
            beta2: 0.99,
            weight_decay: 0.01,
            ..OptimizerSpec::default()
        });
        training.lr_schedule = Some(LrSchedule {
            kind: "step".into(),
            step_size: 10,
            gamma: 0.5,
            ..LrSchedule::default()
        });
    });
}
