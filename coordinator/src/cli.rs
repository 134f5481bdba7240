//! The `kiln` commands. Each returns a [`CliError`] that carries its process exit code:
//! 1 = the job failed or was cancelled, 2 = bad input (HCL, arguments), 3 = infrastructure
//! (coordinator unreachable, state locked, workers could not start).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use kiln_iac::LoadOptions;
use kiln_iac::provider::{LocalProvider, Provider, WorkerLaunch};
use kiln_iac::spec::{Config, JobSpec, StateSpec};
use kiln_proto::v1::coordinator_client::CoordinatorClient;
use kiln_proto::v1::{
    CancelJobRequest, GetJobRequest, Job, JobState, ListJobsRequest, ResumeJobRequest,
    SubmitJobRequest,
};
use tonic::transport::Channel;

use crate::control::{Control, LeaseConfig};
use crate::follow;
use crate::service::Server;
use crate::state::EmbeddedStore;

/// Where clients look for a coordinator when nothing else says.
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:7070";

/// A failed command and the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    /// Process exit code.
    pub code: u8,
    /// What went wrong, with causes.
    pub error: anyhow::Error,
}

impl CliError {
    /// The job ran and did not succeed.
    pub const JOB_FAILED: u8 = 1;
    /// Invalid configuration or arguments.
    pub const BAD_INPUT: u8 = 2;
    /// Infrastructure: state, network, processes.
    pub const INFRA: u8 = 3;

    pub(crate) fn new(code: u8, error: impl Into<anyhow::Error>) -> Self {
        Self {
            code,
            error: error.into(),
        }
    }
}

/// Tags an error with an exit code.
pub(crate) trait ExitCodeExt<T> {
    fn code(self, code: u8) -> Result<T, CliError>;
}

impl<T, E: Into<anyhow::Error>> ExitCodeExt<T> for Result<T, E> {
    fn code(self, code: u8) -> Result<T, CliError> {
        self.map_err(|e| CliError::new(code, e))
    }
}

/// `kiln validate DIR`: parses and checks every HCL file; prints the diagnostics, as JSON
/// with `json`.
pub fn validate(dir: &Path, vars: &LoadOptions, json: bool) -> Result<(), CliError> {
    match kiln_iac::load_dir_with(dir, vars) {
        Ok(_) if json => {
            println!("{}", kiln_iac::Diagnostics(Vec::new()).to_json());
            Ok(())
        }
        Ok(config) => {
            println!(
                "{}: valid ({} cluster(s), {} job(s))",
                dir.display(),
                config.clusters.len(),
                config.jobs.len()
            );
            Ok(())
        }
        Err(diagnostics) if json => {
            println!("{}", diagnostics.to_json());
            Err(CliError::new(
                CliError::BAD_INPUT,
                anyhow!("{} error(s)", diagnostics.error_count()),
            ))
        }
        Err(diagnostics) => Err(CliError::new(CliError::BAD_INPUT, diagnostics)),
    }
}

pub(crate) fn load(dir: &Path, vars: &LoadOptions) -> Result<Config, CliError> {
    kiln_iac::load_dir_with(dir, vars).code(CliError::BAD_INPUT)
}

/// The job to run from `config`: the one named, or the only one.
fn pick_job<'a>(config: &'a Config, name: Option<&str>) -> Result<&'a JobSpec, CliError> {
    let names = || config.jobs.keys().cloned().collect::<Vec<_>>().join(", ");
    match name {
        Some(name) => config.jobs.get(name).ok_or_else(|| {
            CliError::new(
                CliError::BAD_INPUT,
                anyhow!(
                    "no job named {name:?} in the configuration (jobs: {})",
                    names()
                ),
            )
        }),
        None if config.jobs.len() == 1 => Ok(config.jobs.values().next().expect("one job")),
        None if config.jobs.is_empty() => Err(CliError::new(
            CliError::BAD_INPUT,
            anyhow!("the configuration declares no job"),
        )),
        None => Err(CliError::new(
            CliError::BAD_INPUT,
            anyhow!(
                "the configuration declares several jobs ({}); pick one with --job",
                names()
            ),
        )),
    }
}

