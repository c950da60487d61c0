//! The director: VRRP, IPVS and the health checks as one unattended daemon.
//!
//! ```text
//!  main (file, SIGHUP) ─┐                 ┌──────────────── director task ─────────────────┐
//!  gRPC API ────────────┼── cmd_tx ─────► │ DirectorPlan (the validated configuration)      │
//!  controller stream ───┘                 │ weights: what health wants per destination      │──► IpvsHandle
//!  health runner ──── HealthEvent ──────► │ desired Table = plan x weights - drained        │    (netlink thread)
//!  health runner ──── quorum watch ─────► │ quorum hooks ──────────────────────────────────┼──► VRRP tracking
//!  VRRP instances ─── Transition ───────► │ VRRP units (instance or sync group), failover   │──► VRRP instances
//!  reconcile tick, drain tick ──────────► │ kernel dump vs desired: drift repaired          │──► events (broadcast)
//!                                         └─────────────────────────────────────────────────┘    view (watch), status files
//! ```
//!
//! - Every change is validated as a whole ([`plan::DirectorPlan`]) before
//!   anything moves; then checks, IPVS and VRRP take the difference only:
//!   unchanged instances keep running, unchanged services are not touched,
//!   unchanged checks keep their state.
//! - A health transition becomes at most one IPVS operation, sent at once
//!   with no dump of the table; the periodic reconcile compares the kernel
//!   with the desired table and repairs what drifted.
//! - At start the director adopts the kernel: destinations it finds are
//!   assumed healthy until their checks say otherwise, so a restart with the
//!   same configuration writes nothing.
//! - The last good configuration is kept on disk ([`crate::store`]) and used
//!   at boot when the given one cannot be.

pub mod daemon;
pub mod drains;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use lb_proto::v1::{self, DirectorConfig, event};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::api::FailoverAction;
use crate::health::config::ServiceSpec;
use crate::health::runner::{self, HealthEvent, HealthHandle, QuorumState, RunnerSettings};
use crate::health::service::{DestinationChange, ServiceAction, Target};
use crate::health::state::Transition as HealthTransition;
use crate::ipvs::client::{ApplyReport, IpvsError, IpvsHandle};
use crate::ipvs::ownership::OwnedServices;
use crate::ipvs::reconcile::{self, IpvsOp, ServiceState, Table};
use crate::ipvs::{DestKey, ServiceKey, Stats};
use crate::metrics::Metrics;
use crate::store::{ConfigStore, Stored, write_atomic};
use crate::vrrp::fsm::State;
use crate::vrrp::instance::{InstanceHandle, Status as VrrpStatus, Transition};
use crate::vrrp::track::{Source, Tracked};
use crate::vrrp::vips::VipBackend;
use drains::{DrainRecord, Drained, Removed};
use plan::{DirectorPlan, PlanError, dest_key};

/// File of the last good configuration in the state directory.
pub const LAST_GOOD_FILE: &str = "director-last-good.json";
/// File of the status report in the state directory.
pub const STATUS_FILE: &str = "director-status.json";
/// File of the last apply's outcome in the state directory.
pub const LAST_APPLY_FILE: &str = "last-apply.json";
/// How often draining real servers are looked at.
const DRAIN_POLL: Duration = Duration::from_secs(1);
/// Priority offset of a forced take-over: any configured priority reaches 254.
const TAKE_WEIGHT: i32 = 254;

/// Why the director cannot do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum DirectorError {
    /// The configuration is invalid; nothing of it was applied.
    #[error(transparent)]
    Invalid(#[from] PlanError),
    /// The configuration is older than the one applied.
    #[error(
        "revision {revision} (epoch {epoch}) is older than the applied revision {applied} (epoch {applied_epoch}); refused"
    )]
    Stale {
        /// Offered revision.
        revision: u64,
        /// Offered epoch.
        epoch: u64,
        /// Applied revision.
        applied: u64,
        /// Applied epoch.
        applied_epoch: u64,
    },
    /// The health checks refused the configuration.
    #[error(transparent)]
    Health(#[from] runner::ApplyError),
    /// The kernel refused a change.
    #[error("IPVS: {0}")]
    Kernel(String),
    /// An object named in a request does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be carried out in this state.
    #[error("{0}")]
    Precondition(String),
    /// The director has stopped.
    #[error("the director has stopped")]
    Stopped,
    /// A state file.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Setting up a kernel interface.
    #[error("{0}")]
    Setup(String),
}

impl DirectorError {
    /// The lb.v1 form, for NACKs and events.
    pub fn detail(&self) -> v1::ErrorDetail {
        let (code, object, field) = match self {
            DirectorError::Invalid(e) => {
                let (o, f) = e.object_and_field();
                ("invalid", o, f)
            }
            DirectorError::Health(_) => ("invalid", String::new(), String::new()),
            DirectorError::Stale { .. } => ("stale", String::new(), String::new()),
            DirectorError::Kernel(_) | DirectorError::Setup(_) => {
                ("kernel", String::new(), String::new())
            }
            _ => ("internal", String::new(), String::new()),
        };
        v1::ErrorDetail {
            code: code.into(),
            message: self.to_string(),
            object,
            field,
        }
    }
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyOutcome {
    /// Revision applied.
    pub revision: u64,
    /// Epoch applied.
    pub epoch: u64,
    /// Whether it was applied.
    pub ok: bool,
    /// IPVS writes it took.
    pub operations: usize,
    /// VRRP instances started or restarted.
    pub vrrp_started: usize,
    /// VRRP instances stopped.
    pub vrrp_stopped: usize,
    /// Microseconds until the kernel held it (IPVS written, VRRP started
    /// or stopped).
    pub kernel_us: u64,
    /// How long it took in all, storing it included, in microseconds.
    pub duration_us: u64,
    /// The error when not applied.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// What the director publishes for readers (API, status files).
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The status report, without live IPVS counters.
    pub status: v1::AgentStatus,
    /// Service keys by name.
    pub keys: BTreeMap<String, ServiceKey>,
    /// The IPVS socket, when the kernel has IPVS.
    pub ipvs: Option<IpvsHandle>,
}

enum Command {
    Apply {
        config: Box<DirectorConfig>,
        revision: Option<(u64, u64)>,
        reply: oneshot::Sender<Result<ApplyOutcome, DirectorError>>,
    },
    Drain {
        service: String,
        real_server: String,
        deadline: Option<Duration>,
        undrain: bool,
        reply: oneshot::Sender<Result<(ServiceKey, DestKey), DirectorError>>,
    },
    Failover {
        instance: String,
        action: FailoverAction,
        hold: Duration,
        reply: oneshot::Sender<Result<watch::Receiver<VrrpStatus>, DirectorError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Talks to a running director.
#[derive(Debug, Clone)]
pub struct DirectorHandle {
    cmd_tx: mpsc::Sender<Command>,
    events_tx: broadcast::Sender<v1::Event>,
    view_rx: watch::Receiver<Arc<View>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Apply { .. } => "Apply",
            Command::Drain { .. } => "Drain",
            Command::Failover { .. } => "Failover",
            Command::Shutdown { .. } => "Shutdown",
        })
    }
}

