//! `kiln-worker bench-overhead`: what kiln's training loop costs over a bare Burn loop of the
//! same model, data, batch and optimizer in the same process and thread. The bare loop is
//! what a user would write without kiln: gather a batch, forward, cross-entropy, backward,
//! `Adam::step`. kiln's adds the flat gradient buffer, the (one-rank) all-reduce, the
//! sharding bookkeeping and progress. Runs alternate between the two; medians are printed
//! as one JSON line.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use kiln_proto::v1::{BlobsSource, DatasetSpec, JobSpec, TrainingSpec, dataset_spec};
use serde_json::json;

use crate::bench::Silent;
use crate::collective::ring::RingCollective;
use crate::data;
use crate::model::{Classifier, CpuBackend, DataShape, Init, ModelKind, Registry, configure};
use crate::model::{cnn::CnnKind, mlp::MlpKind};
use crate::optim::Optim;
use crate::spec::TrainSpec;
use crate::train::{CheckpointMode, Context, Task};

/// Arguments of `kiln-worker bench-overhead`.
#[derive(clap::Args, Debug, Clone)]
pub struct OverheadBenchArgs {
    /// `mlp` (784-256-256-10) or `cnn` (1×28×28, channels [16, 32], hidden [64], 10 classes).
    #[arg(long, default_value = "mlp")]
    pub model: String,
    /// Samples per step.
    #[arg(long, default_value_t = 64)]
    pub batch_size: u32,
    /// Steps per run.
    #[arg(long, default_value_t = 300)]
    pub steps: u64,
    /// Runs of each loop, alternating.
    #[arg(long, default_value_t = 5)]
    pub repeats: u32,
}

/// The benchmark's model: its wire spec and its kind, configured.
fn model(name: &str) -> anyhow::Result<(kiln_proto::v1::ModelSpec, serde_json::Value)> {
    let attrs = match name {
        "mlp" => json!({"inputs": 784, "hidden": [256, 256], "classes": 10}),
        "cnn" => {
            json!({"input_shape": [1, 28, 28], "channels": [16, 32], "hidden": [64], "classes": 10})
        }
        other => anyhow::bail!("--model {other:?}: use mlp or cnn"),
    };
    let spec = kiln_proto::v1::ModelSpec {
        kind: name.to_owned(),
        attributes: attrs.to_string(),
    };
    Ok((spec, attrs))
}

fn job(args: &OverheadBenchArgs, model: kiln_proto::v1::ModelSpec) -> JobSpec {
    JobSpec {
        name: "bench-overhead".into(),
        model: Some(model),
        dataset: Some(DatasetSpec {
            name: "blobs".into(),
            source: Some(dataset_spec::Source::Blobs(BlobsSource {
                samples: u64::from(args.batch_size) * 50,
                seed: 1,
            })),
            features: 784,
            classes: 10,
            validation_split: 0.0,
            pins: Vec::new(),
            fingerprints: Vec::new(),
        }),
        training: Some(TrainingSpec {
            workers: 1,
            batch_size: args.batch_size,
            seed: 7,
            max_steps: Some(args.steps),
            optimizer: Some(crate::optim::adam(0.001)),
            ..TrainingSpec::default()
        }),
        ..JobSpec::default()
    }
}

/// Runs the benchmark and prints `{"model", "bare", "kiln", "ratio"}` (samples/s medians).
pub fn run(args: OverheadBenchArgs, runtime: &tokio::runtime::Handle) -> anyhow::Result<()> {
    let (model_spec, attrs) = model(&args.model)?;
    let spec = TrainSpec::try_from(&job(&args, model_spec))?;
    let registry = Registry::builtin();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a listener")?;
    let peers = [listener.local_addr()?];
    let mut ring = RingCollective::connect(&listener, 0, &peers, 0, Duration::from_secs(1))
        .context("a one-rank ring")?;
    let mut kiln_run = || -> anyhow::Result<f64> {
        let task = Task {
            job_id: "bench-overhead".into(),
            spec: spec.clone(),
            resume_step: None,
        };
        let outcome = registry.train(
            &task,
            Context {
                device: Default::default(),
                collective: &mut ring,
                device_reduce: None,
                store: None,
                runtime,
                cancel: &AtomicBool::new(false),
                leave: &AtomicBool::new(false),
                observer: &mut Silent,
            },
            CheckpointMode::Background,
        )?;
        Ok(outcome.metrics.samples_per_sec)
    };
    let attrs = attrs.as_object().cloned().unwrap_or_default();
    let shape = DataShape {
        features: 784,
        classes: 10,
    };
    let bare_run = || -> anyhow::Result<f64> {
        match args.model.as_str() {
            "cnn" => bare::<CnnKind>(&attrs, shape, &spec),
            _ => bare::<MlpKind>(&attrs, shape, &spec),
        }
    };
    // Unmeasured warm-up of each.
    kiln_run()?;
    bare_run()?;
    let (mut bare_rates, mut kiln_rates) = (Vec::new(), Vec::new());
    for repeat in 0..args.repeats {
        if repeat % 2 == 0 {
            bare_rates.push(bare_run()?);
            kiln_rates.push(kiln_run()?);
        } else {
            kiln_rates.push(kiln_run()?);
            bare_rates.push(bare_run()?);
        }
    }
    let (bare, kiln) = (median(&mut bare_rates), median(&mut kiln_rates));
    let result = json!({
        "model": args.model,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "bare": bare,
        "kiln": kiln,
        "ratio": kiln / bare,
    });
    println!("{result}");
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The loop without kiln: the same seeded model, samples in the same order, Adam.
fn bare<K: ModelKind>(
    attrs: &serde_json::Map<String, serde_json::Value>,
    shape: DataShape,
    spec: &TrainSpec,
) -> anyhow::Result<f64>
where
    K::Model<CpuBackend>: AutodiffModule<CpuBackend>,
{
    let device = Default::default();
    let kind = configure::<K>(attrs, shape).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut model = kind.init::<CpuBackend>(&mut Init::new(spec.seed, &device));
    let mut optim = Optim::<CpuBackend, K::Model<CpuBackend>>::new(&spec.optimizer)
        .map_err(|e| anyhow::anyhow!(e))?;
    let splits = data::load(&spec.dataset)?;
    let n = splits.train.len();
    let batch = spec.batch_size;
    let steps = spec.max_steps.unwrap_or(1);
    let start = Instant::now();
    let (mut epoch, mut offset) = (0, 0);
    let mut order = data::epoch_order(spec.seed, epoch, n);
    for _ in 0..steps {
        let rows = &order[offset..(offset + batch).min(n)];
        let (x, y) = splits.train.gather(rows);
        let logits = model.forward(Tensor::from_data(
            TensorData::new(x, [rows.len(), shape.features]),
            &device,
        ));
        let targets = Tensor::<CpuBackend, 2, Int>::from_data(
            TensorData::new(y.iter().map(|&c| i64::from(c)).collect(), [rows.len(), 1]),
            &device,
        );
        let loss = log_softmax(logits, 1).gather(1, targets).mean().neg();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(spec.optimizer.learning_rate, model, grads);
        offset += rows.len();
        if offset >= n {
            (epoch, offset) = (epoch + 1, 0);
            order = data::epoch_order(spec.seed, epoch, n);
        }
    }
    Ok((steps as usize * batch) as f64 / start.elapsed().as_secs_f64())
}
