//! [`LocalProvider`]: every node is a `kiln-worker` process on this machine, a declared
//! cluster's coordinator a `kiln coordinator` process, and a job's model server the worker
//! binary's `serve`.
//!
//! Ephemeral nodes (`kiln up`) are children of this process, killed and reaped on
//! [`Provider::shutdown`] and, as a last resort, when the provider is dropped. Declared
//! resources (`kiln apply`) are detached and recorded by pid and process start time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::Child;

use super::process::{Identity, log_tail, spawn_detached};
use super::worker::{Reach, node_index, str_attr, u32_attr, worker_env};
use super::{ApplyContext, Node, NodeExit, Provider, ProviderError, WorkerLaunch};
use crate::plan::{self, Address, Attributes, Change, Observed, Recorded, Resource, ResourceKind};
use crate::spec::{ClusterSpec, ProviderKind};

/// How long a new coordinator or model server gets to start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs each node as a process on this machine.
#[derive(Default)]
pub struct LocalProvider {
    children: Vec<(Node, Child)>,
    /// What each launched node was given, for relaunching it.
    shares: BTreeMap<String, Share>,
}

/// The part of this machine a node's worker gets.
#[derive(Debug, Clone, Default)]
struct Share {
    /// Its `CUDA_VISIBLE_DEVICES`: empty for a node without GPUs, so it sees none.
    gpus: String,
    /// The node's attributes (its CPUs and `env`), as the plan derives them.
    attrs: Attributes,
}

/// The test double for a machine without GPUs: `KILN_FAKE_GPUS=N` makes the provider hand out
/// N devices (and makes the workers report the ones they get as fake GPUs).
const FAKE_GPUS_ENV: &str = "KILN_FAKE_GPUS";

/// The GPUs this machine lets kiln hand out: those of `CUDA_VISIBLE_DEVICES` when kiln runs
/// under one, else `0..N` for the N NVIDIA GPUs the driver lists (or `KILN_FAKE_GPUS`).
fn machine_gpus() -> Vec<String> {
    if let Ok(visible) = std::env::var("CUDA_VISIBLE_DEVICES") {
        return visible
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect();
    }
    let count = match std::env::var(FAKE_GPUS_ENV) {
        Ok(n) => n.trim().parse().unwrap_or(0),
        Err(_) => std::fs::read_dir("/proc/driver/nvidia/gpus").map_or(0, Iterator::count),
    };
    (0..count).map(|i: usize| i.to_string()).collect()
}

/// The `CUDA_VISIBLE_DEVICES` of node `index` of a pool with `per_node` GPUs: the machine's
/// GPUs `[index·per_node, (index+1)·per_node)`, or why the machine has too few.
fn node_gpus(index: u32, per_node: u32, machine: &[String]) -> Result<String, String> {
    let (first, end) = (
        index as usize * per_node as usize,
        (index as usize + 1) * per_node as usize,
    );
    match machine.get(first..end) {
        Some(devices) => Ok(devices.join(",")),
        None => Err(format!(
            "node {index} of a pool with gpus_per_node = {per_node} needs the machine's {}, but this machine has {} ({}); lower `count` or `gpus_per_node`",
            if per_node == 1 {
                format!("GPU {first}")
            } else {
                format!("GPUs {first} to {}", end - 1)
            },
            machine.len(),
            if machine.is_empty() {
                "no NVIDIA GPU is listed under /proc/driver/nvidia/gpus".to_owned()
            } else {
                format!("CUDA devices {}", machine.join(", "))
            }
        )),
    }
}

impl LocalProvider {
    /// A provider with no nodes yet.
    pub fn new() -> Self {
        Self::default()
    }
}

impl LocalProvider {
    /// Starts the worker of ephemeral node `name`; its log is truncated, or appended to when
    /// `again` (a replacement keeps its predecessor's log).
    fn spawn_child(
        &mut self,
        name: String,
        launch: &WorkerLaunch,
        again: bool,
    ) -> Result<Node, ProviderError> {
        let spawn_err = |source| ProviderError::Spawn {
            bin: launch.worker_bin.clone(),
            node: name.clone(),
            source,
        };
        let log_path = launch.log_dir.join(format!("{name}.log"));
        let log = std::fs::File::options()
            .create(true)
            .write(true)
            .append(again)
            .truncate(!again)
            .open(&log_path)
            .map_err(spawn_err)?;
        let share = self.shares.get(&name).cloned().unwrap_or_default();
        let mut cmd = tokio::process::Command::from(worker_command(
            &launch.worker_bin,
            &launch.reach(),
            &name,
            &share,
        ));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(spawn_err)?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_err)?;
        let node = Node {
            name,
            id: format!("pid {}", child.id().unwrap_or_default()),
            log: log_path,
        };
        tracing::info!(node = %node.name, id = %node.id, "worker started");
        self.children.push((node.clone(), child));
        Ok(node)
    }
}

