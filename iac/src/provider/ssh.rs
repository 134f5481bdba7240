//! The `ssh` backend: each node's worker is a process on a host reached with the system's
//! `ssh` client (so the user's SSH configuration, agent and jump hosts apply). Host keys are
//! checked against the pool's `known_hosts_file` (or ssh's own) and never accepted unseen;
//! every call has a deadline. A worker is recorded by pid and process start time on its host,
//! as the local provider records its own; its exit code is left in a file beside its pid.
//!
//! On each host, under `remote_dir`: `bin/kiln-worker-<sha256>` (the binary, copied once and
//! checked by hash, unless the pool names a `worker_path`), `logs/<cluster>-<node>.log`, and
//! `run/<cluster>-<node>.{pid,exit}`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::ProviderError;
use super::process::{parse_stat, run_with_deadline};
use super::remote::{Backend, Seen};
use super::worker::{Reach, slot_gpus, str_attr, u32_attr, worker_env};
use crate::plan::{Attributes, Recorded, Resource};

/// How long a call may run past its connection's timeout (a script's own work).
const CALL: Duration = Duration::from_secs(30);
/// How long copying the worker binary to a host may take.
const COPY: Duration = Duration::from_secs(600);
/// What a start script says when the host lacks this worker binary.
const MISSING: &str = "kiln:worker-binary-missing";

/// Starts workers on SSH hosts.
#[derive(Default)]
pub(crate) struct Ssh {
    /// The SHA-256 of each local binary, computed once.
    hashes: Mutex<BTreeMap<std::path::PathBuf, String>>,
}

/// How to reach one host, from a node's attributes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Login {
    host: String,
    user: Option<String>,
    port: u16,
    identity_file: Option<String>,
    known_hosts_file: Option<String>,
    connect_timeout: Duration,
}

impl Login {
    fn of(attrs: &Attributes) -> Result<Self, String> {
        Ok(Self {
            host: str_attr(attrs, "host")
                .ok_or("the state records no host for it")?
                .to_owned(),
            user: str_attr(attrs, "user").map(str::to_owned),
            port: u32_attr(attrs, "port")
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(22),
            identity_file: str_attr(attrs, "identity_file").map(str::to_owned),
            known_hosts_file: str_attr(attrs, "known_hosts_file").map(str::to_owned),
            connect_timeout: Duration::from_millis(
                attrs
                    .get("connect_timeout_ms")
                    .and_then(Value::as_u64)
                    .unwrap_or(10_000),
            ),
        })
    }

    /// `user@host:port`, for messages.
    fn name(&self) -> String {
        let user = self
            .user
            .as_ref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        format!("{user}{}:{}", self.host, self.port)
    }

    /// `ssh … HOST sh -c SCRIPT`: batch mode (never a prompt), strict host keys.
    fn command(&self, script: &str) -> Command {
        let mut cmd = Command::new("ssh");
        let secs = self.connect_timeout.as_secs().max(1);
        cmd.args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
            .args(["-o", &format!("ConnectTimeout={secs}")])
            // A host that stops answering mid-call is given up on, not waited for.
            .args(["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2"])
            .args(["-o", "LogLevel=ERROR"])
            .args(["-p", &self.port.to_string()]);
        if let Some(file) = &self.known_hosts_file {
            cmd.args(["-o", &format!("UserKnownHostsFile={file}")]);
        }
        if let Some(key) = &self.identity_file {
            cmd.args(["-i", key, "-o", "IdentitiesOnly=yes"]);
        }
        if let Some(user) = &self.user {
            cmd.args(["-l", user]);
        }
        cmd.arg(&self.host)
            .arg("--")
            .arg(format!("sh -c {}", quote(script)));
        cmd
    }

