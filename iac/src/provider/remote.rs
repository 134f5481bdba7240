//! [`Remote`]: a provider whose nodes' workers run where kiln cannot wait on them as children
//! (SSH hosts, Slurm jobs). A [`Backend`] knows three things: start a node's worker and say
//! how to find it again, look at recorded workers, stop one. Everything else is the same for
//! every such backend: declared nodes are what the backend recorded, and an ephemeral
//! cluster's nodes are watched by looking at them every [`POLL`].

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use super::worker::Reach;
use super::{ApplyContext, Node, NodeExit, Provider, ProviderError, WorkerLaunch};
use crate::plan::{self, Attributes, Change, Observed, Recorded, Resource};
use crate::spec::ClusterSpec;

/// How often an ephemeral cluster's workers are looked at.
const POLL: Duration = Duration::from_secs(1);

/// What a backend saw of one worker.
#[derive(Debug, Clone)]
pub(crate) enum Seen {
    /// It runs (or waits in a queue to).
    Running,
    /// It ended: why, and how.
    Ended { why: String, status: ExitStatus },
    /// It could not be looked at (an unreachable host, a controller that does not answer).
    Unknown(String),
}

/// Starts, looks at and stops workers somewhere else. Calls block (they run commands with
/// deadlines); [`Remote`] runs them off the async runtime.
pub(crate) trait Backend: Send + Sync + 'static {
    /// Starts the worker of `node`, reaching its coordinators through `reach`; its output
    /// goes under `log_dir` where the backend keeps logs on this machine. Returns the handle
    /// the state records.
    fn start(
        &self,
        node: &Resource,
        reach: &Reach,
        worker_bin: &Path,
        log_dir: &Path,
    ) -> Result<Attributes, ProviderError>;

    /// What became of each recorded worker, in order.
    fn observe(&self, nodes: &[&Recorded]) -> Vec<Seen>;

    /// Stops a worker: SIGTERM, up to `grace` to exit, then SIGKILL. Nothing happens when it
    /// is already gone.
    fn stop(&self, node: &Recorded, grace: Duration) -> Result<(), ProviderError>;

    /// How a node's handle is named in messages (`pid 4242 on gpu1`).
    fn describe(&self, handle: &Attributes) -> String;
}

/// A provider over a [`Backend`].
pub(crate) struct Remote<B> {
    backend: Arc<B>,
    /// What each ephemeral node was made from, by name (kept for relaunching it).
    resources: BTreeMap<String, Resource>,
    /// The ephemeral nodes whose workers run, by name.
    launched: BTreeMap<String, Recorded>,
}

impl<B: Backend> Remote<B> {
    pub(crate) fn new(backend: B) -> Self {
        Self {
            backend: Arc::new(backend),
            resources: BTreeMap::new(),
            launched: BTreeMap::new(),
        }
    }

    /// Runs `f` on the backend off the async runtime.
    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&B) -> T + Send + 'static) -> T {
        let backend = Arc::clone(&self.backend);
        tokio::task::spawn_blocking(move || f(&backend))
            .await
            .expect("a backend call panicked")
    }

    async fn start(
        &self,
        node: &Resource,
        reach: &Reach,
        worker_bin: &Path,
        log_dir: &Path,
    ) -> Result<Recorded, ProviderError> {
        let (resource, reach) = (node.clone(), reach.clone());
        let (bin, logs) = (worker_bin.to_owned(), log_dir.to_owned());
        let handle = self
            .blocking(move |b| b.start(&resource, &reach, &bin, &logs))
            .await?;
        Ok(Recorded {
            address: node.address.clone(),
            attrs: node.attrs.clone(),
            handle,
        })
    }

    async fn launch_one(
        &mut self,
        resource: Resource,
        launch: &WorkerLaunch,
    ) -> Result<Node, ProviderError> {
        let record = self
            .start(
                &resource,
                &launch.reach(),
                &launch.worker_bin,
                &launch.log_dir,
            )
            .await?;
        let name = resource.address.node_name().unwrap_or_default();
        let node = self.node(&name, &record);
        self.launched.insert(name.clone(), record);
        self.resources.insert(name, resource);
        Ok(node)
    }

    fn node(&self, name: &str, record: &Recorded) -> Node {
        Node {
            name: name.to_owned(),
            id: self.backend.describe(&record.handle),
            log: record
                .handle
                .get("log")
                .and_then(|l| l.as_str())
                .unwrap_or_default()
                .into(),
        }
    }

    /// The launched nodes whose workers ended, with how.
    async fn ended(&self) -> Vec<(String, String, ExitStatus)> {
        let records: Vec<(String, Recorded)> = self
            .launched
            .iter()
            .map(|(name, r)| (name.clone(), r.clone()))
            .collect();
        self.blocking(move |b| {
            let refs: Vec<&Recorded> = records.iter().map(|(_, r)| r).collect();
            let seen = b.observe(&refs);
            records
                .iter()
                .zip(seen)
                .filter_map(|((name, _), seen)| match seen {
                    Seen::Ended { why, status } => Some((name.clone(), why, status)),
                    Seen::Running | Seen::Unknown(_) => None,
                })
                .collect()
        })
        .await
    }

    fn exit(&mut self, name: &str, status: ExitStatus) -> Option<NodeExit> {
        let record = self.launched.remove(name)?;
        Some(NodeExit {
            node: self.node(name, &record),
            status,
        })
    }
}

