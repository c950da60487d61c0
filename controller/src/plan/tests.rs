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
        "~ service dns\n    - node: rs1\n      port: 53\n  -   weight: 0\n  +   weight: 3\n    scheduler: wrr\n    vip: 192.168.56.185\n"
    );
    // Of a service only the real servers that change are shown.
    assert!(!d.contains("rs2"), "{d}");
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

/// Random topologies over a small universe of names, so that changes hit
/// objects that others refer to: nodes n0..n5, groups g0..g2 and services
/// s0..s3, which name nodes and groups that may or may not exist.
mod incremental {
    use super::*;
    use lb_proto::v1::{AddressFamily, DirectorGroup, Forwarding, RealServer, Vrrp, VrrpInstance};
    use proptest::collection::vec;
    use proptest::option;

    const NODES: usize = 6;
    const GROUPS: usize = 3;
    const SERVICES: usize = 4;
    const VIPS: [&str; 3] = ["10.9.0.1", "10.9.0.2", "fd09::1"];

    fn arb_node(i: usize) -> impl Strategy<Value = Node> {
        (0u8..5, any::<bool>(), any::<bool>()).prop_map(move |(role, v6, interfaces)| Node {
            name: format!("n{i}"),
            role: match role {
                0 | 1 => NodeRole::Director,
                4 => NodeRole::Unspecified,
                _ => NodeRole::Realserver,
            } as i32,
            address: if v6 {
                format!("fd00::{i}")
            } else {
                format!("10.0.0.{i}")
            },
            interfaces: if interfaces {
                vec!["eth1".to_string()]
            } else {
                Vec::new()
            },
            ..Default::default()
        })
    }