    /// Runs `script` on the host with `input` on its stdin; its stdout, or what went wrong.
    fn run(&self, script: &str, input: Vec<u8>, extra: Duration) -> Result<String, String> {
        let ran = run_with_deadline(self.command(script), input, self.connect_timeout + extra)
            .map_err(|e| format!("{}: {e}", self.name()))?;
        if ran.status.success() {
            return Ok(ran.stdout);
        }
        let said = ran.stderr.trim();
        // ssh's own failures exit 255; the script's are its own codes.
        Err(if ran.status.code() == Some(255) {
            self.ssh_failure(said)
        } else {
            format!("{}: {said}", self.name())
        })
    }

    fn ssh_failure(&self, said: &str) -> String {
        let known = self
            .known_hosts_file
            .clone()
            .unwrap_or_else(|| "~/.ssh/known_hosts".into());
        if said.contains("Host key verification failed")
            || said.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || said.contains("No ED25519 host key is known")
            || said.contains("host key is known")
        {
            format!(
                "the host key of {} is not the one {known} holds for it (or it holds none), so kiln does not connect; check the host's key, then add it (`ssh-keyscan -p {} {} >> {known}`)",
                self.name(),
                self.port,
                self.host
            )
        } else if said.contains("Permission denied") {
            format!(
                "{} refused the login ({said}); check `user` and `identity_file`",
                self.name()
            )
        } else {
            format!("{} cannot be reached: {said}", self.name())
        }
    }
}

/// `'text'` for sh, whatever it holds.
fn quote(text: &str) -> String {
    shlex::try_quote(text).map_or_else(
        // Only a NUL byte cannot be quoted; no path or value kiln passes holds one.
        |_| "''".to_owned(),
        |q| q.into_owned(),
    )
}

/// `remote_dir` as the remote shell reads it: relative to the login's home, `~/` allowed.
fn remote_dir(attrs: &Attributes) -> String {
    let dir = str_attr(attrs, "remote_dir").unwrap_or(".kiln");
    dir.strip_prefix("~/").unwrap_or(dir).to_owned()
}

/// The run-file stem of a node: `<dir>/run/<cluster>-<node>`.
fn stem(dir: &str, cluster: &str, node: &str) -> String {
    format!("{dir}/run/{cluster}-{node}")
}

