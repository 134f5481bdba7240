//! What every provider tells a node's worker, wherever it runs: which coordinators to reach,
//! with which join token and CA, under which name, with how many threads and which GPUs.

use std::path::PathBuf;

use serde_json::Value;

use super::ProviderError;
use crate::plan::{Address, Attributes, Recorded, ResourceKind};

/// How a worker reaches its cluster's coordinators.
#[derive(Debug, Clone)]
pub(crate) struct Reach {
    /// Every coordinator URL, comma-separated: the worker follows whichever leads.
    pub(crate) url: String,
    /// The join token (passed through the environment or stdin, never a command line).
    pub(crate) join_token: String,
    /// The CA an `https://` coordinator is verified against.
    pub(crate) ca_file: Option<PathBuf>,
}

impl Reach {
    /// How node `address` reaches the coordinators `state` records for its cluster.
    pub(crate) fn from_state(address: &Address, state: &[Recorded]) -> Result<Self, ProviderError> {
        let invalid = |detail: &str| ProviderError::Invalid {
            resource: address.to_string(),
            detail: detail.to_owned(),
        };
        let coordinators: Vec<&Recorded> = state
            .iter()
            .filter(|c| {
                c.address.cluster == address.cluster
                    && matches!(c.address.kind, ResourceKind::Coordinator { .. })
            })
            .collect();
        let first = coordinators
            .first()
            .ok_or_else(|| invalid("its cluster has no coordinator in the state"))?;
        let url = coordinators
            .iter()
            .map(|c| c.handle.get("url").and_then(Value::as_str))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("a coordinator's URL is not recorded"))?
            .join(",");
        let token_file = first
            .handle
            .get("join_token_file")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("the coordinator's join token file is not recorded"))?;
        let join_token =
            std::fs::read_to_string(token_file).map_err(|e| ProviderError::Invalid {
                resource: address.to_string(),
                detail: format!("cannot read the join token from {token_file}: {e}"),
            })?;
        Ok(Self {
            url,
            join_token: join_token.trim().to_owned(),
            ca_file: first
                .handle
                .get("ca_file")
                .and_then(Value::as_str)
                .map(PathBuf::from),
        })
    }
}

/// The environment of node `name`'s worker: `gpus` is its `CUDA_VISIBLE_DEVICES` (`None`:
/// left to whoever starts it, as Slurm sets it), `attrs` the node's attributes (its `env`
/// comes first, so kiln's own variables cannot be overridden by accident). The join token is
/// not among them.
pub(crate) fn worker_env(
    reach: &Reach,
    name: &str,
    attrs: &Attributes,
    gpus: Option<&str>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = attrs
        .get("env")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect();
    let cpus = u32_attr(attrs, "cpus_per_node")
        .unwrap_or(1)
        .max(1)
        .to_string();
    env.extend([
        ("KILN_COORDINATOR".to_owned(), reach.url.clone()),
        ("KILN_NODE_NAME".to_owned(), name.to_owned()),
        ("RAYON_NUM_THREADS".to_owned(), cpus.clone()),
        // Burn's CPU matmul has a thread pool of its own, sized by the machine otherwise.
        ("MATMUL_NUM_THREADS".to_owned(), cpus),
    ]);
    if let Some(ca) = &reach.ca_file {
        env.push(("KILN_TLS_CA_FILE".to_owned(), ca.display().to_string()));
    }
    if let Some(gpus) = gpus {
        env.push(("CUDA_VISIBLE_DEVICES".to_owned(), gpus.to_owned()));
    }
    env
}

/// A whole-number attribute of a resource.
pub(crate) fn u32_attr(attrs: &Attributes, name: &str) -> Option<u32> {
    attrs
        .get(name)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
}

/// A string attribute of a resource (`None` when absent or `null`).
pub(crate) fn str_attr<'a>(attrs: &'a Attributes, name: &str) -> Option<&'a str> {
    attrs.get(name).and_then(Value::as_str)
}

/// The node's pool index (0 for a coordinator or a server).
pub(crate) fn node_index(address: &Address) -> u32 {
    match &address.kind {
        ResourceKind::Node { index, .. } => *index,
        ResourceKind::Coordinator { .. } | ResourceKind::Server { .. } => 0,
    }
}

/// `CUDA_VISIBLE_DEVICES` of share `slot` of a host's GPUs, `per_node` each: devices
/// `[slot·per_node, (slot+1)·per_node)`; empty for a node without GPUs, so it sees none.
pub(crate) fn slot_gpus(slot: u32, per_node: u32) -> String {
    (slot * per_node..(slot + 1) * per_node)
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::slot_gpus;

    #[test]
    fn slot_s_of_a_host_gets_its_own_gpus() {
        assert_eq!(slot_gpus(0, 2), "0,1");
        assert_eq!(slot_gpus(1, 2), "2,3");
        assert_eq!(slot_gpus(3, 1), "3");
        assert_eq!(slot_gpus(5, 0), "", "a node without GPUs sees none");
    }
}
