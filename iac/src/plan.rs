//! Infrastructure as data: the resources a configuration asks for ([`desired`]), what the state
//! records of them ([`Recorded`]), what a provider sees when it looks ([`Observed`]), and the
//! [`Plan`] that turns what exists into what is asked for.
//!
//! Everything here is provider-neutral and pure; providers decide which attribute changes
//! force a replacement and carry the plan out (see [`crate::provider::Provider`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::{ClusterSpec, Config, JobSpec, Placement, StateSpec};

/// Where a resource lives: its cluster and what it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Address {
    /// The cluster's name.
    pub cluster: String,
    /// The resource within the cluster.
    pub kind: ResourceKind,
}

/// The kinds of resource a cluster is made of. The order (coordinator before nodes, nodes by
/// pool and index) is the order plans list and create them in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResourceKind {
    /// Coordinator `index` of the cluster (more than one only on an etcd state: one leads).
    Coordinator {
        /// From 0; the first is addressed as `coordinator`, the others `coordinator[i]`.
        #[serde(default)]
        index: u32,
    },
    /// Node `index` of pool `pool`.
    Node {
        /// Pool name.
        pool: String,
        /// Index within the pool, from 0.
        index: u32,
    },
    /// The model server of job `job` (its `deploy { serve { ... } }`), on this machine.
    Server {
        /// The job's name.
        job: String,
    },
}

impl Address {
    /// The node's name as its worker reports it (`<pool>-<index>`); `None` for a coordinator.
    pub fn node_name(&self) -> Option<String> {
        match &self.kind {
            ResourceKind::Coordinator { .. } | ResourceKind::Server { .. } => None,
            ResourceKind::Node { pool, index } => Some(format!("{pool}-{index}")),
        }
    }

    fn is_node(&self) -> bool {
        matches!(self.kind, ResourceKind::Node { .. })
    }

    fn is_coordinator(&self) -> bool {
        matches!(self.kind, ResourceKind::Coordinator { .. })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ResourceKind::Coordinator { index: 0 } => {
                write!(f, "cluster.{}.coordinator", self.cluster)
            }
            ResourceKind::Coordinator { index } => {
                write!(f, "cluster.{}.coordinator[{index}]", self.cluster)
            }
            ResourceKind::Node { pool, index } => {
                write!(f, "cluster.{}.node_pool.{pool}[{index}]", self.cluster)
            }
            ResourceKind::Server { job } => write!(f, "job.{job}.serve"),
        }
    }
}

/// Attribute name → value, as the configuration defines a resource.
pub type Attributes = BTreeMap<String, Value>;

/// A resource as the configuration asks for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// Where it lives.
    pub address: Address,
    /// What defines it.
    pub attrs: Attributes,
}

/// A resource as the state records it: what it was created from, and the provider's handle
/// to the real thing (for the local provider: pid, process start time, URL, log file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    /// Where it lives.
    pub address: Address,
    /// The attributes it was created (or last updated) with.
    pub attrs: Attributes,
    /// Provider-specific handle.
    pub handle: Attributes,
}

/// A recorded resource after the provider looked at it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// What the state says.
    pub recorded: Recorded,
    /// `None` while it exists; why it is gone otherwise (drift).
    pub gone: Option<String>,
}

/// The resources `config` asks for: per cluster, its coordinator and one node per pool slot;
/// per job with a `deploy { serve { ... } }`, its model server.
pub fn desired(config: &Config) -> Vec<Resource> {
    let servers = config.jobs.values().filter_map(|job| {
        let cluster = config.clusters.get(&job.cluster)?;
        server_resource(job, cluster)
    });
    config
        .clusters
        .values()
        .flat_map(cluster_resources)
        .chain(servers)
        .collect()
}