impl Ssh {
    fn sha256(&self, bin: &Path) -> Result<String, String> {
        let mut hashes = self.hashes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hash) = hashes.get(bin) {
            return Ok(hash.clone());
        }
        let mut file = std::fs::File::open(bin)
            .map_err(|e| format!("cannot read the worker binary {}: {e}", bin.display()))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0; 1 << 20];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| format!("cannot read {}: {e}", bin.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let hash = hex::encode(hasher.finalize());
        hashes.insert(bin.to_owned(), hash.clone());
        Ok(hash)
    }

    /// The worker binary's path on the host, and the SHA-256 it must have: the pool's
    /// `worker_path` (no hash: it is the pool's to keep), or where this machine's binary is
    /// copied in `remote_dir/bin`, named by its hash.
    fn remote_binary(
        &self,
        attrs: &Attributes,
        bin: &Path,
    ) -> Result<(String, Option<String>), String> {
        if let Some(path) = str_attr(attrs, "worker_path") {
            return Ok((path.to_owned(), None));
        }
        let hash = self.sha256(bin)?;
        let remote = format!("{}/bin/kiln-worker-{}", remote_dir(attrs), &hash[..16]);
        Ok((remote, Some(hash)))
    }

    /// Copies `bin` to `remote` on the host (after checking the host's architecture), through
    /// a temporary file that is checked by hash before it takes the name.
    fn copy(&self, login: &Login, bin: &Path, remote: &str, hash: &str) -> Result<(), String> {
        let arch = login.run("uname -m", Vec::new(), CALL)?;
        let arch = arch.trim();
        if arch != std::env::consts::ARCH {
            return Err(format!(
                "{} is a {arch} machine and {} is built for {}; build the worker for it and set the pool's `worker_path`",
                login.name(),
                bin.display(),
                std::env::consts::ARCH
            ));
        }
        let bytes = std::fs::read(bin)
            .map_err(|e| format!("cannot read the worker binary {}: {e}", bin.display()))?;
        tracing::info!(host = %login.name(), path = %remote, "copying the worker binary");
        let copy = format!(
            "set -e; f={f}; mkdir -p \"$(dirname \"$f\")\"; t=\"$f.part.$$\"; cat > \"$t\"; \
             [ \"$(sha256sum < \"$t\" | cut -c1-64)\" = {hash} ] || {{ rm -f \"$t\"; echo 'the copy arrived damaged' >&2; exit 1; }}; \
             chmod 755 \"$t\"; mv \"$t\" \"$f\"",
            f = quote(remote),
        );
        login
            .run(&copy, bytes, COPY)
            .map(drop)
            .map_err(|e| format!("copying the worker binary: {e}"))
    }

    fn start_worker(
        &self,
        node: &Resource,
        reach: &Reach,
        bin: &Path,
    ) -> Result<Attributes, String> {
        let attrs = &node.attrs;
        let login = Login::of(attrs)?;
        let (remote_bin, hash) = self.remote_binary(attrs, bin)?;
        let name = node.address.node_name().unwrap_or_default();
        let dir = remote_dir(attrs);
        let run = stem(&dir, &node.address.cluster, &name);
        let log = format!("{dir}/logs/{}-{name}.log", node.address.cluster);
        let gpus = slot_gpus(
            u32_attr(attrs, "slot").unwrap_or(0),
            u32_attr(attrs, "gpus_per_node").unwrap_or(0),
        );
        let exports: String = worker_env(reach, &name, attrs, Some(&gpus))
            .iter()
            .map(|(k, v)| format!("export {}={}\n", quote(k), quote(v)))
            .collect();
        // The token comes on stdin; the worker is a child of a detached shell that leaves its
        // exit code beside its pid.
        let script = format!(
            "set -e\n\
             bin={bin}; run={run}; log={log}\n\
             {check}\n\
             mkdir -p \"$(dirname \"$run\")\" \"$(dirname \"$log\")\"\n\
             IFS= read -r KILN_JOIN_TOKEN; export KILN_JOIN_TOKEN\n\
             {exports}\
             rm -f \"$run.pid\" \"$run.exit\"\n\
             setsid sh -c '\"$1\" & echo $! > \"$2.pid\"; wait $!; echo $? > \"$2.exit\"' worker \"$bin\" \"$run\" </dev/null >>\"$log\" 2>&1 &\n\
             i=0; while [ ! -s \"$run.pid\" ]; do i=$((i+1)); [ $i -lt 200 ] || {{ echo 'the worker did not start' >&2; exit 1; }}; sleep 0.05; done\n\
             p=$(cat \"$run.pid\"); echo \"$p\"; cat /proc/$p/stat 2>/dev/null || {{ echo 'the worker exited at once; its log ends:' >&2; tail -n 10 \"$log\" >&2; exit 1; }}\n",
            bin = quote(&remote_bin),
            run = quote(&run),
            log = quote(&log),
            check = match &hash {
                // A copy that is missing or not this binary is (re)sent, then started.
                Some(hash) => format!(
                    "[ -x \"$bin\" ] && [ \"$(sha256sum < \"$bin\" | cut -c1-64)\" = {hash} ] || {{ echo {MISSING} >&2; exit 3; }}"
                ),
                None => "[ -x \"$bin\" ] || { echo \"$bin is not an executable file on this host\" >&2; exit 3; }".to_owned(),
            },
        );
        let token = format!("{}\n", reach.join_token).into_bytes();
        let said = match (login.run(&script, token.clone(), CALL), &hash) {
            (Err(e), Some(hash)) if e.contains(MISSING) => {
                self.copy(&login, bin, &remote_bin, hash)?;
                login.run(&script, token, CALL)?
            }
            (said, _) => said?,
        };
        let mut lines = said.lines();
        let pid: u32 = lines
            .next()
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| format!("{}: no pid came back: {said}", login.name()))?;
        let (_, start_ticks) = lines
            .next()
            .and_then(parse_stat)
            .ok_or_else(|| format!("{}: no process status came back: {said}", login.name()))?;
        tracing::info!(host = %login.name(), pid, "worker started");
        Ok([
            ("host", Value::from(login.host.clone())),
            ("pid", pid.into()),
            ("start_ticks", start_ticks.into()),
            ("log", format!("{}:{log}", login.host).into()),
            ("run", run.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect())
    }

    /// Looks at every worker recorded on one host with one call.
    fn observe_host(&self, login: &Login, nodes: &[&Recorded]) -> Vec<Seen> {
        let mut script = String::new();
        for (i, node) in nodes.iter().enumerate() {
            let pid = node.handle.get("pid").and_then(Value::as_u64).unwrap_or(0);
            let run = str_attr(&node.handle, "run").unwrap_or("/nonexistent");
            script.push_str(&format!(
                "s=$(cat /proc/{pid}/stat 2>/dev/null || true); e=$(cat {run}.exit 2>/dev/null || true); printf '%s\\t%s\\t%s\\n' {i} \"$e\" \"$s\"\n",
                run = quote(run),
            ));
        }
        let said = match login.run(&script, Vec::new(), CALL) {
            Ok(said) => said,
            Err(why) => return vec![Seen::Unknown(why); nodes.len()],
        };
        let mut seen = vec![Seen::Unknown(format!("{}: no answer", login.name())); nodes.len()];
        for line in said.lines() {
            let mut fields = line.splitn(3, '\t');
            let (Some(i), Some(exit), stat) = (fields.next(), fields.next(), fields.next()) else {
                continue;
            };
            let Some((i, node)) = i
                .parse::<usize>()
                .ok()
                .and_then(|i| Some((i, nodes.get(i)?)))
            else {
                continue;
            };
            seen[i] = judge(node, &login.host, exit.trim(), stat.and_then(parse_stat));
        }
        seen
    }
}

