//! The driver of one VRRP instance: a tokio task that owns the socket and
//! the timers, feeds the state machine and carries out its actions.
//!
//! ```text
//!                 ┌───────────────── instance task ─────────────────┐
//!  socket rx ───► │ decode + validate ──► Vrrp::handle ──► actions ─┼─► socket tx (adverts)
//!  timers ──────► │ (timerfd deadline per Timer)                    ├─► VipBackend add/remove
//!  tracking_rx ─► │ (watch<Tracking>)                               ├─► garp task (spawned, aborted)
//!  addr watch ──► │ (rtnetlink, 1 s re-check: VIPs put back)        │
//!  shutdown_rx ─► │ (watch<bool>)                                   ├─► notify task (mpsc, in order)
//!                 └─────────────────────────────────────────────────┴─► events_tx (broadcast), status (watch)
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::fsm::{self, Action, Event, State, Timer, Vrrp};
use super::packet::{
    Advertisement, Auth, DropReason, Expect, MULTICAST_V4, MULTICAST_V6, Version, validate,
};
use super::socket::{RecvDrop, SocketError, VrrpSocket};
use super::timer::PreciseTimer;
use super::track::{SyncLink, SyncReport, Tracking};
use super::vips::{Vip, VipBackend};
use crate::netif::garp::{Announcer, GarpError, GarpSchedule, run_schedule};
use crate::netif::links::{Change, Watch};

/// How often a master re-checks its VIPs besides the address notifications.
const VIP_RECHECK: Duration = Duration::from_secs(1);

/// Everything one instance needs, validated.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    /// Name (VI_1), in logs, events and notify hooks.
    pub name: String,
    /// Interface VRRP runs on and the VIPs go to.
    pub interface: String,
    /// Virtual router id.
    pub vrid: u8,
    /// Version 2 or 3.
    pub version: Version,
    /// Configured priority.
    pub priority: u8,
    /// Advertisement interval (whole seconds for version 2, centiseconds for 3).
    pub adver_int: Duration,
    /// Preempt a lower-priority master.
    pub preempt: bool,
    /// No preemption this long after startup.
    pub preempt_delay: Duration,
    /// Start as master (keepalived `state MASTER`).
    pub initial_master: bool,
    /// The virtual addresses, all of one family.
    pub vips: Vec<Vip>,
    /// IPv4 label of the VIPs.
    pub label: Option<String>,
    /// Version 2 authentication.
    pub auth: Auth,
    /// Unicast peers; empty means multicast.
    pub unicast_peers: Vec<IpAddr>,
    /// Source of adverts: an IPv4 address of the interface or its IPv6
    /// link-local address. `None`: found on the interface at start.
    pub source: Option<IpAddr>,
    /// Gratuitous ARP / NA schedule.
    pub garp: GarpSchedule,
    /// Compare advertised addresses with ours (false: vrrp_skip_check_adv_addr).
    pub check_addresses: bool,
    /// Notify commands.
    pub notify: NotifyCommands,
    /// The virtual MAC device (keepalived use_vmac) the VIPs go on and
    /// adverts and gratuitous ARP leave from; `None`: the interface itself.
    pub vmac: Option<String>,
}

impl InstanceConfig {
    /// The interface the VIPs go on: the virtual MAC device, if any.
    pub fn vip_interface(&self) -> &str {
        self.vmac.as_deref().unwrap_or(&self.interface)
    }

    /// The label of the VIPs: the kernel wants a label to start with the
    /// device's name, so none on a virtual MAC device.
    pub fn vip_label(&self) -> Option<&str> {
        if self.vmac.is_some() {
            None
        } else {
            self.label.as_deref()
        }
    }

    /// Whether the instance is IPv6.
    pub fn ipv6(&self) -> bool {
        self.vips.first().is_some_and(|v| v.address.is_ipv6())
    }

