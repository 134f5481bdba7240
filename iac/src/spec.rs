//! Typed, validated specs produced by the loader. Everything downstream trusts these:
//! once `load_dir` returns a [`Config`], its values are in range and its references resolve.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use kiln_versions::gate::{Gate, Metric};

/// One configuration directory: every `*.hcl` file in it, merged.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Directory the files were read from; relative paths in the specs are resolved against it.
    pub dir: PathBuf,
    /// Clusters by name.
    pub clusters: BTreeMap<String, ClusterSpec>,
    /// Jobs by name.
    pub jobs: BTreeMap<String, JobSpec>,
    /// What loaded but deserves a word (severity [`Severity::Warning`]), in file order.
    ///
    /// [`Severity::Warning`]: crate::Severity::Warning
    pub warnings: Vec<crate::Diagnostic>,
}

/// Which provider provisions a cluster's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// One `kiln-worker` process per node on this machine.
    Local,
    /// One `kiln-worker` process per node on hosts reached over SSH.
    Ssh,
    /// One Slurm batch job per node.
    Slurm,
}

impl ProviderKind {
    /// The name the configuration uses (`provider = "…"`).
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::Ssh => "ssh",
            ProviderKind::Slurm => "slurm",
        }
    }
}

/// `cluster "NAME" { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSpec {
    /// The block label.
    pub name: String,
    /// `provider` (required).
    pub provider: ProviderKind,
    /// `node_pool "NAME" { ... }` blocks, in file order (at least one; names unique).
    pub node_pools: Vec<NodePoolSpec>,
    /// `storage { url }`: where checkpoints go (default `file://.kiln/store`).
    pub storage: StorageSpec,
    /// `state { ... }`: where the coordinator keeps its state (default: embedded in
    /// `.kiln/state`).
    pub state: StateSpec,
    /// `coordinator { ... }`: how the coordinator is reached (defaults when absent).
    pub coordinator: CoordinatorSpec,
    /// `worker { … }`: what its nodes run.
    pub worker: WorkerSpec,
}

/// `worker { binary, env }`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkerSpec {
    /// The worker binary nodes run (resolved against the configuration directory); `None`:
    /// the bundled `kiln-worker`.
    pub binary: Option<PathBuf>,
    /// Environment variables every worker of the cluster gets (names non-empty, without `=`).
    pub env: BTreeMap<String, String>,
}

impl ClusterSpec {
    /// Total number of nodes over all pools.
    pub fn node_count(&self) -> u32 {
        self.node_pools.iter().map(|p| p.count).sum()
    }

    /// The GPU type every GPU node of the cluster declares, when they all declare the same
    /// one: what a CUDA job's workers must have. `None`: any GPU.
    pub fn gpu_type(&self) -> Option<&str> {
        let mut gpu_pools = self.node_pools.iter().filter(|p| p.gpus_per_node > 0);
        let first = gpu_pools.next()?.gpu_type.as_deref()?;
        gpu_pools
            .all(|p| p.gpu_type.as_deref() == Some(first))
            .then_some(first)
    }
}

/// `node_pool "NAME" { count, cpus_per_node, memory_gb, gpus_per_node, gpu_type, labels }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePoolSpec {
    /// The block label.
    pub name: String,
    /// Number of nodes (>= 1, required).
    pub count: u32,
    /// CPU threads each node's worker may use (>= 1, default 1).
    pub cpus_per_node: u32,
    /// Memory per node in whole GiB (>= 1); `None` (the default) leaves it unconstrained.
    pub memory_gb: Option<u32>,
    /// GPUs per node (default 0).
    pub gpus_per_node: u32,
    /// GPU model, e.g. `"h100"` (non-empty); only allowed with `gpus_per_node >= 1`.
    /// Default `None`: any GPU.
    pub gpu_type: Option<String>,
    /// Free-form `map(string)` labels attached to the pool's nodes (default empty).
    pub labels: BTreeMap<String, String>,
    /// Where the cluster's provider puts the pool's nodes.
    pub placement: Placement,
}

/// The provider-specific part of a node pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// `provider = "local"`: processes on this machine.
    Local,
    /// `provider = "ssh"`.
    Ssh(SshPlacement),
    /// `provider = "slurm"`.
    Slurm(SlurmPlacement),
}

