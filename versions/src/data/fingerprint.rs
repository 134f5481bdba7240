//! The lineage of data that is not a version: the files a `file://` source reads, hashed when
//! the job is submitted, so a model's record names exactly the bytes it was trained from.

use std::path::{Path, PathBuf};

use kiln_proto::v1::{DatasetSpec, FileFingerprint, dataset_spec::Source};
use sha2::{Digest, Sha256};

use super::DataError;

/// Bytes per read while hashing.
pub(crate) const CHUNK: usize = 8 << 20;

/// The size and SHA-256 (hex) of the file at `path`, read in [`CHUNK`]s.
pub fn hash_path(path: &Path) -> Result<(u64, String), DataError> {
    use std::io::Read;
    let io = |source| DataError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// Records the size and hash of every file the source of `dataset` reads that is not a
/// pinned version file.
pub fn fingerprint(dataset: &mut DatasetSpec) -> Result<(), DataError> {
    let paths: Vec<&String> = match &dataset.source {
        Some(Source::Csv(csv)) => vec![&csv.path],
        Some(Source::Idx(idx)) => vec![&idx.images, &idx.labels],
        Some(Source::Npy(npy)) => vec![&npy.x, &npy.y],
        Some(Source::Blobs(_)) | None => Vec::new(),
    };
    let mut fingerprints = Vec::new();
    for path in paths {
        if dataset.pins.iter().any(|pin| pin.local_path == *path) {
            continue;
        }
        let (size, sha256) = hash_path(&PathBuf::from(path))?;
        fingerprints.push(FileFingerprint {
            path: path.clone(),
            size,
            sha256,
        });
    }
    dataset.fingerprints = fingerprints;
    Ok(())
}