    /// The interval as the advert carries it: seconds (v2) or centiseconds (v3).
    pub fn adver_int_field(&self) -> u16 {
        match self.version {
            Version::V2 => self.adver_int.as_secs().clamp(1, 255) as u16,
            Version::V3 => (self.adver_int.as_millis() / 10).clamp(1, 4095) as u16,
        }
    }
}

/// Commands run on transitions; the instance name, the new state and the
/// priority are appended (keepalived: TYPE NAME STATE PRIORITY, TYPE being
/// "INSTANCE").
#[derive(Debug, Clone, Default)]
pub struct NotifyCommands {
    /// Run on every transition.
    pub any: Vec<String>,
    /// Run on becoming master.
    pub master: Vec<String>,
    /// Run on becoming backup.
    pub backup: Vec<String>,
    /// Run on entering FAULT.
    pub fault: Vec<String>,
    /// Run when the instance stops.
    pub stop: Vec<String>,
    /// Time limit of one command.
    pub timeout: Duration,
}

/// A state change, as published on the event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Instance name.
    pub instance: String,
    /// Virtual router id.
    pub vrid: u8,
    /// Old state.
    pub from: State,
    /// New state.
    pub to: State,
    /// Effective priority.
    pub priority: u8,
    /// Why.
    pub reason: &'static str,
}

/// The live state of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// State.
    pub state: State,
    /// Effective priority.
    pub priority: u8,
    /// The master as last seen.
    pub master: Option<IpAddr>,
    /// Interval in use.
    pub adver_int: Duration,
    /// When the instance entered its state.
    pub since: std::time::SystemTime,
    /// Transitions so far.
    pub transitions: u64,
}

/// Dropped advertisements by reason, with rate-limited logging.
#[derive(Debug, Default)]
pub struct DropCounters {
    inner: Mutex<BTreeMap<&'static str, (u64, Option<Instant>)>>,
}

/// At most one log line per reason this often.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

impl DropCounters {
    /// Counts a drop; logs the first and then at most one per reason every 10 s.
    pub fn count(&self, instance: &str, vrid: u8, src: Option<IpAddr>, reason: &DropReason) {
        let label = reason.label();
        let now = Instant::now();
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(label).or_insert((0, None));
        entry.0 += 1;
        let due = entry
            .1
            .is_none_or(|t| now.duration_since(t) >= DROP_LOG_EVERY);
        if due {
            entry.1 = Some(now);
            let total = entry.0;
            drop(map);
            // Adverts of other routers on the segment are normal: debug only.
            if matches!(reason, DropReason::UnknownVrid { .. }) {
                tracing::debug!(
                    instance,
                    vrid,
                    ?src,
                    reason = label,
                    total,
                    "dropped advertisement: {reason}"
                );
            } else {
                tracing::warn!(
                    instance,
                    vrid,
                    ?src,
                    reason = label,
                    total,
                    "dropped advertisement: {reason}"
                );
            }
        }
    }

    /// Counts so far, by reason label.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, (n, _))| (*k, *n)).collect()
    }
}

/// An instance that could not run.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The socket failed.
    #[error("instance {instance}: {source}")]
    Socket {
        /// Instance name.
        instance: String,
        /// Why.
        source: SocketError,
    },
    /// The announcer could not be set up.
    #[error("instance {instance}: {source}")]
    Garp {
        /// Instance name.
        instance: String,
        /// Why.
        source: GarpError,
    },
    /// The virtual MAC device could not be set up.
    #[error("instance {instance}: virtual MAC: {source}")]
    Vmac {
        /// Instance name.
        instance: String,
        /// Why.
        source: crate::netif::vmac::VmacError,
    },
    /// No source address.
    #[error(
        "instance {instance}: interface {interface} has no {family} address to send adverts from; add one or set unicastSource"
    )]
    NoSource {
        /// Instance name.
        instance: String,
        /// Interface.
        interface: String,
        /// "IPv4" or "IPv6 link-local".
        family: &'static str,
    },
}