impl DirectorHandle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, DirectorError>>) -> Command,
    ) -> Result<T, DirectorError> {
        let (reply, rx) = oneshot::channel();
        self.cmd_tx
            .send(make(reply))
            .await
            .map_err(|_| DirectorError::Stopped)?;
        rx.await.map_err(|_| DirectorError::Stopped)?
    }

    /// Applies a new configuration: `revision` is `(revision, epoch)` from
    /// the controller, `None` standalone (the director numbers it).
    pub async fn apply(
        &self,
        config: DirectorConfig,
        revision: Option<(u64, u64)>,
    ) -> Result<ApplyOutcome, DirectorError> {
        self.call(|reply| Command::Apply {
            config: Box::new(config),
            revision,
            reply,
        })
        .await
    }

    /// The director's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.view_rx.borrow().clone()
    }

    /// A watch of the view.
    pub fn watch_view(&self) -> watch::Receiver<Arc<View>> {
        self.view_rx.clone()
    }

    /// Events from now on.
    pub fn events(&self) -> broadcast::Receiver<v1::Event> {
        self.events_tx.subscribe()
    }

    /// The status report with live IPVS counters.
    pub async fn state(&self) -> v1::AgentStatus {
        let view = self.view();
        let mut status = view.status.clone();
        status.services = with_counters(&view, status.services).await;
        status.time = Some(lb_proto::timestamp(SystemTime::now()));
        status
    }

    /// Services with live IPVS counters; `name` filters.
    pub async fn services(
        &self,
        name: Option<&str>,
    ) -> Result<Vec<v1::ServiceStatus>, DirectorError> {
        let view = self.view();
        let services: Vec<v1::ServiceStatus> = view
            .status
            .services
            .iter()
            .filter(|s| name.is_none_or(|n| n == s.name))
            .cloned()
            .collect();
        if let Some(n) = name
            && services.is_empty()
        {
            return Err(DirectorError::NotFound(format!(
                "service {n}: not a service of this director"
            )));
        }
        Ok(with_counters(&view, services).await)
    }

    /// Drains a real server: weight 0 at once, removed once its active
    /// connections reach zero or `deadline` passes (`None`: no deadline).
    /// Returns the active connections left now.
    pub async fn drain(
        &self,
        service: &str,
        real_server: &str,
        deadline: Option<Duration>,
    ) -> Result<u32, DirectorError> {
        let (key, dest) = self
            .call(|reply| Command::Drain {
                service: service.to_string(),
                real_server: real_server.to_string(),
                deadline,
                undrain: false,
                reply,
            })
            .await?;
        Ok(self.active_connections(key, dest).await)
    }

    /// Undoes a drain; returns the active connections now.
    pub async fn undrain(&self, service: &str, real_server: &str) -> Result<u32, DirectorError> {
        let (key, dest) = self
            .call(|reply| Command::Drain {
                service: service.to_string(),
                real_server: real_server.to_string(),
                deadline: None,
                undrain: true,
                reply,
            })
            .await?;
        Ok(self.active_connections(key, dest).await)
    }

    async fn active_connections(&self, key: ServiceKey, dest: DestKey) -> u32 {
        let Some(ipvs) = self.view().ipvs.clone() else {
            return 0;
        };
        ipvs.run(move |s| s.dests(key))
            .await
            .ok()
            .and_then(|r| r.ok())
            .and_then(|ds| ds.into_iter().find(|d| d.dest.key == dest))
            .map_or(0, |d| d.active_conns)
    }

    /// Forces a failover of `instance` for `hold`; returns the state once it
    /// has moved (or after two seconds).
    pub async fn failover(
        &self,
        instance: &str,
        action: FailoverAction,
        hold: Duration,
    ) -> Result<v1::VrrpState, DirectorError> {
        let mut status = self
            .call(|reply| Command::Failover {
                instance: instance.to_string(),
                action,
                hold,
                reply,
            })
            .await?;
        let wanted = |s: &VrrpStatus| match action {
            FailoverAction::Release => s.state != State::Master,
            FailoverAction::Take => s.state == State::Master,
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), status.wait_for(wanted)).await;
        let state = status.borrow().state;
        Ok(crate::vrrp::status::vrrp_state(state))
    }

    /// Stops the director: VRRP sends priority 0 and removes the VIPs; IPVS
    /// services stay unless their group says `onShutdown: remove`.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.cmd_tx.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Fills live IPVS counters into `services`.
async fn with_counters(
    view: &View,
    mut services: Vec<v1::ServiceStatus>,
) -> Vec<v1::ServiceStatus> {
    let Some(ipvs) = view.ipvs.clone() else {
        return services;
    };
    let keys: Vec<(usize, ServiceKey)> = services
        .iter()
        .enumerate()
        .filter_map(|(i, s)| view.keys.get(&s.name).map(|k| (i, *k)))
        .collect();
    let Ok(found) = ipvs
        .run(move |s| {
            keys.into_iter()
                .filter_map(|(i, k)| Some((i, s.service(k).ok()?, s.dests(k).ok()?)))
                .collect::<Vec<_>>()
        })
        .await
    else {
        return services;
    };
    for (i, entry, dests) in found {
        let s = &mut services[i];
        s.stats = Some(stats(&entry.stats));
        for rs in &mut s.real_servers {
            let Ok(addr) = rs.address.parse() else {
                continue;
            };
            let key = DestKey {
                addr,
                port: rs.port as u16,
            };
            if let Some(d) = dests.iter().find(|d| d.dest.key == key) {
                rs.weight = d.dest.weight;
                rs.active_connections = d.active_conns;
                rs.inactive_connections = d.inact_conns;
                rs.stats = Some(stats(&d.stats));
            } else {
                rs.weight = 0;
            }
        }
    }
    services
}

fn stats(s: &Stats) -> v1::IpvsStats {
    v1::IpvsStats {
        connections: s.conns,
        packets_in: s.inpkts,
        packets_out: s.outpkts,
        bytes_in: s.inbytes,
        bytes_out: s.outbytes,
        cps: s.cps,
        pps_in: s.inpps,
        pps_out: s.outpps,
        bps_in: s.inbps,
        bps_out: s.outbps,
    }
}

/// How the director reaches the kernel.
pub struct Kernel {
    /// VIPs for VRRP.
    pub vips: Arc<dyn VipBackend>,
    /// IPVS, when the kernel has it (a director with services and no IPVS
    /// runs VRRP and checks, reports the error and retries every reconcile).
    pub ipvs: Option<IpvsHandle>,
    /// The runtime VRRP instances run on (a thread of their own, so health
    /// checks and applies never delay an advertisement); `None`: the
    /// caller's.
    pub vrrp_runtime: Option<tokio::runtime::Handle>,
}

impl Kernel {
    /// The real kernel: rtnetlink for VIPs, generic netlink for IPVS. The
    /// rtnetlink connection runs on `vrrp_runtime` when given, beside the
    /// instances that use it.
    pub fn connect(vrrp_runtime: Option<tokio::runtime::Handle>) -> Result<Self, DirectorError> {
        let vips = {
            let _guard = vrrp_runtime.as_ref().map(|h| h.enter());
            crate::netif::Rtnl::connect()
                .map_err(|e| DirectorError::Setup(format!("rtnetlink: {e}")))?
        };
        let ipvs = match IpvsHandle::spawn() {
            Ok(h) => Some(h),
            Err(e) => {
                warn!(error = %e, "IPVS is not available: services are not programmed until it is (modprobe ip_vs)");
                None
            }
        };
        Ok(Kernel {
            vips: Arc::new(vips),
            ipvs,
            vrrp_runtime,
        })
    }
}

/// Starts a thread for VRRP with a runtime of its own and returns its
/// handle; with `realtime_priority` (1..=99) the thread runs SCHED_RR at
/// that priority, as keepalived's `vrrp_rt_priority` does, so that a loaded
/// machine does not delay advertisements into false takeovers. The thread
/// lives as long as the process.
pub fn vrrp_thread(realtime_priority: Option<u8>) -> Result<tokio::runtime::Handle, DirectorError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("vrrp".into())
        .spawn(move || {
            if let Some(p) = realtime_priority {
                use thread_priority::{
                    RealtimeThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
                    set_thread_priority_and_policy, thread_native_id,
                };
                let set = p.try_into().map_err(|e| format!("{e:?}")).and_then(|v| {
                    set_thread_priority_and_policy(
                        thread_native_id(),
                        ThreadPriority::Crossplatform(v),
                        ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::RoundRobin),
                    )
                    .map_err(|e| format!("{e:?}"))
                });
                match set {
                    Ok(()) => info!(priority = p, "VRRP thread runs SCHED_RR"),
                    Err(e) => warn!(priority = p, error = %e, "VRRP thread priority not set"),
                }
            }
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _ = tx.send(Ok(rt.handle().clone()));
            rt.block_on(std::future::pending::<()>());
        })
        .map_err(|e| DirectorError::Setup(format!("VRRP thread: {e}")))?;
    rx.recv()
        .map_err(|e| DirectorError::Setup(format!("VRRP thread: {e}")))?
        .map_err(|e| DirectorError::Setup(format!("VRRP runtime: {e}")))
}

