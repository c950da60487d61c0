//! Golden bytes for the IPVS codec, both directions, and properties of the
//! decoder on arbitrary input. The byte arrays are written out by hand from
//! `ip_vs.h` and the way `ip_vs_ctl.c` fills its messages (host order is
//! little-endian here, hence the `cfg`).
#![cfg(target_endian = "little")]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn tcp80() -> ServiceKey {
    ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: v4(192, 0, 2, 1),
        port: 80,
    }
}

/// In: NEW_SERVICE of tcp 192.0.2.1:80 with wrr and no persistence.
/// Out: byte for byte what `ipvsadm -A -t 192.0.2.1:80 -s wrr` (1.31) sent
/// to a 6.1 kernel, captured with `strace -x -e sendmsg`.
#[test]
fn new_service_golden() {
    let svc = Service::new(tcp80(), "wrr");
    #[rustfmt::skip]
    let want: &[u8] = &[
        0x01, 0x01, 0x00, 0x00,                         // NEW_SERVICE, version 1
        0x54, 0x00, 0x01, 0x80,                         // CMD_ATTR_SERVICE | NLA_F_NESTED, 84 bytes
        0x06, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, // AF = AF_INET
        0x06, 0x00, 0x02, 0x00, 0x06, 0x00, 0x00, 0x00, // PROTOCOL = TCP
        0x14, 0x00, 0x03, 0x00, 192, 0, 2, 1,           // ADDR (16 bytes)
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0x06, 0x00, 0x04, 0x00, 0x00, 0x50, 0x00, 0x00, // PORT = 80 (network order)
        0x08, 0x00, 0x06, 0x00, b'w', b'r', b'r', 0x00, // SCHED_NAME "wrr"
        0x0c, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, // FLAGS 0, mask ~0
        0xff, 0xff, 0xff, 0xff,
        0x08, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, // TIMEOUT 0
        0x08, 0x00, 0x09, 0x00, 0xff, 0xff, 0xff, 0xff, // NETMASK 255.255.255.255
    ];
    assert_eq!(Request::NewService(svc.clone()).encode(), want);
    // The same attributes under cmd NEW_SERVICE are what a dump returns
    // (without counters): they decode back to the service.
    assert_eq!(
        decode_reply(want),
        Ok(Reply::Service(ServiceEntry {
            service: svc,
            stats: Stats::default()
        }))
    );
}

/// In: DEL_SERVICE of fwmark 7 (IPv6). Out: only AF and FWMARK.
#[test]
fn del_fwmark_service_golden() {
    let key = ServiceKey::Fwmark {
        family: Family::Inet6,
        mark: 7,
    };
    #[rustfmt::skip]
    let want: &[u8] = &[
        0x03, 0x01, 0x00, 0x00,
        0x14, 0x00, 0x01, 0x80,
        0x06, 0x00, 0x01, 0x00, 0x0a, 0x00, 0x00, 0x00, // AF_INET6
        0x08, 0x00, 0x05, 0x00, 0x07, 0x00, 0x00, 0x00, // FWMARK 7
    ];
    assert_eq!(Request::DelService(key).encode(), want);
}

