//! The VRRP state machine of RFC 5798 section 6 (and RFC 3768 section 6 for
//! version 2), with keepalived's additions: preempt delay, an initial-master
//! hint and a FAULT state for tracked failures.
//!
//! Pure: [`Vrrp::handle`] takes an [`Event`] and the current time and returns
//! the [`Action`]s to carry out. It reads no clock and owns no timer: it asks
//! for timers with [`Action::SetTimer`] and learns that one fired from
//! [`Event::MasterDownTimer`] / [`Event::AdverTimer`]. Timer events that
//! arrive before the deadline it set last (a timer the driver could not
//! cancel in time) are ignored.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::packet::Version;

/// Priority of the address owner (RFC 5798 section 5.2.4).
pub const PRIORITY_OWNER: u8 = 255;
/// Priority a master sends when it stops (RFC 5798 section 5.2.4).
pub const PRIORITY_STOP: u8 = 0;
/// How long an instance stays in FAULT after its VIPs could not be added
/// before it runs for master again.
pub const VIP_RETRY: Duration = Duration::from_secs(1);

/// Instance states (RFC 5798 section 6.4, plus keepalived's FAULT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not running (before startup, after shutdown).
    Initialize,
    /// Watching the master.
    Backup,
    /// Holding the VIPs and advertising.
    Master,
    /// A tracked interface, script or service failed: holding nothing,
    /// sending nothing, waiting for the failure to clear.
    Fault,
}

impl State {
    /// The lower-case name used in logs and notify hooks.
    pub fn name(self) -> &'static str {
        match self {
            State::Initialize => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

/// The settings of one instance the state machine needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Protocol version (it decides the skew-time formula).
    pub version: Version,
    /// Configured priority, 1..=255; 255 is the address owner.
    pub priority: u8,
    /// Our advertisement interval.
    pub adver_int: Duration,
    /// Preempt a lower-priority master (RFC 5798 Preempt_Mode).
    pub preempt: bool,
    /// After startup, do not preempt for this long (keepalived preempt_delay).
    pub preempt_delay: Duration,
    /// Our primary address on the interface, for the tie-break.
    pub primary_address: IpAddr,
    /// Start as master instead of backup (keepalived `state MASTER`); the
    /// election still decides once adverts arrive.
    pub initial_master: bool,
    /// A member of a sync group (keepalived vrrp_sync_group): it follows
    /// the other members to MASTER and BACKUP, and takes over only when
    /// they all want to (see [`Event::SyncGroupReady`]).
    pub sync_group: bool,
}

/// The timers the state machine asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Master_Down_Timer (backup).
    MasterDown,
    /// Adver_Timer (master).
    Adver,
    /// The end of a FAULT caused by VIPs that could not be added.
    VipRetry,
}

