//! The pure per-service side of health: what a transition does to the table.
//!
//! Given each real server's health, the service computes what the IPVS table
//! should hold (the *desired* weight of every destination, `None` for "not in
//! the table") and returns the difference with what it asked for before, as
//! [`ServiceAction`] values the director turns into IPVS operations:
//!
//! - an up real server has its configured weight (or the dynamic one from an
//!   exec check; 0 when drained), ramped up by slow start after a return;
//! - a down one is removed, or kept with weight 0 with `inhibit_on_failure`;
//! - the sorry server is in the table while no real server takes traffic
//!   (with `inhibit`, it stays with weight 0 otherwise);
//! - quorum: the sum of healthy weights is lost below `value - hysteresis`
//!   and regained at `value + hysteresis` (keepalived's quorum/hysteresis).

use std::{net::SocketAddr, time::Duration};

use tokio::time::Instant;

use super::{
    config::{Health, QuorumSpec, ServiceSpec, SorrySpec},
    state::Transition,
};

/// A destination of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// A real server.
    Real(SocketAddr),
    /// The sorry server.
    Sorry(SocketAddr),
}

/// A change to one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationChange {
    /// Add it with this weight.
    Add {
        /// Weight.
        weight: u32,
    },
    /// Change its weight.
    SetWeight {
        /// Weight.
        weight: u32,
    },
    /// Take it out.
    Remove,
}

/// What the director must do after a health change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAction {
    /// Change a destination of the service.
    Destination {
        /// Which.
        target: Target,
        /// What.
        change: DestinationChange,
    },
    /// The sorry server went into or out of use.
    SorryServer {
        /// In use now.
        active: bool,
    },
    /// Quorum was gained or lost.
    QuorumChanged {
        /// Held now.
        up: bool,
        /// Healthy weight now.
        weight: u64,
    },
}

/// Number of steps slow start ramps through at most.
pub const SLOW_START_STEPS: u32 = 16;

/// Weight of a real server `elapsed` after its return, ramping to `base`
/// over `slow_start` in up to [`SLOW_START_STEPS`] equal steps; never 0
/// unless `base` is 0. Also returns when the weight next changes, relative
/// to the return.
pub fn slow_start_weight(
    base: u32,
    elapsed: Duration,
    slow_start: Duration,
) -> (u32, Option<Duration>) {
    if base == 0 || slow_start.is_zero() || elapsed >= slow_start {
        return (base, None);
    }
    let steps = base.min(SLOW_START_STEPS) as u128;
    let ss = slow_start.as_nanos();
    // Step k (1-based) holds over [(k-1)*ss/steps, k*ss/steps).
    let k = (elapsed.as_nanos() * steps / ss + 1).min(steps);
    let weight = (base as u128 * k).div_ceil(steps) as u32;
    let next = (k < steps).then(|| Duration::from_nanos((k * ss).div_ceil(steps) as u64));
    (weight, next)
}

#[derive(Debug, Clone)]
struct RealState {
    addr: SocketAddr,
    weight: u32,
    drain: bool,
    health: Health,
    dynamic_weight: Option<u32>,
    /// When it came back up (slow start); `None` when up from the start.
    up_since: Option<Instant>,
    installed: Option<u32>,
}

impl RealState {
    /// Weight it carries when healthy, before slow start.
    fn healthy_weight(&self) -> u32 {
        if self.drain {
            0
        } else {
            self.dynamic_weight.unwrap_or(self.weight)
        }
    }
}

/// Health of a real server to start a service with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitialHealth {
    /// Health.
    pub health: Health,
    /// Dynamic weight, if an exec check gave one.
    pub weight: Option<u32>,
}

/// The health state of one service.
#[derive(Debug, Clone)]
pub struct ServiceState {
    name: String,
    inhibit_on_failure: bool,
    slow_start: Option<Duration>,
    sorry: Option<SorrySpec>,
    sorry_installed: Option<u32>,
    sorry_active: bool,
    quorum: QuorumSpec,
    quorum_up: bool,
    real: Vec<RealState>,
}

impl ServiceState {
    /// A service with nothing installed yet. `initial` gives each real
    /// server's health (from its check state). The actions add what the
    /// table needs; quorum starts held if the healthy weight reaches `value`.
    pub fn new(
        spec: &ServiceSpec,
        initial: impl Fn(SocketAddr) -> InitialHealth,
        now: Instant,
    ) -> (Self, Vec<ServiceAction>) {
        let mut st = Self::build(spec, initial);
        let actions = st.reconcile(now);
        (st, actions)
    }