/// The command line and environment of node `name`'s worker.
fn worker_command(bin: &Path, reach: &Reach, name: &str, share: &Share) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin);
    cmd.envs(worker_env(reach, name, &share.attrs, Some(&share.gpus)))
        .env("KILN_JOIN_TOKEN", &reach.join_token);
    cmd
}

fn create_log_dir(dir: &Path) -> Result<(), ProviderError> {
    std::fs::create_dir_all(dir).map_err(|e| ProviderError::Logs(dir.to_owned(), e))
}

impl Provider for LocalProvider {
    async fn launch(
        &mut self,
        cluster: &ClusterSpec,
        launch: &WorkerLaunch,
    ) -> Result<Vec<Node>, ProviderError> {
        if cluster.provider != ProviderKind::Local {
            return Err(ProviderError::Unsupported(cluster.provider));
        }
        create_log_dir(&launch.log_dir)?;
        // Every node's share first, so a machine with too few GPUs starts nothing.
        let machine = machine_gpus();
        let mut names = Vec::new();
        for node in plan::cluster_resources(cluster) {
            let Some(name) = node.address.node_name() else {
                continue;
            };
            let per_node = u32_attr(&node.attrs, "gpus_per_node").unwrap_or(0);
            let gpus =
                node_gpus(node_index(&node.address), per_node, &machine).map_err(|detail| {
                    ProviderError::Invalid {
                        resource: format!("node {name}"),
                        detail,
                    }
                })?;
            let share = Share {
                gpus,
                attrs: node.attrs,
            };
            self.shares.insert(name.clone(), share);
            names.push(name);
        }
        let mut nodes = Vec::new();
        for name in names {
            nodes.push(self.spawn_child(name, launch, false)?);
        }
        Ok(nodes)
    }

    async fn relaunch(
        &mut self,
        node: &Node,
        launch: &WorkerLaunch,
    ) -> Result<Node, ProviderError> {
        self.spawn_child(node.name.clone(), launch, true)
    }

    async fn next_exit(&mut self) -> NodeExit {
        if self.children.is_empty() {
            return std::future::pending().await;
        }
        let waits = self
            .children
            .iter_mut()
            .map(|(_, child)| Box::pin(child.wait()));
        let (status, index, _) = futures::future::select_all(waits).await;
        let (node, _) = self.children.remove(index);
        NodeExit {
            node,
            // A failed wait means the child is already reaped; report it as a kill.
            status: status.unwrap_or_else(|_| super::killed_status()),
        }
    }

    async fn shutdown(&mut self, grace: Duration) -> Vec<NodeExit> {
        let mut exits = Vec::new();
        let deadline = tokio::time::Instant::now() + grace;
        for (node, mut child) in self.children.drain(..) {
            let status = match tokio::time::timeout_at(deadline, child.wait()).await {
                Ok(Ok(status)) => status,
                _ => {
                    tracing::warn!(node = %node.name, id = %node.id, "worker did not exit; killing it");
                    let _ = child.start_kill();
                    child
                        .wait()
                        .await
                        .unwrap_or_else(|_| super::killed_status())
                }
            };
            exits.push(NodeExit { node, status });
        }
        exits
    }

    fn refresh(&self, recorded: &[Recorded]) -> Vec<Observed> {
        recorded
            .iter()
            .map(|r| Observed {
                recorded: r.clone(),
                gone: match identity(r) {
                    Ok(id) => id.gone(),
                    Err(e) => Some(e.to_string()),
                },
            })
            .collect()
    }