/// A pool's SSH attributes: `hosts`, `user`, `port`, `identity_file`, `known_hosts_file`,
/// `worker_path`, `remote_dir`, `connect_timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshPlacement {
    /// Host names or addresses (at least one, unique). Node `i` runs on `hosts[i % len]`.
    pub hosts: Vec<String>,
    /// Login name; `None`: ssh's default (the SSH configuration's, else the local user).
    pub user: Option<String>,
    /// sshd's port (default 22).
    pub port: u16,
    /// Private key (absolute, existing); `None`: ssh's defaults and agent.
    pub identity_file: Option<PathBuf>,
    /// The `known_hosts` file host keys are checked against (absolute, existing); `None`:
    /// ssh's own (`~/.ssh/known_hosts`). Unknown or changed keys are always refused.
    pub known_hosts_file: Option<PathBuf>,
    /// The worker binary's path on the hosts; `None`: kiln copies its worker binary into
    /// `remote_dir` once and checks it by hash.
    pub worker_path: Option<String>,
    /// Directory on each host for the copied binary, logs and pid files (relative paths are
    /// under the login's home; default `.kiln`).
    pub remote_dir: String,
    /// How long an SSH connection may take to come up (default 10 s); every call has a
    /// deadline derived from it.
    pub connect_timeout: Duration,
}

/// A pool's Slurm attributes: `partition`, `time_limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmPlacement {
    /// `sbatch --partition`; `None`: the cluster's default partition.
    pub partition: Option<String>,
    /// `sbatch --time`, in whole minutes (rounded up); `None`: the partition's default.
    pub time_limit: Option<Duration>,
}

/// `storage { url, endpoint, region, access_key_id_file, secret_access_key_file }`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StorageSpec {
    /// Object store URL. A relative `file://` path is made absolute against the config
    /// directory by the loader, so this is always absolute for `file://`.
    pub url: String,
    /// `s3://` only: the server's URL (`http://` allows plain HTTP).
    pub endpoint: Option<String>,
    /// `s3://` only: the region to sign for.
    pub region: Option<String>,
    /// `s3://` only: files holding the access key id and the secret (both or neither),
    /// absolute. Every process that opens the store reads them; kiln keeps only the paths.
    pub access_key_id_file: Option<PathBuf>,
    /// See `access_key_id_file`.
    pub secret_access_key_file: Option<PathBuf>,
}

impl StorageSpec {
    /// The settings every process that opens this store needs besides its URL.
    pub fn options(&self) -> kiln_proto::v1::StorageOptions {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        kiln_proto::v1::StorageOptions {
            endpoint: self.endpoint.clone().unwrap_or_default(),
            region: self.region.clone().unwrap_or_default(),
            access_key_id_file: path(&self.access_key_id_file).unwrap_or_default(),
            secret_access_key_file: path(&self.secret_access_key_file).unwrap_or_default(),
        }
    }
}

/// `state { backend, path | endpoints, prefix }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateSpec {
    /// `backend = "embedded"` (the default): a durable store in a local directory; `path` is
    /// absolute (resolved against the config directory).
    Embedded {
        /// Directory holding the state database (default `.kiln/state`).
        path: PathBuf,
    },
    /// `backend = "etcd"`: an etcd cluster.
    Etcd {
        /// Client endpoints, each `host:port` or `http(s)://host:port` (at least one, required).
        endpoints: Vec<String>,
        /// Key prefix under which kiln keeps its keys (non-empty, default `/kiln/`).
        prefix: String,
    },
}

/// `coordinator { listen, advertise, join_token_file, heartbeat_interval, lease_ttl,
/// replicas, tls { ... } }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorSpec {
    /// Address the coordinator's gRPC server binds (default `127.0.0.1:0`: an ephemeral
    /// loopback port).
    pub listen: SocketAddr,
    /// URL workers and clients use to reach the coordinator when it differs from `listen`
    /// (NAT, containers), always with a scheme (`host:port` is read as `http://host:port`).
    /// Default `None`: the address it actually bound.
    pub advertise: Option<String>,
    /// File holding the join token workers present (absolute, resolved against the config
    /// directory; read when the coordinator starts, never by the loader). Default `None`: a
    /// random token per run.
    pub join_token_file: Option<PathBuf>,
    /// How often workers renew their lease (positive, default 1 s).
    pub heartbeat_interval: Duration,
    /// A worker whose lease is not renewed for this long is declared dead and its generation
    /// fails (longer than `heartbeat_interval`, default 3 s).
    pub lease_ttl: Duration,
    /// How many coordinators `kiln apply` runs (default 1; more only on an etcd state, where
    /// one leads and the others stand by).
    pub replicas: u32,
    /// `tls { ... }`: gRPC over TLS; `None` for plaintext.
    pub tls: Option<TlsSpec>,
    /// Address of the HTTP listener beside gRPC (Prometheus metrics, the dashboard and its
    /// JSON API); `None`: an ephemeral loopback port (`127.0.0.1:0`).
    pub http_listen: Option<SocketAddr>,
}

