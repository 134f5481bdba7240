//! The `kiln` commands. Each returns a [`CliError`] that carries its process exit code:
//! 1 = the job failed or was cancelled, 2 = bad input (HCL, arguments), 3 = infrastructure
//! (coordinator unreachable, state locked, workers could not start).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use kiln_iac::LoadOptions;
use kiln_iac::footprint::{self, Footprint};
use kiln_iac::provider::{LocalProvider, NodeExit, Provider, WorkerLaunch, log_tail};
use kiln_iac::spec::{Config, JobSpec, StateSpec};
use kiln_proto::v1::coordinator_client::CoordinatorClient;
use kiln_proto::v1::{
    CancelJobRequest, GetJobRequest, Job, JobState, ListJobsRequest, ResumeJobRequest,
    SubmitJobRequest,
};
use tonic::transport::Channel;

use crate::control::{Control, LeaseConfig};
use crate::follow::{self, Followed, OnInterrupt};
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

    /// A failure whose explanation is already printed (as JSON, say): only the exit code.
    pub(crate) fn silent(code: u8) -> Self {
        Self::new(code, Reported)
    }

    /// Whether the explanation is already printed.
    pub fn is_reported(&self) -> bool {
        self.error.is::<Reported>()
    }
}

/// The error of a [`CliError::silent`] failure.
#[derive(Debug, thiserror::Error)]
#[error("(reported above)")]
struct Reported;

/// Tags an error with an exit code.
pub(crate) trait ExitCodeExt<T> {
    fn code(self, code: u8) -> Result<T, CliError>;
}

impl<T, E: Into<anyhow::Error>> ExitCodeExt<T> for Result<T, E> {
    fn code(self, code: u8) -> Result<T, CliError> {
        self.map_err(|e| CliError::new(code, e))
    }
}

/// A failed RPC as a CLI error: the coordinator's own message, and the exit code its status
/// code stands for (the request was wrong: 2; the coordinator or the network failed: 3).
pub(crate) fn rpc_error(status: tonic::Status) -> CliError {
    use tonic::Code;
    let code = match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unauthenticated
        | Code::PermissionDenied => CliError::BAD_INPUT,
        _ => CliError::INFRA,
    };
    let mut message = if status.message().is_empty() {
        status.code().description().to_owned()
    } else {
        status.message().to_owned()
    };
    if let Some(source) = std::error::Error::source(&status) {
        message = format!("{message}: {}", kiln_proto::error_chain(source));
    }
    CliError::new(code, anyhow!(message))
}

/// `?` for RPC results: see [`rpc_error`].
pub(crate) trait RpcExt<T> {
    fn rpc(self) -> Result<T, CliError>;
}

impl<T> RpcExt<T> for Result<T, tonic::Status> {
    fn rpc(self) -> Result<T, CliError> {
        self.map_err(rpc_error)
    }
}

/// `kiln validate DIR`: parses and checks every HCL file; prints the diagnostics, as JSON
/// with `json`.
pub fn validate(dir: &Path, vars: &LoadOptions, json: bool) -> Result<(), CliError> {
    match kiln_iac::load_dir_with(dir, vars) {
        Ok(config) if json => {
            println!("{}", kiln_iac::Diagnostics(config.warnings).to_json());
            Ok(())
        }
        Ok(config) => {
            print_warnings(&config);
            println!(
                "{}: valid ({} cluster(s), {} job(s))",
                dir.display(),
                config.clusters.len(),
                config.jobs.len()
            );
            for job in config.jobs.values() {
                let need = Footprint::of_mlp(&job.model, job.training.batch_size);
                println!(
                    "  job {}: model mlp with {} parameters, about {} of memory per worker",
                    job.name,
                    footprint::grouped(need.parameters),
                    footprint::human_bytes(need.bytes)
                );
            }
            Ok(())
        }
        Err(diagnostics) if json => {
            println!("{}", diagnostics.to_json());
            Err(CliError::silent(CliError::BAD_INPUT))
        }
        Err(diagnostics) => Err(CliError::new(CliError::BAD_INPUT, diagnostics)),
    }
}

