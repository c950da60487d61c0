//! The IPVS generic-netlink family on the wire: requests encoded to, and
//! replies decoded from, the bytes that follow the netlink header.
//!
//! ```text
//!  0               1               2               3
//! +---------------+---------------+-------------------------------+
//! |      cmd      |  version (1)  |           reserved            |  genlmsghdr
//! +---------------+---------------+-------------------------------+
//! |           nla_len             |           nla_type            |  attribute
//! +-------------------------------+-------------------------------+
//! |         payload, padded to 4 bytes (nested attributes ...)    |
//! +---------------------------------------------------------------+
//! ```
//!
//! Integers are in host order except ports and addresses (network order) and
//! the IPv4 persistence netmask, as `ip_vs_ctl.c` reads and writes them.
//! Addresses are always the 16 bytes of `union nf_inet_addr`. The decoder
//! never panics: every length is checked and a bad message is a
//! [`DecodeError`] that says which attribute of which object was wrong.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::model::Daemon;
use super::model::{
    DaemonState, DestEntry, DestKey, Destination, Family, Forwarding, Info, Protocol, Service,
    ServiceEntry, ServiceFlags, ServiceKey, Stats, Timeouts, TunnelFlags, TunnelType,
};

/// `IPVS_GENL_NAME`.
pub const FAMILY_NAME: &str = "IPVS";
/// `IPVS_GENL_VERSION`.
pub const FAMILY_VERSION: u8 = 1;

/// Length of the generic netlink header.
pub const GENL_HDRLEN: usize = 4;
const NLA_HDRLEN: usize = 4;
/// `NLA_TYPE_MASK`: the type without `NLA_F_NESTED` / `NLA_F_NET_BYTEORDER`.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// `NLA_F_NESTED`.
const NLA_F_NESTED: u16 = 0x8000;
const SCHEDNAME_MAXLEN: usize = 16;
const IFNAME_MAXLEN: usize = 16;

/// `IPVS_CMD_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Cmd {
    /// Add a service.
    NewService = 1,
    /// Modify a service.
    SetService = 2,
    /// Delete a service.
    DelService = 3,
    /// Get one service or dump all.
    GetService = 4,
    /// Add a destination.
    NewDest = 5,
    /// Modify a destination.
    SetDest = 6,
    /// Delete a destination.
    DelDest = 7,
    /// Dump the destinations of a service.
    GetDest = 8,
    /// Start a sync daemon.
    NewDaemon = 9,
    /// Stop a sync daemon.
    DelDaemon = 10,
    /// Dump the sync daemons.
    GetDaemon = 11,
    /// Set the timeouts.
    SetConfig = 12,
    /// Get the timeouts.
    GetConfig = 13,
    /// Reply to `GetInfo`.
    SetInfo = 14,
    /// Get the version and connection table size.
    GetInfo = 15,
    /// Zero counters.
    Zero = 16,
    /// Delete every service.
    Flush = 17,
}

impl Cmd {
    fn from_u8(n: u8) -> Option<Self> {
        Some(match n {
            1 => Cmd::NewService,
            2 => Cmd::SetService,
            3 => Cmd::DelService,
            4 => Cmd::GetService,
            5 => Cmd::NewDest,
            6 => Cmd::SetDest,
            7 => Cmd::DelDest,
            8 => Cmd::GetDest,
            9 => Cmd::NewDaemon,
            10 => Cmd::DelDaemon,
            11 => Cmd::GetDaemon,
            12 => Cmd::SetConfig,
            13 => Cmd::GetConfig,
            14 => Cmd::SetInfo,
            15 => Cmd::GetInfo,
            16 => Cmd::Zero,
            17 => Cmd::Flush,
            _ => return None,
        })
    }
}

/// `IPVS_CMD_ATTR_*`.
mod cmd_attr {
    pub const SERVICE: u16 = 1;
    pub const DEST: u16 = 2;
    pub const DAEMON: u16 = 3;
    pub const TIMEOUT_TCP: u16 = 4;
    pub const TIMEOUT_TCP_FIN: u16 = 5;
    pub const TIMEOUT_UDP: u16 = 6;
    pub const MAX: u16 = 6;
}

/// `IPVS_SVC_ATTR_*`.
mod svc_attr {
    pub const AF: u16 = 1;
    pub const PROTOCOL: u16 = 2;
    pub const ADDR: u16 = 3;
    pub const PORT: u16 = 4;
    pub const FWMARK: u16 = 5;
    pub const SCHED_NAME: u16 = 6;
    pub const FLAGS: u16 = 7;
    pub const TIMEOUT: u16 = 8;
    pub const NETMASK: u16 = 9;
    pub const STATS: u16 = 10;
    pub const PE_NAME: u16 = 11;
    pub const STATS64: u16 = 12;
    pub const MAX: u16 = 12;
}

