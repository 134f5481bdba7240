//! What this worker has to train with, as it reports when it registers: CPU threads, memory,
//! the GPUs it sees, and the backends and collectives its binary was built with; and, in
//! words, why it cannot run a task that asks for more, so a job is never trained other than
//! as declared.
//!
//! GPUs are probed through the CUDA driver where the `cuda` feature is built and libcuda is
//! present. `KILN_FAKE_GPUS` (a test double, for machines without GPUs) instead reports every
//! device `CUDA_VISIBLE_DEVICES` names as a fake GPU, so placement can be tested anywhere:
//! such a worker still cannot train on them, and says so.

use kiln_proto::v1::{Gpu, Resources};

/// Names the test double: with it set, the visible devices are reported as fake GPUs.
pub const FAKE_GPUS_ENV: &str = "KILN_FAKE_GPUS";

/// The backends this binary trains with.
pub fn backends() -> Vec<String> {
    let mut out = vec!["cpu".to_owned()];
    if cfg!(feature = "cuda") {
        out.push("cuda".to_owned());
    }
    out
}

/// The gradient all-reduces this binary runs: the ring (host-staged on GPUs), and NCCL where
/// it was built with CUDA.
pub fn collectives() -> Vec<String> {
    let mut out = vec!["ring".to_owned()];
    if cfg!(feature = "cuda") {
        out.push("nccl".to_owned());
    }
    out
}

/// This worker's resources, probed now.
pub fn probe() -> Resources {
    Resources {
        cpu_threads: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_bytes: memory_bytes().unwrap_or(0),
        gpus: match std::env::var_os(FAKE_GPUS_ENV) {
            Some(_) => fake_gpus(std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref()),
            None => gpus(),
        },
        backends: backends(),
        collectives: collectives(),
    }
}

/// Why this worker cannot train with `backend` and `collective`; `None` when it can.
pub fn missing(backend: &str, collective: &str) -> Option<String> {
    let asked = format!("the job asks for backend {backend:?} and collective {collective:?}");
    let wants_cuda = backend == "cuda" || collective == "nccl";
    if wants_cuda && !cfg!(feature = "cuda") {
        return Some(format!(
            "{asked}, which this worker binary cannot train with: it was built without the `cuda` feature (build it with `--features cuda`)"
        ));
    }
    let (backends, collectives) = (backends(), collectives());
    if !backends.iter().any(|b| b == backend) || !collectives.iter().any(|c| c == collective) {
        return Some(format!(
            "{asked}, which this worker binary does not offer (backends {}; collectives {})",
            backends.join(", "),
            collectives.join(", ")
        ));
    }
    if collective == "nccl" && backend != "cuda" {
        return Some(format!(
            "{asked}: NCCL reduces GPU memory, so it needs `backend = \"cuda\"`"
        ));
    }
    if backend == "cuda" && gpus().is_empty() {
        return Some(format!(
            "{asked}, but this worker sees no GPU: {}",
            no_gpu_why()
        ));
    }
    None
}

/// Physical memory (`MemTotal` of `/proc/meminfo`).
fn memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// One fake GPU per device `CUDA_VISIBLE_DEVICES` names (none when it is unset or empty).
fn fake_gpus(visible: Option<&str>) -> Vec<Gpu> {
    visible
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && *d != "-1")
        .enumerate()
        .map(|(index, device)| Gpu {
            index: index as u32,
            name: format!("fake GPU {device} ({FAKE_GPUS_ENV})"),
            memory_bytes: 0,
        })
        .collect()
}

/// The GPUs the CUDA driver shows this process.
#[cfg(feature = "cuda")]
fn gpus() -> Vec<Gpu> {
    crate::gpu::devices().unwrap_or_default()
}

#[cfg(not(feature = "cuda"))]
fn gpus() -> Vec<Gpu> {
    Vec::new()
}

/// Why the driver shows no GPU.
#[cfg(feature = "cuda")]
fn no_gpu_why() -> String {
    match crate::gpu::devices() {
        Err(why) => why,
        Ok(_) => match std::env::var("CUDA_VISIBLE_DEVICES") {
            Ok(v) => format!("CUDA_VISIBLE_DEVICES={v:?} hides every device"),
            Err(_) => "the driver reports none".to_owned(),
        },
    }
}

#[cfg(not(feature = "cuda"))]
fn no_gpu_why() -> String {
    "no CUDA driver can be asked".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_binary_was_built_for_is_offered_and_the_rest_refused_in_words() {
        assert_eq!(missing("cpu", "ring"), None);
        assert!(backends().contains(&"cpu".to_owned()));
        #[cfg(not(feature = "cuda"))]
        for (backend, collective) in [("cuda", "ring"), ("cuda", "nccl")] {
            let why = missing(backend, collective).expect("refused");
            assert!(why.contains(&format!("backend {backend:?}")), "{why}");
            assert!(why.contains("without the `cuda` feature"), "{why}");
        }
        let nccl = missing("cpu", "nccl").expect("refused");
        if cfg!(feature = "cuda") {
            assert!(nccl.contains("needs `backend = \"cuda\"`"), "{nccl}");
        } else {
            assert!(nccl.contains("without the `cuda` feature"), "{nccl}");
        }
        let unknown = missing("cpu", "gloo").expect("refused");
        assert!(unknown.contains("collectives ring"), "{unknown}");
    }

    #[test]
    fn fake_gpus_are_the_visible_devices_and_say_what_they_are() {
        let gpus = fake_gpus(Some("2, 3"));
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[1].index, 1);
        assert_eq!(gpus[1].name, "fake GPU 3 (KILN_FAKE_GPUS)");
        assert!(fake_gpus(Some("")).is_empty());
        assert!(fake_gpus(None).is_empty());
        assert!(fake_gpus(Some("-1")).is_empty());
    }

    #[test]
    fn the_machine_has_threads_and_memory() {
        let r = probe();
        assert!(r.cpu_threads >= 1);
        assert!(r.memory_bytes > 1 << 20, "{}", r.memory_bytes);
    }
}
