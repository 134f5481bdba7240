//! What the commands share: loading a configuration, picking its job, finding the worker
//! binary and the coordinator, tokens, atomic writes, and waiting for a signal.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use kiln_iac::LoadOptions;
use kiln_iac::spec::{Config, JobSpec};
use kiln_proto::CLIENT_TOKEN_HEADER;
use kiln_proto::auth::Credential;
use kiln_proto::v1::coordinator_client::CoordinatorClient;
use kiln_proto::v1::{Job, JobState};
use tonic::transport::Channel;

use super::error::{CliError, ResultExt};

/// Where clients look for a coordinator when nothing else says.
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:7070";

/// Loads the configuration in `dir`, printing its warnings on stderr.
pub(super) fn load(dir: &Path, vars: &LoadOptions) -> Result<Config, CliError> {
    let config = kiln_iac::load_dir_with(dir, vars).bad_input()?;
    print_warnings(&config);
    Ok(config)
}

pub(super) fn print_warnings(config: &Config) {
    if !config.warnings.is_empty() {
        eprintln!("{}", kiln_iac::Diagnostics(config.warnings.clone()));
    }
}

/// The job to run from `config`: the one named, or the only one.
pub(super) fn pick_job<'a>(
    config: &'a Config,
    name: Option<&str>,
) -> Result<&'a JobSpec, CliError> {
    let names = || config.jobs.keys().cloned().collect::<Vec<_>>().join(", ");
    match name {
        Some(name) => config.jobs.get(name).ok_or_else(|| {
            CliError::bad_input(anyhow!(
                "no job named {name:?} in the configuration (jobs: {})",
                names()
            ))
        }),
        None if config.jobs.len() == 1 => Ok(config.jobs.values().next().expect("one job")),
        None if config.jobs.is_empty() => Err(CliError::bad_input(anyhow!(
            "the configuration declares no job"
        ))),
        None => Err(CliError::bad_input(anyhow!(
            "the configuration declares several jobs ({}); pick one with --job",
            names()
        ))),
    }
}

/// The wire spec of `job` on `cluster`, with the files its dataset reads fingerprinted now,
/// when it is submitted, for its model's lineage.
pub(super) fn wire_spec(
    job: &JobSpec,
    cluster: &kiln_iac::spec::ClusterSpec,
) -> Result<kiln_proto::v1::JobSpec, CliError> {
    let mut wire = job.to_wire(cluster);
    if let Some(dataset) = wire.dataset.as_mut() {
        kiln_versions::data::fingerprint(dataset).bad_input()?;
    }
    Ok(wire)
}

/// Where `kiln-worker` is: `$KILN_WORKER_BIN`, else next to this executable.
pub fn worker_binary() -> Result<PathBuf, CliError> {
    if let Some(path) = std::env::var_os("KILN_WORKER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().infra()?;
    let path = exe.with_file_name("kiln-worker");
    if path.is_file() {
        Ok(path)
    } else {
        Err(CliError::infra(anyhow!(
            "kiln-worker not found at {}; build it (cargo build --release --bins) or set KILN_WORKER_BIN",
            path.display()
        )))
    }
}

pub(super) fn random_token() -> String {
    use rand::Rng;
    hex::encode(rand::rng().random::<[u8; 16]>())
}

pub(super) fn read_token(path: &Path) -> Result<String, CliError> {
    read_secret(path, "the join token")
}

/// The secret in the file at `path` (`what` names it in the error), blanks trimmed.
pub(super) fn read_secret(path: &Path, what: &str) -> Result<String, CliError> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {what} from {}", path.display()))
        .bad_input()?
        .trim()
        .to_owned())
}

pub(super) use kiln_proto::files::write_atomically;

pub(super) fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
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

/// What a client command was told to present and trust: `--token-file` and `--tls-ca-file`.
#[derive(Debug, Default, Clone)]
pub struct ClientFlags {
    /// The client token's file.
    pub token_file: Option<PathBuf>,
    /// The CA certificate an `https://` coordinator is verified against.
    pub ca_file: Option<PathBuf>,
}

/// A coordinator as a client command reaches it: its URLs (comma-separated; the leader
/// among them is found), the client token its calls carry and the CA it trusts.
#[derive(Clone)]
pub struct Target {
    /// Coordinator URLs.
    pub urls: String,
    /// The client token, when one was found.
    pub token: Option<String>,
    /// The CA certificate (PEM), when one was given.
    pub ca: Option<Vec<u8>>,
}