/// `IPVS_DEST_ATTR_*`.
mod dest_attr {
    pub const ADDR: u16 = 1;
    pub const PORT: u16 = 2;
    pub const FWD_METHOD: u16 = 3;
    pub const WEIGHT: u16 = 4;
    pub const U_THRESH: u16 = 5;
    pub const L_THRESH: u16 = 6;
    pub const ACTIVE_CONNS: u16 = 7;
    pub const INACT_CONNS: u16 = 8;
    pub const PERSIST_CONNS: u16 = 9;
    pub const STATS: u16 = 10;
    pub const ADDR_FAMILY: u16 = 11;
    pub const STATS64: u16 = 12;
    pub const TUN_TYPE: u16 = 13;
    pub const TUN_PORT: u16 = 14;
    pub const TUN_FLAGS: u16 = 15;
    pub const MAX: u16 = 15;
}

/// `IPVS_DAEMON_ATTR_*`.
mod daemon_attr {
    pub const STATE: u16 = 1;
    pub const MCAST_IFN: u16 = 2;
    pub const SYNC_ID: u16 = 3;
    pub const SYNC_MAXLEN: u16 = 4;
    pub const MCAST_GROUP: u16 = 5;
    pub const MCAST_GROUP6: u16 = 6;
    pub const MCAST_PORT: u16 = 7;
    pub const MCAST_TTL: u16 = 8;
    pub const MAX: u16 = 8;
}

/// `IPVS_STATS_ATTR_*` (`PAD`, 11, is skipped).
mod stats_attr {
    pub const CONNS: u16 = 1;
    pub const INPKTS: u16 = 2;
    pub const OUTPKTS: u16 = 3;
    pub const INBYTES: u16 = 4;
    pub const OUTBYTES: u16 = 5;
    pub const CPS: u16 = 6;
    pub const INPPS: u16 = 7;
    pub const OUTPPS: u16 = 8;
    pub const INBPS: u16 = 9;
    pub const OUTBPS: u16 = 10;
    pub const MAX: u16 = 10;
}

/// `IPVS_INFO_ATTR_*`.
mod info_attr {
    pub const VERSION: u16 = 1;
    pub const CONN_TAB_SIZE: u16 = 2;
    pub const MAX: u16 = 2;
}

/// One request to the IPVS family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `IPVS_CMD_NEW_SERVICE`.
    NewService(Service),
    /// `IPVS_CMD_SET_SERVICE`.
    SetService(Service),
    /// `IPVS_CMD_DEL_SERVICE`.
    DelService(ServiceKey),
    /// `IPVS_CMD_GET_SERVICE` of one service.
    GetService(ServiceKey),
    /// `IPVS_CMD_GET_SERVICE` with `NLM_F_DUMP`: every service.
    DumpServices,
    /// `IPVS_CMD_NEW_DEST`.
    NewDest(ServiceKey, Destination),
    /// `IPVS_CMD_SET_DEST`.
    SetDest(ServiceKey, Destination),
    /// `IPVS_CMD_DEL_DEST`.
    DelDest(ServiceKey, DestKey),
    /// `IPVS_CMD_GET_DEST` with `NLM_F_DUMP`: the destinations of a service.
    DumpDests(ServiceKey),
    /// `IPVS_CMD_NEW_DAEMON`.
    NewDaemon(Daemon),
    /// `IPVS_CMD_DEL_DAEMON`.
    DelDaemon(DaemonState),
    /// `IPVS_CMD_GET_DAEMON` with `NLM_F_DUMP`.
    DumpDaemons,
    /// `IPVS_CMD_SET_CONFIG`.
    SetConfig(Timeouts),
    /// `IPVS_CMD_GET_CONFIG`.
    GetConfig,
    /// `IPVS_CMD_GET_INFO`.
    GetInfo,
    /// `IPVS_CMD_ZERO` of one service, or of everything.
    Zero(Option<ServiceKey>),
    /// `IPVS_CMD_FLUSH`.
    Flush,
}

impl Request {
    /// The command.
    pub fn cmd(&self) -> Cmd {
        match self {
            Request::NewService(_) => Cmd::NewService,
            Request::SetService(_) => Cmd::SetService,
            Request::DelService(_) => Cmd::DelService,
            Request::GetService(_) | Request::DumpServices => Cmd::GetService,
            Request::NewDest(..) => Cmd::NewDest,
            Request::SetDest(..) => Cmd::SetDest,
            Request::DelDest(..) => Cmd::DelDest,
            Request::DumpDests(_) => Cmd::GetDest,
            Request::NewDaemon(_) => Cmd::NewDaemon,
            Request::DelDaemon(_) => Cmd::DelDaemon,
            Request::DumpDaemons => Cmd::GetDaemon,
            Request::SetConfig(_) => Cmd::SetConfig,
            Request::GetConfig => Cmd::GetConfig,
            Request::GetInfo => Cmd::GetInfo,
            Request::Zero(_) => Cmd::Zero,
            Request::Flush => Cmd::Flush,
        }
    }

