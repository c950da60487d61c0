//! VRRP advertisement codec: version 2 (RFC 3768, IPv4, with the simple
//! password of RFC 2338 that keepalived still speaks) and version 3 (RFC 5798,
//! IPv4 and IPv6, centisecond intervals).
//!
//! Pure: bytes in, values out. [`Advertisement::decode`] checks only what the
//! message itself says (version, type, length, address count, checksum);
//! [`validate`] checks a decoded advertisement against the IP layer it came
//! in (TTL / hop limit) and the local instance (VRID, interval, authentication,
//! addresses) and names the reason to drop it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, BytesMut};

/// IP protocol number of VRRP (RFC 5798 section 5.1.1.4).
pub const IPPROTO_VRRP: u8 = 112;
/// IPv4 multicast group of VRRP (RFC 5798 section 5.1.1.2).
pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// IPv6 multicast group of VRRP (RFC 5798 section 5.1.2.2).
pub const MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// TTL / hop limit every advertisement is sent with and must arrive with.
pub const TTL: u8 = 255;
/// The only VRRP packet type (RFC 5798 section 5.2.2).
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Length of the fixed header before the addresses.
pub const HEADER_LEN: usize = 8;
/// Length of the version 2 authentication data after the addresses.
pub const AUTH_DATA_LEN: usize = 8;
/// Largest interval a version 3 advertisement can carry, in centiseconds.
pub const MAX_ADVER_INT_V3: u16 = 0x0fff;

/// Protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// RFC 3768: IPv4 only, interval in seconds, authentication fields.
    V2,
    /// RFC 5798: IPv4 and IPv6, interval in centiseconds.
    V3,
}

impl Version {
    /// The number in the version field.
    pub fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// Version 2 authentication (RFC 3768 section 5.3.6, RFC 2338 section 5.3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Auth {
    /// Type 0. The authentication data is sent as zeros and ignored on receive.
    None,
    /// Type 1 of RFC 2338: a clear-text password of up to 8 bytes, padded with zeros.
    SimplePassword([u8; AUTH_DATA_LEN]),
    /// Any other type (2 was IP AH), carried as it came.
    Other {
        /// The type number.
        auth_type: u8,
        /// The 8 bytes of authentication data.
        data: [u8; AUTH_DATA_LEN],
    },
}

impl Auth {
    /// The number in the Auth Type field.
    pub fn auth_type(&self) -> u8 {
        match self {
            Auth::None => 0,
            Auth::SimplePassword(_) => 1,
            Auth::Other { auth_type, .. } => *auth_type,
        }
    }

    /// A simple password from text: its first 8 bytes, padded with zeros
    /// (keepalived truncates longer passwords the same way).
    pub fn simple_password(password: &str) -> Self {
        let mut data = [0u8; AUTH_DATA_LEN];
        let bytes = password.as_bytes();
        let n = bytes.len().min(AUTH_DATA_LEN);
        data[..n].copy_from_slice(&bytes[..n]);
        Auth::SimplePassword(data)
    }

    fn data(&self) -> [u8; AUTH_DATA_LEN] {
        match self {
            Auth::None => [0; AUTH_DATA_LEN],
            Auth::SimplePassword(data) | Auth::Other { data, .. } => *data,
        }
    }
}

/// What was wrong with bytes that are not a VRRP advertisement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the fixed header.
    #[error("packet of {len} bytes is shorter than the 8-byte VRRP header")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// Version neither 2 nor 3, or 2 over IPv6.
    #[error("version {version} is not supported here (2 over IPv4, 3 over IPv4 or IPv6)")]
    BadVersion {
        /// The version field.
        version: u8,
    },
    /// Type other than advertisement.
    #[error("type {kind} is not an advertisement (1)")]
    BadType {
        /// The type field.
        kind: u8,
    },
    /// The length does not match the address count.
    #[error("{count} addresses need {expected} bytes, the packet has {len}")]
    AddressCountMismatch {
        /// The count field.
        count: u8,
        /// Bytes the count implies.
        expected: usize,
        /// Bytes received.
        len: usize,
    },
    /// The checksum does not verify.
    #[error("checksum {checksum:#06x} does not verify")]
    BadChecksum {
        /// The checksum field.
        checksum: u16,
    },
    /// Source and destination of different address families.
    #[error("source {src} and destination {dst} are of different families")]
    MixedFamilies {
        /// Source address.
        src: IpAddr,
        /// Destination address.
        dst: IpAddr,
    },
}

