//! Receive ports of the kernel's foo-over-UDP module (`fou`, generic netlink
//! family "fou"): what a real server needs to take GUE-encapsulated packets
//! (Generic UDP Encapsulation, draft-ietf-intarea-gue) from a director in
//! LVS-TUN mode with `--tun-type gue`. The port strips the UDP and GUE
//! headers and hands the inner packet to the protocol the GUE header names
//! (IPIP, 4, or IPv6, 41), so the fallback tunnel device (`tunl0`,
//! `ip6tnl0`) receives it, as it receives plain IPIP.
//!
//! Attributes and commands from `include/uapi/linux/fou.h`:
//!
//! ```text
//! FOU_CMD_ADD = 1, FOU_CMD_DEL = 2, FOU_CMD_GET = 3
//! FOU_ATTR_PORT = 1 (be16), FOU_ATTR_AF = 2 (u8), FOU_ATTR_IPPROTO = 3 (u8),
//! FOU_ATTR_TYPE = 4 (u8: FOU_ENCAP_DIRECT = 1, FOU_ENCAP_GUE = 2)
//! ```
//!
//! The codec is pure (golden bytes in the tests); [`FouSocket`] is a short
//! blocking generic netlink socket framed by `neli`, opened per call.

use std::io::Cursor;

use neli::consts::genl::{CtrlAttr, CtrlCmd};
use neli::consts::nl::NlmF;
use neli::consts::socket::NlFamily;
use neli::genl::Genlmsghdr;
use neli::nl::{NlPayload, Nlmsghdr, NlmsghdrBuilder};
use neli::socket::NlSocket;
use neli::types::Buffer;
use neli::utils::Groups;
use neli::{FromBytes, FromBytesWithInput, ToBytes};
use serde::{Deserialize, Serialize};

/// The generic netlink family name.
pub const FAMILY_NAME: &str = "fou";
const FAMILY_VERSION: u8 = 1;
const CMD_ADD: u8 = 1;
const CMD_DEL: u8 = 2;
const CMD_GET: u8 = 3;
const ATTR_PORT: u16 = 1;
const ATTR_AF: u16 = 2;
const ATTR_IPPROTO: u16 = 3;
const ATTR_TYPE: u16 = 4;
const ENCAP_GUE: u8 = 2;
const GENL_ID_CTRL: u16 = 0x10;
const NLMSG_DONE: u16 = 3;
const DATAGRAM: usize = 32 << 10;
/// Replies read for one request at most: a dump of every port of a host
/// fits in a few datagrams.
const MAX_DATAGRAMS: usize = 64;

/// Outer address family of a GUE receive port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FouFamily {
    /// GUE over IPv4, IPv4 inside (IPIP).
    Ipv4,
    /// GUE over IPv6, IPv6 inside.
    Ipv6,
}

impl FouFamily {
    fn af(self) -> u8 {
        match self {
            FouFamily::Ipv4 => libc::AF_INET as u8,
            FouFamily::Ipv6 => libc::AF_INET6 as u8,
        }
    }

    fn ipproto(self) -> u8 {
        match self {
            FouFamily::Ipv4 => libc::IPPROTO_IPIP as u8,
            FouFamily::Ipv6 => libc::IPPROTO_IPV6 as u8,
        }
    }
}

/// A GUE receive port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GuePort {
    /// UDP port.
    pub port: u16,
    /// Outer family.
    pub family: FouFamily,
}

impl std::fmt::Display for GuePort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let family = match self.family {
            FouFamily::Ipv4 => "IPv4",
            FouFamily::Ipv6 => "IPv6",
        };
        write!(f, "GUE port {} ({family})", self.port)
    }
}

/// The fou family could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FouError {
    /// The socket.
    #[error("fou netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// No "fou" family: the module is missing.
    #[error(
        "the kernel has no fou generic netlink family; load it with `modprobe fou` (and fou6 for IPv6)"
    )]
    NoFamily,
    /// neli could not frame or parse a message.
    #[error("fou netlink framing: {0}")]
    Framing(String),
    /// The kernel refused a request.
    #[error("{what} {port}: {}", std::io::Error::from_raw_os_error(*.errno))]
    Kernel {
        /// "add" or "delete".
        what: &'static str,
        /// The port.
        port: GuePort,
        /// The errno.
        errno: i32,
    },
    /// No answer within the datagrams allowed.
    #[error("fou netlink: no answer to {0}")]
    NoAnswer(&'static str),
}

fn attr(out: &mut Vec<u8>, ty: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize((out.len() + 3) & !3, 0);
}

