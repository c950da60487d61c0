//! Every seed setup has an example topology in `examples/` that parses, and a
//! misspelt field in one of them is refused with the field's path.

use std::path::PathBuf;

use lb_proto::v1::{DirectorConfig, Forwarding, Protocol, Topology, health_check::Kind};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(examples_dir().join(name))
        .unwrap_or_else(|e| panic!("reading examples/{name}: {e}"))
}

fn parse(name: &str) -> Topology {
    lb_proto::yaml::from_str(&read(name)).unwrap_or_else(|e| panic!("examples/{name}: {e}"))
}

#[test]
fn every_example_parses_as_topology_and_director_config() {
    let mut seen = 0;
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let topology = parse(&name);
        assert!(!topology.nodes.is_empty(), "{name}: no nodes");
        // A topology file also reads as a standalone director's configuration.
        let director: DirectorConfig = lb_proto::yaml::from_str(&read(&name))
            .unwrap_or_else(|e| panic!("examples/{name} as DirectorConfig: {e}"));
        assert_eq!(director.director_groups, topology.director_groups, "{name}");
        assert_eq!(director.services, topology.services, "{name}");
        seen += 1;
    }
    assert_eq!(seen, 5, "one example per seed");
}

#[test]
fn seed_000_dns_over_dr() {
    let t = parse("seed-000-dns-dr.yaml");
    let svc = &t.services[0];
    assert_eq!((svc.vip.as_str(), svc.port), ("192.168.56.185", 53));
    assert_eq!(svc.protocol(), Protocol::Udp);
    assert_eq!(svc.forwarding(), Forwarding::Dr);
    assert_eq!(svc.scheduler, "wrr");
    let check = svc.health_check.as_ref().unwrap();
    assert!(
        matches!(check.kind, Some(Kind::Dns(ref d)) if d.name == "www.abc.local" && d.r#type == "A")
    );
    assert_eq!(check.interval.unwrap().seconds, 6);
    let vrrp = t.director_groups[0].vrrp.as_ref().unwrap();
    assert_eq!(vrrp.instances[0].vrid, 50);
    assert_eq!(vrrp.instances[0].priorities["ds2"], 99);
}

#[test]
fn seed_001_http_over_dr_with_tcp_check_and_password() {
    let t = parse("seed-001-http-dr.yaml");
    let instance = &t.director_groups[0].vrrp.as_ref().unwrap().instances[0];
    assert_eq!(instance.authentication.as_ref().unwrap().password, "1111");
    let svc = &t.services[0];
    assert_eq!(svc.scheduler, "rr");
    assert!(matches!(
        svc.health_check.as_ref().unwrap().kind,
        Some(Kind::Tcp(_))
    ));
    assert_eq!(
        svc.health_check.as_ref().unwrap().timeout.unwrap().seconds,
        3
    );
    assert_eq!(svc.real_servers.len(), 2);
}

#[test]
fn seed_002_active_active_has_swapped_priorities_and_sorry_server() {
    let t = parse("seed-002-active-active.yaml");
    let instances = &t.director_groups[0].vrrp.as_ref().unwrap().instances;
    assert_eq!(instances.len(), 2);
    assert_eq!(
        instances[0].priorities["director1"],
        instances[1].priorities["director2"]
    );
    assert_eq!(
        instances[0].priorities["director2"],
        instances[1].priorities["director1"]
    );
    assert_eq!(instances[1].label, "eth0:1");
    assert!(t.services.iter().all(|s| s.sorry_server.is_some()));
}

#[test]
fn seed_003_http_over_tun() {
    let t = parse("seed-003-http-tun.yaml");
    let svc = &t.services[0];
    assert_eq!(svc.forwarding(), Forwarding::Tun);
    let check = svc.health_check.as_ref().unwrap();
    assert_eq!(check.connect_port, 80);
    assert_eq!(check.delay_before_retry.unwrap().seconds, 3);
}

#[test]
fn seed_004_gateway_ping_is_a_tracked_script() {
    let t = parse("seed-004-gateway-track.yaml");
    let vrrp = t.director_groups[0].vrrp.as_ref().unwrap();
    assert_eq!(vrrp.scripts[0].command[0], "ping");
    assert_eq!(
        vrrp.instances[0].track_scripts[0].name,
        vrrp.scripts[0].name
    );
    assert_eq!(vrrp.instances[0].vips.len(), 3);
    assert!(t.director_groups[0].email.is_some());
}

#[test]
fn misspelt_field_in_an_example_names_its_path() {
    let text = read("seed-003-http-tun.yaml").replace("delayBeforeRetry:", "delayBeforeRetyr:");
    let err = lb_proto::yaml::from_str::<Topology>(&text).unwrap_err();
    assert_eq!(
        err.path, "services[0].healthCheck.delayBeforeRetyr",
        "{err}"
    );
    assert!(err.message.contains("unknown field"), "{err}");
    let text = read("seed-000-dns-dr.yaml").replace("advertInterval:", "advertInterva:");
    let err = lb_proto::yaml::from_str::<Topology>(&text).unwrap_err();
    assert_eq!(err.path, "directorGroups[0].vrrp.advertInterva", "{err}");
}

#[test]
fn wrong_type_in_an_example_names_its_path() {
    let text = read("seed-001-http-dr.yaml").replace("vrid: 51", "vrid: fifty-one");
    let err = lb_proto::yaml::from_str::<Topology>(&text).unwrap_err();
    assert_eq!(
        err.path, "directorGroups[0].vrrp.instances[0].vrid",
        "{err}"
    );
}
