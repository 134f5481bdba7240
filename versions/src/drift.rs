//! Drift: live inputs compared, feature by feature, with the reference statistics a model
//! version keeps of its training inputs ([`crate::registry::Lineage::reference`]).
//!
//! Two numbers per feature. The population stability index over the reference's own bins
//! (a live value outside the reference's range counts in the nearest end bin; an empty bin's
//! share is floored at [`PSI_FLOOR`] on either side, so one empty bin does not make it
//! infinite). And the Kolmogorov–Smirnov statistic: the largest gap between the live values'
//! empirical distribution function and the reference's, which the histogram gives piecewise
//! linear (values spread evenly inside a bin). A feature has drifted when its PSI reaches the
//! threshold; nothing is judged before the window holds `min_samples` rows.

use serde::{Deserialize, Serialize};

use crate::data::describe::FeatureStats;

/// The smallest share a bin counts with in the PSI.
pub const PSI_FLOOR: f64 = 1e-4;

/// When live inputs count as drifted, and over how many.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// A feature whose PSI reaches this has drifted.
    pub psi_threshold: f64,
    /// Rows kept: the most recent ones.
    pub window: usize,
    /// Rows needed before anything is judged.
    pub min_samples: usize,
}

impl Settings {
    /// Why these settings cannot work, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if !(self.psi_threshold.is_finite() && self.psi_threshold > 0.0) {
            return Err(format!(
                "psi_threshold is {}; it must be above 0 (0.1 is a moderate shift, 0.2 a significant one)",
                self.psi_threshold
            ));
        }
        if self.window == 0 {
            return Err("window is 0; it must hold at least one input".into());
        }
        if self.min_samples == 0 || self.min_samples > self.window {
            return Err(format!(
                "min_samples is {}; it must be between 1 and window ({}), or drift is never judged",
                self.min_samples, self.window
            ));
        }
        Ok(())
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            psi_threshold: 0.2,
            window: 1000,
            min_samples: 200,
        }
    }
}

/// One feature's comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDrift {
    /// The feature's name in the reference.
    pub name: String,
    /// The reference's mean and standard deviation.
    pub reference_mean: f64,
    /// See `reference_mean`.
    pub reference_std: f64,
    /// The live window's mean and standard deviation.
    pub live_mean: f64,
    /// See `live_mean`.
    pub live_std: f64,
    /// Population stability index.
    pub psi: f64,
    /// Kolmogorov–Smirnov statistic, in [0, 1].
    pub ks: f64,
    /// `psi >= psi_threshold` (never before `min_samples`).
    pub drifted: bool,
}

/// What `kiln serve` says about its live inputs (`GET /v2/models/NAME/drift`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The served model.
    pub model: String,
    /// The version whose reference the window is compared with.
    pub version: u64,
    /// What the server was started to serve (`NAME@ALIAS`, `NAME@N`, `NAME`).
    pub serving: String,
    /// The settings in force.
    pub settings: Settings,
    /// Rows in the window now.
    pub samples: usize,
    /// Whether the window holds `min_samples` rows, so features are judged.
    pub evaluated: bool,
    /// Why there is nothing to compare (the version keeps no reference statistics), if so.
    pub unavailable: Option<String>,
    /// Every feature, in input order (empty when unavailable).
    pub features: Vec<FeatureDrift>,
    /// The share of features that drifted.
    pub drifted_share: f64,
}

impl Report {
    /// The names of the drifted features.
    pub fn drifted(&self) -> Vec<&str> {
        self.features
            .iter()
            .filter(|f| f.drifted)
            .map(|f| f.name.as_str())
            .collect()
    }
}

/// The bin of `v` among `reference`'s equal bins (out-of-range values in the end bins; a
/// constant feature's value in the first bin, any other value in the last), as the reference
/// counted its own values.
fn bin(reference: &FeatureStats, v: f64) -> usize {
    let bins = reference.histogram.counts.len().max(1);
    let (lo, hi) = (reference.min, reference.max);
    if hi <= lo {
        return if v == lo { 0 } else { bins - 1 };
    }
    let width = (hi - lo) / bins as f64;
    // `as` saturates: a value below the range lands in bin 0.
    (((v - lo) / width) as usize).min(bins - 1)
}

