//! The records the benchmark workers print, one JSON object per line, and the `kiln bench`
//! drivers read: defined once here, for both binaries.

use serde::{Deserialize, Serialize};

/// What rank 0 of `kiln-worker bench-allreduce` prints for one size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SizeResult {
    /// Buffer size in bytes.
    pub size_bytes: u64,
    /// Number of ranks.
    pub ranks: usize,
    /// Wall time of each timed iteration on rank 0, in seconds.
    pub times_s: Vec<f64>,
}

/// Which checkpointing a checkpoint-benchmark run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// No checkpoints.
    None,
    /// Checkpoints uploaded in the background.
    Async,
    /// Checkpoints saved at the step boundary.
    Sync,
}

/// One training run of the checkpoint benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// How it checkpointed.
    pub kind: RunKind,
    /// Which round of runs it belongs to (one run of each kind per round).
    pub repeat: u32,
    /// Samples per second of the training loop (the wait for the final checkpoint's commit
    /// after the last step is in that checkpoint's stall, not here).
    pub samples_per_sec: f64,
    /// How long each checkpoint held the training loop up, in seconds.
    pub stalls_s: Vec<f64>,
    /// Checkpoints that came due while the previous one was still uploading.
    pub checkpoint_waits: u32,
}

/// What `kiln-worker bench-checkpoint` prints: one JSON object on one line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointBenchResult {
    /// Model parameters.
    pub params: u64,
    /// Bytes of one checkpoint (all its objects and the manifest).
    pub checkpoint_bytes: u64,
    /// Steps per run.
    pub steps: u64,
    /// Checkpoint interval in steps.
    pub every: u32,
    /// Samples per step.
    pub batch_size: u32,
    /// Every run, in the order they ran.
    pub runs: Vec<RunResult>,
}
