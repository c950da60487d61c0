//! The etcd store.
//!
//! Keys under a configurable prefix (`/lb` by default):
//!
//! ```text
//! {prefix}/topology             current record (JSON)
//! {prefix}/history/{revision}   every record, revision zero-padded to 20 digits
//! {prefix}/readiness/{node}     JSON list of the node's ready VIPs
//! {prefix}/status/{node}/{replica}  a node's status as one replica sees it,
//!                               under that replica's lease (TTL 10 s)
//! {prefix}/leader               etcd election of the leader replica
//! {prefix}/epoch                the current leader term, bumped by each new leader
//! ```
//!
//! A commit is one transaction, of one or several revisions: if the store is
//! at the expected revision (its history entry exists, none after it does),
//! put each new record under `history/` and the last one at `topology`.
//! History entries are never deleted, so the two compares are the
//! compare-and-swap.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, SortOrder, SortTarget, Txn,
    TxnOp, WatchOptions,
};
use futures::StreamExt;
use lb_proto::v1::NodeStatus;

use super::{
    Change, Readiness, Record, Store, StoreError, StoreEvent, WatchStream, decode, encode,
};

/// Time to live of a replica's lease on its status keys.
const STATUS_LEASE_TTL: i64 = 10;

/// Status puts in one transaction.
const STATUS_TXN_OPS: usize = 64;

/// An etcd-backed store.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
    /// This replica's lease for status keys, granted on first use and kept
    /// alive while the store lives.
    lease: Arc<tokio::sync::Mutex<Option<i64>>>,
    /// The election key while this replica leads.
    leadership: Arc<tokio::sync::Mutex<Option<(i64, etcd_client::LeaderKey)>>>,
}