/// The population stability index of `live` against `reference`'s histogram.
pub fn psi(reference: &FeatureStats, live: &[f64]) -> f64 {
    let counts = &reference.histogram.counts;
    let total: u64 = counts.iter().sum();
    if total == 0 || live.is_empty() {
        return 0.0;
    }
    let mut seen = vec![0u64; counts.len()];
    for &v in live {
        seen[bin(reference, v)] += 1;
    }
    counts
        .iter()
        .zip(&seen)
        .map(|(&e, &a)| {
            let e = (e as f64 / total as f64).max(PSI_FLOOR);
            let a = (a as f64 / live.len() as f64).max(PSI_FLOOR);
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// The reference's distribution function at `x`: linear inside each bin.
fn reference_cdf(reference: &FeatureStats, x: f64) -> f64 {
    let counts = &reference.histogram.counts;
    let total: u64 = counts.iter().sum();
    let (lo, hi) = (reference.min, reference.max);
    if total == 0 || x < lo {
        return 0.0;
    }
    if x >= hi {
        return 1.0;
    }
    let width = (hi - lo) / counts.len() as f64;
    let k = bin(reference, x);
    let below: u64 = counts[..k].iter().sum();
    let inside = ((x - lo) / width - k as f64).clamp(0.0, 1.0);
    (below as f64 + counts[k] as f64 * inside) / total as f64
}

/// The Kolmogorov–Smirnov statistic of `live` (sorted ascending) against `reference`.
pub fn ks(reference: &FeatureStats, sorted: &[f64]) -> f64 {
    let n = sorted.len() as f64;
    let mut gap = 0f64;
    for (i, &x) in sorted.iter().enumerate() {
        // Only the last of equal values is a step of the empirical function.
        if sorted.get(i + 1) == Some(&x) {
            continue;
        }
        let f = reference_cdf(reference, x);
        // Just below x: the steps before the run of values equal to x.
        let first = sorted.partition_point(|&v| v < x) as f64;
        gap = gap.max(((i + 1) as f64 / n - f).abs());
        gap = gap.max((first / n - f).abs());
    }
    gap
}

/// Mean and population standard deviation.
fn moments(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Compares each feature's live values (`columns[i]`, any order; sorted here) with its
/// reference; `evaluated` says whether they are enough to judge.
pub fn compare(
    reference: &[FeatureStats],
    columns: Vec<Vec<f64>>,
    psi_threshold: f64,
    evaluated: bool,
) -> Vec<FeatureDrift> {
    reference
        .iter()
        .zip(columns)
        .map(|(r, mut live)| {
            live.sort_by(f64::total_cmp);
            let (live_mean, live_std) = moments(&live);
            let psi = psi(r, &live);
            FeatureDrift {
                name: r.name.clone(),
                reference_mean: r.mean,
                reference_std: r.std,
                live_mean,
                live_std,
                psi,
                ks: ks(r, &live),
                drifted: evaluated && psi >= psi_threshold,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::describe::stats;

    /// A deterministic stand-in for n draws from N(mean, 1): evenly spaced quantiles of the
    /// logistic distribution with the normal's slope at its centre.
    fn normal(n: usize, mean: f64) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let p = (i as f64 + 0.5) / n as f64;
                mean + 1.702f64.recip() * (p / (1.0 - p)).ln()
            })
            .collect()
    }

    #[test]
    fn the_same_distribution_is_quiet_and_a_shifted_one_drifts() {
        let reference = stats("x", &normal(5000, 0.0));
        let same = normal(500, 0.0);
        let shifted = normal(500, 1.0);
        assert!(psi(&reference, &same) < 0.02, "{}", psi(&reference, &same));
        // Below the 5% critical value for 500 values, 1.36 / sqrt(500): the histogram's
        // linear pieces only approximate the reference's distribution inside each bin.
        assert!(ks(&reference, &same) < 0.061, "{}", ks(&reference, &same));
        assert!(
            psi(&reference, &shifted) > 0.5,
            "{}",
            psi(&reference, &shifted)
        );
        let d = ks(&reference, &shifted);
        assert!((0.3..0.55).contains(&d), "a one-sigma shift: {d}");
        let report = compare(
            &[reference.clone(), reference],
            vec![same, shifted],
            0.2,
            true,
        );
        assert_eq!(
            report.iter().map(|f| f.drifted).collect::<Vec<_>>(),
            [false, true]
        );
        assert!((report[1].live_mean - 1.0).abs() < 1e-9);
    }

    #[test]
    fn empty_bins_are_floored_and_out_of_range_values_count_at_the_ends() {
        let reference = stats("x", &(0..100).map(f64::from).collect::<Vec<_>>());
        // Everything far above the range: all in the last bin, the others floored.
        let above = vec![1e6; 50];
        let p = psi(&reference, &above);
        let expected =
            (1.0 - 0.1) * (1.0f64 / 0.1).ln() + 9.0 * (PSI_FLOOR - 0.1) * (PSI_FLOOR / 0.1).ln();
        assert!((p - expected).abs() < 1e-9, "{p} vs {expected}");
        assert_eq!(ks(&reference, &above), 1.0);
        // A constant feature: its value is quiet, any other is not.
        let constant = stats("c", &[0.0; 10]);
        assert_eq!(psi(&constant, &[0.0; 20]), 0.0);
        assert!(psi(&constant, &[0.5; 20]) > 1.0);
        // Not judged: never drifted, whatever the numbers.
        let quiet = compare(&[constant], vec![vec![0.5; 20]], 0.2, false);
        assert!(!quiet[0].drifted && quiet[0].psi > 1.0);
    }

    #[test]
    fn the_reference_distribution_is_linear_inside_bins() {
        let reference = stats("x", &(0..=100).map(f64::from).collect::<Vec<_>>());
        assert_eq!(reference_cdf(&reference, -1.0), 0.0);
        assert_eq!(reference_cdf(&reference, 100.0), 1.0);
        let mid = reference_cdf(&reference, 50.0);
        assert!((mid - 0.5).abs() < 0.02, "{mid}");
        // Uniform live values over the same range: close to the reference everywhere.
        let live: Vec<f64> = (0..1000).map(|i| f64::from(i) / 10.0).collect();
        assert!(ks(&reference, &live) < 0.02, "{}", ks(&reference, &live));
    }
}
