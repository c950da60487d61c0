//! IPVS through lb's netlink client on a real kernel, cross-checked with
//! `ipvsadm`.
//!
//! Each test moves its thread into a network namespace of its own (IPVS
//! tables are per namespace), so the tests run in parallel without seeing
//! each other; `ipvsadm` started from that thread runs in the same
//! namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;

use lb_agent::ipvs::client::IpvsSocket;
use lb_agent::ipvs::codec::Request;
use lb_agent::ipvs::converge::{ConvergeError, converge};
use lb_agent::ipvs::ownership::OwnedServices;
use lb_agent::ipvs::reconcile::{self, IpvsOp};
use lb_agent::ipvs::validate::{self, SCHEDULERS};
use lb_agent::ipvs::{
    Daemon, DaemonState, DestKey, Destination, Family, Forwarding, Protocol, Service, ServiceFlags,
    ServiceKey, ServiceState, Table, Timeouts, TunnelFlags, TunnelType, ipv4_netmask,
};

/// Move this test's thread into a new network namespace, with `lo` up: the
/// kernel accepts an IPv4 destination only when the routing tables call its
/// address unicast, and a namespace has no local table before `lo` is up.
fn own_netns() {
    lb_lab::kernel::require_ipvs();
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET): tests need root");
    run("ip", &["link", "set", "lo", "up"]);
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn ipvsadm(args: &[&str]) -> String {
    run("ipvsadm", args)
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last))
}

fn tcp(addr: IpAddr, port: u16) -> ServiceKey {
    ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr,
        port,
    }
}

fn state(service: Service, dests: Vec<Destination>) -> (ServiceKey, ServiceState) {
    (
        service.key,
        ServiceState {
            service,
            dests: dests.into_iter().map(|d| (d.key, d)).collect(),
        },
    )
}

fn dest(addr: IpAddr, port: u16, forwarding: Forwarding, weight: u32) -> Destination {
    let mut d = Destination::new(addr, port, forwarding);
    d.weight = weight;
    d
}

