//! Each job's log of the events that carry a message, numbered from 1: what a new watcher
//! replays before the live feed, and a lagging one catches up from, so that every event reaches
//! every watcher exactly once and in order. In memory only.

use std::collections::{BTreeMap, VecDeque};

use kiln_proto::v1::JobEvent;

/// Events kept per job; older ones are dropped (a watcher then starts later).
const EVENT_LOG_LEN: usize = 10_000;

#[derive(Default)]
struct EventLog {
    last_seq: u64,
    /// `(seq, message, routine)`.
    events: VecDeque<(u64, String, bool)>,
}

/// The event logs of every job.
#[derive(Default)]
pub(super) struct EventLogs {
    logs: BTreeMap<String, EventLog>,
}

impl EventLogs {
    /// Logs an event of `job` and returns its sequence number.
    pub(super) fn record(&mut self, job: &str, message: &str, routine: bool) -> u64 {
        let log = self.logs.entry(job.to_owned()).or_default();
        log.last_seq += 1;
        if log.events.len() == EVENT_LOG_LEN {
            log.events.pop_front();
        }
        log.events
            .push_back((log.last_seq, message.to_owned(), routine));
        log.last_seq
    }

    /// The logged events of `job` after `seq`, without the job (the caller sends the job as
    /// it is now after them).
    pub(super) fn since(&self, job: &str, seq: u64) -> Vec<JobEvent> {
        self.logs.get(job).map_or_else(Vec::new, |log| {
            log.events
                .iter()
                .filter(|(s, _, _)| *s > seq)
                .map(|(s, message, routine)| JobEvent {
                    job: None,
                    message: message.clone(),
                    seq: *s,
                    routine: *routine,
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_numbered_per_job_and_replayed_after_a_position() {
        let mut logs = EventLogs::default();
        assert_eq!(logs.record("a", "one", false), 1);
        assert_eq!(logs.record("b", "other", false), 1);
        assert_eq!(logs.record("a", "two", true), 2);
        let all: Vec<(u64, String, bool)> = logs
            .since("a", 0)
            .into_iter()
            .map(|e| (e.seq, e.message, e.routine))
            .collect();
        assert_eq!(all, [(1, "one".into(), false), (2, "two".into(), true)]);
        assert_eq!(logs.since("a", 1).len(), 1);
        assert!(logs.since("a", 2).is_empty());
        assert!(logs.since("nobody", 0).is_empty());
    }
}
