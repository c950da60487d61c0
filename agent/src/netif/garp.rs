//! Gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6)
//! that a new VRRP master sends so that hosts and switches learn where the
//! VIPs went (RFC 5798 section 6.4.2, RFC 4861 section 7.2.6).
//!
//! The frames are built by pure functions; [`Announcer`] owns the sockets
//! (an `AF_PACKET` socket for ARP, an ICMPv6 raw socket for NA) and
//! [`run_schedule`] sends the bursts: `repeat` messages at once (spaced by
//! `interval`), a second burst after `delay`, then `refresh_repeat`
//! messages every `refresh` for as long as the task runs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Ethernet broadcast address.
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];
/// All-nodes multicast group.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ETH_P_ARP: u16 = 0x0806;
const ICMPV6_NEIGHBOUR_ADVERT: u8 = 136;

/// A gratuitous ARP / unsolicited NA failure.
#[derive(Debug, thiserror::Error)]
#[error("gratuitous ARP/NA on {ifname}: {op}: {source}")]
pub struct GarpError {
    /// Interface.
    pub ifname: String,
    /// What was being done.
    pub op: &'static str,
    /// Why it failed.
    #[source]
    pub source: std::io::Error,
}

/// When and how many announcements a new master sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GarpSchedule {
    /// Delay before the second burst; zero means no second burst.
    pub delay: Duration,
    /// Messages per burst, per address.
    pub repeat: u32,
    /// Pause between ARP messages of a burst.
    pub interval: Duration,
    /// Pause between NA messages of a burst.
    pub na_interval: Duration,
    /// Re-send this often while master; zero disables.
    pub refresh: Duration,
    /// Messages per refresh burst.
    pub refresh_repeat: u32,
}

impl Default for GarpSchedule {
    /// keepalived's defaults: 5 at once, 5 more after 5 s, no refresh.
    fn default() -> Self {
        GarpSchedule {
            delay: Duration::from_secs(5),
            repeat: 5,
            interval: Duration::ZERO,
            na_interval: Duration::ZERO,
            refresh: Duration::ZERO,
            refresh_repeat: 1,
        }
    }
}

/// A gratuitous ARP request for `ip` from `mac`, as an Ethernet frame
/// (RFC 5227 section 3: sender and target protocol address both `ip`).
pub fn arp_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&BROADCAST_MAC);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    // htype Ethernet, ptype IPv4, hlen 6, plen 4, oper request.
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    f[32..38].copy_from_slice(&BROADCAST_MAC);
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// An unsolicited neighbour advertisement for `target` from `mac` (the
/// ICMPv6 message; the kernel fills in the checksum): override flag set,
/// target link-layer address option.
pub fn na_message(mac: [u8; 6], target: Ipv6Addr) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0] = ICMPV6_NEIGHBOUR_ADVERT;
    // Code 0, checksum 0 (kernel), flags: Override.
    m[4] = 0x20;
    m[8..24].copy_from_slice(&target.octets());
    // Option 2: target link-layer address, length 1 (8 bytes).
    m[24] = 2;
    m[25] = 1;
    m[26..32].copy_from_slice(&mac);
    m
}

/// Reads the MAC address of `ifname` from sysfs.
pub fn interface_mac(ifname: &str) -> std::io::Result<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))?;
    parse_mac(text.trim()).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{ifname}: MAC address {text:?} is not aa:bb:cc:dd:ee:ff"),
        )
    })
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The sockets that send announcements on one interface.
pub struct Announcer {
    ifname: String,
    mac: [u8; 6],
    packet: Option<(Socket, SockAddr)>,
    icmp6: Option<(Socket, u32)>,
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcer")
            .field("ifname", &self.ifname)
            .finish()
    }
}

impl Announcer {
    /// Opens the sockets for `ifname`: the ARP one if `ipv4`, the NA one if `ipv6`.
    pub fn open(ifname: &str, ipv4: bool, ipv6: bool) -> Result<Self, GarpError> {
        let err = |op| {
            let ifname = ifname.to_string();
            move |source| GarpError { ifname, op, source }
        };
        let mac = interface_mac(ifname).map_err(err("read MAC address"))?;
        let index =
            nix::net::if_::if_nametoindex(ifname).map_err(|e| err("interface index")(e.into()))?;
        let packet = if ipv4 {
            let s = Socket::new(
                Domain::PACKET,
                Type::RAW,
                // Protocol 0: send only, receive nothing.
                Some(Protocol::from(0)),
            )
            .map_err(err("AF_PACKET socket"))?;
            s.set_nonblocking(true).map_err(err("O_NONBLOCK"))?;
            Some((s, link_addr::broadcast(index, ETH_P_ARP)))
        } else {
            None
        };
        let icmp6 = if ipv6 {
            let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
                .map_err(err("ICMPv6 socket"))?;
            s.set_multicast_hops_v6(255)
                .map_err(err("IPV6_MULTICAST_HOPS"))?;
            s.set_multicast_if_v6(index)
                .map_err(err("IPV6_MULTICAST_IF"))?;
            s.set_multicast_loop_v6(false)
                .map_err(err("IPV6_MULTICAST_LOOP"))?;
            s.set_nonblocking(true).map_err(err("O_NONBLOCK"))?;
            Some((s, index))
        } else {
            None
        };
        Ok(Announcer {
            ifname: ifname.to_string(),
            mac,
            packet,
            icmp6,
        })
    }

