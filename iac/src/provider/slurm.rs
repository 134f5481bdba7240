//! The `slurm` backend: each node is a Slurm batch job (`sbatch`) whose batch step `exec`s the
//! worker, so Slurm's signals reach the worker itself. The pool's resources become the job's
//! (`--cpus-per-task`, `--mem`, `--gres=gpu[:TYPE]:N`, `--partition`, `--time`); the worker
//! sees the GPUs Slurm gives it through the `CUDA_VISIBLE_DEVICES` Slurm sets. `--signal`
//! sends SIGTERM [`TERM_BEFORE_LIMIT`] before the time limit (the worker checkpoints and
//! leaves); a job Slurm preempts or loses is a node that is gone. The job id is the handle;
//! `squeue` and `scontrol` are how jobs are looked at, `scancel` how they are stopped. The
//! Slurm commands are the ones on `PATH`, configured as they are (`SLURM_CONF`).

use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ProviderError;
use super::process::run_with_deadline;
use super::remote::{Backend, Seen};
use super::worker::{Reach, str_attr, u32_attr, worker_env};
use crate::plan::{Attributes, Recorded, Resource};

/// How long one Slurm command may take (a busy controller answers slowly).
const CALL: Duration = Duration::from_secs(30);
/// How long before its time limit a worker is told to leave.
const TERM_BEFORE_LIMIT: Duration = Duration::from_secs(60);
/// How long a cancelled job may take to leave the node.
const LEAVE: Duration = Duration::from_secs(60);

/// Submits workers as Slurm jobs.
#[derive(Default)]
pub(crate) struct Slurm;

/// States in which a job's worker runs or will.
const LIVE: &[&str] = &[
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "SUSPENDED",
    "REQUEUED",
    "RESIZING",
];

/// Runs a Slurm command; its stdout, or what went wrong.
fn slurm(
    program: &str,
    args: &[String],
    env: &[(String, String)],
    clear_gpus: bool,
) -> Result<String, String> {
    let mut cmd = Command::new(program);
    cmd.args(args).envs(env.iter().map(|(k, v)| (k, v)));
    if clear_gpus {
        // Slurm sets it from the job's GPUs; this machine's own must not leak in.
        cmd.env_remove("CUDA_VISIBLE_DEVICES");
    }
    let ran = run_with_deadline(cmd, Vec::new(), CALL).map_err(|e| {
        if e.contains("cannot run") {
            format!("{e} (is Slurm's client installed here, and on PATH?)")
        } else {
            e
        }
    })?;
    if ran.status.success() {
        Ok(ran.stdout)
    } else {
        Err(format!("{program} failed: {}", ran.stderr.trim()))
    }
}

fn job_id(handle: &Attributes) -> Option<&str> {
    str_attr(handle, "job_id")
}

/// `Key=Value` fields of `scontrol show job -o`.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// The exit status Slurm reports as `ExitCode=CODE:SIGNAL`.
fn exit_status(exit_code: &str) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    let (code, signal) = exit_code.split_once(':').unwrap_or((exit_code, "0"));
    match (code.parse::<i32>(), signal.parse::<i32>()) {
        (_, Ok(signal)) if signal != 0 => ExitStatus::from_raw(signal),
        (Ok(code), _) => ExitStatus::from_raw(code << 8),
        _ => super::killed_status(),
    }
}