/// The generic netlink payload (header and attributes) of a FOU_CMD_ADD or
/// FOU_CMD_DEL of `port`.
pub fn encode(add: bool, port: GuePort) -> Vec<u8> {
    let cmd = if add { CMD_ADD } else { CMD_DEL };
    let mut out = vec![cmd, FAMILY_VERSION, 0, 0];
    attr(&mut out, ATTR_PORT, &port.port.to_be_bytes());
    attr(&mut out, ATTR_AF, &[port.family.af()]);
    if add {
        attr(&mut out, ATTR_IPPROTO, &[port.family.ipproto()]);
        attr(&mut out, ATTR_TYPE, &[ENCAP_GUE]);
    }
    out
}

/// A FOU_CMD_GET dump request (for one family: the kernel dumps all).
fn encode_get() -> Vec<u8> {
    vec![CMD_GET, FAMILY_VERSION, 0, 0]
}

/// The GUE port one dump reply describes; `None` for a direct (non-GUE) port
/// or an unknown family.
pub fn decode(payload: &[u8]) -> Option<GuePort> {
    let mut rest = payload.get(4..)?;
    let (mut port, mut af, mut ty) = (None, None, None);
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        let value = &rest[4..len];
        match (kind, value) {
            (ATTR_PORT, [a, b]) => port = Some(u16::from_be_bytes([*a, *b])),
            (ATTR_AF, [v]) => af = Some(*v),
            (ATTR_TYPE, [v]) => ty = Some(*v),
            _ => {}
        }
        rest = rest.get((len + 3) & !3..).unwrap_or(&[]);
    }
    let family = match af.unwrap_or(libc::AF_INET as u8) as i32 {
        libc::AF_INET => FouFamily::Ipv4,
        libc::AF_INET6 => FouFamily::Ipv6,
        _ => return None,
    };
    (ty == Some(ENCAP_GUE)).then_some(GuePort {
        port: port?,
        family,
    })
}

fn frame(ty: u16, flags: NlmF, seq: u32, payload: Vec<u8>) -> Result<Vec<u8>, FouError> {
    let msg = NlmsghdrBuilder::default()
        .nl_type(ty)
        .nl_flags(flags)
        .nl_seq(seq)
        .nl_payload(NlPayload::<u16, Buffer>::Payload(Buffer::from(payload)))
        .build()
        .map_err(|e| FouError::Framing(e.to_string()))?;
    let mut cur = Cursor::new(Vec::new());
    msg.to_bytes(&mut cur)
        .map_err(|e| FouError::Framing(e.to_string()))?;
    Ok(cur.into_inner())
}

/// A blocking generic netlink socket bound to the "fou" family.
pub struct FouSocket {
    sock: NlSocket,
    family: u16,
    seq: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for FouSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FouSocket")
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

enum Answer {
    Done(Vec<Vec<u8>>),
    Err(i32),
}

impl FouSocket {
    /// Opens a socket and resolves the family (which loads the module when
    /// the kernel can).
    pub fn connect() -> Result<Self, FouError> {
        let sock = NlSocket::connect(NlFamily::Generic, None, Groups::empty())?;
        sock.block()?;
        let mut s = FouSocket {
            sock,
            family: GENL_ID_CTRL,
            seq: 0,
            buf: vec![0; DATAGRAM],
        };
        let mut payload = vec![libc::CTRL_CMD_GETFAMILY as u8, 2, 0, 0];
        let mut name = FAMILY_NAME.as_bytes().to_vec();
        name.push(0);
        attr(&mut payload, libc::CTRL_ATTR_FAMILY_NAME as u16, &name);
        let replies = match s.request(GENL_ID_CTRL, NlmF::REQUEST | NlmF::ACK, payload)? {
            Answer::Done(r) => r,
            Answer::Err(e) if e == libc::ENOENT => return Err(FouError::NoFamily),
            Answer::Err(e) => return Err(std::io::Error::from_raw_os_error(e).into()),
        };
        for p in replies {
            let genl = Genlmsghdr::<CtrlCmd, CtrlAttr>::from_bytes_with_input(
                &mut Cursor::new(&p[..]),
                p.len(),
            )
            .map_err(|e| FouError::Framing(e.to_string()))?;
            if let Ok(id) = genl
                .attrs()
                .get_attr_handle()
                .get_attr_payload_as::<u16>(CtrlAttr::FamilyId)
            {
                s.family = id;
                return Ok(s);
            }
        }
        Err(FouError::NoFamily)
    }