/// Whether the recorded worker is the process `stat` describes, and how it ended if not.
fn judge(node: &Recorded, host: &str, exit: &str, stat: Option<(char, u64)>) -> Seen {
    use std::os::unix::process::ExitStatusExt;
    let pid = node.handle.get("pid").and_then(Value::as_u64).unwrap_or(0);
    let ticks = node.handle.get("start_ticks").and_then(Value::as_u64);
    match stat {
        Some((state, t)) if Some(t) == ticks && !matches!(state, 'Z' | 'X') => Seen::Running,
        _ => {
            // `wait` reports a worker killed by signal N as 128 + N.
            let (status, how) = match exit.parse::<i32>() {
                Ok(code) if code > 128 => (
                    ExitStatus::from_raw(code - 128),
                    format!(" (killed by signal {})", code - 128),
                ),
                Ok(code) => (
                    ExitStatus::from_raw(code << 8),
                    format!(" (exit code {code})"),
                ),
                Err(_) => (super::killed_status(), String::new()),
            };
            Seen::Ended {
                why: format!("pid {pid} on {host} is no longer running{how}"),
                status,
            }
        }
    }
}

impl Backend for Ssh {
    fn start(
        &self,
        node: &Resource,
        reach: &Reach,
        worker_bin: &Path,
        _log_dir: &Path,
    ) -> Result<Attributes, ProviderError> {
        self.start_worker(node, reach, worker_bin)
            .map_err(|detail| ProviderError::NotReady {
                resource: node.address.to_string(),
                detail,
            })
    }

