//! The control plane's side of the object store: this state's identity there, claiming job
//! ids under it, and checking checkpoints a request names. The layout itself is
//! [`kiln_proto::store`]'s.

use kiln_proto::store::{Claim, JobStore};
use kiln_proto::v1::JobSpec;

use super::error::ControlError;
use crate::state::StateStore;

const STORE_OWNER_KEY: &str = "meta/store_owner";

fn storage_error(id: &str) -> impl Fn(kiln_proto::store::StoreError) -> ControlError + '_ {
    move |source| ControlError::Storage {
        job: id.to_owned(),
        source,
    }
}

/// The directory of job `id` in the store its `spec` names.
fn open(spec: &JobSpec, id: &str) -> Result<JobStore, ControlError> {
    let options = spec.storage_options.clone().unwrap_or_default();
    JobStore::open(&spec.storage_url, &options, id).map_err(storage_error(id))
}

/// The identity of this coordinator state in object stores, created on first use.
pub(super) fn store_owner(store: &dyn StateStore) -> Result<String, ControlError> {
    let fresh = {
        use rand::Rng;
        hex::encode(rand::rng().random::<[u8; 16]>())
    };
    // Created once; a concurrent first start keeps whichever won.
    match store.write_if(
        &[(STORE_OWNER_KEY, None)],
        &[(STORE_OWNER_KEY, Some(fresh.as_bytes()))],
    )? {
        Ok(()) => Ok(fresh),
        Err(existing) => Ok(String::from_utf8_lossy(&existing.unwrap_or_default()).into_owned()),
    }
}

/// Refuses `step` unless it is a committed checkpoint of job `id` whose objects verify.
pub(super) async fn verify_checkpoint(
    spec: &JobSpec,
    id: &str,
    step: u64,
) -> Result<(), ControlError> {
    if spec.storage_url.is_empty() {
        return Err(ControlError::Invalid(format!(
            "job {id} keeps no checkpoints (its cluster has no storage)"
        )));
    }
    let storage = storage_error(id);
    let store = open(spec, id)?;
    let committed = store.committed().await.map_err(&storage)?;
    let list = |steps: &[u64]| match steps {
        [] => "it has no committed checkpoint".to_owned(),
        steps => format!(
            "committed checkpoints: {}",
            steps
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    if !committed.contains(&step) {
        return Err(ControlError::Invalid(format!(
            "job {id} has no committed checkpoint {step}; {}",
            list(&committed)
        )));
    }
    match store.load(step).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_unusable_checkpoint() => {
            let usable: Vec<u64> = committed.into_iter().filter(|s| *s != step).collect();
            Err(ControlError::Invalid(format!(
                "checkpoint {step} of job {id} does not verify ({}); other {}",
                kiln_proto::error_chain(&e),
                list(&usable)
            )))
        }
        Err(e) => Err(storage(e)),
    }
}

/// Claims job id `id` in the store its `spec` names for `owner`; whether it is ours.
pub(super) async fn claim(spec: &JobSpec, id: &str, owner: &str) -> Result<bool, ControlError> {
    let store = open(spec, id)?;
    match store.claim(owner).await.map_err(storage_error(id))? {
        Claim::Ours => Ok(true),
        Claim::Taken(why) => {
            tracing::info!(job = %id, %why, "job id taken in the store; trying the next");
            Ok(false)
        }
    }
}

/// The newest checkpoint of job `id` committed in the store its `spec` names.
pub(super) async fn newest_committed(
    spec: &JobSpec,
    id: &str,
) -> Result<Option<u64>, ControlError> {
    let store = open(spec, id)?;
    let committed = store.committed().await.map_err(storage_error(id))?;
    Ok(committed.last().copied())
}
