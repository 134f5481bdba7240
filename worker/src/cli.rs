//! The command line of a worker binary: the bundled `kiln-worker`, or a user's own binary that
//! registers its model kinds and calls [`main`]. With no subcommand it runs the agent until its
//! coordinator goes away; `models` describes the kinds it offers (`--json`, and `models check`
//! for `kiln validate`); `bench-allreduce` is one rank of `kiln bench allreduce`,
//! `bench-checkpoint` the work of `kiln bench checkpoint`; `export` and `predict` those of
//! `kiln models export | predict`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::agent::{self, AgentConfig};
use crate::model::Registry;
use crate::{bench, export, overhead};

#[derive(Parser)]
#[command(name = "kiln-worker", version, about = "kiln worker agent")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    agent: AgentArgs,
}

#[derive(clap::Args)]
struct AgentArgs {
    /// Coordinator URL; several, comma-separated, for coordinators that elect a leader on
    /// etcd (the worker registers with whichever leads, and follows the leadership).
    #[arg(
        long,
        env = "KILN_COORDINATOR",
        default_value = "http://127.0.0.1:7070"
    )]
    coordinator: String,
    /// The CA certificate (PEM) an https:// coordinator's certificate is verified against.
    #[arg(long, value_name = "FILE", env = "KILN_TLS_CA_FILE")]
    tls_ca_file: Option<PathBuf>,
    /// File holding the join token (the token may instead come from KILN_JOIN_TOKEN).
    #[arg(long)]
    join_token_file: Option<PathBuf>,
    /// Name reported to the coordinator.
    #[arg(long, env = "KILN_NODE_NAME")]
    node_name: Option<String>,
    /// Address the collective (ring all-reduce) listener binds and reports to its peers; port
    /// 0 picks a free one. Default: this host's address that reaches the (first) coordinator,
    /// port 0: loopback for a coordinator here, the right interface for one elsewhere.
    #[arg(long)]
    collective_bind: Option<SocketAddr>,
    /// Seconds to keep retrying the coordinator at start.
    #[arg(long, default_value_t = 15)]
    connect_timeout_secs: u64,
    /// Seconds to keep trying to get back to a lost coordinator before exiting.
    #[arg(long, env = "KILN_RECONNECT_TIMEOUT_SECS", default_value_t = 30)]
    reconnect_timeout_secs: u64,
}

#[derive(Subcommand)]
enum Command {
    /// The model kinds this binary trains, with their attributes.
    Models(ModelsArgs),
    /// One rank of `kiln bench allreduce` (driven over stdin/stdout).
    BenchAllreduce(bench::AllreduceBenchArgs),
    /// The training runs of `kiln bench checkpoint` (prints one JSON line).
    BenchCheckpoint(bench::CheckpointBenchArgs),
    /// kiln's training loop against a bare Burn loop of the same model (prints one JSON line).
    BenchOverhead(overhead::OverheadBenchArgs),
    /// Write a checkpoint's model as model.safetensors and config.json (the job's wire spec
    /// on stdin; what `kiln models export` runs).
    Export(export::ExportArgs),
    /// Print a checkpoint's model's predictions on its dataset as JSON (the job's wire spec
    /// on stdin; what `kiln models predict` runs).
    Predict(export::PredictArgs),
    /// Serve a registered model over the Open Inference Protocol (V2) on HTTP (what `kiln
    /// serve` runs).
    Serve(crate::serve::ServeArgs),
}

#[derive(clap::Args)]
struct ModelsArgs {
    /// Print the catalog as JSON (what `kiln validate` reads).
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    check: Option<ModelsCommand>,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Read a model check request (JSON) on stdin and answer whether the model can be built
    /// on that data, and its size (JSON on stdout).
    Check,
}