    /// Whether the request is a dump (`NLM_F_DUMP`).
    pub fn is_dump(&self) -> bool {
        matches!(
            self,
            Request::DumpServices | Request::DumpDests(_) | Request::DumpDaemons
        )
    }

    /// The generic netlink header and attributes of the request.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = AttrWriter::with_genl_header(self.cmd());
        match self {
            Request::NewService(svc) | Request::SetService(svc) => {
                let n = w.nest_start(cmd_attr::SERVICE);
                put_service(&mut w, svc);
                w.nest_end(n);
            }
            Request::DelService(key) | Request::GetService(key) | Request::DumpDests(key) => {
                let n = w.nest_start(cmd_attr::SERVICE);
                put_service_key(&mut w, key);
                w.nest_end(n);
            }
            Request::NewDest(key, dest) | Request::SetDest(key, dest) => {
                let n = w.nest_start(cmd_attr::SERVICE);
                put_service_key(&mut w, key);
                w.nest_end(n);
                let n = w.nest_start(cmd_attr::DEST);
                put_dest_key(&mut w, &dest.key);
                put_dest_options(&mut w, dest);
                w.nest_end(n);
            }
            Request::DelDest(key, dest) => {
                let n = w.nest_start(cmd_attr::SERVICE);
                put_service_key(&mut w, key);
                w.nest_end(n);
                let n = w.nest_start(cmd_attr::DEST);
                put_dest_key(&mut w, dest);
                w.nest_end(n);
            }
            Request::NewDaemon(d) => {
                let n = w.nest_start(cmd_attr::DAEMON);
                put_daemon(&mut w, d);
                w.nest_end(n);
            }
            Request::DelDaemon(state) => {
                let n = w.nest_start(cmd_attr::DAEMON);
                w.put_u32(daemon_attr::STATE, state.number());
                w.nest_end(n);
            }
            Request::SetConfig(t) => {
                if t.tcp != 0 {
                    w.put_u32(cmd_attr::TIMEOUT_TCP, t.tcp);
                }
                if t.tcp_fin != 0 {
                    w.put_u32(cmd_attr::TIMEOUT_TCP_FIN, t.tcp_fin);
                }
                if t.udp != 0 {
                    w.put_u32(cmd_attr::TIMEOUT_UDP, t.udp);
                }
            }
            Request::Zero(Some(key)) => {
                let n = w.nest_start(cmd_attr::SERVICE);
                put_service_key(&mut w, key);
                w.nest_end(n);
            }
            Request::DumpServices
            | Request::DumpDaemons
            | Request::GetConfig
            | Request::GetInfo
            | Request::Zero(None)
            | Request::Flush => {}
        }
        w.buf
    }
}

/// One decoded reply of the IPVS family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A service (reply to `GET_SERVICE`).
    Service(ServiceEntry),
    /// A destination (reply to `GET_DEST`; the service is the request's).
    Dest(DestEntry),
    /// A running sync daemon.
    Daemon(Daemon),
    /// The timeouts.
    Config(Timeouts),
    /// Version and table size.
    Info(Info),
}

/// A reply that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than a header needs.
    #[error("{what}: {have} bytes, need at least {need}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// An attribute's length field is impossible.
    #[error("{context}: attribute {attr} has length {len} with {remaining} bytes left")]
    BadAttrHeader {
        /// Which object's attributes.
        context: &'static str,
        /// Attribute type.
        attr: u16,
        /// Its length field.
        len: u16,
        /// Bytes left in the enclosing buffer.
        remaining: usize,
    },
    /// An attribute's payload has the wrong size for its type.
    #[error("{context}: attribute {attr} has {len} payload bytes, expected {expected}")]
    BadAttrLen {
        /// Which object.
        context: &'static str,
        /// Attribute name.
        attr: &'static str,
        /// Payload length.
        len: usize,
        /// What it should be.
        expected: &'static str,
    },
    /// A required attribute is absent.
    #[error("{context}: attribute {attr} is missing")]
    Missing {
        /// Which object.
        context: &'static str,
        /// Attribute name.
        attr: &'static str,
    },
    /// An attribute's value is outside what it may be.
    #[error("{context}: attribute {attr} has unknown value {value}")]
    BadValue {
        /// Which object.
        context: &'static str,
        /// Attribute name.
        attr: &'static str,
        /// The value.
        value: u64,
    },
    /// A string attribute is not NUL-terminated UTF-8 within its limit.
    #[error("{context}: attribute {attr} is not a string of at most {max} bytes")]
    BadString {
        /// Which object.
        context: &'static str,
        /// Attribute name.
        attr: &'static str,
        /// Maximum length with the NUL.
        max: usize,
    },
    /// The command is not one the family sends.
    #[error("unexpected IPVS command {cmd}")]
    UnexpectedCommand {
        /// The command number.
        cmd: u8,
    },
}

