//! Dynamic batching: one thread owns the served model and runs every forward pass. It takes
//! the first waiting request, then more until `max_batch_size` rows or `max_delay` have passed,
//! runs them as one batch and hands each request its rows back. A new version arrives through
//! the same queue, so every request queued before it is answered by the old version and every
//! one after by the new. Rows are independent in the built-in models (no batch statistics at
//! inference), so a batched answer equals an unbatched one.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::metrics::Metrics;
use super::{About, Loaded};

/// The rows of one request.
pub(crate) struct Request {
    /// Row-major inputs, `rows × features`.
    pub(crate) x: Vec<f32>,
    pub(crate) rows: usize,
    pub(crate) reply: oneshot::Sender<Answer>,
}

/// A request's logits (`rows × classes`, row-major) and the version that computed them.
pub(crate) struct Answer {
    pub(crate) logits: Vec<f32>,
    pub(crate) about: Arc<About>,
}

enum Message {
    Infer(Request),
    Swap(Loaded),
    /// Stop after answering what came before.
    Close,
}

/// Where requests and new versions go.
#[derive(Clone)]
pub(crate) struct Queue(Sender<Message>);

impl Queue {
    /// Queues a request; `false` when the server is shutting down.
    pub(crate) fn infer(&self, request: Request) -> bool {
        self.0.send(Message::Infer(request)).is_ok()
    }

    /// Serves `loaded` from the next batch on.
    pub(crate) fn swap(&self, loaded: Loaded) {
        let _ = self.0.send(Message::Swap(loaded));
    }

    /// Ends the batching thread once the requests queued before are answered; later ones
    /// are refused (the server is shutting down). Open client connections, which hold queues
    /// of their own, do not keep it running.
    pub(crate) fn close(&self) {
        let _ = self.0.send(Message::Close);
    }
}

/// The batching thread's state.
pub(crate) struct Batcher {
    max_rows: usize,
    max_delay: Duration,
    metrics: Arc<Metrics>,
    sender: Sender<Message>,
    receiver: Receiver<Message>,
}

impl Batcher {
    pub(crate) fn new(max_rows: usize, max_delay: Duration, metrics: Arc<Metrics>) -> Self {
        let (sender, receiver) = channel();
        Self {
            max_rows: max_rows.max(1),
            max_delay,
            metrics,
            sender,
            receiver,
        }
    }

    pub(crate) fn queue(&self) -> Queue {
        Queue(self.sender.clone())
    }

    /// Runs until every [`Queue`] is gone. Requests that come before any version is loaded
    /// wait for it.
    pub(crate) fn run(self) {
        let Self {
            max_rows,
            max_delay,
            metrics,
            sender,
            receiver,
        } = self;
        drop(sender);
        let mut current: Option<Loaded> = None;
        let mut waiting: Vec<Request> = Vec::new();
        // A message taken while filling a batch that belongs after it.
        let mut next: Option<Message> = None;
        loop {
            let message = match next.take() {
                Some(message) => message,
                None => match receiver.recv() {
                    Ok(message) => message,
                    Err(_) => return,
                },
            };
            match message {
                Message::Close => return,
                Message::Swap(loaded) => {
                    current = Some(loaded);
                    // Requests that came before the first version are answered by it.
                    let early = std::mem::take(&mut waiting);
                    if let Some(model) = &current {
                        run_batch(model, early, &metrics);
                    }
                }
                Message::Infer(request) if current.is_none() => waiting.push(request),
                Message::Infer(request) => {
                    let mut batch = vec![request];
                    let mut rows = batch[0].rows;
                    let deadline = Instant::now() + max_delay;
                    while rows < max_rows {
                        let left = deadline.saturating_duration_since(Instant::now());
                        match receiver.recv_timeout(left) {
                            Ok(Message::Infer(more)) if rows + more.rows <= max_rows => {
                                rows += more.rows;
                                batch.push(more);
                            }
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                                break;
                            }
                        }
                    }
                    if let Some(model) = &current {
                        run_batch(model, batch, &metrics);
                    }
                }
            }
        }
    }
}

/// One forward pass over every request's rows; each gets its own back.
fn run_batch(model: &Loaded, mut batch: Vec<Request>, metrics: &Metrics) {
    if batch.is_empty() {
        return;
    }
    let rows: usize = batch.iter().map(|r| r.rows).sum();
    metrics.batch(rows);
    let x: Vec<f32> = match &mut batch[..] {
        [one] => std::mem::take(&mut one.x),
        many => many.iter().flat_map(|r| r.x.iter().copied()).collect(),
    };
    let logits = model.model.logits(x, rows);
    let classes = model.about.classes;
    let mut offset = 0;
    for request in batch {
        let end = (offset + request.rows * classes).min(logits.len());
        let answer = Answer {
            logits: logits[offset..end].to_vec(),
            about: Arc::clone(&model.about),
        };
        offset = end;
        // A client that went away no longer wants its answer.
        let _ = request.reply.send(answer);
    }
}
