//! Each job's worker log: the lines every rank of every generation sent, numbered from 1 in
//! the order they arrived, each tagged with its rank, generation and node. What `kiln logs`
//! replays and follows. In memory only, like the event logs; a job keeps its newest lines,
//! and only the newest jobs keep theirs ([`Recent`]).

use std::collections::VecDeque;

use kiln_proto::v1::{LogBatch, LogLine};
use tokio::sync::broadcast;

use super::Control;
use super::error::ControlError;
use super::recent::Recent;

/// Lines kept per job; older ones are dropped (a reader then starts later).
const LINES_PER_JOB: usize = 20_000;

#[derive(Default)]
struct JobLog {
    last_seq: u64,
    lines: VecDeque<LogLine>,
}

/// The worker logs of every job.
#[derive(Default)]
pub(super) struct WorkerLogs {
    jobs: Recent<JobLog>,
}

impl WorkerLogs {
    /// Appends `lines` of `job`, written by `rank` of `generation` on `node`.
    pub(super) fn append(
        &mut self,
        job: &str,
        (rank, generation, node): (u32, u64, &str),
        lines: Vec<LogLine>,
    ) {
        let log = self.jobs.entry(job);
        for mut line in lines {
            log.last_seq += 1;
            line.seq = log.last_seq;
            line.rank = rank;
            line.generation = generation;
            line.node = node.to_owned();
            if log.lines.len() == LINES_PER_JOB {
                log.lines.pop_front();
            }
            log.lines.push_back(line);
        }
    }

    /// The lines of `job` after line `seq` (of `rank` only, if given).
    pub(super) fn since(&self, job: &str, seq: u64, rank: Option<u32>) -> Vec<LogLine> {
        self.jobs.get(job).map_or_else(Vec::new, |log| {
            log.lines
                .iter()
                .filter(|l| l.seq > seq && rank.is_none_or(|r| l.rank == r))
                .cloned()
                .collect()
        })
    }
}

impl Control {
    /// Keeps the lines a worker's task logged, and wakes the readers that follow its job.
    pub fn report_logs(&self, batch: LogBatch) -> Result<(), ControlError> {
        let mut state = self.lock();
        let node = state
            .workers
            .get(&batch.worker_id)
            .ok_or_else(|| ControlError::UnknownWorker(batch.worker_id.clone()))?
            .node_name
            .clone();
        if !state.jobs.contains_key(&batch.job_id) {
            return Err(state.unknown_job(&batch.job_id));
        }
        let tag = (batch.rank, batch.generation, node.as_str());
        state.worker_logs.append(&batch.job_id, tag, batch.lines);
        // Nobody following is fine.
        let _ = self.inner.log_feed.send(batch.job_id);
        Ok(())
    }

    /// The lines of job `id` after line `seq` (of `rank` only, if given), and whether the
    /// job has ended.
    pub fn logs_since(
        &self,
        id: &str,
        seq: u64,
        rank: Option<u32>,
    ) -> Result<(Vec<LogLine>, bool), ControlError> {
        let state = self.lock();
        let job = state.cloned_job(id)?;
        Ok((
            state.worker_logs.since(id, seq, rank),
            job.state().is_terminal(),
        ))
    }

    /// The ids of jobs that got new lines, from now on (subscribe before reading, so none is
    /// missed).
    pub fn log_feed(&self) -> broadcast::Receiver<String> {
        self.inner.log_feed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> LogLine {
        LogLine {
            text: text.into(),
            ..LogLine::default()
        }
    }

    #[test]
    fn lines_are_numbered_per_job_tagged_and_filtered_by_rank() {
        let mut logs = WorkerLogs::default();
        logs.append("a", (0, 1, "cpu-0"), vec![line("one"), line("two")]);
        logs.append("b", (0, 1, "cpu-0"), vec![line("other")]);
        logs.append("a", (1, 2, "cpu-1"), vec![line("three")]);
        let all = logs.since("a", 0, None);
        let seqs: Vec<u64> = all.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(
            (all[2].rank, all[2].generation, all[2].node.as_str()),
            (1, 2, "cpu-1")
        );
        assert_eq!(logs.since("a", 2, None).len(), 1);
        let rank1: Vec<String> = logs
            .since("a", 0, Some(1))
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert_eq!(rank1, ["three"]);
        assert!(logs.since("nope", 0, None).is_empty());
    }
}