/// A VRRP advertisement, version 2 or 3.
///
/// Version 2 (RFC 3768 section 5.1):
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |Version| Type  | Virtual Rtr ID|   Priority    | Count IP Addrs|
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |   Auth Type   |   Adver Int   |          Checksum             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                         IP Address (1)                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                            .                                  |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                         IP Address (n)                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                     Authentication Data (1)                   |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                     Authentication Data (2)                   |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// Version 3 (RFC 5798 section 5.1):
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |(rsvd) |     Max Adver Int     |          Checksum             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                                                               |
/// +                                                               +
/// |                       IPvX Address(es)                        |
/// +                                                               +
/// |                                                               |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// The addresses are of the family of the IP packet that carries the
/// advertisement; [`Advertisement::encode`] writes each address in its own
/// length, so the caller keeps them of one family (the configuration check
/// refuses mixed instances, RFC 5798 section 5.2.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    /// Version 2 or 3.
    pub version: Version,
    /// Virtual router id.
    pub vrid: u8,
    /// Priority of the sender: 255 address owner, 0 master stopping.
    pub priority: u8,
    /// Advertisement interval: seconds in version 2 (8 bits), centiseconds in
    /// version 3 (12 bits, Max Adver Int).
    pub adver_int: u16,
    /// The virtual addresses.
    pub addresses: Vec<IpAddr>,
    /// Version 2 authentication; always [`Auth::None`] in version 3.
    pub auth: Auth,
}

impl Advertisement {
    /// Length of the encoded message.
    pub fn encoded_len(&self) -> usize {
        let addrs: usize = self.addresses.iter().map(|a| addr_len(*a)).sum();
        HEADER_LEN
            + addrs
            + match self.version {
                Version::V2 => AUTH_DATA_LEN,
                Version::V3 => 0,
            }
    }

    /// Encodes the advertisement as sent from `src` to `dst`.
    ///
    /// Version 3 checksums include the IPv4 or IPv6 pseudo-header (RFC 5798
    /// section 5.2.8); version 2 checksums cover the VRRP message only (RFC
    /// 3768 section 5.3.8). The count field holds at most 255 addresses and a
    /// version 3 interval at most 4095 centiseconds; the configuration check
    /// keeps values within those bounds.
    pub fn encode(&self, src: IpAddr, dst: IpAddr) -> BytesMut {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        buf.put_u8((self.version.number() << 4) | TYPE_ADVERTISEMENT);
        buf.put_u8(self.vrid);
        buf.put_u8(self.priority);
        buf.put_u8(self.addresses.len().min(255) as u8);
        match self.version {
            Version::V2 => {
                buf.put_u8(self.auth.auth_type());
                buf.put_u8(self.adver_int.min(255) as u8);
            }
            Version::V3 => buf.put_u16(self.adver_int & MAX_ADVER_INT_V3),
        }
        buf.put_u16(0);
        for addr in self.addresses.iter().take(255) {
            match addr {
                IpAddr::V4(a) => buf.put_slice(&a.octets()),
                IpAddr::V6(a) => buf.put_slice(&a.octets()),
            }
        }
        if self.version == Version::V2 {
            buf.put_slice(&self.auth.data());
        }
        let sum = match self.version {
            Version::V2 => checksum(&[&buf]),
            Version::V3 => checksum_with_pseudo_header(&buf, src, dst),
        };
        buf[6..8].copy_from_slice(&sum.to_be_bytes());
        buf
    }