/// A table that uses every scheduler, every service flag, persistence with
/// netmasks, a persistence engine, all protocols, fwmarks of both families,
/// every forwarding method, thresholds, every tunnel type with port and
/// checksum flags, and a destination of the other family.
fn full_table() -> Table {
    let mut t = Table::new();
    for (i, sched) in SCHEDULERS.iter().enumerate() {
        if *sched == "twos" {
            continue; // added below only where the kernel has it
        }
        let key = tcp(v4(192, 0, 2, 10), 1000 + i as u16);
        t.extend([state(
            Service::new(key, *sched),
            vec![dest(
                v4(10, 0, 0, 1),
                1000 + i as u16,
                Forwarding::Route,
                i as u32,
            )],
        )]);
    }
    // Persistence with a /24 netmask, NAT destinations with thresholds.
    let mut persistent = Service::new(tcp(v4(192, 0, 2, 1), 443), "wlc");
    persistent.flags = ServiceFlags(ServiceFlags::PERSISTENT);
    persistent.timeout = 600;
    persistent.netmask = ipv4_netmask(24);
    let mut nat = dest(v4(10, 0, 0, 2), 8443, Forwarding::Masq, 3);
    nat.u_threshold = 100;
    nat.l_threshold = 20;
    t.extend([state(
        persistent,
        vec![nat, dest(v4(10, 0, 0, 3), 8443, Forwarding::Masq, 0)],
    )]);
    // Port 0 with persistence.
    let mut all_ports = Service::new(tcp(v4(192, 0, 2, 2), 0), "rr");
    all_ports.flags = ServiceFlags(ServiceFlags::PERSISTENT);
    all_ports.timeout = 60;
    t.extend([state(
        all_ports,
        vec![dest(v4(10, 0, 0, 4), 0, Forwarding::Route, 1)],
    )]);
    // UDP one-packet, SCTP.
    let mut ops = Service::new(
        ServiceKey::Addr {
            protocol: Protocol::Udp,
            addr: v4(192, 0, 2, 3),
            port: 53,
        },
        "wrr",
    );
    ops.flags = ServiceFlags(ServiceFlags::ONEPACKET);
    t.extend([state(
        ops,
        vec![dest(v4(10, 0, 0, 5), 53, Forwarding::Route, 7)],
    )]);
    t.extend([state(
        Service::new(
            ServiceKey::Addr {
                protocol: Protocol::Sctp,
                addr: v4(192, 0, 2, 4),
                port: 3868,
            },
            "rr",
        ),
        vec![dest(v4(10, 0, 0, 6), 3868, Forwarding::Route, 1)],
    )]);
    // The SIP persistence engine.
    let mut sip = Service::new(
        ServiceKey::Addr {
            protocol: Protocol::Udp,
            addr: v4(192, 0, 2, 7),
            port: 5060,
        },
        "rr",
    );
    sip.flags = ServiceFlags(ServiceFlags::PERSISTENT);
    sip.timeout = 60;
    sip.pe_name = Some("sip".into());
    t.extend([state(
        sip,
        vec![dest(v4(10, 0, 0, 7), 5060, Forwarding::Route, 1)],
    )]);
    // sh and mh with both of their flags.
    let mut sh = Service::new(tcp(v4(192, 0, 2, 5), 80), "sh");
    sh.flags = ServiceFlags(ServiceFlags::SH_FALLBACK | ServiceFlags::SH_PORT);
    let mut mh = Service::new(tcp(v4(192, 0, 2, 6), 80), "mh");
    mh.flags = ServiceFlags(ServiceFlags::MH_FALLBACK | ServiceFlags::MH_PORT);
    // Tunnels: ipip, gue with port and remote checksum, gre with csum,
    // and an IPv6 destination of an IPv4 service.
    let ipip = dest(v4(10, 0, 1, 1), 80, Forwarding::Tunnel, 1);
    let mut gue = dest(v4(10, 0, 1, 2), 80, Forwarding::Tunnel, 2);
    gue.tun_type = TunnelType::Gue;
    gue.tun_port = 6080;
    gue.tun_flags = TunnelFlags(TunnelFlags::REMCSUM);
    let mut gre = dest(v4(10, 0, 1, 3), 80, Forwarding::Tunnel, 3);
    gre.tun_type = TunnelType::Gre;
    gre.tun_flags = TunnelFlags(TunnelFlags::CSUM);
    let mixed = dest(v6(0x99), 80, Forwarding::Tunnel, 4);
    t.extend([state(sh, vec![ipip, gue, gre])]);
    t.extend([state(
        Service::new(tcp(v4(192, 0, 2, 8), 80), "rr"),
        vec![mixed],
    )]);
    t.extend([state(
        mh,
        vec![dest(v4(10, 0, 1, 4), 80, Forwarding::Route, 1)],
    )]);
    // IPv6: a persistent service with a /64 netmask; fwmarks of both families.
    let mut six = Service::new(tcp(v6(1), 80), "rr");
    six.flags = ServiceFlags(ServiceFlags::PERSISTENT);
    six.timeout = 300;
    six.netmask = 64;
    t.extend([state(
        six,
        vec![
            dest(v6(2), 80, Forwarding::Route, 1),
            dest(v6(3), 8080, Forwarding::Masq, 2),
            dest(v4(10, 0, 2, 1), 80, Forwarding::Tunnel, 3),
        ],
    )]);
    t.extend([state(
        Service::new(
            ServiceKey::Fwmark {
                family: Family::Inet,
                mark: 7,
            },
            "lc",
        ),
        vec![dest(v4(10, 0, 3, 1), 0, Forwarding::Route, 1)],
    )]);
    t.extend([state(
        Service::new(
            ServiceKey::Fwmark {
                family: Family::Inet6,
                mark: 8,
            },
            "rr",
        ),
        vec![dest(v6(0x31), 0, Forwarding::Route, 1)],
    )]);
    t
}

