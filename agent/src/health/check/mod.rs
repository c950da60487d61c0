//! The checkers: one module per kind, and [`Checker`] that runs any of them.
//!
//! A checker is built once per real server (TLS settings, compiled patterns,
//! the exec user resolved) and run once per attempt. Each kind applies the
//! timeout itself (a UDP check without required reply *waits* it out, an exec
//! check kills its process group at it); [`Checker::check`] adds a backstop.

pub mod dns;
pub mod exec;
pub mod grpc;
pub mod http;
pub mod tcp;
pub mod tls;
pub mod udp;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use super::{
    config::{CheckKind, DnsSpec, UdpSpec},
    outcome::{CheckResult, Failure},
};

/// Extra time the backstop allows beyond a check's own timeout.
const BACKSTOP_GRACE: Duration = Duration::from_secs(1);

/// Where and how one attempt runs.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// Address checked (the real server's, or the connect address/port).
    pub target: SocketAddr,
    /// Source address.
    pub bind: Option<IpAddr>,
    /// Time allowed.
    pub timeout: Duration,
    /// Environment for exec checks.
    pub env: exec::ExecEnv,
}

/// A ready checker of any kind. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Checker {
    /// Always up.
    None,
    /// TCP connect.
    Tcp,
    /// HTTP(S).
    Http(Arc<http::HttpChecker>),
    /// UDP.
    Udp(Arc<UdpSpec>),
    /// DNS.
    Dns(Arc<DnsSpec>),
    /// Exec.
    Exec(Arc<exec::ExecChecker>),
    /// gRPC health.
    Grpc(Arc<grpc::GrpcChecker>),
}

impl Checker {
    /// Builds the checker for `kind`.
    pub fn build(kind: &CheckKind) -> Result<Checker, exec::UserError> {
        Ok(match kind {
            CheckKind::None => Checker::None,
            CheckKind::Tcp => Checker::Tcp,
            CheckKind::Http(s) => Checker::Http(Arc::new(http::HttpChecker::new(s.clone()))),
            CheckKind::Udp(s) => Checker::Udp(Arc::new(s.clone())),
            CheckKind::Dns(s) => Checker::Dns(Arc::new(s.clone())),
            CheckKind::Exec(s) => Checker::Exec(Arc::new(exec::ExecChecker::new(s.clone())?)),
            CheckKind::Grpc(s) => Checker::Grpc(Arc::new(grpc::GrpcChecker::new(s.clone()))),
        })
    }

    /// Runs one attempt.
    pub async fn check(&self, probe: Probe) -> CheckResult {
        let Probe {
            target,
            bind,
            timeout,
            env,
        } = probe;
        let attempt = async {
            match self {
                Checker::None => CheckResult::UP,
                Checker::Tcp => tcp::check(target, bind, timeout).await,
                Checker::Http(c) => c.check(target, bind, timeout).await,
                Checker::Udp(s) => udp::check(s, target, bind, timeout).await,
                Checker::Dns(s) => dns::check(s, target, bind, timeout).await,
                Checker::Exec(c) => c.check(env, timeout).await,
                Checker::Grpc(c) => c.check(target, bind, timeout).await,
            }
        };
        tokio::time::timeout(timeout + BACKSTOP_GRACE, attempt)
            .await
            .unwrap_or(CheckResult::Down(Failure::Timeout))
    }
}

#[cfg(test)]
mod tests;
