//! Following a job from the CLI: a live progress bar (epoch, step, loss, validation accuracy,
//! samples/s), a line for every event of the job (each exactly once, in order: the watch
//! replays what happened before it began), and a final summary.

use std::io::IsTerminal;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_proto::auth::Client;
use kiln_proto::v1::{
    CancelJobRequest, Deployment, Job, JobEvent, JobState, Metrics, WatchJobRequest,
};

/// How long to wait for a cancelled job to reach its final state.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// What an interrupt (Ctrl-C, SIGTERM, SIGHUP) does to a followed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInterrupt {
    /// Cancel the job and follow it to its end (`kiln up`, which owns the cluster).
    Cancel,
    /// Stop following; the job runs on (`submit --follow`, `resume --follow`, `status -f`).
    Detach,
}

/// How following ended.
#[derive(Debug)]
pub enum Followed {
    /// The job reached a final state.
    Ended(Job),
    /// The user detached; the job as last seen, still running.
    Detached(Job),
}

/// A new client of whichever coordinator leads now, for a follow whose coordinator went away;
/// `None` when there is no other to try.
pub type Reconnect<'a> = &'a mut (dyn FnMut() -> BoxFuture<'static, Option<Client>> + Send);

/// How long a follow looks for a new leader after its coordinator went away.
const RECONNECT_FOR: Duration = Duration::from_secs(30);

async fn watch(
    client: &mut Client,
    job_id: &str,
) -> Result<tonic::Streaming<JobEvent>, tonic::Status> {
    Ok(client
        .watch_job(WatchJobRequest {
            job_id: job_id.to_owned(),
        })
        .await?
        .into_inner())
}

/// A stream that broke because its coordinator went away (killed, or a leader that lost its
/// lease), not because the coordinator refused it.
fn coordinator_gone(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

/// Follows `job_id` until it ends, or until `interrupt` resolves: then the job is cancelled and
/// followed to its end, or left running, as `on_interrupt` says. When the coordinator goes
/// away mid-follow, `reconnect` finds the one that leads next and the follow goes on there.
pub async fn follow(
    client: &mut Client,
    job_id: &str,
    interrupt: impl Future<Output = ()>,
    on_interrupt: OnInterrupt,
    reconnect: Reconnect<'_>,
) -> Result<Followed, tonic::Status> {
    let mut stream = watch(client, job_id).await?;
    let live = std::io::stderr().is_terminal();
    // A spinner until the step count is known: a bar of 0/0 would show full.
    let bar = ProgressBar::new_spinner().with_style(spinner_style());
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut interrupt = std::pin::pin!(interrupt);
    let mut interrupted = false;
    let mut last: Option<Job> = None;
    let mut folded = String::new();
    loop {
        let event = tokio::select! {
            event = stream.message() => match event {
                Err(status) if coordinator_gone(&status) => {
                    bar.suspend(|| eprintln!("{job_id}: lost the coordinator ({}); following the next leader", status.message()));
                    let deadline = tokio::time::Instant::now() + RECONNECT_FOR;
                    loop {
                        let Some(mut next) = reconnect().await else {
                            return Err(status);
                        };
                        if let Ok(next_stream) = watch(&mut next, job_id).await {
                            *client = next;
                            stream = next_stream;
                            break;
                        }
                        if tokio::time::Instant::now() >= deadline {
                            return Err(status);
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    continue;
                }
                event => event?,
            },
            () = &mut interrupt, if !interrupted => {
                interrupted = true;
                if on_interrupt == OnInterrupt::Detach {
                    bar.finish_and_clear();
                    let job = match last {
                        Some(job) => job,
                        None => get_job(client, job_id).await?,
                    };
                    eprintln!(
                        "detached from {job_id}, which goes on ({}): `kiln status -f {job_id}` follows it again, `kiln cancel {job_id}` cancels it",
                        job.state().label()
                    );
                    return Ok(Followed::Detached(job));
                }
                bar.suspend(|| eprintln!("interrupted: cancelling {job_id}"));
                client.cancel_job(CancelJobRequest { job_id: job_id.to_owned() }).await?;
                continue;
            }
            () = tokio::time::sleep(CANCEL_WAIT), if interrupted => break,
        };
        let Some(event) = event else { break };
        if !event.message.is_empty() {
            if event.routine && live {
                // On a terminal, routine events update the status line instead of scrolling.
                folded.clone_from(&event.message);
            } else {
                bar.suspend(|| eprintln!("{job_id}: {}", event.message));
            }
        }
        let Some(job) = event.job else { continue };
        if let Some(m) = &job.metrics
            && m.total_steps > 0
        {
            if bar.length().is_none() {
                bar.set_style(bar_style());
            }
            bar.set_length(m.total_steps);
            bar.set_position(m.step);
            bar.set_prefix(m.epoch.to_string());
            bar.set_message(describe(m, &folded));
        } else if !job.message.is_empty() {
            bar.set_message(job.message.clone());
        }
        let done = job.state().is_terminal();
        last = Some(job);
        if done {
            break;
        }
    }
    bar.finish_and_clear();
    let job = match last {
        Some(job) if job.state().is_terminal() => job,
        _ => get_job(client, job_id).await?,
    };
    print_summary(&job);
    Ok(Followed::Ended(job))
}

async fn get_job(client: &mut Client, id: &str) -> Result<Job, tonic::Status> {
    Ok(client
        .get_job(kiln_proto::v1::GetJobRequest {
            job_id: id.to_owned(),
        })
        .await?
        .into_inner())
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} epoch {prefix} [{bar:30}] {pos}/{len} steps  {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

fn describe(m: &Metrics, folded: &str) -> String {
    let acc = m
        .val_accuracy
        .map_or_else(|| "-".to_owned(), |a| format!("{a:.4}"));
    let val_loss = m
        .val_loss
        .map_or_else(|| "-".to_owned(), |l| format!("{l:.4}"));
    let mut line = format!(
        "loss {:.4}  val_loss {val_loss}  val_acc {acc}  {:.0} samples/s",
        m.loss, m.samples_per_sec
    );
    if !folded.is_empty() {
        line.push_str("  ");
        line.push_str(folded);
    }
    line
}

/// How long the job has run: from submission to its end, or to now while it has not ended.
pub fn elapsed(job: &Job) -> Duration {
    let end = if job.state().is_terminal() && job.finished_unix_ms > 0 {
        job.finished_unix_ms
    } else {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    };
    Duration::from_millis(end.saturating_sub(job.submitted_unix_ms).max(0) as u64)
}

/// A job as `kiln status --json` prints it and the dashboard's API serves it.
pub fn job_json(job: &Job) -> serde_json::Value {
    let m = job.metrics.unwrap_or_default();
    serde_json::json!({
        "id": job.id,
        "name": job.spec.as_ref().map(|s| s.name.as_str()),
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
            "val_loss": m.val_loss,
            "samples_per_sec": m.samples_per_sec,
        },
        "restarts": job.restarts,
        "last_failure": job.last_failure,
        "params_digest": job.params_digest,
        "model_version": job.model_version,
        "deployment": job.deployment.as_ref().map(|d| serde_json::json!({
            "alias": d.alias,
            "deployed": d.deployed,
            "previous": d.previous,
            "error": (!d.error.is_empty()).then_some(&d.error),
            "checks": d.checks.iter().map(|c| serde_json::json!({
                "metric": c.metric,
                "rule": c.rule,
                "passed": c.passed,
                "summary": c.summary,
            })).collect::<Vec<_>>(),
        })),
        "checkpoint_step": job.checkpoint_step,
        "checkpoint_url": job.checkpoint_url,
        "submitted_unix_ms": job.submitted_unix_ms,
        "finished_unix_ms": job.finished_unix_ms,
        "elapsed_secs": elapsed(job).as_secs_f64(),
    })
}

/// The report of a job, on stdout.
pub fn print_summary(job: &Job) {
    println!(
        "job {} {} after {:.1}s",
        job.id,
        job.state().label(),
        elapsed(job).as_secs_f64()
    );
    if job.state() != JobState::Succeeded && !job.message.is_empty() {
        let label = if job.state().is_terminal() {
            "reason"
        } else {
            "now"
        };
        println!("  {label:<13} {}", job.message);
    }
    if let Some(m) = &job.metrics {
        println!(
            "  steps         {}/{} (epoch {})",
            m.step, m.total_steps, m.epoch
        );
        println!("  loss          {:.5}", m.loss);
        if let Some(acc) = m.val_accuracy {
            println!("  val accuracy  {acc:.4}");
        }
        if let Some(loss) = m.val_loss {
            println!("  val loss      {loss:.5}");
        }
        if m.samples_per_sec > 0.0 {
            println!("  throughput    {:.0} samples/s", m.samples_per_sec);
        }
    }
    if job.restarts > 0 {
        println!(
            "  restarts      {} (last: {})",
            job.restarts, job.last_failure
        );
    }
    if !job.checkpoint_url.is_empty() {
        println!("  checkpoint    {}", job.checkpoint_url);
    }
    if !job.params_digest.is_empty() {
        println!("  params        sha256:{}", job.params_digest);
    }
    if !job.model_version.is_empty() {
        println!("  model         {}", job.model_version);
    }
    if let Some(d) = &job.deployment {
        print_deployment(d);
    }
}

/// Whether the gate let the model take its alias, and every rule's numbers.
fn print_deployment(d: &Deployment) {
    if d.deployed {
        let from = d.previous.map_or_else(
            || "it held none before".to_owned(),
            |v| format!("from version {v}"),
        );
        println!("  deployed      {:?} ({from})", d.alias);
    } else {
        let why = if d.error.is_empty() {
            "the gate failed"
        } else {
            d.error.as_str()
        };
        println!("  not deployed  {:?} stays where it was: {why}", d.alias);
    }
    for check in &d.checks {
        let mark = if check.passed { "pass" } else { "FAIL" };
        println!(
            "    {mark} {} {}: {}",
            check.metric, check.rule, check.summary
        );
    }
}
