//! [`AnyProvider`]: the provider the CLI drives. It hands each resource to the provider its
//! cluster names: coordinators and model servers always run here (local), nodes where their pool's provider
//! puts them, as their recorded `provider` attribute says (none: local). So one state can hold
//! clusters of several providers, and `destroy` needs no configuration to find them.

use std::time::Duration;

use super::remote::Remote;
use super::slurm::Slurm;
use super::ssh::Ssh;
use super::{ApplyContext, LocalProvider, Node, NodeExit, Provider, ProviderError, WorkerLaunch};
use crate::plan::{Action, Attributes, Change, Observed, Recorded};
use crate::spec::{ClusterSpec, ProviderKind};

/// Every provider, each resource to its own.
pub struct AnyProvider {
    local: LocalProvider,
    ssh: Remote<Ssh>,
    slurm: Remote<Slurm>,
    /// The provider of the ephemeral cluster launched (`kiln up` runs one).
    launched: ProviderKind,
}

impl Default for AnyProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl AnyProvider {
    /// Providers with nothing launched yet.
    pub fn new() -> Self {
        Self {
            local: LocalProvider::new(),
            ssh: Remote::new(Ssh::default()),
            slurm: Remote::new(Slurm),
            launched: ProviderKind::Local,
        }
    }
}

/// The provider a resource's attributes name (coordinators and local nodes name none).
fn kind_of(attrs: &Attributes) -> ProviderKind {
    match attrs.get("provider").and_then(|p| p.as_str()) {
        Some("ssh") => ProviderKind::Ssh,
        Some("slurm") => ProviderKind::Slurm,
        _ => ProviderKind::Local,
    }
}

/// Calls `$call` on the provider `$kind` names.
macro_rules! on {
    ($self:ident, $kind:expr, $p:ident => $call:expr) => {
        match $kind {
            ProviderKind::Local => {
                let $p = &mut $self.local;
                $call
            }
            ProviderKind::Ssh => {
                let $p = &mut $self.ssh;
                $call
            }
            ProviderKind::Slurm => {
                let $p = &mut $self.slurm;
                $call
            }
        }
    };
}

impl Provider for AnyProvider {
    async fn launch(
        &mut self,
        cluster: &ClusterSpec,
        launch: &WorkerLaunch,
    ) -> Result<Vec<Node>, ProviderError> {
        self.launched = cluster.provider;
        on!(self, cluster.provider, p => p.launch(cluster, launch).await)
    }

    async fn relaunch(
        &mut self,
        node: &Node,
        launch: &WorkerLaunch,
    ) -> Result<Node, ProviderError> {
        on!(self, self.launched, p => p.relaunch(node, launch).await)
    }

    async fn next_exit(&mut self) -> NodeExit {
        on!(self, self.launched, p => p.next_exit().await)
    }

    async fn shutdown(&mut self, grace: Duration) -> Vec<NodeExit> {
        on!(self, self.launched, p => p.shutdown(grace).await)
    }

    fn refresh(&self, recorded: &[Recorded]) -> Vec<Observed> {
        let mut observed: Vec<Option<Observed>> = vec![None; recorded.len()];
        for kind in [ProviderKind::Local, ProviderKind::Ssh, ProviderKind::Slurm] {
            let (indices, these): (Vec<usize>, Vec<Recorded>) = recorded
                .iter()
                .enumerate()
                .filter(|(_, r)| kind_of(&r.attrs) == kind)
                .map(|(i, r)| (i, r.clone()))
                .unzip();
            if these.is_empty() {
                continue;
            }
            let seen = match kind {
                ProviderKind::Local => self.local.refresh(&these),
                ProviderKind::Ssh => self.ssh.refresh(&these),
                ProviderKind::Slurm => self.slurm.refresh(&these),
            };
            for (i, o) in indices.into_iter().zip(seen) {
                observed[i] = Some(o);
            }
        }
        observed.into_iter().flatten().collect()
    }

    async fn apply(
        &mut self,
        change: &Change,
        state: &[Recorded],
        cx: &ApplyContext,
    ) -> Result<Option<Recorded>, ProviderError> {
        // What is replaced goes through its own provider (a pool may have changed provider).
        if let Some(before) = super::to_destroy(change) {
            self.destroy(before, cx.grace).await?;
        }
        let Some(after) = &change.after else {
            return Ok(None);
        };
        let change = match change.action {
            Action::Update => change.clone(),
            _ => Change {
                action: Action::Create,
                before: None,
                ..change.clone()
            },
        };
        on!(self, kind_of(&after.attrs), p => p.apply(&change, state, cx).await)
    }

    async fn destroy(&mut self, resource: &Recorded, grace: Duration) -> Result<(), ProviderError> {
        on!(self, kind_of(&resource.attrs), p => p.destroy(resource, grace).await)
    }
}