/// `tls { cert_file, key_file, ca_file }` in `coordinator`: every path absolute (resolved
/// against the configuration directory) and readable when the configuration was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSpec {
    /// The coordinator's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// The coordinator's private key (PEM).
    pub key_file: PathBuf,
    /// The CA that workers and clients verify the coordinator's certificate against (PEM).
    pub ca_file: PathBuf,
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
    /// `restart { ... }` (defaults when absent: no restart).
    pub restart: RestartSpec,
    /// `deploy { ... }`; `None` when absent (nothing is deployed).
    pub deploy: Option<DeploySpec>,
    /// What training the model costs a worker, as its worker binary reported the model's
    /// size; `None` when the loader had no catalog to ask.
    pub footprint: Option<crate::footprint::Footprint>,
}

/// `model "KIND" { … }`: the model a job trains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// The kind (`model "KIND"`), as the cluster's worker binary names it.
    pub kind: String,
    /// The block's attributes, checked against the kind's schema, defaults filled in.
    pub attributes: serde_json::Map<String, serde_json::Value>,
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
    /// `format = "idx"`: MNIST's IDX files, gzipped or not.
    Idx {
        /// The images (or feature vectors): `source`.
        images: PathBuf,
        /// The labels: `labels`.
        labels: PathBuf,
    },
    /// `format = "npy"`: NumPy arrays.
    Npy {
        /// The features: `source`.
        x: PathBuf,
        /// The labels: `labels`.
        y: PathBuf,
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
    /// The dataset version files (`kiln://`) the source reads, at the local paths it names.
    pub pins: Vec<DataPin>,
}

/// A file of a dataset version a job reads (`kiln://NAME@N/PATH`), pinned to its version and
/// hash: the loader fetched it into the data cache, and each worker fetches it again from
/// the store and verifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPin {
    /// The store it is in (the job's cluster's `storage.url`).
    pub storage_url: String,
    /// The dataset's name.
    pub name: String,
    /// The version, resolved (`@latest` becomes a number).
    pub version: u64,
    /// The version's content hash.
    pub content_hash: String,
    /// The file.
    pub file: kiln_versions::data::FileEntry,
    /// Where the loader's copy is: the path the source names.
    pub local: PathBuf,
}

/// `optimizer "adam" { learning_rate }`.
#[derive(Debug, Clone, PartialEq)]
pub enum OptimizerSpec {
    /// `optimizer "sgd"`.
    Sgd {
        /// The learning rate.
        learning_rate: f64,
        /// Momentum factor; 0: none.
        momentum: f64,
        /// Nesterov momentum.
        nesterov: bool,
        /// L2 penalty added to the gradient.
        weight_decay: f64,
    },
    /// `optimizer "adam"`.
    Adam {
        /// The learning rate.
        learning_rate: f64,
        /// The moment decay rates.
        betas: [f64; 2],
    },
    /// `optimizer "adamw"`.
    AdamW {
        /// The learning rate.
        learning_rate: f64,
        /// The moment decay rates.
        betas: [f64; 2],
        /// Decoupled weight decay.
        weight_decay: f64,
    },
}

/// `lr_schedule { kind, warmup_steps, … }`.
#[derive(Debug, Clone, PartialEq)]
pub struct LrScheduleSpec {
    /// Steps of linear warm-up.
    pub warmup_steps: u64,
    /// What follows the warm-up.
    pub kind: ScheduleKind,
}

/// The shape of a learning-rate schedule after its warm-up.
#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleKind {
    /// The optimizer's rate throughout.
    Constant,
    /// Multiplied by `gamma` every `step_size` steps.
    Step {
        /// Steps between decays.
        step_size: u64,
        /// The factor.
        gamma: f64,
    },
    /// Half a cosine from the optimizer's rate down to `min_lr` over `decay_steps` (absent:
    /// the rest of the run).
    Cosine {
        /// The final rate.
        min_lr: f64,
        /// Steps of the decay.
        decay_steps: Option<u64>,
    },
}

/// The compute backend a job's ranks train on: `training.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `"cpu"` (the default).
    Cpu,
    /// `"cuda"`: needs a cluster with at least one pool with `gpus_per_node >= 1`.
    Cuda,
}

