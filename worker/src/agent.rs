//! The worker agent: registers with the coordinator (join token), keeps its lease alive with
//! heartbeats, and runs the assignments the coordinator streams to it, one at a time.
//!
//! The agent follows its coordinator: when the coordinator says goodbye on the assignment
//! stream (a planned shutdown) it exits. When the coordinator is lost instead (the stream
//! breaks or ends without a goodbye, the lease cannot be renewed for a whole TTL, or a
//! restarted coordinator no longer knows this worker) it aborts the running task and registers
//! again with backoff, for up to `reconnect_timeout`, then exits: a dead coordinator never
//! leaves workers behind for long.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_proto::auth::Credential;
use kiln_proto::error_chain;
use kiln_proto::v1::coordinator_client::CoordinatorClient;
use kiln_proto::v1::{
    Assignment, AssignmentsRequest, CheckpointReport, HeartbeatRequest, LogBatch, Metrics,
    ProgressReport, RegisterRequest, RegisterResponse, TaskEnd, worker_command::Command,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::checkpoint::CheckpointStore;
use crate::collective::AbortHandle;
use crate::collective::ring::RingCollective;
use crate::model::Registry;
use crate::spec::TrainSpec;
use crate::train::{self, CheckpointMode, Observer, Task};

/// How long one attempt to connect to a coordinator may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long ranks wait for each other to form the ring.
const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the agent connects and how it presents itself.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Coordinator URLs, e.g. `http://127.0.0.1:7070` (not empty): one, or every coordinator
    /// of a state on etcd, of which one leads.
    pub coordinators: Vec<String>,
    /// The CA certificate (PEM) an `https://` coordinator is verified against.
    pub ca: Option<Vec<u8>>,
    /// Secret that admits this worker.
    pub join_token: String,
    /// Name reported to the coordinator (the provider's node name).
    pub node_name: String,
    /// Address the collective listener binds (port 0 = any free port).
    pub collective_bind: SocketAddr,
    /// How long to keep trying to reach the coordinator at start.
    pub connect_timeout: Duration,
    /// How long to keep trying to get back to a coordinator that was lost (crashed or
    /// restarting) before giving up and exiting.
    pub reconnect_timeout: Duration,
    /// The model kinds this binary trains (advertised when it registers).
    pub registry: Arc<Registry>,
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The collective listener could not be bound.
    #[error("cannot bind the collective listener on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The coordinator could not be reached before the deadline.
    #[error("cannot reach the coordinator at {url}")]
    Connect {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// A coordinator URL that cannot be connected to as given.
    #[error(transparent)]
    Endpoint(#[from] kiln_proto::transport::EndpointError),
    /// A call failed for good: the coordinator refused it (e.g. a wrong join token), or it
    /// could not be made before the deadline.
    #[error("{call} failed: {status}")]
    Rpc {
        /// Which call.
        call: &'static str,
        /// The status it returned.
        status: tonic::Status,
    },
    /// The lease could not be renewed for a whole TTL.
    #[error("lost the lease: no successful heartbeat for {0:?}")]
    LeaseLost(Duration),
    /// The SIGTERM handler could not be installed.
    #[error("cannot handle SIGTERM")]
    Signal(#[source] std::io::Error),
}

/// What every task of this worker uses: its collective listener (bound once, for the life
/// of the process) and the model kinds it trains.
struct Host {
    listener: TcpListener,
    registry: Arc<Registry>,
}

/// A task the agent is running.
struct Running {
    job_id: String,
    generation: u64,
    cancel: Arc<AtomicBool>,
    /// Set on SIGTERM: the ranks stop together after a checkpoint (see `train::Context::leave`).
    leave: Arc<AtomicBool>,
    abort: Arc<Mutex<Option<AbortHandle>>>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    fn stop(&self) {
        self.cancel.store(true, Ordering::SeqCst);
        if let Some(abort) = lock(&self.abort).as_ref() {
            abort.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How a session with the coordinator ended.
enum SessionEnd {
    /// The coordinator said goodbye (a planned shutdown), or this worker was asked to leave.
    Closed,
    /// The coordinator became unreachable or forgot this worker (it crashed or restarted).
    Lost(String),
}

/// Runs the agent: registers, runs assignments, and after losing the coordinator registers
/// again (with backoff, for up to `reconnect_timeout`), so a restarted coordinator gets its
/// workers back. Returns `Ok` when the coordinator said goodbye (a planned
/// shutdown), an error when it refused this worker or stayed away too long.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    let listener =
        TcpListener::bind(config.collective_bind).map_err(|source| AgentError::Bind {
            addr: config.collective_bind,
            source,
        })?;
    let collective_addr = listener.local_addr().map_err(|source| AgentError::Bind {
        addr: config.collective_bind,
        source,
    })?;
    let host = Arc::new(Host {
        listener,
        registry: config.registry.clone(),
    });
    // SIGTERM is a request to leave: preemption, a scale-down, `kiln destroy`.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(AgentError::Signal)?;
    let mut timeout = config.connect_timeout;
    loop {
        let (client, registered) = register(&config, collective_addr, timeout).await?;
        match session(client, registered, host.clone(), &mut sigterm).await? {
            SessionEnd::Closed => return Ok(()),
            SessionEnd::Lost(cause) => {
                tracing::warn!(%cause, "lost the coordinator; registering again");
                timeout = config.reconnect_timeout;
            }
        }
    }
}

/// SHA-256 of this process's executable, computed once: the lineage of what it trains.
fn binary_sha256() -> Option<String> {
    static HASH: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let exe = std::env::current_exe().ok()?;
        let bytes = std::fs::read(exe).ok()?;
        Some(kiln_proto::manifest::sha256_hex(&bytes))
    })
    .clone()
}

/// Connects and registers, retrying while no coordinator is reachable for up to `timeout`.
/// The coordinators are tried in turn; a standby's refusal names the leader, tried next.
async fn register(
    config: &AgentConfig,
    collective_addr: SocketAddr,
    timeout: Duration,
) -> Result<(Client, RegisterResponse), AgentError> {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(50);
    let mut turn = 0;
    let mut leader = None;
    loop {
        let url = leader.take().unwrap_or_else(|| {
            turn += 1;
            config.coordinators[(turn - 1) % config.coordinators.len()].clone()
        });
        let last_chance = Instant::now() >= deadline;
        match register_at(config, &url, collective_addr).await {
            Ok(registered) => return Ok(registered),
            Err(Attempt::Standby(Some(hint))) if hint != url && !last_chance => {
                tracing::info!(standby = %url, leader = %hint, "following the leader");
                leader = Some(hint);
                continue;
            }
            Err(Attempt::Refused(e)) => return Err(e),
            Err(Attempt::Failed(e)) if last_chance => return Err(e),
            Err(Attempt::Standby(_)) if last_chance => {
                return Err(AgentError::Rpc {
                    call: "Register",
                    status: tonic::Status::unavailable(format!(
                        "no coordinator of {} leads",
                        config.coordinators.join(",")
                    )),
                });
            }
            Err(_) => {}
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Why one registration attempt did not succeed.
enum Attempt {
    /// A standby answered, naming the leader when it knows one.
    Standby(Option<String>),
    /// Unreachable, starting, shutting down: another try may succeed.
    Failed(AgentError),
    /// A refusal that retrying cannot change: the token or the request is wrong.
    Refused(AgentError),
}

/// Registers with the coordinator at `url`, once.
async fn register_at(
    config: &AgentConfig,
    url: &str,
    collective_addr: SocketAddr,
) -> Result<(Client, RegisterResponse), Attempt> {
    let channel = connect(url, config.ca.as_deref())
        .await
        .map_err(|e| match e {
            AgentError::Endpoint(_) => Attempt::Refused(e),
            e => Attempt::Failed(e),
        })?;
    let mut client = CoordinatorClient::new(channel.clone());
    let request = RegisterRequest {
        join_token: config.join_token.clone(),
        collective_addr: collective_addr.to_string(),
        node_name: config.node_name.clone(),
        pid: std::process::id(),
        model_kinds: config.registry.names(),
        resources: Some(crate::resources::probe()),
        binary_sha256: binary_sha256().unwrap_or_default(),
    };
    let rpc = |status| AgentError::Rpc {
        call: "Register",
        status,
    };
    match client.register(request).await {
        Ok(response) => {
            let response = response.into_inner();
            let secret = Credential::new(
                kiln_proto::WORKER_SECRET_HEADER,
                &response.worker_secret,
                "worker secret",
            )
            .map_err(|e| Attempt::Refused(rpc(tonic::Status::internal(e.to_string()))))?;
            Ok((
                CoordinatorClient::with_interceptor(channel, secret),
                response,
            ))
        }
        Err(status) if kiln_proto::standby_refusal(&status).is_some() => Err(Attempt::Standby(
            kiln_proto::standby_refusal(&status).flatten(),
        )),
        Err(status) if is_refusal(status.code()) => Err(Attempt::Refused(rpc(status))),
        // Still starting, shutting down, or killed mid-call (a transport failure reads as
        // `Unknown` or `Cancelled` as often as `Unavailable`): try again. Said with what to
        // check, should it be the last try (plaintext to a TLS port reads as `Internal`).
        Err(status) => Err(Attempt::Failed(rpc(tonic::Status::new(
            status.code(),
            format!(
                "{} ({})",
                status.message(),
                kiln_proto::transport::connect_hint(url)
            ),
        )))),
    }
}

/// The coordinator's client as a registered worker: every RPC carries its secret.
type Client = kiln_proto::auth::Client;

/// A coordinator's answer that retrying cannot change: the token or the request is wrong.
fn is_refusal(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unauthenticated
            | tonic::Code::PermissionDenied
            | tonic::Code::InvalidArgument
            | tonic::Code::FailedPrecondition
    )
}

/// One registration's worth of work: heartbeats and assignments until the coordinator closes
/// the stream or is lost. The running task is stopped either way.
async fn session(
    mut client: Client,
    registered: RegisterResponse,
    host: Arc<Host>,
    sigterm: &mut tokio::signal::unix::Signal,
) -> Result<SessionEnd, AgentError> {
    let worker_id = registered.worker_id;
    tracing::info!(%worker_id, "registered");

    let shutdown = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat_loop(
        client.clone(),
        worker_id.clone(),
        Duration::from_millis(u64::from(registered.heartbeat_interval_ms.max(50))),
        Duration::from_millis(u64::from(registered.lease_ttl_ms.max(100))),
        shutdown.clone(),
    ));

    let stream = client
        .assignments(AssignmentsRequest {
            worker_id: worker_id.clone(),
        })
        .await;
    let mut stream = match stream {
        Ok(stream) => stream.into_inner(),
        Err(status) => {
            shutdown.cancel();
            return Ok(SessionEnd::Lost(format!("Assignments: {status}")));
        }
    };

    let mut current: Option<Running> = None;
    let mut leaving = false;
    let end = loop {
        let message = tokio::select! {
            m = stream.message() => m,
            () = shutdown.cancelled() => break SessionEnd::Lost("the lease could not be renewed".into()),
            _ = sigterm.recv(), if !leaving => match &current {
                Some(running) => {
                    tracing::info!("SIGTERM: leaving after a checkpoint at the next step boundary");
                    running.leave.store(true, Ordering::SeqCst);
                    leaving = true;
                    continue;
                }
                None => {
                    tracing::info!("SIGTERM: leaving");
                    break SessionEnd::Closed;
                }
            },
            _ = async {
                match current.as_mut() {
                    Some(running) => (&mut running.done).await,
                    None => std::future::pending().await,
                }
            }, if leaving => {
                // The task has reported its end (after the checkpoint): leave.
                current = None;
                break SessionEnd::Closed;
            }
        };
        let command = match message {
            Ok(Some(cmd)) => cmd.command,
            Ok(None) => {
                break SessionEnd::Lost("the assignment stream ended without a goodbye".into());
            }
            Err(status) => break SessionEnd::Lost(format!("assignment stream broke: {status}")),
        };
        match command {
            Some(Command::Assign(assignment)) => {
                if let Some(old) = current.take() {
                    // The coordinator only assigns idle workers; a stale task is stopped first.
                    old.stop();
                    let _ = old.done.await;
                }
                current = Some(start_task(
                    assignment,
                    client.clone(),
                    worker_id.clone(),
                    host.clone(),
                ));
            }
            Some(Command::Goodbye(goodbye)) => {
                tracing::info!(reason = %goodbye.reason, "the coordinator said goodbye; exiting");
                break SessionEnd::Closed;
            }
            Some(Command::Cancel(cancel)) => {
                if let Some(running) = current
                    .as_ref()
                    .filter(|r| r.job_id == cancel.job_id && r.generation == cancel.generation)
                {
                    tracing::info!(job = %cancel.job_id, reason = %cancel.reason, "cancelling task");
                    running.stop();
                }
            }
            None => {}
        }
    };
    shutdown.cancel();
    if let Some(running) = current.take() {
        running.stop();
        let _ = running.done.await;
    }
    match heartbeat.await {
        // A refused call (e.g. the restarted coordinator does not know this worker id) is a
        // lost coordinator too: register again.
        Ok(Err(e)) => {
            tracing::info!(error = %error_chain(&e), "heartbeats stopped");
            match end {
                SessionEnd::Closed => Ok(SessionEnd::Closed),
                lost => Ok(lost),
            }
        }
        _ => Ok(end),
    }
}

/// Connects to the coordinator at `url`, once.
async fn connect(url: &str, ca: Option<&[u8]>) -> Result<Channel, AgentError> {
    kiln_proto::transport::endpoint(url, ca)?
        .connect_timeout(CONNECT_TIMEOUT)
        .connect()
        .await
        .map_err(|source| AgentError::Connect {
            url: url.to_owned(),
            source,
        })
}

/// Renews the lease every `interval`. Cancels `shutdown` (and fails) when no heartbeat has
/// succeeded for `ttl`, or when the coordinator no longer knows this worker.
async fn heartbeat_loop(
    mut client: Client,
    worker_id: String,
    interval: Duration,
    ttl: Duration,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let mut last_ok = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return Ok(()),
        }
        let request = HeartbeatRequest {
            worker_id: worker_id.clone(),
        };
        match tokio::time::timeout(
            interval.max(Duration::from_millis(500)),
            client.heartbeat(request),
        )
        .await
        {
            Ok(Ok(_)) => last_ok = Instant::now(),
            Ok(Err(status)) if status.code() == tonic::Code::NotFound => {
                shutdown.cancel();
                return Err(AgentError::Rpc {
                    call: "Heartbeat",
                    status,
                });
            }
            _ if last_ok.elapsed() > ttl => {
                shutdown.cancel();
                return Err(AgentError::LeaseLost(last_ok.elapsed()));
            }
            _ => {}
        }
    }
}

/// What the training thread reports, forwarded to the coordinator in order.
enum Report {
    /// Metrics, a note for the user, or both.
    Progress {
        metrics: Option<Metrics>,
        note: String,
    },
    Checkpoint {
        step: u64,
        url: String,
        commit_seconds: f64,
    },
}

struct ChannelObserver(mpsc::UnboundedSender<Report>);

impl Observer for ChannelObserver {
    fn progress(&mut self, metrics: &Metrics) {
        let _ = self.0.send(Report::Progress {
            metrics: Some(*metrics),
            note: String::new(),
        });
    }
    fn checkpoint(&mut self, step: u64, manifest_url: &str, commit_seconds: f64) {
        let _ = self.0.send(Report::Checkpoint {
            step,
            url: manifest_url.to_owned(),
            commit_seconds,
        });
    }
    fn note(&mut self, message: &str) {
        let _ = self.0.send(Report::Progress {
            metrics: None,
            note: message.to_owned(),
        });
    }
}

fn start_task(
    assignment: Assignment,
    mut client: Client,
    worker_id: String,
    host: Arc<Host>,
) -> Running {
    let cancel = Arc::new(AtomicBool::new(false));
    let leave = Arc::new(AtomicBool::new(false));
    let abort = Arc::new(Mutex::new(None));
    let (job_id, generation) = (assignment.job_id.clone(), assignment.generation);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (capturing, lines) = crate::logs::capture();
    let shipping = tokio::spawn(crate::logs::ship(
        client.clone(),
        LogBatch {
            worker_id: worker_id.clone(),
            job_id: job_id.clone(),
            generation,
            rank: assignment.rank,
            lines: Vec::new(),
        },
        lines,
    ));

    let forward = {
        let mut client = client.clone();
        let (worker_id, job_id) = (worker_id.clone(), job_id.clone());
        tokio::spawn(async move {
            while let Some(report) = rx.recv().await {
                let result = match report {
                    Report::Progress { metrics, note } => client
                        .report_progress(ProgressReport {
                            worker_id: worker_id.clone(),
                            job_id: job_id.clone(),
                            generation,
                            metrics,
                            note,
                        })
                        .await
                        .map(drop),
                    Report::Checkpoint {
                        step,
                        url,
                        commit_seconds,
                    } => client
                        .report_checkpoint(CheckpointReport {
                            worker_id: worker_id.clone(),
                            job_id: job_id.clone(),
                            generation,
                            step,
                            manifest_url: url,
                            commit_seconds,
                        })
                        .await
                        .map(drop),
                };
                if let Err(status) = result {
                    tracing::warn!(%status, "could not report to the coordinator");
                }
            }
        })
    };

    let training = {
        let (cancel, leave, abort) = (cancel.clone(), leave.clone(), abort.clone());
        let link = Link {
            runtime: tokio::runtime::Handle::current(),
            #[cfg(feature = "cuda")]
            client: client.clone(),
            #[cfg(feature = "cuda")]
            worker_id: worker_id.clone(),
        };
        tokio::task::spawn_blocking(move || {
            run_task(&assignment, &host, &cancel, &leave, &abort, &link, tx)
        })
    };

    let done = {
        let job_id = job_id.clone();
        tokio::spawn(async move {
            let result = training
                .await
                .unwrap_or_else(|e| Err(format!("training thread panicked: {e}").into()));
            // Progress and checkpoint reports, and the task's log lines, go out before the
            // end of the task.
            let _ = forward.await;
            if let Err(e) = &result {
                tracing::warn!("the task ended: {}", e.message);
            }
            drop(capturing);
            let _ = shipping.await;
            let end = match result {
                Ok(outcome) => TaskEnd {
                    ok: true,
                    params_digest: outcome.params_digest(),
                    final_metrics: Some(outcome.metrics),
                    reference: outcome.reference.into_iter().map(Into::into).collect(),
                    ..TaskEnd::default()
                },
                Err(e) => TaskEnd {
                    error: e.message,
                    peer_failed: e.peer,
                    preempted: e.left.is_some(),
                    checkpoint_step: e.left.flatten(),
                    refused: e.refused,
                    ..TaskEnd::default()
                },
            };
            if let Err(status) = client
                .report_task_end(TaskEnd {
                    worker_id,
                    job_id,
                    generation,
                    ..end
                })
                .await
            {
                tracing::warn!(%status, "could not report the end of the task");
            }
        })
    };
    Running {
        job_id,
        generation,
        cancel,
        leave,
        abort,
        done,
    }
}

/// Why a task failed, rendered with its causes for the coordinator.
struct TaskFailure {
    message: String,
    /// A peer of the collective failed, vanished or left: a symptom, whose cause the
    /// coordinator learns about on its own.
    peer: bool,
    /// This worker left on SIGTERM, with the checkpoint committed at the stop (if any).
    left: Option<Option<u64>>,
    /// This worker cannot run the task at all: no restart would help.
    refused: bool,
}

impl From<String> for TaskFailure {
    fn from(message: String) -> Self {
        Self {
            message,
            peer: false,
            left: None,
            refused: false,
        }
    }
}

impl From<&str> for TaskFailure {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
}

/// Fails a task that asks for what this worker cannot do, before it joins the ring.
fn refuse_unbuilt(spec: &TrainSpec, registry: &Registry) -> Result<(), TaskFailure> {
    let missing = crate::resources::missing(&spec.backend, &spec.collective).or_else(|| {
        (!registry.offers(&spec.model_kind)).then(|| {
            format!(
                "this worker binary does not offer model kind {:?} (it offers {})",
                spec.model_kind,
                registry.names().join(", ")
            )
        })
    });
    match missing {
        Some(why) => Err(TaskFailure {
            refused: true,
            ..why.into()
        }),
        None => Ok(()),
    }
}

/// How a task's thread reaches the coordinator: the runtime for its calls, and (for the NCCL
/// rendezvous) the client and this worker's id.
struct Link {
    runtime: tokio::runtime::Handle,
    #[cfg(feature = "cuda")]
    client: Client,
    #[cfg(feature = "cuda")]
    worker_id: String,
}

/// Runs one assignment on this thread.
fn run_task(
    assignment: &Assignment,
    host: &Host,
    cancel: &AtomicBool,
    leave: &AtomicBool,
    abort: &Mutex<Option<AbortHandle>>,
    link: &Link,
    reports: mpsc::UnboundedSender<Report>,
) -> Result<train::Outcome, TaskFailure> {
    let runtime = &link.runtime;
    let wire = assignment
        .spec
        .as_ref()
        .ok_or("assignment without a job spec")?;
    // Decoded once; no restart would mend a spec this worker cannot train from.
    let spec = TrainSpec::try_from(wire).map_err(|e| TaskFailure {
        refused: true,
        ..e.to_string().into()
    })?;
    refuse_unbuilt(&spec, &host.registry)?;
    let peers = assignment
        .peers
        .iter()
        .map(|p| {
            p.parse::<SocketAddr>()
                .map_err(|e| format!("peer address {p:?}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let session = session_id(&assignment.job_id, assignment.generation);
    let mut ring = RingCollective::connect(
        &host.listener,
        assignment.rank as usize,
        &peers,
        session,
        RENDEZVOUS_TIMEOUT,
    )
    .map_err(|e| TaskFailure {
        peer: true,
        ..error_chain(&e).into()
    })?;
    *lock(abort) = Some(ring.abort_handle());
    if cancel.load(Ordering::SeqCst) {
        return Err("cancelled".into());
    }
    let options = wire.storage_options.clone().unwrap_or_default();
    let store = if wire.storage_url.is_empty() {
        None
    } else {
        let store = CheckpointStore::open(&wire.storage_url, &options, &assignment.job_id)
            .map_err(|e| error_chain(&e))?;
        // Never write into (or delete from) a job directory another coordinator claimed.
        runtime
            .block_on(store.job().check_claim(&assignment.store_owner))
            .map_err(|e| error_chain(&e))?;
        Some(store)
    };
    let mut spec = spec;
    runtime
        .block_on(crate::data::pinned::fetch(
            &mut spec.dataset,
            &options,
            &kiln_versions::data::cache_dir(),
        ))
        .map_err(|e| TaskFailure {
            // Data that is gone or does not verify stays so on every restart.
            refused: matches!(
                e,
                kiln_versions::data::DataError::Corrupt { .. }
                    | kiln_versions::data::DataError::NotFound(_)
            ) || e.is_bad_input(),
            ..error_chain(&e).into()
        })?;
    let task = Task {
        job_id: assignment.job_id.clone(),
        spec,
        resume_step: assignment.resume_step,
    };
    let mut observer = ChannelObserver(reports);
    // Both contexts differ only in the device; the macro keeps them one list.
    macro_rules! context {
        ($device:expr) => {
            train::Context {
                device: $device,
                collective: &mut ring,
                device_reduce: None,
                store: store.as_ref(),
                runtime,
                cancel,
                leave,
                observer: &mut observer,
            }
        };
    }
    let mode = CheckpointMode::Background;
    let trained = match task.spec.backend.as_str() {
        // The host-staged ring: gradients go through host memory between the GPUs.
        #[cfg(feature = "cuda")]
        "cuda" => {
            let device = crate::gpu::device().map_err(|why| TaskFailure {
                refused: true,
                ..why.into()
            })?;
            let mut nccl = match task.spec.collective.as_str() {
                "nccl" => Some(join_nccl(
                    assignment, &task.spec, &device, &ring, link, cancel,
                )?),
                _ => None,
            };
            let mut ctx = context!(device);
            ctx.device_reduce = nccl
                .as_mut()
                .map(|n| n as &mut dyn crate::collective::DeviceReduce<_>);
            host.registry.train_on_gpu(&task, ctx, mode)
        }
        _ => host
            .registry
            .train(&task, context!(Default::default()), mode),
    };
    trained.map_err(|e| {
        let this_one_left = leave.load(Ordering::SeqCst);
        let left = match e {
            train::TrainError::Left { checkpoint, .. } if this_one_left => Some(checkpoint),
            _ => None,
        };
        TaskFailure {
            peer: matches!(
                e,
                train::TrainError::Collective(_) | train::TrainError::Left { .. }
            ) && left.is_none(),
            left,
            // Data that cannot be read and a model that cannot be built stay so on
            // every worker and every restart.
            refused: matches!(e, train::TrainError::Data(_) | train::TrainError::Spec(_)),
            message: error_chain(&e),
        }
    })
}

/// Joins this generation's NCCL communicator: rank 0 makes the unique id and publishes it
/// through the coordinator, the others fetch it there; every rank then joins, and rank 0's
/// join returns only once all have.
#[cfg(feature = "cuda")]
fn join_nccl(
    assignment: &Assignment,
    spec: &TrainSpec,
    device: &cubecl::cuda::CudaDevice,
    ring: &RingCollective,
    link: &Link,
    cancel: &AtomicBool,
) -> Result<crate::collective::nccl::NcclReduce, TaskFailure> {
    use crate::collective::nccl;
    let refused = |e: crate::collective::CollectiveError| TaskFailure {
        refused: true,
        ..error_chain(&e).into()
    };
    let version = nccl::version().map_err(refused)?;
    tracing::info!(%version, "NCCL");
    let mut client = link.client.clone();
    let (worker_id, job_id, generation) = (
        link.worker_id.clone(),
        assignment.job_id.clone(),
        assignment.generation,
    );
    let rpc = |call: &str, status: tonic::Status| -> TaskFailure {
        format!("{call} of the NCCL id: {}", status.message()).into()
    };
    let id = if assignment.rank == 0 {
        let id = nccl::unique_id().map_err(refused)?;
        let request = kiln_proto::v1::PublishCollectiveIdRequest {
            worker_id,
            job_id,
            generation,
            id: id.clone(),
        };
        link.runtime
            .block_on(client.publish_collective_id(request))
            .map_err(|s| rpc("publishing", s))?;
        id
    } else {
        let request = kiln_proto::v1::GetCollectiveIdRequest {
            worker_id,
            job_id,
            generation,
        };
        let deadline = Instant::now() + RENDEZVOUS_TIMEOUT;
        loop {
            let id = link
                .runtime
                .block_on(client.get_collective_id(request.clone()))
                .map_err(|s| rpc("fetching", s))?
                .into_inner()
                .id;
            if !id.is_empty() {
                break id;
            }
            if cancel.load(Ordering::SeqCst) {
                return Err("cancelled".into());
            }
            if Instant::now() > deadline {
                return Err(TaskFailure {
                    peer: true,
                    ..format!("rank 0 published no NCCL id within {RENDEZVOUS_TIMEOUT:?}").into()
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    nccl::NcclReduce::join(
        &id,
        assignment.rank as usize,
        assignment.peers.len(),
        device.index,
        spec.bucket_bytes,
        RENDEZVOUS_TIMEOUT,
        ring.abort_handle(),
    )
    .map_err(|e| TaskFailure {
        peer: true,
        ..error_chain(&e).into()
    })
}

/// Identifies one generation's ring, so a late connection from an older one is refused.
fn session_id(job_id: &str, generation: u64) -> u64 {
    use std::hash::{Hash, Hasher};
    // DefaultHasher with fixed keys is deterministic across processes of the same build.
    let mut h = std::hash::DefaultHasher::new();
    job_id.hash(&mut h);
    generation.hash(&mut h);
    h.finish()
}