    fn build(spec: &ServiceSpec, initial: impl Fn(SocketAddr) -> InitialHealth) -> Self {
        let mut st = ServiceState {
            name: spec.name.clone(),
            inhibit_on_failure: spec.inhibit_on_failure,
            slow_start: spec.slow_start,
            sorry: spec.sorry,
            sorry_installed: None,
            sorry_active: false,
            quorum: spec.quorum,
            quorum_up: false,
            real: vec![],
        };
        st.real = spec
            .real_servers
            .iter()
            .map(|rs| {
                let h = initial(rs.addr);
                RealState {
                    addr: rs.addr,
                    weight: rs.weight,
                    drain: rs.drain,
                    health: h.health,
                    dynamic_weight: h.weight,
                    up_since: None,
                    installed: None,
                }
            })
            .collect();
        st.quorum_up = st.healthy_weight() >= u64::from(st.quorum.value);
        st
    }

    /// The same service with a new spec: real servers kept keep their
    /// health, slow start and what is installed; quorum keeps its state.
    pub fn reconfigure(
        &self,
        spec: &ServiceSpec,
        initial: impl Fn(SocketAddr) -> InitialHealth,
        now: Instant,
    ) -> (Self, Vec<ServiceAction>) {
        let mut st = ServiceState::build(spec, initial);
        st.quorum_up = self.quorum_up;
        for rs in &mut st.real {
            if let Some(old) = self.real.iter().find(|o| o.addr == rs.addr) {
                rs.installed = old.installed;
                if old.health == rs.health {
                    rs.up_since = old.up_since;
                }
            }
        }
        st.sorry_installed = match (self.sorry, spec.sorry) {
            (Some(a), Some(b)) if a.addr == b.addr => self.sorry_installed,
            _ => None,
        };
        st.sorry_active = self.sorry_active;
        let mut actions = vec![];
        // Real servers that left the service, and a sorry server that moved.
        for old in &self.real {
            if old.installed.is_some() && !st.real.iter().any(|r| r.addr == old.addr) {
                actions.push(ServiceAction::Destination {
                    target: Target::Real(old.addr),
                    change: DestinationChange::Remove,
                });
            }
        }
        if let (Some(old), Some(_)) = (self.sorry, self.sorry_installed)
            && spec.sorry.is_none_or(|s| s.addr != old.addr)
        {
            actions.push(ServiceAction::Destination {
                target: Target::Sorry(old.addr),
                change: DestinationChange::Remove,
            });
        }
        actions.extend(st.reconcile(now));
        (st, actions)
    }

    /// Service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether quorum is held.
    pub fn quorum_up(&self) -> bool {
        self.quorum_up
    }

    /// Whether the sorry server is in use.
    pub fn sorry_active(&self) -> bool {
        self.sorry_active
    }

    /// Sum of the weights of healthy real servers.
    pub fn healthy_weight(&self) -> u64 {
        self.real
            .iter()
            .filter(|r| r.health == Health::Up)
            .map(|r| u64::from(r.healthy_weight()))
            .sum()
    }

    /// The weight this service last asked the table to hold for a real server.
    pub fn installed_weight(&self, addr: SocketAddr) -> Option<u32> {
        self.real
            .iter()
            .find(|r| r.addr == addr)
            .and_then(|r| r.installed)
    }

    /// A real server's check made a transition.
    pub fn on_transition(
        &mut self,
        addr: SocketAddr,
        transition: &Transition,
        now: Instant,
    ) -> Vec<ServiceAction> {
        let Some(rs) = self.real.iter_mut().find(|r| r.addr == addr) else {
            return vec![];
        };
        match transition {
            Transition::Up { weight } => {
                rs.health = Health::Up;
                rs.up_since = Some(now);
                if weight.is_some() {
                    rs.dynamic_weight = *weight;
                }
            }
            Transition::Down { .. } => {
                rs.health = Health::Down;
                rs.up_since = None;
            }
            Transition::Weight { weight } => rs.dynamic_weight = Some(*weight),
        }
        self.reconcile(now)
    }

    /// Time passed (slow start ramps).
    pub fn on_tick(&mut self, now: Instant) -> Vec<ServiceAction> {
        self.reconcile(now)
    }

