//! `kiln-worker serve`, which `kiln serve` runs: a registered model version answering the
//! Open Inference Protocol (V2) over HTTP, with Burn doing the forward pass. Requests from
//! concurrent clients are batched ([`batch`]); an alias is watched, and when it moves the new
//! version is loaded beside the old one and swapped in between two batches, so no request
//! fails and each is answered by the version it started on ([`http`] says which). Live
//! inputs are watched for drift from the training inputs ([`monitor`]).

mod batch;
mod http;
mod metrics;
mod monitor;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kiln_proto::Message;
use kiln_proto::v1::{self, StorageOptions};
use kiln_versions::data::FeatureStats;
use kiln_versions::drift::Settings;
use kiln_versions::registry::{ModelRef, ModelVersion, Registry as ModelRegistry, RegistryError};

use crate::checkpoint::CheckpointStore;
use crate::model::Registry;
use crate::model::restore::Restored;
use crate::spec::TrainSpec;

/// `kiln-worker serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// The model: NAME@ALIAS or NAME (the newest; both watched: a move is served without a
    /// restart), or NAME@N.
    #[arg(long)]
    model: String,
    /// The object store holding the registry (a `file://` or `s3://` URL).
    #[arg(long)]
    store: String,
    /// `s3://` only: the server's URL.
    #[arg(long)]
    store_endpoint: Option<String>,
    /// `s3://` only: the region.
    #[arg(long)]
    store_region: Option<String>,
    /// `s3://` only: the file holding the access key id.
    #[arg(long)]
    store_access_key_id_file: Option<String>,
    /// `s3://` only: the file holding the secret access key.
    #[arg(long)]
    store_secret_access_key_file: Option<String>,
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Most rows one forward pass takes from concurrent requests (1: no batching).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    max_batch_size: u32,
    /// How long, in microseconds, a batch waits for more requests once it has one (0: it
    /// takes what is queued and never waits).
    #[arg(long, default_value_t = 0)]
    max_delay_us: u64,
    /// How often, in milliseconds, a served alias is looked up again.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    watch_interval_ms: u64,
    /// Write `http://ADDR` here once listening.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Drift: a feature whose population stability index reaches this has drifted.
    #[arg(long, default_value_t = Settings::default().psi_threshold)]
    psi_threshold: f64,
    /// Drift: the most recent inputs (rows) compared with the training inputs.
    #[arg(long, default_value_t = Settings::default().window)]
    drift_window: usize,
    /// Drift: inputs needed in the window before anything is judged.
    #[arg(long, default_value_t = Settings::default().min_samples)]
    drift_min_samples: usize,
    /// Do not watch the inputs for drift.
    #[arg(long)]
    no_drift: bool,
    /// When the model (or its alias) does not exist yet, listen and wait for it (not ready
    /// until then) instead of failing.
    #[arg(long)]
    wait_for_model: bool,
}

/// A loaded version: what it is and the model itself.
pub(crate) struct Loaded {
    pub(crate) about: Arc<About>,
    pub(crate) model: Box<dyn Restored>,
}

/// What clients are told about the served version.
#[derive(Debug)]
pub(crate) struct About {
    pub(crate) name: String,
    pub(crate) version: u64,
    /// The input's shape without the batch dimension (`[features]`, or `[C, H, W]`).
    pub(crate) input_shape: Vec<usize>,
    pub(crate) classes: usize,
    /// Statistics of the training inputs (empty when the version keeps none).
    pub(crate) reference: Vec<FeatureStats>,
}

impl About {
    pub(crate) fn features(&self) -> usize {
        self.input_shape.iter().product()
    }
}