/// Starts a director on `config`, adopting what the kernel holds. When
/// `config` is invalid and a last good configuration is stored, that one
/// runs and the error is reported (fail-static); with neither, the error is
/// returned.
///
/// `revision` is the controller's `(revision, epoch)` of `config`; `None`
/// standalone, where the director numbers configurations itself.
pub async fn start(
    config: Option<DirectorConfig>,
    revision: Option<(u64, u64)>,
    node: &str,
    state_dir_override: Option<PathBuf>,
    kernel: Kernel,
) -> Result<(DirectorHandle, tokio::task::JoinHandle<()>), DirectorError> {
    let (events_tx, _) = broadcast::channel(1024);
    // Which configuration: the given one if it validates, else the stored one.
    let given = config.map(|c| {
        let p = DirectorPlan::from_config(&c, node);
        (c, p)
    });
    let state_dir = match (&state_dir_override, &given) {
        (Some(d), _) => d.clone(),
        (None, Some((_, Ok(p)))) => p.state_dir.clone(),
        (None, Some((c, Err(_)))) => c
            .settings
            .as_ref()
            .filter(|s| !s.state_dir.is_empty())
            .map_or_else(
                || PathBuf::from(plan::DEFAULT_STATE_DIR),
                |s| s.state_dir.clone().into(),
            ),
        (None, None) => PathBuf::from(plan::DEFAULT_STATE_DIR),
    };
    std::fs::create_dir_all(&state_dir)
        .map_err(|e| DirectorError::Setup(format!("{}: {e}", state_dir.display())))?;
    let store = ConfigStore::<DirectorConfig>::new(state_dir.join(LAST_GOOD_FILE));
    let stored = match store.load() {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "stored configuration refused");
            None
        }
    };
    let mut startup_error = None;
    let (config, mut plan, revision) = match given {
        Some((c, Ok(mut p))) => {
            if let Some(d) = &state_dir_override {
                p.state_dir = d.clone();
            }
            let revision = match (revision, &stored) {
                (Some(r), _) => r,
                (None, Some(s)) if s.config == c => (s.revision, s.epoch),
                (None, Some(s)) => (s.revision + 1, s.epoch),
                (None, None) => (1, 0),
            };
            (c, p, revision)
        }
        Some((_, Err(e))) => {
            let Some(s) = stored.clone() else {
                return Err(e.into());
            };
            error!(error = %e, revision = s.revision, "configuration refused: running the last good one");
            let p = DirectorPlan::from_config(&s.config, node)?;
            startup_error = Some(DirectorError::Invalid(e));
            (s.config, p, (s.revision, s.epoch))
        }
        None => {
            let Some(s) = stored.clone() else {
                return Err(DirectorError::Setup(
                    "no configuration given and none stored".into(),
                ));
            };
            info!(revision = s.revision, "running the stored configuration");
            let p = DirectorPlan::from_config(&s.config, node)?;
            (s.config, p, (s.revision, s.epoch))
        }
    };
    plan.state_dir = state_dir.clone();

    let metrics = Arc::new(Metrics::new());
    let (health_tx, health_rx) = mpsc::channel(4096);
    let observer: runner::AttemptObserver = {
        let m = metrics.clone();
        Arc::new(
            move |service: &str, real_server: &str, up: bool, latency: Duration| {
                m.health_result(service, real_server, up, latency)
            },
        )
    };
    let (health, _task) =
        runner::spawn_with_observer(RunnerSettings::default(), health_tx, Some(observer));
    let (vrrp_tx, vrrp_rx) = broadcast::channel(256);
    let (view_tx, view_rx) = watch::channel(Arc::new(View::default()));
    let (status_tx, status_rx) = watch::channel(None);
    let status_writer = tokio::spawn(write_status(status_rx));
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let mut d = Director {
        node: plan.node.clone(),
        plan: plan.clone(),
        config: config.clone(),
        revision,
        store,
        owned: OwnedServices::new(&state_dir),
        kernel,
        health,
        health_rx,
        health_sent: HashMap::new(),
        quorum_hooks: BTreeMap::new(),
        weights: BTreeMap::new(),
        sorry_active: BTreeMap::new(),
        real_health: BTreeMap::new(),
        drained: Drained::new(),
        removed: Removed::new(),
        drain_store: ConfigStore::new(state_dir.join(drains::FILE)),
        drains_saved: Default::default(),
        desired: Table::new(),
        units: Vec::new(),
        failover: BTreeMap::new(),
        vrrp_tx,
        events_tx: events_tx.clone(),
        view_tx,
        status_tx: Some(status_tx),
        status_writer: Some(status_writer),
        last_error: startup_error.as_ref().map(|e| e.detail()),
        reconcile_soon: false,
        timeouts_set: false,
        metrics: metrics.clone(),
    };
    let t0 = Instant::now();
    d.restore_drains();
    // Adopt: what the kernel holds is assumed healthy until checked.
    let kernel_table = d.dump().await;
    let assumed = assumed_up(&plan, kernel_table.as_ref());
    d.apply_health(assumed).await?;
    d.sync_quorum_hooks();
    d.desired = d.compute_desired();
    let operations = match &kernel_table {
        Some(current) => d.converge(current).await,
        None => 0,
    };
    d.set_timeouts().await;
    let (started, _) = d.sync_vrrp().await;
    let outcome = ApplyOutcome {
        revision: revision.0,
        epoch: revision.1,
        ok: startup_error.is_none(),
        operations,
        vrrp_started: started,
        vrrp_stopped: 0,
        kernel_us: t0.elapsed().as_micros() as u64,
        duration_us: t0.elapsed().as_micros() as u64,
        error: startup_error.map(|e| e.to_string()).unwrap_or_default(),
    };
    if outcome.ok
        && let Err(e) = d.store.save(&Stored {
            revision: revision.0,
            epoch: revision.1,
            config: config.clone(),
        })
    {
        warn!(error = %e, "last good configuration not stored");
    }
    info!(
        node = %d.node,
        revision = revision.0,
        services = plan.services.len(),
        instances = plan.vrrp.len(),
        operations,
        "director started"
    );
    d.report_apply(&outcome);
    d.publish();
    d.metrics.apply(
        outcome.ok,
        outcome.operations,
        Duration::from_micros(outcome.duration_us),
    );
    let handle = DirectorHandle {
        cmd_tx,
        events_tx,
        view_rx,
        metrics,
    };
    let task = tokio::spawn(d.run(cmd_rx, vrrp_rx));
    Ok((handle, task))
}

/// The status file's path and the view to write there (none before the
/// first).
type StatusFile = Option<(PathBuf, Arc<View>)>;

/// Writes the status file whenever the director publishes, off the
/// director's task: a status published while one is being written is
/// written next, and only the newest of several. Ends, after writing the
/// last one, when the director drops its sender.
async fn write_status(mut rx: watch::Receiver<StatusFile>) {
    let mut written: Option<Arc<View>> = None;
    loop {
        let closed = rx.changed().await.is_err();
        let latest = rx.borrow_and_update().clone();
        if let Some((path, view)) = latest
            && !written.as_ref().is_some_and(|w| Arc::ptr_eq(w, &view))
        {
            written = Some(view.clone());
            let wrote = tokio::task::spawn_blocking(move || {
                let bytes = serde_json::to_vec(&view.status)
                    .map_err(|e| format!("status not encoded: {e}"))?;
                write_atomic(&path, &bytes, false)
                    .map_err(|e| format!("{}: status not written: {e}", path.display()))
            })
            .await;
            match wrote {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "status file"),
                Err(e) => warn!(error = %e, "status writer task failed"),
            }
        }
        if closed {
            return;
        }
    }
}

/// Destinations of planned services that the kernel holds with a weight:
/// their checks start up.
fn assumed_up(plan: &DirectorPlan, kernel: Option<&Table>) -> HashSet<(String, SocketAddr)> {
    let mut out = HashSet::new();
    let Some(kernel) = kernel else {
        return out;
    };
    for (name, p) in &plan.services {
        let Some(cur) = kernel.get(&p.service.key) else {
            continue;
        };
        for rs in &p.real_servers {
            if cur.dests.get(&rs.dest.key).is_some_and(|d| d.weight > 0) {
                out.insert((
                    name.clone(),
                    SocketAddr::new(rs.dest.key.addr, rs.dest.key.port),
                ));
            }
        }
    }
    out
}

/// A real server's name with its destination key.
type NamedDest = (String, DestKey);

/// A group of VRRP instances started and stopped together: one instance, or
/// the members of a sync group.
struct VrrpUnit {
    names: Vec<String>,
    fingerprint: String,
    shutdown_tx: watch::Sender<bool>,
    handles: Vec<InstanceHandle>,
}

/// The tracking hooks of a forced failover of one instance.
struct FailoverHooks {
    /// Up normally; down (weight 0: FAULT) while a release holds.
    release_tx: Arc<watch::Sender<bool>>,
    /// Down normally; up (weight +254) while a take holds.
    take_tx: Arc<watch::Sender<bool>>,
    generation: Arc<AtomicU64>,
}