/// The model server `job` declares, serving from its cluster's store.
fn server_resource(job: &JobSpec, cluster: &ClusterSpec) -> Option<Resource> {
    let deploy = job.deploy.as_ref()?;
    let serve = deploy.serve.as_ref()?;
    let name = deploy.model.clone().unwrap_or_else(|| job.name.clone());
    let model = match &deploy.alias {
        Some(alias) => format!("{name}@{alias}"),
        None => name,
    };
    let storage = &cluster.storage;
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let monitor = serve.monitor.map(|m| {
        serde_json::json!({
            "psi_threshold": m.psi_threshold,
            "window": m.window,
            "min_samples": m.min_samples,
        })
    });
    let mut attrs = attrs([
        ("model", model.into()),
        ("listen", serve.listen.to_string().into()),
        ("store", storage.url.clone().into()),
        ("max_batch_size", serve.max_batch_size.into()),
        ("max_delay_us", (serve.max_delay.as_micros() as u64).into()),
        (
            "watch_interval_ms",
            (serve.watch_interval.as_millis() as u64).into(),
        ),
        ("monitor", monitor.into()),
    ]);
    // Only when declared, as for nodes.
    for (name, value) in [
        ("store_endpoint", storage.endpoint.clone()),
        ("store_region", storage.region.clone()),
        (
            "store_access_key_id_file",
            path(&storage.access_key_id_file),
        ),
        (
            "store_secret_access_key_file",
            path(&storage.secret_access_key_file),
        ),
        ("worker_binary", path(&cluster.worker.binary)),
    ] {
        if let Some(value) = value {
            attrs.insert(name.into(), value.into());
        }
    }
    Some(Resource {
        address: Address {
            cluster: cluster.name.clone(),
            kind: ResourceKind::Server {
                job: job.name.clone(),
            },
        },
        attrs,
    })
}

/// The resources of one cluster: its coordinators, then its nodes by pool and index.
pub fn cluster_resources(cluster: &ClusterSpec) -> Vec<Resource> {
    let mut out = Vec::new();
    let c = &cluster.coordinator;
    let (state_backend, state_location) = match &cluster.state {
        StateSpec::Embedded { path } => ("embedded", Value::from(path.display().to_string())),
        StateSpec::Etcd { endpoints, prefix } => (
            "etcd",
            serde_json::json!({ "endpoints": endpoints, "prefix": prefix }),
        ),
    };
    let mut coordinator = Resource {
        address: Address {
            cluster: cluster.name.clone(),
            kind: ResourceKind::Coordinator { index: 0 },
        },
        attrs: attrs([
            ("listen", Value::from(c.listen.to_string())),
            ("advertise", c.advertise.clone().into()),
            (
                "join_token_file",
                c.join_token_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .into(),
            ),
            ("state_backend", state_backend.into()),
            ("state", state_location),
            (
                "heartbeat_interval_ms",
                (c.heartbeat_interval.as_millis() as u64).into(),
            ),
            ("lease_ttl_ms", (c.lease_ttl.as_millis() as u64).into()),
        ]),
    };
    // Only when declared: plans of clusters without them stay as they were.
    if let Some(http) = c.http_listen {
        coordinator
            .attrs
            .insert("http_listen".into(), http.to_string().into());
    }
    if let Some(tls) = &c.tls {
        coordinator.attrs.insert(
            "tls".into(),
            serde_json::json!({
                "cert_file": tls.cert_file.display().to_string(),
                "key_file": tls.key_file.display().to_string(),
                "ca_file": tls.ca_file.display().to_string(),
            }),
        );
    }
    for index in 0..c.replicas {
        let mut replica = coordinator.clone();
        replica.address.kind = ResourceKind::Coordinator { index };
        out.push(replica);
    }
    for pool in &cluster.node_pools {
        for index in 0..pool.count {
            let mut node = Resource {
                address: Address {
                    cluster: cluster.name.clone(),
                    kind: ResourceKind::Node {
                        pool: pool.name.clone(),
                        index,
                    },
                },
                attrs: attrs([
                    ("cpus_per_node", pool.cpus_per_node.into()),
                    ("memory_gb", pool.memory_gb.into()),
                    ("gpus_per_node", pool.gpus_per_node.into()),
                    ("gpu_type", pool.gpu_type.clone().into()),
                    (
                        "labels",
                        serde_json::to_value(&pool.labels).unwrap_or_default(),
                    ),
                ]),
            };
            // Only when declared: plans of clusters on the bundled worker, without an
            // environment of their own, on this machine, stay as they were.
            if let Some(binary) = &cluster.worker.binary {
                node.attrs
                    .insert("worker_binary".into(), binary.display().to_string().into());
            }
            if !cluster.worker.env.is_empty() {
                node.attrs.insert(
                    "env".into(),
                    serde_json::to_value(&cluster.worker.env).unwrap_or_default(),
                );
            }
            node.attrs.extend(placement_attrs(&pool.placement, index));
            out.push(node);
        }
    }
    out
}