/// The registry version `version` as a model in memory.
fn load(
    registry: &Registry,
    models: &ModelRegistry,
    options: &StorageOptions,
    version: &ModelVersion,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<Loaded> {
    let lineage = &version.lineage;
    let (Ok(bytes), Some(step)) = (hex::decode(&lineage.spec), lineage.checkpoint_step) else {
        anyhow::bail!(
            "{} was registered without its spec and checkpoint step (by an older kiln)",
            version.reference()
        );
    };
    let wire = v1::JobSpec::decode(bytes.as_slice()).context("decoding the version's spec")?;
    let spec = TrainSpec::try_from(&wire)?;
    let store = CheckpointStore::open(models.url(), options, &lineage.job_id)?;
    let mut objects = runtime
        .block_on(store.load(step))
        .with_context(|| format!("reading checkpoint {step} of job {}", lineage.job_id))?;
    let record = objects
        .remove(crate::train::MODEL_OBJECT)
        .with_context(|| format!("checkpoint {step} has no model record"))?;
    let model = registry.restore(&spec, record)?;
    let features = spec.dataset.features as usize;
    let input_shape = spec
        .model_attributes
        .get("input_shape")
        .and_then(|s| s.as_array())
        .map(|dims| {
            dims.iter()
                .filter_map(|d| d.as_u64().map(|d| d as usize))
                .collect()
        })
        .unwrap_or_else(|| vec![features]);
    Ok(Loaded {
        about: Arc::new(About {
            name: version.name.clone(),
            version: version.version,
            input_shape,
            classes: spec.dataset.classes as usize,
            reference: lineage.reference.clone(),
        }),
        model,
    })
}

/// Runs the server until SIGINT or SIGTERM.
pub fn serve(registry: &Registry, args: &ServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kiln-serve")
        .enable_all()
        .build()?;
    let settings = Settings {
        psi_threshold: args.psi_threshold,
        window: args.drift_window,
        min_samples: args.drift_min_samples,
    };
    settings
        .check()
        .map_err(|e| anyhow::anyhow!("drift settings: {e}"))?;
    let options = StorageOptions {
        endpoint: args.store_endpoint.clone().unwrap_or_default(),
        region: args.store_region.clone().unwrap_or_default(),
        access_key_id_file: args.store_access_key_id_file.clone().unwrap_or_default(),
        secret_access_key_file: args
            .store_secret_access_key_file
            .clone()
            .unwrap_or_default(),
    };
    let models = ModelRegistry::open(&args.store, &options)?;
    let reference = ModelRef::parse(&args.model)?;
    let first = match runtime.block_on(models.resolve(&reference)) {
        Ok(version) => Some(version),
        Err(RegistryError::NotFound(why)) if args.wait_for_model => {
            eprintln!("kiln-worker: {why}; waiting for {} to exist", args.model);
            None
        }
        Err(e) => return Err(e).with_context(|| format!("resolving {}", args.model)),
    };
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(args.listen))
        .with_context(|| format!("listening on {}", args.listen))?;
    let url = format!("http://{}", listener.local_addr()?);
    let metrics = Arc::new(metrics::Metrics::new());
    let batcher = batch::Batcher::new(
        args.max_batch_size as usize,
        Duration::from_micros(args.max_delay_us),
        Arc::clone(&metrics),
    );
    let monitor = (!args.no_drift).then(|| {
        Arc::new(monitor::Monitor::new(
            settings,
            args.model.clone(),
            Arc::clone(&metrics),
        ))
    });
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handle = runtime.handle().clone();
        let queue = batcher.queue();
        scope.spawn(move || batcher.run());
        // Live at once, ready once the first version is loaded.
        let app = http::App::new(queue.clone(), args.model.clone(), metrics, monitor.clone());
        let server = runtime.spawn(http::run(listener, app.clone()));
        // The window is compared off the request path, once a second.
        let drift = monitor.map(|monitor| {
            runtime.spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                loop {
                    every.tick().await;
                    let monitor = Arc::clone(&monitor);
                    // Sorting a window of many features is CPU work: off the async threads.
                    let _ = tokio::task::spawn_blocking(move || monitor.evaluate()).await;
                }
            })
        });
        // Whatever ends serving (a signal, a first version that cannot be loaded), the
        // server and the batching thread stop: the scope waits for the thread.
        let served = (|| -> anyhow::Result<()> {
            if let Some(file) = &args.ready_file {
                kiln_proto::files::write_atomically(file, url.as_bytes())
                    .with_context(|| format!("writing {}", file.display()))?;
            }
            eprintln!("kiln-worker: serving {} on {url}", args.model);
            if let Some(version) = &first {
                let loaded = load(registry, &models, &options, version, &handle)?;
                tracing::info!(model = %version.reference(), "loaded");
                app.describe(Arc::clone(&loaded.about));
                queue.swap(loaded);
            }
            // An alias, or the newest version, can move; a version number cannot.
            let watching = !matches!(reference, ModelRef::Version(..));
            let stop = shutdown_signal(&runtime);
            let mut current = first.map(|v| v.version);
            loop {
                let wait = Duration::from_millis(args.watch_interval_ms);
                if handle.block_on(async {
                    tokio::time::timeout(wait, stop.clone().notified_owned())
                        .await
                        .is_ok()
                }) {
                    break;
                }
                if !watching && current.is_some() {
                    continue;
                }
                match handle.block_on(models.resolve(&reference)) {
                    Ok(moved) if Some(moved.version) != current => {
                        match load(registry, &models, &options, &moved, &handle) {
                            Ok(loaded) => {
                                let how = if current.is_some() { "moved to" } else { "is" };
                                eprintln!(
                                    "kiln-worker: {} {how} {}; serving it",
                                    args.model,
                                    moved.reference()
                                );
                                app.describe(Arc::clone(&loaded.about));
                                queue.swap(loaded);
                                current = Some(moved.version);
                            }
                            Err(e) => tracing::warn!("cannot load {}: {e:#}", moved.reference()),
                        }
                    }
                    Ok(_) => {}
                    // Still waiting for it to exist.
                    Err(RegistryError::NotFound(_)) if current.is_none() => {}
                    Err(e) => tracing::warn!("cannot look up {}: {e}", args.model),
                }
            }
            Ok(())
        })();
        server.abort();
        if let Some(drift) = drift {
            drift.abort();
        }
        queue.close();
        served
    })
}

/// Notified on SIGINT or SIGTERM.
fn shutdown_signal(runtime: &tokio::runtime::Runtime) -> Arc<tokio::sync::Notify> {
    let notify = Arc::new(tokio::sync::Notify::new());
    let notified = Arc::clone(&notify);
    runtime.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => (term, int),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(
                    "cannot handle SIGTERM and SIGINT ({e}); stop the server with SIGKILL"
                );
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        // `notify_one` keeps a permit for a waiter that is not waiting yet.
        notified.notify_one();
    });
    notify
}
