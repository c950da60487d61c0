//! Planner tests: the seed topology through the planner with various
//! readiness, holds and drains; what each node must be told.

use super::*;
use lb_proto::v1::real_server::Target;
use proptest::prelude::*;

const SEED: &str = r#"
nodes:
  - {name: ds1, role: director,   address: 192.168.56.181}
  - {name: ds2, role: director,   address: 192.168.56.182}
  - {name: rs1, role: realserver, address: 192.168.56.183, interfaces: [eth1]}
  - {name: rs2, role: realserver, address: 192.168.56.184}
  - {name: rs3, role: realserver, address: 192.168.56.187}
directorGroups:
  - name: dns-lb
    interface: eth2
    vrrp:
      instances:
        - name: VI_1
          vrid: 50
          vips: [192.168.56.185/24]
          priorities: {ds1: 100, ds2: 99}
services:
  - name: dns
    directorGroup: dns-lb
    vip: 192.168.56.185
    port: 53
    protocol: udp
    scheduler: wrr
    forwarding: dr
    realServers:
      - {node: rs1, port: 53, weight: 3}
      - {node: rs2, port: 53}
      - {address: 192.168.56.190, port: 53, weight: 2}
"#;

const VIP: &str = "192.168.56.185";

fn seed() -> Topology {
    lb_proto::yaml::from_str(SEED).unwrap()
}

fn ready(nodes: &[&str]) -> Readiness {
    nodes
        .iter()
        .map(|n| (n.to_string(), [VIP.to_string()].into()))
        .collect()
}

fn run(t: &Topology, readiness: &Readiness) -> BTreeMap<String, DesiredState> {
    plan(Input {
        topology: t,
        revision: 7,
        epoch: 2,
        readiness,
        holds: &Holds::new(),
        previous: &|_| None,
    })
}

fn director_weights(state: &DesiredState) -> Vec<(String, u32)> {
    let Some(desired_state::Config::Director(d)) = &state.config else {
        panic!("not a director state");
    };
    d.services
        .iter()
        .flat_map(|s| s.real_servers.iter())
        .map(|rs| (topology::real_server_label(rs), rs.weight.unwrap()))
        .collect()
}

fn rs_vips(state: &DesiredState) -> Vec<String> {
    let Some(desired_state::Config::Realserver(r)) = &state.config else {
        panic!("not a real-server state");
    };
    r.vips.iter().map(|v| v.address.clone()).collect()
}

#[test]
fn one_state_per_node_with_revision_and_epoch() {
    let plans = run(&seed(), &Readiness::new());
    assert_eq!(
        plans.keys().cloned().collect::<Vec<_>>(),
        vec!["ds1", "ds2", "rs1", "rs2", "rs3"]
    );
    for (name, state) in &plans {
        assert_eq!(&state.node, name);
        assert_eq!((state.revision, state.epoch), (7, 2));
    }
}

#[test]
fn director_gets_its_group_services_and_the_nodes_they_name() {
    let plans = run(&seed(), &Readiness::new());
    let Some(desired_state::Config::Director(d)) = &plans["ds1"].config else {
        panic!()
    };
    assert_eq!(d.node, "ds1");
    assert_eq!(d.director_groups.len(), 1);
    assert_eq!(d.services.len(), 1);
    let names: Vec<&str> = d.nodes.iter().map(|n| n.name.as_str()).collect();
    // rs3 serves nothing of this group, so it is not there.
    assert_eq!(names, vec!["ds1", "ds2", "rs1", "rs2"]);
}

#[test]
fn unready_real_servers_have_weight_zero() {
    let plans = run(&seed(), &Readiness::new());
    // Node real servers wait for readiness; a plain address is not gated.
    assert_eq!(
        director_weights(&plans["ds1"]),
        vec![
            ("rs1".into(), 0),
            ("rs2".into(), 0),
            ("192.168.56.190".into(), 2)
        ]
    );
}

#[test]
fn ready_real_servers_get_their_weight() {
    let plans = run(&seed(), &ready(&["rs1"]));
    assert_eq!(
        director_weights(&plans["ds2"]),
        vec![
            ("rs1".into(), 3),
            ("rs2".into(), 0),
            ("192.168.56.190".into(), 2)
        ]
    );
    // The default weight is 1.
    let plans = run(&seed(), &ready(&["rs1", "rs2"]));
    assert_eq!(director_weights(&plans["ds1"])[1], ("rs2".into(), 1));
}

#[test]
fn readiness_of_another_vip_does_not_count() {
    let mut readiness = Readiness::new();
    readiness.insert("rs1".into(), ["192.168.56.186".to_string()].into());
    let plans = run(&seed(), &readiness);
    assert_eq!(director_weights(&plans["ds1"])[0], ("rs1".into(), 0));
}

#[test]
fn drained_real_servers_have_weight_zero() {
    let mut t = seed();
    t.services[0].real_servers[0].drain = true;
    let plans = run(&t, &ready(&["rs1", "rs2"]));
    assert_eq!(director_weights(&plans["ds1"])[0], ("rs1".into(), 0));
}

#[test]
fn real_servers_get_the_vips_of_their_services() {
    let plans = run(&seed(), &Readiness::new());
    let Some(desired_state::Config::Realserver(r)) = &plans["rs1"].config else {
        panic!()
    };
    assert_eq!(r.vips.len(), 1);
    assert_eq!(r.vips[0].address, VIP);
    assert_eq!(r.vips[0].forwarding(), lb_proto::v1::Forwarding::Dr);
    assert_eq!(r.vips[0].services, vec!["dns".to_string()]);
    assert_eq!(r.interfaces, vec!["eth1".to_string()]);
    assert!(rs_vips(&plans["rs3"]).is_empty());
}