/// What a node's provider needs to place node `index` of a pool: none for a local one.
fn placement_attrs(placement: &Placement, index: u32) -> Attributes {
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    match placement {
        Placement::Local => Attributes::new(),
        Placement::Ssh(ssh) => {
            let hosts = ssh.hosts.len().max(1) as u32;
            attrs([
                ("provider", "ssh".into()),
                ("host", ssh.hosts[(index % hosts) as usize].clone().into()),
                // Which share of its host's GPUs the node gets: hosts run several nodes
                // when `count` exceeds the number of hosts.
                ("slot", (index / hosts).into()),
                ("user", ssh.user.clone().into()),
                ("port", ssh.port.into()),
                ("identity_file", path(&ssh.identity_file).into()),
                ("known_hosts_file", path(&ssh.known_hosts_file).into()),
                ("worker_path", ssh.worker_path.clone().into()),
                ("remote_dir", ssh.remote_dir.clone().into()),
                (
                    "connect_timeout_ms",
                    (ssh.connect_timeout.as_millis() as u64).into(),
                ),
            ])
        }
        Placement::Slurm(slurm) => attrs([
            ("provider", "slurm".into()),
            ("partition", slurm.partition.clone().into()),
            (
                "time_limit_minutes",
                slurm.time_limit.map(|t| t.as_secs().div_ceil(60)).into(),
            ),
        ]),
    }
}

fn attrs<const N: usize>(pairs: [(&str, Value); N]) -> Attributes {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// What a change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `+`: make a resource that does not exist (or no longer does).
    Create,
    /// `~`: change attributes of a live resource without restarting it.
    Update,
    /// `-/+`: destroy the live resource, then create it anew.
    Replace,
    /// `-`: destroy a resource the configuration no longer asks for.
    Delete,
}

impl Action {
    /// The diff marker.
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// What to do.
    pub action: Action,
    /// To which resource.
    pub address: Address,
    /// The state's record of it, if any (also for a create that re-creates a gone resource).
    pub before: Option<Recorded>,
    /// What it should become; `None` for a delete.
    pub after: Option<Resource>,
    /// Why, when it is not obvious: drift, a forced replacement, a dependency.
    pub reason: Option<String>,
}

/// Everything needed to go from the recorded state to the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Identity of the state the plan was made against.
    pub lineage: String,
    /// The state's serial when the plan was made; applying refuses if it moved since.
    pub serial: u64,
    /// The steps, in the order they are applied: deletes (nodes before coordinators), then
    /// creates, replacements and updates (coordinators before nodes).
    pub changes: Vec<Change>,
}

