//! Raw IP sockets for VRRP (protocol 112) on one interface.
//!
//! IPv4: one raw socket with `IP_HDRINCL`, so that we write the header (TTL
//! 255, our primary address as source) and read the whole packet, header
//! included, to check the TTL. IPv6: one raw socket; the hop limit and the
//! destination of a received packet come from `IPV6_RECVHOPLIMIT` and
//! `IPV6_RECVPKTINFO` ancillary data, the source of a sent one from
//! `IPV6_PKTINFO`. Both are bound to the interface (`SO_BINDTODEVICE`), join
//! the VRRP group on it unless the instance speaks unicast, and do not loop
//! their own multicast back.

use std::io::{IoSlice, IoSliceMut, Read};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::ops::Range;

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn6, recvmsg, sendmsg, setsockopt,
    sockopt,
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::packet::{IPPROTO_VRRP, Ipv4Header, MULTICAST_V4, MULTICAST_V6, TTL, ipv4_header};

/// A socket operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("VRRP socket on {ifname}: {op}: {source}")]
pub struct SocketError {
    /// Interface.
    pub ifname: String,
    /// What was being done.
    pub op: &'static str,
    /// Why it failed.
    #[source]
    pub source: std::io::Error,
}

/// What the IP layer says about a received advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Source address.
    pub src: IpAddr,
    /// Destination address (the group, or ours for unicast).
    pub dst: IpAddr,
    /// TTL or hop limit.
    pub ttl: u8,
}

/// Why a received packet never reached the VRRP decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecvDrop {
    /// The IPv4 header did not parse (or IPv6 ancillary data was missing).
    BadIpHeader,
    /// Another protocol (cannot happen on a protocol-112 socket, checked anyway).
    NotVrrp,
}

/// A VRRP socket on one interface for one address family.
pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
    ifname: String,
    ifindex: u32,
    src: IpAddr,
}

impl std::fmt::Debug for VrrpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VrrpSocket")
            .field("ifname", &self.ifname)
            .field("src", &self.src)
            .finish()
    }
}

/// Index of interface `ifname`.
pub fn ifindex(ifname: &str) -> std::io::Result<u32> {
    nix::net::if_::if_nametoindex(ifname).map_err(std::io::Error::from)
}

impl VrrpSocket {
    /// Opens a socket on `ifname` that sends from `src` (an IPv4 address of
    /// the interface, or its IPv6 link-local address) and joins the VRRP
    /// group unless `multicast` is false (unicast peers).
    pub fn open(ifname: &str, src: IpAddr, multicast: bool) -> Result<Self, SocketError> {
        let err = |op| {
            let ifname = ifname.to_string();
            move |source| SocketError { ifname, op, source }
        };
        let index = ifindex(ifname).map_err(err("interface index"))?;
        let proto = Some(Protocol::from(i32::from(IPPROTO_VRRP)));
        let socket = match src {
            IpAddr::V4(_) => {
                let s = Socket::new(Domain::IPV4, Type::RAW, proto).map_err(err("socket"))?;
                s.set_header_included_v4(true).map_err(err("IP_HDRINCL"))?;
                s.set_multicast_loop_v4(false)
                    .map_err(err("IP_MULTICAST_LOOP"))?;
                s.set_multicast_ttl_v4(u32::from(TTL))
                    .map_err(err("IP_MULTICAST_TTL"))?;
                if multicast {
                    s.join_multicast_v4_n(&MULTICAST_V4, &InterfaceIndexOrAddress::Index(index))
                        .map_err(err("join 224.0.0.18"))?;
                }
                s
            }
            IpAddr::V6(_) => {
                let s = Socket::new(Domain::IPV6, Type::RAW, proto).map_err(err("socket"))?;
                s.set_multicast_loop_v6(false)
                    .map_err(err("IPV6_MULTICAST_LOOP"))?;
                s.set_multicast_hops_v6(u32::from(TTL))
                    .map_err(err("IPV6_MULTICAST_HOPS"))?;
                s.set_unicast_hops_v6(u32::from(TTL))
                    .map_err(err("IPV6_UNICAST_HOPS"))?;
                s.set_multicast_if_v6(index)
                    .map_err(err("IPV6_MULTICAST_IF"))?;
                setsockopt(&s, sockopt::Ipv6RecvHopLimit, &true)
                    .map_err(|e| err("IPV6_RECVHOPLIMIT")(e.into()))?;
                setsockopt(&s, sockopt::Ipv6RecvPacketInfo, &true)
                    .map_err(|e| err("IPV6_RECVPKTINFO")(e.into()))?;
                if multicast {
                    s.join_multicast_v6(&MULTICAST_V6, index)
                        .map_err(err("join ff02::12"))?;
                }
                s
            }
        };
        socket
            .bind_device(Some(ifname.as_bytes()))
            .map_err(err("SO_BINDTODEVICE"))?;
        socket.set_nonblocking(true).map_err(err("O_NONBLOCK"))?;
        // `AsyncFd::new` is deprecated for types whose fd could be closed
        // behind the registration's back; the socket owns its fd and the
        // AsyncFd owns the socket, so that cannot happen here.
        #[allow(deprecated)]
        let fd = AsyncFd::new(socket).map_err(err("register with the runtime"))?;
        Ok(VrrpSocket {
            fd,
            ifname: ifname.to_string(),
            ifindex: index,
            src,
        })
    }

    /// The source address adverts go out with.
    pub fn src(&self) -> IpAddr {
        self.src
    }

