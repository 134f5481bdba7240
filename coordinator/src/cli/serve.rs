//! `kiln coordinator`: a standalone coordinator that serves until it is stopped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::control::{Control, LeaseConfig};
use crate::service::Server;
use crate::state::EmbeddedStore;

use super::common::{Interrupts, random_token, read_token, write_atomically, write_secret};
use super::error::{CliError, ResultExt};

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
    // A stop that comes while it starts is kept, so it still shuts down the planned way.
    let mut interrupts = Interrupts::listen();
    let CoordinatorOptions {
        listen,
        state,
        join_token_file,
        advertise,
        ready_file,
        lease,
    } = options;
    let state = state.as_path();
    let store = EmbeddedStore::open(state).infra()?;
    let token = match join_token_file {
        Some(ref path) => read_token(path)?,
        None => {
            let path = state.join("join-token");
            let token = random_token();
            write_secret(&path, &token).infra()?;
            eprintln!("kiln: join token written to {}", path.display());
            token
        }
    };
    let control = Control::new(Arc::new(store), token, lease).infra()?;
    let server = Server::start(control, listen)
        .await
        .with_context(|| format!("listening on {listen}"))
        .infra()?;
    let url = advertise.unwrap_or_else(|| server.url());
    eprintln!("kiln: coordinator listening on {} ({url})", server.addr);
    if let Some(path) = ready_file {
        // A supervisor polling for it never reads half a URL.
        write_atomically(&path, url.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
            .infra()?;
    }
    interrupts.recv().await;
    eprintln!("kiln: shutting down");
    server.shutdown().await.infra()
}
