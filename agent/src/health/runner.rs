//! The check runner: one tokio task that schedules every check of the agent.
//!
//! ```text
//!  HealthHandle::apply ──cmd_tx──► ┌──────────── runner task ────────────┐
//!                                  │ timer heap (next_at, check id)      │
//!                                  │ CheckState per real server          │──spawn──► check task
//!                                  │ ServiceState per service            │   (semaphore permit,
//!                                  └──────┬────────────────────┬─────────┘    one attempt)
//!                                         │                    ▲                  │
//!                             event_tx    │                    └──── result_tx ───┘
//!                        (HealthEvent)    ▼
//!                                 director / event stream      quorum watch ──► VRRP tracking
//! ```
//!
//! - Checks are spread evenly over their interval when they are created
//!   (see [`state::spread`](super::state::spread)), then keep their slot grid.
//! - At most `max_concurrent` attempts run at once (a semaphore); an attempt
//!   is a tokio task, never a thread.
//! - A new configuration keeps the state (health, counters, schedule) of
//!   every real server whose check did not change.
//! - Every attempt's result and latency go to an optional
//!   [`AttemptObserver`] (the metrics), from the attempt's task.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap, HashSet},
    hash::{Hash, Hasher},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use tokio::{
    sync::{Semaphore, mpsc, oneshot, watch},
    task::JoinHandle,
    time::Instant,
};
use tracing::{debug, info, warn};

use super::{
    check::{Checker, Probe, exec::ExecEnv},
    config::{CheckKind, Health, RealServerSpec, ServiceSpec},
    outcome::{CheckResult, Failure},
    service::{InitialHealth, ServiceAction, ServiceState},
    state::{CheckState, Transition, spread},
};

/// Settings of the runner.
#[derive(Debug, Clone, Copy)]
pub struct RunnerSettings {
    /// Attempts running at once, at most.
    pub max_concurrent: usize,
    /// Seed of the warmup and jitter draws.
    pub seed: u64,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        RunnerSettings {
            max_concurrent: 1024,
            seed: rand::random(),
        }
    }
}

/// What the runner reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthEvent {
    /// A real server's check made a transition.
    Transition {
        /// Service.
        service: String,
        /// Real server name (node or address).
        real_server: String,
        /// Its address.
        addr: SocketAddr,
        /// The transition.
        transition: Transition,
    },
    /// What the director must do for a service.
    Action {
        /// Service.
        service: String,
        /// The action.
        action: ServiceAction,
    },
}

/// Quorum of a service as VRRP tracking and status see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuorumState {
    /// Held.
    pub up: bool,
    /// Healthy weight.
    pub weight: u64,
}

/// A configuration the runner cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// A checker could not be built (an exec user that does not exist).
    #[error("service {service}, real server {real_server}: healthCheck.exec.user: {source}")]
    Checker {
        /// Service.
        service: String,
        /// Real server.
        real_server: String,
        /// Why.
        source: super::check::exec::UserError,
    },
    /// Two real servers of one service have the same address and port.
    #[error("service {service}: real server {addr} is listed twice")]
    Duplicate {
        /// Service.
        service: String,
        /// The address.
        addr: SocketAddr,
    },
    /// The runner has stopped.
    #[error("the health runner has stopped")]
    Stopped,
}

/// Counters of the runner, for status and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunnerStats {
    /// Attempts started.
    pub started: u64,
    /// Attempts finished.
    pub finished: u64,
    /// Largest delay between an attempt's due time and its start.
    pub max_start_lag: Duration,
    /// Attempts that started more than one interval late.
    pub late: u64,
    /// Checks scheduled now.
    pub checks: usize,
}

enum Command {
    /// The whole set of services.
    Apply(Vec<(ServiceSpec, Vec<Checker>)>, oneshot::Sender<()>),
    /// Services added or changed, and services gone; the others stay.
    Update {
        changed: Vec<(ServiceSpec, Vec<Checker>)>,
        removed: Vec<String>,
        assumed_up: HashSet<(String, SocketAddr)>,
        done: oneshot::Sender<()>,
    },
}

/// Talks to the runner task.
#[derive(Debug, Clone)]
pub struct HealthHandle {
    cmd_tx: mpsc::Sender<Command>,
    quorum_rx: watch::Receiver<BTreeMap<String, QuorumState>>,
    stats_rx: watch::Receiver<RunnerStats>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Apply(s, _) => write!(f, "Apply({} services)", s.len()),
            Command::Update {
                changed, removed, ..
            } => write!(
                f,
                "Update({} changed, {} removed)",
                changed.len(),
                removed.len()
            ),
        }
    }
}

