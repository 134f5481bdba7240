//! Following a job from the CLI: a live progress bar (epoch, step, loss, validation accuracy,
//! samples/s), a line for every state change, checkpoint or failure, and a final summary.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use kiln_proto::v1::coordinator_client::CoordinatorClient;
use kiln_proto::v1::{CancelJobRequest, Job, JobState, Metrics, WatchJobRequest};
use tonic::transport::Channel;

/// How long to wait for a cancelled job to reach its final state.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// Follows `job_id` until it ends and returns it. If `interrupt` resolves first, the job is
/// cancelled and followed to its end.
pub async fn follow(
    client: &mut CoordinatorClient<Channel>,
    job_id: &str,
    interrupt: impl Future<Output = ()>,
) -> Result<Job, tonic::Status> {
    let started = Instant::now();
    let mut stream = client
        .watch_job(WatchJobRequest {
            job_id: job_id.to_owned(),
        })
        .await?
        .into_inner();
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{spinner} epoch {prefix} [{bar:30}] {pos}/{len} steps  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut interrupt = std::pin::pin!(interrupt);
    let mut interrupted = false;
    let mut last = None;
    loop {
        let event = tokio::select! {
            event = stream.message() => event?,
            () = &mut interrupt, if !interrupted => {
                interrupted = true;
                bar.suspend(|| eprintln!("interrupted: cancelling {job_id}"));
                client.cancel_job(CancelJobRequest { job_id: job_id.to_owned() }).await?;
                continue;
            }
            () = tokio::time::sleep(CANCEL_WAIT), if interrupted => break,
        };
        let Some(event) = event else { break };
        let Some(job) = event.job else { continue };
        if !event.message.is_empty() {
            bar.suspend(|| eprintln!("{}: {}", job.id, event.message));
        }
        if let Some(m) = &job.metrics {
            bar.set_length(m.total_steps);
            bar.set_position(m.step);
            bar.set_prefix(m.epoch.to_string());
            bar.set_message(describe(m));
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
        _ => client
            .get_job(kiln_proto::v1::GetJobRequest {
                job_id: job_id.to_owned(),
            })
            .await?
            .into_inner(),
    };
    print_summary(&job, started.elapsed());
    Ok(job)
}

fn describe(m: &Metrics) -> String {
    let acc = m
        .val_accuracy
        .map_or_else(|| "-".to_owned(), |a| format!("{a:.4}"));
    format!(
        "loss {:.4}  val_acc {acc}  {:.0} samples/s",
        m.loss, m.samples_per_sec
    )
}

/// The final report of a job, on stdout.
pub fn print_summary(job: &Job, elapsed: Duration) {
    println!(
        "job {} {} after {:.1}s",
        job.id,
        job.state().label(),
        elapsed.as_secs_f64()
    );
    if job.state() != JobState::Succeeded && !job.message.is_empty() {
        println!("  reason        {}", job.message);
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
}
