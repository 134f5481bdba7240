//! The embedded default store: one redb database file in the state directory.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{StateError, StateStore};

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

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
    fn a_second_opener_is_refused_and_a_reopen_keeps_the_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            store.put("meta/n", b"3").expect("put");
            assert!(matches!(
                EmbeddedStore::open(dir.path()),
                Err(StateError::Locked(_))
            ));
        }
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        assert_eq!(store.get("meta/n").expect("get"), Some(b"3".to_vec()));
    }
}