impl FailoverHooks {
    fn new() -> Self {
        FailoverHooks {
            release_tx: Arc::new(watch::channel(true).0),
            take_tx: Arc::new(watch::channel(false).0),
            generation: Arc::new(AtomicU64::new(0)),
        }
    }
}

struct Director {
    node: String,
    plan: DirectorPlan,
    config: DirectorConfig,
    revision: (u64, u64),
    store: ConfigStore<DirectorConfig>,
    owned: OwnedServices,
    kernel: Kernel,
    health: HealthHandle,
    health_rx: mpsc::Receiver<HealthEvent>,
    /// The checks the runner was last given, by service (drains applied).
    health_sent: HashMap<String, ServiceSpec>,
    quorum_hooks: BTreeMap<String, watch::Sender<bool>>,
    /// What health wants in the table, per service.
    weights: BTreeMap<String, BTreeMap<Target, u32>>,
    sorry_active: BTreeMap<String, bool>,
    /// Health state and last failure per (service, destination).
    real_health: BTreeMap<(String, DestKey), (v1::HealthState, String)>,
    /// Drained real servers and when their drain ends regardless of
    /// connections (`None`: never).
    drained: Drained,
    /// Drained real servers taken out of the table.
    removed: Removed,
    /// Where the drains are kept across restarts, and what it holds.
    drain_store: ConfigStore<Vec<DrainRecord>>,
    drains_saved: (Drained, Removed),
    /// The table the director wants (and believes the kernel holds).
    desired: Table,
    units: Vec<VrrpUnit>,
    failover: BTreeMap<String, FailoverHooks>,
    vrrp_tx: broadcast::Sender<Transition>,
    events_tx: broadcast::Sender<v1::Event>,
    view_tx: watch::Sender<Arc<View>>,
    /// The status file's path and content, for the writer task; taken at
    /// stop so that the writer ends once the last status is written.
    status_tx: Option<watch::Sender<StatusFile>>,
    status_writer: Option<tokio::task::JoinHandle<()>>,
    last_error: Option<v1::ErrorDetail>,
    reconcile_soon: bool,
    timeouts_set: bool,
    metrics: Arc<Metrics>,
}

