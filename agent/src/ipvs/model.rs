//! Typed IPVS objects: services, destinations, statistics, timeouts, sync
//! daemons and the module info, as the kernel's IPVS family knows them
//! (`include/uapi/linux/ip_vs.h`).
//!
//! These are plain values: the codec turns them into netlink attributes and
//! back, the reconciler compares them, the client sends them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;

/// An address family of a service or a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4 (`AF_INET`).
    Inet,
    /// IPv6 (`AF_INET6`).
    Inet6,
}

impl Family {
    /// The `AF_*` number.
    pub fn af(self) -> u16 {
        match self {
            Family::Inet => AF_INET,
            Family::Inet6 => AF_INET6,
        }
    }

    /// The family from an `AF_*` number.
    pub fn from_af(af: u16) -> Option<Self> {
        match af {
            AF_INET => Some(Family::Inet),
            AF_INET6 => Some(Family::Inet6),
            _ => None,
        }
    }

    /// The family of an address.
    pub fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Family::Inet,
            IpAddr::V6(_) => Family::Inet6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Inet => "ipv4",
            Family::Inet6 => "ipv6",
        })
    }
}

/// The transport protocol of an address-and-port service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `IPPROTO_TCP`.
    Tcp,
    /// `IPPROTO_UDP`.
    Udp,
    /// `IPPROTO_SCTP`.
    Sctp,
}

impl Protocol {
    /// The `IPPROTO_*` number.
    pub fn number(self) -> u16 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// The protocol from an `IPPROTO_*` number.
    pub fn from_number(n: u16) -> Option<Self> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

/// What identifies a virtual service in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKey {
    /// A service by protocol, virtual address and port; the family is the
    /// address's.
    Addr {
        /// TCP, UDP or SCTP.
        protocol: Protocol,
        /// The virtual address (VIP).
        addr: IpAddr,
        /// The virtual port; 0 means every port (persistent services only).
        port: u16,
    },
    /// A service by firewall mark.
    Fwmark {
        /// The family of the packets the mark selects.
        family: Family,
        /// The mark (non-zero).
        mark: u32,
    },
}

impl ServiceKey {
    /// The service's address family.
    pub fn family(&self) -> Family {
        match self {
            ServiceKey::Addr { addr, .. } => Family::of(addr),
            ServiceKey::Fwmark { family, .. } => *family,
        }
    }
}

impl fmt::Display for ServiceKey {
    /// `tcp 192.0.2.1:80`, `tcp [2001:db8::1]:80` or `fwmark 7 (ipv4)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Addr {
                protocol,
                addr: IpAddr::V4(a),
                port,
            } => write!(f, "{protocol} {a}:{port}"),
            ServiceKey::Addr {
                protocol,
                addr: IpAddr::V6(a),
                port,
            } => write!(f, "{protocol} [{a}]:{port}"),
            ServiceKey::Fwmark { family, mark } => write!(f, "fwmark {mark} ({family})"),
        }
    }
}

/// Virtual service flags (`IP_VS_SVC_F_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct ServiceFlags(pub u32);

impl ServiceFlags {
    /// `IP_VS_SVC_F_PERSISTENT`: persistent port.
    pub const PERSISTENT: u32 = 0x0001;
    /// `IP_VS_SVC_F_HASHED`: kernel-internal, set on every listed service.
    pub const HASHED: u32 = 0x0002;
    /// `IP_VS_SVC_F_ONEPACKET`: one-packet scheduling (UDP).
    pub const ONEPACKET: u32 = 0x0004;
    /// `IP_VS_SVC_F_SCHED1`: sh-fallback for `sh`, mh-fallback for `mh`.
    pub const SCHED1: u32 = 0x0008;
    /// `IP_VS_SVC_F_SCHED2`: sh-port for `sh`, mh-port for `mh`.
    pub const SCHED2: u32 = 0x0010;
    /// `IP_VS_SVC_F_SCHED3`: scheduler flag 3 (unused by the kernel's schedulers).
    pub const SCHED3: u32 = 0x0020;
    /// `sh` fallback to another server when the chosen one is unavailable.
    pub const SH_FALLBACK: u32 = Self::SCHED1;
    /// `sh` hashes the source port too.
    pub const SH_PORT: u32 = Self::SCHED2;
    /// `mh` fallback to another server when the chosen one is unavailable.
    pub const MH_FALLBACK: u32 = Self::SCHED1;
    /// `mh` hashes the source port too.
    pub const MH_PORT: u32 = Self::SCHED2;
    /// Every flag user space may set.
    pub const USER_MASK: u32 =
        Self::PERSISTENT | Self::ONEPACKET | Self::SCHED1 | Self::SCHED2 | Self::SCHED3;

