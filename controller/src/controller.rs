//! The controller's operations: apply, read, history, rollback, status, and
//! the tasks that keep the fleet's view of the store current.
//!
//! ```text
//!   api (ControllerService) ─► Controller::apply ─► validate ─► store.commit ─┐
//!                                                                          ▼
//!   store watch task ───────────────────────────────────────────► fleet.set_topology
//!   agent sessions (AgentSync) ──► fleet.on_message ─► store.set_readiness
//!   tick task (every keepalive) ─► fleet.reconcile (retries deferred pushes)
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use lb_proto::v1::{DesiredState, NodePlan, ObjectKind, ValidationIssue, object};
use tokio::sync::broadcast;

use crate::change::{self, Edit, EditError};
use crate::fleet::{Fleet, NodeChange};
use crate::plan;
use crate::store::{Change, Record, Store, StoreError, StoreEvent};
use crate::validate::{self, Issue, Report};

/// Settings of a controller replica.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Name of this replica in status ("host:port").
    pub replica: String,
    /// Keepalive interval on agent streams; a stream silent for three
    /// intervals is dead.
    pub keepalive: Duration,
    /// Epoch pushed with every state until a leader term sets another.
    pub epoch: u64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            replica: "controller".to_string(),
            keepalive: Duration::from_secs(5),
            epoch: 1,
        }
    }
}

/// A change request, translated from the API.
#[derive(Debug, Clone)]
pub struct ChangeRequest {
    /// What to change.
    pub edit: Edit,
    /// Plan only.
    pub dry_run: bool,
    /// Compare-and-swap revision; 0 for none.
    pub expected_revision: u64,
    /// Allow removing every real server of a service.
    pub force: bool,
    /// Who asks.
    pub author: String,
    /// History message.
    pub message: String,
}

/// What a change did (or would do).
#[derive(Debug, Clone, Default)]
pub struct ApplyOutcome {
    /// Revision after the change (the current one for a dry run or no-op).
    pub revision: u64,
    /// Whether anything changed (or would change, for a dry run).
    pub changed: bool,
    /// Nodes whose state changes, with a readable diff.
    pub plans: Vec<NodePlan>,
    /// Validation warnings.
    pub warnings: Vec<Issue>,
}

/// An operation that failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControllerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The topology is invalid; nothing was written.
    #[error("the topology is invalid; nothing was written:\n{0}")]
    Invalid(Report),
    /// The request cannot be carried out.
    #[error(transparent)]
    Edit(#[from] EditError),
    /// A revision asked for does not exist.
    #[error("revision {0} does not exist")]
    NoSuchRevision(u64),
}

struct Inner {
    store: Arc<dyn Store>,
    fleet: Fleet,
    config: ControllerConfig,
    closing_tx: tokio::sync::watch::Sender<bool>,
    /// One commit (of one or several applies) at a time on this replica.
    apply_lock: Arc<tokio::sync::Mutex<()>>,
    /// Applies waiting for the next commit.
    queue: std::sync::Mutex<Vec<Queued>>,
    /// Status other replicas shared, refreshed every tick.
    shared: std::sync::Mutex<Vec<lb_proto::v1::NodeStatus>>,
}

/// A controller replica.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// How many times an apply without an expected revision retries after losing
/// a race with another writer.
const APPLY_RETRIES: usize = 8;

/// Applies committed together at most.
const BATCH_CHANGES: usize = 32;

/// What an apply's turn gives back: its outcome without the plans, and the
/// nodes whose state changes.
type Turn = Result<(ApplyOutcome, Vec<NodeChange>), ControllerError>;

/// The requests one store write covers: their answers and the changes to
/// write.
struct Round {
    answers: Vec<Turn>,
    changes: Vec<Change>,
}

/// About the bytes `topology` takes in the store (its JSON is about three
/// times its protobuf encoding).
fn store_size(topology: &lb_proto::v1::Topology) -> usize {
    use prost::Message;
    topology.encoded_len() * 4
}