    async fn apply(
        &mut self,
        change: &Change,
        state: &[Recorded],
        cx: &ApplyContext,
    ) -> Result<Option<Recorded>, ProviderError> {
        if let Some(before) = super::to_destroy(change) {
            self.destroy(before, cx.grace).await?;
        }
        let after = match super::to_start(change) {
            Ok(after) => after,
            Err(done) => return Ok(done),
        };
        create_log_dir(&cx.log_dir)?;
        let handle = match &after.address.kind {
            ResourceKind::Coordinator { .. } => start_coordinator(after, cx).await?,
            ResourceKind::Node { .. } => start_node(after, state, cx)?,
            ResourceKind::Server { job } => start_server(job, after, cx).await?,
        };
        Ok(Some(Recorded {
            address: after.address.clone(),
            attrs: after.attrs.clone(),
            handle,
        }))
    }

    async fn destroy(&mut self, resource: &Recorded, grace: Duration) -> Result<(), ProviderError> {
        let Ok(id) = identity(resource) else {
            // A handle without a process never started one: nothing to stop.
            return Ok(());
        };
        tokio::task::spawn_blocking(move || id.stop(grace))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|source| ProviderError::Stop {
                resource: resource.address.to_string(),
                source,
            })
    }
}

fn invalid(address: &Address, detail: impl Into<String>) -> ProviderError {
    ProviderError::Invalid {
        resource: address.to_string(),
        detail: detail.into(),
    }
}

fn identity(r: &Recorded) -> Result<Identity, ProviderError> {
    let field = |name| r.handle.get(name).and_then(Value::as_u64);
    match (field("pid"), field("start_ticks")) {
        (Some(pid), Some(start_ticks)) => Ok(Identity {
            pid: u32::try_from(pid).map_err(|_| invalid(&r.address, "pid out of range"))?,
            start_ticks,
        }),
        _ => Err(invalid(&r.address, "the state records no process for it")),
    }
}