    fn arb_group(i: usize) -> impl Strategy<Value = DirectorGroup> {
        (
            vec(0..NODES + 1, 0..3),
            vec((0..NODES + 1, 1u32..255), 0..3),
            vec(0..VIPS.len(), 0..3),
            any::<bool>(),
        )
            .prop_map(move |(directors, priorities, vips, eth0)| DirectorGroup {
                name: format!("g{i}"),
                interface: if eth0 { "eth0" } else { "eth2" }.to_string(),
                directors: directors.iter().map(|d| format!("n{d}")).collect(),
                vrrp: Some(Vrrp {
                    instances: vec![VrrpInstance {
                        name: "VI_1".to_string(),
                        vrid: 50 + i as u32,
                        vips: vips.iter().map(|v| format!("{}/24", VIPS[*v])).collect(),
                        priorities: priorities
                            .iter()
                            .map(|(n, p)| (format!("n{n}"), *p))
                            .collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            })
    }

    fn arb_real_server() -> impl Strategy<Value = RealServer> {
        (
            prop_oneof![
                4 => (0..NODES + 1).prop_map(|n| Target::Node(format!("n{n}"))),
                1 => Just(Target::Address("10.0.1.9".to_string())),
            ],
            option::of(0u32..3),
            any::<bool>(),
            prop_oneof![Just(0u32), Just(80)],
        )
            .prop_map(|(target, weight, drain, port)| RealServer {
                target: Some(target),
                weight,
                drain,
                port,
                ..Default::default()
            })
    }

    fn arb_service(i: usize) -> impl Strategy<Value = Service> {
        (
            0..GROUPS + 1,
            option::of(0..VIPS.len()),
            any::<bool>(),
            0i32..4,
            prop_oneof![Just(53u32), Just(80)],
            vec(arb_real_server(), 0..4),
        )
            .prop_map(
                move |(group, vip, v6, forwarding, port, real_servers)| Service {
                    name: format!("s{i}"),
                    director_group: format!("g{group}"),
                    vip: vip.map(|v| VIPS[v].to_string()).unwrap_or_default(),
                    fwmark: if vip.is_none() { 1 + i as u32 } else { 0 },
                    family: if v6 {
                        AddressFamily::Inet6
                    } else {
                        AddressFamily::Inet
                    } as i32,
                    forwarding: Forwarding::try_from(forwarding).unwrap_or_default().into(),
                    port,
                    real_servers,
                    ..Default::default()
                },
            )
    }

    fn arb_topology() -> impl Strategy<Value = Topology> {
        let nodes: Vec<_> = (0..NODES)
            .map(|i| option::weighted(0.8, arb_node(i)))
            .collect();
        let groups: Vec<_> = (0..GROUPS)
            .map(|i| option::weighted(0.8, arb_group(i)))
            .collect();
        let services: Vec<_> = (0..SERVICES)
            .map(|i| option::weighted(0.8, arb_service(i)))
            .collect();
        (
            nodes
                .prop_map(|v| v.into_iter().flatten().collect::<Vec<_>>())
                .prop_shuffle(),
            groups
                .prop_map(|v| v.into_iter().flatten().collect::<Vec<_>>())
                .prop_shuffle(),
            services
                .prop_map(|v| v.into_iter().flatten().collect::<Vec<_>>())
                .prop_shuffle(),
        )
            .prop_map(|(nodes, director_groups, services)| Topology {
                nodes,
                director_groups,
                services,
            })
    }

    /// One change to a topology, as applies make them: an object created,
    /// replaced in place or deleted; or (as a whole-topology apply may) the
    /// nodes in another order.
    #[derive(Debug, Clone)]
    enum Change {
        Node(usize, Option<Node>),
        Group(usize, Option<DirectorGroup>),
        Service(usize, Option<Service>),
        ReverseNodes,
    }

    fn arb_change() -> impl Strategy<Value = Change> {
        prop_oneof![
            3 => (0..NODES).prop_flat_map(|i| option::weighted(0.8, arb_node(i)).prop_map(move |n| Change::Node(i, n))),
            2 => (0..GROUPS).prop_flat_map(|i| option::weighted(0.8, arb_group(i)).prop_map(move |g| Change::Group(i, g))),
            4 => (0..SERVICES).prop_flat_map(|i| option::weighted(0.8, arb_service(i)).prop_map(move |s| Change::Service(i, s))),
            1 => Just(Change::ReverseNodes),
        ]
    }

    fn upsert<T>(items: &mut Vec<T>, name: &str, item: Option<T>, name_of: impl Fn(&T) -> &str) {
        let at = items.iter().position(|x| name_of(x) == name);
        match (at, item) {
            (Some(i), Some(item)) => items[i] = item,
            (None, Some(item)) => items.push(item),
            (Some(i), None) => {
                items.remove(i);
            }
            (None, None) => {}
        }
    }

    fn change(t: &mut Topology, c: Change) {
        match c {
            Change::Node(i, n) => upsert(&mut t.nodes, &format!("n{i}"), n, |x| &x.name),
            Change::Group(i, g) => upsert(&mut t.director_groups, &format!("g{i}"), g, |x| &x.name),
            Change::Service(i, s) => upsert(&mut t.services, &format!("s{i}"), s, |x| &x.name),
            Change::ReverseNodes => t.nodes.reverse(),
        }
    }

    /// VIPs by node, for readiness and holds.
    fn arb_vips_by_node() -> impl Strategy<Value = BTreeMap<String, BTreeSet<String>>> {
        vec(option::of(vec(0..VIPS.len(), 0..3)), NODES + 1).prop_map(|by_node| {
            by_node
                .into_iter()
                .enumerate()
                .filter_map(|(n, vips)| {
                    let vips = vips?.into_iter().map(|v| VIPS[v].to_string()).collect();
                    Some((format!("n{n}"), vips))
                })
                .collect()
        })
    }

    /// One step of a fleet: changes to the topology, the readiness and
    /// holds now, whether the previous states are what the last plan said
    /// (or nothing was ever pushed), and the epoch.
    type Step = (Vec<Change>, Option<Readiness>, Option<Holds>, bool, u64);

    fn arb_step() -> impl Strategy<Value = Step> {
        (
            vec(arb_change(), 0..4),
            option::of(arb_vips_by_node()),
            option::of(arb_vips_by_node()),
            any::<bool>(),
            1u64..3,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Planning again only the nodes whose inputs changed gives exactly
        /// the plan made from scratch, after every step of random changes to
        /// the topology, the readiness, the holds and the previous states.
        #[test]
        fn incremental_equals_from_scratch(
            start in arb_topology(),
            readiness in arb_vips_by_node(),
            holds in arb_vips_by_node(),
            steps in vec(arb_step(), 1..5),
        ) {
            let mut topology = start;
            let (mut readiness, mut holds) = (readiness, holds);
            let none: BTreeMap<String, DesiredState> = BTreeMap::new();
            let previous = |n: &str| none.get(n);
            let mut planned = plan_all(Input {
                topology: &topology,
                revision: 1,
                epoch: 1,
                readiness: &readiness,
                holds: &holds,
                previous: &previous,
            });
            for (revision, (changes, new_readiness, new_holds, pushed, epoch)) in
                (2..).zip(steps)
            {
                for c in changes {
                    change(&mut topology, c);
                }
                if let Some(r) = new_readiness {
                    readiness = r;
                }
                if let Some(h) = new_holds {
                    holds = h;
                }
                let told = if pushed { planned.states.clone() } else { BTreeMap::new() };
                let previous = |n: &str| told.get(n);
                let input = Input {
                    topology: &topology,
                    revision,
                    epoch,
                    readiness: &readiness,
                    holds: &holds,
                    previous: &previous,
                };
                let scratch = plan_all(input);
                let changes = replan_changes(&planned, input);
                for (name, state) in &scratch.states {
                    prop_assert_eq!(changes.state(&planned, name).map(|s| &s.config), Some(&state.config), "{}", name);
                }
                planned = replan(planned, input);
                prop_assert_eq!(&planned, &scratch);
            }
        }
    }

    /// A change of one real server's weight plans again the directors of
    /// its service and nothing else.
    #[test]
    fn a_weight_change_replans_only_the_directors() {
        let before = seed();
        let mut after = seed();
        after.services[0].real_servers[0].weight = Some(5);
        let readiness = ready(&["rs1", "rs2"]);
        let holds = Holds::new();
        let previous = |_: &str| None;
        let input = |t| Input {
            topology: t,
            revision: 8,
            epoch: 2,
            readiness: &readiness,
            holds: &holds,
            previous: &previous,
        };
        let planned = plan_all(input(&before));
        let changes = replan_changes(&planned, input(&after));
        assert!(!changes.whole);
        assert_eq!(
            changes.states.keys().collect::<Vec<_>>(),
            vec!["ds1", "ds2"]
        );
        // Another forwarding method reaches its real servers too.
        let mut moved = after.clone();
        moved.services[0].forwarding = lb_proto::v1::Forwarding::Tun as i32;
        let changes = replan_changes(&planned, input(&moved));
        assert_eq!(
            changes.states.keys().collect::<Vec<_>>(),
            vec!["ds1", "ds2", "rs1", "rs2"]
        );
    }
}
