//! Where the topology lives: one trait, two backends.
//!
//! - [`embedded::EmbeddedStore`]: a redb file, for a controller on one node
//!   with no etcd at all;
//! - [`etcd::EtcdStore`]: etcd, for production and several replicas.
//!
//! Both keep every revision of the topology with its author, time and message
//! (the history), give revisions that grow by one with every commit, refuse a
//! commit whose expected revision is not the current one (compare-and-swap),
//! and stream changes to watchers. They also keep the readiness that real
//! servers reported (which VIPs each has ready), so that a restarted
//! controller, or another replica, plans with what the agents last said.

pub mod embedded;
pub mod etcd;

use std::collections::{BTreeMap, BTreeSet};

use futures::stream::BoxStream;
use lb_proto::v1::{NodeStatus, Topology};
use serde::{Deserialize, Serialize};

/// One stored revision of the topology.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Record {
    /// Revision number: 1 for the first commit, one more for each after it.
    /// 0 is the empty topology before any commit.
    pub revision: u64,
    /// Who made the change.
    pub author: String,
    /// When, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Change message.
    pub message: String,
    /// The whole topology at this revision.
    pub topology: Topology,
}

impl Record {
    /// The record that stands for "nothing stored yet".
    pub fn empty() -> Self {
        Record {
            revision: 0,
            author: String::new(),
            time_ms: 0,
            message: String::new(),
            topology: Topology::default(),
        }
    }
}

/// A change to commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Who makes it.
    pub author: String,
    /// When, in milliseconds since the Unix epoch (the caller's clock).
    pub time_ms: u64,
    /// Change message.
    pub message: String,
    /// The whole new topology.
    pub topology: Topology,
}

impl Change {
    /// The record this change becomes at `revision`.
    pub fn into_record(self, revision: u64) -> Record {
        Record {
            revision,
            author: self.author,
            time_ms: self.time_ms,
            message: self.message,
            topology: self.topology,
        }
    }
}

/// VIPs each real-server node has reported ready, by node name.
pub type Readiness = BTreeMap<String, BTreeSet<String>>;

/// Something that changed in the store.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreEvent {
    /// A new topology revision was committed.
    Topology(Record),
    /// A new leader term began (etcd only).
    Epoch(u64),
    /// A real server's ready VIPs changed.
    Readiness {
        /// Node name.
        node: String,
        /// VIPs ready now.
        vips: BTreeSet<String>,
    },
}

/// A store operation that failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// The current revision is not the one the change was based on.
    #[error(
        "revision conflict: the change expects revision {expected} but the store is at {actual}; read again and retry"
    )]
    Conflict {
        /// Revision the caller expected.
        expected: u64,
        /// Revision the store holds.
        actual: u64,
    },
    /// The backend cannot be reached now.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data does not decode.
    #[error("stored data at {key} is corrupt: {reason}")]
    Corrupt {
        /// Key or table entry.
        key: String,
        /// Decoder's complaint.
        reason: String,
    },
    /// Any other backend failure.
    #[error("store backend: {0}")]
    Backend(String),
}

/// Stream of store changes.
pub type WatchStream = BoxStream<'static, Result<StoreEvent, StoreError>>;

/// The topology store.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The current revision (the empty record at revision 0 before any commit).
    async fn current(&self) -> Result<Record, StoreError>;

    /// Commits `changes` as revisions `expected + 1`, `expected + 2`, ... in
    /// one write, only if the store is at `expected` now: all of them or none.
    async fn commit_all(
        &self,
        expected: u64,
        changes: Vec<Change>,
    ) -> Result<Vec<Record>, StoreError>;

    /// Commits `change` as revision `expected + 1`, only if the store is at
    /// `expected` now.
    async fn commit(&self, expected: u64, change: Change) -> Result<Record, StoreError> {
        self.commit_all(expected, vec![change])
            .await?
            .pop()
            .ok_or_else(|| StoreError::Backend("a commit wrote no record".to_string()))
    }

    /// About how many bytes of records one [`Store::commit_all`] may take.
    fn max_commit_bytes(&self) -> usize {
        usize::MAX
    }

    /// The last `limit` revisions, newest first.
    async fn history(&self, limit: usize) -> Result<Vec<Record>, StoreError>;

    /// One revision, if it exists.
    async fn at(&self, revision: u64) -> Result<Option<Record>, StoreError>;

    /// Records the VIPs `node` has ready.
    async fn set_readiness(&self, node: &str, vips: BTreeSet<String>) -> Result<(), StoreError>;

    /// Every node's ready VIPs.
    async fn readiness(&self) -> Result<Readiness, StoreError>;

    /// Changes made after this call. A watcher that also reads
    /// [`Store::current`] should start the watch first and ignore records at
    /// or below the revision it read.
    async fn watch(&self) -> Result<WatchStream, StoreError>;

    /// Short name of the backend for logs ("embedded", "etcd").
    fn kind(&self) -> &'static str;

    /// Shares the status of `node` as replica `replica` sees it (`None`
    /// withdraws it), so that every replica can answer for every agent.
    /// With etcd the key lives under a lease of this replica and vanishes
    /// when the replica dies. A store with a single replica keeps nothing.
    async fn publish_status(
        &self,
        _replica: &str,
        _node: &str,
        _status: Option<&NodeStatus>,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Shares the status of several nodes at once (see
    /// [`Store::publish_status`]).
    async fn publish_statuses(
        &self,
        replica: &str,
        statuses: &[NodeStatus],
    ) -> Result<(), StoreError> {
        for status in statuses {
            self.publish_status(replica, &status.node, Some(status))
                .await?;
        }
        Ok(())
    }

    /// Every status shared by any replica.
    async fn shared_status(&self) -> Result<Vec<NodeStatus>, StoreError> {
        Ok(Vec::new())
    }

    /// The current leader term; 0 when no leader was ever elected (or the
    /// store has no election: a single replica).
    async fn epoch(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// Waits until this replica leads, then opens a new term and returns its
    /// epoch. `None`: the store has no election (a single replica always
    /// leads, with the configured epoch).
    async fn campaign(&self, _replica: &str) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    /// Resolves when the leadership won by [`Store::campaign`] is lost.
    async fn leadership_lost(&self) {
        std::future::pending::<()>().await
    }

    /// Gives up the leadership, if held.
    async fn resign(&self) {}
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Backend(format!("encoding: {e}")))
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}
