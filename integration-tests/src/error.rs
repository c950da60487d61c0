//! The lab's error type: every failure names the command or the step that
//! failed and carries what the kernel or the tool said about it.

use std::time::Duration;

/// What went wrong in a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A command could not be started at all (not installed, not executable).
    #[error("`{cmd}` could not start: {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// The error from `exec`.
        source: std::io::Error,
    },
    /// A command ran past its time limit and was killed.
    #[error("`{cmd}` timed out after {timeout:?} and was killed; stderr: {stderr}")]
    Timeout {
        /// The command line.
        cmd: String,
        /// The limit it ran into.
        timeout: Duration,
        /// What it had written to stderr until then.
        stderr: String,
    },
    /// A command exited unsuccessfully.
    #[error("`{cmd}` failed ({status}); stderr: {stderr}")]
    Failed {
        /// The command line.
        cmd: String,
        /// Exit code or signal, as text.
        status: String,
        /// Its stdout.
        stdout: String,
        /// Its stderr.
        stderr: String,
    },
    /// A file or process operation of the lab itself failed.
    #[error("{what}: {source}")]
    Io {
        /// What the lab was doing.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Entering a network namespace failed.
    #[error("entering network namespace {netns}: {source}")]
    Setns {
        /// The namespace name.
        netns: String,
        /// The error from setns(2).
        source: nix::Error,
    },
    /// A condition did not become true in time.
    #[error("timed out after {timeout:?} waiting for {what}{}", last_error(.last))]
    WaitTimeout {
        /// What was waited for.
        what: String,
        /// The limit.
        timeout: Duration,
        /// The last error the probe returned, if it returned errors.
        last: Option<String>,
    },
    /// A name or argument given to the lab is not usable.
    #[error("invalid {what} {value:?}: {why}")]
    Invalid {
        /// What kind of value (host name, address, ...).
        what: &'static str,
        /// The value.
        value: String,
        /// Why it is refused.
        why: String,
    },
}

fn last_error(last: &Option<String>) -> String {
    match last {
        Some(e) => format!(" (last error: {e})"),
        None => String::new(),
    }
}

/// Result of lab operations.
pub type Result<T, E = LabError> = std::result::Result<T, E>;