/// In: NEW_DEST of an IPv6 tunnel destination with GUE to an IPv4 service.
/// Out: the service key nest, then the destination nest with every option.
#[test]
fn new_dest_golden() {
    let dest = Destination {
        key: DestKey {
            addr: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
            port: 8080,
        },
        forwarding: Forwarding::Tunnel,
        weight: 5,
        u_threshold: 100,
        l_threshold: 10,
        tun_type: TunnelType::Gue,
        tun_port: 6080,
        tun_flags: TunnelFlags(TunnelFlags::CSUM),
    };
    #[rustfmt::skip]
    let want: &[u8] = &[
        0x05, 0x01, 0x00, 0x00,
        0x30, 0x00, 0x01, 0x80,                         // CMD_ATTR_SERVICE, 48 bytes
        0x06, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00,
        0x06, 0x00, 0x02, 0x00, 0x06, 0x00, 0x00, 0x00,
        0x14, 0x00, 0x03, 0x00, 192, 0, 2, 1,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0x06, 0x00, 0x04, 0x00, 0x00, 0x50, 0x00, 0x00,
        0x60, 0x00, 0x02, 0x80,                         // CMD_ATTR_DEST, 96 bytes
        0x06, 0x00, 0x0b, 0x00, 0x0a, 0x00, 0x00, 0x00, // ADDR_FAMILY AF_INET6
        0x14, 0x00, 0x01, 0x00,                         // ADDR 2001:db8::2
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02,
        0x06, 0x00, 0x02, 0x00, 0x1f, 0x90, 0x00, 0x00, // PORT 8080
        0x08, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00, // FWD_METHOD TUNNEL
        0x08, 0x00, 0x04, 0x00, 0x05, 0x00, 0x00, 0x00, // WEIGHT 5
        0x05, 0x00, 0x0d, 0x00, 0x01, 0x00, 0x00, 0x00, // TUN_TYPE GUE
        0x06, 0x00, 0x0e, 0x00, 0x17, 0xc0, 0x00, 0x00, // TUN_PORT 6080
        0x06, 0x00, 0x0f, 0x00, 0x01, 0x00, 0x00, 0x00, // TUN_FLAGS CSUM
        0x08, 0x00, 0x05, 0x00, 0x64, 0x00, 0x00, 0x00, // U_THRESH 100
        0x08, 0x00, 0x06, 0x00, 0x0a, 0x00, 0x00, 0x00, // L_THRESH 10
    ];
    assert_eq!(Request::NewDest(tcp80(), dest).encode(), want);
    assert_eq!(
        decode_reply(want),
        Ok(Reply::Dest(DestEntry {
            dest,
            active_conns: 0,
            inact_conns: 0,
            persist_conns: 0,
            stats: Stats::default(),
        }))
    );
}

/// In: the NEW_DEST that `ipvsadm -a -t 192.0.2.1:80 -r 10.0.0.2:8080 -i -w 5
/// -x 100 -y 10 --tun-type gue --tun-port 6080 --tun-csum` sent (captured with
/// strace; it sends a full service entry with an empty scheduler, and the
/// service's port for a tunnel destination). Out: that destination, and our
/// encoding of it is the same destination nest byte for byte.
#[test]
fn ipvsadm_new_dest_capture() {
    #[rustfmt::skip]
    let captured: &[u8] = &[
        0x05, 0x01, 0x00, 0x00, 0x54, 0x00, 0x01, 0x80, 0x06, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00,
        0x06, 0x00, 0x02, 0x00, 0x06, 0x00, 0x00, 0x00, 0x14, 0x00, 0x03, 0x00, 0xc0, 0x00, 0x02, 0x01,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x04, 0x00,
        0x00, 0x50, 0x00, 0x00, 0x05, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x07, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x08, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x08, 0x00, 0x09, 0x00, 0xff, 0xff, 0xff, 0xff, 0x60, 0x00, 0x02, 0x80, 0x06, 0x00, 0x0b, 0x00,
        0x02, 0x00, 0x00, 0x00, 0x14, 0x00, 0x01, 0x00, 0x0a, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00, 0x00, 0x50, 0x00, 0x00,
        0x08, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x08, 0x00, 0x04, 0x00, 0x05, 0x00, 0x00, 0x00,
        0x05, 0x00, 0x0d, 0x00, 0x01, 0x00, 0x00, 0x00, 0x06, 0x00, 0x0e, 0x00, 0x17, 0xc0, 0x00, 0x00,
        0x06, 0x00, 0x0f, 0x00, 0x01, 0x00, 0x00, 0x00, 0x08, 0x00, 0x05, 0x00, 0x64, 0x00, 0x00, 0x00,
        0x08, 0x00, 0x06, 0x00, 0x0a, 0x00, 0x00, 0x00,
    ];
    let dest = Destination {
        key: DestKey {
            addr: v4(10, 0, 0, 2),
            port: 80,
        },
        forwarding: Forwarding::Tunnel,
        weight: 5,
        u_threshold: 100,
        l_threshold: 10,
        tun_type: TunnelType::Gue,
        tun_port: 6080,
        tun_flags: TunnelFlags(TunnelFlags::CSUM),
    };
    let Ok(Reply::Dest(got)) = decode_reply(captured) else {
        panic!("captured NEW_DEST must decode");
    };
    assert_eq!(got.dest, dest);
    let ours = Request::NewDest(tcp80(), dest).encode();
    let dest_nest = |b: &[u8]| -> Vec<u8> {
        let at = b
            .windows(4)
            .position(|w| w == [0x60, 0x00, 0x02, 0x80])
            .unwrap();
        b[at..].to_vec()
    };
    assert_eq!(dest_nest(&ours), dest_nest(captured));
}

