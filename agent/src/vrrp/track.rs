//! Tracking: interfaces, scripts and external hooks (service quorum) whose
//! state changes an instance's priority or puts it in FAULT.
//!
//! ```text
//!  link poller ─┐
//!  script runner├─ (index, up) ─► tracking task ─ watch<Tracking> ─► instance task
//!  quorum hook ─┘   mpsc            aggregate()
//! ```
//!
//! The maths is pure ([`aggregate`], [`RiseFall`]); the tasks only observe.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::fsm::{Event, State};

/// What the instance needs to know: the priority offset and whether a
/// weight-0 object is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tracking {
    /// Sum of the weights in effect.
    pub delta: i32,
    /// A weight-0 object is down.
    pub fault: bool,
}

/// keepalived's weight rules: a down object with weight 0 forces FAULT; a
/// negative weight counts while down, a positive one while up.
pub fn aggregate(objects: impl IntoIterator<Item = (i32, bool)>) -> Tracking {
    let mut t = Tracking::default();
    for (weight, up) in objects {
        match (weight, up) {
            (0, false) => t.fault = true,
            (w, false) if w < 0 => t.delta += w,
            (w, true) if w > 0 => t.delta += w,
            _ => {}
        }
    }
    t
}

/// Rise/fall debouncing of a script's results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    up: bool,
    streak: u32,
}

impl RiseFall {
    /// Starts up (keepalived assumes a script good until it fails `fall` times).
    pub fn new(rise: u32, fall: u32) -> Self {
        RiseFall {
            rise: rise.max(1),
            fall: fall.max(1),
            up: true,
            streak: 0,
        }
    }

    /// Current state.
    pub fn up(&self) -> bool {
        self.up
    }

    /// Records one result; returns the new state when it changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if ok { self.rise } else { self.fall };
        if self.streak >= needed {
            self.up = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }
}

/// One thing an instance tracks.
#[derive(Debug, Clone)]
pub enum Source {
    /// An interface's link (operstate up and carrier), polled.
    Interface {
        /// Interface name.
        name: String,
    },
    /// A command run periodically; exit status 0 is success.
    Script {
        /// Name, for logs.
        name: String,
        /// Program and arguments.
        command: Vec<String>,
        /// Period.
        interval: Duration,
        /// Time limit of one run.
        timeout: Duration,
        /// Successes in a row to count as up.
        rise: u32,
        /// Failures in a row to count as down.
        fall: u32,
    },
    /// Another component's verdict (service quorum): `true` is up.
    Hook {
        /// Name, for logs.
        name: String,
        /// Where the verdict changes arrive.
        rx: watch::Receiver<bool>,
    },
}

/// A tracked object with its weight.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// What.
    pub source: Source,
    /// Weight (0: FAULT while down).
    pub weight: i32,
}

/// How often interface links are polled when rtnetlink notifications are
/// not available.
pub const LINK_POLL: Duration = Duration::from_millis(20);
/// How often interface links are re-read besides the notifications.
pub const LINK_RECHECK: Duration = Duration::from_secs(1);

/// Whether `ifname` is up with carrier, from sysfs.
pub fn link_up(ifname: &str) -> bool {
    let read = |f: &str| std::fs::read_to_string(format!("/sys/class/net/{ifname}/{f}"));
    let oper = read("operstate").unwrap_or_default();
    let carrier = read("carrier").unwrap_or_default();
    // "unknown" is what dummy and some virtual devices report while working.
    matches!(oper.trim(), "up" | "unknown") && carrier.trim() == "1"
}

/// Starts the observers of `objects` and the task that aggregates them.
/// Returns the receiver the instance watches; everything stops when it and
/// its clones are dropped.
pub fn spawn(objects: Vec<Tracked>) -> watch::Receiver<Tracking> {
    let weights: Vec<i32> = objects.iter().map(|o| o.weight).collect();
    let mut states: Vec<bool> = vec![true; objects.len()];
    // Interfaces start as they are now, so that an instance started on a
    // down link begins in FAULT instead of flapping through BACKUP.
    for (i, o) in objects.iter().enumerate() {
        if let Source::Interface { name } = &o.source {
            states[i] = link_up(name);
        }
    }
    let initial = aggregate(weights.iter().copied().zip(states.iter().copied()));
    let (tx, rx) = watch::channel(initial);
    let (change_tx, mut change_rx) = mpsc::channel::<(usize, bool)>(64);
    for (i, o) in objects.into_iter().enumerate() {
        let change_tx = change_tx.clone();
        let start = states[i];
        tokio::spawn(observe(i, o.source, start, change_tx));
    }
    drop(change_tx);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                change = change_rx.recv() => {
                    let Some((i, up)) = change else { return };
                    states[i] = up;
                    let t = aggregate(weights.iter().copied().zip(states.iter().copied()));
                    tx.send_if_modified(|cur| {
                        let changed = *cur != t;
                        *cur = t;
                        changed
                    });
                }
                () = tx.closed() => return,
            }
        }
    });
    rx
}

