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
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
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