    /// Whether every bit of `bits` is set.
    pub fn contains(self, bits: u32) -> bool {
        self.0 & bits == bits
    }
}

/// A virtual service and its options (`IPVS_SVC_ATTR_*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Service {
    /// What identifies it.
    pub key: ServiceKey,
    /// Scheduler name: rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo,
    /// ovf, mh, twos.
    pub scheduler: String,
    /// `IP_VS_SVC_F_*` without the kernel-internal `HASHED` bit.
    pub flags: ServiceFlags,
    /// Persistence timeout in seconds.
    pub timeout: u32,
    /// Persistence netmask as the kernel stores it: for IPv4 the mask's
    /// 32 bits in network order read as a big-endian number (0xffffff00 for
    /// /24), for IPv6 a prefix length 1..=128.
    pub netmask: u32,
    /// Persistence engine (`sip`), if any.
    pub pe_name: Option<String>,
}

impl Service {
    /// A service with the kernel's defaults: no flags, no persistence, the
    /// full-length netmask, no persistence engine.
    pub fn new(key: ServiceKey, scheduler: impl Into<String>) -> Self {
        let netmask = match key.family() {
            Family::Inet => u32::MAX,
            Family::Inet6 => 128,
        };
        Service {
            key,
            scheduler: scheduler.into(),
            flags: ServiceFlags::default(),
            timeout: 0,
            netmask,
            pe_name: None,
        }
    }
}

/// A forwarding method (`IP_VS_CONN_F_FWD_MASK` of the connection flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forwarding {
    /// `IP_VS_CONN_F_MASQ`: NAT.
    Masq,
    /// `IP_VS_CONN_F_LOCALNODE`: deliver locally.
    Local,
    /// `IP_VS_CONN_F_TUNNEL`: IP-in-IP, GUE or GRE tunnel (TUN).
    Tunnel,
    /// `IP_VS_CONN_F_DROUTE`: direct routing (DR).
    Route,
    /// `IP_VS_CONN_F_BYPASS`: cache bypass.
    Bypass,
}

impl Forwarding {
    /// The connection-flag value.
    pub fn bits(self) -> u32 {
        match self {
            Forwarding::Masq => 0,
            Forwarding::Local => 1,
            Forwarding::Tunnel => 2,
            Forwarding::Route => 3,
            Forwarding::Bypass => 4,
        }
    }

    /// The method from the connection-flag value (masked with
    /// `IP_VS_CONN_F_FWD_MASK`).
    pub fn from_bits(bits: u32) -> Option<Self> {
        match bits & 0x7 {
            0 => Some(Forwarding::Masq),
            1 => Some(Forwarding::Local),
            2 => Some(Forwarding::Tunnel),
            3 => Some(Forwarding::Route),
            4 => Some(Forwarding::Bypass),
            _ => None,
        }
    }
}

impl fmt::Display for Forwarding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Forwarding::Masq => "masq",
            Forwarding::Local => "local",
            Forwarding::Tunnel => "tunnel",
            Forwarding::Route => "route",
            Forwarding::Bypass => "bypass",
        })
    }
}

/// Tunnel encapsulation of a TUN destination (`IP_VS_CONN_F_TUNNEL_TYPE_*`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TunnelType {
    /// IP-in-IP (the default).
    #[default]
    Ipip,
    /// Generic UDP encapsulation; needs a port.
    Gue,
    /// GRE.
    Gre,
}

impl TunnelType {
    /// The attribute value.
    pub fn number(self) -> u8 {
        match self {
            TunnelType::Ipip => 0,
            TunnelType::Gue => 1,
            TunnelType::Gre => 2,
        }
    }

    /// The type from the attribute value.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            0 => Some(TunnelType::Ipip),
            1 => Some(TunnelType::Gue),
            2 => Some(TunnelType::Gre),
            _ => None,
        }
    }
}

/// Tunnel encapsulation flags (`IP_VS_TUNNEL_ENCAP_FLAG_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct TunnelFlags(pub u16);

impl TunnelFlags {
    /// Outer checksum.
    pub const CSUM: u16 = 1 << 0;
    /// Remote checksum offload.
    pub const REMCSUM: u16 = 1 << 1;
}

/// What identifies a destination within its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DestKey {
    /// The real server's address; its family may differ from the service's
    /// (tunnel forwarding only).
    pub addr: IpAddr,
    /// The real server's port.
    pub port: u16,
}

impl fmt::Display for DestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