    /// When the weights change next by themselves (slow start), if ever.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        let ss = self.slow_start?;
        self.real
            .iter()
            .filter(|r| r.health == Health::Up)
            .filter_map(|r| {
                let since = r.up_since?;
                let (_, next) = slow_start_weight(r.healthy_weight(), now - since, ss);
                next.map(|d| since + d)
            })
            .min()
    }

    fn desired(&self, rs: &RealState, now: Instant) -> Option<u32> {
        match rs.health {
            Health::Up => {
                let base = rs.healthy_weight();
                Some(match (self.slow_start, rs.up_since) {
                    (Some(ss), Some(since)) => slow_start_weight(base, now - since, ss).0,
                    _ => base,
                })
            }
            Health::Down => self.inhibit_on_failure.then_some(0),
        }
    }

    fn reconcile(&mut self, now: Instant) -> Vec<ServiceAction> {
        let mut actions = vec![];
        let desired: Vec<_> = self.real.iter().map(|rs| self.desired(rs, now)).collect();
        for (rs, want) in self.real.iter_mut().zip(desired) {
            if let Some(change) = diff(rs.installed, want) {
                actions.push(ServiceAction::Destination {
                    target: Target::Real(rs.addr),
                    change,
                });
            }
            rs.installed = want;
        }

        let healthy = self.healthy_weight();
        let active = healthy == 0;
        if active != self.sorry_active && self.sorry.is_some() {
            actions.push(ServiceAction::SorryServer { active });
        }
        self.sorry_active = active && self.sorry.is_some();
        if let Some(sorry) = self.sorry {
            let want = if active {
                Some(1)
            } else {
                sorry.inhibit.then_some(0)
            };
            if let Some(change) = diff(self.sorry_installed, want) {
                actions.push(ServiceAction::Destination {
                    target: Target::Sorry(sorry.addr),
                    change,
                });
            }
            self.sorry_installed = want;
        }

        let q = self.quorum;
        let lost = healthy < u64::from(q.value.saturating_sub(q.hysteresis));
        let regained = healthy >= u64::from(q.value) + u64::from(q.hysteresis);
        if self.quorum_up && lost {
            self.quorum_up = false;
            actions.push(ServiceAction::QuorumChanged {
                up: false,
                weight: healthy,
            });
        } else if !self.quorum_up && regained {
            self.quorum_up = true;
            actions.push(ServiceAction::QuorumChanged {
                up: true,
                weight: healthy,
            });
        }
        actions
    }
}