/// Where `kiln-worker` is: `$KILN_WORKER_BIN`, else next to this executable.
pub fn worker_binary() -> Result<PathBuf, CliError> {
    if let Some(path) = std::env::var_os("KILN_WORKER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().code(CliError::INFRA)?;
    let path = exe.with_file_name("kiln-worker");
    if path.is_file() {
        Ok(path)
    } else {
        Err(CliError::new(
            CliError::INFRA,
            anyhow!(
                "kiln-worker not found at {}; build it (cargo build --release --bins) or set KILN_WORKER_BIN",
                path.display()
            ),
        ))
    }
}

pub(crate) fn random_token() -> String {
    use rand::Rng;
    hex::encode(rand::rng().random::<[u8; 16]>())
}

fn state_dir(config: &Config, job: &JobSpec) -> Result<PathBuf, CliError> {
    let cluster = &config.clusters[&job.cluster];
    match &cluster.state {
        StateSpec::Embedded { path } => Ok(path.clone()),
        StateSpec::Etcd { .. } => Err(CliError::new(
            CliError::BAD_INPUT,
            anyhow!(
                "cluster {:?} keeps its state in etcd, which `kiln up` does not support yet; use `state {{ backend = \"embedded\" }}`",
                cluster.name
            ),
        )),
    }
}

/// `kiln up DIR`: an embedded coordinator, the cluster's nodes as local processes, the job
/// submitted and followed to its end. Everything started is stopped and reaped on the way out,
/// also on Ctrl-C.
pub async fn up(dir: &Path, job_name: Option<&str>, vars: &LoadOptions) -> Result<Job, CliError> {
    let config = load(dir, vars)?;
    let job = pick_job(&config, job_name)?;
    let cluster = &config.clusters[&job.cluster];
    let worker_bin = worker_binary()?;
    let state = state_dir(&config, job)?;
    let store = EmbeddedStore::open(&state).code(CliError::INFRA)?;
    let token = random_token();
    let lease = LeaseConfig {
        heartbeat_interval: cluster.coordinator.heartbeat_interval,
        ttl: cluster.coordinator.lease_ttl,
    };
    let control = Control::new(Arc::new(store), token.clone(), lease).code(CliError::INFRA)?;
    let server = Server::start(control, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .context("starting the coordinator")
        .code(CliError::INFRA)?;
    let log_dir = state.parent().unwrap_or(&state).join("logs");
    eprintln!(
        "kiln: coordinator on {}; starting {} worker(s) (logs in {})",
        server.url(),
        cluster.node_count(),
        log_dir.display()
    );
    let mut provider = LocalProvider::new();
    let launch = WorkerLaunch {
        worker_bin,
        coordinator_url: server.url(),
        join_token: token,
        log_dir,
    };
    let result = run_on_cluster(&mut provider, &server, cluster, &launch, job).await;
    // Workers exit once their streams end; give them a moment, then kill what is left.
    let shutdown = server.shutdown();
    let exits = provider.shutdown(Duration::from_secs(5));
    let (_, exits) = tokio::join!(shutdown, exits);
    for exit in exits.iter().filter(|e| !e.status.success()) {
        tracing::debug!(node = %exit.node.name, status = %exit.status, "worker ended");
    }
    result
}

async fn run_on_cluster(
    provider: &mut LocalProvider,
    server: &Server,
    cluster: &kiln_iac::spec::ClusterSpec,
    launch: &WorkerLaunch,
    job: &JobSpec,
) -> Result<Job, CliError> {
    provider
        .launch(cluster, launch)
        .await
        .code(CliError::INFRA)?;
    let mut client = connect(&server.url()).await?;
    let job_id = client
        .submit_job(SubmitJobRequest {
            spec: Some(job.to_wire(cluster)),
        })
        .await
        .code(CliError::BAD_INPUT)?
        .into_inner()
        .job_id;
    // A node whose worker dies is replaced as often as the job may restart: the coordinator
    // restarts the job from its last checkpoint once the replacement registers.
    let replacements = job.restart.max_restarts;
    let mut replaced = 0;
    let follow = follow::follow(&mut client, &job_id, interrupted());
    let mut follow = std::pin::pin!(follow);
    let followed = loop {
        tokio::select! {
            job = &mut follow => break job,
            exit = provider.next_exit() => {
                // A worker that left cleanly (preempted with SIGTERM: it checkpointed first) is
                // replaced without counting against the job's restarts.
                let planned = exit.status.success();
                if planned || replaced < replacements {
                    let count = if planned {
                        "planned".to_owned()
                    } else {
                        replaced += 1;
                        format!("{replaced}/{replacements}")
                    };
                    let node = provider.relaunch(&exit.node, launch).await.code(CliError::INFRA)?;
                    eprintln!("kiln: {exit}; replaced by pid {} ({count})", node.pid);
                    continue;
                }
                eprintln!("kiln: {exit}");
                // A running job fails by itself once the worker's stream breaks; a job still
                // waiting for workers would wait forever, so give up on it.
                match tokio::time::timeout(Duration::from_secs(5), follow).await {
                    Ok(Ok(job)) if job.state().is_terminal() => break Ok(job),
                    _ => return Err(CliError::new(CliError::INFRA, anyhow!("{exit}"))),
                }
            }
        }
    };
    finish(followed.code(CliError::INFRA)?)
}

fn finish(job: Job) -> Result<Job, CliError> {
    match job.state() {
        JobState::Succeeded => Ok(job),
        state => Err(CliError::new(
            CliError::JOB_FAILED,
            anyhow!("job {} {}: {}", job.id, state.label(), job.message),
        )),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn connect(url: &str) -> Result<CoordinatorClient<Channel>, CliError> {
    CoordinatorClient::connect(url.to_owned())
        .await
        .with_context(|| format!("cannot reach the coordinator at {url}"))
        .code(CliError::INFRA)
}

/// How `kiln coordinator` serves.
pub struct CoordinatorOptions {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Directory of the embedded state.
    pub state: PathBuf,
    /// File holding the join token; `None` generates one into the state directory.
    pub join_token_file: Option<PathBuf>,
    /// URL to announce instead of the bound address.
    pub advertise: Option<String>,
    /// File to write the URL into once the coordinator accepts connections.
    pub ready_file: Option<PathBuf>,
    /// Worker lease timing.
    pub lease: LeaseConfig,
}

/// `kiln coordinator`: serves until Ctrl-C or SIGTERM.
pub async fn coordinator(options: CoordinatorOptions) -> Result<(), CliError> {
    let CoordinatorOptions {
        listen,
        state,
        join_token_file,
        advertise,
        ready_file,
        lease,
    } = options;
    let state = state.as_path();
    let store = EmbeddedStore::open(state).code(CliError::INFRA)?;
    let token = match join_token_file {
        Some(ref path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the join token from {}", path.display()))
            .code(CliError::BAD_INPUT)?
            .trim()
            .to_owned(),
        None => {
            let path = state.join("join-token");
            let token = random_token();
            write_secret(&path, &token).code(CliError::INFRA)?;
            eprintln!("kiln: join token written to {}", path.display());
            token
        }
    };
    let control = Control::new(Arc::new(store), token, lease).code(CliError::INFRA)?;
    let server = Server::start(control, listen)
        .await
        .with_context(|| format!("listening on {listen}"))
        .code(CliError::INFRA)?;
    let url = advertise.unwrap_or_else(|| server.url());
    eprintln!("kiln: coordinator listening on {} ({url})", server.addr);
    if let Some(path) = ready_file {
        // A supervisor polling for it never reads half a URL.
        write_atomically(&path, url.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
            .code(CliError::INFRA)?;
    }
    interrupted().await;
    eprintln!("kiln: shutting down");
    server.shutdown().await.code(CliError::INFRA)
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames it over `path`:
/// readers see the old contents or the new ones, never a part, also after a crash.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(secret.as_bytes())
}

/// `kiln submit PATH`: submits the jobs declared in PATH (a file, or every job of a directory).
pub async fn submit(
    coordinator: Option<&str>,
    path: &Path,
    job_name: Option<&str>,
    vars: &LoadOptions,
    follow_it: bool,
) -> Result<Option<Job>, CliError> {
    let (dir, file) = if path.is_dir() {
        (path.to_owned(), None)
    } else {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        (dir.to_owned(), Some(path))
    };
    let config = load(&dir, vars)?;
    let jobs: Vec<&JobSpec> = match job_name {
        Some(name) => vec![pick_job(&config, Some(name))?],
        None => config
            .jobs
            .values()
            .filter(|j| file.is_none_or(|f| same_file(&j.file, f)))
            .collect(),
    };
    if jobs.is_empty() {
        return Err(CliError::new(
            CliError::BAD_INPUT,
            anyhow!("{} declares no job", path.display()),
        ));
    }
    if follow_it && jobs.len() > 1 {
        return Err(CliError::new(
            CliError::BAD_INPUT,
            anyhow!("--follow takes one job; pick it with --job"),
        ));
    }
    let url = match coordinator {
        Some(url) => url.to_owned(),
        None => crate::infra::applied_coordinator(&config.dir, &jobs[0].cluster)?
            .unwrap_or_else(|| DEFAULT_COORDINATOR.to_owned()),
    };
    let mut client = connect(&url).await?;
    let mut last = None;
    for job in jobs {
        let id = client
            .submit_job(SubmitJobRequest {
                spec: Some(job.to_wire(&config.clusters[&job.cluster])),
            })
            .await
            .code(CliError::BAD_INPUT)?
            .into_inner()
            .job_id;
        println!("submitted {id}");
        last = Some(id);
    }
    match (follow_it, last) {
        (true, Some(id)) => {
            let job = follow::follow(&mut client, &id, interrupted())
                .await
                .code(CliError::INFRA)?;
            finish(job).map(Some)
        }
        _ => Ok(None),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// `kiln status [JOB]`: one job in detail, or a table of all jobs.
pub async fn status(coordinator: &str, job: Option<&str>, json: bool) -> Result<(), CliError> {
    let mut client = connect(coordinator).await?;
    let jobs = match job {
        Some(id) => vec![
            client
                .get_job(GetJobRequest {
                    job_id: id.to_owned(),
                })
                .await
                .code(CliError::BAD_INPUT)?
                .into_inner(),
        ],
        None => {
            client
                .list_jobs(ListJobsRequest {})
                .await
                .code(CliError::INFRA)?
                .into_inner()
                .jobs
        }
    };
    if json {
        let value: Vec<serde_json::Value> = jobs.iter().map(job_json).collect();
        let out = if job.is_some() {
            value[0].clone()
        } else {
            serde_json::Value::Array(value)
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&out).code(CliError::INFRA)?
        );
    } else if job.is_some() {
        let job = &jobs[0];
        let elapsed =
            (job.finished_unix_ms.max(job.submitted_unix_ms) - job.submitted_unix_ms).max(0);
        follow::print_summary(job, Duration::from_millis(elapsed as u64));
    } else {
        println!(
            "{:<24} {:<10} {:>5} {:>12} {:>9}",
            "JOB", "STATE", "GEN", "STEP", "VAL_ACC"
        );
        for job in &jobs {
            let m = job.metrics.unwrap_or_default();
            let acc = m
                .val_accuracy
                .map_or_else(|| "-".into(), |a| format!("{a:.4}"));
            println!(
                "{:<24} {:<10} {:>5} {:>12} {:>9}",
                job.id,
                job.state().label(),
                job.generation,
                format!("{}/{}", m.step, m.total_steps),
                acc
            );
        }
    }
    Ok(())
}

fn job_json(job: &Job) -> serde_json::Value {
    let m = job.metrics.unwrap_or_default();
    serde_json::json!({
        "id": job.id,
        "state": job.state().label(),
        "generation": job.generation,
        "workers": job.workers,
        "message": job.message,
        "metrics": {
            "epoch": m.epoch,
            "step": m.step,
            "total_steps": m.total_steps,
            "loss": m.loss,
            "val_accuracy": m.val_accuracy,
            "samples_per_sec": m.samples_per_sec,
        },
        "restarts": job.restarts,
        "last_failure": job.last_failure,
        "params_digest": job.params_digest,
        "checkpoint_step": job.checkpoint_step,
        "checkpoint_url": job.checkpoint_url,
        "submitted_unix_ms": job.submitted_unix_ms,
        "finished_unix_ms": job.finished_unix_ms,
    })
}

/// `kiln resume JOB [--from STEP] [--follow]`.
pub async fn resume(
    coordinator: &str,
    job: &str,
    from_step: Option<u64>,
    follow_it: bool,
) -> Result<(), CliError> {
    let mut client = connect(coordinator).await?;
    let job = client
        .resume_job(ResumeJobRequest {
            job_id: job.to_owned(),
            from_step,
        })
        .await
        .code(CliError::BAD_INPUT)?
        .into_inner();
    println!("{}: {}", job.id, job.message);
    if follow_it {
        let job = follow::follow(&mut client, &job.id, interrupted())
            .await
            .code(CliError::INFRA)?;
        finish(job)?;
    }
    Ok(())
}

/// `kiln cancel JOB`.
pub async fn cancel(coordinator: &str, job: &str) -> Result<(), CliError> {
    let mut client = connect(coordinator).await?;
    let job = client
        .cancel_job(CancelJobRequest {
            job_id: job.to_owned(),
        })
        .await
        .code(CliError::BAD_INPUT)?
        .into_inner();
    println!("{} {}", job.id, job.state().label());
    Ok(())
}

/// `kiln fmt [--check] DIR`: rewrites the `*.hcl` files of `dir` that are not in canonical
/// layout (see [`kiln_iac::fmt`]) and prints their paths. With `check`, changes nothing:
/// prints the path and a unified diff of each such file, and fails with
/// [`CliError::BAD_INPUT`] if there is any. A directory with a syntax error anywhere is
/// reported and left untouched.
pub fn fmt(dir: &Path, check: bool) -> Result<(), CliError> {
    let files = kiln_iac::fmt::format_dir(dir).code(CliError::BAD_INPUT)?;
    let changed: Vec<_> = files.iter().filter(|file| file.changed()).collect();
    if check {
        for file in &changed {
            let name = file.path.display().to_string();
            println!("{name}");
            let diff = similar::TextDiff::from_lines(&file.original, &file.formatted);
            print!(
                "{}",
                diff.unified_diff()
                    .header(&name, &format!("{name} (formatted)"))
            );
        }
        if changed.is_empty() {
            return Ok(());
        }
        return Err(CliError::new(
            CliError::BAD_INPUT,
            anyhow!(
                "{} file(s) not in canonical format: run `kiln fmt {}`",
                changed.len(),
                dir.display()
            ),
        ));
    }
    for file in changed {
        kiln_iac::fmt::write_formatted(file)
            .with_context(|| format!("cannot rewrite {}", file.path.display()))
            .code(CliError::INFRA)?;
        println!("{}", file.path.display());
    }
    Ok(())
}
