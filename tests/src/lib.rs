//! Harness for kiln's end-to-end tests: runs the real `kiln` and `kiln-worker` binaries as
//! processes on loopback, each test in its own directory, and finds every process a test
//! started (by an environment tag its children inherit) to prove none outlives the test.
//! [`cluster`] starts a standalone coordinator and workers with a typed client on them;
//! [`wait_until`] is the one way a test waits for something to happen.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub mod cluster;
pub mod etcd;
pub mod hosts;
pub mod slurm;
pub mod sshd;

/// The directory holding the workspace's built binaries (`target/<profile>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_owned()
}

/// Path of a workspace binary; fails with a hint if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (cargo build --workspace --all-targets), as scripts/test does",
        path.display()
    );
    path
}

/// A scratch directory with a kiln configuration, and the tag every process started from it
/// carries in its environment.
pub struct Sandbox {
    /// Owns the directory.
    pub dir: tempfile::TempDir,
    /// Unique marker, inherited by `kiln` and its workers through `KILN_TEST_TAG`.
    pub tag: String,
    /// More environment for every `kiln` started here (and so for its workers).
    env: Vec<(String, String)>,
}

impl Sandbox {
    /// An empty sandbox.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let tag = format!(
            "kiln-test-{}-{}",
            std::process::id(),
            dir.path()
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("x")
        );
        Self {
            dir,
            tag,
            env: Vec::new(),
        }
    }

    /// Sets `key` to `value` in the environment of every `kiln` started from the sandbox.
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Writes `files` (name, contents) into the sandbox.
    pub fn with_files(self, files: &[(&str, &str)]) -> Self {
        for (name, contents) in files {
            let path = self.dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(path, contents).expect("write config");
        }
        self
    }

    /// The sandbox directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `kiln` command running in the sandbox with its tag.
    pub fn kiln(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("kiln"));
        cmd.args(args)
            .current_dir(self.path())
            .env("KILN_TEST_TAG", &self.tag)
            .env("KILN_WORKER_BIN", bin("kiln-worker"))
            .env_remove("KILN_COORDINATOR")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `kiln args` to completion, killing it after `timeout`.
    pub fn run(&self, args: &[&str], timeout: Duration) -> anyhow::Result<Output> {
        let child = self
            .kiln(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning kiln")?;
        wait_with_timeout(child, timeout)
    }

    /// [`Sandbox::run`] on a machine that pretends to have `gpus` GPUs (the `KILN_FAKE_GPUS`
    /// test double; `kiln`'s own `CUDA_VISIBLE_DEVICES` removed).
    pub fn run_on_fake_gpus(
        &self,
        args: &[&str],
        gpus: usize,
        timeout: Duration,
    ) -> anyhow::Result<Output> {
        let child = self
            .kiln(args)
            .env("KILN_FAKE_GPUS", gpus.to_string())
            .env_remove("CUDA_VISIBLE_DEVICES")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning kiln")?;
        wait_with_timeout(child, timeout)
    }

    /// Pids of live processes carrying this sandbox's tag.
    pub fn processes(&self) -> Vec<u32> {
        tagged_processes(&self.tag)
    }

    /// Polls until no tagged process is left, failing after `timeout` with the survivors.
    pub fn assert_no_processes(&self, timeout: Duration) {
        wait_until(timeout, "no process of the test to be left", || {
            let left = self.processes();
            if left.is_empty() { Ok(()) } else { Err(left) }
        });
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `kiln destroy --auto-approve` in the sandbox when dropped, then kills whatever of it
/// is left: what a test applied is stopped also when the test fails half-way.
pub struct Destroyed<'a>(pub &'a Sandbox);

impl Drop for Destroyed<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .run(&["destroy", "--auto-approve"], Duration::from_secs(60));
        for pid in self.0.processes() {
            signal(pid, "KILL");
        }
    }
}

