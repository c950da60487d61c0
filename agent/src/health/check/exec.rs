//! External command check, compatible with keepalived's MISC_CHECK.
//!
//! - exit 0: up; exit 1: down; with `dynamic_weight`, exit 2..=255 is up
//!   with weight `code - 2` (misc_dynamic); without it, any non-zero is down;
//! - the command runs without a shell, in a process group of its own, as the
//!   configured user, with `LB_RS_ADDRESS`, `LB_RS_PORT`, `LB_VIP` and
//!   `LB_VPORT` in its environment;
//! - at the timeout the whole process group gets SIGKILL (so children the
//!   command left behind die too), and the command is reaped.

use std::{net::SocketAddr, process::Stdio, time::Duration};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::{Pid, User},
};
use tokio::process::Command;

use crate::health::{
    config::ExecSpec,
    outcome::{CheckResult, Failure},
};

/// A user that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// No such user.
    #[error("user '{user}' does not exist")]
    Unknown {
        /// The name.
        user: String,
    },
    /// The user database could not be read.
    #[error("cannot look up user '{user}': {reason}")]
    Lookup {
        /// The name.
        user: String,
        /// Why.
        reason: String,
    },
}

/// An exec checker with its user resolved.
#[derive(Debug, Clone)]
pub struct ExecChecker {
    spec: ExecSpec,
    ids: Option<(u32, u32)>,
}

/// What the command's environment tells it about the real server and service.
#[derive(Debug, Clone, Copy)]
pub struct ExecEnv {
    /// The real server checked.
    pub real_server: SocketAddr,
    /// The service's virtual address, if any.
    pub vip: Option<std::net::IpAddr>,
    /// The service's port.
    pub vport: u16,
}

/// Kills the process group when dropped while armed: a check cancelled while
/// its command runs leaves nothing behind.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // ESRCH: the group is already gone.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

impl ExecChecker {
    /// Resolves the user, if one is configured.
    pub fn new(spec: ExecSpec) -> Result<Self, UserError> {
        let ids = match &spec.user {
            None => None,
            Some(user) => match User::from_name(user) {
                Ok(Some(u)) => Some((u.uid.as_raw(), u.gid.as_raw())),
                Ok(None) => return Err(UserError::Unknown { user: user.clone() }),
                Err(e) => {
                    return Err(UserError::Lookup {
                        user: user.clone(),
                        reason: e.to_string(),
                    });
                }
            },
        };
        Ok(ExecChecker { spec, ids })
    }

    /// Maps an exit code to a result.
    pub fn judge_exit(&self, code: i32) -> CheckResult {
        match code {
            0 => CheckResult::UP,
            2..=255 if self.spec.dynamic_weight => CheckResult::Up {
                weight: Some((code - 2) as u32),
            },
            code => CheckResult::Down(Failure::ExitCode { code }),
        }
    }

    /// Runs the command once.
    pub async fn check(&self, env: ExecEnv, timeout: Duration) -> CheckResult {
        let program = &self.spec.command[0];
        let mut cmd = Command::new(program);
        cmd.args(&self.spec.command[1..])
            .env("LB_RS_ADDRESS", env.real_server.ip().to_string())
            .env("LB_RS_PORT", env.real_server.port().to_string())
            .env("LB_VIP", env.vip.map(|v| v.to_string()).unwrap_or_default())
            .env("LB_VPORT", env.vport.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        if let Some((uid, gid)) = self.ids {
            cmd.gid(gid).uid(uid);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return CheckResult::Down(Failure::Spawn {
                    program: program.clone(),
                    reason: e.to_string(),
                });
            }
        };
        // The child leads its own group: its pid is the group id.
        let mut guard = GroupGuard {
            pgid: child.id().map(|id| Pid::from_raw(id as i32)),
        };
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => {
                // It exited: whatever it left in its group is its business.
                guard.pgid = None;
                match (
                    status.code(),
                    std::os::unix::process::ExitStatusExt::signal(&status),
                ) {
                    (Some(code), _) => self.judge_exit(code),
                    (None, Some(signal)) => CheckResult::Down(Failure::Signal { signal }),
                    (None, None) => CheckResult::Down(Failure::ExitCode { code: -1 }),
                }
            }
            Ok(Err(e)) => {
                guard.kill();
                let _ = child.wait().await;
                CheckResult::Down(Failure::Io {
                    op: "wait",
                    reason: e.to_string(),
                })
            }
            Err(_) => {
                guard.kill();
                let _ = child.wait().await;
                CheckResult::Down(Failure::Timeout)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(dynamic_weight: bool) -> ExecChecker {
        ExecChecker::new(ExecSpec {
            command: vec!["true".into()],
            user: None,
            dynamic_weight,
        })
        .unwrap()
    }

    // In: exit codes 0, 1, 2, 7, 255 with and without dynamic weight.
    // Out: MISC_CHECK semantics.
    #[test]
    fn exit_codes() {
        let plain = checker(false);
        let dynamic = checker(true);
        assert_eq!(plain.judge_exit(0), CheckResult::UP);
        assert_eq!(
            plain.judge_exit(1),
            CheckResult::Down(Failure::ExitCode { code: 1 })
        );
        assert_eq!(
            plain.judge_exit(7),
            CheckResult::Down(Failure::ExitCode { code: 7 })
        );
        assert_eq!(
            dynamic.judge_exit(1),
            CheckResult::Down(Failure::ExitCode { code: 1 })
        );
        assert_eq!(dynamic.judge_exit(2), CheckResult::Up { weight: Some(0) });
        assert_eq!(dynamic.judge_exit(7), CheckResult::Up { weight: Some(5) });
        assert_eq!(
            dynamic.judge_exit(255),
            CheckResult::Up { weight: Some(253) }
        );
    }

    #[test]
    fn unknown_user_is_an_error() {
        let e = ExecChecker::new(ExecSpec {
            command: vec!["true".into()],
            user: Some("no-such-user-lb".into()),
            dynamic_weight: false,
        })
        .unwrap_err();
        assert_eq!(
            e,
            UserError::Unknown {
                user: "no-such-user-lb".into()
            }
        );
    }
}
