//! What the coordinator keeps in memory per job for people to read (curves, worker logs),
//! bounded: the values of the [`KEPT_JOBS`] jobs seen most recently first; a newer job's
//! arrival drops the oldest one's.

use std::collections::{BTreeMap, VecDeque};

/// Jobs whose values are kept.
pub(super) const KEPT_JOBS: usize = 100;

/// A value per job, for the [`KEPT_JOBS`] newest jobs.
pub(super) struct Recent<T> {
    values: BTreeMap<String, T>,
    /// Job ids, first seen first.
    order: VecDeque<String>,
}

impl<T> Default for Recent<T> {
    fn default() -> Self {
        Self {
            values: BTreeMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<T: Default> Recent<T> {
    /// Job `job`'s value, made (and the oldest job's dropped past [`KEPT_JOBS`]) if new.
    pub(super) fn entry(&mut self, job: &str) -> &mut T {
        if !self.values.contains_key(job) {
            if self.order.len() == KEPT_JOBS
                && let Some(oldest) = self.order.pop_front()
            {
                self.values.remove(&oldest);
            }
            self.order.push_back(job.to_owned());
        }
        self.values.entry(job.to_owned()).or_default()
    }

    pub(super) fn get(&self, job: &str) -> Option<&T> {
        self.values.get(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_job_goes_when_one_too_many_arrives() {
        let mut recent = Recent::<u32>::default();
        for i in 0..KEPT_JOBS {
            *recent.entry(&format!("j-{i}")) += 1;
        }
        // Seen again: not new, nothing dropped.
        *recent.entry("j-0") += 1;
        assert_eq!(recent.get("j-0"), Some(&2));
        recent.entry("new");
        assert_eq!(recent.get("j-0"), None);
        assert_eq!(recent.get("j-1"), Some(&1));
        assert_eq!(recent.get("new"), Some(&0));
    }
}
