//! What this worker can train with, and in words what it lacks: a task that asks for more is
//! refused before it joins the ring, so a job is never trained other than as declared.

/// Why this worker cannot train with `backend` and `collective`; `None` when it can.
pub fn missing(backend: &str, collective: &str) -> Option<String> {
    let wants_gpu = backend == "cuda" || collective == "nccl";
    if !wants_gpu {
        return None;
    }
    let asked = format!("the job asks for backend {backend:?} and collective {collective:?}");
    Some(format!(
        "{asked}, which this kiln-worker cannot train with: {}",
        gpu_missing()
    ))
}

/// What stands between this worker and training on a GPU.
#[cfg(not(feature = "cuda"))]
fn gpu_missing() -> String {
    "it was built without the `cuda` feature (build it with `--features cuda`)".to_owned()
}

/// What stands between this worker and training on a GPU.
#[cfg(feature = "cuda")]
fn gpu_missing() -> String {
    if !std::path::Path::new("/proc/driver/nvidia/version").exists() {
        return "this machine has no CUDA driver (/proc/driver/nvidia/version is missing)"
            .to_owned();
    }
    match std::env::var("CUDA_VISIBLE_DEVICES") {
        Ok(devices) if devices.trim().is_empty() || devices.trim() == "-1" => {
            return format!("no GPU is visible to it (CUDA_VISIBLE_DEVICES={devices:?})");
        }
        _ => {}
    }
    "training on CUDA and the NCCL collective are not built in this version".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gpu_requests_are_refused_and_the_refusal_names_the_request() {
        assert_eq!(missing("cpu", "ring"), None);
        for (backend, collective) in [("cuda", "ring"), ("cpu", "nccl"), ("cuda", "nccl")] {
            let why = missing(backend, collective).expect("refused");
            assert!(why.contains(&format!("backend {backend:?}")), "{why}");
        }
        #[cfg(not(feature = "cuda"))]
        assert!(
            missing("cuda", "nccl").is_some_and(|why| why.contains("without the `cuda` feature"))
        );
    }
}
