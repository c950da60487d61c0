//! Waiting for a condition, bounded in time and in tries.
//!
//! For kernel and process state that changes on its own (an address that
//! appears, a server that starts listening). The probe runs at once, then
//! with a growing pause (10 ms up to 200 ms), and once more at the deadline.

use std::thread;
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};

const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_millis(200);

/// Waits until `cond` returns true, for at most `timeout`.
///
/// ```no_run
/// # use std::time::Duration;
/// # let ready = || true;
/// lb_lab::wait_for(|| ready(), Duration::from_secs(5)).unwrap();
/// ```
pub fn wait_for(mut cond: impl FnMut() -> bool, timeout: Duration) -> Result<()> {
    wait_for_ok(
        || {
            if cond() {
                Ok(())
            } else {
                Err("condition false")
            }
        },
        timeout,
    )
    .map_err(|e| match e {
        LabError::WaitTimeout { timeout, .. } => LabError::WaitTimeout {
            what: "condition".into(),
            timeout,
            last: None,
        },
        other => other,
    })
}

/// Waits until `probe` returns `Some`, for at most `timeout`; returns the value.
pub fn wait_for_some<T>(mut probe: impl FnMut() -> Option<T>, timeout: Duration) -> Result<T> {
    wait_for_ok(|| probe().ok_or("no value yet"), timeout)
}

/// Waits until `probe` returns `Ok`, for at most `timeout`; returns the value.
/// On timeout the error carries the probe's last error.
pub fn wait_for_ok<T, E: std::fmt::Display>(
    mut probe: impl FnMut() -> Result<T, E>,
    timeout: Duration,
) -> Result<T> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut pause = FIRST_PAUSE;
    let mut tries = 0u32;
    loop {
        tries += 1;
        let last = match probe() {
            Ok(v) => return Ok(v),
            Err(e) => e.to_string(),
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(LabError::WaitTimeout {
                what: format!("a probe ({tries} tries)"),
                timeout,
                last: Some(last),
            });
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_ok_value() {
        let mut n = 0;
        let v = wait_for_ok(
            || {
                n += 1;
                if n >= 3 { Ok(n) } else { Err("not yet") }
            },
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(v, 3);
    }

    #[test]
    fn times_out_with_the_last_error() {
        let err =
            wait_for_ok(|| Err::<(), _>("still down"), Duration::from_millis(50)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("still down") && msg.contains("50ms"), "{msg}");
    }

    #[test]
    fn bool_condition_times_out() {
        let start = Instant::now();
        assert!(wait_for(|| false, Duration::from_millis(30)).is_err());
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert!(wait_for(|| true, Duration::from_millis(30)).is_ok());
    }
}
