//! Decoding `deploy` blocks: the registry name and alias, the `gate` rules that decide
//! whether a new version takes the alias, and `serve` (with `monitor`), the model served as
//! a resource of the job's cluster.

use std::time::Duration;

use hcl::edit::Span;
use hcl::edit::structure::Block;

use crate::spec::{DeploySpec, Gate, Metric, MonitorSpec, ServeSpec};

use super::defaults::{
    DEFAULT_MAX_BATCH_SIZE, DEFAULT_MONITOR, DEFAULT_SERVE_LISTEN, DEFAULT_WATCH_INTERVAL,
};
use super::getters::{
    Get, expect_bool, expect_duration, expect_positive_duration, expect_socket_addr, expect_string,
    non_negative, number_where, positive_number,
};
use super::schema::{DEPLOY, GATE, MONITOR, SERVE};
use super::scope::{Bad, Loader};
use super::source::{SourceFile, header_span, value_span};

impl<'d> Loader<'d> {
    /// `deploy`, for a dataset holding out `validation_split` (`None`: the dataset is invalid).
    pub(super) fn deploy(
        &mut self,
        src: &SourceFile,
        block: &Block,
        validation_split: Option<f64>,
    ) -> Option<DeploySpec> {
        let labels_ok = self.check_labels(src, block, &DEPLOY);
        let body = &block.body;
        self.check_body(src, body, &DEPLOY);
        let alias = self
            .get(src, body, "alias", |value| {
                let alias = expect_string(value)?;
                kiln_versions::registry::check_alias(&alias)
                    .map_err(|e| Bad::Value(e.to_string()))?;
                Ok(alias)
            })
            .optional();
        let model = self
            .get(src, body, "model", |value| {
                let model = expect_string(value)?;
                kiln_versions::check_name(&model).map_err(Bad::Value)?;
                Ok(model)
            })
            .optional();
        let mut gates = Some(Vec::new());
        for gate in body.get_blocks(GATE.ident) {
            match (self.gate(src, gate), &mut gates) {
                (Some(gate), Some(all)) => all.push(gate),
                _ => gates = None,
            }
        }
        let (alias, gates) = (alias?, gates?);
        if alias.is_none()
            && let Some(first) = body.get_blocks(GATE.ident).next()
        {
            self.push(
                src.error(header_span(first), "A `gate` without an `alias` decides nothing")
                    .with_detail("A gate decides whether the new version takes the deploy block's alias; without one, every succeeded job's model is only registered.")
                    .with_hint("add `alias = \"production\"` to the `deploy` block, or remove the gate"),
            );
            return None;
        }
        if validation_split == Some(0.0)
            && let Some(first) = body.get_blocks(GATE.ident).next()
        {
            self.push(
                src.error(header_span(first), "The gate checks validation metrics, but the dataset holds out no validation split")
                    .with_detail("`validation_split = 0` leaves no samples to measure `val_accuracy` or `val_loss` on, so no version could pass.")
                    .with_hint("set `validation_split` in the `dataset` block, e.g. `validation_split = 0.1`"),
            );
            return None;
        }
        let serve = match self.at_most_one(src, body, &SERVE, &DEPLOY) {
            Some(serve) => self.serve(src, serve).map(Some),
            None => Some(None),
        };
        labels_ok.then_some(DeploySpec {
            model: model?,
            alias,
            gates,
            serve: serve?,
        })
    }

    /// `serve`, with its `monitor`.
    fn serve(&mut self, src: &SourceFile, block: &Block) -> Option<ServeSpec> {
        let labels_ok = self.check_labels(src, block, &SERVE);
        let body = &block.body;
        self.check_body(src, body, &SERVE);
        let listen = self
            .get(src, body, "listen", |v| {
                expect_socket_addr(v, "0.0.0.0:8080")
            })
            .or(DEFAULT_SERVE_LISTEN);
        let max_batch_size = self
            .get_u32(src, body, "max_batch_size", 1)
            .or(DEFAULT_MAX_BATCH_SIZE);
        let max_delay = self
            .get(src, body, "max_delay", expect_duration)
            .or(Duration::ZERO);
        let watch_interval = self
            .get(src, body, "watch_interval", expect_positive_duration)
            .or(DEFAULT_WATCH_INTERVAL);
        let monitor = match self.at_most_one(src, body, &MONITOR, &SERVE) {
            Some(monitor) => self.monitor(src, monitor),
            None => Some(Some(DEFAULT_MONITOR)),
        };
        labels_ok.then_some(ServeSpec {
            listen: listen?,
            max_batch_size: max_batch_size?,
            max_delay: max_delay?,
            watch_interval: watch_interval?,
            monitor: monitor?,
        })
    }

