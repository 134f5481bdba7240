//! `kiln serve`'s `/metrics`: Prometheus metrics in the OpenMetrics text format
//! (`prometheus-client`). Labels are bounded: the one served model's name, the versions it
//! served, HTTP status codes, and the model's input features.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

use kiln_versions::drift::Report;

/// The content type of [`Metrics::encode`]'s text.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    model: String,
    /// The version that answered; empty for a request refused before it reached one.
    version: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    model: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

/// One input feature of the served model (bounded by its inputs: the reference keeps at
/// most 4096).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeatureLabels {
    model: String,
    feature: String,
}

/// A gauge of a float.
type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric the server keeps.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<VersionLabels, Histogram>,
    batch_rows: Histogram,
    served: Family<ModelLabels, Gauge>,
    psi: Family<FeatureLabels, FloatGauge>,
    ks: Family<FeatureLabels, FloatGauge>,
    drifted: Family<FeatureLabels, Gauge>,
    drifted_share: Family<ModelLabels, FloatGauge>,
    window: Family<ModelLabels, Gauge>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("kiln_serve");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Infer requests answered, by model, version and HTTP status code",
            requests.clone(),
        );
        // 50 µs to ~6.5 s.
        let latency = Family::<VersionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
        });
        registry.register_with_unit(
            "request_duration",
            "Time from an infer request's body read to its answer",
            Unit::Seconds,
            latency.clone(),
        );
        let batch_rows = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "batch_rows",
            "Rows per forward pass (one batch of concurrent requests)",
            batch_rows.clone(),
        );
        let served = Family::<ModelLabels, Gauge>::default();
        registry.register("model_version", "The version being served", served.clone());
        let psi = Family::<FeatureLabels, FloatGauge>::default();
        registry.register(
            "drift_psi",
            "Population stability index of each input feature's live window against the served version's training inputs",
            psi.clone(),
        );
        let ks = Family::<FeatureLabels, FloatGauge>::default();
        registry.register(
            "drift_ks",
            "Kolmogorov-Smirnov statistic of each input feature's live window against the served version's training inputs",
            ks.clone(),
        );
        let drifted = Family::<FeatureLabels, Gauge>::default();
        registry.register(
            "drift_drifted",
            "1 when the feature's PSI reached the threshold over a window of at least min_samples inputs, else 0",
            drifted.clone(),
        );
        let drifted_share = Family::<ModelLabels, FloatGauge>::default();
        registry.register(
            "drift_drifted_features_ratio",
            "The share of input features that drifted",
            drifted_share.clone(),
        );
        let window = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "drift_window_inputs",
            "Inputs (rows) in the live window",
            window.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            batch_rows,
            served,
            psi,
            ks,
            drifted,
            drifted_share,
            window,
        }
    }

    /// One infer request answered with `code` by `version` (`None`: refused before any
    /// version saw it), in `seconds` when it was answered.
    pub(crate) fn request(
        &self,
        model: &str,
        version: Option<u64>,
        code: u16,
        seconds: Option<f64>,
    ) {
        let version = version.map(|v| v.to_string()).unwrap_or_default();
        self.requests
            .get_or_create(&RequestLabels {
                model: model.to_owned(),
                version: version.clone(),
                code,
            })
            .inc();
        if let Some(seconds) = seconds {
            self.latency
                .get_or_create(&VersionLabels {
                    model: model.to_owned(),
                    version,
                })
                .observe(seconds);
        }
    }

    /// One forward pass over `rows` rows.
    pub(crate) fn batch(&self, rows: usize) {
        self.batch_rows.observe(rows as f64);
    }

    /// `version` of `model` is served from now on.
    pub(crate) fn serving(&self, model: &str, version: u64) {
        self.served
            .get_or_create(&ModelLabels {
                model: model.to_owned(),
            })
            .set(i64::try_from(version).unwrap_or(i64::MAX));
    }

    /// The drift of the latest evaluation.
    pub(crate) fn drift(&self, report: &Report) {
        let model = ModelLabels {
            model: report.model.clone(),
        };
        self.window
            .get_or_create(&model)
            .set(i64::try_from(report.samples).unwrap_or(i64::MAX));
        self.drifted_share
            .get_or_create(&model)
            .set(report.drifted_share);
        for f in &report.features {
            let labels = FeatureLabels {
                model: report.model.clone(),
                feature: f.name.clone(),
            };
            self.psi.get_or_create(&labels).set(f.psi);
            self.ks.get_or_create(&labels).set(f.ks);
            self.drifted
                .get_or_create(&labels)
                .set(i64::from(f.drifted));
        }
    }

    /// The OpenMetrics text of every metric.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