/// Handles to a running instance.
#[derive(Debug)]
pub struct InstanceHandle {
    /// The settings it runs with.
    pub config: InstanceConfig,
    /// Live status.
    pub status: watch::Receiver<Status>,
    /// Drop counters.
    pub drops: Arc<DropCounters>,
    /// The task; ends after shutdown with the instance's result.
    pub task: JoinHandle<Result<(), InstanceError>>,
}

/// Starts an instance. It runs until `shutdown_rx` turns true (then sends
/// priority 0 if master, removes the VIPs and runs the stop hooks).
pub fn spawn(
    cfg: InstanceConfig,
    backend: Arc<dyn VipBackend>,
    tracking_rx: watch::Receiver<Tracking>,
    sync: Option<SyncLink>,
    events_tx: broadcast::Sender<Transition>,
    shutdown_rx: watch::Receiver<bool>,
) -> InstanceHandle {
    let drops = Arc::new(DropCounters::default());
    let (status_tx, status) = watch::channel(Status {
        state: State::Initialize,
        priority: cfg.priority,
        master: None,
        adver_int: cfg.adver_int,
        since: std::time::SystemTime::now(),
        transitions: 0,
    });
    let config = cfg.clone();
    let span = tracing::info_span!("vrrp", instance = %cfg.name, vrid = cfg.vrid);
    let task = tokio::spawn(
        run(
            cfg,
            backend,
            tracking_rx,
            sync,
            events_tx,
            shutdown_rx,
            status_tx,
            drops.clone(),
        )
        .instrument(span),
    );
    InstanceHandle {
        config,
        status,
        drops,
        task,
    }
}