/// Runs a worker binary that offers the kinds of `registry`: the bundled `kiln-worker` calls
/// this with [`Registry::builtin`]; a user's binary with its own kinds added.
///
/// Call it first in `main`, before any thread starts: it sets NCCL's environment.
pub fn main(registry: Registry) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    // SAFETY: no other thread exists yet (see above).
    #[cfg(feature = "cuda")]
    #[allow(unsafe_code)]
    unsafe {
        crate::collective::nccl::set_non_blocking();
    }
    // Logs go to files when a provider starts the worker: no colour codes there. A running
    // task's lines also go to the coordinator (`kiln logs`).
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
                .unwrap_or_else(|_| "warn,kiln_worker=info".into()),
        );
    tracing_subscriber::registry()
        .with(stderr)
        .with(crate::logs::layer())
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Models(args)) => return models(&registry, &args),
        Some(Command::BenchAllreduce(args)) => return bench::run_allreduce_rank(args),
        Some(Command::BenchCheckpoint(args)) => {
            // For the checkpoint uploads; training runs on this thread.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("kiln-bench")
                .enable_all()
                .build()?;
            return bench::run_checkpoint_bench(args, &registry, runtime.handle());
        }
        Some(Command::BenchOverhead(args)) => {
            return overhead::run(args, current_thread()?.handle());
        }
        Some(Command::Export(args)) => {
            return export::export(&registry, &args, io_runtime()?.handle());
        }
        Some(Command::Predict(args)) => {
            return export::predict(&registry, &args, io_runtime()?.handle());
        }
        Some(Command::Serve(args)) => return crate::serve::serve(&registry, &args),
        None => {}
    }
    let args = cli.agent;
    let join_token = match (&args.join_token_file, std::env::var("KILN_JOIN_TOKEN")) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the join token from {}", path.display()))?
            .trim()
            .to_owned(),
        (None, Ok(token)) => token,
        (None, Err(_)) => {
            anyhow::bail!("no join token: set KILN_JOIN_TOKEN or pass --join-token-file")
        }
    };
    let coordinators = kiln_proto::coordinator_urls(&args.coordinator);
    if coordinators.is_empty() {
        anyhow::bail!("--coordinator (KILN_COORDINATOR) names no URL");
    }
    let ca =
        match &args.tls_ca_file {
            Some(file) => Some(std::fs::read(file).map_err(|e| {
                anyhow::anyhow!("reading the CA certificate {}: {e}", file.display())
            })?),
            None => None,
        };
    if ca.is_some() && !coordinators.iter().any(|u| u.starts_with("https://")) {
        tracing::warn!(
            "--tls-ca-file (KILN_TLS_CA_FILE) is unused: no coordinator URL is https://"
        );
    }
    let collective_bind = args
        .collective_bind
        .unwrap_or_else(|| SocketAddr::new(crate::route::local_ip_towards(&coordinators[0]), 0));
    let config = AgentConfig {
        coordinators,
        ca,
        join_token,
        node_name: args
            .node_name
            .unwrap_or_else(|| format!("worker-{}", std::process::id())),
        collective_bind,
        connect_timeout: Duration::from_secs(args.connect_timeout_secs),
        reconnect_timeout: Duration::from_secs(args.reconnect_timeout_secs),
        registry: Arc::new(registry),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kiln-worker")
        .enable_all()
        .build()?;
    runtime.block_on(agent::run(config))?;
    Ok(())
}

fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// A runtime whose own thread drives network IO, so that its handle's `block_on` can wait on
/// an `s3://` store (a current-thread runtime drives IO only inside `Runtime::block_on`).
fn io_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
}

fn models(registry: &Registry, args: &ModelsArgs) -> anyhow::Result<()> {
    if let Some(ModelsCommand::Check) = args.check {
        let request: kiln_proto::models::CheckRequest =
            serde_json::from_reader(std::io::stdin())
                .context("reading the check request from stdin")?;
        println!("{}", serde_json::to_string(&registry.check(&request))?);
        return Ok(());
    }
    let catalog = registry.catalog();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&catalog)?);
        return Ok(());
    }
    for kind in &catalog.kinds {
        println!("model \"{}\": {}", kind.name, kind.doc);
        for attr in &kind.attributes {
            let presence = match &attr.default {
                Some(default) => format!("default {default}"),
                None => "required".to_owned(),
            };
            println!(
                "  {:<14} {:<14} {:<14} {}",
                attr.name,
                attr.ty.name(),
                presence,
                attr.doc
            );
        }
    }
    Ok(())
}
