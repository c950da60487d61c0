//! The real-server role: holds each VIP the way its director forwards to it
//! (on `lo` for DR, on a tunnel device for TUN, not at all for NAT), sets the
//! ARP and rp_filter sysctls that makes that safe, reports per-VIP readiness,
//! repairs drift, and undoes all of it on shutdown.
//!
//! ```text
//!   interval tick ──┐        shutdown
//!   netlink watch ──┤           │
//!   (links, addrs)  │           │
//!   commands_rx ────┤ (RealServerHandle::apply: a new Desired, the reply
//!                   ▼  after one reconciliation)
//!               RealServer::run ── last pass: undo everything
//!                   │
//!                   ├─ Kernel::observe ─> Reconciler::plan (pure) ─> Kernel::execute
//!                   ├─ ledger ─> state dir, written before every change
//!                   ├─ status_tx: watch<AgentStatus>, and the status file
//!                   └─ events_tx: broadcast<Event>, one per drift repaired
//! ```

pub mod check;
pub mod daemon;
pub mod desired;
pub mod kernel;
pub mod plan;
pub mod state;

use std::future::Future;

use lb_proto::v1::{AgentStatus, DriftRepaired, ErrorDetail, Event, VipStatus, event};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::netif::links::Watch;

pub use desired::Desired;
use kernel::{Kernel, KernelError};
use plan::{Reconciler, Reconfiguration};
use state::{StateDir, StateError};

/// Passes of observe-plan-execute in one reconciliation; each pass can only
/// act on what the previous one created (a sysctl of a new tunnel device).
const MAX_PASSES: usize = 4;

/// What stops the real-server agent.
#[derive(Debug, thiserror::Error)]
pub enum RealServerError {
    /// The kernel could not be read or changed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The state directory.
    #[error(transparent)]
    State(#[from] StateError),
    /// Some changes could not be undone; the ledger keeps them for the next run.
    #[error("{left} change(s) could not be undone (kept in {ledger}); last error: {last}")]
    UndoIncomplete {
        /// How many entries are left.
        left: usize,
        /// The ledger file.
        ledger: String,
        /// The last error.
        last: String,
    },
    /// A new configuration names another state directory than the running
    /// one, whose ledger holds the originals of what was changed.
    #[error(
        "settings.stateDir cannot change while the agent runs ({running} now, {asked} asked for): restart the agent to move it"
    )]
    StateDirChanged {
        /// The running state directory.
        running: String,
        /// The one asked for.
        asked: String,
    },
    /// The agent stopped before the request was answered.
    #[error("the real-server agent is stopping")]
    Stopped,
}

impl RealServerError {
    /// The error as the controller reads it.
    pub fn detail(&self) -> ErrorDetail {
        let (code, object, field) = match self {
            RealServerError::StateDirChanged { .. } => ("invalid", "settings", "stateDir"),
            RealServerError::Kernel(_) | RealServerError::UndoIncomplete { .. } => {
                ("kernel", "", "")
            }
            RealServerError::State(_) | RealServerError::Stopped => ("internal", "", ""),
        };
        ErrorDetail {
            code: code.into(),
            message: self.to_string(),
            object: object.into(),
            field: field.into(),
        }
    }
}

/// A request into the running agent.
#[derive(Debug)]
enum Command {
    /// Replace the desired state and reconcile once.
    Apply {
        desired: Box<Desired>,
        revision: Option<(u64, u64)>,
        reply_tx: oneshot::Sender<Result<Applied, RealServerError>>,
    },
}

/// What a new configuration changed, and the readiness it led to.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The VIPs added, removed, changed and left alone.
    pub changes: Reconfiguration,
    /// Readiness after the first reconciliation.
    pub vips: Vec<VipStatus>,
}

/// Hands new configurations to a running [`RealServer`].
#[derive(Debug, Clone)]
pub struct RealServerHandle {
    commands_tx: mpsc::Sender<Command>,
}

impl RealServerHandle {
    /// Replaces the desired state of the running agent: new VIPs are added,
    /// removed ones undone (their sysctls restored when no other VIP needs
    /// them), unchanged ones left alone. `revision` is the (epoch, revision)
    /// reported in the status. Answers after one reconciliation.
    pub async fn apply(
        &self,
        desired: Desired,
        revision: Option<(u64, u64)>,
    ) -> Result<Applied, RealServerError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.commands_tx
            .send(Command::Apply {
                desired: Box::new(desired),
                revision,
                reply_tx,
            })
            .await
            .map_err(|_| RealServerError::Stopped)?;
        reply_rx.await.map_err(|_| RealServerError::Stopped)?
    }
}