#[test]
fn removed_real_server_keeps_its_vip_while_a_director_holds_it() {
    let old = seed();
    let before = run(&old, &ready(&["rs1", "rs2"]));
    let mut new = seed();
    new.services[0].real_servers.remove(1); // rs2 leaves
    // Phase 1: ds1 and ds2 still run the old state.
    let mut holds = Holds::new();
    add_holds(&mut holds, &before["ds1"]);
    add_holds(&mut holds, &before["ds2"]);
    let readiness = ready(&["rs1", "rs2"]);
    let plans = plan(Input {
        topology: &new,
        revision: 8,
        epoch: 2,
        readiness: &readiness,
        holds: &holds,
        previous: &|n| before.get(n),
    });
    // Directors drop rs2 at once ...
    assert_eq!(
        director_weights(&plans["ds1"]),
        vec![("rs1".into(), 3), ("192.168.56.190".into(), 2)]
    );
    // ... while rs2 keeps the VIP, settings and all.
    let Some(desired_state::Config::Realserver(kept)) = &plans["rs2"].config else {
        panic!()
    };
    let Some(desired_state::Config::Realserver(was)) = &before["rs2"].config else {
        panic!()
    };
    assert_eq!(kept.vips, was.vips);
    // Phase 2: ds1 applied the new state, ds2 not yet: still held.
    let mut holds = Holds::new();
    add_holds(&mut holds, &plans["ds1"]);
    add_holds(&mut holds, &before["ds2"]);
    let plans2 = plan(Input {
        topology: &new,
        revision: 8,
        epoch: 2,
        readiness: &readiness,
        holds: &holds,
        previous: &|n| before.get(n),
    });
    assert_eq!(rs_vips(&plans2["rs2"]), vec![VIP.to_string()]);
    // Both directors applied it: the VIP goes.
    let mut holds = Holds::new();
    add_holds(&mut holds, &plans["ds1"]);
    add_holds(&mut holds, &plans["ds2"]);
    let plans3 = plan(Input {
        topology: &new,
        revision: 8,
        epoch: 2,
        readiness: &readiness,
        holds: &holds,
        previous: &|n| before.get(n),
    });
    assert!(rs_vips(&plans3["rs2"]).is_empty());
}

#[test]
fn firewall_mark_services_use_the_group_vips() {
    let mut t = seed();
    t.services[0].vip.clear();
    t.services[0].fwmark = 5;
    let plans = run(&t, &ready(&["rs1"]));
    assert_eq!(rs_vips(&plans["rs1"]), vec![VIP.to_string()]);
    assert_eq!(director_weights(&plans["ds1"])[0], ("rs1".into(), 3));
}

#[test]
fn diff_is_empty_without_change_and_names_the_change() {
    let a = run(&seed(), &Readiness::new());
    let b = run(&seed(), &ready(&["rs1"]));
    assert_eq!(diff(Some(&a["ds1"]), &a["ds1"]), "");
    // Another revision with the same content is no change.
    let mut later = a["ds1"].clone();
    later.revision = 99;
    assert_eq!(diff(Some(&a["ds1"]), &later), "");
    let d = diff(Some(&a["ds1"]), &b["ds1"]);
    assert_eq!(
        d,
        "~ service dns\n    - node: rs1\n      port: 53\n  -   weight: 0\n  +   weight: 3\n    - node: rs2\n      port: 53\n"
    );
    // A new node: every line added.
    let first = diff(None, &a["rs1"]);
    assert!(first.starts_with("+ interfaces\n"), "{first}");
    assert!(
        first.contains("+ vip 192.168.56.185\n  + address: 192.168.56.185\n"),
        "{first}"
    );
}

#[test]
fn names_resolve_in_director_config() {
    let t = seed();
    let plans = run(&t, &Readiness::new());
    let Some(desired_state::Config::Director(d)) = &plans["ds1"].config else {
        panic!()
    };
    let rs = &d.services[0].real_servers[0];
    assert_eq!(rs.target, Some(Target::Node("rs1".into())));
    let view = Topology {
        nodes: d.nodes.clone(),
        director_groups: d.director_groups.clone(),
        services: d.services.clone(),
    };
    assert_eq!(
        topology::real_server_address(&view, &d.services[0], rs),
        Some("192.168.56.183".parse().unwrap())
    );
}

proptest! {
    /// The readiness gate: whatever subset of real servers reported ready,
    /// no real-server node that did not appears with weight above zero in any
    /// director's state.
    #[test]
    fn unready_never_weighted(ready_mask in 0u8..8, weights in proptest::collection::vec(0u32..5, 3)) {
        let mut t = seed();
        for (rs, w) in t.services[0].real_servers.iter_mut().zip(&weights) {
            rs.weight = Some(*w);
        }
        t.services[0].real_servers[2].target = Some(Target::Node("rs3".into()));
        let names = ["rs1", "rs2", "rs3"];
        let ready_nodes: Vec<&str> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| ready_mask & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect();
        let plans = run(&t, &ready(&ready_nodes));
        for d in ["ds1", "ds2"] {
            for (name, weight) in director_weights(&plans[d]) {
                if !ready_nodes.contains(&name.as_str()) {
                    prop_assert_eq!(weight, 0, "{} on {}", name, d);
                } else {
                    let i = names.iter().position(|n| *n == name).unwrap();
                    prop_assert_eq!(weight, weights[i]);
                }
            }
        }
    }
}