impl HealthHandle {
    /// Replaces the services checked. Builds every checker first: on error
    /// nothing changes.
    pub async fn apply(&self, services: Vec<ServiceSpec>) -> Result<(), ApplyError> {
        let built = build_all(services)?;
        self.call(|done| Command::Apply(built, done)).await
    }

    /// As [`apply`](Self::apply), given only the services that are new or
    /// changed and the names of those gone: the others keep running
    /// untouched, so a change to one service of thousands costs one
    /// service's work. New checks of the real servers in `assumed_up`
    /// (service, address) start up whatever their start state: a restarted
    /// director adopts the destinations it finds in the kernel instead of
    /// pulling them until their first check passes. Only the checkers of
    /// `changed` are built; on error nothing changes.
    pub async fn update(
        &self,
        changed: Vec<ServiceSpec>,
        removed: Vec<String>,
        assumed_up: HashSet<(String, SocketAddr)>,
    ) -> Result<(), ApplyError> {
        let changed = build_all(changed)?;
        self.call(|done| Command::Update {
            changed,
            removed,
            assumed_up,
            done,
        })
        .await
    }

    /// Sends a command and waits until the runner has carried it out.
    async fn call(
        &self,
        command: impl FnOnce(oneshot::Sender<()>) -> Command,
    ) -> Result<(), ApplyError> {
        let (done, done_rx) = oneshot::channel();
        self.cmd_tx
            .send(command(done))
            .await
            .map_err(|_| ApplyError::Stopped)?;
        done_rx.await.map_err(|_| ApplyError::Stopped)
    }

    /// Quorum of every service: the hook VRRP tracking watches.
    pub fn quorum(&self) -> watch::Receiver<BTreeMap<String, QuorumState>> {
        self.quorum_rx.clone()
    }

    /// Runner counters.
    pub fn stats(&self) -> watch::Receiver<RunnerStats> {
        self.stats_rx.clone()
    }
}

/// Called after every check attempt with the service, the real server's
/// name, whether the attempt found it up, and how long the check took (from
/// the start of the check to its result, the wait for a permit left out).
/// It runs in the attempt's task: it must be quick and must not block.
pub type AttemptObserver = Arc<dyn Fn(&str, &str, bool, Duration) + Send + Sync>;

/// Checks that every checker of `services` can be built (an exec user
/// that exists, no real server twice), without applying anything.
pub fn validate(services: &[ServiceSpec]) -> Result<(), ApplyError> {
    build_all(services.to_vec()).map(drop)
}

type Built = Vec<(ServiceSpec, Vec<Checker>)>;

fn build_all(services: Vec<ServiceSpec>) -> Result<Built, ApplyError> {
    let mut built = Vec::with_capacity(services.len());
    for s in services {
        let mut seen = std::collections::HashSet::new();
        let mut checkers = Vec::with_capacity(s.real_servers.len());
        for rs in &s.real_servers {
            if !seen.insert(rs.addr) {
                return Err(ApplyError::Duplicate {
                    service: s.name.clone(),
                    addr: rs.addr,
                });
            }
            checkers.push(Checker::build(&rs.check.kind).map_err(|source| {
                ApplyError::Checker {
                    service: s.name.clone(),
                    real_server: rs.name.clone(),
                    source,
                }
            })?);
        }
        built.push((s, checkers));
    }
    Ok(built)
}

/// Starts the runner. Events go to `event_tx`, which the caller must drain
/// (a full channel holds the runner back). The task ends when every handle
/// is dropped.
pub fn spawn(
    settings: RunnerSettings,
    event_tx: mpsc::Sender<HealthEvent>,
) -> (HealthHandle, JoinHandle<()>) {
    spawn_with_observer(settings, event_tx, None)
}

