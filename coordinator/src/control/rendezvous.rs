//! The NCCL rendezvous: rank 0 of a generation publishes the unique id of the communicator
//! it creates, and the other ranks fetch it. The id lives with the generation (a new one
//! starts without), so a rank of an older generation can neither publish nor read one.

use kiln_proto::v1::{GetCollectiveIdRequest, PublishCollectiveIdRequest};

use super::Control;
use super::error::ControlError;
use super::table::State;

/// `ncclUniqueId` is 128 bytes (NCCL_UNIQUE_ID_BYTES).
pub const COLLECTIVE_ID_BYTES: usize = 128;

impl Control {
    /// Records the unique id rank 0 created for its generation's communicator.
    pub fn publish_collective_id(
        &self,
        req: PublishCollectiveIdRequest,
    ) -> Result<(), ControlError> {
        if req.id.len() != COLLECTIVE_ID_BYTES {
            return Err(ControlError::Invalid(format!(
                "a collective id has {COLLECTIVE_ID_BYTES} bytes, not {}",
                req.id.len()
            )));
        }
        let mut state = self.lock();
        let rank = rank_of(&mut state, &req.worker_id, &req.job_id, req.generation)?;
        if rank != 0 {
            return Err(ControlError::NotAllowed(format!(
                "worker {} is rank {rank} of generation {} of job {}; only rank 0 publishes the collective id",
                req.worker_id, req.generation, req.job_id
            )));
        }
        let generation = state.generations.entry(req.job_id).or_default();
        match &generation.collective_id {
            Some(id) if *id != req.id => Err(ControlError::NotAllowed(
                "this generation's collective id was already published, and differs".into(),
            )),
            _ => {
                generation.collective_id = Some(req.id);
                Ok(())
            }
        }
    }

    /// The unique id of the generation's communicator; empty while rank 0 has not published it.
    pub fn collective_id(&self, req: &GetCollectiveIdRequest) -> Result<Vec<u8>, ControlError> {
        let mut state = self.lock();
        rank_of(&mut state, &req.worker_id, &req.job_id, req.generation)?;
        Ok(state
            .generations
            .get(&req.job_id)
            .and_then(|g| g.collective_id.clone())
            .unwrap_or_default())
    }
}

/// The rank `worker_id` holds in generation `generation` of running job `job_id`, or why it
/// holds none: the generation is not the job's current one, or the worker is not in it.
fn rank_of(
    state: &mut State,
    worker_id: &str,
    job_id: &str,
    generation: u64,
) -> Result<usize, ControlError> {
    let Some(job) = state.current_job(job_id, generation)? else {
        let job = state.cloned_job(job_id)?;
        return Err(ControlError::Stale(format!(
            "generation {generation} of job {job_id} is not running (the job is {} in generation {})",
            job.state().as_str_name().to_lowercase(),
            job.generation
        )));
    };
    job.workers
        .iter()
        .position(|w| w == worker_id)
        .ok_or_else(|| {
            ControlError::NotAllowed(format!(
                "worker {worker_id} is not a rank of generation {generation} of job {job_id}"
            ))
        })
}