struct Driver {
    cfg: InstanceConfig,
    fsm: Vrrp,
    socket: VrrpSocket,
    tx_socket: Option<VrrpSocket>,
    announcer: Arc<Announcer>,
    backend: Arc<dyn VipBackend>,
    garp_task: Option<JoinHandle<()>>,
    timers: BTreeMap<TimerKey, Instant>,
    notify_tx: mpsc::UnboundedSender<Transition>,
    events_tx: broadcast::Sender<Transition>,
    status_tx: watch::Sender<Status>,
    dsts: Vec<IpAddr>,
    sync_tx: Option<(usize, mpsc::UnboundedSender<(usize, SyncReport)>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    MasterDown,
    Adver,
    VipRetry,
}

impl From<Timer> for TimerKey {
    fn from(t: Timer) -> Self {
        match t {
            Timer::MasterDown => TimerKey::MasterDown,
            Timer::Adver => TimerKey::Adver,
            Timer::VipRetry => TimerKey::VipRetry,
        }
    }
}

async fn run(
    cfg: InstanceConfig,
    backend: Arc<dyn VipBackend>,
    mut tracking_rx: watch::Receiver<Tracking>,
    sync: Option<SyncLink>,
    events_tx: broadcast::Sender<Transition>,
    mut shutdown_rx: watch::Receiver<bool>,
    status_tx: watch::Sender<Status>,
    drops: Arc<DropCounters>,
) -> Result<(), InstanceError> {
    let ipv6 = cfg.ipv6();
    let source = match cfg.source {
        Some(s) => s,
        None => super::socket::interface_source(&cfg.interface, ipv6).ok_or_else(|| {
            InstanceError::NoSource {
                instance: cfg.name.clone(),
                interface: cfg.interface.clone(),
                family: if ipv6 { "IPv6 link-local" } else { "IPv4" },
            }
        })?,
    };
    let multicast = cfg.unicast_peers.is_empty();
    let socket = VrrpSocket::open(&cfg.interface, source, multicast).map_err(|source| {
        InstanceError::Socket {
            instance: cfg.name.clone(),
            source,
        }
    })?;
    // With a virtual MAC, adverts leave from its device (their source MAC is
    // the virtual one, so switches learn where the master is) and are still
    // received on the interface, where they arrive.
    let tx_socket = match &cfg.vmac {
        Some(vmac) => {
            let rtnl = crate::netif::Rtnl::connect().map_err(|e| InstanceError::Vmac {
                instance: cfg.name.clone(),
                source: e.into(),
            })?;
            let mac = crate::netif::vmac::virtual_mac(cfg.vrid, ipv6);
            let outcome = rtnl
                .ensure_vmac(vmac, &cfg.interface, mac)
                .await
                .map_err(|source| InstanceError::Vmac {
                    instance: cfg.name.clone(),
                    source,
                })?;
            tracing::info!(device = %vmac, adopted = outcome == crate::netif::Outcome::AlreadyThere, "virtual MAC device ready");
            Some(
                VrrpSocket::open(vmac, source, false).map_err(|source| InstanceError::Socket {
                    instance: cfg.name.clone(),
                    source,
                })?,
            )
        }
        None => None,
    };
    let announcer = Announcer::open(cfg.vip_interface(), !ipv6, ipv6).map_err(|source| {
        InstanceError::Garp {
            instance: cfg.name.clone(),
            source,
        }
    })?;
    let dsts = if multicast {
        vec![if ipv6 {
            IpAddr::V6(MULTICAST_V6)
        } else {
            IpAddr::V4(MULTICAST_V4)
        }]
    } else {
        cfg.unicast_peers.clone()
    };

    // VIPs left by a predecessor that was killed: start as master so that
    // the VIPs stay where they are (no flap) unless the election says
    // otherwise.
    let present = super::vips::addresses_on(cfg.vip_interface());
    let adopt = !cfg.vips.is_empty() && cfg.vips.iter().all(|v| present.contains(&v.address));
    if adopt {
        tracing::info!("VIPs already on the interface: adopting them as master");
    }
    let fsm = Vrrp::new(fsm::Config {
        version: cfg.version,
        priority: cfg.priority,
        adver_int: cfg.adver_int,
        preempt: cfg.preempt,
        preempt_delay: cfg.preempt_delay,
        primary_address: source,
        initial_master: cfg.initial_master || adopt,
        sync_group: sync.is_some(),
    });
    let expect = Expect {
        version: cfg.version,
        vrid: cfg.vrid,
        adver_int_v2: cfg.adver_int.as_secs().min(255) as u8,
        auth: cfg.auth,
        addresses: if cfg.check_addresses {
            cfg.vips.iter().map(|v| v.address).collect()
        } else {
            Vec::new()
        },
    };
    let (notify_tx, notify_rx) = mpsc::unbounded_channel();
    let notify_task = tokio::spawn(run_notify(cfg.notify.clone(), notify_rx));
    let mut d = Driver {
        cfg,
        fsm,
        socket,
        tx_socket,
        announcer: Arc::new(announcer),
        backend,
        garp_task: None,
        timers: BTreeMap::new(),
        notify_tx,
        events_tx,
        status_tx,
        dsts,
        sync_tx: sync.as_ref().map(|l| (l.index, l.reports_tx.clone())),
    };
    let mut sync_rx = sync.map(|l| l.events_rx);

    // Tracking state before startup decides between FAULT and BACKUP.
    let t = *tracking_rx.borrow_and_update();
    d.handle(Event::Tracking {
        delta: t.delta,
        fault: t.fault,
    })
    .await;
    d.handle(Event::Startup).await;
    if !adopt && d.fsm.state() != State::Master {
        // Leftovers of some VIPs only: take them off.
        for vip in d.cfg.vips.clone() {
            if present.contains(&vip.address) {
                let _ = d.backend.remove(d.cfg.vip_interface(), vip).await;
            }
        }
    }

    // VIPs deleted behind our back come back: rtnetlink address
    // notifications say when to look, a slow re-check covers lost ones.
    let mut addr_watch = crate::netif::links::Watch::subscribe()
        .inspect_err(|e| tracing::warn!(error = %e, "no address notifications; VIPs re-checked every second only"))
        .ok();
    let mut vip_check = tokio::time::interval(VIP_RECHECK);
    vip_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    // Adverts and the master down timer to the microsecond; tokio's own
    // timer (whole milliseconds) if the timerfd cannot be had.
    let mut precise = PreciseTimer::new()
        .inspect_err(
            |e| tracing::warn!(error = %e, "no timerfd; VRRP timers fire on whole milliseconds"),
        )
        .ok();
    let mut buf = vec![0u8; 2048];
    loop {
        let next_timer = d
            .timers
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(k, at)| (*k, *at));
        let sleep = async {
            match (next_timer, precise.as_mut()) {
                (Some((_, at)), Some(t)) => {
                    if let Err(e) = t.sleep_until(at).await {
                        tracing::warn!(error = %e, "timerfd wait failed");
                        tokio::time::sleep_until(at).await;
                    }
                }
                (Some((_, at)), None) => tokio::time::sleep_until(at).await,
                (None, _) => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            changed = shutdown_rx.changed() => {
                if changed.is_err() || *shutdown_rx.borrow() {
                    break;
                }
            }
            () = sleep => {
                if let Some((key, _)) = next_timer {
                    d.timers.remove(&key);
                    let event = match key {
                        TimerKey::MasterDown => Event::MasterDownTimer,
                        TimerKey::Adver => Event::AdverTimer,
                        TimerKey::VipRetry => Event::VipRetryTimer,
                    };
                    d.handle(event).await;
                }
            }
            r = d.socket.recv(&mut buf) => {
                match r {
                    Ok(Ok((rx, range))) => {
                        if let Some(event) = d.accept(&rx, &buf[range], &expect, &drops) {
                            d.handle(event).await;
                        }
                    }
                    Ok(Err(RecvDrop::BadIpHeader | RecvDrop::NotVrrp)) => {
                        drops.count(&d.cfg.name, d.cfg.vrid, None, &DropReason::BadIpHeader);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "receive failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            change = next_change(&mut addr_watch) => match change {
                Some(Change::Address) => d.repair_vips().await,
                Some(_) => {}
                None => addr_watch = None,
            },
            _ = vip_check.tick() => d.repair_vips().await,
            event = next_sync(&mut sync_rx) => match event {
                Some(event) => d.handle(event).await,
                None => sync_rx = None,
            },
            changed = tracking_rx.changed() => {
                if changed.is_ok() {
                    let t = *tracking_rx.borrow_and_update();
                    d.handle(Event::Tracking { delta: t.delta, fault: t.fault }).await;
                }
            }
        }
    }
    d.handle(Event::Shutdown).await;
    if let Some(vmac) = d.cfg.vmac.clone() {
        // Ours by name; a kill -9 leaves it (and the VIPs) for the next
        // process to adopt.
        drop(d.tx_socket.take());
        match crate::netif::Rtnl::connect() {
            Ok(rtnl) => {
                if let Err(e) = rtnl.delete_link(&vmac).await {
                    tracing::warn!(device = %vmac, error = %e, "virtual MAC device not removed");
                }
            }
            Err(e) => tracing::warn!(device = %vmac, error = %e, "virtual MAC device not removed"),
        }
    }
    // Let the stop hook and the transitions before it run to the end.
    drop(d);
    let _ = notify_task.await;
    Ok(())
}

/// The next event from the sync group; never, outside one.
async fn next_sync(rx: &mut Option<mpsc::UnboundedReceiver<Event>>) -> Option<Event> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next change of `watch`; never, without one.
async fn next_change(watch: &mut Option<Watch>) -> Option<Change> {
    match watch {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

impl Driver {
    /// Checks a received packet; returns the event it makes, counting drops.
    fn accept(
        &self,
        rx: &super::socket::Received,
        payload: &[u8],
        expect: &Expect,
        drops: &DropCounters,
    ) -> Option<Event> {
        let name = &self.cfg.name;
        let vrid = self.cfg.vrid;
        if rx.src == self.socket.src() {
            drops.count(
                name,
                vrid,
                Some(rx.src),
                &DropReason::OwnAdvert { src: rx.src },
            );
            return None;
        }
        if !self.cfg.unicast_peers.is_empty() && !self.cfg.unicast_peers.contains(&rx.src) {
            drops.count(
                name,
                vrid,
                Some(rx.src),
                &DropReason::UnknownPeer { src: rx.src },
            );
            return None;
        }
        let adv = match Advertisement::decode(payload, rx.src, rx.dst) {
            Ok(adv) => adv,
            Err(e) => {
                drops.count(name, vrid, Some(rx.src), &DropReason::Decode(e));
                return None;
            }
        };
        if let Err(reason) = validate(&adv, rx.ttl, expect) {
            drops.count(name, vrid, Some(rx.src), &reason);
            return None;
        }
        let adver_int = match adv.version {
            Version::V2 => Duration::from_secs(u64::from(adv.adver_int)),
            Version::V3 => Duration::from_millis(u64::from(adv.adver_int) * 10),
        };
        Some(Event::Advert {
            src: rx.src,
            priority: adv.priority,
            adver_int,
        })
    }

    async fn handle(&mut self, event: Event) {
        let mut next = Some(event);
        while let Some(event) = next.take() {
            let now = Instant::now();
            let actions = self.fsm.handle(event, now.into_std());
            for action in actions {
                // What an action reports (a VIP that could not be added)
                // goes in once the state machine has seen the whole batch.
                if let Some(follow) = self.execute(action, now).await {
                    next.get_or_insert(follow);
                }
            }
        }
        self.publish_status();
    }

    /// Puts the state machine's view in the status watch; every reader
    /// of a transition finds the status already at its new state.
    fn publish_status(&self) {
        self.status_tx.send_if_modified(|s| {
            let state = self.fsm.state();
            let (since, transitions) = if state == s.state {
                (s.since, s.transitions)
            } else {
                (std::time::SystemTime::now(), s.transitions + 1)
            };
            let new = Status {
                state,
                priority: self.fsm.priority(),
                master: self.fsm.master_address(),
                adver_int: self.fsm.master_adver_interval(),
                since,
                transitions,
            };
            let changed = *s != new;
            *s = new;
            changed
        });
    }

    /// Carries out one action; returns the event it leads to, if any.
    async fn execute(&mut self, action: Action, now: Instant) -> Option<Event> {
        match action {
            Action::SendAdvert { priority } => {
                let adv = Advertisement {
                    version: self.cfg.version,
                    vrid: self.cfg.vrid,
                    priority,
                    adver_int: self.cfg.adver_int_field(),
                    addresses: self.cfg.vips.iter().map(|v| v.address).collect(),
                    auth: self.cfg.auth,
                };
                let socket = self.tx_socket.as_ref().unwrap_or(&self.socket);
                for dst in &self.dsts {
                    let bytes = adv.encode(socket.src(), *dst);
                    if let Err(e) = socket.send(&bytes, *dst).await {
                        tracing::warn!(error = %e, %dst, "advert not sent");
                    }
                }
            }
            Action::InstallVips => {
                let mut failed = false;
                for vip in &self.cfg.vips {
                    if let Err(e) = self
                        .backend
                        .add(self.cfg.vip_interface(), *vip, self.cfg.vip_label())
                        .await
                    {
                        tracing::error!(error = %e, "VIP not added: giving mastership away");
                        failed = true;
                    }
                }
                if failed {
                    return Some(Event::VipAddFailed);
                }
            }
            Action::RemoveVips => {
                for vip in &self.cfg.vips {
                    if let Err(e) = self.backend.remove(self.cfg.vip_interface(), *vip).await {
                        tracing::error!(error = %e, "VIP not removed");
                    }
                }
            }
            Action::SendGarp => {
                if let Some(t) = self.garp_task.take() {
                    t.abort();
                }
                let announcer = self.announcer.clone();
                let ips: Vec<IpAddr> = self.cfg.vips.iter().map(|v| v.address).collect();
                let schedule = self.cfg.garp.clone();
                self.garp_task = Some(tokio::spawn(async move {
                    run_schedule(&announcer, &ips, &schedule).await;
                }));
            }
            Action::StopGarp => {
                if let Some(t) = self.garp_task.take() {
                    t.abort();
                }
            }
            Action::SetTimer { timer, at } => {
                // The state machine's clock is ours (`now` went in with the
                // event), so the offset carries over exactly.
                let after = at.saturating_duration_since(now.into_std());
                self.timers.insert(timer.into(), now + after);
            }
            Action::StopTimer { timer } => {
                self.timers.remove(&timer.into());
            }
            Action::SyncGroupState { state } => {
                if let Some((index, tx)) = &self.sync_tx {
                    let _ = tx.send((*index, SyncReport::State(state)));
                }
            }
            Action::SyncWant { master } => {
                if master && self.fsm.state() == State::Backup {
                    tracing::info!("master down: waiting for the rest of the sync group");
                }
                if let Some((index, tx)) = &self.sync_tx {
                    let _ = tx.send((*index, SyncReport::Want(master)));
                }
            }
            Action::Notify {
                from,
                to,
                priority,
                reason,
            } => {
                tracing::info!(
                    from = from.name(),
                    to = to.name(),
                    priority,
                    reason,
                    "state changed"
                );
                let t = Transition {
                    instance: self.cfg.name.clone(),
                    vrid: self.cfg.vrid,
                    from,
                    to,
                    priority,
                    reason,
                };
                self.publish_status();
                let _ = self.events_tx.send(t.clone());
                let _ = self.notify_tx.send(t);
            }
        }
        None
    }

    /// While master: puts back VIPs that left the interface behind our back
    /// (`ip addr del`, an interface reset) and says so. A VIP that cannot be
    /// put back is a failed add ([`Event::VipAddFailed`]).
    async fn repair_vips(&mut self) {
        if self.fsm.state() != State::Master {
            return;
        }
        let present = super::vips::addresses_on(self.cfg.vip_interface());
        let mut failed = false;
        for vip in self.cfg.vips.clone() {
            if present.contains(&vip.address) {
                continue;
            }
            match self
                .backend
                .add(self.cfg.vip_interface(), vip, self.cfg.vip_label())
                .await
            {
                Ok(()) => tracing::warn!(%vip, "VIP went missing while master: added again"),
                Err(e) => {
                    tracing::error!(%vip, error = %e, "VIP went missing while master and cannot be added again");
                    failed = true;
                }
            }
        }
        if failed {
            self.handle(Event::VipAddFailed).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(t) = self.garp_task.take() {
            t.abort();
        }
    }
}

/// Runs the notify commands of each transition, one at a time, in order.
async fn run_notify(cmds: NotifyCommands, mut rx: mpsc::UnboundedReceiver<Transition>) {
    let timeout = if cmds.timeout.is_zero() {
        Duration::from_secs(10)
    } else {
        cmds.timeout
    };
    while let Some(t) = rx.recv().await {
        let specific = match t.to {
            State::Master => &cmds.master,
            State::Backup => &cmds.backup,
            State::Fault => &cmds.fault,
            State::Initialize => &cmds.stop,
        };
        for cmd in [specific, &cmds.any] {
            let Some((program, args)) = cmd.split_first() else {
                continue;
            };
            // keepalived's words: INSTANCE name MASTER|BACKUP|FAULT|STOP priority.
            let state = match t.to {
                State::Initialize => "STOP",
                other => other.name(),
            };
            let child = tokio::process::Command::new(program)
                .args(args)
                .args(["INSTANCE", &t.instance, state, &t.priority.to_string()])
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .status();
            match tokio::time::timeout(timeout, child).await {
                Ok(Ok(s)) if s.success() => {}
                Ok(Ok(s)) => {
                    tracing::warn!(command = %program, status = %s, "notify command failed")
                }
                Ok(Err(e)) => {
                    tracing::warn!(command = %program, error = %e, "notify command did not start")
                }
                Err(_) => {
                    tracing::warn!(command = %program, ?timeout, "notify command killed after timeout")
                }
            }
        }
    }
}