/// Computes the changes that turn `observed` into `desired`. `forces_replacement(address,
/// attribute)` says whether a changed attribute cannot be updated in place. A node whose
/// cluster's coordinator is (re)created is replaced too: it would be registered with the old
/// one.
pub fn diff(
    desired: &[Resource],
    observed: &[Observed],
    forces_replacement: impl Fn(&Address, &str) -> bool,
) -> Vec<Change> {
    let by_address: BTreeMap<&Address, &Observed> =
        observed.iter().map(|o| (&o.recorded.address, o)).collect();
    let mut wanted: Vec<&Resource> = desired.iter().collect();
    wanted.sort_by(|a, b| a.address.cmp(&b.address));
    let mut changes = Vec::new();
    let mut new_coordinators = BTreeSet::new();
    for resource in wanted {
        let address = &resource.address;
        let change = |action, before: Option<&Observed>, reason| Change {
            action,
            address: address.clone(),
            before: before.map(|o| o.recorded.clone()),
            after: Some(resource.clone()),
            reason,
        };
        let step = match by_address.get(address) {
            None => Some(change(Action::Create, None, None)),
            Some(o) if o.gone.is_some() => Some(change(Action::Create, Some(o), o.gone.clone())),
            Some(o) => {
                let changed = changed_attributes(&o.recorded.attrs, &resource.attrs);
                let forced: Vec<&str> = changed
                    .iter()
                    .copied()
                    .filter(|a| forces_replacement(address, a))
                    .collect();
                if !forced.is_empty() {
                    let reason = format!("{} forces replacement", forced.join(", "));
                    Some(change(Action::Replace, Some(o), Some(reason)))
                } else if address.is_node() && new_coordinators.contains(&address.cluster) {
                    let reason = "its coordinator is replaced".to_owned();
                    Some(change(Action::Replace, Some(o), Some(reason)))
                } else if !changed.is_empty() {
                    Some(change(Action::Update, Some(o), None))
                } else {
                    None
                }
            }
        };
        if let Some(step) = step {
            if address.is_coordinator() {
                new_coordinators.insert(address.cluster.clone());
            }
            changes.push(step);
        }
    }
    let wanted: BTreeSet<&Address> = desired.iter().map(|r| &r.address).collect();
    let mut deletes: Vec<Change> = observed
        .iter()
        .filter(|o| !wanted.contains(&o.recorded.address))
        .map(|o| Change {
            action: Action::Delete,
            address: o.recorded.address.clone(),
            before: Some(o.recorded.clone()),
            after: None,
            reason: o.gone.as_ref().map(|why| format!("already gone: {why}")),
        })
        .collect();
    // Nodes go before the coordinator they are registered with.
    deletes.sort_by(|a, b| {
        (a.address.is_coordinator(), &a.address).cmp(&(b.address.is_coordinator(), &b.address))
    });
    deletes.extend(changes);
    deletes
}

/// The changes that destroy everything `observed` holds, nodes before coordinators.
pub fn destroy_all(observed: &[Observed]) -> Vec<Change> {
    diff(&[], observed, |_, _| false)
}

/// Names of the attributes that differ between `before` and `after` (present in either).
pub fn changed_attributes<'a>(before: &'a Attributes, after: &'a Attributes) -> Vec<&'a str> {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(String::as_str)
        .collect()
}

impl Plan {
    /// `(add, change, destroy)` counts; a replacement counts as one add and one destroy.
    pub fn counts(&self) -> (usize, usize, usize) {
        let count = |f: fn(Action) -> bool| self.changes.iter().filter(|c| f(c.action)).count();
        (
            count(|a| matches!(a, Action::Create | Action::Replace)),
            count(|a| a == Action::Update),
            count(|a| matches!(a, Action::Delete | Action::Replace)),
        )
    }

    /// The one-line summary printed under the diff.
    pub fn summary(&self) -> String {
        if self.changes.is_empty() {
            return "No changes. The infrastructure matches the configuration.".to_owned();
        }
        let (add, change, destroy) = self.counts();
        format!("Plan: {add} to add, {change} to change, {destroy} to destroy.")
    }
}

