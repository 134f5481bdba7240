//! Drift on live traffic: every valid request's inputs go into a sliding window (the
//! last `window` rows), which is compared feature by feature with the served version's
//! reference statistics ([`kiln_versions::drift`]). Requests only copy their rows in; the
//! comparison runs once a second off the request path (and on demand for the drift
//! endpoint), sets the drift metrics and logs the features whenever the drifted set changes.

use std::sync::{Arc, Mutex};

use kiln_versions::drift::{self, Report, Settings};

use super::About;
use super::metrics::Metrics;

/// The last `capacity` rows of `width` values, oldest overwritten first.
struct Window {
    width: usize,
    capacity: usize,
    values: Vec<f32>,
    /// The row the next push writes.
    next: usize,
    len: usize,
}

impl Window {
    fn new(width: usize, capacity: usize) -> Self {
        Window {
            width,
            capacity,
            values: vec![0.0; width * capacity],
            next: 0,
            len: 0,
        }
    }

    /// Adds the rows of `x` (row-major, `width` values each).
    fn push(&mut self, x: &[f32]) {
        if self.capacity == 0 || self.width == 0 {
            return;
        }
        // Only the newest `capacity` rows of a large request can stay.
        let rows = x.len() / self.width;
        let skip = rows.saturating_sub(self.capacity);
        for row in x.chunks_exact(self.width).skip(skip) {
            let at = self.next * self.width;
            self.values[at..at + self.width].copy_from_slice(row);
            self.next = (self.next + 1) % self.capacity;
        }
        self.len = (self.len + rows - skip).min(self.capacity);
    }

    /// Each feature's values in the window (in no particular order).
    fn columns(&self) -> Vec<Vec<f64>> {
        (0..self.width)
            .map(|j| {
                (0..self.len)
                    .map(|r| f64::from(self.values[r * self.width + j]))
                    .collect()
            })
            .collect()
    }
}

struct State {
    about: Option<Arc<About>>,
    window: Window,
    /// Rows came in, or the version changed, since the last evaluation.
    stale: bool,
    /// The drifted features of the last evaluation, to log only changes.
    drifted: Vec<String>,
}

/// The server's drift monitor.
pub(crate) struct Monitor {
    settings: Settings,
    /// What the server was started to serve (`NAME@ALIAS`).
    serving: String,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
}

impl Monitor {
    pub(crate) fn new(settings: Settings, serving: String, metrics: Arc<Metrics>) -> Self {
        Monitor {
            settings,
            serving,
            metrics,
            state: Mutex::new(State {
                about: None,
                window: Window::new(0, 0),
                stale: false,
                drifted: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Live inputs are compared with `about`'s reference from now on. The window keeps the
    /// traffic it holds unless the inputs changed shape.
    pub(crate) fn serve(&self, about: Arc<About>) {
        let mut state = self.lock();
        let width = about.features();
        if state.window.width != width {
            state.window = Window::new(width, self.settings.window);
        }
        state.about = Some(about);
        state.stale = true;
    }

    /// The rows of a request that was checked to fit a version whose inputs have `width`
    /// values (ignored if the version served now takes other inputs).
    pub(crate) fn observe(&self, width: usize, x: &[f32]) {
        let mut state = self.lock();
        if state.window.width != width {
            return;
        }
        state.window.push(x);
        state.stale = true;
    }

    /// The window compared with the served version's reference now.
    pub(crate) fn report(&self) -> Option<Report> {
        let (about, columns, samples) = {
            let state = self.lock();
            let about = state.about.clone()?;
            (about, state.window.columns(), state.window.len)
        };
        let evaluated = samples >= self.settings.min_samples;
        let unavailable = about.reference.is_empty().then(|| {
            format!(
                "{}@{} keeps no statistics of its training inputs (registered by an older kiln, or its inputs have over 4096 features)",
                about.name, about.version
            )
        });
        let features = drift::compare(
            &about.reference,
            columns,
            self.settings.psi_threshold,
            evaluated,
        );
        let drifted = features.iter().filter(|f| f.drifted).count();
        Some(Report {
            model: about.name.clone(),
            version: about.version,
            serving: self.serving.clone(),
            settings: self.settings,
            samples,
            evaluated,
            unavailable,
            drifted_share: drifted as f64 / features.len().max(1) as f64,
            features,
        })
    }

    /// Compares the window again if requests came since the last time: sets the drift
    /// metrics, and logs the drifted features when they changed.
    pub(crate) fn evaluate(&self) {
        if !std::mem::take(&mut self.lock().stale) {
            return;
        }
        let started = std::time::Instant::now();
        let Some(report) = self.report() else {
            return;
        };
        tracing::debug!(
            seconds = started.elapsed().as_secs_f64(),
            features = report.features.len(),
            samples = report.samples,
            "drift evaluated"
        );
        self.metrics.drift(&report);
        let drifted: Vec<String> = report.drifted().into_iter().map(str::to_owned).collect();
        let mut state = self.lock();
        if drifted == state.drifted {
            return;
        }
        let what = format!("{}@{}", report.model, report.version);
        if drifted.is_empty() {
            eprintln!("kiln-worker: drift: no input feature of {what} drifts any more");
        } else {
            eprintln!(
                "kiln-worker: drift: {} of {} input features of {what} drifted (PSI >= {} over the last {} inputs): {}",
                drifted.len(),
                report.features.len(),
                self.settings.psi_threshold,
                report.samples,
                drifted.join(", ")
            );
        }
        state.drifted = drifted;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_keeps_the_newest_rows() {
        let mut w = Window::new(2, 3);
        w.push(&[1.0, 10.0, 2.0, 20.0]);
        assert_eq!(w.columns(), [vec![1.0, 2.0], vec![10.0, 20.0]]);
        w.push(&[3.0, 30.0, 4.0, 40.0]);
        let mut first = w.columns()[0].clone();
        first.sort_by(f64::total_cmp);
        assert_eq!(first, [2.0, 3.0, 4.0]);
        // A request larger than the window leaves only its own newest rows.
        w.push(&[5.0, 0.0, 6.0, 0.0, 7.0, 0.0, 8.0, 0.0]);
        let mut first = w.columns()[0].clone();
        first.sort_by(f64::total_cmp);
        assert_eq!((first, w.len), (vec![6.0, 7.0, 8.0], 3));
    }
}