/// What happens to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The instance starts (RFC 5798 Startup event).
    Startup,
    /// The instance stops (RFC 5798 Shutdown event).
    Shutdown,
    /// A valid advertisement for our VRID arrived.
    Advert {
        /// Its source (the sender's primary address).
        src: IpAddr,
        /// Its priority.
        priority: u8,
        /// Its advertisement interval.
        adver_int: Duration,
    },
    /// The Master_Down_Timer fired.
    MasterDownTimer,
    /// The Adver_Timer fired.
    AdverTimer,
    /// Tracking changed: the priority offset of the tracked objects and
    /// whether one of them forces FAULT.
    Tracking {
        /// Sum of the weights in effect; added to the configured priority.
        delta: i32,
        /// A tracked object with weight 0 failed.
        fault: bool,
    },
    /// The driver could not add a VIP after [`Action::InstallVips`] (or when
    /// putting back a VIP deleted behind its back). A master without its
    /// addresses attracts traffic it cannot answer: the instance gives the
    /// VIPs away (priority 0, FAULT) and runs for master again after
    /// [`VIP_RETRY`]. keepalived logs the failure and stays master; a backup
    /// that holds the address serves clients, a master that does not holds
    /// them hostage.
    VipAddFailed,
    /// The VipRetry timer fired.
    VipRetryTimer,
    /// Another member of our sync group went to this state on its own
    /// ([`Action::SyncGroupState`]): a backup follows it to MASTER, a master
    /// follows it to BACKUP.
    SyncGroupState(State),
    /// Whether every other member of our sync group wants to be master
    /// ([`Action::SyncWant`]). Until they all do, a backup whose
    /// master down timer fires stays backup and only says that it wants to
    /// take over: the group moves when its last member agrees, so that no
    /// member is dragged to MASTER to meet a better master and drag the
    /// group back (keepalived's `vrrp_sync_can_goto_master`).
    SyncGroupReady(bool),
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send an advertisement with this priority (our interval and addresses).
    SendAdvert {
        /// The priority to send: the effective one, or 0 when stopping.
        priority: u8,
    },
    /// Add the VIPs to the interface.
    InstallVips,
    /// Remove the VIPs from the interface.
    RemoveVips,
    /// Start the gratuitous ARP / unsolicited NA schedule of a new master.
    SendGarp,
    /// Stop that schedule (no longer master).
    StopGarp,
    /// Arm a timer to fire at this time, replacing any earlier deadline.
    SetTimer {
        /// Which.
        timer: Timer,
        /// When.
        at: Instant,
    },
    /// Disarm a timer.
    StopTimer {
        /// Which.
        timer: Timer,
    },
    /// Tell the other members of our sync group to follow to `state`.
    SyncGroupState {
        /// MASTER or BACKUP.
        state: State,
    },
    /// Tell the other members of our sync group whether we want to be
    /// master (we are, or our master down timer ran out).
    SyncWant {
        /// Wants to be master.
        master: bool,
    },
    /// The state changed: run the notify hooks, publish the event.
    Notify {
        /// Old state.
        from: State,
        /// New state.
        to: State,
        /// Effective priority.
        priority: u8,
        /// Why.
        reason: &'static str,
    },
}

/// Skew_Time (RFC 5798 section 6.1): `((256 - priority) * interval) / 256`
/// for version 3; `(256 - priority) / 256` seconds for version 2 (RFC 3768
/// section 6.1).
pub fn skew_time(version: Version, priority: u8, master_adver_interval: Duration) -> Duration {
    let base = match version {
        Version::V2 => Duration::from_secs(1),
        Version::V3 => master_adver_interval,
    };
    base * (256 - u32::from(priority)) / 256
}

/// Master_Down_Interval (RFC 5798 section 6.1): three intervals plus the skew time.
pub fn master_down_interval(
    version: Version,
    priority: u8,
    master_adver_interval: Duration,
) -> Duration {
    3 * master_adver_interval + skew_time(version, priority, master_adver_interval)
}

/// Effective priority: the configured one plus the tracking offset, kept in
/// 1..=254; the address owner stays 255 (keepalived does the same).
pub fn effective_priority(configured: u8, delta: i32) -> u8 {
    if configured == PRIORITY_OWNER {
        return PRIORITY_OWNER;
    }
    (i32::from(configured) + delta).clamp(1, 254) as u8
}

/// One VRRP instance's protocol state.
#[derive(Debug, Clone)]
pub struct Vrrp {
    cfg: Config,
    state: State,
    track_delta: i32,
    track_fault: bool,
    master_adver_interval: Duration,
    master_down_at: Option<Instant>,
    adver_at: Option<Instant>,
    preempt_after: Option<Instant>,
    master: Option<IpAddr>,
    vip_retry_at: Option<Instant>,
    wants_master: bool,
    group_ready: bool,
}