/// The readable diff: one paragraph per change, then the summary line.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.changes.is_empty() {
            writeln!(
                f,
                "kiln will perform these actions (+ create, ~ update in place, -/+ replace, - destroy):\n"
            )?;
        }
        for change in &self.changes {
            let what = match (change.action, &change.reason) {
                (Action::Create, Some(_)) => "is gone and will be re-created",
                (Action::Create, None) => "will be created",
                (Action::Update, _) => "will be updated in place",
                (Action::Replace, _) => "must be replaced",
                (Action::Delete, _) => "will be destroyed",
            };
            write!(f, "  # {} {what}", change.address)?;
            match &change.reason {
                Some(reason) => writeln!(f, " ({reason})")?,
                None => writeln!(f)?,
            }
            writeln!(f, "  {} {}", change.action.symbol(), change.address)?;
            let empty = Attributes::new();
            let before = change.before.as_ref().map_or(&empty, |r| &r.attrs);
            let after = change.after.as_ref().map_or(&empty, |r| &r.attrs);
            let width = before.keys().chain(after.keys()).map(String::len).max();
            let width = width.unwrap_or(0);
            match change.action {
                Action::Create => {
                    for (k, v) in after {
                        writeln!(f, "      {k:<width$} = {}", render(v))?;
                    }
                }
                Action::Delete => {}
                Action::Update | Action::Replace => {
                    for k in changed_attributes(before, after) {
                        let old = before.get(k).map_or_else(|| "null".into(), render);
                        let new = after.get(k).map_or_else(|| "null".into(), render);
                        writeln!(f, "    ~ {k:<width$} = {old} -> {new}")?;
                    }
                }
            }
            writeln!(f)?;
        }
        write!(f, "{}", self.summary())
    }
}