    /// `monitor`: `Some(None)` when `enabled = false`.
    fn monitor(&mut self, src: &SourceFile, block: &Block) -> Option<Option<MonitorSpec>> {
        let labels_ok = self.check_labels(src, block, &MONITOR);
        let body = &block.body;
        self.check_body(src, body, &MONITOR);
        let enabled = self.get(src, body, "enabled", expect_bool).or(true);
        let psi_threshold = self
            .get(src, body, "psi_threshold", positive_number)
            .or(DEFAULT_MONITOR.psi_threshold);
        let window = self
            .get_u32(src, body, "window", 1)
            .or(DEFAULT_MONITOR.window);
        let min_samples = self.get_u32(src, body, "min_samples", 1);
        let min_samples_attr = match &min_samples {
            Get::Found(_, attr) => Some(*attr),
            _ => None,
        };
        let (enabled, psi_threshold, window, min_samples) = (
            enabled?,
            psi_threshold?,
            window?,
            // At most the window by default, so a small window needs no min_samples.
            min_samples.or(DEFAULT_MONITOR.min_samples.min(window.unwrap_or(1)))?,
        );
        if min_samples > window {
            let span = min_samples_attr.map_or_else(|| header_span(block), value_span);
            self.push(
                src.error(span, format!("`min_samples` is {min_samples}, more than the window of {window} inputs"))
                    .with_detail("Drift is judged once the window holds `min_samples` inputs; a window never holds more than `window`, so nothing would ever be judged.")
                    .with_hint(format!("lower `min_samples` to at most {window}, or raise `window`")),
            );
            return None;
        }
        labels_ok.then_some(enabled.then_some(MonitorSpec {
            psi_threshold,
            window,
            min_samples,
        }))
    }

    /// One `gate` block; `min_val_accuracy = X` alone is the short form of
    /// `metric = "val_accuracy"` with `threshold = X`.
    pub(super) fn gate(&mut self, src: &SourceFile, block: &Block) -> Option<Gate> {
        let labels_ok = self.check_labels(src, block, &GATE);
        let body = &block.body;
        self.check_body(src, body, &GATE);
        let metric = self.get(src, body, "metric", |value| {
            let name = expect_string(value)?;
            Metric::parse(&name).ok_or_else(|| {
                Bad::Value(format!(
                    "{name:?} is not a metric a gate can check; use one of {}",
                    Metric::NAMES.join(", ")
                ))
            })
        });
        let short = self.get(src, body, "min_val_accuracy", |value| {
            number_where(value, |x| (0.0..=1.0).contains(&x), "between 0 and 1")
        });
        if let (Get::Found(_, attr), Get::Found(..)) = (&short, &metric) {
            self.push(
                src.error(attr.key.span(), "`min_val_accuracy` is the short form of a `val_accuracy` threshold and cannot be combined with `metric`")
                    .with_hint("write `threshold = ...` instead of `min_val_accuracy = ...`"),
            );
            return None;
        }
        if let Get::Invalid = short {
            return None;
        }
        if let Get::Found(threshold, _) = short {
            return labels_ok.then_some(Gate {
                metric: Metric::ValAccuracy,
                threshold: Some(threshold),
                min_absolute_change: None,
                min_relative_change: None,
            });
        }
        let (metric, _) =
            self.required(src, block, "metric", "metric = \"val_accuracy\"", metric)?;
        let threshold = self
            .get(src, body, "threshold", |value| match metric {
                Metric::ValAccuracy => {
                    number_where(value, |x| (0.0..=1.0).contains(&x), "between 0 and 1")
                }
                Metric::ValLoss => non_negative(value),
            })
            .optional();
        let absolute = self
            .get(src, body, "min_absolute_change", non_negative)
            .optional();
        let relative = self
            .get(src, body, "min_relative_change", |value| {
                number_where(value, |x| (0.0..=1.0).contains(&x), "between 0 and 1")
            })
            .optional();
        let (threshold, absolute, relative) = (threshold?, absolute?, relative?);
        if threshold.is_none() && absolute.is_none() && relative.is_none() {
            self.push(
                src.error(header_span(block), "This gate has no rule")
                    .with_detail("A gate checks its metric with at least one of `threshold`, `min_absolute_change` and `min_relative_change`.")
                    .with_hint("add e.g. `threshold = 0.9`"),
            );
            return None;
        }
        labels_ok.then_some(Gate {
            metric,
            threshold,
            min_absolute_change: absolute,
            min_relative_change: relative,
        })
    }
}