impl Vrrp {
    /// A new instance in Initialize.
    pub fn new(cfg: Config) -> Self {
        let master_adver_interval = cfg.adver_int;
        Vrrp {
            cfg,
            state: State::Initialize,
            track_delta: 0,
            track_fault: false,
            master_adver_interval,
            master_down_at: None,
            adver_at: None,
            preempt_after: None,
            master: None,
            vip_retry_at: None,
            wants_master: false,
            group_ready: false,
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Configured priority.
    pub fn base_priority(&self) -> u8 {
        self.cfg.priority
    }

    /// Priority after tracking.
    pub fn priority(&self) -> u8 {
        effective_priority(self.cfg.priority, self.track_delta)
    }

    /// The interval of the master as last learnt (our own while master).
    pub fn master_adver_interval(&self) -> Duration {
        self.master_adver_interval
    }

    /// The current master's address: ours while master, the last advert's
    /// sender while backup.
    pub fn master_address(&self) -> Option<IpAddr> {
        match self.state {
            State::Master => Some(self.cfg.primary_address),
            State::Backup => self.master,
            _ => None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Handles one event at time `now`.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Startup => {
                if self.state == State::Initialize {
                    self.preempt_after = Some(now + self.cfg.preempt_delay);
                    self.start(now, "startup", true, &mut out);
                }
            }
            Event::Shutdown => self.shutdown(&mut out),
            Event::Advert {
                src,
                priority,
                adver_int,
            } => self.advert(src, priority, adver_int, now, &mut out),
            Event::MasterDownTimer => {
                if self.state == State::Backup && self.master_down_at.is_some_and(|at| now >= at) {
                    self.master_down_at = None;
                    if self.cfg.sync_group && !self.group_ready {
                        // Wait for the rest of the group, looking again
                        // after another interval as keepalived does.
                        self.set_wants(true, &mut out);
                        self.set_master_down_timer(now, self.master_down_interval(), &mut out);
                    } else {
                        self.become_master(now, "master down timer", &mut out);
                        self.tell_group(State::Master, &mut out);
                    }
                }
            }
            Event::AdverTimer => {
                if self.state == State::Master && self.adver_at.is_some_and(|at| now >= at) {
                    out.push(Action::SendAdvert {
                        priority: self.priority(),
                    });
                    self.set_adver_timer(now, &mut out);
                }
            }
            Event::Tracking { delta, fault } => self.tracking(delta, fault, now, &mut out),
            Event::SyncGroupState(State::Master) => {
                if self.state == State::Backup {
                    self.become_master(now, "sync group", &mut out);
                }
            }
            Event::SyncGroupState(State::Backup) => {
                if self.state == State::Master {
                    self.leave_master(&mut out);
                    self.master = None;
                    self.set_master_down_timer(now, self.master_down_interval(), &mut out);
                    self.set_wants(false, &mut out);
                    self.transition(State::Backup, "sync group", &mut out);
                }
            }
            Event::SyncGroupState(_) => {}
            Event::SyncGroupReady(ready) => self.group_ready = ready,
            Event::VipAddFailed => {
                if self.state == State::Master {
                    self.leave_master(&mut out);
                    self.set_wants(false, &mut out);
                    self.tell_group(State::Backup, &mut out);
                    let at = now + VIP_RETRY;
                    self.vip_retry_at = Some(at);
                    out.push(Action::SetTimer {
                        timer: Timer::VipRetry,
                        at,
                    });
                    self.transition(State::Fault, "VIP add failed", &mut out);
                }
            }
            Event::VipRetryTimer => {
                if self.vip_retry_at.is_some_and(|at| now >= at) {
                    self.vip_retry_at = None;
                    if self.state == State::Fault && !self.track_fault {
                        self.start(now, "VIP retry", false, &mut out);
                    }
                }
            }
        }
        out
    }

    /// Startup (RFC 5798 section 6.4.1), also used when FAULT clears (then
    /// the initial-master hint no longer applies).
    fn start(&mut self, now: Instant, reason: &'static str, startup: bool, out: &mut Vec<Action>) {
        if self.track_fault {
            self.transition(State::Fault, "tracked failure", out);
            return;
        }
        if self.cfg.priority == PRIORITY_OWNER {
            self.become_master(now, "address owner", out);
            self.tell_group(State::Master, out);
        } else if startup && self.cfg.initial_master {
            self.become_master(now, "initial state master", out);
            self.tell_group(State::Master, out);
        } else {
            self.master_adver_interval = self.cfg.adver_int;
            self.master = None;
            self.set_master_down_timer(now, self.master_down_interval(), out);
            self.transition(State::Backup, reason, out);
        }
    }

    fn shutdown(&mut self, out: &mut Vec<Action>) {
        match self.state {
            State::Initialize => return,
            State::Backup => {
                self.master_down_at = None;
                out.push(Action::StopTimer {
                    timer: Timer::MasterDown,
                });
            }
            State::Master => {
                self.leave_master(out);
                self.set_wants(false, out);
            }
            State::Fault => {
                if self.vip_retry_at.take().is_some() {
                    out.push(Action::StopTimer {
                        timer: Timer::VipRetry,
                    });
                }
            }
        }
        self.transition(State::Initialize, "shutdown", out);
    }

    fn advert(
        &mut self,
        src: IpAddr,
        priority: u8,
        adver_int: Duration,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let ours = self.priority();
        match self.state {
            State::Backup => {
                if priority == PRIORITY_STOP {
                    // RFC 5798 section 6.4.2: take over after Skew_Time only.
                    let skew = skew_time(self.cfg.version, ours, self.master_adver_interval);
                    self.set_master_down_timer(now, skew, out);
                    return;
                }
                let may_preempt =
                    self.cfg.preempt && self.preempt_after.is_none_or(|after| now >= after);
                if !may_preempt || priority >= ours {
                    self.master = Some(src);
                    self.learn_interval(adver_int);
                    self.set_master_down_timer(now, self.master_down_interval(), out);
                    self.set_wants(false, out);
                }
                // Otherwise a lower-priority master: let the timer run out.
            }
            State::Master => {
                if priority == PRIORITY_STOP {
                    // Another master stopping (or yielding to us after a
                    // partition healed): make sure the backups hear us, and
                    // announce the VIPs again for hosts that followed it.
                    out.push(Action::SendAdvert { priority: ours });
                    out.push(Action::SendGarp);
                    self.set_adver_timer(now, out);
                } else if priority > ours || (priority == ours && src > self.cfg.primary_address) {
                    // RFC 5798 section 6.4.3. Before leaving, one advert
                    // with priority 0 tells the new master that we held the
                    // VIPs (two masters: a partition healed), so that it
                    // announces them again at once; whichever of the two
                    // heard the other first, the winner re-sends gratuitous
                    // ARP.
                    self.adver_at = None;
                    out.push(Action::StopTimer {
                        timer: Timer::Adver,
                    });
                    out.push(Action::StopGarp);
                    out.push(Action::SendAdvert {
                        priority: PRIORITY_STOP,
                    });
                    out.push(Action::RemoveVips);
                    self.master = Some(src);
                    self.learn_interval(adver_int);
                    self.set_master_down_timer(now, self.master_down_interval(), out);
                    self.set_wants(false, out);
                    self.tell_group(State::Backup, out);
                    let reason = if priority > ours {
                        "higher priority advert"
                    } else {
                        "equal priority advert from higher address"
                    };
                    self.transition(State::Backup, reason, out);
                } else {
                    // A lower-priority master: two masters, after a
                    // partition healed. Answer at once so that it yields
                    // now, and announce the VIPs again: hosts may have
                    // learnt the other master's MAC meanwhile (keepalived
                    // does the same, garp_lower_prio_repeat).
                    out.push(Action::SendAdvert { priority: ours });
                    out.push(Action::SendGarp);
                }
            }
            State::Initialize | State::Fault => {}
        }
    }

    fn tracking(&mut self, delta: i32, fault: bool, now: Instant, out: &mut Vec<Action>) {
        self.track_delta = delta;
        let was_fault = self.track_fault;
        self.track_fault = fault;
        match (self.state, was_fault, fault) {
            (State::Backup, _, true) => {
                self.master_down_at = None;
                out.push(Action::StopTimer {
                    timer: Timer::MasterDown,
                });
                self.set_wants(false, out);
                self.transition(State::Fault, "tracked failure", out);
            }
            (State::Master, _, true) => {
                self.leave_master(out);
                self.set_wants(false, out);
                self.transition(State::Fault, "tracked failure", out);
            }
            (State::Fault, _, false) if self.vip_retry_at.is_none() => {
                self.start(now, "tracked failure cleared", false, out)
            }
            (State::Master, _, false) => {
                // The new priority goes out at once so that a backup with a
                // now higher priority preempts without waiting an interval.
                out.push(Action::SendAdvert {
                    priority: self.priority(),
                });
                self.set_adver_timer(now, out);
            }
            _ => {}
        }
    }

    /// Stops being master: adverts stop, one with priority 0 lets the
    /// backups take over after Skew_Time instead of three intervals, the
    /// VIPs go.
    fn leave_master(&mut self, out: &mut Vec<Action>) {
        self.adver_at = None;
        out.push(Action::StopTimer {
            timer: Timer::Adver,
        });
        out.push(Action::StopGarp);
        out.push(Action::SendAdvert {
            priority: PRIORITY_STOP,
        });
        out.push(Action::RemoveVips);
    }

    fn become_master(&mut self, now: Instant, reason: &'static str, out: &mut Vec<Action>) {
        if self.master_down_at.take().is_some() {
            out.push(Action::StopTimer {
                timer: Timer::MasterDown,
            });
        }
        self.master_adver_interval = self.cfg.adver_int;
        self.master = None;
        self.set_wants(true, out);
        out.push(Action::SendAdvert {
            priority: self.priority(),
        });
        out.push(Action::InstallVips);
        out.push(Action::SendGarp);
        self.set_adver_timer(now, out);
        self.transition(State::Master, reason, out);
    }

    /// Records whether we want to be master and tells the sync group when
    /// that changed.
    fn set_wants(&mut self, master: bool, out: &mut Vec<Action>) {
        if self.wants_master != master {
            self.wants_master = master;
            if self.cfg.sync_group {
                out.push(Action::SyncWant { master });
            }
        }
    }

    /// Asks the other members of our sync group to follow us to `state`
    /// (a change we made on our own, not one the group asked for).
    fn tell_group(&self, state: State, out: &mut Vec<Action>) {
        if self.cfg.sync_group {
            out.push(Action::SyncGroupState { state });
        }
    }

    /// A version 3 backup adopts the master's interval (RFC 5798 section
    /// 6.4.2); version 2 intervals must match and mismatches never get here.
    fn learn_interval(&mut self, adver_int: Duration) {
        if self.cfg.version == Version::V3 && !adver_int.is_zero() {
            self.master_adver_interval = adver_int;
        }
    }

    fn master_down_interval(&self) -> Duration {
        master_down_interval(
            self.cfg.version,
            self.priority(),
            self.master_adver_interval,
        )
    }

    fn set_master_down_timer(&mut self, now: Instant, after: Duration, out: &mut Vec<Action>) {
        let at = now + after;
        self.master_down_at = Some(at);
        out.push(Action::SetTimer {
            timer: Timer::MasterDown,
            at,
        });
    }

    fn set_adver_timer(&mut self, now: Instant, out: &mut Vec<Action>) {
        let at = now + self.cfg.adver_int;
        self.adver_at = Some(at);
        out.push(Action::SetTimer {
            timer: Timer::Adver,
            at,
        });
    }

    fn transition(&mut self, to: State, reason: &'static str, out: &mut Vec<Action>) {
        let from = self.state;
        self.state = to;
        out.push(Action::Notify {
            from,
            to,
            priority: self.priority(),
            reason,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg(priority: u8) -> Config {
        Config {
            version: Version::V3,
            priority,
            adver_int: Duration::from_millis(1000),
            preempt: true,
            preempt_delay: Duration::ZERO,
            primary_address: "10.0.0.1".parse().unwrap(),
            initial_master: false,
            sync_group: false,
        }
    }

    #[test]
    fn rfc_examples_of_skew_and_master_down() {
        // Priority 100 at 1 s: skew (156/256) s = 609.375 ms.
        let d = Duration::from_secs(1);
        assert_eq!(
            skew_time(Version::V3, 100, d),
            Duration::from_micros(609_375)
        );
        assert_eq!(
            master_down_interval(Version::V3, 100, d),
            Duration::from_micros(3_609_375)
        );
        // Version 2 skew ignores the interval.
        assert_eq!(
            skew_time(Version::V2, 100, Duration::from_secs(3)),
            Duration::from_micros(609_375)
        );
        // 10 ms adverts, priority 254: 3 * 10 ms + 2/256 * 10 ms.
        assert_eq!(
            master_down_interval(Version::V3, 254, Duration::from_millis(10)),
            Duration::from_nanos(30_078_125)
        );
    }

    proptest! {
        // A higher priority always has a shorter skew and master down
        // interval, so the best backup always takes over first; and the skew
        // stays below one interval.
        #[test]
        fn skew_orders_backups_by_priority(p in 1u8..254, cs in 1u64..4096) {
            let d = Duration::from_millis(cs * 10);
            let lo = skew_time(Version::V3, p, d);
            let hi = skew_time(Version::V3, p + 1, d);
            prop_assert!(hi <= lo);
            prop_assert!(lo < d);
            prop_assert!(master_down_interval(Version::V3, p + 1, d) <= master_down_interval(Version::V3, p, d));
            prop_assert!(master_down_interval(Version::V3, p, d) >= 3 * d);
            prop_assert!(master_down_interval(Version::V3, p, d) < 4 * d);
        }

        #[test]
        fn effective_priority_stays_in_range(p in 1u8..=255, delta in -1000i32..1000) {
            let e = effective_priority(p, delta);
            if p == 255 {
                prop_assert_eq!(e, 255);
            } else {
                prop_assert!((1..=254).contains(&e));
            }
        }

        // Whatever arrives in whatever order, the instance holds the VIPs
        // exactly while it is master, and a master always has its advert
        // timer armed.
        #[test]
        fn vips_held_exactly_while_master(events in prop::collection::vec(arb_event(), 0..60), sync_group in any::<bool>()) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut vrrp = Vrrp::new(Config { sync_group, ..cfg(100) });
            let mut holding = false;
            let mut adver_armed = false;
            for (step, event) in events {
                now += Duration::from_millis(step);
                for a in vrrp.handle(event, now) {
                    match a {
                        Action::InstallVips => { prop_assert!(!holding); holding = true; }
                        Action::RemoveVips => { prop_assert!(holding); holding = false; }
                        Action::SetTimer { timer: Timer::Adver, .. } => adver_armed = true,
                        Action::StopTimer { timer: Timer::Adver } => adver_armed = false,
                        _ => {}
                    }
                }
                prop_assert_eq!(holding, vrrp.state() == State::Master);
                if vrrp.state() == State::Master {
                    prop_assert!(adver_armed);
                }
            }
        }
    }

    fn arb_event() -> impl Strategy<Value = (u64, Event)> {
        let ev = prop_oneof![
            Just(Event::Startup),
            Just(Event::Shutdown),
            Just(Event::MasterDownTimer),
            Just(Event::AdverTimer),
            (any::<u8>(), 1u8..4, 1u64..300).prop_map(|(priority, host, cs)| Event::Advert {
                src: IpAddr::from([10, 0, 0, host]),
                priority,
                adver_int: Duration::from_millis(cs * 10),
            }),
            (-150i32..150, any::<bool>())
                .prop_map(|(delta, fault)| Event::Tracking { delta, fault }),
            Just(Event::VipAddFailed),
            Just(Event::VipRetryTimer),
            Just(Event::SyncGroupState(State::Master)),
            Just(Event::SyncGroupState(State::Backup)),
            any::<bool>().prop_map(Event::SyncGroupReady),
        ];
        (0u64..5000, ev)
    }
}