/// How gradients are all-reduced between ranks: `training.collective`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collective {
    /// `"ring"` (the default): kiln's ring all-reduce over TCP.
    Ring,
    /// `"nccl"`: NVIDIA NCCL; needs `backend = "cuda"`.
    Nccl,
}

/// `training { ... }`.
///
/// When to stop: after `epochs` passes or `max_steps` optimizer steps, whichever comes first.
/// `epochs` defaults to 1 unless `max_steps` is given, in which case it defaults to no limit.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingSpec {
    /// Number of workers (ranks), gang-placed: the job starts only when all are free
    /// (>= 1, required, at most the cluster's node count, in `min_workers..=max_workers`).
    pub workers: u32,
    /// Fewest workers the job may run with (>= 1, default `workers`).
    pub min_workers: u32,
    /// Most workers the job may run with (>= `min_workers`, default `workers`).
    pub max_workers: u32,
    /// Samples per worker per step (>= 1, required).
    pub batch_size: u32,
    /// Passes over the training split (>= 1). `None` only when `max_steps` is set and
    /// `epochs` is not: training runs until `max_steps`.
    pub epochs: Option<u32>,
    /// Stop after this many optimizer steps (>= 1); `None` (the default): no step limit.
    pub max_steps: Option<u64>,
    /// Seed for parameter initialisation and the per-epoch sample order (default 0).
    pub seed: u64,
    /// Compute backend (default [`Backend::Cpu`]).
    pub backend: Backend,
    /// Gradient all-reduce (default [`Collective::Ring`]).
    pub collective: Collective,
    /// The optimizer (default Adam, lr 0.001).
    pub optimizer: OptimizerSpec,
    /// How the learning rate changes; `None`: constant.
    pub lr_schedule: Option<LrScheduleSpec>,
    /// Clip the averaged gradient to this global L2 norm.
    pub clip_grad_norm: Option<f64>,
    /// NCCL all-reduces the gradient in buckets of at most this many MiB (>= 1, default 25).
    pub bucket_mb: u32,
}

/// `checkpoint { every_steps, keep }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSpec {
    /// Write a checkpoint every this many steps (>= 1, default 100); one is always written at the end.
    pub every_steps: u32,
    /// Committed checkpoints retained (>= 1, default 3).
    pub keep: u32,
}

/// `restart { max_restarts, backoff }`: what happens when a rank fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartSpec {
    /// How many times the job is restarted from its last checkpoint before it fails
    /// (default 0: a failure fails the job).
    pub max_restarts: u32,
    /// Wait before each restart, written as a duration string such as `"500ms"`, `"2s"`,
    /// `"1m30s"` (default 5 s).
    pub backoff: Duration,
}

/// `deploy { model, alias, gate { ... } ... }`: where a succeeded job's model goes.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploySpec {
    /// The registry name the model is registered under; `None`: the job's name.
    pub model: Option<String>,
    /// The alias the new version takes when every gate passes, e.g. `"production"` (letters,
    /// digits, `-`, `_`, `.`; at most 63 characters); `None`: the version is only registered.
    pub alias: Option<String>,
    /// The `gate` blocks, all of which must pass; empty: the alias always moves.
    pub gates: Vec<Gate>,
    /// `serve { ... }`: the model served by `kiln apply` as a resource of the job's cluster;
    /// `None`: not served.
    pub serve: Option<ServeSpec>,
}

/// `serve { listen, max_batch_size, max_delay, watch_interval, monitor { ... } }`: how
/// `kiln apply` serves the deploy block's model (`MODEL@ALIAS`, or `MODEL`, the newest).
#[derive(Debug, Clone, PartialEq)]
pub struct ServeSpec {
    /// Address the server listens on (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// Most rows one forward pass takes from concurrent requests (default 64; 1: none).
    pub max_batch_size: u32,
    /// How long a batch waits for more requests once it has one (default 0).
    pub max_delay: Duration,
    /// How often the alias is looked up again (default 2 s).
    pub watch_interval: Duration,
    /// `monitor { ... }`: drift on live inputs; `None`: `enabled = false`.
    pub monitor: Option<MonitorSpec>,
}

/// `monitor { psi_threshold, window, min_samples }`: when live inputs count as drifted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MonitorSpec {
    /// A feature whose PSI reaches this has drifted (default 0.2).
    pub psi_threshold: f64,
    /// The most recent inputs compared (default 1000).
    pub window: u32,
    /// Inputs needed before anything is judged (default 200; at most `window`).
    pub min_samples: u32,
}