/// Waits for `child`, killing it (and failing) after `timeout`.
pub fn wait_with_timeout(mut child: Child, timeout: Duration) -> anyhow::Result<Output> {
    use std::io::Read;
    // The pipes are read while the child runs: one that fills its pipe (64 KiB) would
    // otherwise wait for a reader forever.
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            child.wait()?;
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => bail!(
            "timed out after {timeout:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// Live (non-zombie) processes whose environment contains `KILN_TEST_TAG=<tag>`.
pub fn tagged_processes(tag: &str) -> Vec<u32> {
    let needle = format!("KILN_TEST_TAG={tag}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(true);
            !zombie && environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
        })
        .collect()
}

/// Sends `signal` (`"KILL"`, `"INT"`, ...) to `pid`; false if there was no such process.
/// Unsafe code is denied workspace-wide, so it goes through kill(1), not libc::kill.
pub fn signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Polls `condition` (every 20 ms) until it gives `Ok`, and returns the value; fails the test
/// after `timeout`, saying what it was waiting for and what it saw last (the `Err`).
pub fn wait_until<T, E: std::fmt::Debug>(
    timeout: Duration,
    what: &str,
    mut condition: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match condition() {
            Ok(value) => return value,
            Err(seen) => assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; last seen: {seen:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The port of the first `PREFIX<port>` in `text` (e.g. after `http://127.0.0.1:`).
pub fn port_after(text: &str, prefix: &str) -> Option<u16> {
    let rest = text.split(prefix).nth(1)?;
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

/// Stdout and stderr of `out`, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A cluster with one local pool of `nodes` nodes.
pub fn cluster_hcl(nodes: u32) -> String {
    cluster_hcl_with_storage(nodes, r#"url = "file://.kiln/store""#)
}

/// A cluster with one local pool of `nodes` nodes whose `storage` block holds `storage` (its
/// attributes, one per line).
pub fn cluster_hcl_with_storage(nodes: u32, storage: &str) -> String {
    format!(
        r#"cluster "local" {{
  provider = "local"
  node_pool "cpu" {{
    count = {nodes}
  }}
  storage {{
    {storage}
  }}
  state {{
    backend = "embedded"
    path    = ".kiln/state"
  }}
}}
"#
    )
}

/// A blobs job named `name` with the given size knobs.
pub fn blobs_job_hcl(
    name: &str,
    workers: u32,
    samples: u32,
    epochs: u32,
    every_steps: u32,
) -> String {
    format!(
        r#"job "{name}" {{
  cluster = "local"
  model "mlp" {{
    inputs  = 16
    hidden  = [32]
    classes = 4
  }}
  dataset "blobs" {{
    source           = "synthetic:blobs"
    samples          = {samples}
    features         = 16
    classes          = 4
    seed             = 7
    validation_split = 0.1
  }}
  training {{
    workers    = {workers}
    batch_size = 32
    epochs     = {epochs}
    seed       = 42
    optimizer "adam" {{
      learning_rate = 0.005
    }}
  }}
  checkpoint {{
    every_steps = {every_steps}
    keep        = 2
  }}
}}
"#
    )
}

/// A 2-input MLP job `points` on [`points_csv`] (as `points.csv`), training for `epochs` (a
/// number or an expression such as `var.epochs`).
pub fn points_job_hcl(epochs: &str) -> String {
    format!(
        r#"job "points" {{
  cluster = "local"
  model "mlp" {{
    inputs  = 2
    hidden  = [8, 4]
    classes = 2
  }}
  dataset "points" {{
    source           = "file://points.csv"
    label            = "label"
    classes          = 2
    validation_split = 0.25
  }}
  training {{
    workers    = 2
    batch_size = 16
    epochs     = {epochs}
    seed       = 3
    optimizer "adam" {{
      learning_rate = 0.05
    }}
  }}
}}
"#
    )
}

/// Side of the [`quadrant_images`].
pub const IMAGE_SIDE: usize = 8;
/// Classes of the [`quadrant_images`].
pub const IMAGE_CLASSES: usize = 4;

/// `n` greyscale 8×8 images and their labels: class c lights up quadrant c (pixel noise on
/// top), so a small CNN learns them. Deterministic.
pub fn quadrant_images(n: usize) -> (Vec<u8>, Vec<u8>) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 64) as u8
    };
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for i in 0..n {
        let class = i % IMAGE_CLASSES;
        for y in 0..IMAGE_SIDE {
            for x in 0..IMAGE_SIDE {
                let quadrant = (y / (IMAGE_SIDE / 2)) * 2 + x / (IMAGE_SIDE / 2);
                let base = if quadrant == class { 180 } else { 20 };
                pixels.push(base + noise());
            }
        }
        labels.push(class as u8);
    }
    (pixels, labels)
}

/// A CSV `x,y,label` of 240 points in two classes split at x = 0, the rows in a scrambled
/// order.
pub fn points_csv() -> String {
    let mut csv = String::from("x,y,label\n");
    for i in 0..240 {
        let x = f64::from(i * 97 % 240) / 120.0 - 1.0;
        csv.push_str(&format!("{x},{},{}\n", (x * 7.0).sin(), u8::from(x >= 0.0)));
    }
    csv
}
