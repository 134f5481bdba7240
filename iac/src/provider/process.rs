//! Processes that outlive the command that started them: how to start them detached, how to
//! recognise them later (pid plus start time, so a reused pid is never mistaken for ours), and
//! how to stop them. Linux `/proc` is the source of truth.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

/// A process as the state records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) pid: u32,
    /// Start time in clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub(crate) start_ticks: u64,
}

/// What `/proc/<pid>/stat` says: the state letter and the start time.
fn stat(pid: u32) -> Option<(char, u64)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The state letter and start time of a `/proc/<pid>/stat` line (read here or on a host).
pub(crate) fn parse_stat(text: &str) -> Option<(char, u64)> {
    // The command name (field 2) may contain spaces and parentheses; fields after it don't.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start_ticks = fields.nth(18)?.parse().ok()?;
    Some((state, start_ticks))
}

impl Identity {
    /// The identity of the running process `pid`.
    pub(crate) fn of(pid: u32) -> Option<Self> {
        stat(pid).map(|(_, start_ticks)| Self { pid, start_ticks })
    }

    /// `None` while the process runs; why it is gone otherwise.
    pub(crate) fn gone(&self) -> Option<String> {
        match stat(self.pid) {
            None => Some(format!("pid {} is no longer running", self.pid)),
            Some((_, ticks)) if ticks != self.start_ticks => Some(format!(
                "pid {} is no longer running (the pid now belongs to another process)",
                self.pid
            )),
            Some(('Z' | 'X', _)) => Some(format!("pid {} has exited", self.pid)),
            Some(_) => None,
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL. Returns once the process is gone.
    pub(crate) fn stop(&self, grace: Duration) -> std::io::Result<()> {
        if self.gone().is_some() {
            return Ok(());
        }
        let pid = Pid::from_raw(self.pid as i32).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "pid 0 is not a process")
        })?;
        for (signal, wait) in [
            (Signal::TERM, grace),
            (Signal::KILL, Duration::from_secs(10)),
        ] {
            match rustix::process::kill_process(pid, signal) {
                Ok(()) => {}
                Err(rustix::io::Errno::SRCH) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline {
                if self.gone().is_some() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("pid {} survived SIGKILL", self.pid),
        ))
    }
}

/// Starts `cmd` in a process group of its own (a Ctrl-C meant for this command does not reach
/// it), stdin closed, stdout and stderr appended to `log`. It is not killed when this process
/// exits; once this process is gone it is re-parented and reaped by the system.
pub(crate) fn spawn_detached(
    mut cmd: Command,
    log: &Path,
) -> std::io::Result<(std::process::Child, Identity)> {
    use std::os::unix::process::CommandExt;
    let out = File::options().create(true).append(true).open(log)?;
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?;
    let identity = match Identity::of(child.id()) {
        Some(identity) => identity,
        None => {
            let status = child.wait()?;
            return Err(std::io::Error::other(format!(
                "exited at once with {status}"
            )));
        }
    };
    Ok((child, identity))
}

/// What a command run to completion printed.
#[derive(Debug)]
pub(crate) struct Ran {
    pub(crate) status: std::process::ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `cmd` with `input` on its stdin, killing it (and what it started in its process
/// group) if it has not finished within `timeout`. `Err` says why nothing complete came back.
pub(crate) fn run_with_deadline(
    mut cmd: Command,
    input: Vec<u8>,
    timeout: Duration,
) -> Result<Ran, String> {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let pid = child.id();
    let mut stdin = child.stdin.take();
    // Written beside the wait: a large input (a binary) must not block reading the output.
    std::thread::spawn(move || {
        if let Some(stdin) = stdin.as_mut() {
            let _ = stdin.write_all(&input);
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(timeout) {
        Ok(output) => output,
        Err(_) => {
            if let Some(group) = Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process_group(group, Signal::KILL);
            }
            let _ = rx.recv();
            return Err(format!("{program} did not finish within {timeout:?}"));
        }
    };
    let output = output.map_err(|e| format!("{program} failed: {e}"))?;
    Ok(Ran {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_past_its_deadline_is_killed_and_said_so() {
        let mut sleeper = Command::new("sh");
        sleeper.args(["-c", "sleep 30"]);
        let started = Instant::now();
        let err = run_with_deadline(sleeper, Vec::new(), Duration::from_millis(200))
            .expect_err("killed at its deadline");
        assert!(err.contains("did not finish within"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));

        let mut cat = Command::new("cat");
        cat.arg("-");
        let ran = run_with_deadline(cat, b"through stdin".to_vec(), Duration::from_secs(10))
            .expect("cat runs");
        assert!(ran.status.success());
        assert_eq!(ran.stdout, "through stdin");
    }

    #[test]
    fn identity_tracks_a_process_until_it_is_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let (mut child, id) = spawn_detached(cmd, &dir.path().join("sleep.log")).expect("spawn");
        assert_eq!(id.pid, child.id());
        assert_eq!(id.gone(), None);
        let stranger = Identity {
            start_ticks: id.start_ticks + 1,
            ..id
        };
        assert!(
            stranger.gone().is_some(),
            "a different start time is not ours"
        );
        id.stop(Duration::from_secs(5)).expect("stop");
        assert!(id.gone().is_some());
        assert!(!child.wait().expect("reap").success());
    }
}