/// A running real-server agent: its desired state, its kernel and its memory.
#[derive(Debug)]
pub struct RealServer {
    desired: Desired,
    kernel: Kernel,
    state: StateDir,
    reconciler: Reconciler,
    /// (epoch, revision) of the running configuration (0, 0 from a file).
    revision: (u64, u64),
    status_tx: watch::Sender<AgentStatus>,
    events_tx: broadcast::Sender<Event>,
    commands_tx: mpsc::Sender<Command>,
    commands_rx: mpsc::Receiver<Command>,
}

impl RealServer {
    /// Opens the kernel and the state directory, and reads the ledger a
    /// previous run left.
    pub fn new(desired: Desired) -> Result<Self, RealServerError> {
        let state = StateDir::open(&desired.state_dir)?;
        let ledger = state.load_ledger()?;
        if !ledger.is_empty() {
            info!(
                sysctls = ledger.sysctls.len(),
                addresses = ledger.addresses.len(),
                "ledger of a previous run found: its original values are kept"
            );
        }
        let (status_tx, _) = watch::channel(AgentStatus {
            node: desired.node.clone(),
            ..Default::default()
        });
        let (events_tx, _) = broadcast::channel(64);
        let (commands_tx, commands_rx) = mpsc::channel(4);
        Ok(RealServer {
            kernel: Kernel::connect()?,
            state,
            reconciler: Reconciler::new(ledger),
            desired,
            revision: (0, 0),
            status_tx,
            events_tx,
            commands_tx,
            commands_rx,
        })
    }

    /// Sets the (epoch, revision) reported for the configuration it starts with.
    pub fn with_revision(mut self, epoch: u64, revision: u64) -> Self {
        self.revision = (epoch, revision);
        self
    }

    /// A handle that hands new configurations to [`RealServer::run`].
    pub fn handle(&self) -> RealServerHandle {
        RealServerHandle {
            commands_tx: self.commands_tx.clone(),
        }
    }

    /// The desired state it holds now.
    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    /// Takes `desired` as the new desired state and reconciles once; the
    /// planner undoes what the old one needed and the new one does not.
    pub async fn reconfigure(
        &mut self,
        desired: Desired,
        revision: Option<(u64, u64)>,
    ) -> Result<Applied, RealServerError> {
        if desired.state_dir != self.desired.state_dir {
            return Err(RealServerError::StateDirChanged {
                running: self.desired.state_dir.display().to_string(),
                asked: desired.state_dir.display().to_string(),
            });
        }
        let changes = Reconfiguration::between(&self.desired, &desired);
        info!(
            added = ?changes.added,
            removed = ?changes.removed,
            changed = ?changes.changed,
            unchanged = changes.unchanged.len(),
            interfaces_changed = changes.interfaces_changed,
            "new configuration"
        );
        self.desired = desired;
        if let Some(r) = revision {
            self.revision = r;
        }
        let vips = self.reconcile().await?;
        Ok(Applied { changes, vips })
    }

    /// Status reports, one per reconciliation.
    pub fn status(&self) -> watch::Receiver<AgentStatus> {
        self.status_tx.subscribe()
    }