impl Target {
    /// `urls`, with the client token from `flags`, else `KILN_TOKEN`, else the file
    /// `token_fallback` (where the coordinator wrote it) if that exists; and the CA from
    /// `flags`, else `ca_fallback`.
    pub fn new(
        urls: String,
        flags: &ClientFlags,
        token_fallback: &Path,
        ca_fallback: Option<&Path>,
    ) -> Result<Self, CliError> {
        let token = match (&flags.token_file, std::env::var("KILN_TOKEN")) {
            (Some(file), _) => Some(read_secret(file, "the client token")?),
            (None, Ok(token)) => Some(token.trim().to_owned()),
            (None, Err(_)) if token_fallback.is_file() => {
                Some(read_secret(token_fallback, "the client token")?)
            }
            (None, Err(_)) => None,
        };
        let ca = match flags.ca_file.as_deref().or(ca_fallback) {
            Some(file) => Some(
                std::fs::read(file)
                    .with_context(|| format!("reading the CA certificate {}", file.display()))
                    .bad_input()?,
            ),
            None => None,
        };
        Ok(Self { urls, token, ca })
    }
}

/// A client of the leading coordinator of `target`: the first URL that answers says whether
/// it leads, or which one does.
pub(super) async fn connect(target: &Target) -> Result<kiln_proto::auth::Client, CliError> {
    let credential = match &target.token {
        Some(token) => Credential::new(CLIENT_TOKEN_HEADER, token, "client token").bad_input()?,
        None => Credential::none(CLIENT_TOKEN_HEADER),
    };
    // A standby that answers while the leadership changes hands (its leader just died, or
    // none is elected yet) is waited for, up to a few election TTLs.
    let deadline = std::time::Instant::now() + LEADER_WAIT;
    loop {
        let mut failure = None;
        let mut standby_answered = false;
        for url in kiln_proto::coordinator_urls(&target.urls) {
            match leader_at(&url, target.ca.as_deref()).await {
                Ok(channel) => {
                    return Ok(CoordinatorClient::with_interceptor(channel, credential));
                }
                Err(Found::Standby(e)) => {
                    standby_answered = true;
                    failure = Some(e);
                }
                Err(Found::Failed(e)) => failure = Some(e),
            }
        }
        let failure = failure.unwrap_or_else(|| {
            CliError::bad_input(anyhow::anyhow!("no coordinator URL in {:?}", target.urls))
        });
        if !standby_answered || std::time::Instant::now() >= deadline {
            return Err(failure);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// How long a client waits for a leader while only standbys answer.
const LEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Why a coordinator URL gave no leader.
enum Found {
    /// A standby answered, but no leader could be reached through it (yet).
    Standby(CliError),
    /// Nothing useful answered there.
    Failed(CliError),
}

async fn reach(url: &str, ca: Option<&[u8]>) -> Result<Channel, CliError> {
    kiln_proto::transport::endpoint(url, ca)
        .bad_input()?
        .connect()
        .await
        .with_context(|| {
            format!(
                "cannot reach the coordinator at {url} ({})",
                kiln_proto::transport::connect_hint(url)
            )
        })
        .infra()
}

/// The coordinator at `url` if it leads, else the leader it names.
async fn leader_at(url: &str, ca: Option<&[u8]>) -> Result<Channel, Found> {
    let channel = reach(url, ca).await.map_err(Found::Failed)?;
    let found = CoordinatorClient::new(channel.clone())
        .find_leader(kiln_proto::v1::FindLeaderRequest {})
        .await
        .map_err(|status| {
            Found::Failed(CliError::infra(anyhow::anyhow!(
                "the coordinator at {url} did not answer: {} ({})",
                status.message(),
                kiln_proto::transport::connect_hint(url)
            )))
        })?
        .into_inner();
    if found.is_leader {
        Ok(channel)
    } else if found.leader_url.is_empty() {
        Err(Found::Standby(CliError::infra(anyhow::anyhow!(
            "the coordinator at {url} is a standby and no leader is elected yet"
        ))))
    } else {
        reach(&found.leader_url, ca).await.map_err(Found::Standby)
    }
}

/// Ctrl-C, SIGTERM and SIGHUP (a closed terminal), listened for from the moment this is
/// made: one that comes before anything awaits it is kept for [`Interrupts::recv`], and never
/// kills the process before it has cleaned up.
pub(super) struct Interrupts {
    signals: Vec<tokio::signal::unix::Signal>,
}

impl Interrupts {
    /// Starts listening (a signal that cannot be listened for is left to its default).
    pub(super) fn listen() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let kinds = [
            SignalKind::interrupt(),
            SignalKind::terminate(),
            SignalKind::hangup(),
        ];
        Self {
            signals: kinds.into_iter().filter_map(|k| signal(k).ok()).collect(),
        }
    }

    /// Resolves on the next of those signals (at once for one that already came).
    pub(super) async fn recv(&mut self) {
        let waits: Vec<_> = self
            .signals
            .iter_mut()
            .map(|s| Box::pin(s.recv()))
            .collect();
        if waits.is_empty() {
            return std::future::pending().await;
        }
        futures::future::select_all(waits).await;
    }
}

pub(super) fn finish(job: Job) -> Result<Job, CliError> {
    match job.state() {
        JobState::Succeeded => Ok(job),
        state => Err(CliError::job_failed(anyhow!(
            "job {} {}: {}",
            job.id,
            state.label(),
            job.message
        ))),
    }
}
