//! `kiln-worker export` and `kiln-worker predict`, which `kiln models export | predict` run: a
//! registered model's checkpoint read back into its kind's module, then written as
//! `model.safetensors` (float32, little-endian, one tensor per parameter named by its module
//! path) with the `config.json` a forward pass needs, or asked for its predictions on a split
//! of the dataset it trained on. The job's wire spec arrives on stdin, prost-encoded, as the
//! registry keeps it.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kiln_proto::Message;
use kiln_proto::v1::{self, dataset_spec::Source};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{Value, json};

use crate::checkpoint::CheckpointStore;
use crate::model::Registry;
use crate::model::restore::{NamedTensor, Restored};
use crate::spec::TrainSpec;

/// Format of the `config.json` this build writes.
pub const CONFIG_FORMAT: &str = "kiln-export/1";

/// Which checkpoint to read.
#[derive(clap::Args)]
pub struct CheckpointArgs {
    /// The job whose checkpoint holds the weights.
    #[arg(long)]
    job: String,
    /// The checkpoint's step.
    #[arg(long)]
    step: u64,
}

/// `kiln-worker export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    checkpoint: CheckpointArgs,
    /// Directory to write `model.safetensors` and `config.json` into (created if missing).
    #[arg(long)]
    out: PathBuf,
}

/// `kiln-worker predict`.
#[derive(clap::Args)]
pub struct PredictArgs {
    #[command(flatten)]
    checkpoint: CheckpointArgs,
    /// The samples to predict: the validation split, the training split, or every sample.
    #[arg(long, value_enum, default_value_t = Split::Validation)]
    split: Split,
}

/// A part of the dataset.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Split {
    /// The held-out samples.
    Validation,
    /// The samples trained on.
    Train,
    /// Both.
    All,
}

/// The spec on stdin, its dataset files fetched, and the model restored from its checkpoint.
fn restore(
    registry: &Registry,
    args: &CheckpointArgs,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<(TrainSpec, Box<dyn Restored>)> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .context("reading the job spec from stdin")?;
    let wire = v1::JobSpec::decode(bytes.as_slice()).context("decoding the job spec")?;
    let mut spec = TrainSpec::try_from(&wire)?;
    let options = wire.storage_options.clone().unwrap_or_default();
    runtime.block_on(crate::data::pinned::fetch(
        &mut spec.dataset,
        &options,
        &kiln_versions::data::cache_dir(),
    ))?;
    let store = CheckpointStore::open(&wire.storage_url, &options, &args.job)?;
    let mut objects = runtime
        .block_on(store.load(args.step))
        .with_context(|| format!("reading checkpoint {} of job {}", args.step, args.job))?;
    let record = objects
        .remove(crate::train::MODEL_OBJECT)
        .with_context(|| format!("checkpoint {} has no model record", args.step))?;
    let model = registry.restore(&spec, record)?;
    Ok((spec, model))
}