/// An apply waiting for the next commit.
struct Queued {
    request: ChangeRequest,
    reply: tokio::sync::oneshot::Sender<Turn>,
}

impl Controller {
    /// Loads the current topology and readiness and starts the background
    /// tasks (store watch, periodic reconcile); they end when the last clone
    /// of the controller is dropped.
    pub async fn start(
        store: Arc<dyn Store>,
        config: ControllerConfig,
    ) -> Result<Controller, StoreError> {
        let record = store.current().await?;
        let readiness = store.readiness().await?;
        let epoch = config.epoch.max(store.epoch().await?);
        let fleet = Fleet::new(&config.replica, record, readiness, epoch);
        let controller = Controller {
            inner: Arc::new(Inner {
                store,
                fleet,
                config,
                closing_tx: tokio::sync::watch::channel(false).0,
                shared: std::sync::Mutex::new(Vec::new()),
                apply_lock: Arc::new(tokio::sync::Mutex::new(())),
                queue: std::sync::Mutex::new(Vec::new()),
            }),
        };
        let closed = controller.closed();
        let watch = watch_store(Arc::downgrade(&controller.inner));
        tokio::spawn(async move {
            tokio::select! {
                _ = watch => {}
                _ = closed => {}
            }
        });
        let closed = controller.closed();
        let lead = lead(Arc::downgrade(&controller.inner));
        let store = controller.inner.store.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = lead => {}
                _ = closed => store.resign().await,
            }
        });
        let closed = controller.closed();
        let tick = tick(Arc::downgrade(&controller.inner));
        tokio::spawn(async move {
            tokio::select! {
                _ = tick => {}
                _ = closed => {}
            }
        });
        Ok(controller)
    }

    /// Ends every agent stream and the background tasks (on shutdown, so
    /// that a graceful server stop does not wait for streams that never end).
    pub fn close(&self) {
        self.inner.closing_tx.send_replace(true);
    }

    /// Resolves once [`Controller::close`] was called.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closing_rx = self.inner.closing_tx.subscribe();
        async move {
            let _ = closing_rx.wait_for(|closing| *closing).await;
        }
    }

    /// The agents.
    pub fn fleet(&self) -> &Fleet {
        &self.inner.fleet
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The replica's settings.
    pub fn config(&self) -> &ControllerConfig {
        &self.inner.config
    }

    /// Validates and stores a change (or plans it, for a dry run).
    ///
    /// Applies that arrive while a commit is in flight are committed
    /// together, in arrival order, in the next one (group commit): each still
    /// gets a revision, a history entry and an outcome of its own, as if it
    /// had been applied alone, and a failing one is answered with its own
    /// error without holding the others back.
    pub async fn apply(&self, request: ChangeRequest) -> Result<ApplyOutcome, ControllerError> {
        let (outcome, changes) = if request.dry_run {
            let _turn = self.inner.apply_lock.lock().await;
            self.apply_in_turn(request).await?
        } else {
            let (reply, mut answer) = tokio::sync::oneshot::channel();
            self.queue().push(Queued { request, reply });
            let turn = self.inner.apply_lock.clone().lock_owned().await;
            match answer.try_recv() {
                // An earlier turn committed it.
                Ok(result) => result?,
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                    // This turn commits everything queued, in a task of its
                    // own: a caller that goes away does not cut a commit short.
                    let batch = std::mem::take(&mut *self.queue());
                    let controller = self.clone();
                    tokio::spawn(async move {
                        controller.commit_queued(batch).await;
                        drop(turn);
                    });
                    answer.await.map_err(|_| {
                        ControllerError::Store(StoreError::Backend(
                            "the commit task ended without an answer".to_string(),
                        ))
                    })??
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    return Err(ControllerError::Store(StoreError::Backend(
                        "the commit task ended without an answer".to_string(),
                    )));
                }
            }
        };
        // The diffs are rendered after the turn.
        let plans = changes
            .into_iter()
            .map(|c| NodePlan {
                diff: plan::diff(c.old.as_ref(), &c.new),
                node: c.node,
                desired: Some(c.new),
            })
            .collect();
        Ok(ApplyOutcome { plans, ..outcome })
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<Queued>> {
        self.inner
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Commits queued applies, as many per store write as fit.
    async fn commit_queued(&self, batch: Vec<Queued>) {
        let mut queued: std::collections::VecDeque<Queued> = batch.into();
        while !queued.is_empty() {
            let answers = self.commit_round(&queued).await;
            for answer in answers {
                let q = queued.pop_front().expect("an answer per request");
                let _ = q.reply.send(answer);
            }
        }
    }

    /// One store write for the first requests of `queued`: the answers of
    /// those it covers (at least one), in order.
    async fn commit_round(&self, queued: &std::collections::VecDeque<Queued>) -> Vec<Turn> {
        let limit = self.inner.store.max_commit_bytes();
        let mut current = self.inner.fleet.record();
        let mut fresh = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (round, confirm) = self.evaluate_round(&current, queued, limit);
            if confirm && !fresh {
                // A revision to confirm, or nothing to write: against the
                // store, not the cache.
                match self.inner.store.current().await {
                    Ok(record) => {
                        current = record;
                        fresh = true;
                        continue;
                    }
                    Err(e) => return vec![Err(e.into())],
                }
            }
            let Round { answers, changes } = round;
            if changes.is_empty() {
                return answers;
            }
            match self.inner.store.commit_all(current.revision, changes).await {
                Ok(records) => {
                    for record in &records {
                        tracing::info!(
                            revision = record.revision,
                            author = %record.author,
                            message = %record.message,
                            "topology stored"
                        );
                    }
                    if let Some(last) = records.into_iter().last() {
                        self.inner.fleet.set_topology(last);
                    }
                    return answers;
                }
                Err(StoreError::Conflict { .. }) if attempt < APPLY_RETRIES => {
                    match self.inner.store.current().await {
                        Ok(record) => {
                            current = record;
                            fresh = true;
                        }
                        Err(e) => return vec![Err(e.into())],
                    }
                }
                Err(e) => {
                    let e = ControllerError::from(e);
                    return answers
                        .into_iter()
                        .map(|a| match a {
                            Ok((o, _)) if o.changed => Err(e.clone()),
                            other => other,
                        })
                        .collect();
                }
            }
        }
    }

    /// The first requests of `queued`, evaluated in order on top of
    /// `current` and of each other, as many as one store write takes.
    /// Also whether the answers should be confirmed against the store, in
    /// case `current` is stale: an expected revision differs, or nothing is
    /// to be written.
    fn evaluate_round(
        &self,
        current: &Record,
        queued: &std::collections::VecDeque<Queued>,
        limit: usize,
    ) -> (Round, bool) {
        let mut topology = current.topology.clone();
        let mut revision = current.revision;
        let mut bytes = 0usize;
        let mut answers = Vec::new();
        let mut changes = Vec::new();
        let mut stale = false;
        // What each node would be told after the requests before.
        let mut earlier: BTreeMap<String, DesiredState> = BTreeMap::new();
        for q in queued {
            let request = &q.request;
            if request.expected_revision != 0 && request.expected_revision != revision {
                stale = true;
                answers.push(Err(StoreError::Conflict {
                    expected: request.expected_revision,
                    actual: revision,
                }
                .into()));
                continue;
            }
            let next = match change::apply(&topology, &request.edit) {
                Ok(t) => t,
                Err(e) => {
                    answers.push(Err(e.into()));
                    continue;
                }
            };
            let report = validate::validate(&next, &topology, request.force);
            if !report.is_ok() {
                answers.push(Err(ControllerError::Invalid(report)));
                continue;
            }
            let changed = next != topology;
            if changed {
                // One request at least, then as many as fit in one write.
                let size = store_size(&next);
                if !changes.is_empty() && (changes.len() >= BATCH_CHANGES || bytes + size > limit) {
                    break;
                }
                bytes += size;
                revision += 1;
            }
            let node_changes = self.inner.fleet.changes_for(&next, revision, &earlier);
            for c in &node_changes {
                earlier.insert(c.node.clone(), c.new.clone());
            }
            answers.push(Ok((
                ApplyOutcome {
                    revision,
                    changed,
                    plans: Vec::new(),
                    warnings: report.warnings,
                },
                node_changes,
            )));
            if changed {
                changes.push(Change {
                    author: request.author.clone(),
                    time_ms: now_ms(),
                    message: request.message.clone(),
                    topology: next.clone(),
                });
                topology = next;
            }
        }
        let confirm = stale || changes.is_empty();
        (Round { answers, changes }, confirm)
    }

    /// [`Controller::apply`] on this replica's turn: the outcome without its
    /// plans, and the nodes whose state changes.
    async fn apply_in_turn(
        &self,
        request: ChangeRequest,
    ) -> Result<(ApplyOutcome, Vec<NodeChange>), ControllerError> {
        // Start from the cached revision: a write needs no extra read when
        // the cache is current (the commit's compare-and-swap checks it).
        // Dry runs, no-ops and revision mismatches are confirmed against
        // the store.
        let mut current = self.inner.fleet.record();
        let mut fresh = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let confirm = request.dry_run
                || (request.expected_revision != 0
                    && request.expected_revision != current.revision);
            if confirm && !fresh {
                current = self.inner.store.current().await?;
                fresh = true;
            }
            if request.expected_revision != 0 && request.expected_revision != current.revision {
                return Err(StoreError::Conflict {
                    expected: request.expected_revision,
                    actual: current.revision,
                }
                .into());
            }
            let topology = change::apply(&current.topology, &request.edit)?;
            let report = validate::validate(&topology, &current.topology, request.force);
            if !report.is_ok() {
                return Err(ControllerError::Invalid(report));
            }
            let changed = topology != current.topology;
            if !changed && !fresh {
                current = self.inner.store.current().await?;
                fresh = true;
                continue;
            }
            let revision = if changed {
                current.revision + 1
            } else {
                current.revision
            };
            let changes = self
                .inner
                .fleet
                .changes_for(&topology, revision, &BTreeMap::new());
            if request.dry_run || !changed {
                let outcome = ApplyOutcome {
                    revision: current.revision,
                    changed,
                    plans: Vec::new(),
                    warnings: report.warnings,
                };
                return Ok((outcome, changes));
            }
            let change = Change {
                author: request.author.clone(),
                time_ms: now_ms(),
                message: request.message.clone(),
                topology,
            };
            match self.inner.store.commit(current.revision, change).await {
                Ok(record) => {
                    tracing::info!(
                        revision = record.revision,
                        author = %record.author,
                        message = %record.message,
                        "topology stored"
                    );
                    self.inner.fleet.set_topology(record);
                    let outcome = ApplyOutcome {
                        revision,
                        changed,
                        plans: Vec::new(),
                        warnings: report.warnings,
                    };
                    return Ok((outcome, changes));
                }
                Err(StoreError::Conflict { .. })
                    if (request.expected_revision == 0 || !fresh) && attempt < APPLY_RETRIES =>
                {
                    current = self.inner.store.current().await?;
                    fresh = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The current record, from the store.
    pub async fn current(&self) -> Result<Record, ControllerError> {
        Ok(self.inner.store.current().await?)
    }

    /// One object by kind and name.
    pub async fn get(&self, kind: ObjectKind, name: &str) -> Result<object::Kind, ControllerError> {
        let record = self.current().await?;
        let t = &record.topology;
        let found = match kind {
            ObjectKind::Node => t
                .nodes
                .iter()
                .find(|n| n.name == name)
                .cloned()
                .map(object::Kind::Node),
            ObjectKind::DirectorGroup => t
                .director_groups
                .iter()
                .find(|g| g.name == name)
                .cloned()
                .map(object::Kind::DirectorGroup),
            ObjectKind::Service => t
                .services
                .iter()
                .find(|s| s.name == name)
                .cloned()
                .map(object::Kind::Service),
            ObjectKind::Unspecified => {
                return Err(EditError::Invalid("a kind is required".to_string()).into());
            }
        };
        found.ok_or_else(|| {
            EditError::NotFound {
                kind: match kind {
                    ObjectKind::Node => "node",
                    ObjectKind::DirectorGroup => "director group",
                    _ => "service",
                },
                name: name.to_string(),
            }
            .into()
        })
    }

    /// Every object of a kind (all kinds when unspecified), and the revision read.
    pub async fn list(
        &self,
        kind: ObjectKind,
    ) -> Result<(u64, Vec<object::Kind>), ControllerError> {
        let record = self.current().await?;
        let t = record.topology;
        let all = matches!(kind, ObjectKind::Unspecified);
        let mut out = Vec::new();
        if all || kind == ObjectKind::Node {
            out.extend(t.nodes.into_iter().map(object::Kind::Node));
        }
        if all || kind == ObjectKind::DirectorGroup {
            out.extend(
                t.director_groups
                    .into_iter()
                    .map(object::Kind::DirectorGroup),
            );
        }
        if all || kind == ObjectKind::Service {
            out.extend(t.services.into_iter().map(object::Kind::Service));
        }
        Ok((record.revision, out))
    }

    /// The last `limit` revisions, newest first.
    pub async fn history(&self, limit: usize) -> Result<Vec<Record>, ControllerError> {
        Ok(self.inner.store.history(limit).await?)
    }

    /// Makes revision `revision`'s topology current again, as a new revision.
    pub async fn rollback(
        &self,
        revision: u64,
        expected_revision: u64,
        dry_run: bool,
        author: String,
    ) -> Result<ApplyOutcome, ControllerError> {
        let record = self
            .inner
            .store
            .at(revision)
            .await?
            .ok_or(ControllerError::NoSuchRevision(revision))?;
        self.apply(ChangeRequest {
            edit: Edit::Replace(record.topology),
            dry_run,
            expected_revision,
            // The operator names a topology that was valid and in service.
            force: true,
            author,
            message: format!("rollback to revision {revision}"),
        })
        .await
    }

    /// Status of the named nodes (all when empty), with the current revision.
    /// An agent connected to another replica shows that replica's view
    /// (shared through the store, at most one tick old).
    pub fn status(&self, nodes: &[String]) -> (u64, Vec<lb_proto::v1::NodeStatus>) {
        let mut local: BTreeMap<String, lb_proto::v1::NodeStatus> = self
            .inner
            .fleet
            .status(nodes)
            .into_iter()
            .map(|s| (s.node.clone(), s))
            .collect();
        let shared = self
            .inner
            .shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for remote in shared {
            if remote.replica == self.inner.config.replica
                || !remote.connected
                || !(nodes.is_empty() || nodes.contains(&remote.node))
            {
                continue;
            }
            let seen = |s: &lb_proto::v1::NodeStatus| s.last_seen.map(|t| (t.seconds, t.nanos));
            let keep_mine = local.get(&remote.node).is_some_and(|mine| {
                mine.connected
                    && (mine.replica == self.inner.config.replica || seen(mine) >= seen(&remote))
            });
            if !keep_mine {
                local.insert(remote.node.clone(), remote);
            }
        }
        (
            self.inner.fleet.record().revision,
            local.into_values().collect(),
        )
    }

    /// Events as they happen.
    pub fn events(&self) -> broadcast::Receiver<lb_proto::v1::Event> {
        self.inner.fleet.subscribe()
    }

    /// The desired state of every node now, as the fleet plans it.
    pub fn desired(&self) -> BTreeMap<String, DesiredState> {
        let record = self.inner.fleet.record();
        self.inner.fleet.plan_for(&record.topology, record.revision)
    }
}

impl From<Issue> for ValidationIssue {
    fn from(i: Issue) -> Self {
        ValidationIssue {
            object: i.object,
            field: i.field,
            message: i.message,
        }
    }
}

/// Keeps the fleet's topology and readiness in step with the store, across
/// store outages.
async fn watch_store(inner: Weak<Inner>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(this) = inner.upgrade() else { return };
        let store = this.store.clone();
        drop(this);
        let result: Result<(), StoreError> = async {
            let mut watch = store.watch().await?;
            let record = store.current().await?;
            let readiness = store.readiness().await?;
            let epoch = store.epoch().await?;
            {
                let Some(this) = inner.upgrade() else {
                    return Ok(());
                };
                this.fleet.set_topology(record);
                this.fleet.replace_readiness(readiness);
                this.fleet.set_epoch(epoch.max(this.config.epoch));
            }
            backoff = Duration::from_millis(100);
            while let Some(event) = watch.next().await {
                let Some(this) = inner.upgrade() else {
                    return Ok(());
                };
                match event? {
                    StoreEvent::Topology(record) => this.fleet.set_topology(record),
                    StoreEvent::Epoch(epoch) => {
                        this.fleet.set_epoch(epoch.max(this.config.epoch));
                    }
                    StoreEvent::Readiness { node, vips } => this.fleet.set_readiness(&node, vips),
                }
            }
            Err(StoreError::Unavailable("watch ended".to_string()))
        }
        .await;
        if inner.strong_count() == 0 {
            return;
        }
        if let Err(e) = result {
            tracing::warn!(error = %e, retry_in = ?backoff, "store watch failed");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Campaigns for leadership (etcd) and opens a new term when elected: the
/// epoch every replica pushes with becomes the new leader term, so agents
/// refuse anything a replica of an older term still sends. Opening the term
/// is the leader's only singleton duty so far.
async fn lead(inner: Weak<Inner>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let Some(this) = inner.upgrade() else { return };
        let store = this.store.clone();
        let replica = this.config.replica.clone();
        drop(this);
        match store.campaign(&replica).await {
            Ok(None) => return,
            Ok(Some(term)) => {
                backoff = Duration::from_millis(200);
                tracing::info!(%replica, term, "elected leader");
                if let Some(this) = inner.upgrade() {
                    this.fleet.set_epoch(term.max(this.config.epoch));
                }
                store.leadership_lost().await;
                tracing::warn!(%replica, term, "leadership lost");
            }
            // A campaign waits for the leader to go; the store's request
            // timeout ends each wait, so waiting again at once is normal.
            Err(StoreError::Unavailable(reason)) => {
                tracing::debug!(%reason, "campaign wait ended; campaigning again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "campaign failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Every keepalive interval: retries deferred pushes, shares the status of
/// this replica's agents and reads what the other replicas share.
async fn tick(inner: Weak<Inner>) {
    let period = match inner.upgrade() {
        Some(this) => this.config.keepalive,
        None => return,
    };
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published: std::collections::BTreeSet<String> = Default::default();
    loop {
        interval.tick().await;
        let Some(this) = inner.upgrade() else { return };
        this.fleet.reconcile();
        let replica = this.config.replica.clone();
        let local = this.fleet.connected_status();
        let mut now_published = std::collections::BTreeSet::new();
        match this.store.publish_statuses(&replica, &local).await {
            Ok(()) => now_published.extend(local.iter().map(|s| s.node.clone())),
            Err(e) => tracing::debug!(error = %e, "sharing status failed"),
        }
        let gone: Vec<String> = published.difference(&now_published).cloned().collect();
        for node in gone {
            if local.iter().any(|s| s.node == node) {
                continue;
            }
            if let Err(e) = this.store.publish_status(&replica, &node, None).await {
                tracing::debug!(%node, error = %e, "withdrawing status failed");
                now_published.insert(node);
            }
        }
        published = now_published;
        if let Ok(shared) = this.store.shared_status().await {
            *this.shared.lock().unwrap_or_else(|e| e.into_inner()) = shared;
        }
    }
}
