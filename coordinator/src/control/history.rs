//! Each job's curve: the progress rank 0 reported (step, loss, validation metrics, rate),
//! with the committed checkpoints and the generations' ends marked on it, for the dashboard.
//! In memory only, like the event logs, for the newest jobs ([`Recent`]); a long job's curve
//! is thinned rather than cut, so it always spans the whole run.

use kiln_proto::v1::Metrics;
use serde::Serialize;

use super::recent::Recent;

/// Points kept per job; past it every other point is dropped.
const MAX_POINTS: usize = 2000;
/// Marks kept per job (checkpoints, generation ends); the oldest go first.
const MAX_MARKS: usize = 500;

/// One progress report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// When it arrived (Unix milliseconds).
    pub unix_ms: i64,
    /// The generation that reported it.
    pub generation: u64,
    /// Optimizer steps done.
    pub step: u64,
    /// Epoch.
    pub epoch: u32,
    /// Training loss.
    pub loss: f64,
    /// Validation accuracy of the latest finished epoch.
    pub val_accuracy: Option<f64>,
    /// Validation loss of the latest finished epoch.
    pub val_loss: Option<f64>,
    /// Training samples per second.
    pub samples_per_sec: f64,
}

/// Something that happened at a step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mark {
    /// When (Unix milliseconds).
    pub unix_ms: i64,
    /// At which step.
    pub step: u64,
    /// The generation it belongs to.
    pub generation: u64,
    /// What happened, in words.
    pub what: String,
}

/// A job's curve and marks.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct History {
    /// Progress, oldest first.
    pub points: Vec<Point>,
    /// Committed checkpoints.
    pub checkpoints: Vec<Mark>,
    /// Generations that ended before the job did (failures and planned departures).
    pub restarts: Vec<Mark>,
}

impl History {
    fn progress(&mut self, generation: u64, m: &Metrics, unix_ms: i64) {
        if self.points.len() >= MAX_POINTS {
            // Thinned evenly; the newest point is added below.
            let mut keep = false;
            self.points.retain(|_| {
                keep = !keep;
                keep
            });
        }
        self.points.push(Point {
            unix_ms,
            generation,
            step: m.step,
            epoch: m.epoch,
            loss: m.loss,
            val_accuracy: m.val_accuracy,
            val_loss: m.val_loss,
            samples_per_sec: m.samples_per_sec,
        });
    }
}

/// Appends `mark`, dropping the oldest past [`MAX_MARKS`].
fn push(marks: &mut Vec<Mark>, mark: Mark) {
    if marks.len() >= MAX_MARKS {
        marks.remove(0);
    }
    marks.push(mark);
}

/// Every job's history.
#[derive(Default)]
pub(super) struct Histories {
    jobs: Recent<History>,
}

impl Histories {
    fn of(&mut self, job: &str) -> &mut History {
        self.jobs.entry(job)
    }

    /// Rank 0 of `generation` reported `metrics`.
    pub(super) fn progress(&mut self, job: &str, generation: u64, metrics: &Metrics, now: i64) {
        self.of(job).progress(generation, metrics, now);
    }

    /// Checkpoint `step` was committed.
    pub(super) fn checkpoint(&mut self, job: &str, generation: u64, step: u64, now: i64) {
        let what = format!("checkpoint {step}");
        push(
            &mut self.of(job).checkpoints,
            Mark {
                unix_ms: now,
                step,
                generation,
                what,
            },
        );
    }

    /// Generation `generation` ended at `step` (`why` says how) and the job goes on.
    pub(super) fn restart(&mut self, job: &str, generation: u64, step: u64, why: &str, now: i64) {
        let what = why.to_owned();
        push(
            &mut self.of(job).restarts,
            Mark {
                unix_ms: now,
                step,
                generation,
                what,
            },
        );
    }

    pub(super) fn get(&self, job: &str) -> Option<&History> {
        self.jobs.get(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_curve_is_thinned_but_spans_the_whole_run() {
        let mut h = Histories::default();
        for step in 1..=5000u64 {
            let m = Metrics {
                step,
                ..Metrics::default()
            };
            h.progress("j", 1, &m, 0);
        }
        let points = &h.get("j").expect("history").points;
        assert!(points.len() <= MAX_POINTS, "{}", points.len());
        assert_eq!(points.first().map(|p| p.step), Some(1));
        assert_eq!(points.last().map(|p| p.step), Some(5000));
        assert!(points.windows(2).all(|w| w[0].step < w[1].step));
        for step in 0..(MAX_MARKS as u64 + 10) {
            h.checkpoint("j", 1, step, 0);
        }
        let checkpoints = &h.get("j").expect("history").checkpoints;
        assert_eq!(checkpoints.len(), MAX_MARKS);
        assert_eq!(
            checkpoints.last().map(|m| m.step),
            Some(MAX_MARKS as u64 + 9)
        );
    }
}
