//! The default of every optional attribute the loader fills in: the one place they live (the
//! decoded spec carries them, so nothing downstream keeps defaults of its own).

use std::net::SocketAddr;
use std::time::Duration;

/// Default `storage.url`.
pub(super) const DEFAULT_STORAGE_URL: &str = "file://.kiln/store";
/// Default `state.path`.
pub(super) const DEFAULT_STATE_PATH: &str = ".kiln/state";
/// Default `state.prefix` (etcd).
pub(super) const DEFAULT_STATE_PREFIX: &str = "/kiln/";
/// Default `coordinator.listen`: an ephemeral loopback port.
pub(super) const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);
/// Default `dataset.validation_split`.
pub(super) const DEFAULT_VALIDATION_SPLIT: f64 = 0.1;
/// Default Adam learning rate.
pub(super) const DEFAULT_LEARNING_RATE: f64 = 0.001;
/// Default `training.epochs` when `max_steps` is not given.
pub(super) const DEFAULT_EPOCHS: u32 = 1;
/// Default `checkpoint.every_steps`.
pub(super) const DEFAULT_EVERY_STEPS: u32 = 100;
/// Default `checkpoint.keep`.
pub(super) const DEFAULT_KEEP: u32 = 3;
/// Default `restart.max_restarts`.
pub(super) const DEFAULT_MAX_RESTARTS: u32 = 0;
/// Default `coordinator.heartbeat_interval`.
pub(super) const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Default `coordinator.lease_ttl`.
pub(super) const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);
/// Default `restart.backoff`.
pub(super) const DEFAULT_BACKOFF: Duration = Duration::from_secs(5);
/// Adam's and AdamW's moment decay rates.
pub(super) const DEFAULT_BETAS: [f64; 2] = [0.9, 0.999];
/// `training.bucket_mb`: NCCL all-reduces the gradient in buckets of this many MiB.
pub(super) const DEFAULT_BUCKET_MB: u32 = 25;
/// Default `serve.listen`: where `kiln serve` listens by default.
pub(super) const DEFAULT_SERVE_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
/// Default `serve.max_batch_size`.
pub(super) const DEFAULT_MAX_BATCH_SIZE: u32 = 64;
/// Default `serve.watch_interval`.
pub(super) const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// Default `serve.monitor`: PSI 0.2 (a significant shift) over the last 1000 inputs, judged
/// from 200.
pub(super) const DEFAULT_MONITOR: crate::spec::MonitorSpec = crate::spec::MonitorSpec {
    psi_threshold: 0.2,
    window: 1000,
    min_samples: 200,
};
