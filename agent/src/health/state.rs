//! The pure per-real-server check state: when the next attempt is due, and
//! which results make a transition.
//!
//! Rules (keepalived's checkers, with vrrp_script's rise/fall added):
//!
//! - one *check* is up to `1 + retries` attempts; a failed attempt with
//!   retries left schedules the next attempt `delay_before_retry` later and
//!   counts nothing;
//! - a check that passes counts one success, one whose last attempt fails
//!   counts one failure; `rise` successes in a row take a down real server
//!   up, `fall` failures in a row take an up one down;
//! - checks start on slots `interval` apart; each slot is moved by a random
//!   amount in `0..=jitter`, without drift; slots missed while a check ran long
//!   are skipped, not run back to back;
//! - the first slot is the caller's `phase` (see [`spread`]) or, with a
//!   warmup, a random delay up to it;
//! - exec checks in dynamic-weight mode carry a weight; a new weight while up
//!   is a transition of its own.
//!
//! The state reads no clock and owns its random generator, seeded by the
//! caller, so every schedule is reproducible in tests.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::SmallRng};
use tokio::time::Instant;

use super::{
    config::{Health, Timing, Warmup},
    outcome::{CheckResult, Failure},
};

/// A change of a real server's health as the director must see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Went up; `weight` is the dynamic weight, if the check gave one.
    Up {
        /// Dynamic weight.
        weight: Option<u32>,
    },
    /// Went down.
    Down {
        /// The failure that tipped it.
        reason: Failure,
    },
    /// Still up, with a new dynamic weight.
    Weight {
        /// The weight.
        weight: u32,
    },
}

/// Offset of check `index` of `count` checks spread evenly over `interval`.
pub fn spread(index: usize, count: usize, interval: Duration) -> Duration {
    if count == 0 {
        return Duration::ZERO;
    }
    let nanos = interval.as_nanos() * (index % count) as u128 / count as u128;
    Duration::from_nanos(nanos as u64)
}

fn random_upto(rng: &mut SmallRng, max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_nanos(rng.random_range(0..=max.as_nanos() as u64))
}

/// Check state of one real server.
#[derive(Debug, Clone)]
pub struct CheckState {
    timing: Timing,
    health: Health,
    successes: u32,
    failures: u32,
    /// Failed attempts in the current check.
    attempt: u32,
    /// Start of the current check's slot (before jitter).
    slot: Instant,
    next_at: Instant,
    weight: Option<u32>,
    last_failure: Option<Failure>,
    rng: SmallRng,
}

impl CheckState {
    /// A new state. The first attempt is due at `now + phase`, or at a random
    /// time up to the warmup if one is set.
    pub fn new(timing: Timing, now: Instant, phase: Duration, seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let first = match timing.warmup {
            Warmup::Spread => phase,
            Warmup::Random(max) => random_upto(&mut rng, max),
        };
        CheckState {
            timing,
            health: timing.start_state,
            successes: 0,
            failures: 0,
            attempt: 0,
            slot: now + first,
            next_at: now + first,
            weight: None,
            last_failure: None,
            rng,
        }
    }

    /// When the next attempt is due.
    pub fn next_at(&self) -> Instant {
        self.next_at
    }

    /// Current health.
    pub fn health(&self) -> Health {
        self.health
    }

    /// The dynamic weight last given by the check.
    pub fn weight(&self) -> Option<u32> {
        self.weight
    }

    /// Why the last failed check failed.
    pub fn last_failure(&self) -> Option<&Failure> {
        self.last_failure.as_ref()
    }

    /// The timing this state runs with.
    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// Whether the next attempt is a retry.
    pub fn retrying(&self) -> bool {
        self.attempt > 0
    }

    fn schedule_next_slot(&mut self, now: Instant) {
        let interval = self.timing.interval;
        self.slot += interval;
        if self.slot <= now {
            // Skip the slots missed while this check ran (bounded arithmetic, no loop).
            let behind = now - self.slot;
            let missed = behind.as_nanos() / interval.as_nanos().max(1) + 1;
            self.slot += Duration::from_nanos((interval.as_nanos() * missed) as u64);
        }
        self.next_at = self.slot + random_upto(&mut self.rng, self.timing.jitter);
    }

