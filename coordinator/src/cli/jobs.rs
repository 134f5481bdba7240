//! The client commands on a running coordinator: `kiln submit`, `status`, `resume`, `cancel`,
//! and how a client finds its coordinator.

use std::path::Path;

use anyhow::anyhow;
use kiln_iac::LoadOptions;
use kiln_iac::spec::{JobSpec, StateSpec};
use kiln_proto::v1::{
    CancelJobRequest, GetJobRequest, Job, ListJobsRequest, ResumeJobRequest, SubmitJobRequest,
};

use crate::follow::{self, Followed, OnInterrupt};

use super::common::{
    ClientFlags, DEFAULT_COORDINATOR, Interrupts, Target, connect, finish, load, pick_job,
};
use super::error::{CliError, ResultExt};
use super::infra::applied_coordinators;

/// `kiln submit PATH`: submits the jobs declared in PATH (a file, or every job of a directory).
pub async fn submit(
    coordinator: Option<&str>,
    flags: &ClientFlags,
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
        return Err(CliError::bad_input(anyhow!(
            "{} declares no job",
            path.display()
        )));
    }
    if follow_it && jobs.len() > 1 {
        return Err(CliError::bad_input(anyhow!(
            "--follow takes one job; pick it with --job"
        )));
    }
    let cluster = &config.clusters[&jobs[0].cluster];
    let state_dir = match &cluster.state {
        StateSpec::Embedded { path } => path.clone(),
        StateSpec::Etcd { .. } => config.dir.join(DEFAULT_STATE_DIR),
    };
    let flags = ClientFlags {
        ca_file: flags
            .ca_file
            .clone()
            .or_else(|| cluster.coordinator.tls.as_ref().map(|t| t.ca_file.clone())),
        ..flags.clone()
    };
    let target = target(
        coordinator,
        &flags,
        &config.dir,
        Some(&cluster.name),
        &state_dir,
    )?;
    let mut client = connect(&target).await?;
    let mut last = None;
    for job in jobs {
        let id = client
            .submit_job(SubmitJobRequest {
                spec: Some(super::common::wire_spec(
                    job,
                    &config.clusters[&job.cluster],
                )?),
            })
            .await?
            .into_inner()
            .job_id;
        println!("submitted {id}");
        last = Some(id);
    }
    match (follow_it, last) {
        (true, Some(id)) => follow_detachable(&mut client, &target, &id).await.map(Some),
        _ => Ok(None),
    }
}

/// Follows a job that Ctrl-C leaves running: the job when it ended (an error unless it
/// succeeded), or as it was when the user detached.
async fn follow_detachable(
    client: &mut kiln_proto::auth::Client,
    target: &Target,
    id: &str,
) -> Result<Job, CliError> {
    let mut interrupts = Interrupts::listen();
    // With several coordinators, a follow goes on under the next leader when its own dies.
    let target = target.clone();
    let several = kiln_proto::coordinator_urls(&target.urls).len() > 1;
    let mut reconnect = move || -> futures::future::BoxFuture<'static, Option<_>> {
        let target = target.clone();
        Box::pin(async move {
            if several {
                connect(&target).await.ok()
            } else {
                None
            }
        })
    };
    match follow::follow(
        client,
        id,
        interrupts.recv(),
        OnInterrupt::Detach,
        &mut reconnect,
    )
    .await?
    {
        Followed::Ended(job) => finish(job),
        Followed::Detached(job) => Ok(job),
    }
}

/// Where a client finds a coordinator's client token when nothing names it: the default
/// state directory of the configuration (and of `kiln coordinator`), relative to DIR.
pub const DEFAULT_STATE_DIR: &str = ".kiln/state";