    /// Decodes a VRRP message (the IP payload) received from `src` at `dst`.
    ///
    /// A version 3 IPv4 checksum is accepted with or without the
    /// pseudo-header: RFC 5798 says with, some implementations of its first
    /// reading send without (RFC 9568 section 5.2.8 notes the ambiguity).
    pub fn decode(buf: &[u8], src: IpAddr, dst: IpAddr) -> Result<Self, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::TooShort { len: buf.len() });
        }
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(DecodeError::MixedFamilies { src, dst });
        }
        let version = match (buf[0] >> 4, src) {
            (2, IpAddr::V4(_)) => Version::V2,
            (3, _) => Version::V3,
            (version, _) => return Err(DecodeError::BadVersion { version }),
        };
        let kind = buf[0] & 0x0f;
        if kind != TYPE_ADVERTISEMENT {
            return Err(DecodeError::BadType { kind });
        }
        let vrid = buf[1];
        let priority = buf[2];
        let count = buf[3];
        let alen = match src {
            IpAddr::V4(_) => 4,
            IpAddr::V6(_) => 16,
        };
        let expected = HEADER_LEN
            + usize::from(count) * alen
            + match version {
                Version::V2 => AUTH_DATA_LEN,
                Version::V3 => 0,
            };
        if buf.len() != expected {
            return Err(DecodeError::AddressCountMismatch {
                count,
                expected,
                len: buf.len(),
            });
        }
        let checksum_field = u16::from_be_bytes([buf[6], buf[7]]);
        let verifies = match version {
            Version::V2 => checksum(&[buf]) == 0,
            Version::V3 => {
                checksum_with_pseudo_header(buf, src, dst) == 0
                    || (src.is_ipv4() && checksum(&[buf]) == 0)
            }
        };
        if !verifies {
            return Err(DecodeError::BadChecksum {
                checksum: checksum_field,
            });
        }
        let (adver_int, auth_type) = match version {
            Version::V2 => (u16::from(buf[5]), buf[4]),
            Version::V3 => (u16::from_be_bytes([buf[4], buf[5]]) & MAX_ADVER_INT_V3, 0),
        };
        let addresses = buf[HEADER_LEN..HEADER_LEN + usize::from(count) * alen]
            .chunks_exact(alen)
            .map(|c| match <[u8; 4]>::try_from(c) {
                Ok(o) => IpAddr::V4(Ipv4Addr::from(o)),
                Err(_) => {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(c);
                    IpAddr::V6(Ipv6Addr::from(o))
                }
            })
            .collect();
        let auth = match version {
            Version::V3 => Auth::None,
            Version::V2 => {
                let mut data = [0u8; AUTH_DATA_LEN];
                data.copy_from_slice(&buf[expected - AUTH_DATA_LEN..]);
                match auth_type {
                    0 => Auth::None,
                    1 => Auth::SimplePassword(data),
                    auth_type => Auth::Other { auth_type, data },
                }
            }
        };
        Ok(Advertisement {
            version,
            vrid,
            priority,
            adver_int,
            addresses,
            auth,
        })
    }
}

