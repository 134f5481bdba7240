//! The checks a GPU job needs across its training block, its cluster and the cluster's
//! worker binary: GPUs to train on, one per rank, and a binary built to use them.

use crate::spec::{Backend, ClusterSpec, Collective};

use super::job::DecodedTraining;
use super::scope::Loader;
use super::source::{SourceFile, value_span};

impl<'d> Loader<'d> {
    /// Reports what stands between the job `name` and its GPUs; `false` on an error (a
    /// binary built without CUDA is a warning: the nodes may run one built elsewhere).
    pub(super) fn check_gpus(
        &mut self,
        src: &SourceFile,
        name: &str,
        training: &DecodedTraining<'_>,
        cluster: &ClusterSpec,
    ) -> bool {
        let spec = &training.spec;
        if spec.backend != Backend::Cuda {
            return true;
        }
        let at = training.backend.and_then(value_span);
        let pools = || {
            cluster
                .node_pools
                .iter()
                .map(|p| format!("{:?} (gpus_per_node = {})", p.name, p.gpus_per_node))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if cluster
            .node_pools
            .iter()
            .all(|pool| pool.gpus_per_node == 0)
        {
            self.push(
                src.error(
                    at.clone(),
                    format!(
                        "Job {name:?} uses `backend = \"cuda\"` but cluster {:?} has no GPUs",
                        cluster.name
                    ),
                )
                .with_detail(format!(
                    "Node pools of cluster {:?}: {}.",
                    cluster.name,
                    pools()
                ))
                .with_hint(format!(
                    "set `gpus_per_node` on a node pool of cluster {:?}, or use `backend = \"cpu\"`",
                    cluster.name
                )),
            );
            return false;
        }
        let idle: u32 = cluster
            .node_pools
            .iter()
            .map(|p| p.count * p.gpus_per_node.saturating_sub(1))
            .sum();
        if idle > 0 {
            self.push(
                src.error(
                    at.clone(),
                    format!("{idle} GPUs of cluster {:?} would stay idle", cluster.name),
                )
                .with_detail(format!(
                    "A worker process trains one rank, on the first GPU it sees; node pools of cluster {:?}: {}.",
                    cluster.name,
                    pools()
                ))
                .with_hint("declare `gpus_per_node = 1` and one node per GPU")
                .as_warning(),
            );
        }
        if let Some(Some(catalog)) = self.catalogs.get(&cluster.worker.binary) {
            let built = |offered: &[String], wanted: &str| offered.iter().any(|o| o == wanted);
            let collective = match spec.collective {
                Collective::Ring => "ring",
                Collective::Nccl => "nccl",
            };
            let lacks = if !built(&catalog.backends, "cuda") {
                Some("the CUDA backend")
            } else if !built(&catalog.collectives, collective) {
                Some("the NCCL collective")
            } else {
                None
            };
            if let Some(lacks) = lacks {
                let binary = super::model::binary_name(cluster.worker.binary.as_deref());
                self.push(
                    src.error(
                        at,
                        format!("{binary} was built without {lacks}: no worker of cluster {:?} can take job {name:?}", cluster.name),
                    )
                    .with_detail("The job would wait in the queue, and `kiln status` would say why; a warning, since the nodes may run a binary built elsewhere.")
                    .with_hint("build the worker with `cargo build --release -p kiln-worker --features cuda`, or use `backend = \"cpu\"`")
                    .as_warning(),
                );
            }
        }
        true
    }
}