/// In: a service as the kernel dumps it: a persistent IPv6 UDP service with
/// sh and both sh flags, the HASHED bit, a persistence engine, the 32-bit
/// and the 64-bit counters (with a PAD attribute, as `nla_put_u64_64bit`
/// adds). Out: the typed service without HASHED, counters from STATS64.
#[test]
fn service_dump_golden() {
    #[rustfmt::skip]
    let reply: &[u8] = &[
        0x01, 0x01, 0x00, 0x00,
        0x94, 0x00, 0x01, 0x80,                         // CMD_ATTR_SERVICE | NLA_F_NESTED, 148
        0x06, 0x00, 0x01, 0x00, 0x0a, 0x00, 0x00, 0x00, // AF_INET6
        0x06, 0x00, 0x02, 0x00, 0x11, 0x00, 0x00, 0x00, // UDP
        0x14, 0x00, 0x03, 0x00,                         // 2001:db8::1
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
        0x06, 0x00, 0x04, 0x00, 0x00, 0x35, 0x00, 0x00, // port 53
        0x07, 0x00, 0x06, 0x00, b's', b'h', 0x00, 0x00, // "sh"
        0x08, 0x00, 0x0b, 0x00, b's', b'i', b'p', 0x00, // PE_NAME "sip"
        0x0c, 0x00, 0x07, 0x00, 0x1b, 0x00, 0x00, 0x00, // FLAGS persistent|hashed|sched1|sched2
        0xff, 0xff, 0xff, 0xff,
        0x08, 0x00, 0x08, 0x00, 0x2c, 0x01, 0x00, 0x00, // TIMEOUT 300
        0x08, 0x00, 0x09, 0x00, 0x40, 0x00, 0x00, 0x00, // NETMASK /64
        0x14, 0x00, 0x0a, 0x00,                         // STATS (32-bit), ignored
        0x08, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x08, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x20, 0x00, 0x0c, 0x00,                         // STATS64
        0x04, 0x00, 0x0b, 0x00,                         // PAD
        0x0c, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, // CONNS 2^32
        0x0c, 0x00, 0x04, 0x00, 0x10, 0x27, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // INBYTES 10000
        0x04, 0x00, 0x63, 0x00,                         // an attribute from the future, ignored
    ];
    let want = ServiceEntry {
        service: Service {
            key: ServiceKey::Addr {
                protocol: Protocol::Udp,
                addr: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                port: 53,
            },
            scheduler: "sh".into(),
            flags: ServiceFlags(
                ServiceFlags::PERSISTENT | ServiceFlags::SH_FALLBACK | ServiceFlags::SH_PORT,
            ),
            timeout: 300,
            netmask: 64,
            pe_name: Some("sip".into()),
        },
        stats: Stats {
            conns: 1 << 32,
            inbytes: 10000,
            ..Stats::default()
        },
    };
    assert_eq!(decode_reply(reply), Ok(Reply::Service(want)));
}

