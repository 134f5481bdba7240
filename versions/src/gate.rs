//! The validation gate of `deploy`: MLflow's `MetricThreshold` rules, checked on a new model
//! version's validation metrics and, for the change rules, against the version that holds
//! the alias now. A version that passes every rule of every gate takes the alias; one that
//! fails any stays registered without it.
//!
//! With `higher` meaning "better" for the metric (`val_accuracy`; `val_loss` is better lower):
//! - `threshold`: the value is at least (at most, for a loss) the bound;
//! - `min_absolute_change`: the value beats the holder's by at least the change;
//! - `min_relative_change`: the value beats the holder's by at least that fraction of it. A
//!   holder whose value is 0 is beaten by any strict improvement.
//!
//! A change rule with no holder to compare against passes; one whose holder has no value for
//! the metric fails, since nothing shows the new version is better.

use serde::{Deserialize, Serialize};

use crate::registry::{Metrics, ModelVersion, Registry, RegistryError};

/// How many times a deployment re-reads the alias after another move came first.
const CONFLICT_RETRIES: usize = 8;

/// A metric a gate can check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Accuracy on the validation split; higher is better.
    ValAccuracy,
    /// Loss on the validation split; lower is better.
    ValLoss,
}

impl Metric {
    /// Every metric's name, as written in HCL.
    pub const NAMES: [&'static str; 2] = ["val_accuracy", "val_loss"];

    /// The metric called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "val_accuracy" => Some(Metric::ValAccuracy),
            "val_loss" => Some(Metric::ValLoss),
            _ => None,
        }
    }

    /// Its name, as written in HCL.
    pub fn name(self) -> &'static str {
        match self {
            Metric::ValAccuracy => "val_accuracy",
            Metric::ValLoss => "val_loss",
        }
    }

    /// Whether a larger value is a better model.
    pub fn greater_is_better(self) -> bool {
        self == Metric::ValAccuracy
    }

    /// Its value in `metrics`, when it was measured.
    pub fn of(self, metrics: &Metrics) -> Option<f64> {
        match self {
            Metric::ValAccuracy => metrics.val_accuracy,
            Metric::ValLoss => metrics.val_loss,
        }
    }
}

/// One `gate { metric, threshold, min_absolute_change, min_relative_change }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    /// What it checks.
    pub metric: Metric,
    /// Absolute bound.
    pub threshold: Option<f64>,
    /// Least improvement over the alias's holder, in the metric's units.
    pub min_absolute_change: Option<f64>,
    /// Least improvement over the alias's holder, as a fraction of the holder's value.
    pub min_relative_change: Option<f64>,
}

/// The outcome of one rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// The metric's name.
    pub metric: String,
    /// `threshold`, `min_absolute_change` or `min_relative_change`.
    pub rule: String,
    /// Whether it held.
    pub passed: bool,
    /// What was compared with what, in a sentence.
    pub summary: String,
}

/// The version holding the alias a gate compares against.
#[derive(Debug, Clone, Copy)]
pub struct Holder<'m> {
    /// Its version number.
    pub version: u64,
    /// Its metrics.
    pub metrics: &'m Metrics,
}

/// Every rule of `gates` on `candidate`, in order, against `holder` (`None`: nothing holds the
/// alias).
pub fn evaluate(gates: &[Gate], candidate: &Metrics, holder: Option<Holder<'_>>) -> Vec<Check> {
    let mut checks = Vec::new();
    for gate in gates {
        let metric = gate.metric;
        let name = metric.name();
        let check = |rule: &str, passed: bool, summary: String| Check {
            metric: name.to_owned(),
            rule: rule.to_owned(),
            passed,
            summary,
        };
        let rules = [
            ("threshold", gate.threshold),
            ("min_absolute_change", gate.min_absolute_change),
            ("min_relative_change", gate.min_relative_change),
        ];
        for (rule, bound) in rules {
            let Some(bound) = bound else { continue };
            let Some(value) = metric.of(candidate) else {
                checks.push(check(
                    rule,
                    false,
                    format!("{name} was not measured (the job has no validation split)"),
                ));
                continue;
            };
            if rule == "threshold" {
                let passed = better_or_equal(metric, value, bound);
                let relation = relation(passed, metric);
                checks.push(check(
                    rule,
                    passed,
                    format!("{name} {value:.6} {relation} threshold {bound}"),
                ));
                continue;
            }
            let Some(holder) = holder else {
                checks.push(check(
                    rule,
                    true,
                    format!("no version holds the alias yet: nothing to compare {name} with"),
                ));
                continue;
            };
            let Some(base) = metric.of(holder.metrics) else {
                checks.push(check(
                    rule,
                    false,
                    format!(
                        "version {} (the alias's holder) has no {name} to compare with",
                        holder.version
                    ),
                ));
                continue;
            };
            // The improvement, positive when the candidate is better.
            let gain = if metric.greater_is_better() {
                value - base
            } else {
                base - value
            };
            let (passed, needed) = if rule == "min_absolute_change" {
                (gain >= bound, format!("{bound}"))
            } else if base == 0.0 {
                (gain > 0.0, "a strict improvement over 0".to_owned())
            } else {
                (
                    gain >= bound * base.abs(),
                    format!("{bound} of {base:.6} = {:.6}", bound * base.abs()),
                )
            };
            let verb = if metric.greater_is_better() {
                "improved"
            } else {
                "decreased"
            };
            checks.push(check(
                rule,
                passed,
                format!(
                    "{name} {verb} by {gain:.6} over version {} ({base:.6} -> {value:.6}); needs {needed}",
                    holder.version
                ),
            ));
        }
    }
    checks
}