/// Decode one reply: the generic netlink header and its attributes.
pub fn decode_reply(buf: &[u8]) -> Result<Reply, DecodeError> {
    if buf.len() < GENL_HDRLEN {
        return Err(DecodeError::Truncated {
            what: "genlmsghdr",
            need: GENL_HDRLEN,
            have: buf.len(),
        });
    }
    let cmd = buf[0];
    let attrs = parse(&buf[GENL_HDRLEN..], cmd_attr::MAX, "reply")?;
    match Cmd::from_u8(cmd) {
        Some(Cmd::NewService) => {
            let nested = attrs.required(cmd_attr::SERVICE, "reply", "IPVS_CMD_ATTR_SERVICE")?;
            decode_service(nested).map(Reply::Service)
        }
        Some(Cmd::NewDest) => {
            let nested = attrs.required(cmd_attr::DEST, "reply", "IPVS_CMD_ATTR_DEST")?;
            decode_dest(nested).map(Reply::Dest)
        }
        Some(Cmd::NewDaemon) => {
            let nested = attrs.required(cmd_attr::DAEMON, "reply", "IPVS_CMD_ATTR_DAEMON")?;
            decode_daemon(nested).map(Reply::Daemon)
        }
        Some(Cmd::SetConfig) => {
            let get = |ty, name| attrs.opt_u32(ty, "config", name).map(|v| v.unwrap_or(0));
            Ok(Reply::Config(Timeouts {
                tcp: get(cmd_attr::TIMEOUT_TCP, "IPVS_CMD_ATTR_TIMEOUT_TCP")?,
                tcp_fin: get(cmd_attr::TIMEOUT_TCP_FIN, "IPVS_CMD_ATTR_TIMEOUT_TCP_FIN")?,
                udp: get(cmd_attr::TIMEOUT_UDP, "IPVS_CMD_ATTR_TIMEOUT_UDP")?,
            }))
        }
        Some(Cmd::SetInfo) => {
            // The info attributes sit at the top level, numbered on their own.
            let attrs = parse(&buf[GENL_HDRLEN..], info_attr::MAX, "info")?;
            Ok(Reply::Info(Info {
                version: attrs.req_u32(info_attr::VERSION, "info", "IPVS_INFO_ATTR_VERSION")?,
                conn_tab_size: attrs.req_u32(
                    info_attr::CONN_TAB_SIZE,
                    "info",
                    "IPVS_INFO_ATTR_CONN_TAB_SIZE",
                )?,
            }))
        }
        _ => Err(DecodeError::UnexpectedCommand { cmd }),
    }
}

/// Decode the attributes nested in `IPVS_CMD_ATTR_SERVICE`.
pub fn decode_service(buf: &[u8]) -> Result<ServiceEntry, DecodeError> {
    const CX: &str = "service";
    let a = parse(buf, svc_attr::MAX, CX)?;
    let af = a.req_u16(svc_attr::AF, CX, "IPVS_SVC_ATTR_AF")?;
    let family = Family::from_af(af).ok_or(DecodeError::BadValue {
        context: CX,
        attr: "IPVS_SVC_ATTR_AF",
        value: af.into(),
    })?;
    let key = match a.opt_u32(svc_attr::FWMARK, CX, "IPVS_SVC_ATTR_FWMARK")? {
        Some(mark) if mark != 0 => ServiceKey::Fwmark { family, mark },
        _ => {
            let proto = a.req_u16(svc_attr::PROTOCOL, CX, "IPVS_SVC_ATTR_PROTOCOL")?;
            let protocol = Protocol::from_number(proto).ok_or(DecodeError::BadValue {
                context: CX,
                attr: "IPVS_SVC_ATTR_PROTOCOL",
                value: proto.into(),
            })?;
            let addr = a.required(svc_attr::ADDR, CX, "IPVS_SVC_ATTR_ADDR")?;
            let addr = get_addr(addr, family, CX, "IPVS_SVC_ATTR_ADDR")?;
            let port = a.req_be16(svc_attr::PORT, CX, "IPVS_SVC_ATTR_PORT")?;
            ServiceKey::Addr {
                protocol,
                addr,
                port,
            }
        }
    };
    let scheduler = get_string(
        a.required(svc_attr::SCHED_NAME, CX, "IPVS_SVC_ATTR_SCHED_NAME")?,
        CX,
        "IPVS_SVC_ATTR_SCHED_NAME",
        SCHEDNAME_MAXLEN,
    )?;
    let pe_name = match a.get(svc_attr::PE_NAME) {
        Some(p) => Some(get_string(
            p,
            CX,
            "IPVS_SVC_ATTR_PE_NAME",
            SCHEDNAME_MAXLEN,
        )?),
        None => None,
    };
    let flags = a.required(svc_attr::FLAGS, CX, "IPVS_SVC_ATTR_FLAGS")?;
    if flags.len() < 4 {
        return Err(DecodeError::BadAttrLen {
            context: CX,
            attr: "IPVS_SVC_ATTR_FLAGS",
            len: flags.len(),
            expected: "8 (struct ip_vs_flags)",
        });
    }
    let flags =
        u32::from_ne_bytes([flags[0], flags[1], flags[2], flags[3]]) & !ServiceFlags::HASHED;
    let timeout = a.req_u32(svc_attr::TIMEOUT, CX, "IPVS_SVC_ATTR_TIMEOUT")?;
    let netmask = a.required(svc_attr::NETMASK, CX, "IPVS_SVC_ATTR_NETMASK")?;
    let netmask = fixed::<4>(netmask, CX, "IPVS_SVC_ATTR_NETMASK", "4")?;
    let netmask = match family {
        Family::Inet => u32::from_be_bytes(netmask),
        Family::Inet6 => u32::from_ne_bytes(netmask),
    };
    let stats = decode_stats_of(&a, svc_attr::STATS64, svc_attr::STATS)?;
    Ok(ServiceEntry {
        service: Service {
            key,
            scheduler,
            flags: ServiceFlags(flags),
            timeout,
            netmask,
            pe_name: pe_name.filter(|p| !p.is_empty()),
        },
        stats,
    })
}

