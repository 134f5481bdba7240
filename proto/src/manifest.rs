//! The checkpoint manifest: written last into `jobs/<job>/checkpoints/<step>/manifest.json`,
//! it is the commit point of a checkpoint. It lists every object with its size and SHA-256, so a
//! reader can tell a complete checkpoint from a partial or corrupted one.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Name of the manifest object inside a checkpoint directory.
pub const MANIFEST_NAME: &str = "manifest.json";

/// One object of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    /// Object name relative to the checkpoint directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
}

impl ObjectEntry {
    /// Describes `bytes` stored as `name`.
    pub fn describe(name: &str, bytes: &[u8]) -> Self {
        Self {
            name: name.to_owned(),
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        }
    }

    /// Checks `bytes` against this entry.
    pub fn verify(&self, bytes: &[u8]) -> Result<(), ManifestError> {
        if bytes.len() as u64 != self.size {
            return Err(ManifestError::SizeMismatch {
                name: self.name.clone(),
                expected: self.size,
                actual: bytes.len() as u64,
            });
        }
        let actual = sha256_hex(bytes);
        if actual != self.sha256 {
            return Err(ManifestError::HashMismatch {
                name: self.name.clone(),
                expected: self.sha256.clone(),
                actual,
            });
        }
        Ok(())
    }
}

/// The manifest of one committed checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointManifest {
    /// Format version of this record.
    pub version: u32,
    /// Job id the checkpoint belongs to.
    pub job_id: String,
    /// Optimizer steps completed when the snapshot was taken.
    pub step: u64,
    /// Every object of the checkpoint except the manifest itself.
    pub objects: Vec<ObjectEntry>,
}

impl CheckpointManifest {
    /// Current format version.
    pub const VERSION: u32 = 1;

    /// The entry for `name`, if listed.
    pub fn entry(&self, name: &str) -> Option<&ObjectEntry> {
        self.objects.iter().find(|o| o.name == name)
    }
}

/// A checkpoint that does not match its manifest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The object's size differs from the manifest's.
    #[error("object {name}: size {actual} bytes, manifest says {expected}")]
    SizeMismatch {
        /// Object name.
        name: String,
        /// Size in the manifest.
        expected: u64,
        /// Size found.
        actual: u64,
    },
    /// The object's content hash differs from the manifest's.
    #[error("object {name}: sha256 {actual}, manifest says {expected}")]
    HashMismatch {
        /// Object name.
        name: String,
        /// Hash in the manifest.
        expected: String,
        /// Hash found.
        actual: String,
    },
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_detects_flipped_byte_and_truncation() {
        let data = b"parameters".to_vec();
        let entry = ObjectEntry::describe("model.bin", &data);
        assert!(entry.verify(&data).is_ok());
        let mut flipped = data.clone();
        flipped[3] ^= 1;
        assert!(matches!(
            entry.verify(&flipped),
            Err(ManifestError::HashMismatch { .. })
        ));
        assert!(matches!(
            entry.verify(&data[..5]),
            Err(ManifestError::SizeMismatch { .. })
        ));
    }
}