/// Parse `ipvsadm -Sn` into a table (the fields it shows; the netmask only
/// appears for persistent services).
fn parse_save(text: &str) -> Table {
    let mut t = Table::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let tok: Vec<&str> = line.split_whitespace().collect();
        let mut key = None;
        let mut family = Family::Inet;
        let mut i = 1;
        let mut opts: BTreeMap<&str, &str> = BTreeMap::new();
        let mut switches = BTreeSet::new();
        while i < tok.len() {
            match tok[i] {
                "-t" | "-u" | "--sctp-service" => {
                    let protocol = match tok[i] {
                        "-t" => Protocol::Tcp,
                        "-u" => Protocol::Udp,
                        _ => Protocol::Sctp,
                    };
                    let (addr, port) = split_addr(tok[i + 1]);
                    key = Some(ServiceKey::Addr {
                        protocol,
                        addr,
                        port,
                    });
                    i += 2;
                }
                "-f" => {
                    opts.insert("-f", tok[i + 1]);
                    i += 2;
                }
                "-6" => {
                    family = Family::Inet6;
                    i += 1;
                }
                "-g" | "-i" | "-m" | "-o" | "--tun-nocsum" | "--tun-csum" | "--tun-remcsum" => {
                    switches.insert(tok[i]);
                    i += 1;
                }
                "-s" | "-p" | "-M" | "--pe" | "-b" | "-r" | "-w" | "-x" | "-y" | "--tun-type"
                | "--tun-port" => {
                    opts.insert(tok[i], tok[i + 1]);
                    i += 2;
                }
                other => panic!("ipvsadm -Sn: unexpected token {other} in {line:?}"),
            }
        }
        let key = key.unwrap_or_else(|| ServiceKey::Fwmark {
            family,
            mark: opts["-f"].parse().unwrap(),
        });
        match tok[0] {
            "-A" => {
                let mut svc = Service::new(key, opts["-s"]);
                if let Some(p) = opts.get("-p") {
                    svc.flags.0 |= ServiceFlags::PERSISTENT;
                    svc.timeout = p.parse().unwrap();
                }
                if let Some(m) = opts.get("-M") {
                    svc.netmask = match m.parse::<Ipv4Addr>() {
                        Ok(a) => u32::from(a),
                        Err(_) => m.parse().unwrap(),
                    };
                }
                if switches.contains("-o") {
                    svc.flags.0 |= ServiceFlags::ONEPACKET;
                }
                for f in opts.get("-b").map(|b| b.split(',')).into_iter().flatten() {
                    svc.flags.0 |= match f {
                        "sh-fallback" | "mh-fallback" | "flag-1" => ServiceFlags::SCHED1,
                        "sh-port" | "mh-port" | "flag-2" => ServiceFlags::SCHED2,
                        "flag-3" => ServiceFlags::SCHED3,
                        other => panic!("unknown sched flag {other}"),
                    };
                }
                svc.pe_name = opts.get("--pe").map(|s| s.to_string());
                t.insert(
                    key,
                    ServiceState {
                        service: svc,
                        dests: BTreeMap::new(),
                    },
                );
            }
            "-a" => {
                let (addr, port) = split_addr(opts["-r"]);
                let forwarding = if switches.contains("-g") {
                    Forwarding::Route
                } else if switches.contains("-i") {
                    Forwarding::Tunnel
                } else if switches.contains("-m") {
                    Forwarding::Masq
                } else {
                    panic!("no forwarding method in {line:?}")
                };
                let mut d = Destination::new(addr, port, forwarding);
                d.weight = opts["-w"].parse().unwrap();
                d.u_threshold = opts.get("-x").map_or(0, |v| v.parse().unwrap());
                d.l_threshold = opts.get("-y").map_or(0, |v| v.parse().unwrap());
                if let Some(tt) = opts.get("--tun-type") {
                    d.tun_type = match *tt {
                        "ipip" => TunnelType::Ipip,
                        "gue" => TunnelType::Gue,
                        "gre" => TunnelType::Gre,
                        other => panic!("tun type {other}"),
                    };
                }
                d.tun_port = opts.get("--tun-port").map_or(0, |v| v.parse().unwrap());
                if switches.contains("--tun-csum") {
                    d.tun_flags.0 |= TunnelFlags::CSUM;
                }
                if switches.contains("--tun-remcsum") {
                    d.tun_flags.0 |= TunnelFlags::REMCSUM;
                }
                t.get_mut(&key)
                    .expect("destination after its service")
                    .dests
                    .insert(d.key, d);
            }
            other => panic!("ipvsadm -Sn: unexpected command {other}"),
        }
    }
    t
}