/// In: GET_INFO's reply (cmd SET_INFO) and GET_CONFIG's (cmd SET_CONFIG).
#[test]
fn info_and_config_golden() {
    #[rustfmt::skip]
    let info: &[u8] = &[
        0x0e, 0x01, 0x00, 0x00,
        0x08, 0x00, 0x01, 0x00, 0x01, 0x02, 0x01, 0x00, // VERSION 0x010201
        0x08, 0x00, 0x02, 0x00, 0x00, 0x10, 0x00, 0x00, // CONN_TAB_SIZE 4096
    ];
    assert_eq!(
        decode_reply(info),
        Ok(Reply::Info(Info {
            version: 0x010201,
            conn_tab_size: 4096
        }))
    );
    #[rustfmt::skip]
    let config: &[u8] = &[
        0x0c, 0x01, 0x00, 0x00,
        0x08, 0x00, 0x04, 0x00, 0x84, 0x03, 0x00, 0x00, // TCP 900
        0x08, 0x00, 0x05, 0x00, 0x78, 0x00, 0x00, 0x00, // TCP_FIN 120
        0x08, 0x00, 0x06, 0x00, 0x2c, 0x01, 0x00, 0x00, // UDP 300
    ];
    let t = Timeouts {
        tcp: 900,
        tcp_fin: 120,
        udp: 300,
    };
    assert_eq!(decode_reply(config), Ok(Reply::Config(t)));
    // SET_CONFIG sends the same attributes.
    assert_eq!(Request::SetConfig(t).encode(), config);
    assert_eq!(Request::GetInfo.encode(), [0x0f, 0x01, 0x00, 0x00]);
    assert_eq!(Request::Flush.encode(), [0x11, 0x01, 0x00, 0x00]);
}

/// In: NEW_DAEMON of a backup on eth1, sync id 3, group 239.1.1.1:8848 ttl 2.
#[test]
fn daemon_golden() {
    let d = Daemon {
        state: DaemonState::Backup,
        mcast_ifn: "eth1".into(),
        sync_id: 3,
        sync_maxlen: Some(1472),
        mcast_group: Some(v4(239, 1, 1, 1)),
        mcast_port: Some(8848),
        mcast_ttl: Some(2),
    };
    #[rustfmt::skip]
    let want: &[u8] = &[
        0x09, 0x01, 0x00, 0x00,
        0x40, 0x00, 0x03, 0x80,
        0x08, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00,             // STATE backup
        0x09, 0x00, 0x02, 0x00, b'e', b't', b'h', b'1', 0, 0, 0, 0, // MCAST_IFN
        0x08, 0x00, 0x03, 0x00, 0x03, 0x00, 0x00, 0x00,             // SYNC_ID
        0x06, 0x00, 0x04, 0x00, 0xc0, 0x05, 0x00, 0x00,             // SYNC_MAXLEN 1472
        0x08, 0x00, 0x05, 0x00, 239, 1, 1, 1,                       // MCAST_GROUP
        0x06, 0x00, 0x07, 0x00, 0x90, 0x22, 0x00, 0x00,             // MCAST_PORT 8848
        0x05, 0x00, 0x08, 0x00, 0x02, 0x00, 0x00, 0x00,             // MCAST_TTL
    ];
    assert_eq!(Request::NewDaemon(d.clone()).encode(), want);
    assert_eq!(decode_reply(want), Ok(Reply::Daemon(d)));
}

/// Bad input gives an error naming the object and the attribute.
#[test]
fn decode_errors_say_what() {
    assert!(matches!(
        decode_reply(&[1, 1]),
        Err(DecodeError::Truncated { .. })
    ));
    // An attribute longer than the buffer.
    assert!(matches!(
        decode_reply(&[1, 1, 0, 0, 0x20, 0, 1, 0]),
        Err(DecodeError::BadAttrHeader {
            attr: 1,
            len: 0x20,
            ..
        })
    ));
    // A service without its scheduler.
    #[rustfmt::skip]
    let no_sched: &[u8] = &[
        0x01, 0x01, 0x00, 0x00,
        0x14, 0x00, 0x01, 0x00,
        0x06, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00,
        0x08, 0x00, 0x05, 0x00, 0x07, 0x00, 0x00, 0x00,
    ];
    let err = decode_reply(no_sched).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Missing {
            context: "service",
            attr: "IPVS_SVC_ATTR_SCHED_NAME"
        }
    );
    assert_eq!(
        err.to_string(),
        "service: attribute IPVS_SVC_ATTR_SCHED_NAME is missing"
    );
    // A port of three bytes.
    #[rustfmt::skip]
    let bad_port: &[u8] = &[
        0x05, 0x01, 0x00, 0x00,
        0x14, 0x00, 0x02, 0x00,
        0x08, 0x00, 0x01, 0x00, 10, 0, 0, 1,
        0x07, 0x00, 0x02, 0x00, 0, 80, 0, 0,
    ];
    assert!(matches!(
        decode_reply(bad_port),
        Err(DecodeError::BadAttrLen {
            attr: "IPVS_DEST_ATTR_PORT",
            len: 3,
            ..
        })
    ));
    assert_eq!(
        decode_reply(&[99, 1, 0, 0]),
        Err(DecodeError::UnexpectedCommand { cmd: 99 })
    );
}