    /// Events: drift repaired.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events_tx.subscribe()
    }

    /// One reconciliation: passes of observe, plan and execute until the plan
    /// is empty, then a fresh read of the kernel for readiness. Failed actions
    /// are reported in the status and retried on the next reconciliation.
    pub async fn reconcile(&mut self) -> Result<Vec<VipStatus>, RealServerError> {
        let last_error = self.converge(true).await?;
        let observed = self
            .kernel
            .observe(&self.reconciler, Some(&self.desired))
            .await?;
        let vips = self.reconciler.status(&self.desired, &observed);
        for v in vips.iter().filter(|v| !v.ready) {
            warn!(vip = %v.address, reason = %v.reason, "VIP not ready");
        }
        let status = AgentStatus {
            node: self.desired.node.clone(),
            applied_epoch: self.revision.0,
            applied_revision: self.revision.1,
            vips: vips.clone(),
            last_error: last_error.map(|message| ErrorDetail {
                message,
                ..Default::default()
            }),
            time: Some(lb_proto::now()),
            ..Default::default()
        };
        if let Err(e) = self.state.save_status(&status) {
            warn!(error = %e, "cannot write the status file");
        }
        self.status_tx.send_replace(status);
        Ok(vips)
    }

    /// Undoes everything the ledger holds: addresses removed, sysctls
    /// restored, raised links set down, created tunnels deleted.
    pub async fn undo(&mut self) -> Result<(), RealServerError> {
        let last_error = self.converge(false).await?;
        // The status file must not go on saying "ready" once the VIPs are gone.
        let mut status = self.status_tx.borrow().clone();
        for v in &mut status.vips {
            v.ready = false;
            v.reason = "the agent stopped".into();
        }
        if let Err(e) = self.state.save_status(&status) {
            warn!(error = %e, "status not written");
        }
        self.status_tx.send_replace(status);
        if self.reconciler.ledger.is_empty() {
            info!("every change undone");
            return Ok(());
        }
        let l = &self.reconciler.ledger;
        Err(RealServerError::UndoIncomplete {
            left: l.sysctls.len()
                + l.addresses.len()
                + l.created_tunnels.len()
                + l.raised_links.len()
                + l.created_gue_ports.len(),
            ledger: self.state.ledger_path().display().to_string(),
            last: last_error.unwrap_or_else(|| "none".into()),
        })
    }

    async fn converge(&mut self, apply: bool) -> Result<Option<String>, RealServerError> {
        let desired = apply.then_some(&self.desired);
        let mut last_error = None;
        for _ in 0..MAX_PASSES {
            let observed = self.kernel.observe(&self.reconciler, desired).await?;
            let plan = self.reconciler.plan(desired, &observed);
            if plan.actions.is_empty() {
                break;
            }
            for drift in &plan.drift {
                let vips: Vec<String> = drift.vips.iter().map(|v| v.to_string()).collect();
                warn!(object = %drift.need, action = %drift.action, vips = ?vips, "drift repaired");
                let _ = self.events_tx.send(Event {
                    time: Some(lb_proto::now()),
                    node: self.desired.node.clone(),
                    kind: Some(event::Kind::Drift(DriftRepaired {
                        object: drift.need.to_string(),
                        action: drift.action.to_string(),
                    })),
                });
            }
            let mut failed = false;
            for action in &plan.actions {
                self.reconciler.ledger.before(action);
                self.state.save_ledger(&self.reconciler.ledger)?;
                match self.kernel.execute(action).await {
                    Ok(outcome) => {
                        info!(%action, ?outcome, "applied");
                        self.reconciler.ledger.after(action, outcome);
                    }
                    Err(e) => {
                        warn!(%action, error = %e, "failed");
                        last_error = Some(format!("{action}: {e}"));
                        failed = true;
                    }
                }
            }
            self.state.save_ledger(&self.reconciler.ledger)?;
            if failed {
                break;
            }
        }
        Ok(last_error)
    }

    /// Reconciles every `reconcile_interval`, whenever the kernel announces
    /// a link or address change and whenever a [`RealServerHandle`] hands in
    /// a new configuration, until `shutdown` completes; then undoes
    /// everything.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), RealServerError> {
        let mut watch = match Watch::subscribe() {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "no netlink change notifications: polling only");
                None
            }
        };
        let new_tick = |every| {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        };
        let mut tick = new_tick(self.desired.reconcile_interval);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(command) = self.commands_rx.recv() => {
                    let Command::Apply { desired, revision, reply_tx } = command;
                    let every = desired.reconcile_interval;
                    let result = self.reconfigure(*desired, revision).await;
                    if result.is_ok() && every != tick.period() {
                        tick = new_tick(every);
                        // The first tick of a new interval fires at once.
                        tick.tick().await;
                    }
                    let _ = reply_tx.send(result);
                    continue;
                }
                _ = tick.tick() => {}
                change = next_change(&mut watch) => {
                    if change.is_none() {
                        watch = None;
                    }
                    // Let a burst of notifications (ours included) settle.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    if let Some(w) = watch.as_mut() {
                        while let Ok(Some(_)) =
                            tokio::time::timeout(std::time::Duration::ZERO, w.next()).await
                        {}
                    }
                }
            }
            if let Err(e) = self.reconcile().await {
                warn!(error = %e, "reconcile failed");
            }
        }
        info!("shutting down: undoing every change");
        self.undo().await
    }
}

async fn next_change(watch: &mut Option<Watch>) -> Option<crate::netif::links::Change> {
    match watch {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}