/// Loads the configuration in `dir`, printing its warnings on stderr.
pub(crate) fn load(dir: &Path, vars: &LoadOptions) -> Result<Config, CliError> {
    let config = kiln_iac::load_dir_with(dir, vars).code(CliError::BAD_INPUT)?;
    print_warnings(&config);
    Ok(config)
}

fn print_warnings(config: &Config) {
    if !config.warnings.is_empty() {
        eprintln!("{}", kiln_iac::Diagnostics(config.warnings.clone()));
    }
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
/// submitted (or, with `resume`, that job resumed) and followed to its end. Everything started
/// is stopped and reaped on the way out, also on Ctrl-C, SIGTERM and SIGHUP.
///
/// A job that an earlier `kiln up` of the same state left unfinished (that process died: the
/// state is free, so it no longer runs) is marked failed and named, never run unannounced.
pub async fn up(
    dir: &Path,
    job_name: Option<&str>,
    vars: &LoadOptions,
    resume: Option<&str>,
) -> Result<Job, CliError> {
    let config = load(dir, vars)?;
    let job = pick_job(&config, job_name)?;
    let cluster = &config.clusters[&job.cluster];
    let worker_bin = worker_binary()?;
    let state = state_dir(&config, job)?;
    let store = EmbeddedStore::open(&state).code(CliError::INFRA)?;
    let cause = "the `kiln up` that ran it died";
    for orphan in Control::abandon_unfinished(&store, cause).code(CliError::INFRA)? {
        eprintln!(
            "kiln: job {orphan} was left unfinished by a `kiln up` that died; it is marked failed (`kiln up {} --resume {orphan}` resumes it from its last checkpoint)",
            dir.display()
        );
    }
    let spec = &cluster.coordinator;
    let token = match &spec.join_token_file {
        Some(path) => read_token(path)?,
        None => random_token(),
    };
    let lease = LeaseConfig {
        heartbeat_interval: spec.heartbeat_interval,
        ttl: spec.lease_ttl,
    };
    let control = Control::new(Arc::new(store), token.clone(), lease).code(CliError::INFRA)?;
    let server = Server::start(control, spec.listen)
        .await
        .with_context(|| format!("starting the coordinator on {}", spec.listen))
        .code(CliError::INFRA)?;
    let url = spec.advertise.clone().unwrap_or_else(|| server.url());
    let log_dir = state.parent().unwrap_or(&state).join("logs");
    eprintln!(
        "kiln: coordinator on {url}; starting {} worker(s) (logs in {})",
        cluster.node_count(),
        log_dir.display()
    );
    let mut provider = LocalProvider::new();
    let launch = WorkerLaunch {
        worker_bin,
        coordinator_url: url,
        join_token: token,
        log_dir,
    };
    let start = match resume {
        Some(id) => Start::Resume(id),
        None => Start::Submit(job),
    };
    let result = run_on_cluster(&mut provider, &server, cluster, &launch, start).await;
    // Workers exit once their streams end; give them a moment, then kill what is left.
    let shutdown = server.shutdown();
    let exits = provider.shutdown(Duration::from_secs(5));
    let (_, exits) = tokio::join!(shutdown, exits);
    for exit in exits.iter().filter(|e| !e.status.success()) {
        tracing::debug!(node = %exit.node.name, status = %exit.status, "worker ended");
    }
    result
}

/// What `kiln up` runs once its cluster is up.
enum Start<'a> {
    Submit(&'a JobSpec),
    Resume(&'a str),
}

async fn run_on_cluster(
    provider: &mut LocalProvider,
    server: &Server,
    cluster: &kiln_iac::spec::ClusterSpec,
    launch: &WorkerLaunch,
    start: Start<'_>,
) -> Result<Job, CliError> {
    provider
        .launch(cluster, launch)
        .await
        .code(CliError::INFRA)?;
    let mut client = connect(&server.url()).await?;
    let (job_id, replacements) = match start {
        Start::Submit(job) => {
            let id = client
                .submit_job(SubmitJobRequest {
                    spec: Some(job.to_wire(cluster)),
                })
                .await
                .rpc()?
                .into_inner()
                .job_id;
            (id, job.restart.max_restarts)
        }
        Start::Resume(id) => {
            let job = client
                .resume_job(ResumeJobRequest {
                    job_id: id.to_owned(),
                    from_step: None,
                })
                .await
                .rpc()?
                .into_inner();
            let restarts = job
                .spec
                .and_then(|s| s.restart)
                .map_or(0, |r| r.max_restarts);
            (job.id, restarts)
        }
    };
    // A node whose worker dies is replaced as often as the job may restart: the coordinator
    // restarts the job from its last checkpoint once the replacement registers.
    let mut replaced = 0;
    let follow = follow::follow(&mut client, &job_id, interrupted(), OnInterrupt::Cancel);
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
                    eprintln!("kiln: {exit}; replaced by pid {} ({count}){}", node.pid, last_words(&exit));
                    continue;
                }
                eprintln!("kiln: {exit}{}", last_words(&exit));
                // A running job fails by itself once the worker's stream breaks; a job still
                // waiting for workers would wait forever, so give up on it.
                match tokio::time::timeout(Duration::from_secs(5), follow).await {
                    Ok(Ok(Followed::Ended(job))) => break Ok(Followed::Ended(job)),
                    _ => return Err(CliError::new(CliError::INFRA, anyhow!("{exit}"))),
                }
            }
        }
    };
    let job = match followed.rpc()? {
        Followed::Ended(job) => job,
        Followed::Detached(job) => return Ok(job),
    };
    if job.state() != JobState::Succeeded {
        // The coordinator may have seen a worker's connection close before the provider saw
        // its process exit: give the provider a moment, so that a death is told with its cause.
        while let Ok(exit) =
            tokio::time::timeout(Duration::from_millis(500), provider.next_exit()).await
        {
            eprintln!("kiln: {exit}{}", last_words(&exit));
        }
    }
    finish(job)
}