fn map_err(e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(status)
            if matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ) || (status.code() == tonic::Code::Unknown
                && status.message().contains("transport error")) =>
        {
            StoreError::Unavailable(status.message().to_string())
        }
        E::TransportError(e) => StoreError::Unavailable(e.to_string()),
        E::IoError(e) => StoreError::Unavailable(e.to_string()),
        other => StoreError::Backend(other.to_string()),
    }
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` ("http://127.0.0.1:2379"); every key
    /// lives under `prefix`. Requests time out after `timeout`, so a stopped
    /// etcd makes calls fail quickly with [`StoreError::Unavailable`].
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_keep_alive(Duration::from_secs(2), timeout);
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(map_err)?;
        Ok(EtcdStore {
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
            lease: Arc::new(tokio::sync::Mutex::new(None)),
            leadership: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    /// This replica's lease, granted (and kept alive) on first use.
    async fn lease(&self) -> Result<i64, StoreError> {
        let mut lease = self.lease.lock().await;
        if let Some(id) = *lease {
            return Ok(id);
        }
        let mut client = self.client.clone();
        let id = client
            .lease_grant(STATUS_LEASE_TTL, None)
            .await
            .map_err(map_err)?
            .id();
        let (keeper, responses) = client.lease_keep_alive(id).await.map_err(map_err)?;
        *lease = Some(id);
        tokio::spawn(keep_lease_alive(
            Arc::downgrade(&self.lease),
            id,
            keeper,
            responses,
        ));
        Ok(id)
    }

    /// The etcd client, for other users of the same connection (status
    /// leases, leader election).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn topology_key(&self) -> String {
        format!("{}/topology", self.prefix)
    }

    fn history_key(&self, revision: u64) -> String {
        format!("{}/history/{revision:020}", self.prefix)
    }

    fn epoch_key(&self) -> String {
        format!("{}/epoch", self.prefix)
    }

    fn readiness_prefix(&self) -> String {
        format!("{}/readiness/", self.prefix)
    }

    /// The value at `key`, decoded; `None` when the key is absent.
    async fn get_one<T: for<'de> serde::Deserialize<'de>>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let resp = self
            .client
            .kv_client()
            .get(key, None)
            .await
            .map_err(map_err)?;
        resp.kvs()
            .first()
            .map(|kv| decode(key, kv.value()))
            .transpose()
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn current(&self) -> Result<Record, StoreError> {
        Ok(self
            .get_one(&self.topology_key())
            .await?
            .unwrap_or_else(Record::empty))
    }

    async fn commit_all(
        &self,
        expected: u64,
        changes: Vec<Change>,
    ) -> Result<Vec<Record>, StoreError> {
        let mut records = Vec::with_capacity(changes.len());
        let mut ops = Vec::with_capacity(changes.len() + 1);
        for (revision, change) in (expected + 1..).zip(changes) {
            let record = change.into_record(revision);
            ops.push(TxnOp::put(
                self.history_key(revision),
                encode(&record)?,
                None,
            ));
            records.push(record);
        }
        let Some(last) = records.last() else {
            return Ok(records);
        };
        let key = self.topology_key();
        ops.push(TxnOp::put(key.as_str(), encode(last)?, None));
        // At `expected`: its history entry exists (none is needed at 0) and
        // the next one does not. Entries are never deleted.
        let mut when = vec![Compare::version(
            self.history_key(expected + 1),
            CompareOp::Equal,
            0,
        )];
        if expected > 0 {
            when.push(Compare::version(
                self.history_key(expected),
                CompareOp::Greater,
                0,
            ));
        }
        let txn = Txn::new()
            .when(when)
            .and_then(ops)
            .or_else([TxnOp::get(key.as_str(), None)]);
        let resp = self.client.kv_client().txn(txn).await.map_err(map_err)?;
        if resp.succeeded() {
            return Ok(records);
        }
        let actual = match resp.op_responses().into_iter().find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(get) => Some(get),
            _ => None,
        }) {
            Some(get) => match get.kvs().first() {
                Some(kv) => decode::<Record>(&key, kv.value())?.revision,
                None => 0,
            },
            None => 0,
        };
        Err(StoreError::Conflict { expected, actual })
    }

    fn max_commit_bytes(&self) -> usize {
        // etcd refuses requests over 1.5 MiB by default.
        1 << 20
    }

    async fn history(&self, limit: usize) -> Result<Vec<Record>, StoreError> {
        let prefix = format!("{}/history/", self.prefix);
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let resp = self
            .client
            .kv_client()
            .get(prefix.as_str(), Some(options))
            .await
            .map_err(map_err)?;
        resp.kvs()
            .iter()
            .map(|kv| decode(&String::from_utf8_lossy(kv.key()), kv.value()))
            .collect()
    }

    async fn at(&self, revision: u64) -> Result<Option<Record>, StoreError> {
        self.get_one(&self.history_key(revision)).await
    }

    async fn set_readiness(&self, node: &str, vips: BTreeSet<String>) -> Result<(), StoreError> {
        let key = format!("{}{node}", self.readiness_prefix());
        self.client
            .kv_client()
            .put(key, encode(&vips)?, None)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn readiness(&self) -> Result<Readiness, StoreError> {
        let prefix = self.readiness_prefix();
        let resp = self
            .client
            .kv_client()
            .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(map_err)?;
        let mut out = Readiness::new();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).to_string();
            let node = key.trim_start_matches(&prefix).to_string();
            out.insert(node, decode(&key, kv.value())?);
        }
        Ok(out)
    }

    async fn watch(&self) -> Result<WatchStream, StoreError> {
        // Three watches rather than one on the whole prefix: the history
        // entry every commit writes and the status every replica shares each
        // tick would otherwise come back to every replica, to be dropped.
        let topology_key = self.topology_key();
        let epoch_key = self.epoch_key();
        let readiness_prefix = self.readiness_prefix();
        let mut watch = self.client.watch_client();
        let mut streams = Vec::new();
        for (key, options) in [
            (topology_key.clone(), None),
            (epoch_key.clone(), None),
            (
                readiness_prefix.clone(),
                Some(WatchOptions::new().with_prefix()),
            ),
        ] {
            let stream = watch.watch(key, options).await.map_err(map_err)?;
            let (topology_key, epoch_key, readiness_prefix) = (
                topology_key.clone(),
                epoch_key.clone(),
                readiness_prefix.clone(),
            );
            let events = stream.flat_map(move |resp| {
                let items: Vec<Result<StoreEvent, StoreError>> = match resp {
                    Err(e) => vec![Err(map_err(e))],
                    Ok(resp) if resp.canceled() => vec![Err(StoreError::Unavailable(format!(
                        "watch canceled: {}",
                        resp.cancel_reason()
                    )))],
                    Ok(resp) => resp
                        .events()
                        .iter()
                        .filter(|ev| ev.event_type() == EventType::Put)
                        .filter_map(|ev| {
                            let kv = ev.kv()?;
                            let key = String::from_utf8_lossy(kv.key()).to_string();
                            if key == topology_key {
                                Some(decode(&key, kv.value()).map(StoreEvent::Topology))
                            } else if key == epoch_key {
                                Some(decode(&key, kv.value()).map(StoreEvent::Epoch))
                            } else {
                                key.strip_prefix(&readiness_prefix).map(|node| {
                                    decode(&key, kv.value()).map(|vips| StoreEvent::Readiness {
                                        node: node.to_string(),
                                        vips,
                                    })
                                })
                            }
                        })
                        .collect(),
                };
                futures::stream::iter(items)
            });
            streams.push(events.boxed());
        }
        Ok(futures::stream::select_all(streams).boxed())
    }

    fn kind(&self) -> &'static str {
        "etcd"
    }

    async fn publish_status(
        &self,
        replica: &str,
        node: &str,
        status: Option<&NodeStatus>,
    ) -> Result<(), StoreError> {
        let key = format!("{}/status/{node}/{replica}", self.prefix);
        let mut kv = self.client.kv_client();
        match status {
            Some(status) => {
                let lease = self.lease().await?;
                kv.put(
                    key,
                    encode(status)?,
                    Some(etcd_client::PutOptions::new().with_lease(lease)),
                )
                .await
                .map_err(map_err)?;
            }
            None => {
                kv.delete(key, None).await.map_err(map_err)?;
            }
        }
        Ok(())
    }

    async fn publish_statuses(
        &self,
        replica: &str,
        statuses: &[NodeStatus],
    ) -> Result<(), StoreError> {
        if statuses.is_empty() {
            return Ok(());
        }
        let lease = self.lease().await?;
        // One transaction per chunk (etcd allows 128 operations in one by
        // default), not one round trip and one log entry per agent.
        for chunk in statuses.chunks(STATUS_TXN_OPS) {
            let ops = chunk
                .iter()
                .map(|status| {
                    Ok(TxnOp::put(
                        format!("{}/status/{}/{replica}", self.prefix, status.node),
                        encode(status)?,
                        Some(etcd_client::PutOptions::new().with_lease(lease)),
                    ))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            self.client
                .kv_client()
                .txn(Txn::new().and_then(ops))
                .await
                .map_err(map_err)?;
        }
        Ok(())
    }

    async fn epoch(&self) -> Result<u64, StoreError> {
        Ok(self.get_one(&self.epoch_key()).await?.unwrap_or(0))
    }

    async fn campaign(&self, replica: &str) -> Result<Option<u64>, StoreError> {
        let lease = self.lease().await?;
        let resp = self
            .client
            .election_client()
            .campaign(format!("{}/leader", self.prefix), replica, lease)
            .await
            .map_err(map_err)?;
        let leader = resp
            .leader()
            .cloned()
            .ok_or_else(|| StoreError::Backend("campaign won without a leader key".into()))?;
        *self.leadership.lock().await = Some((lease, leader));
        // A new term: epoch + 1, compare-and-swap on the key's version.
        let key = self.epoch_key();
        loop {
            let resp = self
                .client
                .kv_client()
                .get(key.as_str(), None)
                .await
                .map_err(map_err)?;
            let (epoch, version) = match resp.kvs().first() {
                Some(kv) => (decode::<u64>(&key, kv.value())?, kv.version()),
                None => (0, 0),
            };
            let next = epoch + 1;
            let txn = Txn::new()
                .when([Compare::version(key.as_str(), CompareOp::Equal, version)])
                .and_then([TxnOp::put(key.as_str(), encode(&next)?, None)]);
            if self
                .client
                .kv_client()
                .txn(txn)
                .await
                .map_err(map_err)?
                .succeeded()
            {
                return Ok(Some(next));
            }
        }
    }

    async fn leadership_lost(&self) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let held = self
                .leadership
                .lock()
                .await
                .as_ref()
                .map(|(lease, _)| *lease);
            let current = *self.lease.lock().await;
            if held.is_none() || held != current {
                return;
            }
        }
    }

    async fn resign(&self) {
        if let Some((_, leader)) = self.leadership.lock().await.take() {
            let _ = self
                .client
                .election_client()
                .resign(Some(etcd_client::ResignOptions::new().with_leader(leader)))
                .await;
        }
    }

    async fn shared_status(&self) -> Result<Vec<NodeStatus>, StoreError> {
        let prefix = format!("{}/status/", self.prefix);
        let resp = self
            .client
            .kv_client()
            .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(map_err)?;
        resp.kvs()
            .iter()
            .map(|kv| decode(&String::from_utf8_lossy(kv.key()), kv.value()))
            .collect()
    }
}

/// Refreshes the lease a third of its TTL; forgets it when it is lost (it
/// is granted again on next use) or when the store is dropped.
async fn keep_lease_alive(
    lease: Weak<tokio::sync::Mutex<Option<i64>>>,
    id: i64,
    mut keeper: etcd_client::LeaseKeeper,
    mut responses: etcd_client::LeaseKeepAliveStream,
) {
    let period = Duration::from_secs((STATUS_LEASE_TTL / 3).max(1) as u64);
    loop {
        tokio::time::sleep(period).await;
        if lease.strong_count() == 0 {
            return;
        }
        let alive = match keeper.keep_alive().await {
            Ok(()) => matches!(responses.message().await, Ok(Some(r)) if r.ttl() > 0),
            Err(_) => false,
        };
        if !alive {
            tracing::warn!(
                lease = id,
                "status lease lost; granting a new one on next use"
            );
            if let Some(lease) = lease.upgrade() {
                let mut held = lease.lock().await;
                if *held == Some(id) {
                    *held = None;
                }
            }
            return;
        }
    }
}