/// A destination (real server) of a service (`IPVS_DEST_ATTR_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Destination {
    /// Address and port.
    pub key: DestKey,
    /// How packets reach it.
    pub forwarding: Forwarding,
    /// Scheduling weight; 0 takes it out of scheduling.
    pub weight: u32,
    /// Upper connection threshold; 0 is none.
    pub u_threshold: u32,
    /// Lower connection threshold.
    pub l_threshold: u32,
    /// Tunnel encapsulation (TUN only).
    pub tun_type: TunnelType,
    /// Tunnel (GUE) destination port.
    pub tun_port: u16,
    /// Tunnel checksum flags.
    pub tun_flags: TunnelFlags,
}

impl Destination {
    /// A destination with weight 1, no thresholds and IP-in-IP tunnel
    /// parameters.
    pub fn new(addr: IpAddr, port: u16, forwarding: Forwarding) -> Self {
        Destination {
            key: DestKey { addr, port },
            forwarding,
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
            tun_type: TunnelType::Ipip,
            tun_port: 0,
            tun_flags: TunnelFlags::default(),
        }
    }
}

/// Traffic counters and rates of a service or destination (the 64-bit
/// `IPVS_*_ATTR_STATS64`, or the 32-bit `STATS` on kernels without it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Connections scheduled.
    pub conns: u64,
    /// Incoming packets.
    pub inpkts: u64,
    /// Outgoing packets.
    pub outpkts: u64,
    /// Incoming bytes.
    pub inbytes: u64,
    /// Outgoing bytes.
    pub outbytes: u64,
    /// Connection rate (per second).
    pub cps: u64,
    /// Incoming packet rate.
    pub inpps: u64,
    /// Outgoing packet rate.
    pub outpps: u64,
    /// Incoming byte rate.
    pub inbps: u64,
    /// Outgoing byte rate.
    pub outbps: u64,
}

/// A service as listed by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    /// The service.
    pub service: Service,
    /// Its counters.
    pub stats: Stats,
}

/// A destination as listed by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestEntry {
    /// The destination.
    pub dest: Destination,
    /// Active connections.
    pub active_conns: u32,
    /// Inactive connections.
    pub inact_conns: u32,
    /// Persistence templates.
    pub persist_conns: u32,
    /// Its counters.
    pub stats: Stats,
}

/// Connection timeouts in seconds (`IPVS_CMD_ATTR_TIMEOUT_*`); in a SET, 0
/// leaves a value unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Timeouts {
    /// Established TCP.
    pub tcp: u32,
    /// TCP after FIN.
    pub tcp_fin: u32,
    /// UDP.
    pub udp: u32,
}

/// The role of a connection-synchronisation daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DaemonState {
    /// `IP_VS_STATE_MASTER`: sends connection updates.
    Master,
    /// `IP_VS_STATE_BACKUP`: receives them.
    Backup,
}

impl DaemonState {
    /// The attribute value.
    pub fn number(self) -> u32 {
        match self {
            DaemonState::Master => 1,
            DaemonState::Backup => 2,
        }
    }

    /// The state from the attribute value.
    pub fn from_number(n: u32) -> Option<Self> {
        match n {
            1 => Some(DaemonState::Master),
            2 => Some(DaemonState::Backup),
            _ => None,
        }
    }
}

/// A connection-synchronisation daemon (`IPVS_DAEMON_ATTR_*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Daemon {
    /// Master or backup.
    pub state: DaemonState,
    /// Interface the sync messages use.
    pub mcast_ifn: String,
    /// Sync ID.
    pub sync_id: u32,
    /// Maximum UDP payload; kernel default when `None`.
    pub sync_maxlen: Option<u16>,
    /// Multicast group; 224.0.0.81 when `None`.
    pub mcast_group: Option<IpAddr>,
    /// Multicast port; 8848 when `None`.
    pub mcast_port: Option<u16>,
    /// Multicast TTL; 1 when `None`.
    pub mcast_ttl: Option<u8>,
}

/// General IPVS information (`IPVS_INFO_ATTR_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// `IP_VS_VERSION_CODE`, e.g. 0x010201 for 1.2.1.
    pub version: u32,
    /// Size of the connection hash table.
    pub conn_tab_size: u32,
}

/// The IPv4 mask as the kernel's netmask value for a prefix length.
pub fn ipv4_netmask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p if p >= 32 => u32::MAX,
        p => u32::MAX << (32 - u32::from(p)),
    }
}

/// The kernel netmask value written as `ipvsadm` shows it (`255.255.255.0`
/// or `64`).
pub fn netmask_display(family: Family, netmask: u32) -> String {
    match family {
        Family::Inet => Ipv4Addr::from(netmask).to_string(),
        Family::Inet6 => netmask.to_string(),
    }
}

/// The unspecified address of a family.
pub fn unspecified(family: Family) -> IpAddr {
    match family {
        Family::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Family::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}