fn arb_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(o.into())),
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(o.into())),
    ]
}

fn arb_key() -> impl Strategy<Value = ServiceKey> {
    prop_oneof![
        (
            prop_oneof![
                Just(Protocol::Tcp),
                Just(Protocol::Udp),
                Just(Protocol::Sctp)
            ],
            arb_addr(),
            any::<u16>()
        )
            .prop_map(|(protocol, addr, port)| ServiceKey::Addr {
                protocol,
                addr,
                port
            }),
        (
            prop_oneof![Just(Family::Inet), Just(Family::Inet6)],
            1..u32::MAX
        )
            .prop_map(|(family, mark)| ServiceKey::Fwmark { family, mark }),
    ]
}

fn arb_service() -> impl Strategy<Value = Service> {
    (
        arb_key(),
        "[a-z]{1,15}",
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        proptest::option::of("[a-z]{1,15}"),
    )
        .prop_map(
            |(key, scheduler, flags, timeout, netmask, pe_name)| Service {
                key,
                scheduler,
                flags: ServiceFlags(flags & !ServiceFlags::HASHED),
                timeout,
                netmask,
                pe_name,
            },
        )
}

fn arb_dest() -> impl Strategy<Value = Destination> {
    (
        arb_addr(),
        any::<u16>(),
        prop_oneof![
            Just(Forwarding::Masq),
            Just(Forwarding::Tunnel),
            Just(Forwarding::Route),
            Just(Forwarding::Local)
        ],
        any::<u32>(),
        any::<(u32, u32)>(),
        prop_oneof![
            Just(TunnelType::Ipip),
            Just(TunnelType::Gue),
            Just(TunnelType::Gre)
        ],
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(
            |(addr, port, forwarding, weight, (u, l), tun_type, tun_port, tun_flags)| Destination {
                key: DestKey { addr, port },
                forwarding,
                weight,
                u_threshold: u,
                l_threshold: l,
                tun_type,
                tun_port,
                tun_flags: TunnelFlags(tun_flags),
            },
        )
}

proptest! {
    /// Whatever the bytes, the decoder returns; it never panics.
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_reply(&bytes);
        let _ = decode_service(&bytes);
        let _ = decode_dest(&bytes);
        let _ = decode_daemon(&bytes);
    }

    /// Attributes that look right but are cut short or bent still only give errors.
    #[test]
    fn mutated_replies_never_panic(svc in arb_service(), cut in 0usize..200, flip in 0usize..200, bit in 0u8..8) {
        let mut bytes = Request::NewService(svc).encode();
        if let Some(b) = bytes.get_mut(flip) { *b ^= 1 << bit; }
        bytes.truncate(cut);
        let _ = decode_reply(&bytes);
    }

    /// A service encoded as NEW_SERVICE decodes back to itself.
    #[test]
    fn service_round_trip(svc in arb_service()) {
        let bytes = Request::NewService(svc.clone()).encode();
        prop_assert_eq!(decode_reply(&bytes), Ok(Reply::Service(ServiceEntry { service: svc, stats: Stats::default() })));
    }

    /// A destination encoded as NEW_DEST decodes back to itself.
    #[test]
    fn dest_round_trip(key in arb_key(), dest in arb_dest()) {
        let bytes = Request::NewDest(key, dest).encode();
        prop_assert_eq!(decode_reply(&bytes), Ok(Reply::Dest(DestEntry { dest, active_conns: 0, inact_conns: 0, persist_conns: 0, stats: Stats::default() })));
    }
}