    fn observe(&self, nodes: &[&Recorded]) -> Vec<Seen> {
        // One call per host, all hosts at once: an unreachable host costs its timeout once.
        let mut by_login: BTreeMap<Login, Vec<usize>> = BTreeMap::new();
        let mut seen = vec![Seen::Unknown(String::new()); nodes.len()];
        for (i, node) in nodes.iter().enumerate() {
            match Login::of(&node.attrs) {
                Ok(login) => by_login.entry(login).or_default().push(i),
                Err(why) => seen[i] = Seen::Unknown(why),
            }
        }
        std::thread::scope(|scope| {
            let calls: Vec<_> = by_login
                .iter()
                .map(|(login, indices)| {
                    let these: Vec<&Recorded> = indices.iter().map(|&i| nodes[i]).collect();
                    (
                        indices,
                        scope.spawn(move || self.observe_host(login, &these)),
                    )
                })
                .collect();
            for (indices, call) in calls {
                let found = call.join().unwrap_or_default();
                for (&i, s) in indices.iter().zip(found) {
                    seen[i] = s;
                }
            }
        });
        seen
    }

    fn stop(&self, node: &Recorded, grace: Duration) -> Result<(), ProviderError> {
        let fail = |detail: String| ProviderError::Stop {
            resource: node.address.to_string(),
            source: std::io::Error::other(detail),
        };
        let login = Login::of(&node.attrs).map_err(fail)?;
        let field = |name| node.handle.get(name).and_then(Value::as_u64);
        let (Some(pid), Some(ticks)) = (field("pid"), field("start_ticks")) else {
            // A handle without a process never started one: nothing to stop.
            return Ok(());
        };
        let steps = grace.as_millis().div_ceil(50);
        // Signals only the recorded process: same pid and same start time.
        let script = format!(
            "p={pid}; t={ticks}\n\
             alive() {{ s=$(cat /proc/$p/stat 2>/dev/null) || return 1; set -- ${{s##*) }}; [ \"$1\" != Z ] && [ \"${{20}}\" = \"$t\" ]; }}\n\
             alive || exit 0\n\
             kill -TERM $p 2>/dev/null || true\n\
             i=0; while alive && [ $i -lt {steps} ]; do sleep 0.05; i=$((i+1)); done\n\
             alive || exit 0\n\
             kill -KILL $p 2>/dev/null || true\n\
             i=0; while alive && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done\n\
             alive && {{ echo \"pid $p survived SIGKILL\" >&2; exit 1; }}; exit 0\n"
        );
        login
            .run(&script, Vec::new(), grace + CALL)
            .map(drop)
            .map_err(fail)
    }

    fn describe(&self, handle: &Attributes) -> String {
        format!(
            "pid {} on {}",
            handle.get("pid").and_then(Value::as_u64).unwrap_or(0),
            str_attr(handle, "host").unwrap_or("?")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_scripts_survive_the_remote_shell() {
        let tricky = "it's a \"path\" with $HOME and `ticks`";
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", quote(tricky)))
            .output()
            .expect("sh");
        assert_eq!(String::from_utf8_lossy(&out.stdout), tricky);
    }

    #[test]
    fn a_worker_is_running_only_while_its_pid_has_its_start_time() {
        let node = Recorded {
            address: crate::plan::Address {
                cluster: "c".into(),
                kind: crate::plan::ResourceKind::Node {
                    pool: "p".into(),
                    index: 0,
                },
            },
            attrs: Attributes::new(),
            handle: [
                ("pid".to_owned(), Value::from(42)),
                ("start_ticks".to_owned(), Value::from(7)),
            ]
            .into_iter()
            .collect(),
        };
        assert!(matches!(
            judge(&node, "h", "", Some(('S', 7))),
            Seen::Running
        ));
        let Seen::Ended { why, status } = judge(&node, "h", "137", Some(('S', 8))) else {
            panic!("a reused pid is not ours");
        };
        assert!(why.contains("killed by signal 9"), "{why}");
        assert!(!status.success());
        let Seen::Ended { status, .. } = judge(&node, "h", "0", None) else {
            panic!("gone");
        };
        assert!(status.success());
    }
}
