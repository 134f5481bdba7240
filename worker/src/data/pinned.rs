//! Dataset version files (`kiln://`) a job reads: each pin of the spec is fetched from its
//! store into this machine's data cache, verified against its hash, and the source's paths
//! that named the submitting machine's copy are pointed at this one.

use kiln_proto::v1::{DatasetSpec, StorageOptions, dataset_spec::Source};
use std::path::Path;

use kiln_versions::data::{DataStore, FileEntry};

/// Fetches every pinned file of `dataset` into the data cache `cache` (the worker's is
/// [`kiln_versions::data::cache_dir`]) and rewrites its source to read the local copies. The
/// pins live in the job's store, opened with its `options`.
pub async fn fetch(
    dataset: &mut DatasetSpec,
    options: &StorageOptions,
    cache: &Path,
) -> Result<(), kiln_versions::data::DataError> {
    for pin in &dataset.pins {
        let store = DataStore::open(&pin.storage_url, options)?;
        let file = FileEntry {
            path: pin.path.clone(),
            size: pin.size,
            sha256: pin.sha256.clone(),
        };
        let local = store.cached(&file, cache).await?.display().to_string();
        tracing::info!(dataset = %pin.name, version = pin.version, file = %pin.path, %local, "dataset version file ready");
        let point = |path: &mut String| {
            if *path == pin.local_path {
                path.clone_from(&local);
            }
        };
        match dataset.source.as_mut() {
            Some(Source::Csv(csv)) => point(&mut csv.path),
            Some(Source::Idx(idx)) => {
                point(&mut idx.images);
                point(&mut idx.labels);
            }
            Some(Source::Npy(npy)) => {
                point(&mut npy.x);
                point(&mut npy.y);
            }
            Some(Source::Blobs(_)) | None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_proto::v1::{CsvSource, DataPin};

    #[tokio::test]
    async fn a_pinned_file_is_fetched_verified_and_read_from_the_local_copy() {
        let root = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}/store", root.path().display());
        let csv = root.path().join("t.csv");
        std::fs::write(&csv, "a,label\n1,0\n2,1\n").expect("csv");
        let store = DataStore::open(&url, &StorageOptions::default()).expect("store");
        let pushed = store.push(&csv, "t", None).await.expect("push");
        let file = pushed.version.files[0].clone();
        let elsewhere = "/submitting/machine/cache/t.csv".to_owned();
        let mut dataset = DatasetSpec {
            source: Some(Source::Csv(CsvSource {
                path: elsewhere.clone(),
                label: "label".into(),
            })),
            pins: vec![DataPin {
                storage_url: url,
                name: "t".into(),
                version: 1,
                content_hash: pushed.version.content_hash.clone(),
                path: file.path.clone(),
                size: file.size,
                sha256: file.sha256.clone(),
                local_path: elsewhere,
            }],
            ..DatasetSpec::default()
        };
        let cache = root.path().join("cache");
        fetch(&mut dataset, &StorageOptions::default(), &cache)
            .await
            .expect("fetched");
        let Some(Source::Csv(csv_source)) = &dataset.source else {
            panic!("a CSV source");
        };
        assert!(
            csv_source.path.starts_with(&cache.display().to_string()),
            "{}",
            csv_source.path
        );
        assert_eq!(
            std::fs::read_to_string(&csv_source.path).expect("copy"),
            "a,label\n1,0\n2,1\n"
        );

        // Bytes in the store that do not match the pin are refused, and nothing is cached.
        let object = root
            .path()
            .join("store/data/objects")
            .join(&file.sha256[..2])
            .join(&file.sha256);
        std::fs::write(&object, "a,label\n9,0\n2,1\n").expect("damage");
        let fresh = root.path().join("cache2");
        let err = fetch(&mut dataset, &StorageOptions::default(), &fresh)
            .await
            .expect_err("does not verify");
        assert!(
            err.to_string().contains("holds bytes whose SHA-256"),
            "{err}"
        );
        assert!(!fresh.exists() || std::fs::read_dir(&fresh).expect("dir").next().is_none());
    }
}
