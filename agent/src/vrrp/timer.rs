//! A timer to the microsecond for the VRRP loop.
//!
//! Tokio's timer wheel fires on whole milliseconds, rounding a deadline up:
//! at a 10 ms advert interval that is up to a tenth of the interval, on
//! every advert and on the master down timer a takeover waits for. A
//! `timerfd` armed at the absolute deadline on `CLOCK_MONOTONIC` (the clock
//! of [`Instant`]) wakes the loop when the kernel's high-resolution timer
//! fires, as keepalived's does.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::time::clock_gettime;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// One re-armable deadline.
pub struct PreciseTimer {
    fd: AsyncFd<Fd>,
    /// The deadline the timerfd is armed for, until a wait reads its
    /// expiry: a wait dropped and made again for the same deadline (the
    /// loop woke for a packet) does not re-arm it.
    armed: Option<Instant>,
}

impl PreciseTimer {
    /// A timer on the current runtime (which must have I/O enabled).
    pub fn new() -> io::Result<Self> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // As for the VRRP socket: the timer owns its fd and the AsyncFd owns
        // the timer, so the fd cannot be closed behind the registration.
        #[allow(deprecated)]
        let fd = AsyncFd::new(Fd(fd))?;
        Ok(PreciseTimer { fd, armed: None })
    }

    /// Returns at `deadline` (at once if it has passed).
    pub async fn sleep_until(&mut self, deadline: Instant) -> io::Result<()> {
        let now = Instant::now();
        if deadline <= now {
            return Ok(());
        }
        if self.armed != Some(deadline) {
            // The same clock as Instant, read after it: the deadline in its
            // terms, late by the nanoseconds between the two reads, never
            // early.
            let mono = clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)?;
            let at = mono + TimeSpec::from_duration(deadline - now);
            self.armed = None;
            self.fd.get_ref().0.set(
                Expiration::OneShot(at),
                TimerSetTimeFlags::TFD_TIMER_ABSTIME,
            )?;
            self.armed = Some(deadline);
        }
        loop {
            let mut guard = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            match guard.try_io(|fd| {
                nix::unistd::read(fd.get_ref().0.as_fd(), &mut expirations).map_err(io::Error::from)
            }) {
                Ok(Ok(_)) => {
                    self.armed = None;
                    return Ok(());
                }
                Ok(Err(e)) => return Err(e),
                // Readiness left from an expiry a dropped wait did not
                // read (re-arming cleared it): wait again.
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    // In: deadlines 3.3 ms, 0.7 ms and 12.25 ms away, one already passed,
    // a wait dropped and made again for the same deadline, and a deadline
    // re-armed to an earlier one before it fired. Out: each returns, at or
    // after its deadline, never early. How late is not asserted here (a
    // loaded machine delays any thread): `make bench BENCH=vrrp` measures
    // it, as the takeover from the last advert against the master down
    // interval.
    #[tokio::test]
    async fn wakes_at_the_deadline_not_before() {
        let mut t = PreciseTimer::new().unwrap();
        for us in [3_300u64, 700, 12_250] {
            let deadline = Instant::now() + Duration::from_micros(us);
            tokio::time::timeout(Duration::from_secs(5), t.sleep_until(deadline))
                .await
                .expect("never fired")
                .unwrap();
            let woke = Instant::now();
            assert!(woke >= deadline, "woke {:?} early", deadline - woke);
        }
        let past = Instant::now() - Duration::from_millis(1);
        t.sleep_until(past).await.unwrap();

        let far = Instant::now() + Duration::from_secs(30);
        let armed = tokio::time::timeout(Duration::from_millis(20), t.sleep_until(far)).await;
        assert!(armed.is_err(), "a deadline 30 s away fired");
        // A wait dropped and made again for the same deadline still wakes.
        let soon = Instant::now() + Duration::from_millis(300);
        let dropped = tokio::time::timeout(Duration::from_millis(5), t.sleep_until(soon)).await;
        assert!(dropped.is_err());
        tokio::time::timeout(Duration::from_secs(5), t.sleep_until(soon))
            .await
            .expect("the same deadline, waited again, never fired")
            .unwrap();
        assert!(Instant::now() >= soon);
        let near = Instant::now() + Duration::from_millis(2);
        tokio::time::timeout(Duration::from_secs(5), t.sleep_until(near))
            .await
            .expect("the re-armed deadline never fired")
            .unwrap();
        assert!(Instant::now() >= near);
    }
}