    /// Sends one announcement for `ip`.
    pub fn announce(&self, ip: IpAddr) -> Result<(), GarpError> {
        let err = |op| {
            let ifname = self.ifname.clone();
            move |source| GarpError { ifname, op, source }
        };
        match ip {
            IpAddr::V4(v4) => {
                if let Some((s, to)) = &self.packet {
                    s.send_to(&arp_frame(self.mac, v4), to)
                        .map_err(err("send gratuitous ARP"))?;
                }
            }
            IpAddr::V6(v6) => {
                if let Some((s, index)) = &self.icmp6 {
                    let to =
                        SockAddr::from(SocketAddr::V6(SocketAddrV6::new(ALL_NODES, 0, 0, *index)));
                    s.send_to(&na_message(self.mac, v6), &to)
                        .map_err(err("send unsolicited NA"))?;
                }
            }
        }
        Ok(())
    }

    async fn burst(&self, ips: &[IpAddr], count: u32, schedule: &GarpSchedule) {
        for i in 0..count {
            for ip in ips {
                if let Err(e) = self.announce(*ip) {
                    tracing::warn!(error = %e, %ip, "announcement not sent");
                }
            }
            if i + 1 < count {
                let pause = if ips.iter().any(IpAddr::is_ipv4) {
                    schedule.interval
                } else {
                    schedule.na_interval
                };
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

/// Sends the announcements of a new master for `ips`: a burst now, one
/// after `delay`, then refreshes. Runs until dropped (the driver aborts it
/// when the instance stops being master); without refresh it ends after
/// the second burst.
pub async fn run_schedule(announcer: &Announcer, ips: &[IpAddr], schedule: &GarpSchedule) {
    announcer.burst(ips, schedule.repeat, schedule).await;
    if !schedule.delay.is_zero() {
        tokio::time::sleep(schedule.delay).await;
        announcer.burst(ips, schedule.repeat, schedule).await;
    }
    if schedule.refresh.is_zero() {
        return;
    }
    loop {
        tokio::time::sleep(schedule.refresh).await;
        announcer
            .burst(ips, schedule.refresh_repeat.max(1), schedule)
            .await;
    }
}

/// Building a `sockaddr_ll`, which no safe API offers.
#[allow(unsafe_code)]
mod link_addr {
    use socket2::{SockAddr, SockAddrStorage};

    /// The link-layer broadcast destination on interface `index` for `protocol`.
    pub(super) fn broadcast(index: u32, protocol: u16) -> SockAddr {
        let mut storage = SockAddrStorage::zeroed();
        // SAFETY: `sockaddr_ll` is a sockaddr type of this platform and is
        // smaller than `sockaddr_storage` (view_as asserts it); the storage
        // is zeroed, a valid value for every field of it.
        let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
        ll.sll_family = libc::AF_PACKET as u16;
        ll.sll_protocol = protocol.to_be();
        ll.sll_ifindex = index as i32;
        ll.sll_halen = 6;
        ll.sll_addr[..6].copy_from_slice(&super::BROADCAST_MAC);
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: the storage holds an initialised `sockaddr_ll` of `len` bytes.
        unsafe { SockAddr::new(storage, len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];

    // Bytes as tcpdump shows a gratuitous ARP request for 10.9.0.100.
    #[test]
    fn arp_frame_bytes() {
        let f = arp_frame(MAC, Ipv4Addr::new(10, 9, 0, 100));
        let expected: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x5e, 0x10, 0x20, 0x30, 0x08, 0x06,
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x5e, 0x10, 0x20, 0x30,
            0x0a, 0x09, 0x00, 0x64, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0a, 0x09, 0x00, 0x64,
        ];
        assert_eq!(f, expected);
    }

    #[test]
    fn na_message_bytes() {
        let m = na_message(MAC, "fd00:9::100".parse().unwrap());
        let expected: [u8; 32] = [
            136, 0, 0, 0, 0x20, 0, 0, 0, 0xfd, 0x00, 0x00, 0x09, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0x01, 0x00, 2, 1, 0x02, 0x00, 0x5e, 0x10, 0x20, 0x30,
        ];
        assert_eq!(m, expected);
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(parse_mac("02:00:5e:10:20:30"), Some(MAC));
        assert_eq!(parse_mac("02:00:5e:10:20"), None);
        assert_eq!(parse_mac("02:00:5e:10:20:30:40"), None);
        assert_eq!(parse_mac("zz:00:5e:10:20:30"), None);
    }
}