/// The last lines of a dead worker's log, indented, after a line naming the file: why it died
/// is usually there (an allocation failure, a panic).
fn last_words(exit: &NodeExit) -> String {
    if exit.status.success() {
        return String::new();
    }
    let log = log_tail(&exit.node.log, 200);
    let lines = without_backtraces(&log);
    let lines: Vec<String> = lines[lines.len().saturating_sub(5)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "; last lines of {}:\n{}",
        exit.node.log.display(),
        lines.join("\n")
    )
}

/// The lines of `log` without the stack backtraces (`RUST_BACKTRACE`) that would bury the
/// message they follow.
fn without_backtraces(log: &str) -> Vec<&str> {
    let mut kept = Vec::new();
    let mut in_trace = false;
    for line in log.lines() {
        if line.starts_with("stack backtrace:") {
            in_trace = true;
        } else if in_trace {
            let frame = line.trim_start();
            let part_of_it = line.starts_with(' ')
                || frame.starts_with("note: Some details are omitted")
                || frame.is_empty();
            if !part_of_it {
                in_trace = false;
                kept.push(line);
            }
        } else if !line.trim().is_empty() {
            kept.push(line);
        }
    }
    kept
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

/// Resolves on Ctrl-C, SIGTERM or SIGHUP (a closed terminal).
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = hup.recv() => {}
    }
}

async fn connect(url: &str) -> Result<CoordinatorClient<Channel>, CliError> {
    CoordinatorClient::connect(url.to_owned())
        .await
        .with_context(|| format!("cannot reach the coordinator at {url}"))
        .code(CliError::INFRA)
}

fn read_token(path: &Path) -> Result<String, CliError> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading the join token from {}", path.display()))
        .code(CliError::BAD_INPUT)?
        .trim()
        .to_owned())
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
        Some(ref path) => read_token(path)?,
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
    let url = coordinator_url(coordinator, &config.dir, Some(&jobs[0].cluster))?;
    let mut client = connect(&url).await?;
    let mut last = None;
    for job in jobs {
        let id = client
            .submit_job(SubmitJobRequest {
                spec: Some(job.to_wire(&config.clusters[&job.cluster])),
            })
            .await
            .rpc()?
            .into_inner()
            .job_id;
        println!("submitted {id}");
        last = Some(id);
    }
    match (follow_it, last) {
        (true, Some(id)) => follow_detachable(&mut client, &id).await.map(Some),
        _ => Ok(None),
    }
}

