//! TCP connect check (keepalived TCP_CHECK): up when the handshake completes.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tokio::net::{TcpSocket, TcpStream};

use crate::health::outcome::{CheckResult, Failure};

/// Opens a TCP connection from `bind` (any port) to `target`.
pub async fn connect(target: SocketAddr, bind: Option<IpAddr>) -> io::Result<TcpStream> {
    connect_socket(target, bind, false).await
}

/// Opens a TCP connection; with `reset_on_close`, closing it sends a RST
/// (SO_LINGER 0) instead of the FIN exchange: a connect check says nothing
/// on the connection, and this leaves no TIME_WAIT behind on either side
/// (as HAProxy does for its health checks).
pub async fn connect_socket(
    target: SocketAddr,
    bind: Option<IpAddr>,
    reset_on_close: bool,
) -> io::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = bind {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.set_nodelay(true)?;
    if reset_on_close {
        socket.set_zero_linger()?;
    }
    socket.connect(target).await
}

/// Connects within `timeout` (closing with a RST), or says why not.
pub async fn connect_within(
    target: SocketAddr,
    bind: Option<IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, Failure> {
    match tokio::time::timeout(timeout, connect_socket(target, bind, true)).await {
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
