//! What the dataset versions and the registry both do with the object store: create a record
//! only if it is absent (the commit point of every version and alias move), list numbered
//! records (`N.json`) and the names below a prefix, and tell the time.

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

/// Writes `payload` at `at` unless something is there; whether it was written.
pub(crate) async fn create(
    store: &dyn ObjectStore,
    at: &Path,
    payload: PutPayload,
) -> Result<bool, object_store::Error> {
    let options = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    match store.put_opts(at, payload, options).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The numbers N of the `N.json` objects below `prefix`, ascending: one listing.
pub(crate) async fn numbered(
    store: &dyn ObjectStore,
    prefix: &Path,
) -> Result<Vec<u64>, object_store::Error> {
    let mut out: Vec<u64> = store
        .list(Some(prefix))
        .try_filter_map(|meta| async move {
            Ok(meta
                .location
                .filename()
                .and_then(|f| f.strip_suffix(".json"))
                .and_then(|n| n.parse::<u64>().ok()))
        })
        .try_collect()
        .await?;
    out.sort_unstable();
    Ok(out)
}

/// The names of the folders directly below `prefix`, sorted.
pub(crate) async fn children(
    store: &dyn ObjectStore,
    prefix: &Path,
) -> Result<Vec<String>, object_store::Error> {
    let listing = store.list_with_delimiter(Some(prefix)).await?;
    let mut names: Vec<String> = listing
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
