//! A task's log lines for the coordinator (`kiln logs`): a `tracing` layer that, while a
//! task runs, copies every event it passes (INFO and above; the HTTP/2 stack's only from
//! WARN) into the task's channel, whichever thread logged it; [`ship`] sends them to the
//! coordinator in batches. The worker's own log (stderr) is unchanged.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kiln_proto::v1::{LogBatch, LogLine};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::Context;

/// Where the running task's lines go, with the capture's number; `None` between tasks.
type Sink = Option<(u64, mpsc::UnboundedSender<LogLine>)>;
static SINK: Mutex<Sink> = Mutex::new(None);
static CAPTURES: AtomicU64 = AtomicU64::new(0);

fn sink() -> std::sync::MutexGuard<'static, Sink> {
    SINK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The layer to add to the worker's subscriber.
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let filter = Targets::new()
        .with_default(Level::INFO)
        .with_target("h2", Level::WARN)
        .with_target("hyper", Level::WARN)
        .with_target("tower", Level::WARN)
        .with_target("tonic", Level::WARN);
    TaskLogs.with_filter(filter)
}

/// Lines are captured from now until the guard drops; they arrive on the receiver.
pub fn capture() -> (Capturing, mpsc::UnboundedReceiver<LogLine>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let id = CAPTURES.fetch_add(1, Ordering::Relaxed);
    *sink() = Some((id, tx));
    (Capturing(id), rx)
}

/// Captures a task's lines while it lives (unless a later capture took over).
#[must_use = "lines are captured only while the guard lives"]
pub struct Capturing(u64);

impl Drop for Capturing {
    fn drop(&mut self) {
        let mut sink = sink();
        if sink.as_ref().is_some_and(|(id, _)| *id == self.0) {
            *sink = None;
        }
    }
}

struct TaskLogs;

impl<S: Subscriber> Layer<S> for TaskLogs {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let guard = sink();
        let Some((_, tx)) = guard.as_ref() else {
            return;
        };
        let mut text = Text::default();
        event.record(&mut text);
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        // A closed channel: the task is ending, its lines no longer wanted.
        let _ = tx.send(LogLine {
            unix_ms,
            level: event.metadata().level().to_string(),
            text: text.0,
            ..LogLine::default()
        });
    }
}

/// An event as one line: its message, then its other fields as `name=value`.
#[derive(Default)]
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let fields = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value:?}");
            if !fields.is_empty() {
                let _ = write!(self.0, " {fields}");
            }
        } else {
            let sep = if self.0.is_empty() { "" } else { " " };
            let _ = write!(self.0, "{sep}{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            let sep = if self.0.is_empty() { "" } else { " " };
            let _ = write!(self.0, "{sep}{}={value}", field.name());
        }
    }
}

/// Lines in one [`LogBatch`] at most.
const LOG_BATCH_LINES: usize = 500;
/// How long a line waits for others to share its batch.
const LOG_BATCH_DELAY: Duration = Duration::from_millis(200);

/// Sends a task's log lines to the coordinator in batches (`batch` holds the task's ids),
/// until the capture ends and every line is sent.
pub async fn ship(
    mut client: kiln_proto::auth::Client,
    batch: LogBatch,
    mut lines: mpsc::UnboundedReceiver<LogLine>,
) {
    while let Some(first) = lines.recv().await {
        let mut next = LogBatch {
            lines: vec![first],
            ..batch.clone()
        };
        let deadline = tokio::time::Instant::now() + LOG_BATCH_DELAY;
        while next.lines.len() < LOG_BATCH_LINES {
            match tokio::time::timeout_at(deadline, lines.recv()).await {
                Ok(Some(line)) => next.lines.push(line),
                Ok(None) | Err(_) => break,
            }
        }
        if let Err(status) = client.report_logs(next).await {
            // Logged to stderr only: this task's capture would send it back here.
            eprintln!("kiln-worker: could not send log lines to the coordinator: {status}");
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn a_task_gets_its_own_lines_and_none_after_it() {
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            let (capturing, mut rx) = capture();
            tracing::info!(step = 3, job = "j-1", "checkpoint committed");
            tracing::debug!("too fine to send");
            // The binary's subscriber is global; here the test's is handed to the thread.
            let dispatch = tracing::dispatcher::get_default(Clone::clone);
            std::thread::scope(|s| {
                s.spawn(|| {
                    tracing::dispatcher::with_default(&dispatch, || {
                        tracing::warn!("from another thread");
                    });
                });
            });
            drop(capturing);
            tracing::info!("after the task");
            let lines: Vec<(String, String)> = std::iter::from_fn(|| rx.try_recv().ok())
                .map(|l| (l.level, l.text))
                .collect();
            assert_eq!(
                lines,
                [
                    ("INFO".into(), "checkpoint committed step=3 job=j-1".into()),
                    ("WARN".into(), "from another thread".into()),
                ]
            );
        });
    }
}
