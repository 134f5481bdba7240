//! `kiln coordinator`: a standalone coordinator that serves until it is stopped. On the
//! embedded state it leads at once; on etcd it serves as a standby, campaigns, and leads
//! once elected, until it is stopped or loses its lease.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use kiln_iac::spec::StateSpec;
use tokio_util::sync::CancellationToken;

use crate::control::{Control, LeaseConfig};
use crate::leader::Candidate;
use crate::service::{Server, Serving};
use crate::state::{EmbeddedStore, EtcdStore};
use crate::web::Web;

use super::common::{
    Interrupts, random_token, read_secret, read_token, write_atomically, write_secret,
};
use super::error::{CliError, ResultExt};

/// How `kiln coordinator` serves.
pub struct CoordinatorOptions {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Where the state is: an embedded directory, or etcd.
    pub state: StateSpec,
    /// File holding the join token; `None` generates one into the state directory (embedded
    /// state only: coordinators sharing etcd must share a token).
    pub join_token_file: Option<PathBuf>,
    /// File holding the client token; `None` generates one into the state directory
    /// (embedded state only, as for the join token).
    pub client_token_file: Option<PathBuf>,
    /// URL to announce instead of the bound address.
    pub advertise: Option<String>,
    /// The certificate and key files to serve TLS with; `None` serves plaintext.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// File to write the URL into once the coordinator accepts connections.
    pub ready_file: Option<PathBuf>,
    /// Address of the HTTP listener (metrics, dashboard).
    pub http_listen: SocketAddr,
    /// File to write the HTTP listener's URL into (before `ready_file`).
    pub http_ready_file: Option<PathBuf>,
    /// Worker lease timing.
    pub lease: LeaseConfig,
    /// The election lease of a coordinator on etcd: how soon a standby succeeds a dead leader.
    pub election_ttl: Duration,
}

/// `kiln coordinator`: serves until Ctrl-C or SIGTERM.
pub async fn coordinator(options: CoordinatorOptions) -> Result<(), CliError> {
    // A stop that comes while it starts is kept, so it still shuts down the planned way.
    let mut interrupts = Interrupts::listen();
    match &options.state {
        StateSpec::Embedded { path } => {
            // Opened first: a second coordinator on the state is refused before it touches
            // the token files.
            let store = EmbeddedStore::open(path).infra()?;
            let token = match &options.join_token_file {
                Some(file) => read_token(file)?,
                None => generated_token(path, JOIN_TOKEN_FILE)?,
            };
            let client_token = match &options.client_token_file {
                Some(file) => read_secret(file, "the client token")?,
                None => generated_token(path, CLIENT_TOKEN_FILE)?,
            };
            let (server, web) = listen(&options, client_token).await?;
            server.lead(Control::new(Arc::new(store), token, options.lease).infra()?);
            announce(&server, &web, "", &options)?;
            interrupts.recv().await;
            eprintln!("kiln: shutting down");
            web.stop().await;
            server.shutdown(true).await.infra()
        }
        StateSpec::Etcd { endpoints, prefix } => {
            let (Some(join), Some(client)) = (&options.join_token_file, &options.client_token_file)
            else {
                return Err(CliError::bad_input(anyhow!(
                    "a coordinator on etcd needs --join-token-file and --client-token-file: every coordinator of the state must admit the same workers and clients"
                )));
            };
            let token = read_token(join)?;
            let (server, web) = listen(&options, read_secret(client, "the client token")?).await?;
            announce(&server, &web, " as a standby", &options)?;
            let election = Election {
                endpoints,
                prefix,
                ttl: options.election_ttl,
                join_token: token,
                lease: options.lease,
            };
            let Some(candidate) = lead_on_etcd(&server, election, &mut interrupts).await? else {
                eprintln!("kiln: shutting down");
                web.stop().await;
                return server.shutdown(false).await.infra();
            };
            let result = tokio::select! {
                () = interrupts.recv() => {
                    eprintln!("kiln: shutting down; a standby takes over");
                    Ok(())
                }
                () = candidate.lost() => Err(lost(prefix)),
            };
            // Workers' streams end without a goodbye: they register with the next leader.
            web.stop().await;
            server.shutdown(false).await.infra()?;
            candidate.resign().await;
            result
        }
    }
}

/// How a coordinator on etcd takes part in the election, and what it leads with.
pub(super) struct Election<'a> {
    pub(super) endpoints: &'a [String],
    pub(super) prefix: &'a str,
    pub(super) ttl: Duration,
    pub(super) join_token: String,
    pub(super) lease: LeaseConfig,
}