/// An attribute value the way HCL writes it.
pub fn render(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(render).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) if map.is_empty() => "{}".into(),
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k} = {}", render(v)))
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(index: u32, cpus: u32) -> Resource {
        Resource {
            address: Address {
                cluster: "c".into(),
                kind: ResourceKind::Node {
                    pool: "cpu".into(),
                    index,
                },
            },
            attrs: attrs([("cpus_per_node", cpus.into()), ("labels", Value::Null)]),
        }
    }

    fn coordinator() -> Resource {
        Resource {
            address: Address {
                cluster: "c".into(),
                kind: ResourceKind::Coordinator { index: 0 },
            },
            attrs: attrs([("listen", "127.0.0.1:0".into())]),
        }
    }

    fn alive(r: &Resource) -> Observed {
        Observed {
            recorded: Recorded {
                address: r.address.clone(),
                attrs: r.attrs.clone(),
                handle: Attributes::new(),
            },
            gone: None,
        }
    }

    fn cpus_forces(_: &Address, attr: &str) -> bool {
        attr == "cpus_per_node"
    }

    fn actions(changes: &[Change]) -> Vec<(Action, String)> {
        changes
            .iter()
            .map(|c| (c.action, c.address.to_string()))
            .collect()
    }

    #[test]
    fn matching_state_needs_no_change() {
        let want = vec![coordinator(), node(0, 1), node(1, 1)];
        let have: Vec<Observed> = want.iter().map(alive).collect();
        assert!(diff(&want, &have, cpus_forces).is_empty());
    }

    #[test]
    fn gone_node_is_recreated_and_extra_node_deleted_first() {
        let want = vec![coordinator(), node(0, 1), node(1, 1)];
        let mut have: Vec<Observed> = [coordinator(), node(0, 1), node(1, 1), node(2, 1)]
            .iter()
            .map(alive)
            .collect();
        have[1].gone = Some("pid 7 is no longer running".into());
        let changes = diff(&want, &have, cpus_forces);
        assert_eq!(
            actions(&changes),
            [
                (Action::Delete, "cluster.c.node_pool.cpu[2]".into()),
                (Action::Create, "cluster.c.node_pool.cpu[0]".into()),
            ]
        );
        assert_eq!(
            changes[1].reason.as_deref(),
            Some("pid 7 is no longer running")
        );
    }

    #[test]
    fn forced_attribute_replaces_and_label_updates_in_place() {
        let want = vec![coordinator(), node(0, 2), node(1, 1)];
        let mut relabelled = node(1, 1);
        relabelled.attrs.insert("labels".into(), "x".into());
        let have: Vec<Observed> = [coordinator(), node(0, 1), relabelled]
            .iter()
            .map(alive)
            .collect();
        let changes = diff(&want, &have, cpus_forces);
        assert_eq!(
            actions(&changes),
            [
                (Action::Replace, "cluster.c.node_pool.cpu[0]".into()),
                (Action::Update, "cluster.c.node_pool.cpu[1]".into()),
            ]
        );
        let plan = Plan {
            lineage: "l".into(),
            serial: 3,
            changes,
        };
        assert_eq!(plan.counts(), (1, 1, 1));
        let text = plan.to_string();
        assert!(text.contains("~ cpus_per_node = 1 -> 2"), "{text}");
        assert!(
            text.contains("(cpus_per_node forces replacement)"),
            "{text}"
        );
        assert!(text.ends_with("Plan: 1 to add, 1 to change, 1 to destroy."));
    }

    #[test]
    fn recreated_coordinator_replaces_its_live_nodes() {
        let want = vec![coordinator(), node(0, 1)];
        let mut have: Vec<Observed> = want.iter().map(alive).collect();
        have[0].gone = Some("exited".into());
        let changes = diff(&want, &have, cpus_forces);
        assert_eq!(
            actions(&changes),
            [
                (Action::Create, "cluster.c.coordinator".into()),
                (Action::Replace, "cluster.c.node_pool.cpu[0]".into()),
            ]
        );
    }

    #[test]
    fn destroy_all_removes_nodes_before_the_coordinator() {
        let have: Vec<Observed> = [coordinator(), node(0, 1), node(1, 1)]
            .iter()
            .map(alive)
            .collect();
        let changes = destroy_all(&have);
        assert_eq!(
            actions(&changes),
            [
                (Action::Delete, "cluster.c.node_pool.cpu[0]".into()),
                (Action::Delete, "cluster.c.node_pool.cpu[1]".into()),
                (Action::Delete, "cluster.c.coordinator".into()),
            ]
        );
    }

    #[test]
    fn values_render_as_hcl() {
        let v = serde_json::json!({"zone": "a", "n": [1, true, null]});
        assert_eq!(render(&v), r#"{ n = [1, true, null], zone = "a" }"#);
    }

    #[test]
    fn ssh_nodes_go_round_the_hosts_and_slurm_limits_round_up_to_minutes() {
        let ssh = Placement::Ssh(crate::spec::SshPlacement {
            hosts: vec!["a".into(), "b".into()],
            user: None,
            port: 22,
            identity_file: None,
            known_hosts_file: None,
            worker_path: None,
            remote_dir: ".kiln".into(),
            connect_timeout: std::time::Duration::from_secs(10),
        });
        let placed: Vec<(Value, Value)> = (0..3)
            .map(|i| {
                let a = placement_attrs(&ssh, i);
                (a["host"].clone(), a["slot"].clone())
            })
            .collect();
        assert_eq!(
            placed,
            [("a", 0), ("b", 0), ("a", 1)].map(|(h, s)| (Value::from(h), Value::from(s)))
        );
        let slurm = Placement::Slurm(crate::spec::SlurmPlacement {
            partition: Some("gpu".into()),
            time_limit: Some(std::time::Duration::from_secs(90 * 60 + 1)),
        });
        assert_eq!(placement_attrs(&slurm, 0)["time_limit_minutes"], 91);
        assert!(placement_attrs(&Placement::Local, 0).is_empty());
    }
}