/// [`spawn`], with `observer` told of every attempt (for metrics).
pub fn spawn_with_observer(
    settings: RunnerSettings,
    event_tx: mpsc::Sender<HealthEvent>,
    observer: Option<AttemptObserver>,
) -> (HealthHandle, JoinHandle<()>) {
    let (cmd_tx, cmd_rx) = mpsc::channel(8);
    let (quorum_tx, quorum_rx) = watch::channel(BTreeMap::new());
    let (stats_tx, stats_rx) = watch::channel(RunnerStats::default());
    let (result_tx, result_rx) = mpsc::unbounded_channel();
    let runner = Runner {
        settings,
        semaphore: Arc::new(Semaphore::new(settings.max_concurrent.max(1))),
        checks: HashMap::new(),
        index: HashMap::new(),
        services: BTreeMap::new(),
        specs: HashMap::new(),
        timers: BinaryHeap::new(),
        service_timers: BinaryHeap::new(),
        next_id: 0,
        event_tx,
        quorum_tx,
        stats_tx,
        stats: RunnerStats::default(),
        result_tx,
        observer,
    };
    let task = tokio::spawn(runner.run(cmd_rx, result_rx));
    (
        HealthHandle {
            cmd_tx,
            quorum_rx,
            stats_rx,
        },
        task,
    )
}

type CheckId = u64;

/// Results handled per wake-up at most.
const MAX_BATCH: usize = 4096;

struct Entry {
    service: String,
    spec: RealServerSpec,
    checker: Checker,
    probe: Probe,
    state: CheckState,
    running: bool,
}

struct AttemptDone {
    id: CheckId,
    result: CheckResult,
    lag: Duration,
    interval: Duration,
}

struct Runner {
    settings: RunnerSettings,
    semaphore: Arc<Semaphore>,
    checks: HashMap<CheckId, Entry>,
    index: HashMap<(String, SocketAddr), CheckId>,
    services: BTreeMap<String, ServiceState>,
    /// The spec each service was last applied with: an equal one is left
    /// alone, so a change to one service of thousands costs one service.
    specs: HashMap<String, ServiceSpec>,
    timers: BinaryHeap<Reverse<(Instant, CheckId)>>,
    service_timers: BinaryHeap<Reverse<(Instant, String)>>,
    next_id: CheckId,
    event_tx: mpsc::Sender<HealthEvent>,
    quorum_tx: watch::Sender<BTreeMap<String, QuorumState>>,
    stats_tx: watch::Sender<RunnerStats>,
    stats: RunnerStats,
    result_tx: mpsc::UnboundedSender<AttemptDone>,
    observer: Option<AttemptObserver>,
}

fn seed_for(seed: u64, service: &str, addr: SocketAddr) -> u64 {
    // DefaultHasher::new() has fixed keys: the same inputs give the same seed.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (seed, service, addr).hash(&mut h);
    h.finish()
}

