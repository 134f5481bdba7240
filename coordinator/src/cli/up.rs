//! `kiln up`: the whole job on the embedded default, in one process and its workers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use kiln_iac::LoadOptions;
use kiln_iac::provider::{AnyProvider, NodeExit, Provider, WorkerLaunch, log_tail};
use kiln_iac::spec::{JobSpec, ProviderKind, StateSpec};
use kiln_proto::v1::{
    CancelJobRequest, GetJobRequest, Job, JobState, ResumeJobRequest, SubmitJobRequest,
};

use crate::control::{Control, LeaseConfig};
use crate::follow::{self, Followed, OnInterrupt};
use crate::service::{Server, Serving};
use crate::state::EmbeddedStore;
use crate::web::{self, Web};

use super::jobs::DEFAULT_STATE_DIR;
use super::serve::{DEFAULT_ELECTION_TTL, Election, lead_on_etcd};

use super::common::{
    Interrupts, Target, connect, finish, load, pick_job, random_token, read_token, worker_binary,
    write_secret,
};
use super::error::{CliError, ResultExt};

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
    // From here on a signal cancels the job and stops the cluster, whenever it comes.
    let mut interrupts = Interrupts::listen();
    let config = load(dir, vars)?;
    let job = pick_job(&config, job_name)?;
    let cluster = &config.clusters[&job.cluster];
    let worker_bin = match &cluster.worker.binary {
        Some(binary) => binary.clone(),
        None => worker_binary()?,
    };
    let spec = &cluster.coordinator;
    if spec.replicas > 1 {
        eprintln!(
            "kiln: `kiln up` runs one coordinator; `replicas = {}` applies to `kiln apply`",
            spec.replicas
        );
    }
    let token = match &spec.join_token_file {
        Some(path) => read_token(path)?,
        None => random_token(),
    };
    let lease = LeaseConfig {
        heartbeat_interval: spec.heartbeat_interval,
        ttl: spec.lease_ttl,
    };
    let client_token = random_token();
    let serving = Serving {
        advertise: spec.advertise.clone(),
        client_token: client_token.clone(),
        tls: match &spec.tls {
            Some(tls) => Some(super::serve::identity(&tls.cert_file, &tls.key_file)?),
            None => None,
        },
    };
    let listening = |e| {
        CliError::infra(
            anyhow::Error::new(e).context(format!("starting the coordinator on {}", spec.listen)),
        )
    };
    // The embedded state is this process's alone; an etcd one is shared, and this `kiln up`
    // leads it once elected (what another leader left running resumes under it).
    let (state, server, candidate) = match &cluster.state {
        StateSpec::Embedded { path } => {
            let store = EmbeddedStore::open(path).infra()?;
            let cause = "the `kiln up` that ran it died";
            for orphan in Control::abandon_unfinished(&store, cause).infra()? {
                eprintln!(
                    "kiln: job {orphan} was left unfinished by a `kiln up` that died; it is marked failed (`kiln up {} --resume {orphan}` resumes it from its last checkpoint)",
                    dir.display()
                );
            }
            let control = Control::new(Arc::new(store), token.clone(), lease).infra()?;
            let server = Server::start(control, spec.listen, serving)
                .await
                .map_err(listening)?;
            (path.clone(), server, None)
        }
        StateSpec::Etcd { endpoints, prefix } => {
            let server = Server::standby(spec.listen, serving)
                .await
                .map_err(listening)?;
            eprintln!("kiln: campaigning for the leadership of {prefix} on etcd");
            let election = Election {
                endpoints,
                prefix,
                ttl: DEFAULT_ELECTION_TTL,
                join_token: token.clone(),
                lease,
            };
            let Some(candidate) = lead_on_etcd(&server, election, &mut interrupts).await? else {
                server.shutdown(false).await.infra()?;
                return Err(CliError::infra(anyhow!(
                    "interrupted while waiting to lead {prefix}"
                )));
            };
            (config.dir.join(DEFAULT_STATE_DIR), server, Some(candidate))
        }
    };
    // Written where client commands look for it, for a `kiln status` from another terminal.
    let token_file = state.join(super::serve::CLIENT_TOKEN_FILE);
    std::fs::create_dir_all(&state)
        .and_then(|()| write_secret(&token_file, &client_token))
        .with_context(|| format!("writing {}", token_file.display()))
        .infra()?;
    let http_listen = spec.http_listen.unwrap_or(web::DEFAULT_LISTEN);
    let web = Web::start(http_listen, server.role())
        .await
        .with_context(|| format!("listening on {http_listen} (HTTP)"))
        .infra()?;
    let url = server.url();
    let log_dir = state.parent().unwrap_or(&state).join("logs");
    let logs = match cluster.provider {
        ProviderKind::Ssh => "logs on each host, under the pool's remote_dir/logs".to_owned(),
        ProviderKind::Local | ProviderKind::Slurm => format!("logs in {}", log_dir.display()),
    };
    eprintln!(
        "kiln: coordinator on {url}, dashboard and metrics on {}; starting {} worker(s) ({logs})",
        web.url(),
        cluster.node_count(),
    );
    let mut provider = AnyProvider::new();
    let launch = WorkerLaunch {
        ca_file: spec.tls.as_ref().map(|t| t.ca_file.clone()),
        worker_bin,
        coordinator_url: url,
        join_token: token,
        log_dir,
    };
    let start = match resume {
        Some(id) => Start::Resume(id),
        None => Start::Submit(job),
    };
    let client = Target {
        urls: server.local_url(),
        token: Some(client_token),
        ca: match &spec.tls {
            Some(tls) => Some(
                std::fs::read(&tls.ca_file)
                    .with_context(|| format!("reading {}", tls.ca_file.display()))
                    .bad_input()?,
            ),
            None => None,
        },
    };
    let result = run_on_cluster(
        &mut provider,
        &client,
        cluster,
        &launch,
        start,
        &mut interrupts,
    )
    .await;
    // Workers exit once their streams end; give them a moment, then kill what is left.
    web.stop().await;
    let shutdown = server.shutdown(true);
    let exits = provider.shutdown(Duration::from_secs(5));
    let (_, exits) = tokio::join!(shutdown, exits);
    if let Some(candidate) = candidate {
        candidate.resign().await;
    }
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
    provider: &mut AnyProvider,
    coordinator: &Target,
    cluster: &kiln_iac::spec::ClusterSpec,
    launch: &WorkerLaunch,
    start: Start<'_>,
    interrupts: &mut Interrupts,
) -> Result<Job, CliError> {
    provider.launch(cluster, launch).await.infra()?;
    let mut client = connect(coordinator).await?;
    let (job_id, replacements) = match start {
        Start::Submit(job) => {
            let id = client
                .submit_job(SubmitJobRequest {
                    spec: Some(super::common::wire_spec(job, cluster)?),
                })
                .await?
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
                .await?
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
    let mut poll = client.clone();
    let mut placeable = tokio::time::interval(Duration::from_secs(1));
    // One coordinator, in this process: nothing to reconnect to.
    let mut alone =
        || -> futures::future::BoxFuture<'static, Option<_>> { Box::pin(async { None }) };
    let follow = follow::follow(
        &mut client,
        &job_id,
        interrupts.recv(),
        OnInterrupt::Cancel,
        &mut alone,
    );
    let mut follow = std::pin::pin!(follow);
    let followed = loop {
        tokio::select! {
            job = &mut follow => break job,
            _ = placeable.tick() => {
                // Every node of this cluster has registered and too few fit: it would wait
                // forever, since no other worker joins an ephemeral cluster.
                let job = poll.get_job(GetJobRequest { job_id: job_id.clone() }).await?.into_inner();
                if job.state() == JobState::Pending
                    && job.workers_registered >= cluster.node_count()
                    && job.workers_fit < job.workers_needed
                {
                    poll.cancel_job(CancelJobRequest { job_id: job_id.clone() }).await?;
                    return Err(CliError::job_failed(anyhow!(
                        "job {job_id} cannot be placed on cluster {:?}, so it was cancelled: {}",
                        cluster.name,
                        job.message.trim_start_matches("pending: ")
                    )));
                }
            }
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
                    let node = provider.relaunch(&exit.node, launch).await.infra()?;
                    eprintln!("kiln: {exit}; replaced by {} ({count}){}", node.id, last_words(&exit));
                    continue;
                }
                eprintln!("kiln: {exit}{}", last_words(&exit));
                // A running job fails by itself once the worker's stream breaks; a job still
                // waiting for workers would wait forever, so give up on it.
                match tokio::time::timeout(Duration::from_secs(5), follow).await {
                    Ok(Ok(Followed::Ended(job))) => break Ok(Followed::Ended(job)),
                    _ => return Err(CliError::infra(anyhow!("{exit}"))),
                }
            }
        }
    };
    let job = match followed? {
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
