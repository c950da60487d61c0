//! TCP connect check (keepalived TCP_CHECK): up when the handshake completes.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tokio::net::{TcpSocket, TcpStream};

use crate::health::outcome::{CheckResult, Failure};

/// Opens a TCP connection from `bind` (any port) to `target` for a check
/// that speaks on it (HTTP, DNS, gRPC): Nagle off, requests go out at once.
pub async fn connect(target: SocketAddr, bind: Option<IpAddr>) -> io::Result<TcpStream> {
    connect_socket(target, bind, Close::Fin).await
}

/// How a connection ends when it is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The FIN exchange; Nagle off for the requests sent on it.
    Fin,
    /// A RST (SO_LINGER 0) instead of the FIN exchange, for a connect
    /// check that says nothing on the connection: no TIME_WAIT is left on
    /// either side (as HAProxy does for its health checks). Nothing is
    /// written, so Nagle is left alone: one setsockopt fewer per check.
    Reset,
}

/// Opens a TCP connection from `bind` (any port) to `target`, closed as `close` says.
pub async fn connect_socket(
    target: SocketAddr,
    bind: Option<IpAddr>,
    close: Close,
) -> io::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = bind {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    match close {
        Close::Fin => socket.set_nodelay(true)?,
        Close::Reset => socket.set_zero_linger()?,
    }
    socket.connect(target).await
}

/// Connects within `timeout` (closing with a RST), or says why not.
pub async fn connect_within(
    target: SocketAddr,
    bind: Option<IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, Failure> {
    match tokio::time::timeout(timeout, connect_socket(target, bind, Close::Reset)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(Failure::from_io("connect", &e)),
        Err(_) => Err(Failure::Timeout),
    }
}

/// One TCP check attempt.
pub async fn check(target: SocketAddr, bind: Option<IpAddr>, timeout: Duration) -> CheckResult {
    match connect_within(target, bind, timeout).await {
        Ok(_stream) => CheckResult::UP,
        Err(f) => CheckResult::Down(f),
    }
}