impl Runner {
    async fn run(
        mut self,
        mut cmd_rx: mpsc::Receiver<Command>,
        mut result_rx: mpsc::UnboundedReceiver<AttemptDone>,
    ) {
        loop {
            let next = [
                self.timers.peek().map(|Reverse((at, _))| *at),
                self.service_timers.peek().map(|Reverse((at, _))| *at),
            ]
            .into_iter()
            .flatten()
            .min();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = cmd_rx.recv() => match cmd {
                    Some(Command::Apply(services, done)) => {
                        self.apply(services, Instant::now()).await;
                        let _ = done.send(());
                    }
                    Some(Command::Update { changed, removed, assumed_up, done }) => {
                        self.update(changed, &removed, &assumed_up, Instant::now()).await;
                        let _ = done.send(());
                    }
                    None => return,
                },
                Some(done) = result_rx.recv() => self.on_done(done, Instant::now()).await,
                () = sleep => {}
            }
            // Work in batches: one wake-up handles every result that is
            // waiting (bounded) and every timer that is due, so the runner
            // keeps up when thousands of check tasks share its thread.
            for _ in 0..MAX_BATCH {
                let Ok(done) = result_rx.try_recv() else {
                    break;
                };
                self.on_done(done, Instant::now()).await;
            }
            self.on_timers(Instant::now()).await;
        }
    }

    async fn emit(&mut self, service: &str, actions: Vec<ServiceAction>) {
        for action in actions {
            if let ServiceAction::QuorumChanged { up, weight } = action {
                info!(service, up, weight, "quorum changed");
                self.quorum_tx.send_modify(|q| {
                    q.insert(service.to_string(), QuorumState { up, weight });
                });
            }
            let _ = self
                .event_tx
                .send(HealthEvent::Action {
                    service: service.to_string(),
                    action,
                })
                .await;
        }
        let now = Instant::now();
        if let Some(at) = self.services.get(service).and_then(|s| s.next_wakeup(now)) {
            self.service_timers.push(Reverse((at, service.to_string())));
        }
    }

    fn initial(&self, service: &str) -> impl Fn(SocketAddr) -> InitialHealth + '_ {
        let service = service.to_string();
        move |addr| {
            let entry = self
                .index
                .get(&(service.clone(), addr))
                .and_then(|id| self.checks.get(id));
            match entry {
                Some(e) => InitialHealth {
                    health: e.state.health(),
                    weight: e.state.weight(),
                },
                None => InitialHealth {
                    health: Health::Down,
                    weight: None,
                },
            }
        }
    }

    /// The whole set of services: those gone, new or changed are updated,
    /// the others keep running untouched.
    async fn apply(&mut self, services: Vec<(ServiceSpec, Vec<Checker>)>, now: Instant) {
        let names: HashSet<&str> = services.iter().map(|(s, _)| s.name.as_str()).collect();
        let removed: Vec<String> = self
            .specs
            .keys()
            .filter(|n| !names.contains(n.as_str()))
            .cloned()
            .collect();
        drop(names);
        let changed: Vec<_> = services
            .into_iter()
            .filter(|(svc, _)| self.specs.get(&svc.name) != Some(svc))
            .collect();
        self.update(changed, &removed, &HashSet::new(), now).await;
    }

    /// Services new or changed, and services gone. A changed service keeps
    /// the state (health, counters, schedule) of every real server whose
    /// check did not change; the other services are not looked at.
    async fn update(
        &mut self,
        changed: Vec<(ServiceSpec, Vec<Checker>)>,
        removed: &[String],
        assumed_up: &HashSet<(String, SocketAddr)>,
        now: Instant,
    ) {
        for name in removed {
            if let Some(old) = self.specs.remove(name) {
                for rs in &old.real_servers {
                    if let Some(id) = self.index.remove(&(name.clone(), rs.addr)) {
                        self.checks.remove(&id);
                    }
                }
            }
            self.services.remove(name);
        }
        if !removed.is_empty() {
            let gone: HashSet<&str> = removed.iter().map(String::as_str).collect();
            self.quorum_tx
                .send_modify(|m| m.retain(|name, _| !gone.contains(name.as_str())));
        }
        // Which checks of the changed services stay, which are new.
        let mut fresh: Vec<(String, RealServerSpec, Checker, ExecEnv)> = vec![];
        for (svc, checkers) in &changed {
            let now_addrs: HashSet<SocketAddr> = svc.real_servers.iter().map(|r| r.addr).collect();
            if let Some(old) = self.specs.get(&svc.name) {
                for rs in &old.real_servers {
                    if !now_addrs.contains(&rs.addr)
                        && let Some(id) = self.index.remove(&(svc.name.clone(), rs.addr))
                    {
                        self.checks.remove(&id);
                    }
                }
            }
            for (rs, checker) in svc.real_servers.iter().zip(checkers) {
                let key = (svc.name.clone(), rs.addr);
                let env = ExecEnv {
                    real_server: rs.addr,
                    vip: svc.vip,
                    vport: svc.port,
                };
                match self
                    .index
                    .get(&key)
                    .and_then(|id| Some((*id, self.checks.get_mut(id)?)))
                {
                    Some((_, e)) if e.spec.check == rs.check => {
                        // Unchanged check: keep its state; take the new weight/drain/env.
                        e.spec = rs.clone();
                        e.probe.env = env;
                    }
                    other => {
                        if let Some((id, _)) = other {
                            self.checks.remove(&id);
                        }
                        self.index.remove(&key);
                        fresh.push((svc.name.clone(), rs.clone(), checker.clone(), env));
                    }
                }
            }
        }
        // New checks: spread evenly over their interval.
        let n = fresh.len();
        for (i, (service, rs, checker, env)) in fresh.into_iter().enumerate() {
            let mut timing = rs.check.timing;
            if rs.check.kind == CheckKind::None || assumed_up.contains(&(service.clone(), rs.addr))
            {
                timing.start_state = Health::Up;
            }
            let phase = spread(i, n, timing.interval);
            let state = CheckState::new(
                timing,
                now,
                phase,
                seed_for(self.settings.seed, &service, rs.addr),
            );
            let id = self.next_id;
            self.next_id += 1;
            if rs.check.kind != CheckKind::None {
                self.timers.push(Reverse((state.next_at(), id)));
            }
            let probe = Probe {
                target: rs.check_target(),
                bind: rs.check.bind_address,
                timeout: timing.timeout,
                env,
            };
            self.index.insert((service.clone(), rs.addr), id);
            self.checks.insert(
                id,
                Entry {
                    service,
                    spec: rs,
                    checker,
                    probe,
                    state,
                    running: false,
                },
            );
        }
        // Services: new or reconfigured.
        let mut all_actions = vec![];
        for (svc, _) in &changed {
            let (state, actions) = match self.services.get(&svc.name) {
                Some(old) => old.reconfigure(svc, self.initial(&svc.name), now),
                None => ServiceState::new(svc, self.initial(&svc.name), now),
            };
            let q = QuorumState {
                up: state.quorum_up(),
                weight: state.healthy_weight(),
            };
            self.quorum_tx.send_modify(|m| {
                m.insert(svc.name.clone(), q);
            });
            self.services.insert(svc.name.clone(), state);
            all_actions.push((svc.name.clone(), actions));
        }
        for (svc, _) in changed {
            self.specs.insert(svc.name.clone(), svc);
        }
        for (name, actions) in all_actions {
            self.emit(&name, actions).await;
        }
        self.stats.checks = self.checks.len();
        self.stats_tx.send_replace(self.stats);
        debug!(checks = self.checks.len(), "health configuration applied");
    }

    async fn on_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.service_timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, name))) = self.service_timers.pop() else {
                break;
            };
            if let Some(s) = self.services.get_mut(&name) {
                let actions = s.on_tick(now);
                self.emit(&name, actions).await;
            }
        }
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(e) = self.checks.get_mut(&id) else {
                continue; // removed by a new configuration
            };
            if e.running || e.state.next_at() != at {
                continue; // stale timer
            }
            e.running = true;
            self.stats.started += 1;
            let (checker, probe) = (e.checker.clone(), e.probe);
            let interval = e.state.timing().interval;
            let (semaphore, result_tx) = (self.semaphore.clone(), self.result_tx.clone());
            // The names are copied only when someone listens.
            let observer = self
                .observer
                .clone()
                .map(|o| (o, e.service.clone(), e.spec.name.clone()));
            tokio::spawn(async move {
                let Ok(_permit) = semaphore.acquire_owned().await else {
                    return;
                };
                let started = Instant::now();
                let lag = started.saturating_duration_since(at);
                let result = checker.check(probe).await;
                if let Some((observer, service, real_server)) = observer {
                    let up = matches!(result, CheckResult::Up { .. });
                    observer(&service, &real_server, up, started.elapsed());
                }
                let _ = result_tx.send(AttemptDone {
                    id,
                    result,
                    lag,
                    interval,
                });
            });
        }
    }

    async fn on_done(&mut self, done: AttemptDone, now: Instant) {
        self.stats.finished += 1;
        self.stats.max_start_lag = self.stats.max_start_lag.max(done.lag);
        if done.lag > done.interval {
            self.stats.late += 1;
        }
        if self.stats.finished.is_multiple_of(1024) {
            self.stats_tx.send_replace(self.stats);
        }
        let Some(e) = self.checks.get_mut(&done.id) else {
            return;
        };
        e.running = false;
        let failure: Option<Failure> = match &done.result {
            CheckResult::Down(f) => Some(f.clone()),
            CheckResult::Up { .. } => None,
        };
        let transition = e.state.on_result(done.result, now);
        self.timers.push(Reverse((e.state.next_at(), done.id)));
        let Some(transition) = transition else {
            if let Some(f) = failure {
                debug!(service = %e.service, real_server = %e.spec.name, reason = %f, "check failed");
            }
            return;
        };
        let (service, real_server, addr) = (e.service.clone(), e.spec.name.clone(), e.spec.addr);
        match &transition {
            Transition::Down { reason } => {
                warn!(service, real_server, %addr, %reason, "real server down")
            }
            Transition::Up { weight } => {
                info!(service, real_server, %addr, ?weight, "real server up")
            }
            Transition::Weight { weight } => {
                info!(service, real_server, %addr, weight, "real server weight")
            }
        }
        let _ = self
            .event_tx
            .send(HealthEvent::Transition {
                service: service.clone(),
                real_server,
                addr,
                transition: transition.clone(),
            })
            .await;
        if let Some(s) = self.services.get_mut(&service) {
            let actions = s.on_transition(addr, &transition, now);
            self.emit(&service, actions).await;
        }
    }
}