/// Serves `server` as a standby of the state on etcd, naming the leader, until this
/// coordinator is elected; then it leads. `None` when an interrupt came first (the candidacy
/// is resigned).
pub(super) async fn lead_on_etcd(
    server: &Server,
    election: Election<'_>,
    interrupts: &mut Interrupts,
) -> Result<Option<Candidate>, CliError> {
    let Election {
        endpoints,
        prefix,
        ttl,
        join_token,
        lease,
    } = election;
    let store = tokio::task::spawn_blocking({
        let (endpoints, prefix) = (endpoints.to_vec(), prefix.to_owned());
        move || EtcdStore::connect(&endpoints, &prefix)
    })
    .await
    .context("connecting to etcd")
    .infra()?
    .infra()?;
    let candidate = Candidate::enter(endpoints, prefix, ttl, server.url())
        .await
        .infra()?;
    let watching = CancellationToken::new();
    let elected = tokio::select! {
        key = candidate.campaign() => Some(key.infra()?),
        () = candidate.observe(watching.clone(), |leader| server.follow(leader)) => None,
        () = interrupts.recv() => None,
        () = candidate.lost() => return Err(lost(prefix)),
    };
    watching.cancel();
    let Some(key) = elected else {
        candidate.resign().await;
        return Ok(None);
    };
    let store = store.fenced(key);
    let control =
        tokio::task::spawn_blocking(move || Control::new(Arc::new(store), join_token, lease))
            .await
            .context("loading the state")
            .infra()?
            .infra()?;
    server.lead(control);
    eprintln!(
        "kiln: elected leader of {prefix} on etcd {}",
        endpoints.join(",")
    );
    Ok(Some(candidate))
}

pub(super) fn lost(prefix: &str) -> CliError {
    CliError::infra(anyhow!(
        "lost the leadership of {prefix}: the election lease could not be renewed in time; another coordinator leads now"
    ))
}

/// The election lease of a coordinator on etcd unless told otherwise (`--election-ttl`).
pub(super) const DEFAULT_ELECTION_TTL: Duration = Duration::from_secs(3);

/// Where a coordinator on an embedded state writes the tokens it makes.
pub(super) const JOIN_TOKEN_FILE: &str = "join-token";
/// See [`JOIN_TOKEN_FILE`]; clients on this host read it from there.
pub(super) const CLIENT_TOKEN_FILE: &str = "client-token";

/// The gRPC server (a standby until it leads) and the HTTP listener beside it.
async fn listen(
    options: &CoordinatorOptions,
    client_token: String,
) -> Result<(Server, Web), CliError> {
    let serving = Serving {
        advertise: options.advertise.clone(),
        client_token,
        tls: match &options.tls {
            Some((cert, key)) => Some(identity(cert, key)?),
            None => None,
        },
    };
    let server = Server::standby(options.listen, serving).await.infra()?;
    let web = Web::start(options.http_listen, server.role())
        .await
        .with_context(|| format!("listening on {} (HTTP)", options.http_listen))
        .infra()?;
    Ok((server, web))
}

/// The TLS identity in the PEM files `cert` and `key`.
pub(super) fn identity(cert: &Path, key: &Path) -> Result<tonic::transport::Identity, CliError> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path)
            .with_context(|| format!("reading the TLS {what} from {}", path.display()))
            .bad_input()
    };
    Ok(tonic::transport::Identity::from_pem(
        read(cert, "certificate")?,
        read(key, "key")?,
    ))
}

/// A fresh token, written 0600 into the state directory as `name` (its path is printed,
/// never the token).
fn generated_token(state: &Path, name: &str) -> Result<String, CliError> {
    let path = state.join(name);
    let token = random_token();
    write_secret(&path, &token)
        .with_context(|| format!("writing {}", path.display()))
        .infra()?;
    eprintln!("kiln: {name} written to {}", path.display());
    Ok(token)
}

/// Says where the coordinator listens and writes its URLs to the ready files (the gRPC one
/// last: a supervisor that sees it finds the other).
fn announce(
    server: &Server,
    web: &Web,
    role: &str,
    options: &CoordinatorOptions,
) -> Result<(), CliError> {
    let url = server.url();
    eprintln!(
        "kiln: coordinator listening on {} ({url}){role}; dashboard and metrics on {}",
        server.addr,
        web.url()
    );
    for (file, url) in [
        (&options.http_ready_file, web.url()),
        (&options.ready_file, url),
    ] {
        if let Some(path) = file {
            // A supervisor polling for it never reads half a URL.
            write_atomically(path, url.as_bytes())
                .with_context(|| format!("writing {}", path.display()))
                .infra()?;
        }
    }
    Ok(())
}
