//! One test per validation rule: the seed topology, one thing broken, the
//! exact finding expected.

use super::*;
use lb_proto::v1::{Node, RealServer, real_server::Target};

/// Seed 000 (DNS over LVS-DR, two directors), from `examples/`.
const SEED: &str = include_str!("../../../examples/seed-000-dns-dr.yaml");

fn seed() -> Topology {
    lb_proto::yaml::from_str(SEED).unwrap()
}

fn errors(t: &Topology) -> Vec<String> {
    validate(t, &Topology::default(), false)
        .errors
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn assert_one_error(t: &Topology, expected: &str) {
    assert_eq!(errors(t), vec![expected.to_string()]);
}

#[test]
fn seed_is_valid() {
    let report = validate(&seed(), &Topology::default(), false);
    assert_eq!(report, Report::default());
}

#[test]
fn weight_out_of_range() {
    let mut t = seed();
    t.services[0].real_servers[1].weight = Some(70000);
    assert_one_error(
        &t,
        "service dns: field realServers[1].weight: 70000 is out of range 0..65535",
    );
    t.services[0].real_servers[1].weight = Some(65535);
    assert!(errors(&t).is_empty());
}

#[test]
fn unknown_director_group() {
    let mut t = seed();
    t.services[0].director_group = "nope".into();
    assert_one_error(
        &t,
        "service dns: field directorGroup: director group 'nope' does not exist",
    );
}

#[test]
fn unknown_real_server_node() {
    let mut t = seed();
    t.services[0].real_servers[0].target = Some(Target::Node("rs9".into()));
    assert_one_error(
        &t,
        "service dns: field realServers[0].node: node 'rs9' does not exist",
    );
}

#[test]
fn real_server_node_must_be_a_real_server() {
    let mut t = seed();
    t.services[0].real_servers[0].target = Some(Target::Node("ds2".into()));
    assert_one_error(
        &t,
        "service dns: field realServers[0].node: node 'ds2' is not a real server (its role is director)",
    );
}

#[test]
fn unknown_priority_node() {
    let mut t = seed();
    let inst = &mut t.director_groups[0].vrrp.as_mut().unwrap().instances[0];
    inst.priorities.insert("ds9".into(), 50);
    assert_one_error(
        &t,
        "director group dns-lb: field vrrp.instances[0].priorities.ds9: node 'ds9' does not exist",
    );
}

#[test]
fn unknown_group_director() {
    let mut t = seed();
    t.director_groups[0].directors = vec!["ds1".into(), "rs1".into()];
    let errs = errors(&t);
    assert!(
        errs.contains(&"director group dns-lb: field directors[1]: node 'rs1' is not a director (its role is realserver)".to_string()),
        "{errs:?}"
    );
}

#[test]
fn unknown_track_script() {
    let mut t = seed();
    let inst = &mut t.director_groups[0].vrrp.as_mut().unwrap().instances[0];
    inst.track_scripts.push(lb_proto::v1::TrackScriptRef {
        name: "chk_gw".into(),
        weight: None,
    });
    assert_one_error(
        &t,
        "director group dns-lb: field vrrp.instances[0].trackScripts[0].name: script 'chk_gw' is not defined in vrrp.scripts",
    );
}

#[test]
fn unknown_track_service() {
    let mut t = seed();
    let inst = &mut t.director_groups[0].vrrp.as_mut().unwrap().instances[0];
    inst.track_services.push(lb_proto::v1::TrackService {
        service: "web".into(),
        weight: 0,
    });
    assert_one_error(
        &t,
        "director group dns-lb: field vrrp.instances[0].trackServices[0].service: service 'web' does not exist in director group dns-lb",
    );
}

#[test]
fn duplicate_vip_port_protocol() {
    let mut t = seed();
    let mut other = t.services[0].clone();
    other.name = "dns2".into();
    t.services.push(other.clone());
    assert_one_error(
        &t,
        "service dns2: field vip: udp 192.168.56.185 port 53 is already the key of service dns; a VIP, port and protocol (or firewall mark) may be used once",
    );
    // The same VIP and port over TCP is another service.
    t.services[1].protocol = Protocol::Tcp as i32;
    assert!(errors(&t).is_empty(), "{:?}", errors(&t));
}

#[test]
fn duplicate_fwmark() {
    let mut t = seed();
    t.services[0].vip.clear();
    t.services[0].fwmark = 7;
    let mut other = t.services[0].clone();
    other.name = "dns2".into();
    t.services.push(other);
    assert_one_error(
        &t,
        "service dns2: field fwmark: fwmark 7 inet is already the key of service dns; a VIP, port and protocol (or firewall mark) may be used once",
    );
}

#[test]
fn vip_equal_to_a_real_server_address() {
    let mut t = seed();
    t.services[0].real_servers.push(RealServer {
        target: Some(Target::Address("192.168.56.185".into())),
        ..Default::default()
    });
    assert_one_error(
        &t,
        "service dns: field realServers[2]: the real server's address 192.168.56.185 is a VIP; a real server must have an address of its own",
    );
}

#[test]
fn unknown_scheduler() {
    let mut t = seed();
    t.services[0].scheduler = "wrrr".into();
    assert_one_error(
        &t,
        "service dns: field scheduler: scheduler 'wrrr' is unknown (known: rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos)",
    );
}

#[test]
fn every_known_scheduler_is_accepted() {
    for s in SCHEDULERS {
        let mut t = seed();
        t.services[0].scheduler = (*s).into();
        assert!(errors(&t).is_empty(), "{s}: {:?}", errors(&t));
    }
}

#[test]
fn scheduler_flags_only_for_hashing_schedulers() {
    let mut t = seed();
    t.services[0].scheduler_flags = Some(lb_proto::v1::SchedulerFlags {
        fallback: true,
        port: false,
    });
    assert_one_error(
        &t,
        "service dns: field schedulerFlags: the fallback and port flags apply to the sh and mh schedulers only, not 'wrr'",
    );
    t.services[0].scheduler = "mh".into();
    assert!(errors(&t).is_empty());
}

#[test]
fn one_packet_scheduling_only_for_udp() {
    let mut t = seed();
    t.services[0].one_packet = true;
    assert!(errors(&t).is_empty());
    t.services[0].protocol = Protocol::Tcp as i32;
    assert_one_error(
        &t,
        "service dns: field onePacket: one-packet scheduling is for UDP only; the protocol is tcp",
    );
}

#[test]
fn port_zero_needs_persistence_or_fwmark() {
    let mut t = seed();
    t.services[0].port = 0;
    for rs in &mut t.services[0].real_servers {
        rs.port = 0;
    }
    assert_one_error(
        &t,
        "service dns: field port: port 0 (every port) needs persistence or a firewall mark",
    );
    t.services[0].persistence = Some(lb_proto::v1::Persistence {
        timeout: Some(lb_proto::duration::Duration::from_millis(300_000)),
        ..Default::default()
    });
    // With no port anywhere, the DNS check needs one of its own: a director
    // could not run it otherwise.
    assert_one_error(
        &t,
        "service dns: field healthCheck.connectPort: real server rs1: the real server has no port: set connectPort for this check (director ds1 would refuse it)",
    );
    t.services[0].health_check.as_mut().unwrap().connect_port = 53;
    assert!(errors(&t).is_empty(), "{:?}", errors(&t));
}

#[test]
fn vrid_out_of_range() {
    let mut t = seed();
    t.director_groups[0].vrrp.as_mut().unwrap().instances[0].vrid = 256;
    assert_one_error(
        &t,
        "director group dns-lb: field vrrp.instances[0].vrid: 256 is out of range 1..255",
    );
    t.director_groups[0].vrrp.as_mut().unwrap().instances[0].vrid = 0;
    assert_one_error(
        &t,
        "director group dns-lb: field vrrp.instances[0].vrid: 0 is out of range 1..255",
    );
}

#[test]
fn vrid_unique_per_interface() {
    let mut t = seed();
    let vrrp = t.director_groups[0].vrrp.as_mut().unwrap();
    let mut second = vrrp.instances[0].clone();
    second.name = "VI_2".into();
    second.vips = vec!["192.168.56.186/24".into()];
    vrrp.instances.push(second);
    assert_one_error(
        &t,
        "director group dns-lb: field vrrp.instances[1].vrid: VRID 50 is already used on interface eth2 by vrrp.instances[0]; a VRID must be unique per interface",
    );
    // On another interface it is fine.
    t.director_groups[0].vrrp.as_mut().unwrap().instances[1].interface = "eth3".into();
    assert!(errors(&t).is_empty(), "{:?}", errors(&t));
}

#[test]
fn priority_out_of_range() {
    let mut t = seed();
    let inst = &mut t.director_groups[0].vrrp.as_mut().unwrap().instances[0];
    inst.priorities.insert("ds2".into(), 0);
    assert_one_error(
        &t,
        "director group dns-lb: field vrrp.instances[0].priorities.ds2: priority 0 is out of range 1..254",
    );
}

#[test]
fn priority_255_only_for_the_address_owner() {
    let mut t = seed();
    let inst = &mut t.director_groups[0].vrrp.as_mut().unwrap().instances[0];
    inst.priorities.insert("ds1".into(), 255);
    assert_one_error(
        &t,
        "director group dns-lb: field vrrp.instances[0].priorities.ds1: priority 255 is only for the address owner, and node 'ds1' does not own a VIP of the instance (use 1..254)",
    );
    // ds1 owning the VIP: its address is the VIP.
    let inst = &mut t.director_groups[0].vrrp.as_mut().unwrap().instances[0];
    inst.vips.push("192.168.56.181/24".into());
    assert!(errors(&t).is_empty(), "{:?}", errors(&t));
}

#[test]
fn no_ipv6_vip_under_vrrp_v2() {
    let mut t = seed();
    let vrrp = t.director_groups[0].vrrp.as_mut().unwrap();
    vrrp.version = 2;
    let mut v6 = vrrp.instances[0].clone();
    v6.name = "VI_6".into();
    v6.vrid = 51;
    v6.vips = vec!["2001:db8::10/64".into()];
    vrrp.instances.push(v6);
    assert_one_error(
        &t,
        "director group dns-lb: field vrrp.instances[1].vips: IPv6 VIPs need VRRP version 3 (version 2 is IPv4 only, RFC 3768)",
    );
    t.director_groups[0].vrrp.as_mut().unwrap().version = 3;
    assert!(errors(&t).is_empty(), "{:?}", errors(&t));
}

#[test]
fn unique_names() {
    let mut t = seed();
    t.nodes.push(Node {
        name: "rs1".into(),
        role: NodeRole::Realserver as i32,
        address: "192.168.56.190".into(),
        ..Default::default()
    });
    assert_one_error(
        &t,
        "node rs1: field name: the name is used twice (nodes[2] and nodes[4]); names must be unique",
    );
}

#[test]
fn unique_service_names() {
    let mut t = seed();
    let mut other = t.services[0].clone();
    other.port = 54;
    for rs in &mut other.real_servers {
        rs.port = 54;
    }
    t.services.push(other);
    assert_one_error(
        &t,
        "service dns: field name: the name is used twice (services[0] and services[1]); names must be unique",
    );
}

#[test]
fn dr_real_server_off_segment_is_a_warning() {
    let mut t = seed();
    t.services[0].real_servers.push(RealServer {
        target: Some(Target::Address("10.9.9.9".into())),
        port: 53,
        ..Default::default()
    });
    let report = validate(&t, &Topology::default(), false);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let warnings: Vec<String> = report.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        vec![
            "service dns: field realServers[2]: 10.9.9.9 is not on the segment of director group dns-lb (192.168.56.185/24); direct routing needs the real server on the directors' link"
                .to_string()
        ]
    );
    // NAT real servers need no shared segment.
    t.services[0].forwarding = Forwarding::Nat as i32;
    assert!(
        validate(&t, &Topology::default(), false)
            .warnings
            .is_empty()
    );
}