/// Sync group FAULT (keepalived vrrp_sync_group): each member is in FAULT
/// when its own tracking says so or when another member's does. Priorities
/// stay each member's own. Only the members' own tracking goes in, so a
/// FAULT that the group caused never feeds back.
pub fn group_fault(own: &[Tracking]) -> Vec<Tracking> {
    (0..own.len())
        .map(|j| Tracking {
            delta: own[j].delta,
            fault: own.iter().any(|t| t.fault),
        })
        .collect()
}

/// Joins the members of a sync group: takes each member's own tracking and
/// returns what each member must follow (see [`group_fault`]).
pub fn sync_group(own: Vec<watch::Receiver<Tracking>>) -> Vec<watch::Receiver<Tracking>> {
    let current: Vec<Tracking> = own.iter().map(|rx| *rx.borrow()).collect();
    let (txs, rxs): (Vec<_>, Vec<_>) = group_fault(&current)
        .into_iter()
        .map(watch::channel)
        .unzip();
    let (change_tx, mut change_rx) = mpsc::channel::<(usize, Tracking)>(64);
    for (i, mut rx) in own.into_iter().enumerate() {
        let change_tx = change_tx.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let t = *rx.borrow_and_update();
                if change_tx.send((i, t)).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(change_tx);
    tokio::spawn(async move {
        let mut current = current;
        while let Some((i, t)) = change_rx.recv().await {
            current[i] = t;
            for (tx, t) in txs.iter().zip(group_fault(&current)) {
                tx.send_if_modified(|cur| {
                    let changed = *cur != t;
                    *cur = t;
                    changed
                });
            }
        }
    });
    rxs
}

/// Whether each member may take over: every other member wants to be
/// master (keepalived `vrrp_sync_can_goto_master`).
pub fn group_ready(wants: &[bool]) -> Vec<bool> {
    (0..wants.len())
        .map(|j| wants.iter().enumerate().all(|(i, w)| i == j || *w))
        .collect()
}

/// What a sync group member tells its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncReport {
    /// It went to this state on its own: the others follow.
    State(State),
    /// It wants to be master (or no longer does).
    Want(bool),
}

/// A member's end of its sync group relay.
#[derive(Debug)]
pub struct SyncLink {
    /// The member's index in the group.
    pub index: usize,
    /// Reports to the relay.
    pub reports_tx: mpsc::UnboundedSender<(usize, SyncReport)>,
    /// What the group tells the member.
    pub events_rx: mpsc::UnboundedReceiver<Event>,
}

/// Starts the relay of a sync group of `members` instances (MASTER and
/// BACKUP shared; FAULT goes through [`sync_group`]) and returns each
/// member's end. The relay stops when every member dropped its end.
///
/// ```text
///  member i ── (i, SyncReport) ──► relay ── Event::SyncGroupState ──► members j != i
///                                    └──── Event::SyncGroupReady ───► every member
/// ```
pub fn sync_relay(members: usize) -> Vec<SyncLink> {
    let (reports_tx, mut reports_rx) = mpsc::unbounded_channel::<(usize, SyncReport)>();
    let (event_txs, links): (Vec<_>, Vec<_>) = (0..members)
        .map(|index| {
            let (tx, events_rx) = mpsc::unbounded_channel();
            (
                tx,
                SyncLink {
                    index,
                    reports_tx: reports_tx.clone(),
                    events_rx,
                },
            )
        })
        .unzip();
    drop(reports_tx);
    tokio::spawn(async move {
        let mut wants = vec![false; members];
        let mut ready = group_ready(&wants);
        while let Some((from, report)) = reports_rx.recv().await {
            match report {
                SyncReport::State(state) => {
                    tracing::info!(member = from, state = state.name(), "sync group follows");
                    for (j, tx) in event_txs.iter().enumerate() {
                        if j != from {
                            let _ = tx.send(Event::SyncGroupState(state));
                        }
                    }
                }
                SyncReport::Want(w) => {
                    wants[from] = w;
                    let now = group_ready(&wants);
                    for (j, tx) in event_txs.iter().enumerate() {
                        if now[j] != ready[j] {
                            let _ = tx.send(Event::SyncGroupReady(now[j]));
                        }
                    }
                    ready = now;
                }
            }
        }
    });
    links
}