/// A line with its runs of spaces made single.
fn words(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn split_addr(s: &str) -> (IpAddr, u16) {
    let (a, p) = s.rsplit_once(':').expect("addr:port");
    let a = a.trim_start_matches('[').trim_end_matches(']');
    (a.parse().expect("address"), p.parse().expect("port"))
}

/// What `ipvsadm -Sn` can show of a table: the netmask of a service that is
/// not persistent is not printed, nor are thresholds (`-Ln --thresholds`
/// shows those).
fn as_ipvsadm_shows(t: &Table) -> Table {
    let mut t = t.clone();
    for st in t.values_mut() {
        if !st.service.flags.contains(ServiceFlags::PERSISTENT) {
            st.service.netmask = Service::new(st.service.key, "").netmask;
        }
        for d in st.dests.values_mut() {
            d.u_threshold = 0;
            d.l_threshold = 0;
        }
    }
    t
}

fn apply_all(sock: &mut IpvsSocket, desired: &Table) {
    let plan = reconcile::plan(desired, &sock.table().unwrap(), &BTreeSet::new());
    let report = sock.apply(&plan.ops).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
}

fn twos_available() -> bool {
    // The module file exists only in kernels that have the scheduler.
    let release = run("uname", &["-r"]);
    std::path::Path::new(&format!(
        "/lib/modules/{}/kernel/net/netfilter/ipvs/ip_vs_twos.ko",
        release.trim()
    ))
    .exists()
        || std::path::Path::new(&format!(
            "/lib/modules/{}/kernel/net/netfilter/ipvs/ip_vs_twos.ko.xz",
            release.trim()
        ))
        .exists()
}

/// Everything our client writes reads back identically through our dump and
/// through `ipvsadm -Sn`, and `ipvsadm -Ln --exact` shows the same rules.
#[test]
fn our_writes_read_back_through_our_dump_and_ipvsadm() {
    own_netns();
    let mut desired = full_table();
    if twos_available() {
        desired.extend([state(
            Service::new(tcp(v4(192, 0, 2, 11), 80), "twos"),
            vec![dest(v4(10, 0, 0, 1), 80, Forwarding::Route, 1)],
        )]);
    }
    validate::validate(&desired).expect("the test table is valid");
    let mut sock = IpvsSocket::connect().unwrap();
    apply_all(&mut sock, &desired);

    let ours = sock.table().unwrap();
    assert_eq!(ours, desired, "our dump differs from what we wrote");

    let saved = ipvsadm(&["-Sn"]);
    assert_eq!(
        parse_save(&saved),
        as_ipvsadm_shows(&desired),
        "ipvsadm -Sn:\n{saved}"
    );

    let listed = ipvsadm(&["-Ln", "--exact"]);
    for needle in [
        "TCP  192.0.2.1:443 wlc persistent 600 mask 255.255.255.0",
        "-> 10.0.0.2:8443                Masq    3",
        "UDP  192.0.2.3:53 wrr ops",
        "SCTP 192.0.2.4:3868 rr",
        "TCP  192.0.2.5:80 sh (sh-fallback,sh-port)",
        "TCP  192.0.2.6:80 mh (mh-fallback,mh-port)",
        "-> [2001:db8::99]:80             Tunnel  4",
        "TCP  [2001:db8::1]:80 rr persistent 300 mask 64",
        "FWM  7 lc",
        "FWM  8 IPv6 rr",
    ] {
        assert!(
            listed.lines().any(|l| words(l).starts_with(&words(needle))),
            "ipvsadm -Ln --exact lacks {needle:?}:\n{listed}"
        );
    }
    // Thresholds and tunnel options as ipvsadm lists them.
    let thresholds = ipvsadm(&["-Ln", "--thresholds", "-t", "192.0.2.1:443"]);
    assert!(
        thresholds
            .lines()
            .any(|l| l.contains("10.0.0.2:8443") && l.contains("100") && l.contains("20")),
        "{thresholds}"
    );
    let tun = ipvsadm(&["-Ln", "--tun-info", "-t", "192.0.2.5:80"]);
    assert!(
        tun.lines()
            .any(|l| l.contains("10.0.1.2:80") && l.contains("gue") && l.contains("6080")),
        "{tun}"
    );

    // A second plan against the kernel is empty: nothing churns.
    let again = reconcile::plan(&desired, &sock.table().unwrap(), &BTreeSet::new());
    assert!(again.ops.is_empty(), "{:?}", again.ops);
}

/// Objects created by `ipvsadm` are read right by our dump.
#[test]
fn ipvsadm_objects_are_read_by_our_dump() {
    own_netns();
    let rules = "\
-A -t 198.51.100.1:80 -s wrr -p 120 -M 255.255.0.0
-a -t 198.51.100.1:80 -r 10.1.0.1:8080 -m -w 5 -x 50 -y 10
-a -t 198.51.100.1:80 -r 10.1.0.2:80 -i -w 2 --tun-type gue --tun-port 5555 --tun-csum
-A -u 198.51.100.2:53 -s sh -b sh-port -o
-a -u 198.51.100.2:53 -r 10.1.0.3:53 -g -w 1
-A -f 42 -6 -s mh -b mh-fallback
-a -f 42 -6 -r [2001:db8::42]:0 -g -w 9
-A --sctp-service [2001:db8::5]:5000 -s fo -p 30 -M 96
-a --sctp-service [2001:db8::5]:5000 -r 10.1.0.4:5000 -i -w 3 --tun-type gre --tun-csum
";
    let out = Command::new("sh")
        .args(["-c", &format!("printf '%s' '{rules}' | ipvsadm -R")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut want = Table::new();
    let k1 = tcp(v4(198, 51, 100, 1), 80);
    let mut s1 = Service::new(k1, "wrr");
    s1.flags = ServiceFlags(ServiceFlags::PERSISTENT);
    s1.timeout = 120;
    s1.netmask = ipv4_netmask(16);
    let mut d1 = dest(v4(10, 1, 0, 1), 8080, Forwarding::Masq, 5);
    d1.u_threshold = 50;
    d1.l_threshold = 10;
    let mut d2 = dest(v4(10, 1, 0, 2), 80, Forwarding::Tunnel, 2);
    d2.tun_type = TunnelType::Gue;
    d2.tun_port = 5555;
    d2.tun_flags = TunnelFlags(TunnelFlags::CSUM);
    want.extend([state(s1, vec![d1, d2])]);
    let k2 = ServiceKey::Addr {
        protocol: Protocol::Udp,
        addr: v4(198, 51, 100, 2),
        port: 53,
    };
    let mut s2 = Service::new(k2, "sh");
    s2.flags = ServiceFlags(ServiceFlags::SH_PORT | ServiceFlags::ONEPACKET);
    want.extend([state(
        s2,
        vec![dest(v4(10, 1, 0, 3), 53, Forwarding::Route, 1)],
    )]);
    let k3 = ServiceKey::Fwmark {
        family: Family::Inet6,
        mark: 42,
    };
    let mut s3 = Service::new(k3, "mh");
    s3.flags = ServiceFlags(ServiceFlags::MH_FALLBACK);
    want.extend([state(s3, vec![dest(v6(0x42), 0, Forwarding::Route, 9)])]);
    let k4 = ServiceKey::Addr {
        protocol: Protocol::Sctp,
        addr: v6(5),
        port: 5000,
    };
    let mut s4 = Service::new(k4, "fo");
    s4.flags = ServiceFlags(ServiceFlags::PERSISTENT);
    s4.timeout = 30;
    s4.netmask = 96;
    let mut d4 = dest(v4(10, 1, 0, 4), 5000, Forwarding::Tunnel, 3);
    d4.tun_type = TunnelType::Gre;
    d4.tun_flags = TunnelFlags(TunnelFlags::CSUM);
    want.extend([state(s4, vec![d4])]);

    let mut sock = IpvsSocket::connect().unwrap();
    assert_eq!(sock.table().unwrap(), want);
    // And one service on its own.
    assert_eq!(sock.service(k2).unwrap().service, want[&k2].service);
}

/// Drift is repaired: after `ipvsadm -C`, after a weight changed with
/// `ipvsadm -e` and after a destination deleted with `ipvsadm -d`, one plan
/// restores the desired table with the fewest operations; a foreign service
/// added with `ipvsadm -A` survives every round.
#[test]
fn drift_is_repaired_and_foreign_survives() {
    own_netns();
    let mut desired = Table::new();
    let key = tcp(v4(203, 0, 113, 1), 80);
    desired.extend([state(
        Service::new(key, "wrr"),
        vec![
            dest(v4(10, 2, 0, 1), 80, Forwarding::Route, 10),
            dest(v4(10, 2, 0, 2), 80, Forwarding::Route, 20),
        ],
    )]);
    let mut sock = IpvsSocket::connect().unwrap();
    let owned: BTreeSet<ServiceKey> = reconcile::owned_after(&desired);
    apply_all(&mut sock, &desired);
    ipvsadm(&["-A", "-t", "203.0.113.99:22", "-s", "rr"]);
    ipvsadm(&["-a", "-t", "203.0.113.99:22", "-r", "10.9.9.9:22", "-g"]);
    let foreign = sock.table().unwrap()[&tcp(v4(203, 0, 113, 99), 22)].clone();

    let converge = |sock: &mut IpvsSocket| -> Vec<IpvsOp> {
        let current = sock.table().unwrap();
        let plan = reconcile::plan(&desired, &current, &owned);
        assert_eq!(plan.foreign, vec![tcp(v4(203, 0, 113, 99), 22)]);
        let report = sock.apply(&plan.ops).unwrap();
        assert!(report.converged(), "{report:?}");
        let after = sock.table().unwrap();
        assert_eq!(after[&key], desired[&key]);
        assert_eq!(after[&tcp(v4(203, 0, 113, 99), 22)], foreign);
        plan.ops
    };

    // No drift: nothing to do.
    assert_eq!(converge(&mut sock), vec![]);

    // A weight edited behind our back: one SetDest.
    ipvsadm(&[
        "-e",
        "-t",
        "203.0.113.1:80",
        "-r",
        "10.2.0.1:80",
        "-g",
        "-w",
        "99",
    ]);
    let ops = converge(&mut sock);
    assert_eq!(
        ops,
        vec![IpvsOp::SetDest(
            key,
            desired[&key].dests[&DestKey {
                addr: v4(10, 2, 0, 1),
                port: 80
            }]
        )]
    );

    // A destination deleted: one AddDest.
    ipvsadm(&["-d", "-t", "203.0.113.1:80", "-r", "10.2.0.2:80"]);
    let ops = converge(&mut sock);
    assert!(matches!(ops.as_slice(), [IpvsOp::AddDest(k, d)] if *k == key && d.key.port == 80));

    // Everything cleared (foreign too): ours comes back, the foreign one is
    // not recreated by us; recreate it as its owner would.
    ipvsadm(&["-C"]);
    let current = sock.table().unwrap();
    assert!(current.is_empty());
    let plan = reconcile::plan(&desired, &current, &owned);
    assert_eq!(plan.ops.len(), 3, "{:?}", plan.ops);
    let report = sock.apply(&plan.ops).unwrap();
    assert!(report.converged());
    assert_eq!(sock.table().unwrap(), desired);
}

/// Kernel answers: "exists" and "not found" during apply count as converged;
/// an unknown scheduler names the scheduler and its module.
#[test]
fn kernel_errors_are_converged_or_explained() {
    own_netns();
    let mut sock = IpvsSocket::connect().unwrap();
    let key = tcp(v4(192, 0, 2, 50), 80);
    let d = dest(v4(10, 3, 0, 1), 80, Forwarding::Route, 1);
    let ops = vec![
        IpvsOp::AddService(Service::new(key, "rr")),
        IpvsOp::AddService(Service::new(key, "rr")),
        IpvsOp::AddDest(key, d),
        IpvsOp::AddDest(key, d),
        IpvsOp::DelDest(
            key,
            DestKey {
                addr: v4(10, 3, 0, 9),
                port: 80,
            },
        ),
        IpvsOp::DelService(tcp(v4(192, 0, 2, 51), 80)),
        IpvsOp::SetDest(key, dest(v4(10, 3, 0, 8), 80, Forwarding::Route, 1)),
    ];
    let report = sock.apply(&ops).unwrap();
    assert_eq!(report.done, 2, "{report:?}");
    // The second adds find what the first made: compared again next round.
    assert_eq!(report.appeared.len(), 2, "{report:?}");
    assert_eq!(report.already.len(), 2, "{report:?}");
    assert_eq!(report.vanished.len(), 1, "{report:?}");
    assert!(!report.converged());
    assert!(report.failed.is_empty());

    // Unknown scheduler: validation refuses it first ...
    let bad = Service::new(tcp(v4(192, 0, 2, 52), 80), "nosuch");
    let mut errors = Vec::new();
    validate::validate_service(&bad, &mut errors);
    assert!(
        errors[0]
            .to_string()
            .contains("scheduler 'nosuch' is unknown")
    );
    // ... and the kernel's own refusal, if it gets that far, says the same.
    let report = sock.apply(&[IpvsOp::AddService(bad)]).unwrap();
    let msg = report.failed[0].1.to_string();
    assert!(
        msg.contains("scheduler 'nosuch'") && msg.contains("module ip_vs_nosuch"),
        "{msg}"
    );
}

/// Timeouts, info, flush, zero and the sync daemon through our client,
/// checked with ipvsadm.
#[test]
fn config_info_daemon_flush() {
    own_netns();
    let mut sock = IpvsSocket::connect().unwrap();
    let info = sock.info().unwrap();
    assert!(info.version >= 0x010200, "{info:?}");
    assert!(info.conn_tab_size > 0);

    let t = Timeouts {
        tcp: 901,
        tcp_fin: 121,
        udp: 301,
    };
    sock.set_timeouts(t).unwrap();
    assert_eq!(sock.timeouts().unwrap(), t);
    assert!(ipvsadm(&["-Ln", "--timeout"]).contains("901 121 301"));
    ipvsadm(&["--set", "900", "120", "300"]);
    assert_eq!(
        sock.timeouts().unwrap(),
        Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300
        }
    );

    // A sync daemon needs a multicast-capable interface.
    run("ip", &["link", "add", "sync0", "type", "dummy"]);
    run("ip", &["link", "set", "sync0", "multicast", "on", "up"]);
    let d = Daemon {
        state: DaemonState::Backup,
        mcast_ifn: "sync0".into(),
        sync_id: 9,
        sync_maxlen: Some(1400),
        mcast_group: Some(v4(239, 1, 2, 3)),
        mcast_port: Some(8849),
        mcast_ttl: Some(3),
    };
    sock.start_daemon(d.clone()).unwrap();
    let daemons = sock.daemons().unwrap();
    assert_eq!(daemons, vec![d]);
    let shown = ipvsadm(&["-Ln", "--daemon"]);
    assert!(
        shown.contains("backup sync daemon")
            && shown.contains("sync0")
            && shown.contains("syncid=9"),
        "{shown}"
    );
    sock.stop_daemon(DaemonState::Backup).unwrap();
    assert!(sock.daemons().unwrap().is_empty());
    // ipvsadm's daemon read by us.
    ipvsadm(&[
        "--start-daemon",
        "master",
        "--mcast-interface",
        "sync0",
        "--syncid",
        "4",
    ]);
    let daemons = sock.daemons().unwrap();
    assert_eq!(daemons.len(), 1);
    assert_eq!(daemons[0].state, DaemonState::Master);
    assert_eq!(daemons[0].sync_id, 4);
    assert_eq!(daemons[0].mcast_ifn, "sync0");
    ipvsadm(&["--stop-daemon", "master"]);

    // Zero and flush.
    apply_all(&mut sock, &full_table());
    sock.zero(None).unwrap();
    sock.execute(&[Request::Flush]).unwrap().remove(0).unwrap();
    assert!(sock.table().unwrap().is_empty());
    assert_eq!(ipvsadm(&["-Sn"]).trim(), "");
}

/// Ownership survives a restart: a service lb created and no longer wants
/// is deleted by a new agent instance (new socket, owned set read from the
/// state directory); a service created with ipvsadm is left alone; an
/// invalid table touches nothing.
#[test]
fn ownership_survives_restart() {
    own_netns();
    let state_dir = tempfile::tempdir().unwrap();
    ipvsadm(&["-A", "-u", "198.18.0.99:53", "-s", "rr"]);
    let foreign_key = ServiceKey::Addr {
        protocol: Protocol::Udp,
        addr: v4(198, 18, 0, 99),
        port: 53,
    };
    let a = tcp(v4(198, 18, 0, 1), 80);
    let b = tcp(v4(198, 18, 0, 2), 80);
    let mut desired = Table::new();
    desired.extend([
        state(
            Service::new(a, "rr"),
            vec![dest(v4(10, 4, 0, 1), 80, Forwarding::Route, 1)],
        ),
        state(
            Service::new(b, "wrr"),
            vec![dest(v4(10, 4, 0, 2), 80, Forwarding::Route, 2)],
        ),
    ]);
    {
        let mut sock = IpvsSocket::connect().unwrap();
        let round = converge(&mut sock, &desired, &OwnedServices::new(state_dir.path())).unwrap();
        assert_eq!(round.planned, 4);
        assert!(round.report.converged());
        assert_eq!(round.foreign, vec![foreign_key]);
    }
    // A new agent: nothing in memory but the state directory.
    desired.remove(&a);
    let mut sock = IpvsSocket::connect().unwrap();
    let store = OwnedServices::new(state_dir.path());
    assert_eq!(store.load().unwrap(), [a, b].into());
    let round = converge(&mut sock, &desired, &store).unwrap();
    assert_eq!(round.planned, 1, "only the service no longer wanted goes");
    let table = sock.table().unwrap();
    assert!(!table.contains_key(&a));
    assert_eq!(table[&b], desired[&b]);
    assert!(table.contains_key(&foreign_key));
    assert_eq!(store.load().unwrap(), [b].into());

    // Invalid: refused before the kernel sees anything.
    let mut bad = desired.clone();
    bad.extend([state(
        Service::new(tcp(v4(198, 18, 0, 3), 0), "wrrr"),
        vec![],
    )]);
    let err = converge(&mut sock, &bad, &store).unwrap_err();
    assert!(matches!(err, ConvergeError::Invalid(_)));
    let msg = err.to_string();
    assert!(
        msg.contains("scheduler 'wrrr' is unknown") && msg.contains("port 0"),
        "{msg}"
    );
    assert_eq!(sock.table().unwrap(), table);
}

/// Removes a named network namespace when dropped.
struct NamedNetns(String);

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Counters: UDP datagrams from a client namespace through a service are
/// counted by the kernel; our decoded 64-bit counters of the service and of
/// its destination equal what `ipvsadm -Ln --stats --exact` prints.
#[test]
fn counters_match_ipvsadm() {
    own_netns();
    let client = NamedNetns(format!("lbipvs-{}-client", std::process::id()));
    run("ip", &["netns", "add", &client.0]);
    run(
        "ip",
        &[
            "link", "add", "lan0", "type", "veth", "peer", "name", "lan1", "netns", &client.0,
        ],
    );
    run("ip", &["link", "set", "lan0", "up"]);
    run("ip", &["addr", "add", "10.99.0.1/24", "dev", "lan0"]);
    run("ip", &["addr", "add", "10.99.0.100/32", "dev", "lo"]);
    let inside = |args: &[&str]| {
        let mut a = vec!["netns", "exec", client.0.as_str()];
        a.extend_from_slice(args);
        run("ip", &a)
    };
    inside(&["ip", "link", "set", "lan1", "up"]);
    inside(&["ip", "addr", "add", "10.99.0.50/24", "dev", "lan1"]);

    let key = ServiceKey::Addr {
        protocol: Protocol::Udp,
        addr: v4(10, 99, 0, 100),
        port: 9999,
    };
    let mut desired = Table::new();
    desired.extend([state(
        Service::new(key, "rr"),
        vec![dest(v4(10, 99, 0, 2), 9999, Forwarding::Route, 1)],
    )]);
    let mut sock = IpvsSocket::connect().unwrap();
    apply_all(&mut sock, &desired);

    // Resolve the VIP's link address first, then five datagrams of 100
    // bytes (bash's /dev/udp), bounded by count.
    inside(&["ping", "-c", "1", "-W", "5", "10.99.0.100"]);
    inside(&[
        "bash",
        "-c",
        "for i in 1 2 3 4 5; do printf '%100s' '' > /dev/udp/10.99.0.100/9999; done",
    ]);
    // The datagrams are counted as they arrive: poll, at most 100 times.
    let mut svc = sock.service(key).unwrap().stats;
    for _ in 0..100 {
        if svc.inpkts >= 5 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        svc = sock.service(key).unwrap().stats;
    }
    let dst = sock.dests(key).unwrap()[0].stats;
    assert_eq!(svc.inpkts, 5, "{svc:?}");
    assert!(svc.conns >= 1 && svc.inbytes >= 500, "{svc:?}");

    let listed = ipvsadm(&["-Ln", "--stats", "--exact", "-u", "10.99.0.100:9999"]);
    // The first line with this prefix that carries counters (the header
    // lines carry none).
    let numbers = |prefix: &str| -> Vec<u64> {
        listed
            .lines()
            .filter(|l| l.trim_start().starts_with(prefix))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|w| w.parse().ok())
                    .collect::<Vec<u64>>()
            })
            .find(|n| !n.is_empty())
            .unwrap_or_else(|| panic!("no {prefix} line with counters in:\n{listed}"))
    };
    let ours = |s: lb_agent::ipvs::Stats| vec![s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes];
    assert_eq!(numbers("UDP"), ours(svc), "{listed}");
    assert_eq!(numbers("->"), ours(dst), "{listed}");
}