    fn request(&mut self, ty: u16, flags: NlmF, payload: Vec<u8>) -> Result<Answer, FouError> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        let dump = flags.contains(NlmF::DUMP);
        let bytes = frame(ty, flags, seq, payload)?;
        self.sock.send(&bytes, neli::consts::socket::Msg::empty())?;
        let mut replies = Vec::new();
        for _ in 0..MAX_DATAGRAMS {
            let (n, _) = self
                .sock
                .recv(&mut self.buf[..], neli::consts::socket::Msg::empty())?;
            let mut cur = Cursor::new(&self.buf[..n]);
            while (cur.position() as usize) < n {
                let msg = Nlmsghdr::<u16, Buffer>::from_bytes(&mut cur)
                    .map_err(|e| FouError::Framing(e.to_string()))?;
                if *msg.nl_seq() != seq {
                    continue;
                }
                if *msg.nl_type() == NLMSG_DONE {
                    return Ok(Answer::Done(replies));
                }
                match msg.nl_payload() {
                    NlPayload::Payload(p) => {
                        replies.push(p.as_ref().to_vec());
                        if !dump && !flags.contains(NlmF::ACK) {
                            return Ok(Answer::Done(replies));
                        }
                    }
                    NlPayload::Err(e) => return Ok(Answer::Err(-*e.error())),
                    _ => return Ok(Answer::Done(replies)),
                }
            }
        }
        Err(FouError::NoAnswer(if dump {
            "a dump"
        } else {
            "a request"
        }))
    }

    /// Every GUE receive port of this network namespace.
    pub fn gue_ports(&mut self) -> Result<Vec<GuePort>, FouError> {
        match self.request(self.family, NlmF::REQUEST | NlmF::DUMP, encode_get())? {
            Answer::Done(replies) => Ok(replies.iter().filter_map(|p| decode(p)).collect()),
            Answer::Err(e) => Err(std::io::Error::from_raw_os_error(e).into()),
        }
    }

    /// Opens `port`; `Ok(false)` when it was open already.
    pub fn add(&mut self, port: GuePort) -> Result<bool, FouError> {
        match self.request(self.family, NlmF::REQUEST | NlmF::ACK, encode(true, port))? {
            Answer::Done(_) => Ok(true),
            Answer::Err(e) if e == libc::EEXIST || e == libc::EALREADY => Ok(false),
            Answer::Err(errno) => Err(FouError::Kernel {
                what: "add",
                port,
                errno,
            }),
        }
    }

    /// Closes `port`; `Ok(false)` when it was not open.
    pub fn delete(&mut self, port: GuePort) -> Result<bool, FouError> {
        match self.request(self.family, NlmF::REQUEST | NlmF::ACK, encode(false, port))? {
            Answer::Done(_) => Ok(true),
            Answer::Err(e) if e == libc::ENOENT || e == libc::ESRCH => Ok(false),
            Answer::Err(errno) => Err(FouError::Kernel {
                what: "delete",
                port,
                errno,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: GuePort = GuePort {
        port: 6080,
        family: FouFamily::Ipv4,
    };

    #[test]
    fn add_carries_port_big_endian_family_inner_protocol_and_gue() {
        // What `ip fou add port 6080 gue` sends, plus FOU_ATTR_IPPROTO = 4.
        let bytes = encode(true, V4);
        let mut want = vec![1, 1, 0, 0];
        want.extend_from_slice(&[6, 0, 1, 0, 0x17, 0xc0, 0, 0]); // port 6080
        want.extend_from_slice(&[5, 0, 2, 0, 2, 0, 0, 0]); // AF_INET
        want.extend_from_slice(&[5, 0, 3, 0, 4, 0, 0, 0]); // IPPROTO_IPIP
        want.extend_from_slice(&[5, 0, 4, 0, 2, 0, 0, 0]); // FOU_ENCAP_GUE
        assert_eq!(bytes, want);
        let del = encode(
            false,
            GuePort {
                port: 6080,
                family: FouFamily::Ipv6,
            },
        );
        assert_eq!(
            del,
            vec![
                2, 1, 0, 0, 6, 0, 1, 0, 0x17, 0xc0, 0, 0, 5, 0, 2, 0, 10, 0, 0, 0
            ]
        );
    }

    #[test]
    fn a_dump_reply_decodes_gue_ports_only() {
        assert_eq!(decode(&encode(true, V4)), Some(V4));
        let mut direct = vec![3, 1, 0, 0];
        attr(&mut direct, ATTR_PORT, &5555u16.to_be_bytes());
        attr(&mut direct, ATTR_AF, &[libc::AF_INET as u8]);
        attr(&mut direct, ATTR_IPPROTO, &[4]);
        attr(&mut direct, ATTR_TYPE, &[1]);
        assert_eq!(decode(&direct), None, "a direct port is not ours");
        assert_eq!(decode(&[3, 1, 0, 0, 200, 0, 1, 0]), None, "bad length");
    }
}