async fn observe(i: usize, source: Source, mut last: bool, tx: mpsc::Sender<(usize, bool)>) {
    match source {
        Source::Interface { name } => {
            // Link changes arrive from rtnetlink; sysfs is read when one does,
            // and polled slowly besides (every LINK_POLL without netlink).
            let mut watch = crate::netif::links::Watch::subscribe()
                .inspect_err(|e| tracing::warn!(error = %e, "no link notifications; polling"))
                .ok();
            let period = if watch.is_some() {
                LINK_RECHECK
            } else {
                LINK_POLL
            };
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                match watch.as_mut() {
                    Some(w) => {
                        tokio::select! {
                            change = w.next() => match change {
                                Some(crate::netif::links::Change::Link) => {}
                                Some(_) => continue,
                                None => {
                                    watch = None;
                                    tick = tokio::time::interval(LINK_POLL);
                                }
                            },
                            _ = tick.tick() => {}
                        }
                    }
                    None => {
                        tick.tick().await;
                    }
                }
                let up = link_up(&name);
                if up != last {
                    tracing::info!(interface = %name, up, "tracked interface changed");
                    last = up;
                    if tx.send((i, up)).await.is_err() {
                        return;
                    }
                }
            }
        }
        Source::Script {
            name,
            command,
            interval,
            timeout,
            rise,
            fall,
        } => {
            let mut rf = RiseFall::new(rise, fall);
            let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let ok = run_script(&command, timeout).await;
                if let Some(up) = rf.record(ok) {
                    tracing::info!(script = %name, up, "tracked script changed");
                    if tx.send((i, up)).await.is_err() {
                        return;
                    }
                }
            }
        }
        Source::Hook { name, mut rx } => loop {
            let up = *rx.borrow_and_update();
            if up != last {
                tracing::info!(hook = %name, up, "tracked hook changed");
                last = up;
                if tx.send((i, up)).await.is_err() {
                    return;
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        },
    }
}

async fn run_script(command: &[String], timeout: Duration) -> bool {
    let Some((program, args)) = command.split_first() else {
        return false;
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    matches!(tokio::time::timeout(timeout, child).await, Ok(Ok(s)) if s.success())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn weights_follow_keepalived() {
        assert_eq!(aggregate([]), Tracking::default());
        assert_eq!(
            aggregate([(-20, false), (-5, true), (10, true), (7, false)]),
            Tracking {
                delta: -10,
                fault: false
            }
        );
        assert_eq!(
            aggregate([(0, false), (-5, false)]),
            Tracking {
                delta: -5,
                fault: true
            }
        );
        assert!(!aggregate([(0, true)]).fault);
    }

    #[test]
    fn sync_group_shares_fault_not_priority() {
        let ok = |delta| Tracking {
            delta,
            fault: false,
        };
        assert_eq!(group_fault(&[ok(-10), ok(5)]), vec![ok(-10), ok(5)]);
        let g = group_fault(&[
            ok(-10),
            Tracking {
                delta: 0,
                fault: true,
            },
            ok(3),
        ]);
        assert!(g.iter().all(|t| t.fault));
        assert_eq!(g.iter().map(|t| t.delta).collect::<Vec<_>>(), [-10, 0, 3]);
    }

    #[test]
    fn group_is_ready_when_the_others_want_master() {
        assert_eq!(group_ready(&[false, false]), [false, false]);
        // The one that does not want yet is the one that may go.
        assert_eq!(group_ready(&[true, false]), [false, true]);
        assert_eq!(group_ready(&[true, true, false]), [false, false, true]);
        assert_eq!(group_ready(&[true, true]), [true, true]);
    }

    #[test]
    fn rise_and_fall_debounce() {
        let mut rf = RiseFall::new(2, 3);
        assert!(rf.up());
        assert_eq!(rf.record(false), None);
        assert_eq!(rf.record(false), None);
        assert_eq!(rf.record(true), None); // streak broken
        assert_eq!(rf.record(false), None);
        assert_eq!(rf.record(false), None);
        assert_eq!(rf.record(false), Some(false));
        assert_eq!(rf.record(true), None);
        assert_eq!(rf.record(true), Some(true));
    }

    proptest! {
        // The state only changes after `fall` failures or `rise` successes in a row.
        #[test]
        fn rise_fall_needs_a_run(rise in 1u32..5, fall in 1u32..5, results in prop::collection::vec(any::<bool>(), 0..50)) {
            let mut rf = RiseFall::new(rise, fall);
            let mut run = 0u32;
            let mut prev: Option<bool> = None;
            for ok in results {
                run = if prev == Some(ok) { run + 1 } else { 1 };
                prev = Some(ok);
                if let Some(up) = rf.record(ok) {
                    prop_assert_eq!(up, ok);
                    let needed = if ok { rise } else { fall };
                    prop_assert!(run >= needed);
                }
            }
        }
    }
}