/// Decode the attributes nested in `IPVS_CMD_ATTR_DEST`.
pub fn decode_dest(buf: &[u8]) -> Result<DestEntry, DecodeError> {
    const CX: &str = "destination";
    let a = parse(buf, dest_attr::MAX, CX)?;
    // Kernels before 4.4 omit the family: the address is then the
    // service's, which a 16-byte address with 12 zero bytes after the first
    // four cannot tell apart from an IPv6 address; they are IPv4 here.
    let family = match a.opt_u16(dest_attr::ADDR_FAMILY, CX, "IPVS_DEST_ATTR_ADDR_FAMILY")? {
        Some(af) => Family::from_af(af).ok_or(DecodeError::BadValue {
            context: CX,
            attr: "IPVS_DEST_ATTR_ADDR_FAMILY",
            value: af.into(),
        })?,
        None => Family::Inet,
    };
    let addr = a.required(dest_attr::ADDR, CX, "IPVS_DEST_ATTR_ADDR")?;
    let addr = get_addr(addr, family, CX, "IPVS_DEST_ATTR_ADDR")?;
    let port = a.req_be16(dest_attr::PORT, CX, "IPVS_DEST_ATTR_PORT")?;
    let fwd = a.req_u32(dest_attr::FWD_METHOD, CX, "IPVS_DEST_ATTR_FWD_METHOD")?;
    let forwarding = Forwarding::from_bits(fwd).ok_or(DecodeError::BadValue {
        context: CX,
        attr: "IPVS_DEST_ATTR_FWD_METHOD",
        value: fwd.into(),
    })?;
    let tun_type = match a.get(dest_attr::TUN_TYPE) {
        Some(t) => {
            let [t] = fixed::<1>(t, CX, "IPVS_DEST_ATTR_TUN_TYPE", "1")?;
            TunnelType::from_number(t).ok_or(DecodeError::BadValue {
                context: CX,
                attr: "IPVS_DEST_ATTR_TUN_TYPE",
                value: t.into(),
            })?
        }
        None => TunnelType::Ipip,
    };
    let dest = Destination {
        key: DestKey { addr, port },
        forwarding,
        weight: a.req_u32(dest_attr::WEIGHT, CX, "IPVS_DEST_ATTR_WEIGHT")?,
        u_threshold: a.req_u32(dest_attr::U_THRESH, CX, "IPVS_DEST_ATTR_U_THRESH")?,
        l_threshold: a.req_u32(dest_attr::L_THRESH, CX, "IPVS_DEST_ATTR_L_THRESH")?,
        tun_type,
        tun_port: match a.get(dest_attr::TUN_PORT) {
            Some(p) => u16::from_be_bytes(fixed::<2>(p, CX, "IPVS_DEST_ATTR_TUN_PORT", "2")?),
            None => 0,
        },
        tun_flags: TunnelFlags(
            a.opt_u16(dest_attr::TUN_FLAGS, CX, "IPVS_DEST_ATTR_TUN_FLAGS")?
                .unwrap_or(0),
        ),
    };
    let count = |ty, name| a.opt_u32(ty, CX, name).map(|v| v.unwrap_or(0));
    Ok(DestEntry {
        dest,
        active_conns: count(dest_attr::ACTIVE_CONNS, "IPVS_DEST_ATTR_ACTIVE_CONNS")?,
        inact_conns: count(dest_attr::INACT_CONNS, "IPVS_DEST_ATTR_INACT_CONNS")?,
        persist_conns: count(dest_attr::PERSIST_CONNS, "IPVS_DEST_ATTR_PERSIST_CONNS")?,
        stats: decode_stats_of(&a, dest_attr::STATS64, dest_attr::STATS)?,
    })
}