    /// Takes the result of the attempt that was due; returns the transition it causes.
    pub fn on_result(&mut self, result: CheckResult, now: Instant) -> Option<Transition> {
        match result {
            CheckResult::Down(failure) => {
                if self.attempt < self.timing.retries {
                    self.attempt += 1;
                    self.next_at = now + self.timing.delay_before_retry;
                    return None;
                }
                self.attempt = 0;
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                self.last_failure = Some(failure.clone());
                self.schedule_next_slot(now);
                if self.health == Health::Up && self.failures >= self.timing.fall {
                    self.health = Health::Down;
                    return Some(Transition::Down { reason: failure });
                }
                None
            }
            CheckResult::Up { weight } => {
                self.attempt = 0;
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                self.schedule_next_slot(now);
                let changed = weight.is_some() && weight != self.weight;
                if weight.is_some() {
                    self.weight = weight;
                }
                if self.health == Health::Down {
                    if self.successes >= self.timing.rise {
                        self.health = Health::Up;
                        return Some(Transition::Up {
                            weight: self.weight,
                        });
                    }
                    return None;
                }
                match (changed, self.weight) {
                    (true, Some(weight)) => Some(Transition::Weight { weight }),
                    _ => None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    fn timing() -> Timing {
        Timing {
            interval: 1000 * MS,
            timeout: 300 * MS,
            rise: 1,
            fall: 1,
            retries: 0,
            delay_before_retry: 100 * MS,
            warmup: Warmup::Spread,
            start_state: Health::Down,
            jitter: Duration::ZERO,
        }
    }

    fn down() -> CheckResult {
        CheckResult::Down(Failure::Refused)
    }

    /// Runs the state through `results`, each given at its due time plus `took`;
    /// returns the transitions with the index of the result that caused them.
    fn drive(
        st: &mut CheckState,
        results: &[CheckResult],
        took: Duration,
    ) -> Vec<(usize, Transition)> {
        let mut out = vec![];
        for (i, r) in results.iter().enumerate() {
            let now = st.next_at() + took;
            if let Some(t) = st.on_result(r.clone(), now) {
                out.push((i, t));
            }
        }
        out
    }

    // In: start down, rise 3, fall 2; results up,up,up,down,up,down,down.
    // Out: up after the 3rd, down after the 7th (the lone failure is forgiven).
    #[test]
    fn rise_and_fall_are_counted_exactly() {
        let t0 = Instant::now();
        let mut st = CheckState::new(
            Timing {
                rise: 3,
                fall: 2,
                ..timing()
            },
            t0,
            Duration::ZERO,
            1,
        );
        let r = [
            CheckResult::UP,
            CheckResult::UP,
            CheckResult::UP,
            down(),
            CheckResult::UP,
            down(),
            down(),
        ];
        assert_eq!(
            drive(&mut st, &r, 10 * MS),
            vec![
                (2, Transition::Up { weight: None }),
                (
                    6,
                    Transition::Down {
                        reason: Failure::Refused
                    }
                )
            ]
        );
        assert_eq!(st.last_failure(), Some(&Failure::Refused));
    }

    // In: start up, fall 1, then a failure. Out: down at once; a success goes up (rise 1).
    #[test]
    fn start_state_up_goes_down_on_first_failure() {
        let t0 = Instant::now();
        let mut st = CheckState::new(
            Timing {
                start_state: Health::Up,
                ..timing()
            },
            t0,
            Duration::ZERO,
            1,
        );
        assert_eq!(st.health(), Health::Up);
        assert_eq!(st.on_result(CheckResult::UP, t0), None);
        assert!(matches!(
            st.on_result(down(), t0 + 1000 * MS),
            Some(Transition::Down { .. })
        ));
        assert_eq!(
            st.on_result(CheckResult::UP, t0 + 2000 * MS),
            Some(Transition::Up { weight: None })
        );
    }

    // In: retries 2, delay 100 ms; attempts fail, fail, fail at t0, +100, +200.
    // Out: retries are due 100 ms after each failure; only the third failure
    // counts (fall 1, start up -> down), and the next check is back on the
    // slot grid (t0 + 1 s).
    #[test]
    fn retries_wait_delay_before_retry_and_count_once() {
        let t0 = Instant::now();
        let mut st = CheckState::new(
            Timing {
                retries: 2,
                start_state: Health::Up,
                ..timing()
            },
            t0,
            Duration::ZERO,
            1,
        );
        assert_eq!(st.on_result(down(), t0 + 5 * MS), None);
        assert!(st.retrying());
        assert_eq!(st.next_at(), t0 + 105 * MS);
        assert_eq!(st.on_result(down(), t0 + 110 * MS), None);
        assert_eq!(st.next_at(), t0 + 210 * MS);
        assert!(matches!(
            st.on_result(down(), t0 + 215 * MS),
            Some(Transition::Down { .. })
        ));
        assert!(!st.retrying());
        assert_eq!(st.next_at(), t0 + 1000 * MS);
    }

    // In: retries 2; a failure, then a success on the retry.
    // Out: no transition and the failure is not counted toward fall.
    #[test]
    fn a_retry_that_passes_forgives_the_attempt() {
        let t0 = Instant::now();
        let mut st = CheckState::new(
            Timing {
                retries: 2,
                fall: 1,
                start_state: Health::Up,
                ..timing()
            },
            t0,
            Duration::ZERO,
            1,
        );
        assert_eq!(st.on_result(down(), t0), None);
        assert_eq!(st.on_result(CheckResult::UP, t0 + 100 * MS), None);
        assert_eq!(st.health(), Health::Up);
        assert_eq!(st.last_failure(), None);
    }

    // In: a check that takes 2.5 intervals. Out: the missed slots are skipped;
    // the next check is on the grid after now.
    #[test]
    fn missed_slots_are_skipped() {
        let t0 = Instant::now();
        let mut st = CheckState::new(timing(), t0, 200 * MS, 1);
        assert_eq!(st.next_at(), t0 + 200 * MS);
        st.on_result(CheckResult::UP, t0 + 2700 * MS);
        assert_eq!(st.next_at(), t0 + 3200 * MS);
        // Exactly on a slot boundary: the next one, not this one.
        st.on_result(CheckResult::UP, t0 + 4200 * MS);
        assert_eq!(st.next_at(), t0 + 5200 * MS);
    }

    // In: warmup 3 s, the same seed twice and another seed.
    // Out: the same seed gives the same first delay; it is within the warmup.
    #[test]
    fn warmup_is_random_from_the_seed() {
        let t0 = Instant::now();
        let tm = Timing {
            warmup: Warmup::Random(Duration::from_secs(3)),
            ..timing()
        };
        let a = CheckState::new(tm, t0, Duration::ZERO, 42).next_at();
        let b = CheckState::new(tm, t0, Duration::ZERO, 42).next_at();
        assert_eq!(a, b);
        let firsts: Vec<_> = (0..50)
            .map(|s| CheckState::new(tm, t0, Duration::ZERO, s).next_at() - t0)
            .collect();
        assert!(firsts.iter().all(|d| *d <= Duration::from_secs(3)));
        // 50 seeds do not all land on one value.
        assert!(firsts.iter().any(|d| *d != firsts[0]));
    }

    // In: dynamic weights 5 while down (rise 2), 5, then 7, then 7.
    // Out: Up{5} after the second result, then Weight{7} once.
    #[test]
    fn dynamic_weight() {
        let t0 = Instant::now();
        let mut st = CheckState::new(
            Timing {
                rise: 2,
                ..timing()
            },
            t0,
            Duration::ZERO,
            1,
        );
        let w = |w| CheckResult::Up { weight: Some(w) };
        assert_eq!(
            drive(&mut st, &[w(5), w(5), w(7), w(7), CheckResult::UP], MS),
            vec![
                (1, Transition::Up { weight: Some(5) }),
                (2, Transition::Weight { weight: 7 })
            ]
        );
        assert_eq!(st.weight(), Some(7));
    }

    #[test]
    fn spread_is_even() {
        let i = Duration::from_secs(1);
        assert_eq!(spread(0, 4, i), Duration::ZERO);
        assert_eq!(spread(1, 4, i), 250 * MS);
        assert_eq!(spread(3, 4, i), 750 * MS);
        assert_eq!(spread(0, 0, i), Duration::ZERO);
    }

    proptest! {
        // Jittered checks stay within [slot, slot + jitter] and never drift:
        // the k-th check starts in [phase + k*interval, phase + k*interval + jitter].
        #[test]
        fn jitter_never_drifts(seed: u64, jitter_ms in 0u64..999, took_ms in 0u64..900, n in 1usize..50) {
            let t0 = Instant::now();
            let jitter = Duration::from_millis(jitter_ms);
            let tm = Timing { jitter, ..timing() };
            let mut st = CheckState::new(tm, t0, 100 * MS, seed);
            for k in 0..n {
                let slot = t0 + 100 * MS + 1000 * MS * k as u32;
                prop_assert!(st.next_at() >= slot);
                prop_assert!(st.next_at() <= slot + jitter);
                // A check finishing before the next slot (took < 1 s - jitter).
                let now = st.next_at() + Duration::from_millis(took_ms.min(999 - jitter_ms));
                st.on_result(CheckResult::UP, now);
            }
        }

        // N evenly spread checks: consecutive offsets differ by interval/N (to 1 ns).
        #[test]
        fn spread_gaps_are_equal(n in 1usize..20_000, interval_ms in 1u64..60_000) {
            let i = Duration::from_millis(interval_ms);
            let step = i.as_nanos() / n as u128;
            for k in [0, n / 2, n - 1] {
                let a = spread(k, n, i).as_nanos();
                let b = if k + 1 == n { i.as_nanos() } else { spread(k + 1, n, i).as_nanos() };
                prop_assert!(b - a == step || b - a == step + 1);
            }
        }
    }
}
