//! Which workers a job's ranks fit on: the model kind its binary trains, the backend and
//! collective it was built with, and for `backend = "cuda"` a GPU (of the cluster's
//! `gpu_type`, when it names one). The same rules say in words why a worker does not fit.

use kiln_proto::v1::{Job, Resources};

use super::spec::model_kind;

/// What every rank of a job needs from its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Needs<'a> {
    pub(super) kind: &'a str,
    pub(super) backend: &'a str,
    pub(super) collective: &'a str,
    /// Empty: any GPU.
    pub(super) gpu_type: &'a str,
}

impl<'a> Needs<'a> {
    pub(super) fn of(job: &'a Job) -> Self {
        let training = job.spec.as_ref().and_then(|s| s.training.as_ref());
        let or =
            |s: Option<&'a str>, default: &'a str| s.filter(|s| !s.is_empty()).unwrap_or(default);
        Self {
            kind: model_kind(job),
            backend: or(training.map(|t| t.backend.as_str()), "cpu"),
            collective: or(training.map(|t| t.collective.as_str()), "ring"),
            gpu_type: training.map_or("", |t| t.gpu_type.as_str()),
        }
    }

    fn gpu(&self) -> bool {
        self.backend == "cuda"
    }

    /// `a GPU` / `an "h100" GPU`, for messages.
    pub(super) fn gpu_words(&self) -> String {
        if self.gpu_type.is_empty() {
            "a GPU".to_owned()
        } else {
            format!("a {:?} GPU", self.gpu_type)
        }
    }
}

/// Why a worker with `kinds` and `resources` cannot run a rank that `needs`; `None` when it can.
pub(super) fn misfit(kinds: &[String], resources: &Resources, needs: &Needs<'_>) -> Option<String> {
    if !kinds.iter().any(|k| k == needs.kind) {
        return Some(format!(
            "its binary does not train model kind {:?}",
            needs.kind
        ));
    }
    // Workers that register without saying (older binaries) train on the CPU over the ring.
    let built = |offered: &[String], wanted: &str, default: &str| {
        offered.iter().any(|o| o == wanted) || (offered.is_empty() && wanted == default)
    };
    if !built(&resources.backends, needs.backend, "cpu") {
        return Some(format!(
            "its binary was built without the {:?} backend",
            needs.backend
        ));
    }
    if !built(&resources.collectives, needs.collective, "ring") {
        return Some(format!(
            "its binary was built without the {:?} collective",
            needs.collective
        ));
    }
    if !needs.gpu() {
        return None;
    }
    if resources.gpus.is_empty() {
        return Some("it has no GPU".to_owned());
    }
    if needs.gpu_type.is_empty()
        || resources
            .gpus
            .iter()
            .any(|g| gpu_type_matches(&g.name, needs.gpu_type))
    {
        return None;
    }
    let names: Vec<&str> = resources.gpus.iter().map(|g| g.name.as_str()).collect();
    Some(format!(
        "its GPU ({}) is not a {:?}",
        names.join(", "),
        needs.gpu_type
    ))
}

/// Whether the device name a driver reports (`"NVIDIA H100 80GB HBM3"`) is of `gpu_type`
/// (`"h100"`): the type's letters and digits, ignoring case, appear in a row among the
/// name's (`"a100-sxm4"` matches `"NVIDIA A100-SXM4-80GB"`).
pub(super) fn gpu_type_matches(name: &str, gpu_type: &str) -> bool {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let wanted = squash(gpu_type);
    !wanted.is_empty() && squash(name).contains(&wanted)
}

#[cfg(test)]
mod tests {
    use kiln_proto::v1::Gpu;

    use super::*;

    fn resources(backends: &[&str], gpus: &[&str]) -> Resources {
        Resources {
            cpu_threads: 8,
            memory_bytes: 1 << 34,
            gpus: gpus
                .iter()
                .enumerate()
                .map(|(i, name)| Gpu {
                    index: i as u32,
                    name: (*name).to_owned(),
                    memory_bytes: 80 << 30,
                })
                .collect(),
            backends: backends.iter().map(|b| (*b).to_owned()).collect(),
            collectives: vec!["ring".into(), "nccl".into()],
        }
    }

    const CUDA: Needs<'static> = Needs {
        kind: "mlp",
        backend: "cuda",
        collective: "nccl",
        gpu_type: "",
    };

    #[test]
    fn a_cuda_rank_needs_a_gpu_and_a_binary_built_for_it() {
        let kinds = vec!["mlp".to_owned()];
        let gpu = resources(&["cpu", "cuda"], &["NVIDIA H200"]);
        assert_eq!(misfit(&kinds, &gpu, &CUDA), None);
        assert_eq!(
            misfit(&kinds, &resources(&["cpu", "cuda"], &[]), &CUDA).as_deref(),
            Some("it has no GPU")
        );
        let cpu_only = misfit(&kinds, &resources(&["cpu"], &["NVIDIA H200"]), &CUDA);
        assert!(cpu_only.is_some_and(|why| why.contains("without the \"cuda\" backend")));
        let other_kind = Needs {
            kind: "cnn",
            ..CUDA
        };
        assert!(misfit(&kinds, &gpu, &other_kind).is_some_and(|w| w.contains("\"cnn\"")));
    }

    #[test]
    fn a_cpu_rank_fits_any_worker_including_ones_that_do_not_describe_themselves() {
        let kinds = vec!["mlp".to_owned()];
        let cpu = Needs {
            backend: "cpu",
            collective: "ring",
            ..CUDA
        };
        assert_eq!(misfit(&kinds, &Resources::default(), &cpu), None);
        assert_eq!(misfit(&kinds, &resources(&["cpu"], &[]), &cpu), None);
        // …but a worker that says nothing is not taken for one with a GPU.
        assert!(misfit(&kinds, &Resources::default(), &CUDA).is_some());
    }

    #[test]
    fn gpu_type_is_matched_against_the_driver_name() {
        let kinds = vec!["mlp".to_owned()];
        let h100 = Needs {
            gpu_type: "h100",
            ..CUDA
        };
        let a100 = resources(&["cpu", "cuda"], &["NVIDIA A100-SXM4-80GB"]);
        let why = misfit(&kinds, &a100, &h100).expect("an A100 is no H100");
        assert_eq!(why, "its GPU (NVIDIA A100-SXM4-80GB) is not a \"h100\"");
        let mixed = resources(&["cpu", "cuda"], &["NVIDIA A100", "NVIDIA H100 80GB HBM3"]);
        assert_eq!(misfit(&kinds, &mixed, &h100), None);

        assert!(gpu_type_matches("NVIDIA H100 80GB HBM3", "H100"));
        assert!(gpu_type_matches("NVIDIA A100-SXM4-80GB", "a100-sxm4"));
        assert!(gpu_type_matches("NVIDIA GeForce RTX 4090", "rtx 4090"));
        assert!(!gpu_type_matches("NVIDIA A100", "h100"));
        assert!(!gpu_type_matches("NVIDIA A100", "--"));
    }
}