impl Director {
    async fn run(
        mut self,
        mut cmd_rx: mpsc::Receiver<Command>,
        mut vrrp_rx: broadcast::Receiver<Transition>,
    ) {
        let mut reconcile = tokio::time::interval(self.plan.reconcile_interval);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reconcile.reset();
        let mut drain_tick = tokio::time::interval(DRAIN_POLL);
        drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut quorum_rx = self.health.quorum();
        loop {
            tokio::select! {
                cmd = cmd_rx.recv() => match cmd {
                    None => {
                        self.stop().await;
                        return;
                    }
                    Some(Command::Shutdown { reply }) => {
                        self.stop().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(cmd) => self.command(cmd).await,
                },
                Some(ev) = self.health_rx.recv() => {
                    let mut touched = BTreeSet::new();
                    self.on_health(ev, &mut touched);
                    while let Ok(ev) = self.health_rx.try_recv() {
                        self.on_health(ev, &mut touched);
                    }
                    self.apply_services(&touched).await;
                    self.publish();
                }
                Ok(()) = quorum_rx.changed() => {
                    self.sync_quorum_hooks();
                    self.publish();
                }
                t = vrrp_rx.recv() => match t {
                    Ok(t) => {
                        let to = crate::vrrp::status::vrrp_state(t.to);
                        self.metrics.vrrp_transition(&t.instance, to);
                        self.metrics.vrrp_state(&t.instance, to);
                        self.metrics.vrrp_priority(&t.instance, t.priority);
                        let ev = crate::vrrp::status::transition_event(&t, &self.node, SystemTime::now());
                        let _ = self.events_tx.send(ev);
                        self.publish();
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(lost = n, "VRRP transitions lost from the event stream");
                    }
                    Err(broadcast::error::RecvError::Closed) => {}
                },
                _ = reconcile.tick() => {
                    self.reconcile().await;
                    self.publish();
                }
                _ = drain_tick.tick(), if !self.drained.is_empty() => {
                    self.check_drains().await;
                }
            }
            if self.reconcile_soon {
                self.reconcile_soon = false;
                reconcile.reset_immediately();
            }
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Apply {
                config,
                revision,
                reply,
            } => {
                let r = self.apply(*config, revision).await;
                let _ = reply.send(r);
            }
            Command::Drain {
                service,
                real_server,
                deadline,
                undrain,
                reply,
            } => {
                let r = self.drain(&service, &real_server, deadline, undrain).await;
                let _ = reply.send(r);
            }
            Command::Failover {
                instance,
                action,
                hold,
                reply,
            } => {
                let _ = reply.send(self.force_failover(&instance, action, hold));
            }
            Command::Shutdown { .. } => {}
        }
    }

    /// What the runner must be told for the plan's checks with the drains
    /// applied: the services new or changed since it was last told, and the
    /// names of those gone. Only services with a drain are copied to be
    /// compared.
    fn health_delta(&self) -> (Vec<ServiceSpec>, Vec<String>) {
        let drained: HashSet<&str> = self.drained.keys().map(|(s, _)| s.as_str()).collect();
        let mut changed = Vec::new();
        for s in &self.plan.health {
            let with_drains;
            let spec = if drained.contains(s.name.as_str()) {
                let mut d = s.clone();
                for rs in &mut d.real_servers {
                    if self
                        .drained
                        .contains_key(&(d.name.clone(), dest_key(rs.addr)))
                    {
                        rs.drain = true;
                    }
                }
                with_drains = d;
                &with_drains
            } else {
                s
            };
            if self.health_sent.get(&s.name) != Some(spec) {
                changed.push(spec.clone());
            }
        }
        let names: HashSet<&str> = self.plan.health.iter().map(|s| s.name.as_str()).collect();
        let removed = self
            .health_sent
            .keys()
            .filter(|n| !names.contains(n.as_str()))
            .cloned()
            .collect();
        (changed, removed)
    }

    /// Gives the runner what changed in the checks and takes its events
    /// meanwhile (it queues one action per destination before it answers:
    /// with thousands of real servers the queue must be drained while
    /// waiting). Returns the services whose weights moved.
    async fn apply_health(
        &mut self,
        assumed_up: HashSet<(String, SocketAddr)>,
    ) -> Result<BTreeSet<String>, runner::ApplyError> {
        let health = self.health.clone();
        let (changed, removed) = self.health_delta();
        let sent: Vec<(String, ServiceSpec)> = changed
            .iter()
            .map(|s| (s.name.clone(), s.clone()))
            .collect();
        let apply = health.update(changed, removed.clone(), assumed_up);
        tokio::pin!(apply);
        let mut touched = BTreeSet::new();
        let result = loop {
            tokio::select! {
                r = &mut apply => break r,
                Some(ev) = self.health_rx.recv() => self.on_health(ev, &mut touched),
            }
        };
        touched.extend(self.absorb_health_events());
        result?;
        for name in &removed {
            self.health_sent.remove(name);
        }
        self.health_sent.extend(sent);
        Ok(touched)
    }

    /// Takes every health event already queued (after an apply of the
    /// runner, which queues its actions before it answers).
    fn absorb_health_events(&mut self) -> BTreeSet<String> {
        let mut touched = BTreeSet::new();
        while let Ok(ev) = self.health_rx.try_recv() {
            self.on_health(ev, &mut touched);
        }
        touched
    }

    fn on_health(&mut self, ev: HealthEvent, touched: &mut BTreeSet<String>) {
        match ev {
            HealthEvent::Transition {
                service,
                real_server,
                addr,
                transition,
            } => {
                let (from, to, reason) = match &transition {
                    HealthTransition::Down { reason } => (
                        v1::HealthState::Up,
                        v1::HealthState::Down,
                        reason.to_string(),
                    ),
                    HealthTransition::Up { .. } => {
                        (v1::HealthState::Down, v1::HealthState::Up, String::new())
                    }
                    HealthTransition::Weight { weight } => (
                        v1::HealthState::Up,
                        v1::HealthState::Up,
                        format!("dynamic weight {weight}"),
                    ),
                };
                self.real_health
                    .insert((service.clone(), dest_key(addr)), (to, reason.clone()));
                self.metrics
                    .health_state(&service, &real_server, to == v1::HealthState::Up);
                self.emit(event::Kind::Health(v1::HealthTransition {
                    service,
                    real_server: format!("{real_server} ({addr})"),
                    from: from as i32,
                    to: to as i32,
                    reason,
                }));
            }
            HealthEvent::Action { service, action } => match action {
                ServiceAction::Destination { target, change } => {
                    let w = self.weights.entry(service.clone()).or_default();
                    match change {
                        DestinationChange::Add { weight }
                        | DestinationChange::SetWeight { weight } => {
                            w.insert(target, weight);
                        }
                        DestinationChange::Remove => {
                            w.remove(&target);
                        }
                    }
                    touched.insert(service);
                }
                ServiceAction::SorryServer { active } => {
                    self.sorry_active.insert(service, active);
                }
                ServiceAction::QuorumChanged { up, weight } => {
                    self.metrics.quorum(&service, up);
                    self.emit(event::Kind::Quorum(v1::QuorumChange {
                        service,
                        quorum: up,
                        weight: u32::try_from(weight).unwrap_or(u32::MAX),
                    }));
                }
            },
        }
    }

    fn emit(&self, kind: event::Kind) {
        let _ = self.events_tx.send(v1::Event {
            time: Some(lb_proto::timestamp(SystemTime::now())),
            node: self.node.clone(),
            kind: Some(kind),
        });
    }

    fn service_state(&self, name: &str) -> Option<ServiceState> {
        let removed: BTreeSet<DestKey> = self
            .removed
            .iter()
            .filter(|(s, _)| s == name)
            .map(|(_, d)| *d)
            .collect();
        let empty = BTreeMap::new();
        self.plan
            .service_state(name, self.weights.get(name).unwrap_or(&empty), &removed)
    }

    fn compute_desired(&self) -> Table {
        self.plan
            .services
            .keys()
            .filter_map(|n| self.service_state(n))
            .map(|s| (s.service.key, s))
            .collect()
    }

    /// Sends the operations that take the desired table of `services` to
    /// their new state, with no dump of the kernel.
    async fn apply_services(&mut self, services: &BTreeSet<String>) {
        let mut ops = Vec::new();
        for name in services {
            let Some(new) = self.service_state(name) else {
                continue;
            };
            let key = new.service.key;
            let old: Table = self
                .desired
                .get(&key)
                .map(|s| (key, s.clone()))
                .into_iter()
                .collect();
            let want: Table = [(key, new.clone())].into_iter().collect();
            let owned: BTreeSet<ServiceKey> = [key].into_iter().collect();
            ops.extend(reconcile::plan(&want, &old, &owned).ops);
            self.desired.insert(key, new);
        }
        if !ops.is_empty() {
            self.send_ops(ops).await;
        }
    }

    /// Sends `ops` to the kernel; a partial failure asks for a reconcile.
    async fn send_ops(&mut self, ops: Vec<IpvsOp>) -> usize {
        let Some(ipvs) = self.kernel.ipvs.clone() else {
            return 0;
        };
        let n = ops.len();
        for op in &ops {
            debug!(?op, "ipvs");
        }
        match ipvs.apply(ops).await {
            Ok(report) => {
                self.note_report(&report);
                n
            }
            Err(e) => {
                self.kernel_error(&e);
                0
            }
        }
    }

    fn note_report(&mut self, report: &ApplyReport) {
        for (op, e) in &report.failed {
            warn!(?op, error = %e, "IPVS operation failed");
        }
        if !report.converged() {
            self.reconcile_soon = true;
        }
        if let Some((_, e)) = report.failed.first() {
            self.last_error = Some(DirectorError::Kernel(e.to_string()).detail());
        }
    }

    fn kernel_error(&mut self, e: &IpvsError) {
        error!(error = %e, "IPVS");
        self.last_error = Some(DirectorError::Kernel(e.to_string()).detail());
        self.reconcile_soon = true;
    }

    async fn dump(&mut self) -> Option<Table> {
        if self.kernel.ipvs.is_none() && !self.plan.services.is_empty() {
            // IPVS may have been loaded since.
            if let Ok(h) = IpvsHandle::spawn() {
                info!("IPVS is available now");
                self.kernel.ipvs = Some(h);
            }
        }
        let ipvs = self.kernel.ipvs.clone()?;
        match ipvs.table().await {
            Ok(t) => Some(t),
            Err(e) => {
                self.kernel_error(&e);
                None
            }
        }
    }

    /// Makes the kernel hold the desired table on the services lb owns;
    /// returns the writes it took.
    async fn converge(&mut self, current: &Table) -> usize {
        let before = match self.owned.load() {
            Ok(o) => o,
            Err(e) => {
                error!(error = %e, "owned IPVS services unreadable: nothing is deleted");
                BTreeSet::new()
            }
        };
        let plan = reconcile::plan(&self.desired, current, &before);
        for key in &plan.adopted {
            info!(service = %key, "adopted an IPVS service that was already in the kernel");
        }
        if plan.ops.is_empty() {
            let after = reconcile::owned_after(&self.desired);
            if after != before {
                let _ = self.owned.store(&after);
            }
            return 0;
        }
        let during = reconcile::owned_during(&self.desired, &before);
        if during != before
            && let Err(e) = self.owned.store(&during)
        {
            error!(error = %e, "owned IPVS services not stored: kernel left as it is");
            return 0;
        }
        let ops = plan.ops.clone();
        let Some(ipvs) = self.kernel.ipvs.clone() else {
            return 0;
        };
        match ipvs.apply(ops).await {
            Ok(report) => {
                self.note_report(&report);
                if report.converged() {
                    let _ = self.owned.store(&reconcile::owned_after(&self.desired));
                }
                report.done
            }
            Err(e) => {
                self.kernel_error(&e);
                0
            }
        }
    }

    /// The periodic comparison of the kernel with the desired table.
    async fn reconcile(&mut self) {
        if !self.timeouts_set {
            self.set_timeouts().await;
        }
        let Some(current) = self.dump().await else {
            return;
        };
        self.update_ipvs_metrics().await;
        let owned = self.owned.load().unwrap_or_default();
        let plan = reconcile::plan(&self.desired, &current, &owned);
        if plan.ops.is_empty() {
            return;
        }
        self.metrics.drift_repairs(plan.ops.len() as u64);
        for op in &plan.ops {
            let (object, action) = describe_repair(op);
            warn!(%object, %action, "IPVS drift repaired");
            self.emit(event::Kind::Drift(v1::DriftRepaired { object, action }));
        }
        self.converge(&current).await;
    }

    /// IPVS counters of every service and real server into the metrics.
    async fn update_ipvs_metrics(&self) {
        let Some(ipvs) = self.kernel.ipvs.clone() else {
            return;
        };
        let services: Vec<(String, ServiceKey, Vec<NamedDest>)> = self
            .plan
            .services
            .values()
            .map(|p| {
                (
                    p.name.clone(),
                    p.service.key,
                    p.real_servers
                        .iter()
                        .map(|r| (r.name.clone(), r.dest.key))
                        .collect(),
                )
            })
            .collect();
        let keys: Vec<ServiceKey> = services.iter().map(|s| s.1).collect();
        let Ok(found) = ipvs
            .run(move |s| {
                keys.into_iter()
                    .map(|k| (s.service(k).ok(), s.dests(k).unwrap_or_default()))
                    .collect::<Vec<_>>()
            })
            .await
        else {
            return;
        };
        for ((name, _, rss), (entry, dests)) in services.iter().zip(found) {
            if let Some(e) = entry {
                self.metrics.ipvs_service_stats(name, &e.stats);
            }
            for d in dests {
                let rs = rss
                    .iter()
                    .find(|(_, k)| *k == d.dest.key)
                    .map_or_else(|| d.dest.key.to_string(), |(n, _)| n.clone());
                self.metrics.ipvs_dest_stats(
                    name,
                    &rs,
                    &d.stats,
                    d.active_conns,
                    d.inact_conns,
                    d.dest.weight,
                );
            }
        }
    }

    async fn set_timeouts(&mut self) {
        let (Some(t), Some(ipvs)) = (self.plan.timeouts, self.kernel.ipvs.clone()) else {
            return;
        };
        match ipvs.run(move |s| s.set_timeouts(t)).await {
            Ok(Ok(())) => self.timeouts_set = true,
            Ok(Err(e)) | Err(e) => warn!(error = %e, "IPVS timeouts not set"),
        }
    }

    /// Keeps the quorum hooks VRRP tracks equal to the runner's quorum.
    fn sync_quorum_hooks(&mut self) {
        let quorum: BTreeMap<String, QuorumState> = self.health.quorum().borrow().clone();
        for name in self.plan.services.keys() {
            let up = quorum.get(name).is_none_or(|q| q.up);
            match self.quorum_hooks.get(name) {
                Some(tx) => {
                    tx.send_if_modified(|v| {
                        let changed = *v != up;
                        *v = up;
                        changed
                    });
                }
                None => {
                    self.quorum_hooks.insert(name.clone(), watch::channel(up).0);
                }
            }
        }
    }

    /// Starts, restarts and stops VRRP units so that exactly the planned
    /// instances run; unchanged units are left alone. Returns (started,
    /// stopped) instance counts.
    async fn sync_vrrp(&mut self) -> (usize, usize) {
        let wanted = units_of(&self.plan);
        let mut keep = Vec::new();
        let mut stopping = Vec::new();
        let mut stopped = 0;
        for unit in std::mem::take(&mut self.units) {
            if wanted.iter().any(|(_, fp)| *fp == unit.fingerprint) {
                keep.push(unit);
            } else {
                info!(instances = ?unit.names, "stopping VRRP instances");
                stopped += unit.names.len();
                let _ = unit.shutdown_tx.send(true);
                stopping.push(unit);
            }
        }
        // A changed instance restarts with the same VIPs: the old one must
        // have sent priority 0 and removed them before the new one starts.
        for unit in stopping {
            for h in unit.handles {
                if tokio::time::timeout(Duration::from_secs(5), h.task)
                    .await
                    .is_err()
                {
                    warn!(instance = %h.config.name, "VRRP instance did not stop in 5 s");
                }
            }
        }
        let mut started = 0;
        let quorum: HashMap<String, watch::Receiver<bool>> = self
            .quorum_hooks
            .iter()
            .map(|(k, tx)| (k.clone(), tx.subscribe()))
            .collect();
        for (members, fingerprint) in wanted {
            if keep.iter().any(|u| u.fingerprint == fingerprint) {
                continue;
            }
            let mut planned = Vec::with_capacity(members.len());
            for i in &members {
                let mut p = self.plan.vrrp[*i].clone();
                let hooks = self
                    .failover
                    .entry(p.instance.name.clone())
                    .or_insert_with(FailoverHooks::new);
                p.tracked.push(Tracked {
                    source: Source::Hook {
                        name: "failover release".into(),
                        rx: hooks.release_tx.subscribe(),
                    },
                    weight: 0,
                });
                p.tracked.push(Tracked {
                    source: Source::Hook {
                        name: "failover take".into(),
                        rx: hooks.take_tx.subscribe(),
                    },
                    weight: TAKE_WEIGHT,
                });
                planned.push(p);
            }
            let names: Vec<String> = planned.iter().map(|p| p.instance.name.clone()).collect();
            info!(instances = ?names, "starting VRRP instances");
            started += names.len();
            let sync: Vec<Vec<usize>> = if members.len() > 1 {
                vec![(0..members.len()).collect()]
            } else {
                vec![]
            };
            let (shutdown_tx, shutdown_rx) = watch::channel(false);
            let _runtime = self.kernel.vrrp_runtime.as_ref().map(|h| h.enter());
            let handles = crate::vrrp::start(
                planned,
                &sync,
                self.kernel.vips.clone(),
                &quorum,
                self.vrrp_tx.clone(),
                shutdown_rx,
            );
            keep.push(VrrpUnit {
                names,
                fingerprint,
                shutdown_tx,
                handles,
            });
        }
        self.units = keep;
        let names: BTreeSet<String> = self
            .plan
            .vrrp
            .iter()
            .map(|p| p.instance.name.clone())
            .collect();
        self.failover.retain(|n, _| names.contains(n));
        (started, stopped)
    }

    async fn apply(
        &mut self,
        config: DirectorConfig,
        revision: Option<(u64, u64)>,
    ) -> Result<ApplyOutcome, DirectorError> {
        let t0 = Instant::now();
        let result = self.try_apply(config, revision, t0).await;
        let outcome = match &result {
            Ok(o) => o.clone(),
            Err(e) => {
                warn!(error = %e, "configuration refused");
                let (r, ep) = revision.unwrap_or(self.revision);
                ApplyOutcome {
                    revision: r,
                    epoch: ep,
                    ok: false,
                    operations: 0,
                    vrrp_started: 0,
                    vrrp_stopped: 0,
                    kernel_us: 0,
                    duration_us: t0.elapsed().as_micros() as u64,
                    error: e.to_string(),
                }
            }
        };
        if let Err(e) = &result {
            self.last_error = Some(e.detail());
        }
        self.metrics.apply(
            outcome.ok,
            outcome.operations,
            Duration::from_micros(outcome.duration_us),
        );
        self.report_apply(&outcome);
        self.publish();
        result
    }

    async fn try_apply(
        &mut self,
        config: DirectorConfig,
        revision: Option<(u64, u64)>,
        t0: Instant,
    ) -> Result<ApplyOutcome, DirectorError> {
        let revision = match revision {
            Some((r, e)) => {
                if (e, r) < (self.revision.1, self.revision.0) {
                    return Err(DirectorError::Stale {
                        revision: r,
                        epoch: e,
                        applied: self.revision.0,
                        applied_epoch: self.revision.1,
                    });
                }
                (r, e)
            }
            None if config == self.config => self.revision,
            None => (self.revision.0 + 1, self.revision.1),
        };
        let mut plan = DirectorPlan::from_config(&config, &self.node)?;
        plan.state_dir = self.plan.state_dir.clone();
        // Drains of real servers that left are forgotten.
        let valid: BTreeSet<(String, DestKey)> = plan
            .services
            .values()
            .flat_map(|p| p.real_servers.iter().map(|r| (p.name.clone(), r.dest.key)))
            .collect();
        let keep = |k: &(String, DestKey)| valid.contains(k);
        // A checker that cannot be built refuses the whole configuration
        // before anything moves. Checks the running plan has were built
        // when they started.
        let running: HashMap<&str, &ServiceSpec> = self
            .plan
            .health
            .iter()
            .map(|s| (s.name.as_str(), s))
            .collect();
        let new_checks: Vec<ServiceSpec> = plan
            .health
            .iter()
            .filter(|s| running.get(s.name.as_str()) != Some(s))
            .cloned()
            .collect();
        runner::validate(&new_checks)?;
        let old_plan = std::mem::replace(&mut self.plan, plan);
        let old_drained = self.drained.clone();
        self.drained.retain(|k, _| keep(k));
        if let Err(e) = self.apply_health(HashSet::new()).await {
            self.plan = old_plan;
            self.drained = old_drained;
            return Err(e.into());
        }
        self.removed.retain(|k| keep(k));
        let names: BTreeSet<&String> = self.plan.services.keys().collect();
        self.weights.retain(|s, _| names.contains(s));
        self.sorry_active.retain(|s, _| names.contains(s));
        self.real_health.retain(|k, _| keep(k));
        self.absorb_health_events();
        self.sync_quorum_hooks();
        // IPVS: the difference between the old and the new desired table.
        let new = self.compute_desired();
        let owned: BTreeSet<ServiceKey> = self.desired.keys().copied().collect();
        let ops = reconcile::plan(&new, &self.desired, &owned).ops;
        let old_owned = self.owned.load().unwrap_or_default();
        let during = reconcile::owned_during(&new, &old_owned);
        if during != old_owned {
            self.owned
                .store(&during)
                .map_err(|e| DirectorError::Kernel(e.to_string()))?;
        }
        self.desired = new;
        let operations = self.send_ops(ops).await;
        let after = reconcile::owned_after(&self.desired);
        if !self.reconcile_soon && after != during {
            let _ = self.owned.store(&after);
        }
        if self.plan.timeouts != old_plan.timeouts {
            self.set_timeouts().await;
        }
        let (vrrp_started, vrrp_stopped) = self.sync_vrrp().await;
        let kernel_us = t0.elapsed().as_micros() as u64;
        self.config = config;
        self.revision = revision;
        self.last_error = None;
        if let Err(e) = self.save_drains() {
            warn!(error = %e, "drains of real servers that left not stored");
        }
        // Stored once the kernel holds it, so that the last good
        // configuration is one that was applied: a crash before this line
        // restarts on the previous one, which the controller (or SIGHUP)
        // then replaces again. The apply is answered after it.
        self.store
            .save(&Stored {
                revision: revision.0,
                epoch: revision.1,
                config: self.config.clone(),
            })
            .map_err(|e| {
                DirectorError::Kernel(format!(
                    "applied, but not stored as the last good configuration: {e}"
                ))
            })?;
        let outcome = ApplyOutcome {
            revision: revision.0,
            epoch: revision.1,
            ok: true,
            operations,
            vrrp_started,
            vrrp_stopped,
            kernel_us,
            duration_us: t0.elapsed().as_micros() as u64,
            error: String::new(),
        };
        info!(
            revision = revision.0,
            operations, vrrp_started, vrrp_stopped, "configuration applied"
        );
        Ok(outcome)
    }

    /// Takes the stored drains of real servers the plan still has; a file
    /// that cannot be read is refused whole, and said.
    fn restore_drains(&mut self) {
        let records = match self.drain_store.load() {
            Ok(Some(s)) => s.config,
            Ok(None) => return,
            Err(e) => {
                error!(error = %e, "stored drains refused: every real server starts undrained");
                return;
            }
        };
        let (mut drained, mut removed) =
            drains::restore(&records, Instant::now(), SystemTime::now());
        // What the file holds: drains of real servers that left are
        // written out below, so that one coming back later is not drained.
        self.drains_saved = (drained.clone(), removed.clone());
        let valid = |(s, d): &(String, DestKey)| {
            self.plan
                .services
                .get(s)
                .is_some_and(|p| p.real_servers.iter().any(|r| r.dest.key == *d))
        };
        drained.retain(|k, _| valid(k));
        removed.retain(|k| drained.contains_key(k));
        info!(
            drained = drained.len(),
            removed = removed.len(),
            "stored drains restored"
        );
        (self.drained, self.removed) = (drained, removed);
        if let Err(e) = self.save_drains() {
            warn!(error = %e, "drains of real servers that left not dropped from the file");
        }
    }

    /// Stores the drains if they changed since they were last stored.
    fn save_drains(&mut self) -> Result<(), crate::store::StoreError> {
        if self.drains_saved.0 == self.drained && self.drains_saved.1 == self.removed {
            return Ok(());
        }
        let config = drains::records(
            &self.drained,
            &self.removed,
            Instant::now(),
            SystemTime::now(),
        );
        self.drain_store.save(&Stored {
            revision: 0,
            epoch: 0,
            config,
        })?;
        self.drains_saved = (self.drained.clone(), self.removed.clone());
        Ok(())
    }

    async fn drain(
        &mut self,
        service: &str,
        real_server: &str,
        deadline: Option<Duration>,
        undrain: bool,
    ) -> Result<(ServiceKey, DestKey), DirectorError> {
        let p = self.plan.services.get(service).ok_or_else(|| {
            DirectorError::NotFound(format!("service {service}: not a service of this director"))
        })?;
        let rs = p.find_real_server(real_server).ok_or_else(|| {
            DirectorError::NotFound(format!(
                "service {service}: real server {real_server} is not one of its real servers (known: {})",
                p.real_servers
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let (key, dest) = (p.service.key, rs.dest.key);
        let id = (service.to_string(), dest);
        let before = (self.drained.clone(), self.removed.clone());
        if undrain {
            if self.drained.remove(&id).is_none() && !self.removed.contains(&id) {
                return Err(DirectorError::Precondition(format!(
                    "service {service}: real server {real_server} is not drained"
                )));
            }
            self.removed.remove(&id);
        } else {
            let until = deadline
                .filter(|d| !d.is_zero())
                .map(|d| Instant::now() + d);
            self.drained.insert(id.clone(), until);
        }
        // Kept before it is applied: a drain that would be forgotten by a
        // restart is refused.
        if let Err(e) = self.save_drains() {
            (self.drained, self.removed) = before;
            return Err(DirectorError::Precondition(format!(
                "service {service}: real server {real_server}: the {} could not be stored, nothing changed: {e}",
                if undrain { "undrain" } else { "drain" }
            )));
        }
        if undrain {
            info!(service, real_server, "undrained");
        } else {
            info!(service, real_server, ?deadline, "draining");
        }
        let mut touched = self.apply_health(HashSet::new()).await?;
        touched.insert(service.to_string());
        self.apply_services(&touched).await;
        self.publish();
        Ok((key, dest))
    }

    /// Takes drained real servers out once their active connections are
    /// gone or their deadline passed.
    async fn check_drains(&mut self) {
        let Some(ipvs) = self.kernel.ipvs.clone() else {
            return;
        };
        let now = Instant::now();
        let pending: Vec<((String, DestKey), Option<Instant>, ServiceKey)> = self
            .drained
            .iter()
            .filter(|(id, _)| !self.removed.contains(*id))
            .filter_map(|(id, until)| {
                Some((
                    id.clone(),
                    *until,
                    self.plan.services.get(&id.0)?.service.key,
                ))
            })
            .collect();
        let mut touched = BTreeSet::new();
        for (id, until, key) in pending {
            let dest = id.1;
            let active = ipvs
                .run(move |s| s.dests(key))
                .await
                .ok()
                .and_then(|r| r.ok())
                .map(|ds| {
                    ds.into_iter()
                        .find(|d| d.dest.key == dest)
                        .map_or(0, |d| d.active_conns)
                });
            let Some(active) = active else { continue };
            let expired = until.is_some_and(|u| now >= u);
            if active == 0 || expired {
                info!(service = %id.0, real_server = %dest, active, expired, "drained: removed");
                touched.insert(id.0.clone());
                self.removed.insert(id);
            }
        }
        if !touched.is_empty() {
            if let Err(e) = self.save_drains() {
                warn!(error = %e, "drained real servers taken out, not stored");
            }
            self.apply_services(&touched).await;
            self.publish();
        }
    }

    fn force_failover(
        &mut self,
        instance: &str,
        action: FailoverAction,
        hold: Duration,
    ) -> Result<watch::Receiver<VrrpStatus>, DirectorError> {
        let status = self
            .units
            .iter()
            .flat_map(|u| &u.handles)
            .find(|h| h.config.name == instance)
            .map(|h| h.status.clone())
            .ok_or_else(|| {
                DirectorError::NotFound(format!(
                    "instance {instance}: not a VRRP instance of this director"
                ))
            })?;
        // A sync group moves as one: its members take over only together,
        // so a forced take (or release) applies to every member.
        let members: Vec<String> = self
            .units
            .iter()
            .find(|u| u.names.iter().any(|n| n == instance))
            .map(|u| u.names.clone())
            .unwrap_or_else(|| vec![instance.to_string()]);
        let (release, take) = match action {
            FailoverAction::Release => (false, false),
            FailoverAction::Take => (true, true),
        };
        for name in members {
            let hooks = self
                .failover
                .get(&name)
                .ok_or_else(|| DirectorError::NotFound(format!("instance {name}: no hooks")))?;
            let generation = hooks.generation.fetch_add(1, Ordering::SeqCst) + 1;
            hooks.release_tx.send_replace(release);
            hooks.take_tx.send_replace(take);
            info!(instance = %name, ?action, ?hold, "forced failover");
            let (release_tx, take_tx, gen_now) = (
                hooks.release_tx.clone(),
                hooks.take_tx.clone(),
                hooks.generation.clone(),
            );
            tokio::spawn(async move {
                tokio::time::sleep(hold).await;
                if gen_now.load(Ordering::SeqCst) == generation {
                    info!(instance = %name, "forced failover hold ended");
                    release_tx.send_replace(true);
                    take_tx.send_replace(false);
                }
            });
        }
        Ok(status)
    }

    async fn stop(&mut self) {
        info!("director stopping");
        for unit in std::mem::take(&mut self.units) {
            let _ = unit.shutdown_tx.send(true);
            for h in unit.handles {
                match tokio::time::timeout(Duration::from_secs(5), h.task).await {
                    Ok(Ok(Ok(()))) => {}
                    Ok(Ok(Err(e))) => warn!(error = %e, "VRRP instance stopped with an error"),
                    Ok(Err(e)) => warn!(error = %e, "VRRP instance task failed"),
                    Err(_) => warn!("VRRP instance did not stop in 5 s"),
                }
            }
        }
        let remove: Vec<IpvsOp> = self
            .plan
            .services
            .values()
            .filter(|p| p.remove_on_shutdown)
            .map(|p| IpvsOp::DelService(p.service.key))
            .collect();
        if !remove.is_empty() {
            let keys: BTreeSet<ServiceKey> = remove.iter().map(IpvsOp::service).collect();
            let n = self.send_ops(remove).await;
            info!(services = n, "IPVS services removed (onShutdown: remove)");
            let owned: BTreeSet<ServiceKey> = self
                .owned
                .load()
                .unwrap_or_default()
                .into_iter()
                .filter(|k| !keys.contains(k))
                .collect();
            let _ = self.owned.store(&owned);
            for k in keys {
                self.desired.remove(&k);
            }
        }
        self.publish();
        // The last status reaches the file before the director ends.
        self.status_tx = None;
        if let Some(writer) = self.status_writer.take()
            && tokio::time::timeout(Duration::from_secs(5), writer)
                .await
                .is_err()
        {
            warn!("the last status was not written within 5 s");
        }
    }

    fn report_apply(&self, outcome: &ApplyOutcome) {
        self.emit(event::Kind::Applied(v1::Applied {
            revision: outcome.revision,
            ok: outcome.ok,
            error: (!outcome.ok).then(|| v1::ErrorDetail {
                code: "invalid".into(),
                message: outcome.error.clone(),
                object: String::new(),
                field: String::new(),
            }),
            operations: u32::try_from(outcome.operations).unwrap_or(u32::MAX),
        }));
        let path = self.plan.state_dir.join(LAST_APPLY_FILE);
        if let Err(e) = write_atomic(
            &path,
            &serde_json::to_vec(outcome).unwrap_or_default(),
            false,
        ) {
            warn!(path = %path.display(), error = %e, "last apply not written");
        }
    }

    /// Publishes the view, and hands it to the status file's writer.
    fn publish(&self) {
        let view = Arc::new(View {
            status: self.status(),
            keys: self
                .plan
                .services
                .iter()
                .map(|(n, p)| (n.clone(), p.service.key))
                .collect(),
            ipvs: self.kernel.ipvs.clone(),
        });
        self.view_tx.send_replace(view.clone());
        if let Some(tx) = &self.status_tx {
            tx.send_replace(Some((self.plan.state_dir.join(STATUS_FILE), view)));
        }
    }

    fn status(&self) -> v1::AgentStatus {
        let quorum = self.health.quorum().borrow().clone();
        let vrrp = self
            .units
            .iter()
            .flat_map(|u| &u.handles)
            .map(|h| {
                let mut s =
                    crate::vrrp::status::instance_status(&h.config, &h.status.borrow(), &h.drops);
                s.base_priority = u32::from(h.config.priority);
                s
            })
            .collect();
        let services = self
            .plan
            .services
            .values()
            .map(|p| {
                let key = p.service.key;
                let desired = self.desired.get(&key);
                let real_servers = p
                    .real_servers
                    .iter()
                    .map(|r| {
                        let id = (p.name.clone(), r.dest.key);
                        let (health, last_failure) = if self.drained.contains_key(&id) {
                            (v1::HealthState::Drained, String::new())
                        } else {
                            self.real_health.get(&id).cloned().unwrap_or_else(|| {
                                let up = self.weights.get(&p.name).is_some_and(|w| {
                                    w.contains_key(&Target::Real(SocketAddr::new(
                                        r.dest.key.addr,
                                        r.dest.key.port,
                                    )))
                                });
                                if up {
                                    (v1::HealthState::Up, String::new())
                                } else {
                                    (v1::HealthState::Unspecified, String::new())
                                }
                            })
                        };
                        v1::RealServerStatus {
                            node: r.node.clone().unwrap_or_default(),
                            address: r.dest.key.addr.to_string(),
                            port: u32::from(r.dest.key.port),
                            configured_weight: r.dest.weight,
                            weight: desired
                                .and_then(|d| d.dests.get(&r.dest.key))
                                .map_or(0, |d| d.weight),
                            health: health as i32,
                            last_failure,
                            ..Default::default()
                        }
                    })
                    .collect();
                v1::ServiceStatus {
                    name: p.name.clone(),
                    key: key.to_string(),
                    scheduler: p.service.scheduler.clone(),
                    quorum: quorum.get(&p.name).is_none_or(|q| q.up),
                    sorry_active: self.sorry_active.get(&p.name).copied().unwrap_or(false),
                    real_servers,
                    stats: None,
                }
            })
            .collect();
        v1::AgentStatus {
            node: self.node.clone(),
            applied_revision: self.revision.0,
            applied_epoch: self.revision.1,
            vrrp,
            services,
            vips: vec![],
            last_error: self.last_error.clone(),
            time: Some(lb_proto::timestamp(SystemTime::now())),
        }
    }
}

/// The VRRP units of a plan, each with a fingerprint of its settings: the
/// members of a sync group form one unit, every other instance its own.
fn units_of(plan: &DirectorPlan) -> Vec<(Vec<usize>, String)> {
    let n = plan.vrrp.len();
    let mut unit_of: Vec<usize> = (0..n).collect();
    // Union of overlapping sync groups.
    fn root(u: &mut [usize], mut i: usize) -> usize {
        while u[i] != i {
            u[i] = u[u[i]];
            i = u[i];
        }
        i
    }
    for g in &plan.sync_groups {
        for w in g.windows(2) {
            let (a, b) = (root(&mut unit_of, w[0]), root(&mut unit_of, w[1]));
            unit_of[a.max(b)] = a.min(b);
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        let r = root(&mut unit_of, i);
        groups.entry(r).or_default().push(i);
    }
    groups
        .into_values()
        .map(|members| {
            let fp = members
                .iter()
                .map(|i| format!("{:?}", plan.vrrp[*i]))
                .collect::<Vec<_>>()
                .join("\n");
            (members, fp)
        })
        .collect()
}

/// What a repair operation fixes, in words.
fn describe_repair(op: &IpvsOp) -> (String, String) {
    match op {
        IpvsOp::AddService(s) => (format!("ipvs service {}", s.key), "added".into()),
        IpvsOp::SetService(s) => (format!("ipvs service {}", s.key), "options restored".into()),
        IpvsOp::DelService(k) => (format!("ipvs service {k}"), "deleted".into()),
        IpvsOp::AddDest(k, d) => (
            format!("ipvs destination {} of {k}", d.key),
            format!("added with weight {}", d.weight),
        ),
        IpvsOp::SetDest(k, d) => (
            format!("ipvs destination {} of {k}", d.key),
            format!("restored (weight {})", d.weight),
        ),
        IpvsOp::DelDest(k, d) => (format!("ipvs destination {d} of {k}"), "deleted".into()),
    }
}

fn api_error(e: DirectorError) -> crate::api::ApiError {
    use crate::api::ApiError;
    match e {
        DirectorError::NotFound(m) => ApiError::NotFound(m),
        DirectorError::Precondition(m) => ApiError::FailedPrecondition(m),
        DirectorError::Invalid(_) | DirectorError::Health(_) | DirectorError::Stale { .. } => {
            ApiError::InvalidArgument(e.to_string())
        }
        DirectorError::Stopped => ApiError::Unavailable(e.to_string()),
        e => ApiError::Internal(e.to_string()),
    }
}

#[tonic::async_trait]
impl crate::api::AgentBackend for DirectorHandle {
    async fn state(&self) -> Result<v1::AgentStatus, crate::api::ApiError> {
        Ok(DirectorHandle::state(self).await)
    }

    async fn services(
        &self,
        name: Option<String>,
    ) -> Result<Vec<v1::ServiceStatus>, crate::api::ApiError> {
        DirectorHandle::services(self, name.as_deref())
            .await
            .map_err(api_error)
    }

    fn events(&self) -> broadcast::Receiver<v1::Event> {
        DirectorHandle::events(self)
    }

    async fn drain(
        &self,
        service: String,
        real_server: String,
        deadline: Option<Duration>,
    ) -> Result<u32, crate::api::ApiError> {
        DirectorHandle::drain(self, &service, &real_server, deadline)
            .await
            .map_err(api_error)
    }

    async fn undrain(
        &self,
        service: String,
        real_server: String,
    ) -> Result<u32, crate::api::ApiError> {
        DirectorHandle::undrain(self, &service, &real_server)
            .await
            .map_err(api_error)
    }

    async fn failover(
        &self,
        instance: String,
        action: crate::api::FailoverAction,
        hold: Duration,
    ) -> Result<v1::VrrpState, crate::api::ApiError> {
        DirectorHandle::failover(self, &instance, action, hold)
            .await
            .map_err(api_error)
    }
}
