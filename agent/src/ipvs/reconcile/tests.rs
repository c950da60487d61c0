//! Laws of the reconciler, as properties over small random tables (small
//! key spaces so desired, current and owned overlap often), and examples.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;

use super::*;
use crate::ipvs::model::{Family, Forwarding, Protocol, ServiceFlags, TunnelType};

fn arb_service_key() -> impl Strategy<Value = ServiceKey> {
    prop_oneof![
        (
            0u8..3,
            prop_oneof![Just(80u16), Just(443)],
            prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp)]
        )
            .prop_map(|(a, port, protocol)| ServiceKey::Addr {
                protocol,
                addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, a)),
                port,
            }),
        (1u32..3).prop_map(|mark| ServiceKey::Fwmark {
            family: Family::Inet,
            mark
        }),
    ]
}

fn arb_dest() -> impl Strategy<Value = Destination> {
    (
        0u8..4,
        prop_oneof![Just(80u16), Just(8080)],
        prop_oneof![
            Just(Forwarding::Route),
            Just(Forwarding::Masq),
            Just(Forwarding::Tunnel)
        ],
        0u32..3,
        0u32..2,
    )
        .prop_map(|(a, port, forwarding, weight, u)| {
            let mut d = Destination::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, a)), port, forwarding);
            d.weight = weight;
            d.u_threshold = u * 100;
            d
        })
}

fn arb_state(key: ServiceKey) -> impl Strategy<Value = ServiceState> {
    (
        prop_oneof![Just("rr"), Just("wrr"), Just("sh")],
        prop_oneof![Just(0u32), Just(ServiceFlags::PERSISTENT)],
        0u32..2,
        proptest::collection::vec(arb_dest(), 0..4),
    )
        .prop_map(move |(sched, flags, t, dests)| {
            let mut service = Service::new(key, sched);
            service.flags = ServiceFlags(flags);
            service.timeout = t * 300;
            ServiceState {
                service,
                dests: dests.into_iter().map(|d| (d.key, d)).collect(),
            }
        })
}

fn arb_table() -> impl Strategy<Value = Table> {
    proptest::collection::vec(arb_service_key(), 0..6).prop_flat_map(|keys| {
        keys.into_iter()
            .map(|k| arb_state(k).prop_map(move |s| (k, s)))
            .collect::<Vec<_>>()
            .prop_map(|v| v.into_iter().collect::<Table>())
    })
}

fn arb_owned() -> impl Strategy<Value = BTreeSet<ServiceKey>> {
    proptest::collection::btree_set(arb_service_key(), 0..6)
}

