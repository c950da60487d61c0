//! The embedded store: one redb file on the controller's disk.
//!
//! Tables: `history` (revision -> JSON record) and `readiness` (node -> JSON
//! list of VIPs). The current topology is the last history entry. redb's write
//! transactions are serialised, so reading the last revision and inserting the
//! next one in one transaction is the compare-and-swap. Watchers are fed from
//! a broadcast channel after each commit; only this process writes the file.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

use super::{
    Change, Readiness, Record, Store, StoreError, StoreEvent, WatchStream, decode, encode,
};

const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
const READINESS: TableDefinition<&str, &[u8]> = TableDefinition::new("readiness");

/// A redb-backed store.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    events_tx: broadcast::Sender<StoreEvent>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir` (file `topology.redb`).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join("topology.redb");
        let db = Database::create(&path)
            .map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(backend)?;
        {
            txn.open_table(HISTORY).map_err(backend)?;
            txn.open_table(READINESS).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        let (events_tx, _) = broadcast::channel(1024);
        Ok(EmbeddedStore {
            db: Arc::new(db),
            events_tx,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Backend(format!("store task: {e}")))?
    }
}

fn last_record(db: &Database) -> Result<Record, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let table = txn.open_table(HISTORY).map_err(backend)?;
    match table.last().map_err(backend)? {
        Some((k, v)) => decode(&format!("history/{}", k.value()), v.value()),
        None => Ok(Record::empty()),
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn current(&self) -> Result<Record, StoreError> {
        self.blocking(last_record).await
    }

    async fn commit_all(
        &self,
        expected: u64,
        changes: Vec<Change>,
    ) -> Result<Vec<Record>, StoreError> {
        let records = self
            .blocking(move |db| {
                let txn = db.begin_write().map_err(backend)?;
                let records = {
                    let mut table = txn.open_table(HISTORY).map_err(backend)?;
                    let actual = table.last().map_err(backend)?.map_or(0, |(k, _)| k.value());
                    if actual != expected {
                        return Err(StoreError::Conflict { expected, actual });
                    }
                    let mut records = Vec::with_capacity(changes.len());
                    for (revision, change) in (actual + 1..).zip(changes) {
                        let record = change.into_record(revision);
                        table
                            .insert(record.revision, encode(&record)?.as_slice())
                            .map_err(backend)?;
                        records.push(record);
                    }
                    records
                };
                txn.commit().map_err(backend)?;
                Ok(records)
            })
            .await?;
        if let Some(last) = records.last() {
            let _ = self.events_tx.send(StoreEvent::Topology(last.clone()));
        }
        Ok(records)
    }

    async fn history(&self, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(HISTORY).map_err(backend)?;
            let mut out = Vec::new();
            for entry in table.range::<u64>(..).map_err(backend)?.rev().take(limit) {
                let (k, v) = entry.map_err(backend)?;
                out.push(decode(&format!("history/{}", k.value()), v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn at(&self, revision: u64) -> Result<Option<Record>, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(HISTORY).map_err(backend)?;
            match table.get(revision).map_err(backend)? {
                Some(v) => decode(&format!("history/{revision}"), v.value()).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    async fn set_readiness(&self, node: &str, vips: BTreeSet<String>) -> Result<(), StoreError> {
        let node = node.to_string();
        let event = StoreEvent::Readiness {
            node: node.clone(),
            vips: vips.clone(),
        };
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut table = txn.open_table(READINESS).map_err(backend)?;
                table
                    .insert(node.as_str(), encode(&vips)?.as_slice())
                    .map_err(backend)?;
            }
            txn.commit().map_err(backend)
        })
        .await?;
        let _ = self.events_tx.send(event);
        Ok(())
    }

    async fn readiness(&self) -> Result<Readiness, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(READINESS).map_err(backend)?;
            let mut out = Readiness::new();
            for entry in table.range::<&str>(..).map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                let node = k.value().to_string();
                let vips = decode(&format!("readiness/{node}"), v.value())?;
                out.insert(node, vips);
            }
            Ok(out)
        })
        .await
    }

    async fn watch(&self) -> Result<WatchStream, StoreError> {
        let stream = BroadcastStream::new(self.events_tx.subscribe())
            .map(|item| item.map_err(|e| StoreError::Backend(format!("watcher fell behind: {e}"))));
        Ok(stream.boxed())
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }
}