impl<B: Backend> Provider for Remote<B> {
    async fn launch(
        &mut self,
        cluster: &ClusterSpec,
        launch: &WorkerLaunch,
    ) -> Result<Vec<Node>, ProviderError> {
        std::fs::create_dir_all(&launch.log_dir)
            .map_err(|e| ProviderError::Logs(launch.log_dir.clone(), e))?;
        let mut nodes = Vec::new();
        for resource in plan::cluster_resources(cluster) {
            if resource.address.node_name().is_some() {
                nodes.push(self.launch_one(resource, launch).await?);
            }
        }
        Ok(nodes)
    }

    async fn relaunch(
        &mut self,
        node: &Node,
        launch: &WorkerLaunch,
    ) -> Result<Node, ProviderError> {
        let resource =
            self.resources
                .get(&node.name)
                .cloned()
                .ok_or_else(|| ProviderError::Invalid {
                    resource: format!("node {}", node.name),
                    detail: "it was not launched here".into(),
                })?;
        self.launch_one(resource, launch).await
    }

    async fn next_exit(&mut self) -> NodeExit {
        loop {
            if self.launched.is_empty() {
                return std::future::pending().await;
            }
            if let Some((name, why, status)) = self.ended().await.into_iter().next() {
                tracing::info!(node = %name, %why, "worker ended");
                if let Some(exit) = self.exit(&name, status) {
                    return exit;
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn shutdown(&mut self, grace: Duration) -> Vec<NodeExit> {
        let deadline = tokio::time::Instant::now() + grace;
        let mut exits = Vec::new();
        while !self.launched.is_empty() && tokio::time::Instant::now() < deadline {
            for (name, _, status) in self.ended().await {
                exits.extend(self.exit(&name, status));
            }
            if !self.launched.is_empty() {
                tokio::time::sleep(POLL.min(grace)).await;
            }
        }
        for (name, record) in std::mem::take(&mut self.launched) {
            tracing::warn!(node = %name, "worker did not exit; stopping it");
            let node = self.node(&name, &record);
            let stopped = self
                .blocking(move |b| b.stop(&record, Duration::from_secs(1)))
                .await;
            if let Err(e) = stopped {
                tracing::warn!(node = %name, "{e}");
            }
            exits.push(NodeExit {
                node,
                status: super::killed_status(),
            });
        }
        exits
    }

    fn refresh(&self, recorded: &[Recorded]) -> Vec<Observed> {
        let refs: Vec<&Recorded> = recorded.iter().collect();
        recorded
            .iter()
            .zip(self.backend.observe(&refs))
            .map(|(r, seen)| Observed {
                recorded: r.clone(),
                gone: match seen {
                    Seen::Running => None,
                    Seen::Ended { why, .. } | Seen::Unknown(why) => Some(why),
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
        std::fs::create_dir_all(&cx.log_dir)
            .map_err(|e| ProviderError::Logs(cx.log_dir.clone(), e))?;
        let reach = Reach::from_state(&after.address, state)?;
        let bin = after
            .attrs
            .get("worker_binary")
            .and_then(|b| b.as_str())
            .map_or_else(|| cx.worker_bin.clone(), std::path::PathBuf::from);
        let record = self.start(after, &reach, &bin, &cx.log_dir).await?;
        tracing::info!(address = %after.address, id = %self.backend.describe(&record.handle), "worker started");
        Ok(Some(record))
    }

    async fn destroy(&mut self, resource: &Recorded, grace: Duration) -> Result<(), ProviderError> {
        let resource = resource.clone();
        self.blocking(move |b| b.stop(&resource, grace)).await
    }
}