/// Follows a job that Ctrl-C leaves running: the job when it ended (an error unless it
/// succeeded), or as it was when the user detached.
async fn follow_detachable(
    client: &mut CoordinatorClient<Channel>,
    id: &str,
) -> Result<Job, CliError> {
    match follow::follow(client, id, interrupted(), OnInterrupt::Detach)
        .await
        .rpc()?
    {
        Followed::Ended(job) => finish(job),
        Followed::Detached(job) => Ok(job),
    }
}

/// The coordinator a client command talks to: `explicit` (`--coordinator`,
/// `KILN_COORDINATOR`), else the one `kiln apply` started from `dir` (for `cluster`, when
/// known), else [`DEFAULT_COORDINATOR`]. A recorded coordinator that no longer runs is an
/// error, never a silent fall-back.
pub fn coordinator_url(
    explicit: Option<&str>,
    dir: &Path,
    cluster: Option<&str>,
) -> Result<String, CliError> {
    if let Some(url) = explicit {
        return Ok(url.to_owned());
    }
    let applied: Vec<_> = crate::infra::applied_coordinators(dir)?
        .into_iter()
        .filter(|c| cluster.is_none_or(|name| c.cluster == name))
        .collect();
    match applied.as_slice() {
        [] => Ok(DEFAULT_COORDINATOR.to_owned()),
        [one] => match &one.gone {
            None => Ok(one.url.clone()),
            Some(why) => Err(CliError::new(
                CliError::INFRA,
                anyhow!(
                    "the coordinator `kiln apply` started for cluster {:?} in {} is not running ({why}); run `kiln apply` there to start it again",
                    one.cluster,
                    dir.display()
                ),
            )),
        },
        several => Err(CliError::new(
            CliError::BAD_INPUT,
            anyhow!(
                "{} has coordinators for several clusters ({}); pick one with --coordinator URL",
                dir.display(),
                several
                    .iter()
                    .map(|c| format!("{} at {}", c.cluster, c.url))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// `kiln status [JOB] [--follow]`: one job in detail (followed until it ends with `follow`,
/// which Ctrl-C leaves running), or a table of all jobs.
pub async fn status(
    coordinator: &str,
    job: Option<&str>,
    json: bool,
    follow_it: bool,
) -> Result<(), CliError> {
    let mut client = connect(coordinator).await?;
    if follow_it {
        let id = job.ok_or_else(|| {
            CliError::new(
                CliError::BAD_INPUT,
                anyhow!("--follow takes a job: kiln status -f JOB"),
            )
        })?;
        follow_detachable(&mut client, id).await?;
        return Ok(());
    }
    let jobs = match job {
        Some(id) => vec![
            client
                .get_job(GetJobRequest {
                    job_id: id.to_owned(),
                })
                .await
                .rpc()?
                .into_inner(),
        ],
        None => {
            client
                .list_jobs(ListJobsRequest {})
                .await
                .rpc()?
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
        follow::print_summary(&jobs[0]);
    } else {
        println!(
            "{:<24} {:<10} {:>5} {:>12} {:>9} {:>9}",
            "JOB", "STATE", "GEN", "STEP", "VAL_ACC", "ELAPSED"
        );
        for job in &jobs {
            let m = job.metrics.unwrap_or_default();
            let acc = m
                .val_accuracy
                .map_or_else(|| "-".into(), |a| format!("{a:.4}"));
            println!(
                "{:<24} {:<10} {:>5} {:>12} {:>9} {:>8.1}s",
                job.id,
                job.state().label(),
                job.generation,
                format!("{}/{}", m.step, m.total_steps),
                acc,
                follow::elapsed(job).as_secs_f64()
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
        "elapsed_secs": follow::elapsed(job).as_secs_f64(),
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
        .rpc()?
        .into_inner();
    println!("{}: {}", job.id, job.message);
    if follow_it {
        follow_detachable(&mut client, &job.id).await?;
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
        .rpc()?
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backtrace_does_not_bury_the_message_before_it() {
        let log = "INFO registered\nmemory allocation of 160000000000 bytes failed\nstack backtrace:\n   0: std::alloc\n             at /rustc/x/alloc.rs:1\nnote: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.\n";
        assert_eq!(
            without_backtraces(log),
            [
                "INFO registered",
                "memory allocation of 160000000000 bytes failed"
            ]
        );
        assert_eq!(
            without_backtraces("a\nstack backtrace:\n  0: f\nthen\n"),
            ["a", "then"]
        );
    }
}