#[test]
fn removing_every_real_server_needs_force() {
    let old = seed();
    let mut new = seed();
    new.services[0].real_servers.clear();
    let report = validate(&new, &old, false);
    let errs: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errs,
        vec!["service dns: field realServers: the change removes every real server of the service; apply with force if that is meant".to_string()]
    );
    assert!(validate(&new, &old, true).is_ok());
    // Removing one of two is fine without force.
    let mut partial = seed();
    partial.services[0].real_servers.pop();
    assert!(validate(&partial, &old, false).is_ok());
}

#[test]
fn dr_cannot_change_the_port() {
    let mut t = seed();
    t.services[0].real_servers[0].port = 5353;
    assert_one_error(
        &t,
        "service dns: field realServers[0].port: 5353 differs from the service port 53; DR and TUN cannot change the port (use nat, or leave the port out)",
    );
}

#[test]
fn service_vip_must_be_a_group_vip() {
    let mut t = seed();
    t.services[0].vip = "192.168.56.199".into();
    assert_one_error(
        &t,
        "service dns: field vip: 192.168.56.199 is not a VIP of director group dns-lb (add it to an instance's vips)",
    );
}

#[test]
fn bad_addresses_are_named() {
    let mut t = seed();
    t.nodes[2].address = "192.168.56".into();
    let errs = errors(&t);
    assert!(
        errs.contains(
            &"node rs1: field address: '192.168.56' is not an IPv4 or IPv6 address".to_string()
        ),
        "{errs:?}"
    );
}

/// In: seed 000 with VRRP v2 at a 1.5 s advert interval, which the director
/// agent cannot run (v2 carries whole seconds). Out: refused before a write,
/// naming the group and instance and the director that would refuse it;
/// the same topology unchanged against itself is not checked again.
#[test]
fn what_a_director_would_refuse_is_refused() {
    let mut t = seed();
    let vrrp = t.director_groups[0].vrrp.as_mut().unwrap();
    vrrp.version = 2;
    vrrp.advert_interval = Some(lb_proto::duration::Duration::from_millis(1500));
    let errs = errors(&t);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("director group dns-lb: instance VI_1:")
            && errs[0].contains("whole seconds")
            && errs[0].ends_with("(director ds1 would refuse it)"),
        "{errs:?}"
    );
    assert!(validate(&t, &t, false).errors.is_empty());
}
