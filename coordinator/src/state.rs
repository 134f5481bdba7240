//! Durable coordinator state behind the [`StateStore`] trait: jobs and counters survive a
//! coordinator restart. [`EmbeddedStore`] (a redb file under `.kiln/`) is the default; a
//! shared backend for several coordinators implements the same trait.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

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

/// The embedded default: one redb database file, `<dir>/state.redb`.
pub struct EmbeddedStore {
    db: Database,
}

fn io(e: impl std::error::Error + Send + Sync + 'static) -> StateError {
    StateError::Io(Box::new(e))
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in directory `dir`.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join("state.redb");
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StateError::Open {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(Box::new(e)))?;
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StateError::Locked(path.clone()),
            e => open_err(Box::new(e)),
        })?;
        let tx = db.begin_write().map_err(io)?;
        tx.open_table(TABLE).map_err(io)?;
        tx.commit().map_err(io)?;
        Ok(Self { db })
    }
}

impl StateStore for EmbeddedStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let tx = self.db.begin_read().map_err(io)?;
        let table = tx.open_table(TABLE).map_err(io)?;
        Ok(table.get(key).map_err(io)?.map(|v| v.value().to_vec()))
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StateError> {
        let tx = self.db.begin_write().map_err(io)?;
        tx.open_table(TABLE)
            .map_err(io)?
            .insert(key, value)
            .map_err(io)?;
        tx.commit().map_err(io)
    }

    fn write_if(
        &self,
        expect: &[(&str, Option<&[u8]>)],
        writes: &[(&str, Option<&[u8]>)],
    ) -> Result<Result<(), Option<Vec<u8>>>, StateError> {
        let tx = self.db.begin_write().map_err(io)?;
        {
            let mut table = tx.open_table(TABLE).map_err(io)?;
            for (key, want) in expect {
                let have = table.get(*key).map_err(io)?.map(|v| v.value().to_vec());
                if have.as_deref() != *want {
                    return Ok(Err(have));
                }
            }
            for (key, value) in writes {
                match value {
                    Some(value) => table.insert(*key, *value).map(drop),
                    None => table.remove(*key).map(drop),
                }
                .map_err(io)?;
            }
        }
        tx.commit().map_err(io)?;
        Ok(Ok(()))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let tx = self.db.begin_read().map_err(io)?;
        let table = tx.open_table(TABLE).map_err(io)?;
        let mut out = Vec::new();
        for entry in table.range(prefix..).map_err(io)? {
            let (k, v) = entry.map_err(io)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_lists_by_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            store.put("jobs/a", b"1").expect("put");
            store.put("jobs/b", b"2").expect("put");
            store.put("meta/n", b"3").expect("put");
            assert!(matches!(
                EmbeddedStore::open(dir.path()),
                Err(StateError::Locked(_))
            ));
        }
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        assert_eq!(store.get("meta/n").expect("get"), Some(b"3".to_vec()));
        assert_eq!(store.get("missing").expect("get"), None);
        assert_eq!(
            store
                .write_if(&[("meta/n", Some(b"4"))], &[("meta/n", None)])
                .expect("txn"),
            Err(Some(b"3".to_vec())),
            "a failed comparison writes nothing"
        );
        assert_eq!(
            store
                .write_if(
                    &[("meta/n", Some(b"3")), ("x", None)],
                    &[("meta/n", None), ("x", Some(b"1"))]
                )
                .expect("txn"),
            Ok(())
        );
        assert_eq!(store.get("meta/n").expect("get"), None);
        assert_eq!(store.get("x").expect("get"), Some(b"1".to_vec()));
        let jobs = store.list("jobs/").expect("list");
        assert_eq!(
            jobs,
            vec![
                ("jobs/a".into(), b"1".to_vec()),
                ("jobs/b".into(), b"2".to_vec())
            ]
        );
    }
}