fn handle(
    id: Identity,
    log: &Path,
    extra: impl IntoIterator<Item = (&'static str, Value)>,
) -> Attributes {
    let mut handle: Attributes = [
        ("pid".to_owned(), Value::from(id.pid)),
        ("start_ticks".to_owned(), Value::from(id.start_ticks)),
        ("log".to_owned(), Value::from(log.display().to_string())),
    ]
    .into_iter()
    .collect();
    handle.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
    handle
}

/// Makes a random token file at `path` (0600) unless one is there: the token every
/// coordinator of an etcd state shares.
fn shared_token(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let token: String = rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(token.as_bytes())
}

/// Starts `kiln coordinator` for the resource and waits until it listens.
async fn start_coordinator(r: &Resource, cx: &ApplyContext) -> Result<Attributes, ProviderError> {
    let address = &r.address;
    let index = match address.kind {
        ResourceKind::Coordinator { index } => index,
        ResourceKind::Node { .. } | ResourceKind::Server { .. } => 0,
    };
    let listen =
        str_attr(&r.attrs, "listen").ok_or_else(|| invalid(address, "no listen address"))?;
    let name = match index {
        0 => format!("{}-coordinator", address.cluster),
        i => format!("{}-coordinator-{i}", address.cluster),
    };
    let log = cx.log_dir.join(format!("{name}.log"));
    let ready = cx.log_dir.join(format!("{name}.url"));
    let http_ready = cx.log_dir.join(format!("{name}.http.url"));
    let _ = std::fs::remove_file(&ready);
    let _ = std::fs::remove_file(&http_ready);
    let mut cmd = std::process::Command::new(&cx.kiln_bin);
    cmd.arg("coordinator")
        .arg("--listen")
        .arg(listen)
        .arg("--ready-file")
        .arg(&ready)
        .arg("--http-ready-file")
        .arg(&http_ready);
    if let Some(http) = str_attr(&r.attrs, "http_listen") {
        cmd.arg("--http-listen").arg(http);
    }
    // Where the tokens are: an embedded state's coordinator writes fresh ones into its
    // directory; coordinators sharing etcd share files made here once.
    let tokens = match str_attr(&r.attrs, "state_backend") {
        Some("embedded") => {
            let state = PathBuf::from(
                str_attr(&r.attrs, "state").ok_or_else(|| invalid(address, "no state path"))?,
            );
            cmd.arg("--state").arg(&state);
            state
        }
        Some("etcd") => {
            let etcd = r.attrs.get("state");
            let endpoints: Vec<&str> = etcd
                .and_then(|e| e.get("endpoints"))
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let prefix = etcd
                .and_then(|e| e.get("prefix"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(address, "no etcd prefix"))?;
            cmd.arg("--etcd")
                .arg(endpoints.join(","))
                .arg("--etcd-prefix")
                .arg(prefix);
            let dir = cx.log_dir.with_file_name("tokens").join(&address.cluster);
            for file in ["join-token", "client-token"] {
                shared_token(&dir.join(file)).map_err(|e| {
                    invalid(
                        address,
                        format!("cannot make {}: {e}", dir.join(file).display()),
                    )
                })?;
            }
            cmd.arg("--client-token-file").arg(dir.join("client-token"));
            if str_attr(&r.attrs, "join_token_file").is_none() {
                cmd.arg("--join-token-file").arg(dir.join("join-token"));
            }
            dir
        }
        other => return Err(invalid(address, format!("unknown state backend {other:?}"))),
    };
    for (attr, flag) in [
        ("heartbeat_interval_ms", "--heartbeat-interval"),
        ("lease_ttl_ms", "--lease-ttl"),
    ] {
        if let Some(ms) = r.attrs.get(attr).and_then(Value::as_u64) {
            cmd.arg(flag).arg(format!("{ms}ms"));
        }
    }
    if let Some(advertise) = str_attr(&r.attrs, "advertise") {
        cmd.arg("--advertise").arg(advertise);
    }
    let tls = r.attrs.get("tls").filter(|t| !t.is_null());
    let tls_file = |name: &str| tls.and_then(|t| t.get(name)).and_then(Value::as_str);
    if let (Some(cert), Some(key)) = (tls_file("cert_file"), tls_file("key_file")) {
        cmd.arg("--tls-cert-file")
            .arg(cert)
            .arg("--tls-key-file")
            .arg(key);
    }
    let token_file = match str_attr(&r.attrs, "join_token_file") {
        Some(file) => {
            cmd.arg("--join-token-file").arg(file);
            PathBuf::from(file)
        }
        // `kiln coordinator` writes a fresh token there before it listens (or it is shared).
        None => tokens.join("join-token"),
    };
    let (id, url) = start_listening(cmd, &cx.kiln_bin, address, &log, &ready).await?;
    // Written before the gRPC URL.
    let http_url = std::fs::read_to_string(&http_ready)
        .ok()
        .map(|u| u.trim().to_owned());
    tracing::info!(%address, pid = id.pid, %url, "coordinator started");
    Ok(handle(
        id,
        &log,
        [
            ("url", Value::from(url)),
            (
                "join_token_file",
                Value::from(token_file.display().to_string()),
            ),
            // `kiln coordinator` writes its client token there before it listens.
            (
                "client_token_file",
                Value::from(tokens.join("client-token").display().to_string()),
            ),
            ("ca_file", tls_file("ca_file").into()),
            ("http_url", http_url.into()),
        ],
    ))
}

/// Starts `cmd` (a server that writes its URL into `ready` once it listens, its output into
/// `log`) detached, and waits until it listens: its identity and URL.
async fn start_listening(
    cmd: std::process::Command,
    bin: &Path,
    address: &Address,
    log: &Path,
    ready: &Path,
) -> Result<(Identity, String), ProviderError> {
    let (mut child, id) = spawn_detached(cmd, log).map_err(|source| ProviderError::Spawn {
        bin: bin.to_owned(),
        node: address.to_string(),
        source,
    })?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(url) = std::fs::read_to_string(ready)
            && !url.trim().is_empty()
        {
            return Ok((id, url.trim().to_owned()));
        }
        let not_ready = |detail: String| ProviderError::NotReady {
            resource: address.to_string(),
            detail: format!(
                "{detail}; last lines of {}:\n{}",
                log.display(),
                log_tail(log, 10)
            ),
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Err(not_ready(format!("it exited with {status}")));
        }
        if Instant::now() > deadline {
            let _ = id.stop(Duration::ZERO);
            return Err(not_ready(format!("not listening after {READY_TIMEOUT:?}")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts job `job`'s model server: the worker binary's `serve` (which links Burn), on the
/// cluster's store, and waits until it listens.
async fn start_server(
    job: &str,
    r: &Resource,
    cx: &ApplyContext,
) -> Result<Attributes, ProviderError> {
    let address = &r.address;
    let str_of =
        |name: &str| str_attr(&r.attrs, name).ok_or_else(|| invalid(address, format!("no {name}")));
    let name = format!("{job}-serve");
    let log = cx.log_dir.join(format!("{name}.log"));
    let ready = cx.log_dir.join(format!("{name}.url"));
    let _ = std::fs::remove_file(&ready);
    let bin =
        str_attr(&r.attrs, "worker_binary").map_or_else(|| cx.worker_bin.clone(), PathBuf::from);
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg("serve")
        .args(["--model", str_of("model")?])
        .args(["--store", str_of("store")?])
        .args(["--listen", str_of("listen")?])
        // Declared before its job first trains: it waits for the model to exist.
        .arg("--wait-for-model")
        .arg("--ready-file")
        .arg(&ready);
    for (attr, flag) in [
        ("max_batch_size", "--max-batch-size"),
        ("max_delay_us", "--max-delay-us"),
        ("watch_interval_ms", "--watch-interval-ms"),
    ] {
        if let Some(n) = r.attrs.get(attr).and_then(Value::as_u64) {
            cmd.arg(format!("{flag}={n}"));
        }
    }
    for flag in [
        "store_endpoint",
        "store_region",
        "store_access_key_id_file",
        "store_secret_access_key_file",
    ] {
        if let Some(value) = str_attr(&r.attrs, flag) {
            cmd.arg(format!("--{}", flag.replace('_', "-"))).arg(value);
        }
    }
    match r.attrs.get("monitor").filter(|m| !m.is_null()) {
        Some(monitor) => {
            for (attr, flag) in [
                ("psi_threshold", "--psi-threshold"),
                ("window", "--drift-window"),
                ("min_samples", "--drift-min-samples"),
            ] {
                if let Some(value) = monitor.get(attr) {
                    cmd.arg(format!("{flag}={value}"));
                }
            }
        }
        None => {
            cmd.arg("--no-drift");
        }
    }
    let (id, url) = start_listening(cmd, &bin, address, &log, &ready).await?;
    tracing::info!(%address, pid = id.pid, %url, "model server started");
    Ok(handle(id, &log, [("url", Value::from(url))]))
}

/// Starts the node's worker, registered with its cluster's coordinator from `state`.
fn start_node(
    r: &Resource,
    state: &[Recorded],
    cx: &ApplyContext,
) -> Result<Attributes, ProviderError> {
    let address = &r.address;
    let reach = Reach::from_state(address, state)?;
    let name = address.node_name().unwrap_or_default();
    let share = Share {
        gpus: node_gpus(
            node_index(address),
            u32_attr(&r.attrs, "gpus_per_node").unwrap_or(0),
            &machine_gpus(),
        )
        .map_err(|detail| invalid(address, detail))?,
        attrs: r.attrs.clone(),
    };
    let log = cx.log_dir.join(format!("{}-{name}.log", address.cluster));
    // The cluster's own worker binary, when it declares one.
    let bin = r
        .attrs
        .get("worker_binary")
        .and_then(Value::as_str)
        .map_or_else(|| cx.worker_bin.clone(), std::path::PathBuf::from);
    let cmd = worker_command(&bin, &reach, &name, &share);
    let (_child, id) = spawn_detached(cmd, &log).map_err(|source| ProviderError::Spawn {
        bin: bin.clone(),
        node: address.to_string(),
        source,
    })?;
    tracing::info!(%address, pid = id.pid, "worker started");
    Ok(handle(id, &log, []))
}

#[cfg(test)]
mod tests {
    use super::node_gpus;

    #[test]
    fn node_i_gets_the_ith_slice_of_the_machines_gpus() {
        let machine: Vec<String> = ["4", "5", "6", "7"].map(String::from).into();
        assert_eq!(node_gpus(0, 2, &machine).as_deref(), Ok("4,5"));
        assert_eq!(node_gpus(1, 2, &machine).as_deref(), Ok("6,7"));
        assert_eq!(node_gpus(3, 1, &machine).as_deref(), Ok("7"));
        // A node without GPUs sees none, rather than all of them.
        assert_eq!(node_gpus(9, 0, &machine).as_deref(), Ok(""));

        let short = node_gpus(2, 2, &machine).expect_err("GPUs 4 and 5 do not exist");
        assert!(
            short.contains("GPUs 4 to 5") && short.contains("this machine has 4"),
            "{short}"
        );
        let none = node_gpus(0, 1, &[]).expect_err("no GPU at all");
        assert!(
            none.contains("needs the machine's GPU 0, but this machine has 0")
                && none.contains("/proc/driver/nvidia/gpus"),
            "{none}"
        );
    }
}