/// `kiln-worker export`: writes the two files and prints what it wrote as JSON.
pub fn export(
    registry: &Registry,
    args: &ExportArgs,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<()> {
    let (spec, model) = restore(registry, &args.checkpoint, runtime)?;
    let weights = model.weights();
    let tensors = safetensors_bytes(&weights)?;
    let attributes = registry.complete_attributes(&spec)?;
    let config = serde_json::to_vec_pretty(&config(&spec, attributes, &weights)?)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut files = Vec::new();
    for (name, bytes) in [("model.safetensors", &tensors), ("config.json", &config)] {
        let path = args.out.join(name);
        kiln_proto::files::write_atomically(&path, bytes)
            .with_context(|| format!("writing {}", path.display()))?;
        files.push(json!({
            "path": path.display().to_string(),
            "bytes": bytes.len(),
            "sha256": kiln_proto::manifest::sha256_hex(bytes),
        }));
    }
    println!("{}", json!({ "files": files, "tensors": weights.len() }));
    Ok(())
}

/// The safetensors file of `weights`: float32, little-endian, no metadata. The crate orders
/// tensors by name, so equal parameters give equal bytes.
pub fn safetensors_bytes(weights: &[NamedTensor]) -> anyhow::Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = weights
        .iter()
        .map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = weights
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            Ok((
                t.name.clone(),
                TensorView::new(Dtype::F32, t.shape.clone(), b)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    Ok(safetensors::serialize(views, None)?)
}

/// `config.json`: what the model is and how its inputs were prepared.
fn config(
    spec: &TrainSpec,
    attributes: serde_json::Map<String, Value>,
    weights: &[NamedTensor],
) -> anyhow::Result<Value> {
    let features = spec.dataset.features as usize;
    let input_shape = spec
        .model_attributes
        .get("input_shape")
        .cloned()
        .unwrap_or_else(|| json!([features]));
    let (feature_names, scaling) = inputs(&spec.dataset)?;
    Ok(json!({
        "format": CONFIG_FORMAT,
        "kind": spec.model_kind,
        "attributes": attributes,
        "input_shape": input_shape,
        "features": features,
        "classes": spec.dataset.classes,
        "feature_names": feature_names,
        "input_scaling": scaling,
        "dtype": "float32",
        "tensors": weights
            .iter()
            .map(|t| json!({ "name": t.name, "shape": t.shape }))
            .collect::<Vec<_>>(),
    }))
}

/// The feature names (a CSV's columns without the label; `None` for other sources) and how
/// raw values became model inputs: `"none"`, or `"divide_by_255"` for `uint8` arrays.
fn inputs(dataset: &v1::DatasetSpec) -> anyhow::Result<(Option<Vec<String>>, &'static str)> {
    let array_scaling = |header: kiln_proto::formats::ArrayHeader| {
        if header.dtype == kiln_proto::formats::DType::U8 {
            "divide_by_255"
        } else {
            "none"
        }
    };
    Ok(match &dataset.source {
        Some(Source::Csv(csv)) => {
            let mut reader = csv::Reader::from_path(&csv.path)
                .with_context(|| format!("reading the header of {}", csv.path))?;
            let names = reader
                .headers()?
                .iter()
                .filter(|h| *h != csv.label)
                .map(str::to_owned)
                .collect();
            (Some(names), "none")
        }
        Some(Source::Idx(idx)) => (
            None,
            array_scaling(kiln_proto::formats::idx_header(Path::new(&idx.images))?),
        ),
        Some(Source::Npy(npy)) => (
            None,
            array_scaling(kiln_proto::formats::npy_header(Path::new(&npy.x))?),
        ),
        _ => (None, "none"),
    })
}

/// `kiln-worker predict`: one JSON object on stdout with every sample's row in its source,
/// label, predicted class and logits, and the accuracy.
pub fn predict(
    registry: &Registry,
    args: &PredictArgs,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<()> {
    let (spec, model) = restore(registry, &args.checkpoint, runtime)?;
    let splits = crate::data::load(&spec.dataset)?;
    let parts = match args.split {
        Split::Validation => vec![&splits.validation],
        Split::Train => vec![&splits.train],
        Split::All => vec![&splits.train, &splits.validation],
    };
    let classes = spec.dataset.classes as usize;
    let (mut rows, mut correct) = (Vec::new(), 0usize);
    for samples in parts {
        let positions: Vec<u32> = (0..samples.len() as u32).collect();
        let (x, labels) = samples.gather(&positions);
        let logits = model.logits(x, samples.len());
        for ((row, label), logits) in samples
            .rows()
            .iter()
            .zip(labels)
            .zip(logits.chunks(classes))
        {
            let prediction = argmax(logits);
            correct += usize::from(prediction == label as usize);
            rows.push(json!({
                "row": row,
                "label": label,
                "prediction": prediction,
                "logits": logits,
            }));
        }
    }
    let accuracy = (!rows.is_empty()).then(|| correct as f64 / rows.len() as f64);
    println!(
        "{}",
        json!({ "samples": rows.len(), "accuracy": accuracy, "rows": rows })
    );
    Ok(())
}

/// The index of the largest value (the first of equals), as the validation accuracy counts.
fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}
