//! Providers turn a cluster's node pools into running `kiln-worker` processes.
//!
//! [`LocalProvider`] spawns one process per node on this machine. It owns its children: they are
//! killed and reaped on [`Provider::shutdown`] and, as a last resort, when the provider is
//! dropped, so no worker outlives the command that started it.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::spec::{ClusterSpec, ProviderKind};

/// What every worker process is told at start.
#[derive(Debug, Clone)]
pub struct WorkerLaunch {
    /// The `kiln-worker` executable.
    pub worker_bin: PathBuf,
    /// Coordinator URL the workers connect to.
    pub coordinator_url: String,
    /// Join token (passed through the environment, never on the command line).
    pub join_token: String,
    /// Directory for per-node log files (`<node>.log`).
    pub log_dir: PathBuf,
}

/// One provisioned node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `<pool>-<index>`.
    pub name: String,
    /// Process id of its worker.
    pub pid: u32,
}

/// A node whose worker process ended.
#[derive(Debug, Clone)]
pub struct NodeExit {
    /// The node.
    pub node: Node,
    /// How it ended.
    pub status: ExitStatus,
}

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The provider kind cannot run here.
    #[error("provider {0:?} is not available in this build")]
    Unsupported(ProviderKind),
    /// A worker process could not be started.
    #[error("cannot start {bin} for node {node}")]
    Spawn {
        /// The executable.
        bin: PathBuf,
        /// The node.
        node: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The log directory could not be created.
    #[error("cannot create the log directory {0}")]
    Logs(PathBuf, #[source] std::io::Error),
}

/// Provisions and tears down the nodes of a cluster.
pub trait Provider {
    /// Starts one worker per node of every pool of `cluster`.
    fn launch(
        &mut self,
        cluster: &ClusterSpec,
        launch: &WorkerLaunch,
    ) -> impl Future<Output = Result<Vec<Node>, ProviderError>> + Send;

    /// Waits until some node's worker ends; pending forever when there are none.
    fn next_exit(&mut self) -> impl Future<Output = NodeExit> + Send;

    /// Stops every node: waits up to `grace` for workers to exit on their own (they do once the
    /// coordinator is gone), then kills the rest. Every process is reaped.
    fn shutdown(&mut self, grace: Duration) -> impl Future<Output = Vec<NodeExit>> + Send;
}

/// Runs each node as a child process of this one.
#[derive(Default)]
pub struct LocalProvider {
    children: Vec<(Node, Child)>,
}

impl LocalProvider {
    /// A provider with no nodes yet.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Provider for LocalProvider {
    async fn launch(
        &mut self,
        cluster: &ClusterSpec,
        launch: &WorkerLaunch,
    ) -> Result<Vec<Node>, ProviderError> {
        match cluster.provider {
            ProviderKind::Local => {}
        }
        std::fs::create_dir_all(&launch.log_dir)
            .map_err(|e| ProviderError::Logs(launch.log_dir.clone(), e))?;
        let mut nodes = Vec::new();
        for pool in &cluster.node_pools {
            for i in 0..pool.count {
                let name = format!("{}-{i}", pool.name);
                let spawn_err = |source| ProviderError::Spawn {
                    bin: launch.worker_bin.clone(),
                    node: name.clone(),
                    source,
                };
                let log = std::fs::File::create(launch.log_dir.join(format!("{name}.log")))
                    .map_err(spawn_err)?;
                let child = Command::new(&launch.worker_bin)
                    .env("KILN_COORDINATOR", &launch.coordinator_url)
                    .env("KILN_JOIN_TOKEN", &launch.join_token)
                    .env("KILN_NODE_NAME", &name)
                    .env("RAYON_NUM_THREADS", pool.cpus_per_node.to_string())
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().map_err(spawn_err)?)
                    .stderr(log)
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(spawn_err)?;
                let node = Node {
                    name,
                    pid: child.id().unwrap_or_default(),
                };
                tracing::info!(node = %node.name, pid = node.pid, "worker started");
                nodes.push(node.clone());
                self.children.push((node, child));
            }
        }
        Ok(nodes)
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
            status: status.unwrap_or_else(|_| killed_status()),
        }
    }

    async fn shutdown(&mut self, grace: Duration) -> Vec<NodeExit> {
        let mut exits = Vec::new();
        let deadline = tokio::time::Instant::now() + grace;
        for (node, mut child) in self.children.drain(..) {
            let status = match tokio::time::timeout_at(deadline, child.wait()).await {
                Ok(Ok(status)) => status,
                _ => {
                    tracing::warn!(node = %node.name, pid = node.pid, "worker did not exit; killing it");
                    let _ = child.start_kill();
                    child.wait().await.unwrap_or_else(|_| killed_status())
                }
            };
            exits.push(NodeExit { node, status });
        }
        exits
    }
}

fn killed_status() -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus::from_raw(9)
}
