//! Durable coordinator state behind the [`StateStore`] trait: jobs and counters survive a
//! coordinator restart. [`EmbeddedStore`] (a redb file under `.kiln/`) is the default;
//! [`EtcdStore`] keeps the same records in etcd, shared by several coordinators, whose
//! writes are fenced by the leader's election key.

mod embedded;
mod etcd;

use std::path::PathBuf;

pub use self::embedded::EmbeddedStore;
pub use self::etcd::{EtcdStore, normalize_prefix};

/// Why the state store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Another process holds the database.
    #[error("the state at {0} is in use by another kiln process")]
    Locked(PathBuf),
    /// The database could not be opened or created.
    #[error("cannot open the state at {path}")]
    Open {
        /// Database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A read or write failed.
    #[error("state store I/O")]
    Io(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// etcd could not be reached or refused a request.
    #[error("etcd at {endpoints}")]
    Etcd {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A write of a coordinator that is no longer the leader: another one may be writing.
    #[error("this coordinator lost the leadership: its election key {0} is gone")]
    Fenced(String),
}

/// A transactional key-value store of the coordinator's durable records.
pub trait StateStore: Send + Sync {
    /// The value at `key`.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError>;
    /// Writes `value` at `key`, durably, before returning.
    fn put(&self, key: &str, value: &[u8]) -> Result<(), StateError>;
    /// Every key starting with `prefix`, in key order, with its value.
    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StateError>;
    /// One atomic transaction, as etcd's: if every `(key, value)` of `expect` holds (`None`:
    /// the key is absent), applies `writes` (`None` deletes the key) and returns `Ok(())`;
    /// otherwise writes nothing and returns the current value of the first key that differs.
    fn write_if(
        &self,
        expect: &[(&str, Option<&[u8]>)],
        writes: &[(&str, Option<&[u8]>)],
    ) -> Result<Result<(), Option<Vec<u8>>>, StateError>;
}