proptest! {
    /// Applying the plan makes every desired service exactly as desired,
    /// removes owned services that are not desired, and leaves foreign
    /// services untouched; a second plan is then empty.
    #[test]
    fn plan_converges(desired in arb_table(), current in arb_table(), owned in arb_owned()) {
        let p = plan(&desired, &current, &owned);
        let mut after = current.clone();
        apply(&mut after, &p.ops);
        for (k, want) in &desired {
            prop_assert_eq!(after.get(k), Some(want));
        }
        for (k, cur) in &current {
            if desired.contains_key(k) { continue; }
            if owned.contains(k) {
                prop_assert!(!after.contains_key(k), "owned {k} not deleted");
            } else {
                prop_assert_eq!(after.get(k), Some(cur), "foreign {} changed", k);
                prop_assert!(p.foreign.contains(k));
            }
        }
        prop_assert!(after.keys().all(|k| desired.contains_key(k) || current.contains_key(k)));
        // No operation touches a foreign service.
        for op in &p.ops {
            let k = op.service();
            prop_assert!(desired.contains_key(&k) || owned.contains(&k), "op on foreign {k}");
        }
        // Converged: the next plan (with the new owned set) does nothing.
        let again = plan(&desired, &after, &owned_after(&desired));
        prop_assert!(again.ops.is_empty(), "{:?}", again.ops);
    }

    /// Equal desired and current: no operation, whatever is owned.
    #[test]
    fn equal_tables_give_no_ops(t in arb_table(), owned in arb_owned()) {
        let p = plan(&t, &t, &owned);
        prop_assert!(p.ops.is_empty());
    }

    /// A weight change of one destination is exactly one SetDest.
    #[test]
    fn weight_change_is_one_set(t in arb_table(), pick in any::<prop::sample::Index>(), w in 3u32..100) {
        let with_dests: Vec<_> = t.iter().filter(|(_, s)| !s.dests.is_empty()).map(|(k, _)| *k).collect();
        prop_assume!(!with_dests.is_empty());
        let key = with_dests[pick.index(with_dests.len())];
        let mut desired = t.clone();
        let st = desired.get_mut(&key).unwrap();
        let dk = *st.dests.keys().next().unwrap();
        st.dests.get_mut(&dk).unwrap().weight = w;
        let want = *st.dests.get(&dk).unwrap();
        let p = plan(&desired, &t, &owned_after(&t));
        prop_assert_eq!(p.ops, vec![IpvsOp::SetDest(key, want)]);
    }

    /// Each operation is needed: deletes are of things that exist, adds of
    /// things that do not, and no key is touched twice by the same kind.
    #[test]
    fn plan_is_minimal(desired in arb_table(), current in arb_table(), owned in arb_owned()) {
        let p = plan(&desired, &current, &owned);
        let mut seen = BTreeSet::new();
        for op in &p.ops {
            prop_assert!(seen.insert(format!("{op:?}")), "duplicate {op:?}");
            match op {
                IpvsOp::AddService(s) => prop_assert!(!current.contains_key(&s.key)),
                IpvsOp::DelService(k) => prop_assert!(current.contains_key(k) && !desired.contains_key(k)),
                IpvsOp::SetService(s) => prop_assert!(current[&s.key].service != s.clone()),
                IpvsOp::DelDest(k, d) => prop_assert!(current[k].dests.contains_key(d)),
                IpvsOp::SetDest(k, d) => prop_assert!(current[k].dests[&d.key] != *d),
                IpvsOp::AddDest(k, d) => prop_assert!(current.get(k).is_none_or(|s| !s.dests.contains_key(&d.key))),
            }
        }
    }
}

fn key80() -> ServiceKey {
    ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        port: 80,
    }
}

fn state(svc: Service, dests: &[Destination]) -> ServiceState {
    ServiceState {
        service: svc,
        dests: dests.iter().map(|d| (d.key, *d)).collect(),
    }
}

/// In: a scheduler change and a forwarding change. Out: one SetService and
/// one SetDest, no delete.
#[test]
fn option_changes_are_sets() {
    let d = Destination::new(
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        80,
        Forwarding::Route,
    );
    let cur: Table = [(key80(), state(Service::new(key80(), "rr"), &[d]))].into();
    let mut d2 = d;
    d2.forwarding = Forwarding::Tunnel;
    d2.tun_type = TunnelType::Gre;
    let mut svc = Service::new(key80(), "mh");
    svc.flags = ServiceFlags(ServiceFlags::MH_PORT);
    let want: Table = [(key80(), state(svc.clone(), &[d2]))].into();
    let p = plan(&want, &cur, &owned_after(&cur));
    assert_eq!(
        p.ops,
        vec![IpvsOp::SetService(svc), IpvsOp::SetDest(key80(), d2)]
    );
    assert!(p.foreign.is_empty() && p.adopted.is_empty());
}

/// In: the kernel holds a foreign service and an adopted one; lb owns a
/// stale one. Out: the stale one deleted, foreign reported, adopted reported.
#[test]
fn ownership_is_reported() {
    let foreign = ServiceKey::Fwmark {
        family: Family::Inet,
        mark: 9,
    };
    let stale = ServiceKey::Fwmark {
        family: Family::Inet,
        mark: 8,
    };
    let cur: Table = [
        (foreign, state(Service::new(foreign, "rr"), &[])),
        (stale, state(Service::new(stale, "rr"), &[])),
        (key80(), state(Service::new(key80(), "rr"), &[])),
    ]
    .into();
    let want: Table = [(key80(), state(Service::new(key80(), "rr"), &[]))].into();
    let p = plan(&want, &cur, &[stale].into());
    assert_eq!(p.ops, vec![IpvsOp::DelService(stale)]);
    assert_eq!(p.foreign, vec![foreign]);
    assert_eq!(p.adopted, vec![key80()]);
    assert_eq!(
        owned_during(&want, &[stale].into()),
        [stale, key80()].into()
    );
}