fn diff(have: Option<u32>, want: Option<u32>) -> Option<DestinationChange> {
    match (have, want) {
        (None, Some(weight)) => Some(DestinationChange::Add { weight }),
        (Some(a), Some(b)) if a != b => Some(DestinationChange::SetWeight { weight: b }),
        (Some(_), None) => Some(DestinationChange::Remove),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{
        config::{CheckSpec, RealServerSpec},
        outcome::Failure,
    };
    use proptest::prelude::*;

    const S: Duration = Duration::from_secs(1);

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 80))
    }

    fn spec(weights: &[u32]) -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            vip: None,
            port: 80,
            inhibit_on_failure: false,
            slow_start: None,
            sorry: None,
            quorum: QuorumSpec::default(),
            real_servers: weights
                .iter()
                .enumerate()
                .map(|(i, &w)| RealServerSpec {
                    name: format!("rs{}", i + 1),
                    addr: addr(i as u8 + 1),
                    weight: w,
                    drain: false,
                    check: CheckSpec::default(),
                })
                .collect(),
        }
    }

    fn all(h: Health) -> impl Fn(SocketAddr) -> InitialHealth {
        move |_| InitialHealth {
            health: h,
            weight: None,
        }
    }

    fn down() -> Transition {
        Transition::Down {
            reason: Failure::Refused,
        }
    }

    fn dest(i: u8, change: DestinationChange) -> ServiceAction {
        ServiceAction::Destination {
            target: Target::Real(addr(i)),
            change,
        }
    }

    // In: two real servers up from the start. Out: both added with their weights.
    // Then rs1 down: removed; rs1 up: added back at full weight (no slow start).
    #[test]
    fn down_removes_and_up_restores() {
        let t0 = Instant::now();
        let (mut st, a) = ServiceState::new(&spec(&[3, 2]), all(Health::Up), t0);
        assert_eq!(
            a,
            vec![
                dest(1, DestinationChange::Add { weight: 3 }),
                dest(2, DestinationChange::Add { weight: 2 })
            ]
        );
        assert!(st.quorum_up());
        assert_eq!(
            st.on_transition(addr(1), &down(), t0),
            vec![dest(1, DestinationChange::Remove)]
        );
        assert_eq!(
            st.on_transition(addr(1), &Transition::Up { weight: None }, t0 + S),
            vec![dest(1, DestinationChange::Add { weight: 3 })]
        );
    }

    // In: inhibit_on_failure; a real server goes down and back.
    // Out: weight 0 (kept), then its weight again; never removed.
    #[test]
    fn inhibit_on_failure_keeps_weight_zero() {
        let t0 = Instant::now();
        let mut sp = spec(&[3]);
        sp.inhibit_on_failure = true;
        let (mut st, a) = ServiceState::new(&sp, all(Health::Down), t0);
        assert_eq!(a[0], dest(1, DestinationChange::Add { weight: 0 }));
        assert_eq!(
            st.on_transition(addr(1), &Transition::Up { weight: None }, t0),
            vec![
                dest(1, DestinationChange::SetWeight { weight: 3 }),
                ServiceAction::QuorumChanged {
                    up: true,
                    weight: 3
                }
            ]
        );
        assert_eq!(
            st.on_transition(addr(1), &down(), t0),
            vec![
                dest(1, DestinationChange::SetWeight { weight: 0 }),
                ServiceAction::QuorumChanged {
                    up: false,
                    weight: 0
                }
            ]
        );
    }

    // In: slow start 10 s, weight 100, a return at t0.
    // Out: 16 steps: 7 at once, 13 after 625 ms, ..., 100 from 9.375 s on;
    // next_wakeup names each step's time.
    #[test]
    fn slow_start_ramps() {
        let t0 = Instant::now();
        let mut sp = spec(&[100]);
        sp.slow_start = Some(10 * S);
        let (mut st, _) = ServiceState::new(&sp, all(Health::Down), t0);
        let a = st.on_transition(addr(1), &Transition::Up { weight: None }, t0);
        assert_eq!(a[0], dest(1, DestinationChange::Add { weight: 7 }));
        let w1 = st.next_wakeup(t0).unwrap();
        assert_eq!(w1, t0 + Duration::from_millis(625));
        assert_eq!(
            st.on_tick(w1),
            vec![dest(1, DestinationChange::SetWeight { weight: 13 })]
        );
        assert_eq!(st.on_tick(w1 + Duration::from_millis(1)), vec![]);
        let last = st.on_tick(t0 + 10 * S);
        assert_eq!(
            last,
            vec![dest(1, DestinationChange::SetWeight { weight: 100 })]
        );
        assert_eq!(st.next_wakeup(t0 + 10 * S), None);
    }

    // In: a sorry server; both real servers fail, then one returns.
    // Out: the sorry server is added when the last one goes, removed on return.
    // With inhibit it stays with weight 0 instead.
    #[test]
    fn sorry_server_when_none_up() {
        for inhibit in [false, true] {
            let t0 = Instant::now();
            let mut sp = spec(&[1, 1]);
            let sorry = SocketAddr::from(([10, 0, 0, 99], 80));
            sp.sorry = Some(SorrySpec {
                addr: sorry,
                inhibit,
            });
            let (mut st, a) = ServiceState::new(&sp, all(Health::Up), t0);
            assert_eq!(
                a.contains(&ServiceAction::Destination {
                    target: Target::Sorry(sorry),
                    change: DestinationChange::Add { weight: 0 }
                }),
                inhibit
            );
            assert_eq!(
                st.on_transition(addr(1), &down(), t0),
                vec![dest(1, DestinationChange::Remove)]
            );
            let a = st.on_transition(addr(2), &down(), t0);
            let sorry_change = if inhibit {
                DestinationChange::SetWeight { weight: 1 }
            } else {
                DestinationChange::Add { weight: 1 }
            };
            assert_eq!(
                a,
                vec![
                    dest(2, DestinationChange::Remove),
                    ServiceAction::SorryServer { active: true },
                    ServiceAction::Destination {
                        target: Target::Sorry(sorry),
                        change: sorry_change
                    },
                    ServiceAction::QuorumChanged {
                        up: false,
                        weight: 0
                    },
                ]
            );
            assert!(st.sorry_active());
            let a = st.on_transition(addr(2), &Transition::Up { weight: None }, t0);
            let sorry_change = if inhibit {
                DestinationChange::SetWeight { weight: 0 }
            } else {
                DestinationChange::Remove
            };
            assert_eq!(
                a,
                vec![
                    dest(2, DestinationChange::Add { weight: 1 }),
                    ServiceAction::SorryServer { active: false },
                    ServiceAction::Destination {
                        target: Target::Sorry(sorry),
                        change: sorry_change
                    },
                    ServiceAction::QuorumChanged {
                        up: true,
                        weight: 1
                    },
                ]
            );
        }
    }

    // In: quorum 3 hysteresis 1, four real servers of weight 1, all up.
    // Out: lost only below 2 (at 1 healthy), regained only at 4.
    #[test]
    fn quorum_hysteresis() {
        let t0 = Instant::now();
        let mut sp = spec(&[1, 1, 1, 1]);
        sp.quorum = QuorumSpec {
            value: 3,
            hysteresis: 1,
        };
        let (mut st, _) = ServiceState::new(&sp, all(Health::Up), t0);
        let quorum = |a: Vec<ServiceAction>| {
            a.into_iter()
                .find(|x| matches!(x, ServiceAction::QuorumChanged { .. }))
        };
        assert!(st.quorum_up());
        assert_eq!(quorum(st.on_transition(addr(1), &down(), t0)), None); // 3
        assert_eq!(quorum(st.on_transition(addr(2), &down(), t0)), None); // 2
        assert_eq!(
            quorum(st.on_transition(addr(3), &down(), t0)), // 1 < 2
            Some(ServiceAction::QuorumChanged {
                up: false,
                weight: 1
            })
        );
        let up = Transition::Up { weight: None };
        assert_eq!(quorum(st.on_transition(addr(3), &up, t0)), None); // 2
        assert_eq!(quorum(st.on_transition(addr(2), &up, t0)), None); // 3
        assert_eq!(
            quorum(st.on_transition(addr(1), &up, t0)), // 4 >= 4
            Some(ServiceAction::QuorumChanged {
                up: true,
                weight: 4
            })
        );
    }

    // In: a dynamic weight transition. Out: the weight is set, quorum counts it.
    #[test]
    fn dynamic_weight_and_drain() {
        let t0 = Instant::now();
        let mut sp = spec(&[1, 1]);
        sp.real_servers[1].drain = true;
        let (mut st, a) = ServiceState::new(&sp, all(Health::Up), t0);
        assert_eq!(a[1], dest(2, DestinationChange::Add { weight: 0 }));
        assert_eq!(
            st.on_transition(addr(1), &Transition::Weight { weight: 9 }, t0),
            vec![dest(1, DestinationChange::SetWeight { weight: 9 })]
        );
        assert_eq!(st.healthy_weight(), 9);
    }

    // In: a config change that drops rs2, adds rs3, keeps rs1 (down, inhibited).
    // Out: rs2 removed, rs3 added, rs1 untouched (its health and table entry kept).
    #[test]
    fn reconfigure_keeps_unchanged() {
        let t0 = Instant::now();
        let mut sp = spec(&[1, 1]);
        sp.inhibit_on_failure = true;
        let (mut st, _) = ServiceState::new(&sp, all(Health::Up), t0);
        st.on_transition(addr(1), &down(), t0);
        let mut sp2 = sp.clone();
        sp2.real_servers.remove(1);
        let mut rs3 = sp.real_servers[0].clone();
        rs3.addr = addr(3);
        sp2.real_servers.push(rs3);
        let (st2, a) = st.reconfigure(
            &sp2,
            |a| InitialHealth {
                health: if a == addr(1) {
                    Health::Down
                } else {
                    Health::Up
                },
                weight: None,
            },
            t0,
        );
        assert_eq!(
            a,
            vec![
                dest(2, DestinationChange::Remove),
                dest(3, DestinationChange::Add { weight: 1 })
            ]
        );
        assert_eq!(st2.installed_weight(addr(1)), Some(0));
    }

    proptest! {
        // Slow start: never 0 (for base > 0), never above base, never falls,
        // reaches base at slow_start; the announced next change is a real change.
        #[test]
        fn slow_start_is_monotone(base in 1u32..70_000, ss_ms in 1u64..600_000, a in 0u64..700_000, b in 0u64..700_000) {
            let ss = Duration::from_millis(ss_ms);
            let (lo, hi) = (a.min(b), a.max(b));
            let (w1, next) = slow_start_weight(base, Duration::from_millis(lo), ss);
            let (w2, _) = slow_start_weight(base, Duration::from_millis(hi), ss);
            prop_assert!(w1 >= 1 && w1 <= base);
            prop_assert!(w1 <= w2);
            prop_assert_eq!(slow_start_weight(base, ss, ss).0, base);
            if let Some(n) = next {
                prop_assert!(n > Duration::from_millis(lo));
                prop_assert!(slow_start_weight(base, n, ss).0 > w1);
            }
        }
    }
}