fn addr_len(a: IpAddr) -> usize {
    match a {
        IpAddr::V4(_) => 4,
        IpAddr::V6(_) => 16,
    }
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`, each
/// of even length except possibly the last.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
        // Fold as we go so that no length overflows the accumulator.
        sum = (sum & 0xffff) + (sum >> 16);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Checksum of `msg` with the IPv4 (RFC 768 style) or IPv6 (RFC 8200 section
/// 8.1) pseudo-header in front.
fn checksum_with_pseudo_header(msg: &[u8], src: IpAddr, dst: IpAddr) -> u16 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let len = (msg.len() as u16).to_be_bytes();
            let ph = [0, IPPROTO_VRRP, len[0], len[1]];
            checksum(&[&s.octets(), &d.octets(), &ph, msg])
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let len = (msg.len() as u32).to_be_bytes();
            let ph = [len[0], len[1], len[2], len[3], 0, 0, 0, IPPROTO_VRRP];
            checksum(&[&s.octets(), &d.octets(), &ph, msg])
        }
        // Mixed families never verify; decode refuses them first.
        _ => 0xffff,
    }
}

/// The parts of an IPv4 header that VRRP checks (a raw IPv4 socket hands the
/// header to the reader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    /// Time to live.
    pub ttl: u8,
    /// Protocol number.
    pub protocol: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Header length in bytes.
    pub header_len: usize,
    /// Total length in bytes.
    pub total_len: usize,
}

/// What was wrong with an IPv4 header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ipv4HeaderError {
    /// Fewer bytes than a minimal header or than the header says.
    #[error("IPv4 packet of {len} bytes is truncated")]
    Truncated {
        /// Bytes received.
        len: usize,
    },
    /// Not version 4 or a header length under 20.
    #[error("not an IPv4 header (first byte {first:#04x})")]
    NotIpv4 {
        /// The version/IHL byte.
        first: u8,
    },
}

impl Ipv4Header {
    /// Parses the header at the start of `buf` and returns it with the payload.
    pub fn parse(buf: &[u8]) -> Result<(Self, &[u8]), Ipv4HeaderError> {
        if buf.len() < 20 {
            return Err(Ipv4HeaderError::Truncated { len: buf.len() });
        }
        let first = buf[0];
        let header_len = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || header_len < 20 {
            return Err(Ipv4HeaderError::NotIpv4 { first });
        }
        let total_len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if buf.len() < header_len || total_len < header_len || buf.len() < total_len {
            return Err(Ipv4HeaderError::Truncated { len: buf.len() });
        }
        let hdr = Ipv4Header {
            ttl: buf[8],
            protocol: buf[9],
            src: Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]),
            dst: Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]),
            header_len,
            total_len,
        };
        Ok((hdr, &buf[header_len..total_len]))
    }
}

/// Builds the 20-byte IPv4 header of an advertisement for a socket with
/// `IP_HDRINCL`: TTL 255, DSCP CS6 (internetwork control, as keepalived
/// sends), protocol 112. The identification and header checksum are left
/// zero for the kernel to fill in.
pub fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, payload_len: usize) -> [u8; 20] {
    let total = ((20 + payload_len).min(usize::from(u16::MAX)) as u16).to_be_bytes();
    let s = src.octets();
    let d = dst.octets();
    [
        0x45,
        0xc0,
        total[0],
        total[1],
        0,
        0,
        0,
        0,
        TTL,
        IPPROTO_VRRP,
        0,
        0,
        s[0],
        s[1],
        s[2],
        s[3],
        d[0],
        d[1],
        d[2],
        d[3],
    ]
}

/// What the local instance expects of the advertisements it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// Our version; adverts of the other version are dropped.
    pub version: Version,
    /// Our virtual router id.
    pub vrid: u8,
    /// Our interval in seconds (version 2 only: RFC 3768 section 7.1 drops a
    /// mismatch; version 3 backups adopt the master's instead).
    pub adver_int_v2: u8,
    /// Our authentication (version 2).
    pub auth: Auth,
    /// Our virtual addresses, compared with the advertised ones unless empty
    /// (keepalived's `vrrp_skip_check_adv_addr` leaves it empty).
    pub addresses: Vec<IpAddr>,
}

/// Why a received advertisement is dropped; each is counted on its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// The message did not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The IP header did not parse, or IPv6 ancillary data was missing.
    #[error("IP header unusable")]
    BadIpHeader,
    /// TTL or hop limit not 255 (RFC 5798 section 7.1): sent from off-link.
    #[error("TTL/hop limit {ttl}, must be 255")]
    BadTtl {
        /// The TTL or hop limit.
        ttl: u8,
    },
    /// Version other than ours.
    #[error("version {version} where {expected} is configured")]
    VersionMismatch {
        /// Received.
        version: u8,
        /// Ours.
        expected: u8,
    },
    /// A virtual router id we do not run (RFC 5798 section 7.1).
    #[error("VRID {vrid} is not configured")]
    UnknownVrid {
        /// Received.
        vrid: u8,
    },
    /// Version 2 interval differs from ours (RFC 3768 section 7.1).
    #[error("advert interval {received}s where {expected}s is configured")]
    AdverIntMismatch {
        /// Received, seconds.
        received: u8,
        /// Ours, seconds.
        expected: u8,
    },
    /// Version 2 authentication type differs from ours.
    #[error("authentication type {received} where {expected} is configured")]
    AuthTypeMismatch {
        /// Received.
        received: u8,
        /// Ours.
        expected: u8,
    },
    /// Version 2 password differs from ours.
    #[error("authentication data does not match")]
    AuthMismatch,
    /// Address list differs from ours (RFC 5798 section 7.1 MAY).
    #[error("advertised addresses differ from the configured ones")]
    AddressMismatch,
    /// Source not in the unicast peer list.
    #[error("source {src} is not a configured unicast peer")]
    UnknownPeer {
        /// The source address.
        src: IpAddr,
    },
    /// An advertisement from one of our own addresses (multicast loop).
    #[error("advertisement from our own address {src}")]
    OwnAdvert {
        /// The source address.
        src: IpAddr,
    },
}

impl DropReason {
    /// A short stable name for counters and logs.
    pub fn label(&self) -> &'static str {
        match self {
            DropReason::Decode(DecodeError::TooShort { .. }) => "too_short",
            DropReason::Decode(DecodeError::BadVersion { .. }) => "bad_version",
            DropReason::Decode(DecodeError::BadType { .. }) => "bad_type",
            DropReason::Decode(DecodeError::AddressCountMismatch { .. }) => "address_count",
            DropReason::Decode(DecodeError::BadChecksum { .. }) => "checksum",
            DropReason::Decode(DecodeError::MixedFamilies { .. }) => "mixed_families",
            DropReason::BadIpHeader => "ip_header",
            DropReason::BadTtl { .. } => "ttl",
            DropReason::VersionMismatch { .. } => "version_mismatch",
            DropReason::UnknownVrid { .. } => "vrid",
            DropReason::AdverIntMismatch { .. } => "interval_mismatch",
            DropReason::AuthTypeMismatch { .. } => "auth_type",
            DropReason::AuthMismatch => "auth",
            DropReason::AddressMismatch => "addresses",
            DropReason::UnknownPeer { .. } => "unknown_peer",
            DropReason::OwnAdvert { .. } => "own_advert",
        }
    }
}

/// Checks a decoded advertisement received with TTL/hop limit `ttl` against
/// the local instance (RFC 5798 section 7.1, RFC 3768 section 7.1).
pub fn validate(adv: &Advertisement, ttl: u8, expect: &Expect) -> Result<(), DropReason> {
    if ttl != TTL {
        return Err(DropReason::BadTtl { ttl });
    }
    // VRID first: adverts of the other routers on the segment are normal
    // and are counted as such, whatever their version.
    if adv.vrid != expect.vrid {
        return Err(DropReason::UnknownVrid { vrid: adv.vrid });
    }
    if adv.version != expect.version {
        return Err(DropReason::VersionMismatch {
            version: adv.version.number(),
            expected: expect.version.number(),
        });
    }
    if adv.version == Version::V2 {
        let expected = expect.auth.auth_type();
        let received = adv.auth.auth_type();
        if received != expected {
            return Err(DropReason::AuthTypeMismatch { received, expected });
        }
        if adv.auth != expect.auth {
            return Err(DropReason::AuthMismatch);
        }
        if adv.adver_int != u16::from(expect.adver_int_v2) {
            return Err(DropReason::AdverIntMismatch {
                received: adv.adver_int.min(255) as u8,
                expected: expect.adver_int_v2,
            });
        }
    }
    // A stopping master (priority 0) and the address owner are still
    // compared: the address list is what identifies the virtual router.
    if !expect.addresses.is_empty() {
        let mut ours = expect.addresses.clone();
        let mut theirs = adv.addresses.clone();
        ours.sort();
        theirs.sort();
        if ours != theirs {
            return Err(DropReason::AddressMismatch);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const GROUP4: IpAddr = IpAddr::V4(MULTICAST_V4);
    const GROUP6: IpAddr = IpAddr::V6(MULTICAST_V6);

    // Captured from keepalived 2.2.7 (tcpdump -x in a network namespace):
    // `version 2`, vrid 51, priority 100, advert_int 1, auth_type PASS
    // "secret1", virtual_ipaddress 10.9.0.100, from 10.9.0.1.
    const KEEPALIVED_V2_PASS: [u8; 20] = [
        0x21, 0x33, 0x64, 0x01, 0x01, 0x01, 0x02, 0x11, 0x0a, 0x09, 0x00, 0x64, 0x73, 0x65, 0x63,
        0x72, 0x65, 0x74, 0x31, 0x00,
    ];
    // keepalived 2.2.7: `version 3`, vrid 52, priority 150, advert_int 0.5,
    // virtual_ipaddress 10.9.0.102, from 10.9.0.1 (pseudo-header checksum).
    const KEEPALIVED_V3_V4: [u8; 12] = [
        0x31, 0x34, 0x96, 0x01, 0x00, 0x32, 0x43, 0x90, 0x0a, 0x09, 0x00, 0x66,
    ];
    // keepalived 2.2.7: `version 3`, vrid 53, priority 200, advert_int 1,
    // virtual_ipaddress fd00:9::100, from fe80::74d7:a3ff:fea3:5aa0 to ff02::12.
    const KEEPALIVED_V3_V6: [u8; 24] = [
        0x31, 0x35, 0xc8, 0x01, 0x00, 0x64, 0x98, 0x21, 0xfd, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
    ];
    const KEEPALIVED_V6_SRC: &str = "fe80::74d7:a3ff:fea3:5aa0";

    fn v2_pass() -> Advertisement {
        Advertisement {
            version: Version::V2,
            vrid: 51,
            priority: 100,
            adver_int: 1,
            addresses: vec![v4("10.9.0.100")],
            auth: Auth::simple_password("secret1"),
        }
    }

    fn v3_v4() -> Advertisement {
        Advertisement {
            version: Version::V3,
            vrid: 52,
            priority: 150,
            adver_int: 50,
            addresses: vec![v4("10.9.0.102")],
            auth: Auth::None,
        }
    }

    fn v3_v6() -> Advertisement {
        Advertisement {
            version: Version::V3,
            vrid: 53,
            priority: 200,
            adver_int: 100,
            addresses: vec![v4("fd00:9::100")],
            auth: Auth::None,
        }
    }

    // Golden bytes, both directions: the struct encodes to what keepalived
    // sent, and what keepalived sent decodes to the struct.
    #[test]
    fn keepalived_v2_password_both_directions() {
        let src = v4("10.9.0.1");
        assert_eq!(&v2_pass().encode(src, GROUP4)[..], &KEEPALIVED_V2_PASS[..]);
        assert_eq!(
            Advertisement::decode(&KEEPALIVED_V2_PASS, src, GROUP4),
            Ok(v2_pass())
        );
    }

    #[test]
    fn keepalived_v3_ipv4_both_directions() {
        let src = v4("10.9.0.1");
        assert_eq!(&v3_v4().encode(src, GROUP4)[..], &KEEPALIVED_V3_V4[..]);
        assert_eq!(
            Advertisement::decode(&KEEPALIVED_V3_V4, src, GROUP4),
            Ok(v3_v4())
        );
    }

    #[test]
    fn keepalived_v3_ipv6_both_directions() {
        let src = v4(KEEPALIVED_V6_SRC);
        assert_eq!(&v3_v6().encode(src, GROUP6)[..], &KEEPALIVED_V3_V6[..]);
        assert_eq!(
            Advertisement::decode(&KEEPALIVED_V3_V6, src, GROUP6),
            Ok(v3_v6())
        );
    }

    // In: a v3 IPv4 advert whose checksum leaves out the pseudo-header (the
    // other reading of RFC 5798, RFC 9568 section 5.2.8). Out: accepted.
    #[test]
    fn v3_ipv4_checksum_without_pseudo_header_is_accepted() {
        let mut bytes = KEEPALIVED_V3_V4;
        bytes[6] = 0;
        bytes[7] = 0;
        let sum = checksum(&[&bytes]);
        bytes[6..8].copy_from_slice(&sum.to_be_bytes());
        let src = v4("10.9.0.1");
        assert_eq!(Advertisement::decode(&bytes, src, GROUP4), Ok(v3_v4()));
        // ...but we send the pseudo-header form.
        assert_ne!(&v3_v4().encode(src, GROUP4)[..], &bytes[..]);
    }

    // In: a v3 IPv6 advert checksummed without the pseudo-header. Out:
    // refused, IPv6 has a single form.
    #[test]
    fn v3_ipv6_checksum_without_pseudo_header_is_refused() {
        let mut bytes = KEEPALIVED_V3_V6;
        bytes[6] = 0;
        bytes[7] = 0;
        let sum = checksum(&[&bytes]);
        bytes[6..8].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(
            Advertisement::decode(&bytes, v4(KEEPALIVED_V6_SRC), GROUP6),
            Err(DecodeError::BadChecksum { checksum: sum })
        );
    }

    #[test]
    fn decode_errors_say_what_was_wrong() {
        let src = v4("10.9.0.1");
        assert_eq!(
            Advertisement::decode(&KEEPALIVED_V3_V4[..7], src, GROUP4),
            Err(DecodeError::TooShort { len: 7 })
        );
        let mut b = KEEPALIVED_V3_V4;
        b[0] = 0x41;
        assert_eq!(
            Advertisement::decode(&b, src, GROUP4),
            Err(DecodeError::BadVersion { version: 4 })
        );
        let mut b = KEEPALIVED_V3_V4;
        b[0] = 0x32;
        assert_eq!(
            Advertisement::decode(&b, src, GROUP4),
            Err(DecodeError::BadType { kind: 2 })
        );
        let mut b = KEEPALIVED_V3_V4;
        b[3] = 2;
        assert_eq!(
            Advertisement::decode(&b, src, GROUP4),
            Err(DecodeError::AddressCountMismatch {
                count: 2,
                expected: 16,
                len: 12
            })
        );
        let mut b = KEEPALIVED_V3_V4;
        b[2] = 151;
        assert_eq!(
            Advertisement::decode(&b, src, GROUP4),
            Err(DecodeError::BadChecksum { checksum: 0x4390 })
        );
        // Version 2 over IPv6 does not exist.
        let v6 = v4("fe80::1");
        let b = v2_pass().encode(src, GROUP4);
        assert_eq!(
            Advertisement::decode(&b, v6, GROUP6),
            Err(DecodeError::BadVersion { version: 2 })
        );
        assert_eq!(
            Advertisement::decode(&b, src, GROUP6),
            Err(DecodeError::MixedFamilies { src, dst: GROUP6 })
        );
    }

    fn expect_v2() -> Expect {
        Expect {
            version: Version::V2,
            vrid: 51,
            adver_int_v2: 1,
            auth: Auth::simple_password("secret1"),
            addresses: vec![v4("10.9.0.100")],
        }
    }

    // In: the keepalived v2 advert with one field at a time not matching the
    // local instance. Out: the matching drop reason.
    #[test]
    fn validate_names_each_reason() {
        let adv = v2_pass();
        let ok = expect_v2();
        assert_eq!(validate(&adv, 255, &ok), Ok(()));
        assert_eq!(
            validate(&adv, 254, &ok),
            Err(DropReason::BadTtl { ttl: 254 })
        );
        let e = Expect {
            vrid: 7,
            ..ok.clone()
        };
        assert_eq!(
            validate(&adv, 255, &e),
            Err(DropReason::UnknownVrid { vrid: 51 })
        );
        let e = Expect {
            version: Version::V3,
            ..ok.clone()
        };
        assert_eq!(
            validate(&adv, 255, &e),
            Err(DropReason::VersionMismatch {
                version: 2,
                expected: 3
            })
        );
        let e = Expect {
            adver_int_v2: 3,
            ..ok.clone()
        };
        assert_eq!(
            validate(&adv, 255, &e),
            Err(DropReason::AdverIntMismatch {
                received: 1,
                expected: 3
            })
        );
        let e = Expect {
            auth: Auth::None,
            ..ok.clone()
        };
        assert_eq!(
            validate(&adv, 255, &e),
            Err(DropReason::AuthTypeMismatch {
                received: 1,
                expected: 0
            })
        );
        let e = Expect {
            auth: Auth::simple_password("secret2"),
            ..ok.clone()
        };
        assert_eq!(validate(&adv, 255, &e), Err(DropReason::AuthMismatch));
        let e = Expect {
            addresses: vec![v4("10.9.0.101")],
            ..ok.clone()
        };
        assert_eq!(validate(&adv, 255, &e), Err(DropReason::AddressMismatch));
        let e = Expect {
            addresses: vec![],
            ..ok.clone()
        };
        assert_eq!(validate(&adv, 255, &e), Ok(()));
    }

    // In: a v3 advert with another interval than ours. Out: accepted (the
    // backup adopts it, RFC 5798 section 6.4.2).
    #[test]
    fn v3_interval_difference_is_not_a_drop() {
        let e = Expect {
            version: Version::V3,
            vrid: 52,
            adver_int_v2: 0,
            auth: Auth::None,
            addresses: vec![v4("10.9.0.102")],
        };
        assert_eq!(validate(&v3_v4(), 255, &e), Ok(()));
    }

    #[test]
    fn ipv4_header_parses_keepalived_frame() {
        // The whole IP packet of KEEPALIVED_V3_V4 as tcpdump showed it.
        let mut pkt = vec![
            0x45, 0xc0, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0xff, 0x70, 0xd0, 0x90, 0x0a, 0x09,
            0x00, 0x01, 0xe0, 0x00, 0x00, 0x12,
        ];
        pkt.extend_from_slice(&KEEPALIVED_V3_V4);
        let mut ours = ipv4_header(Ipv4Addr::new(10, 9, 0, 1), MULTICAST_V4, 12);
        // keepalived's id and checksum, which the kernel fills in for us.
        ours[4..6].copy_from_slice(&pkt[4..6]);
        ours[10..12].copy_from_slice(&pkt[10..12]);
        assert_eq!(&ours[..], &pkt[..20]);
        let (hdr, payload) = Ipv4Header::parse(&pkt).unwrap();
        assert_eq!(hdr.ttl, 255);
        assert_eq!(hdr.protocol, IPPROTO_VRRP);
        assert_eq!(hdr.src, Ipv4Addr::new(10, 9, 0, 1));
        assert_eq!(hdr.dst, MULTICAST_V4);
        assert_eq!(payload, &KEEPALIVED_V3_V4[..]);
        assert_eq!(
            Ipv4Header::parse(&pkt[..25]),
            Err(Ipv4HeaderError::Truncated { len: 25 })
        );
        pkt[0] = 0x65;
        assert_eq!(
            Ipv4Header::parse(&pkt),
            Err(Ipv4HeaderError::NotIpv4 { first: 0x65 })
        );
    }

    fn arb_v4() -> impl Strategy<Value = IpAddr> {
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o)))
    }

    fn arb_v6() -> impl Strategy<Value = IpAddr> {
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o)))
    }

    fn arb_auth() -> impl Strategy<Value = Auth> {
        prop_oneof![
            Just(Auth::None),
            any::<[u8; 8]>().prop_map(Auth::SimplePassword),
            (2u8.., any::<[u8; 8]>()).prop_map(|(auth_type, data)| Auth::Other { auth_type, data }),
        ]
    }

    /// An advertisement with its source and destination.
    fn arb_packet() -> impl Strategy<Value = (Advertisement, IpAddr, IpAddr)> {
        let v2 = (
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            prop::collection::vec(arb_v4(), 0..20),
            arb_auth(),
            arb_v4(),
            arb_v4(),
        )
            .prop_map(|(vrid, priority, int, addresses, auth, s, d)| {
                (
                    Advertisement {
                        version: Version::V2,
                        vrid,
                        priority,
                        adver_int: u16::from(int),
                        addresses,
                        auth,
                    },
                    s,
                    d,
                )
            });
        let v3_4 = (
            any::<u8>(),
            any::<u8>(),
            0..=MAX_ADVER_INT_V3,
            prop::collection::vec(arb_v4(), 0..20),
            arb_v4(),
            arb_v4(),
        );
        let v3_6 = (
            any::<u8>(),
            any::<u8>(),
            0..=MAX_ADVER_INT_V3,
            prop::collection::vec(arb_v6(), 0..20),
            arb_v6(),
            arb_v6(),
        );
        let v3 = prop_oneof![v3_4, v3_6].prop_map(|(vrid, priority, int, addresses, s, d)| {
            (
                Advertisement {
                    version: Version::V3,
                    vrid,
                    priority,
                    adver_int: int,
                    addresses,
                    auth: Auth::None,
                },
                s,
                d,
            )
        });
        prop_oneof![v2, v3]
    }

    proptest! {
        #[test]
        fn decode_inverts_encode((adv, src, dst) in arb_packet()) {
            let bytes = adv.encode(src, dst);
            prop_assert_eq!(bytes.len(), adv.encoded_len());
            prop_assert_eq!(Advertisement::decode(&bytes, src, dst), Ok(adv));
        }

        #[test]
        fn decode_never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..400),
            src in prop_oneof![arb_v4(), arb_v6()],
            dst in prop_oneof![arb_v4(), arb_v6()],
        ) {
            let _ = Advertisement::decode(&bytes, src, dst);
            let _ = Ipv4Header::parse(&bytes);
        }

        // One flipped bit anywhere in the message is caught (by the checksum
        // or by a structural check), never decoded as the original.
        #[test]
        fn single_bit_flips_are_caught((adv, src, dst) in arb_packet(), bit in any::<prop::sample::Index>()) {
            let mut bytes = adv.encode(src, dst).to_vec();
            let i = bit.index(bytes.len() * 8);
            bytes[i / 8] ^= 1 << (i % 8);
            // The second IPv4 form (no pseudo-header) may verify by chance:
            // that is the price of accepting both, not a miss of the check.
            prop_assume!(!(adv.version == Version::V3 && src.is_ipv4() && checksum(&[&bytes]) == 0));
            prop_assert_ne!(Advertisement::decode(&bytes, src, dst), Ok(adv));
        }
    }
}
