//! What a job's model costs a worker: its parameter count (as the worker binary reports it) and
//! an estimate of the memory that training it holds, so that `kiln validate` can refuse a model no node can hold instead of
//! letting a worker die of it mid-run.

/// Copies of the parameters a training worker holds, in f32: the parameters, their
/// gradients, Adam's two moments, the flat all-reduce buffer and a checkpoint snapshot.
pub const PARAMETER_COPIES: u64 = 6;

/// A model's size and the memory one worker needs to train it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Trainable parameters (weights and biases).
    pub parameters: u64,
    /// Estimated bytes per worker: [`PARAMETER_COPIES`] f32 copies of the parameters, plus
    /// one batch's activations and their gradients.
    pub bytes: u64,
}

impl Footprint {
    /// The footprint of a model of `parameters` whose training step holds
    /// `activations_per_sample` floats per sample (as its worker binary reports them), trained
    /// with `batch_size` samples per worker.
    pub fn of(parameters: u64, activations_per_sample: u64, batch_size: u32) -> Footprint {
        let floats = parameters
            .saturating_mul(PARAMETER_COPIES)
            .saturating_add(activations_per_sample.saturating_mul(u64::from(batch_size)));
        Footprint {
            parameters,
            bytes: floats.saturating_mul(4),
        }
    }
}

/// `512 B`, `3.2 MiB`, `224.0 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `6,724`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// This machine's memory (`MemTotal` of `/proc/meminfo`), if it can be read.
pub fn machine_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parameter_copies_and_activations() {
        let f = Footprint::of(6532, 328, 64);
        assert_eq!(f.parameters, 6532);
        assert_eq!(f.bytes, 4 * (6 * 6532 + 328 * 64));
        assert_eq!(Footprint::of(u64::MAX, 1, 1).bytes, u64::MAX);
    }

    #[test]
    fn renders_sizes_and_counts() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(grouped(6724), "6,724");
        assert_eq!(grouped(10_000_000_004), "10,000,000,004");
        assert_eq!(grouped(7), "7");
    }
}