/// Decode the attributes nested in `IPVS_CMD_ATTR_DAEMON`.
pub fn decode_daemon(buf: &[u8]) -> Result<Daemon, DecodeError> {
    const CX: &str = "sync daemon";
    let a = parse(buf, daemon_attr::MAX, CX)?;
    let state = a.req_u32(daemon_attr::STATE, CX, "IPVS_DAEMON_ATTR_STATE")?;
    let state = DaemonState::from_number(state).ok_or(DecodeError::BadValue {
        context: CX,
        attr: "IPVS_DAEMON_ATTR_STATE",
        value: state.into(),
    })?;
    let mcast_ifn = get_string(
        a.required(daemon_attr::MCAST_IFN, CX, "IPVS_DAEMON_ATTR_MCAST_IFN")?,
        CX,
        "IPVS_DAEMON_ATTR_MCAST_IFN",
        IFNAME_MAXLEN,
    )?;
    let mcast_group = match (
        a.get(daemon_attr::MCAST_GROUP),
        a.get(daemon_attr::MCAST_GROUP6),
    ) {
        (_, Some(g6)) => Some(IpAddr::V6(Ipv6Addr::from(fixed::<16>(
            g6,
            CX,
            "IPVS_DAEMON_ATTR_MCAST_GROUP6",
            "16",
        )?))),
        (Some(g4), None) => Some(IpAddr::V4(Ipv4Addr::from(fixed::<4>(
            g4,
            CX,
            "IPVS_DAEMON_ATTR_MCAST_GROUP",
            "4",
        )?))),
        (None, None) => None,
    };
    let mcast_ttl = match a.get(daemon_attr::MCAST_TTL) {
        Some(t) => Some(fixed::<1>(t, CX, "IPVS_DAEMON_ATTR_MCAST_TTL", "1")?[0]),
        None => None,
    };
    Ok(Daemon {
        state,
        mcast_ifn,
        sync_id: a.req_u32(daemon_attr::SYNC_ID, CX, "IPVS_DAEMON_ATTR_SYNC_ID")?,
        sync_maxlen: a.opt_u16(daemon_attr::SYNC_MAXLEN, CX, "IPVS_DAEMON_ATTR_SYNC_MAXLEN")?,
        mcast_group,
        mcast_port: a.opt_u16(daemon_attr::MCAST_PORT, CX, "IPVS_DAEMON_ATTR_MCAST_PORT")?,
        mcast_ttl,
    })
}

/// Statistics from the 64-bit nest when present, else the 32-bit one.
fn decode_stats_of(a: &Attrs<'_>, ty64: u16, ty32: u16) -> Result<Stats, DecodeError> {
    match (a.get(ty64), a.get(ty32)) {
        (Some(s), _) => decode_stats(s, "stats64"),
        (None, Some(s)) => decode_stats(s, "stats"),
        (None, None) => Ok(Stats::default()),
    }
}

/// Decode a statistics nest; each counter may be 4 or 8 bytes.
fn decode_stats(buf: &[u8], cx: &'static str) -> Result<Stats, DecodeError> {
    let a = parse(buf, stats_attr::MAX, cx)?;
    let get = |ty: u16, name: &'static str| -> Result<u64, DecodeError> {
        match a.get(ty) {
            None => Ok(0),
            Some(v) => match v.len() {
                4 => Ok(u32::from_ne_bytes([v[0], v[1], v[2], v[3]]).into()),
                8 => Ok(u64::from_ne_bytes([
                    v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7],
                ])),
                len => Err(DecodeError::BadAttrLen {
                    context: cx,
                    attr: name,
                    len,
                    expected: "4 or 8",
                }),
            },
        }
    };
    Ok(Stats {
        conns: get(stats_attr::CONNS, "IPVS_STATS_ATTR_CONNS")?,
        inpkts: get(stats_attr::INPKTS, "IPVS_STATS_ATTR_INPKTS")?,
        outpkts: get(stats_attr::OUTPKTS, "IPVS_STATS_ATTR_OUTPKTS")?,
        inbytes: get(stats_attr::INBYTES, "IPVS_STATS_ATTR_INBYTES")?,
        outbytes: get(stats_attr::OUTBYTES, "IPVS_STATS_ATTR_OUTBYTES")?,
        cps: get(stats_attr::CPS, "IPVS_STATS_ATTR_CPS")?,
        inpps: get(stats_attr::INPPS, "IPVS_STATS_ATTR_INPPS")?,
        outpps: get(stats_attr::OUTPPS, "IPVS_STATS_ATTR_OUTPPS")?,
        inbps: get(stats_attr::INBPS, "IPVS_STATS_ATTR_INBPS")?,
        outbps: get(stats_attr::OUTBPS, "IPVS_STATS_ATTR_OUTBPS")?,
    })
}

