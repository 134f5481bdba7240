//! The suite's one-node Slurm cluster (scripts/slurm.sh, started by scripts/test and named by
//! `SLURM_CONF`). It has two CPUs and two GPUs: two tests whose jobs interleaved in its queue
//! could each get one node and wait forever for the second, so tests take [`Slurm::lock`].

use std::sync::{Mutex, MutexGuard};

/// The Slurm cluster, held by one test at a time.
pub struct Slurm {
    _held: MutexGuard<'static, ()>,
}

static HELD: Mutex<()> = Mutex::new(());

impl Slurm {
    /// Takes the cluster for this test (waiting for another test that holds it).
    pub fn lock() -> Slurm {
        assert!(
            std::env::var_os("SLURM_CONF").is_some(),
            "SLURM_CONF is not set: run the suite with ./scripts/test, which starts Slurm"
        );
        Slurm {
            _held: HELD
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        }
    }
}
