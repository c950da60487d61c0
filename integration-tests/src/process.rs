//! Long-running processes inside a lab host, killed when their guard drops.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::cmd::{describe_status, kill_group, wait_deadline};
use crate::error::{LabError, Result};

/// A background process started by [`crate::Host::spawn`].
///
/// It leads its own process group; signals go to the whole group, so helpers
/// it started go with it. Dropping the guard kills the group with SIGKILL and
/// reaps the process. Its stdout and stderr go to a log file ([`Proc::log`]).
pub struct Proc {
    child: Child,
    cmd: String,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proc")
            .field("pid", &self.child.id())
            .field("cmd", &self.cmd)
            .field("status", &self.status)
            .finish()
    }
}

impl Proc {
    pub(crate) fn new(child: Child, cmd: String, log: PathBuf) -> Proc {
        Proc {
            child,
            cmd,
            log,
            status: None,
        }
    }

    /// Its process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command line it was started with.
    pub fn cmd(&self) -> &str {
        &self.cmd
    }

    /// Path of the file that receives its stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything it wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Its exit status if it has exited (reaps it), `None` while it runs.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Sends `signal` to its process group (no effect once it exited).
    pub fn signal(&mut self, signal: Signal) {
        if self.is_running() {
            kill_group(self.pid(), signal);
        }
    }

    /// Waits up to `timeout` for it to exit on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        match wait_deadline(&mut self.child, Instant::now() + timeout) {
            Some(status) => {
                self.status = Some(status);
                Ok(status)
            }
            None => Err(LabError::WaitTimeout {
                what: format!("`{}` (pid {}) to exit", self.cmd, self.pid()),
                timeout,
                last: None,
            }),
        }
    }

    /// `kill -9`: SIGKILL to the group, then reaps it.
    pub fn kill(&mut self) -> ExitStatus {
        self.signal(Signal::SIGKILL);
        // SIGKILL cannot be caught; the wait is bounded all the same.
        self.wait_timeout(Duration::from_secs(10))
            .unwrap_or_default()
    }

    /// Graceful stop: SIGTERM, then SIGKILL if it has not exited within
    /// `grace`. Returns how it exited.
    pub fn terminate(&mut self, grace: Duration) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        match self.wait_timeout(grace) {
            Ok(status) => status,
            Err(_) => self.kill(),
        }
    }

    /// Fails with the log's tail if the process has already exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.try_status() {
            None => Ok(()),
            Some(status) => Err(LabError::Failed {
                cmd: self.cmd.clone(),
                status: format!("exited early, {}", describe_status(status)),
                stdout: String::new(),
                stderr: tail(&self.log(), 2000),
            }),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill();
        }
    }
}

/// The last `max` bytes of `s` (on a char boundary).
pub(crate) fn tail(s: &str, max: usize) -> String {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}
