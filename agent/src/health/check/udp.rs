//! UDP check (keepalived UDP_CHECK).
//!
//! The datagram goes out on a *connected* socket, so an ICMP port unreachable
//! coming back surfaces as `ECONNREFUSED` on the next receive. Without a
//! required reply the check waits the whole timeout for such an error and is
//! up if none came; with one, a matching reply must arrive in time.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use tokio::net::UdpSocket;

use crate::health::{
    config::{ReplyMatch, UdpSpec},
    outcome::{CheckResult, Failure},
};

/// A UDP socket bound to `bind` (or the unspecified address) and connected to `target`.
pub async fn connected_socket(target: SocketAddr, bind: Option<IpAddr>) -> io::Result<UdpSocket> {
    let local = bind.unwrap_or(match target {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    let socket = UdpSocket::bind(SocketAddr::new(local, 0)).await?;
    socket.connect(target).await?;
    Ok(socket)
}

/// Maps a receive error: a refused receive is an ICMP port unreachable.
pub fn recv_failure(e: &io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Failure::IcmpUnreachable,
        _ => Failure::from_io("recv", e),
    }
}

/// Shows the start of a reply, escaped.
pub fn excerpt(bytes: &[u8]) -> String {
    let shown: Vec<u8> = bytes.iter().take(32).copied().collect();
    let mut s = shown.escape_ascii().to_string();
    if bytes.len() > 32 {
        s.push_str("...");
    }
    s
}

/// One UDP check attempt.
pub async fn check(
    spec: &UdpSpec,
    target: SocketAddr,
    bind: Option<IpAddr>,
    timeout: Duration,
) -> CheckResult {
    let socket = match connected_socket(target, bind).await {
        Ok(s) => s,
        Err(e) => return CheckResult::Down(Failure::from_io("connect", &e)),
    };
    if let Err(e) = socket.send(&spec.payload).await {
        return CheckResult::Down(recv_failure(&e));
    }
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(timeout, socket.recv(&mut buf)).await {
        Err(_) if spec.reply.is_some() => CheckResult::Down(Failure::NoReply),
        Err(_) => CheckResult::UP,
        Ok(Err(e)) => CheckResult::Down(recv_failure(&e)),
        Ok(Ok(n)) => {
            let reply = &buf[..n];
            let ok = match &spec.reply {
                None | Some(ReplyMatch::Any) => true,
                Some(ReplyMatch::Regex(p)) => p.0.is_match(reply),
                Some(ReplyMatch::Prefix(prefix)) => reply.starts_with(prefix),
            };
            if ok {
                CheckResult::UP
            } else {
                CheckResult::Down(Failure::ReplyMismatch {
                    got: excerpt(reply),
                })
            }
        }
    }
}
