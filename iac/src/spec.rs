//! Typed, validated specs produced by the loader. Everything downstream trusts these:
//! once `load_dir` returns a [`Config`], its values are in range and its references resolve.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// One configuration directory: every `*.hcl` file in it, merged.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Directory the files were read from; relative paths in the specs are resolved against it.
    pub dir: PathBuf,
    /// Clusters by name.
    pub clusters: BTreeMap<String, ClusterSpec>,
    /// Jobs by name.
    pub jobs: BTreeMap<String, JobSpec>,
}

/// Which provider provisions a cluster's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// One `kiln-worker` process per node on this machine.
    Local,
}

/// `cluster "NAME" { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSpec {
    /// The block label.
    pub name: String,
    /// `provider`.
    pub provider: ProviderKind,
    /// `node_pool "NAME" { ... }` blocks, in file order (at least one).
    pub node_pools: Vec<NodePoolSpec>,
    /// `storage { url }`: where checkpoints go.
    pub storage: StorageSpec,
    /// `state { backend, path }`: where the coordinator keeps its state.
    pub state: StateSpec,
}

impl ClusterSpec {
    /// Total number of nodes over all pools.
    pub fn node_count(&self) -> u32 {
        self.node_pools.iter().map(|p| p.count).sum()
    }
}

/// `node_pool "NAME" { count, cpus_per_node, gpus_per_node }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePoolSpec {
    /// The block label.
    pub name: String,
    /// Number of nodes (>= 1).
    pub count: u32,
    /// CPU threads each node's worker may use (>= 1, default 1).
    pub cpus_per_node: u32,
    /// GPUs per node (default 0).
    pub gpus_per_node: u32,
}

/// `storage { url }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageSpec {
    /// Object store URL. A relative `file://` path is made absolute against the config
    /// directory by the loader, so this is always absolute for `file://`.
    pub url: String,
}

/// `state { backend, path }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateSpec {
    /// Embedded durable store in a file; `path` is absolute (resolved against the config directory).
    Embedded {
        /// Directory holding the state database.
        path: PathBuf,
    },
}

/// `job "NAME" { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// The block label.
    pub name: String,
    /// The file the block was declared in.
    pub file: PathBuf,
    /// Name of the cluster it runs on (resolved: the cluster exists in the same `Config`).
    pub cluster: String,
    /// `model "KIND" { ... }`.
    pub model: ModelSpec,
    /// `dataset "NAME" { ... }`.
    pub dataset: DatasetSpec,
    /// `training { ... }`.
    pub training: TrainingSpec,
    /// `checkpoint { ... }` (defaults when absent).
    pub checkpoint: CheckpointSpec,
}

/// `model "mlp" { inputs, hidden, classes }`: a multi-layer perceptron classifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// Input features (must equal the dataset's feature count).
    pub inputs: u32,
    /// Hidden layer widths, in order (may be empty).
    pub hidden: Vec<u32>,
    /// Output classes (must equal the dataset's class count).
    pub classes: u32,
}

/// Where samples come from.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// `source = "synthetic:blobs"`: Gaussian blobs generated from `seed`.
    Blobs {
        /// Number of samples generated (train + validation).
        samples: u64,
        /// Generator seed.
        seed: u64,
    },
    /// `source = "file://PATH"`, `format = "csv"`, `label = "COLUMN"`.
    Csv {
        /// Absolute path of the CSV file (resolved against the config directory).
        path: PathBuf,
        /// Name of the label column; every other column is a numeric feature.
        label: String,
    },
}

/// `dataset "NAME" { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSpec {
    /// The block label.
    pub name: String,
    /// Where the samples come from.
    pub source: DataSource,
    /// Feature count (for CSV: read from the header, columns minus the label).
    pub features: u32,
    /// Number of classes; labels are integers in `0..classes`.
    pub classes: u32,
    /// Fraction of samples held out for validation, in `[0, 1)` (default 0.1).
    pub validation_split: f64,
}

/// `optimizer "adam" { learning_rate }`.
#[derive(Debug, Clone, PartialEq)]
pub enum OptimizerSpec {
    /// Adam with Burn's default betas and epsilon.
    Adam {
        /// Learning rate (> 0, default 0.001).
        learning_rate: f64,
    },
}

/// `training { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingSpec {
    /// Number of workers (ranks), gang-placed: the job starts only when all are free.
    pub workers: u32,
    /// Samples per worker per step.
    pub batch_size: u32,
    /// Passes over the training split.
    pub epochs: u32,
    /// Seed for parameter initialisation and the per-epoch sample order.
    pub seed: u64,
    /// The optimizer (default Adam, lr 0.001).
    pub optimizer: OptimizerSpec,
}

/// `checkpoint { every_steps, keep }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSpec {
    /// Write a checkpoint every this many steps (>= 1, default 100); one is always written at the end.
    pub every_steps: u32,
    /// Committed checkpoints retained (>= 1, default 3).
    pub keep: u32,
}