fn put_service_key(w: &mut AttrWriter, key: &ServiceKey) {
    w.put_u16(svc_attr::AF, key.family().af());
    match key {
        ServiceKey::Fwmark { mark, .. } => w.put_u32(svc_attr::FWMARK, *mark),
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => {
            w.put_u16(svc_attr::PROTOCOL, protocol.number());
            w.put(svc_attr::ADDR, &addr_bytes(addr));
            w.put(svc_attr::PORT, &port.to_be_bytes());
        }
    }
}

/// A full service entry, in the order `ipvsadm` writes it.
fn put_service(w: &mut AttrWriter, svc: &Service) {
    put_service_key(w, &svc.key);
    w.put_str(svc_attr::SCHED_NAME, &svc.scheduler);
    if let Some(pe) = &svc.pe_name {
        w.put_str(svc_attr::PE_NAME, pe);
    }
    // struct ip_vs_flags { flags, mask }: every user flag is given.
    let mut flags = [0u8; 8];
    flags[..4].copy_from_slice(&svc.flags.0.to_ne_bytes());
    flags[4..].copy_from_slice(&u32::MAX.to_ne_bytes());
    w.put(svc_attr::FLAGS, &flags);
    w.put_u32(svc_attr::TIMEOUT, svc.timeout);
    let netmask = match svc.key.family() {
        Family::Inet => svc.netmask.to_be_bytes(),
        Family::Inet6 => svc.netmask.to_ne_bytes(),
    };
    w.put(svc_attr::NETMASK, &netmask);
}

fn put_dest_key(w: &mut AttrWriter, key: &DestKey) {
    w.put_u16(dest_attr::ADDR_FAMILY, Family::of(&key.addr).af());
    w.put(dest_attr::ADDR, &addr_bytes(&key.addr));
    w.put(dest_attr::PORT, &key.port.to_be_bytes());
}

fn put_dest_options(w: &mut AttrWriter, d: &Destination) {
    w.put_u32(dest_attr::FWD_METHOD, d.forwarding.bits());
    w.put_u32(dest_attr::WEIGHT, d.weight);
    w.put(dest_attr::TUN_TYPE, &[d.tun_type.number()]);
    w.put(dest_attr::TUN_PORT, &d.tun_port.to_be_bytes());
    w.put_u16(dest_attr::TUN_FLAGS, d.tun_flags.0);
    w.put_u32(dest_attr::U_THRESH, d.u_threshold);
    w.put_u32(dest_attr::L_THRESH, d.l_threshold);
}

fn put_daemon(w: &mut AttrWriter, d: &Daemon) {
    w.put_u32(daemon_attr::STATE, d.state.number());
    w.put_str(daemon_attr::MCAST_IFN, &d.mcast_ifn);
    w.put_u32(daemon_attr::SYNC_ID, d.sync_id);
    if let Some(len) = d.sync_maxlen {
        w.put_u16(daemon_attr::SYNC_MAXLEN, len);
    }
    match d.mcast_group {
        Some(IpAddr::V4(g)) => w.put(daemon_attr::MCAST_GROUP, &g.octets()),
        Some(IpAddr::V6(g)) => w.put(daemon_attr::MCAST_GROUP6, &g.octets()),
        None => {}
    }
    if let Some(port) = d.mcast_port {
        w.put_u16(daemon_attr::MCAST_PORT, port);
    }
    if let Some(ttl) = d.mcast_ttl {
        w.put(daemon_attr::MCAST_TTL, &[ttl]);
    }
}

/// The 16 bytes of `union nf_inet_addr`.
fn addr_bytes(addr: &IpAddr) -> [u8; 16] {
    let mut b = [0u8; 16];
    match addr {
        IpAddr::V4(a) => b[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => b = a.octets(),
    }
    b
}

fn get_addr(
    buf: &[u8],
    family: Family,
    context: &'static str,
    attr: &'static str,
) -> Result<IpAddr, DecodeError> {
    match (family, buf.len()) {
        (Family::Inet, n) if n >= 4 => {
            Ok(IpAddr::V4(Ipv4Addr::new(buf[0], buf[1], buf[2], buf[3])))
        }
        (Family::Inet6, 16) => Ok(IpAddr::V6(Ipv6Addr::from(fixed::<16>(
            buf, context, attr, "16",
        )?))),
        (_, len) => Err(DecodeError::BadAttrLen {
            context,
            attr,
            len,
            expected: "4 or 16 for the family",
        }),
    }
}

fn get_string(
    buf: &[u8],
    context: &'static str,
    attr: &'static str,
    max: usize,
) -> Result<String, DecodeError> {
    let bad = DecodeError::BadString { context, attr, max };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    if end >= max {
        return Err(bad);
    }
    String::from_utf8(buf[..end].to_vec()).map_err(|_| bad)
}

fn fixed<const N: usize>(
    buf: &[u8],
    context: &'static str,
    attr: &'static str,
    expected: &'static str,
) -> Result<[u8; N], DecodeError> {
    buf.try_into().map_err(|_| DecodeError::BadAttrLen {
        context,
        attr,
        len: buf.len(),
        expected,
    })
}

/// Attributes of one level, indexed by type; the last of a type wins and
/// types above the level's maximum are ignored, as the kernel's parser does.
struct Attrs<'a> {
    slots: Vec<Option<&'a [u8]>>,
}