    /// The interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    fn err(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> SocketError + '_ {
        move |source| SocketError {
            ifname: self.ifname.clone(),
            op,
            source,
        }
    }

    /// Sends one VRRP message (already encoded for our source and `dst`).
    pub async fn send(&self, vrrp: &[u8], dst: IpAddr) -> Result<(), SocketError> {
        match (self.src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst4)) => {
                let header = ipv4_header(src, dst4, vrrp.len());
                let to = SockAddr::from(SocketAddr::new(dst, 0));
                let iov = [IoSlice::new(&header), IoSlice::new(vrrp)];
                self.fd
                    .async_io(tokio::io::Interest::WRITABLE, |s| {
                        s.send_to_vectored(&iov, &to)
                    })
                    .await
                    .map_err(self.err("send"))?;
            }
            (IpAddr::V6(src), IpAddr::V6(dst6)) => {
                let scope = if is_link_local_scope(dst6) {
                    self.ifindex
                } else {
                    0
                };
                let to = SockaddrIn6::from(SocketAddrV6::new(dst6, 0, 0, scope));
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: src.octets(),
                    },
                    ipi6_ifindex: self.ifindex,
                };
                let iov = [IoSlice::new(vrrp)];
                let cmsg = [ControlMessage::Ipv6PacketInfo(&info)];
                self.fd
                    .async_io(tokio::io::Interest::WRITABLE, |s| {
                        sendmsg(
                            std::os::fd::AsRawFd::as_raw_fd(s),
                            &iov,
                            &cmsg,
                            MsgFlags::empty(),
                            Some(&to),
                        )
                        .map_err(std::io::Error::from)
                    })
                    .await
                    .map_err(self.err("send"))?;
            }
            _ => {
                return Err(SocketError {
                    ifname: self.ifname.clone(),
                    op: "send",
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("destination {dst} is not of the family of {}", self.src),
                    ),
                });
            }
        }
        Ok(())
    }

    /// Receives one packet into `buf`; returns what the IP layer says and
    /// where the VRRP message lies in `buf`, or why the packet is no VRRP
    /// message at all.
    pub async fn recv(
        &self,
        buf: &mut [u8],
    ) -> Result<Result<(Received, Range<usize>), RecvDrop>, SocketError> {
        match self.src {
            IpAddr::V4(_) => {
                let n = self
                    .fd
                    .async_io(tokio::io::Interest::READABLE, |mut s| s.read(buf))
                    .await
                    .map_err(self.err("receive"))?;
                let Ok((hdr, payload)) = Ipv4Header::parse(&buf[..n]) else {
                    return Ok(Err(RecvDrop::BadIpHeader));
                };
                if hdr.protocol != IPPROTO_VRRP {
                    return Ok(Err(RecvDrop::NotVrrp));
                }
                let start = hdr.header_len;
                Ok(Ok((
                    Received {
                        src: IpAddr::V4(hdr.src),
                        dst: IpAddr::V4(hdr.dst),
                        ttl: hdr.ttl,
                    },
                    start..start + payload.len(),
                )))
            }
            IpAddr::V6(_) => {
                let (n, src, dst, hops) = self
                    .fd
                    .async_io(tokio::io::Interest::READABLE, |s| {
                        let mut iov = [IoSliceMut::new(buf)];
                        let mut space = nix::cmsg_space!(libc::in6_pktinfo, libc::c_int);
                        let msg = recvmsg::<SockaddrIn6>(
                            std::os::fd::AsRawFd::as_raw_fd(s),
                            &mut iov,
                            Some(&mut space),
                            MsgFlags::empty(),
                        )
                        .map_err(std::io::Error::from)?;
                        let mut dst = None;
                        let mut hops = None;
                        for c in msg.cmsgs().map_err(std::io::Error::from)? {
                            match c {
                                ControlMessageOwned::Ipv6PacketInfo(info) => {
                                    dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                                }
                                ControlMessageOwned::Ipv6HopLimit(h) => hops = Some(h),
                                _ => {}
                            }
                        }
                        Ok((msg.bytes, msg.address.map(|a| a.ip()), dst, hops))
                    })
                    .await
                    .map_err(self.err("receive"))?;
                let (Some(src), Some(dst), Some(hops)) = (src, dst, hops) else {
                    return Ok(Err(RecvDrop::BadIpHeader));
                };
                Ok(Ok((
                    Received {
                        src: IpAddr::V6(src),
                        dst: IpAddr::V6(dst),
                        ttl: u8::try_from(hops).unwrap_or(0),
                    },
                    0..n,
                )))
            }
        }
    }
}

fn is_link_local_scope(a: Ipv6Addr) -> bool {
    let s = a.segments();
    (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xff0f) == 0xff02
}

/// The first IPv4 address, or the link-local IPv6 address, of `ifname`, for
/// use as the source of adverts when none is configured.
pub fn interface_source(ifname: &str, ipv6: bool) -> Option<IpAddr> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for ifa in addrs {
        if ifa.interface_name != ifname {
            continue;
        }
        let Some(addr) = ifa.address else { continue };
        if !ipv6 {
            if let Some(sin) = addr.as_sockaddr_in() {
                return Some(IpAddr::V4(sin.ip()));
            }
        } else if let Some(sin6) = addr.as_sockaddr_in6() {
            let ip = sin6.ip();
            if (ip.segments()[0] & 0xffc0) == 0xfe80 {
                return Some(IpAddr::V6(ip));
            }
        }
    }
    None
}