/// The coordinator a client command talks to: `explicit` (`--coordinator`,
/// `KILN_COORDINATOR`), else the one `kiln apply` started from `dir` (for `cluster`, when
/// known), else [`DEFAULT_COORDINATOR`]. A recorded coordinator that no longer runs is an
/// error, never a silent fall-back. Its client token is read from `--token-file`, else
/// `KILN_TOKEN`, else the file the applied coordinator recorded, else `client-token` in
/// `state_dir`; the CA from `--tls-ca-file`, else the one the applied coordinator recorded.
pub fn target(
    explicit: Option<&str>,
    flags: &ClientFlags,
    dir: &Path,
    cluster: Option<&str>,
    state_dir: &Path,
) -> Result<Target, CliError> {
    let default_token = state_dir.join(super::serve::CLIENT_TOKEN_FILE);
    if let Some(url) = explicit {
        return Target::new(url.to_owned(), flags, &default_token, None);
    }
    let applied: Vec<_> = applied_coordinators(dir)?
        .into_iter()
        .filter(|c| cluster.is_none_or(|name| c.cluster == name))
        .collect();
    match applied.as_slice() {
        [] => Target::new(DEFAULT_COORDINATOR.to_owned(), flags, &default_token, None),
        [one] => match &one.gone {
            None => Target::new(
                one.url.clone(),
                flags,
                one.client_token_file.as_deref().unwrap_or(&default_token),
                one.ca_file.as_deref(),
            ),
            Some(why) => Err(CliError::infra(anyhow!(
                "the coordinator `kiln apply` started for cluster {:?} in {} is not running ({why}); run `kiln apply` there to start it again",
                one.cluster,
                dir.display()
            ))),
        },
        several => Err(CliError::bad_input(anyhow!(
            "{} has coordinators for several clusters ({}); pick one with --coordinator URL",
            dir.display(),
            several
                .iter()
                .map(|c| format!("{} at {}", c.cluster, c.url))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
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
    coordinator: &Target,
    job: Option<&str>,
    json: bool,
    follow_it: bool,
) -> Result<(), CliError> {
    let mut client = connect(coordinator).await?;
    if follow_it {
        let id = job.ok_or_else(|| {
            CliError::bad_input(anyhow!("--follow takes a job: kiln status -f JOB"))
        })?;
        follow_detachable(&mut client, coordinator, id).await?;
        return Ok(());
    }
    let jobs = match job {
        Some(id) => vec![
            client
                .get_job(GetJobRequest {
                    job_id: id.to_owned(),
                })
                .await?
                .into_inner(),
        ],
        None => {
            client
                .list_jobs(ListJobsRequest {})
                .await?
                .into_inner()
                .jobs
        }
    };
    if json {
        let value: Vec<serde_json::Value> = jobs.iter().map(follow::job_json).collect();
        let out = if job.is_some() {
            value[0].clone()
        } else {
            serde_json::Value::Array(value)
        };
        println!("{}", serde_json::to_string_pretty(&out).infra()?);
    } else if job.is_some() {
        follow::print_summary(&jobs[0]);
    } else {
        println!(
            "{:<24} {:<10} {:>5} {:>12} {:>9} {:>9} {:>9}",
            "JOB", "STATE", "GEN", "STEP", "VAL_LOSS", "VAL_ACC", "ELAPSED"
        );
        for job in &jobs {
            let m = job.metrics.unwrap_or_default();
            let acc = m
                .val_accuracy
                .map_or_else(|| "-".into(), |a| format!("{a:.4}"));
            let val_loss = m.val_loss.map_or_else(|| "-".into(), |l| format!("{l:.4}"));
            println!(
                "{:<24} {:<10} {:>5} {:>12} {:>9} {:>9} {:>8.1}s",
                job.id,
                job.state().label(),
                job.generation,
                format!("{}/{}", m.step, m.total_steps),
                val_loss,
                acc,
                follow::elapsed(job).as_secs_f64()
            );
        }
    }
    Ok(())
}

/// `kiln resume JOB [--from STEP] [--follow]`.
pub async fn resume(
    coordinator: &Target,
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
        .await?
        .into_inner();
    println!("{}: {}", job.id, job.message);
    if follow_it {
        follow_detachable(&mut client, coordinator, &job.id).await?;
    }
    Ok(())
}

/// `kiln cancel JOB`.
pub async fn cancel(coordinator: &Target, job: &str) -> Result<(), CliError> {
    let mut client = connect(coordinator).await?;
    let job = client
        .cancel_job(CancelJobRequest {
            job_id: job.to_owned(),
        })
        .await?
        .into_inner();
    println!("{} {}", job.id, job.state().label());
    Ok(())
}