impl Slurm {
    /// The state (`RUNNING`, …) and reason of each job `squeue` still lists.
    fn queue(&self, ids: &[&str]) -> Result<Vec<(String, String, String)>, String> {
        let args = [
            "--noheader".to_owned(),
            "--states=all".to_owned(),
            format!("--jobs={}", ids.join(",")),
            "--format=%i|%T|%r".to_owned(),
        ];
        match slurm("squeue", &args, &[], false) {
            Ok(out) => Ok(out
                .lines()
                .filter_map(|l| {
                    let mut f = l.trim().splitn(3, '|');
                    Some((f.next()?.into(), f.next()?.into(), f.next()?.into()))
                })
                .collect()),
            // A single id Slurm has forgotten is an error rather than an empty list.
            Err(e) if e.contains("Invalid job id") => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// How an ended job ended, as `scontrol` tells it.
    fn ended(&self, id: &str, state: Option<&str>, reason: Option<&str>) -> Seen {
        let shown = slurm(
            "scontrol",
            &["show".into(), "job".into(), "-o".into(), id.into()],
            &[],
            false,
        );
        let line = shown.unwrap_or_default();
        let state = field(&line, "JobState").or(state);
        let status = field(&line, "ExitCode").map_or_else(super::killed_status, exit_status);
        let why = match (
            state,
            reason.or(field(&line, "Reason")).filter(|r| *r != "None"),
        ) {
            (Some(state), Some(reason)) => format!("Slurm job {id} is {state} ({reason})"),
            (Some(state), None) => format!("Slurm job {id} is {state}"),
            (None, _) => format!("Slurm no longer knows job {id}"),
        };
        Seen::Ended { why, status }
    }

    /// The state of job `id` while it runs or waits to (`COMPLETING` included); `None` once
    /// it is over.
    fn live_state(&self, id: &str) -> Result<Option<String>, String> {
        Ok(self
            .queue(&[id])?
            .into_iter()
            .map(|(_, state, _)| state)
            .find(|state| LIVE.contains(&state.as_str()) || state == "COMPLETING"))
    }

    fn wait_gone(&self, id: &str, within: Duration) -> Result<bool, String> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.live_state(id)?.is_none() {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(false)
    }
}

impl Backend for Slurm {
    fn start(
        &self,
        node: &Resource,
        reach: &Reach,
        worker_bin: &Path,
        log_dir: &Path,
    ) -> Result<Attributes, ProviderError> {
        let attrs = &node.attrs;
        let address = &node.address;
        let name = address.node_name().unwrap_or_default();
        let log = log_dir.join(format!("{}-{name}.log", address.cluster));
        let gpus = u32_attr(attrs, "gpus_per_node").unwrap_or(0);
        let mut args = vec![
            "--parsable".to_owned(),
            format!("--job-name=kiln-{}-{name}", address.cluster),
            format!("--output={}", log.display()),
            "--open-mode=append".to_owned(),
            "--nodes=1".to_owned(),
            "--ntasks=1".to_owned(),
            format!(
                "--cpus-per-task={}",
                u32_attr(attrs, "cpus_per_node").unwrap_or(1).max(1)
            ),
            format!("--signal=B:TERM@{}", TERM_BEFORE_LIMIT.as_secs()),
            // kiln replaces a lost node itself (plan shows it gone); Slurm must not as well.
            "--no-requeue".to_owned(),
            "--export=ALL".to_owned(),
        ];
        if let Some(gb) = u32_attr(attrs, "memory_gb") {
            args.push(format!("--mem={gb}G"));
        }
        if gpus > 0 {
            args.push(match str_attr(attrs, "gpu_type") {
                Some(kind) => format!("--gres=gpu:{kind}:{gpus}"),
                None => format!("--gres=gpu:{gpus}"),
            });
        }
        if let Some(partition) = str_attr(attrs, "partition") {
            args.push(format!("--partition={partition}"));
        }
        if let Some(minutes) = attrs.get("time_limit_minutes").and_then(Value::as_u64) {
            args.push(format!("--time={minutes}"));
        }
        let bin = shlex::try_quote(&worker_bin.to_string_lossy())
            .map(|q| q.into_owned())
            .unwrap_or_default();
        args.push(format!("--wrap=exec {bin}"));
        // A node without GPUs sees none; one with GPUs sees those Slurm gives it.
        let mut env = worker_env(reach, &name, attrs, (gpus == 0).then_some(""));
        env.push(("KILN_JOIN_TOKEN".to_owned(), reach.join_token.clone()));
        let out =
            slurm("sbatch", &args, &env, gpus > 0).map_err(|detail| ProviderError::NotReady {
                resource: address.to_string(),
                detail,
            })?;
        // `--parsable` prints `ID` or `ID;CLUSTER`.
        let id = out.trim().split(';').next().unwrap_or_default().to_owned();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            return Err(ProviderError::NotReady {
                resource: address.to_string(),
                detail: format!("sbatch printed no job id: {out:?}"),
            });
        }
        tracing::info!(%address, job = %id, "worker submitted");
        Ok([
            ("job_id", Value::from(id)),
            ("log", log.display().to_string().into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect())
    }

    fn observe(&self, nodes: &[&Recorded]) -> Vec<Seen> {
        let ids: Vec<&str> = nodes.iter().filter_map(|n| job_id(&n.handle)).collect();
        if ids.is_empty() {
            return nodes
                .iter()
                .map(|_| Seen::Unknown("the state records no Slurm job for it".into()))
                .collect();
        }
        let queue = match self.queue(&ids) {
            Ok(queue) => queue,
            Err(why) => {
                let why = format!("cannot ask Slurm about it: {why}");
                return vec![Seen::Unknown(why); nodes.len()];
            }
        };
        nodes
            .iter()
            .map(|node| {
                let Some(id) = job_id(&node.handle) else {
                    return Seen::Unknown("the state records no Slurm job for it".into());
                };
                match queue.iter().find(|(i, _, _)| i == id) {
                    Some((_, state, _)) if LIVE.contains(&state.as_str()) => Seen::Running,
                    Some((_, state, reason)) => self.ended(id, Some(state), Some(reason)),
                    None => self.ended(id, None, None),
                }
            })
            .collect()
    }

    fn stop(&self, node: &Recorded, grace: Duration) -> Result<(), ProviderError> {
        let Some(id) = job_id(&node.handle) else {
            return Ok(());
        };
        let fail = |detail: String| ProviderError::Stop {
            resource: node.address.to_string(),
            source: std::io::Error::other(detail),
        };
        let Some(state) = self.live_state(id).map_err(fail)? else {
            return Ok(());
        };
        // SIGTERM to the worker first (it checkpoints and leaves), then Slurm's own cancel; a
        // job still in the queue has no worker to tell. `--full`: the batch step is the
        // worker, and `--batch` signals only its children.
        let term = [
            "--full".to_owned(),
            "--signal=TERM".to_owned(),
            id.to_owned(),
        ];
        if state != "PENDING"
            && slurm("scancel", &term, &[], false).is_ok()
            && self.wait_gone(id, grace).map_err(fail)?
        {
            return Ok(());
        }
        slurm("scancel", &[id.to_owned()], &[], false).map_err(fail)?;
        if self.wait_gone(id, LEAVE).map_err(fail)? {
            Ok(())
        } else {
            Err(fail(format!(
                "Slurm job {id} is still running {LEAVE:?} after scancel"
            )))
        }
    }

    fn describe(&self, handle: &Attributes) -> String {
        format!("Slurm job {}", job_id(handle).unwrap_or("?"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_exit_codes_become_exit_statuses() {
        assert!(exit_status("0:0").success());
        assert_eq!(exit_status("3:0").code(), Some(3));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_status("0:9").signal(), Some(9));
        assert_eq!(
            field(
                "JobId=7 JobState=CANCELLED Reason=None ExitCode=0:15",
                "JobState"
            ),
            Some("CANCELLED")
        );
    }
}