fn better_or_equal(metric: Metric, value: f64, bound: f64) -> bool {
    if metric.greater_is_better() {
        value >= bound
    } else {
        value <= bound
    }
}

fn relation(passed: bool, metric: Metric) -> &'static str {
    match (passed, metric.greater_is_better()) {
        (true, true) => ">=",
        (false, true) => "<",
        (true, false) => "<=",
        (false, false) => ">",
    }
}

/// What became of a new version and its alias.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Every rule's outcome (empty without gates).
    pub checks: Vec<Check>,
    /// The version that held the alias before (the one the change rules compared with).
    pub previous: Option<u64>,
    /// Whether the alias moved to the new version.
    pub deployed: bool,
}

/// Checks `gates` for `candidate` and, when every rule holds, moves `alias` to it, as `who`.
/// When another move of the alias comes first, the gates are checked again against its new
/// holder.
pub async fn deploy(
    registry: &Registry,
    candidate: &ModelVersion,
    alias: &str,
    gates: &[Gate],
    who: &str,
) -> Result<Decision, RegistryError> {
    let name = &candidate.name;
    let mut attempts = 0;
    loop {
        let history = registry.history(name, alias).await?;
        let last = history.last();
        let holder = match last {
            Some(last) => Some(registry.get(name, last.to).await?),
            None => None,
        };
        let checks = evaluate(
            gates,
            &candidate.metrics,
            holder.as_ref().map(|h| Holder {
                version: h.version,
                metrics: &h.metrics,
            }),
        );
        let previous = last.map(|m| m.to);
        if checks.iter().any(|c| !c.passed) {
            return Ok(Decision {
                checks,
                previous,
                deployed: false,
            });
        }
        let reason = if checks.is_empty() {
            format!("job {} (no gate)", candidate.lineage.job_id)
        } else {
            let passed = checks
                .iter()
                .map(|c| c.summary.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            format!("gate passed: {passed}")
        };
        match registry
            .move_alias(name, alias, candidate.version, last, &reason, who)
            .await
        {
            Ok(_) => {
                return Ok(Decision {
                    checks,
                    previous,
                    deployed: true,
                });
            }
            Err(RegistryError::Conflict { .. }) if attempts < CONFLICT_RETRIES => attempts += 1,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(acc: Option<f64>, loss: Option<f64>) -> Metrics {
        Metrics {
            val_accuracy: acc,
            val_loss: loss,
            ..Metrics::default()
        }
    }

    fn gate(metric: Metric, t: Option<f64>, a: Option<f64>, r: Option<f64>) -> Gate {
        Gate {
            metric,
            threshold: t,
            min_absolute_change: a,
            min_relative_change: r,
        }
    }

    fn passed(checks: &[Check]) -> Vec<(&str, bool)> {
        checks.iter().map(|c| (c.rule.as_str(), c.passed)).collect()
    }

    #[test]
    fn thresholds_follow_the_metric_direction() {
        let m = metrics(Some(0.96), Some(0.2));
        let gates = [
            gate(Metric::ValAccuracy, Some(0.95), None, None),
            gate(Metric::ValLoss, Some(0.1), None, None),
        ];
        let checks = evaluate(&gates, &m, None);
        assert_eq!(passed(&checks), [("threshold", true), ("threshold", false)]);
        assert!(
            checks[1]
                .summary
                .contains("val_loss 0.200000 > threshold 0.1"),
            "{}",
            checks[1].summary
        );
        // Equal to the bound passes, in both directions.
        let edge = evaluate(&gates, &metrics(Some(0.95), Some(0.1)), None);
        assert!(edge.iter().all(|c| c.passed), "{edge:?}");
    }

    #[test]
    fn change_rules_compare_with_the_holder() {
        let holder_metrics = metrics(Some(0.90), Some(0.50));
        let holder = Some(Holder {
            version: 3,
            metrics: &holder_metrics,
        });
        let gates = [gate(Metric::ValAccuracy, None, Some(0.002), Some(0.01))];
        // +0.01 absolute, +1.1 % relative: both hold.
        let better = evaluate(&gates, &metrics(Some(0.91), None), holder);
        assert_eq!(
            passed(&better),
            [("min_absolute_change", true), ("min_relative_change", true)]
        );
        // +0.005 absolute holds, +0.56 % relative does not.
        let slightly = evaluate(&gates, &metrics(Some(0.905), None), holder);
        assert_eq!(
            passed(&slightly),
            [
                ("min_absolute_change", true),
                ("min_relative_change", false)
            ]
        );
        assert!(slightly[1].summary.contains("version 3"), "{slightly:?}");
        // A loss must fall.
        let loss = [gate(Metric::ValLoss, None, Some(0.1), Some(0.1))];
        let lower = evaluate(&loss, &metrics(None, Some(0.39)), holder);
        assert!(lower.iter().all(|c| c.passed), "{lower:?}");
        let higher = evaluate(&loss, &metrics(None, Some(0.6)), holder);
        assert!(higher.iter().all(|c| !c.passed), "{higher:?}");
    }

    #[test]
    fn missing_values_and_holders() {
        let gates = [gate(Metric::ValAccuracy, Some(0.5), Some(0.0), Some(0.1))];
        // No holder: the change rules pass, the threshold still applies.
        let first = evaluate(&gates, &metrics(Some(0.6), None), None);
        assert!(first.iter().all(|c| c.passed), "{first:?}");
        // Not measured: every rule fails.
        let unmeasured = evaluate(&gates, &metrics(None, None), None);
        assert!(unmeasured.iter().all(|c| !c.passed), "{unmeasured:?}");
        // A holder without the metric cannot be beaten; a holder at 0 by any improvement.
        let empty = metrics(None, None);
        let blind = evaluate(
            &gates,
            &metrics(Some(0.6), None),
            Some(Holder {
                version: 1,
                metrics: &empty,
            }),
        );
        assert_eq!(
            passed(&blind),
            [
                ("threshold", true),
                ("min_absolute_change", false),
                ("min_relative_change", false)
            ]
        );
        let zero = metrics(Some(0.0), None);
        let from_zero = evaluate(
            &gates,
            &metrics(Some(0.6), None),
            Some(Holder {
                version: 1,
                metrics: &zero,
            }),
        );
        assert!(from_zero.iter().all(|c| c.passed), "{from_zero:?}");
    }

    #[tokio::test]
    async fn deploying_moves_the_alias_only_when_every_rule_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = Registry::open(
            &format!("file://{}", dir.path().display()),
            &Default::default(),
        )
        .expect("registry");
        let register = |acc: f64| {
            registry.register(
                "m",
                crate::registry::Lineage::default(),
                metrics(Some(acc), None),
            )
        };
        let gates = [gate(Metric::ValAccuracy, Some(0.8), Some(0.01), None)];
        let v1 = register(0.9).await.expect("v1");
        let first = deploy(&registry, &v1, "prod", &gates, "me@here")
            .await
            .expect("deploy v1");
        assert!(first.deployed && first.previous.is_none(), "{first:?}");
        // Not better by 0.01: registered, not deployed; the alias stays.
        let v2 = register(0.905).await.expect("v2");
        let second = deploy(&registry, &v2, "prod", &gates, "me@here")
            .await
            .expect("deploy v2");
        assert!(!second.deployed && second.previous == Some(1), "{second:?}");
        let v3 = register(0.95).await.expect("v3");
        let third = deploy(&registry, &v3, "prod", &gates, "me@here")
            .await
            .expect("deploy v3");
        assert!(third.deployed, "{third:?}");
        let history = registry.history("m", "prod").await.expect("history");
        let moves: Vec<_> = history.iter().map(|m| (m.from, m.to)).collect();
        assert_eq!(moves, [(None, 1), (Some(1), 3)]);
        assert!(
            history[1].reason.starts_with("gate passed: val_accuracy"),
            "{}",
            history[1].reason
        );
    }
}