fn parse<'a>(mut buf: &'a [u8], max: u16, context: &'static str) -> Result<Attrs<'a>, DecodeError> {
    let mut slots = vec![None; usize::from(max) + 1];
    while buf.len() >= NLA_HDRLEN {
        let len = u16::from_ne_bytes([buf[0], buf[1]]);
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        let ulen = usize::from(len);
        if ulen < NLA_HDRLEN || ulen > buf.len() {
            return Err(DecodeError::BadAttrHeader {
                context,
                attr: ty,
                len,
                remaining: buf.len(),
            });
        }
        if let Some(slot) = slots.get_mut(usize::from(ty)) {
            *slot = Some(&buf[NLA_HDRLEN..ulen]);
        }
        buf = &buf[align4(ulen).min(buf.len())..];
    }
    // Trailing bytes shorter than a header are padding, as in nla_parse.
    Ok(Attrs { slots })
}

impl<'a> Attrs<'a> {
    fn get(&self, ty: u16) -> Option<&'a [u8]> {
        self.slots.get(usize::from(ty)).copied().flatten()
    }

    fn required(
        &self,
        ty: u16,
        context: &'static str,
        attr: &'static str,
    ) -> Result<&'a [u8], DecodeError> {
        self.get(ty).ok_or(DecodeError::Missing { context, attr })
    }

    fn opt_u16(
        &self,
        ty: u16,
        context: &'static str,
        attr: &'static str,
    ) -> Result<Option<u16>, DecodeError> {
        self.get(ty)
            .map(|v| fixed::<2>(v, context, attr, "2").map(u16::from_ne_bytes))
            .transpose()
    }

    fn opt_u32(
        &self,
        ty: u16,
        context: &'static str,
        attr: &'static str,
    ) -> Result<Option<u32>, DecodeError> {
        self.get(ty)
            .map(|v| fixed::<4>(v, context, attr, "4").map(u32::from_ne_bytes))
            .transpose()
    }

    fn req_u16(
        &self,
        ty: u16,
        context: &'static str,
        attr: &'static str,
    ) -> Result<u16, DecodeError> {
        self.opt_u16(ty, context, attr)?
            .ok_or(DecodeError::Missing { context, attr })
    }

    fn req_u32(
        &self,
        ty: u16,
        context: &'static str,
        attr: &'static str,
    ) -> Result<u32, DecodeError> {
        self.opt_u32(ty, context, attr)?
            .ok_or(DecodeError::Missing { context, attr })
    }

    fn req_be16(
        &self,
        ty: u16,
        context: &'static str,
        attr: &'static str,
    ) -> Result<u16, DecodeError> {
        let v = self.required(ty, context, attr)?;
        fixed::<2>(v, context, attr, "2").map(u16::from_be_bytes)
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Writes a generic netlink header and attributes.
struct AttrWriter {
    buf: Vec<u8>,
}

impl AttrWriter {
    fn with_genl_header(cmd: Cmd) -> Self {
        AttrWriter {
            buf: vec![cmd as u8, FAMILY_VERSION, 0, 0],
        }
    }

    fn put(&mut self, ty: u16, payload: &[u8]) {
        let len = NLA_HDRLEN + payload.len();
        // Attribute payloads here are at most a few dozen bytes.
        let len16 = u16::try_from(len).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    fn put_u16(&mut self, ty: u16, v: u16) {
        self.put(ty, &v.to_ne_bytes());
    }

    fn put_u32(&mut self, ty: u16, v: u32) {
        self.put(ty, &v.to_ne_bytes());
    }

    /// A NUL-terminated string (`NLA_NUL_STRING`).
    fn put_str(&mut self, ty: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.put(ty, &v);
    }

    /// Open a nest; it carries `NLA_F_NESTED`, as libnl (and so `ipvsadm`)
    /// sets it.
    fn nest_start(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        at
    }

    fn nest_end(&mut self, at: usize) {
        let len = u16::try_from(self.buf.len() - at).unwrap_or(u16::MAX);
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }
}

#[cfg(test)]
mod tests;
