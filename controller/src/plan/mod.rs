//! The planner: topology and readiness in, one `DesiredState` per node out.
//! Pure: no I/O, no clock.
//!
//! Directors get a `DirectorConfig`: the director groups they belong to, the
//! services of those groups, and the nodes those name (agents resolve real
//! server node names to addresses from `nodes`, exactly as a standalone agent
//! does with a topology file). Real servers get a `RealServerConfig`: the VIPs
//! of the services they serve and how to hold them.
//!
//! The readiness gate keeps DR and TUN pairs consistent:
//!
//! - a real server node enters a director's table with weight above zero only
//!   once its agent has reported the service's VIP ready; until then it is
//!   there with weight 0;
//! - a real server leaves every director before its VIP is removed from it:
//!   a VIP that left the topology stays in the real server's config while any
//!   director's applied state still lists that real server for that VIP.
//!
//! Planning is incremental: a [`Planned`] keeps the inputs it was made from,
//! and [`replan`] computes again only the nodes whose inputs differ (the
//! directors of touched groups and services, the real servers of touched
//! services, the nodes touched objects name), keeping every other node's
//! state. The result is always the plan from scratch, which a property test
//! checks on random topologies and changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use lb_proto::v1::{
    DesiredState, DirectorConfig, Node, NodeRole, RealServer, RealServerConfig, RealServerVip,
    Service, Topology, desired_state, real_server,
};

use crate::store::Readiness;
use crate::topology::{self, Prefix};

/// VIPs, by real-server node, that some director's applied state still
/// forwards to that node.
pub type Holds = BTreeMap<String, BTreeSet<String>>;

/// What the planner reads.
#[derive(Clone, Copy)]
pub struct Input<'a> {
    /// The topology.
    pub topology: &'a Topology,
    /// Its revision.
    pub revision: u64,
    /// The controller epoch.
    pub epoch: u64,
    /// VIPs each real server has reported ready.
    pub readiness: &'a Readiness,
    /// Real servers that directors still forward to, by VIP (see [`holds`]).
    pub holds: &'a Holds,
    /// The state last pushed to a node: where a held VIP's settings come
    /// from once it left the topology. Looked up only for such VIPs.
    pub previous: &'a dyn Fn(&str) -> Option<&'a DesiredState>,
}

/// One desired state per node of the topology, by node name.
pub fn plan(input: Input<'_>) -> BTreeMap<String, DesiredState> {
    plan_all(input).states
}

/// A plan, with what it was made from: the base of the next plan, which
/// then computes again only the nodes whose inputs changed.
///
/// Names of nodes, director groups and services are unique within each
/// kind (validation makes sure of it); a topology where they are not is
/// planned from scratch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Planned {
    /// One desired state per node of the topology, by node name.
    pub states: BTreeMap<String, DesiredState>,
    basis: Basis,
}

/// The inputs a plan was made from.
#[derive(Debug, Clone, Default, PartialEq)]
struct Basis {
    topology: Topology,
    readiness: Readiness,
    holds: Holds,
    /// For each real server that keeps a held VIP which left its services:
    /// the previous state the VIP's settings came from.
    kept_from: BTreeMap<String, Option<DesiredState>>,
}

/// A plan from scratch.
pub fn plan_all(input: Input<'_>) -> Planned {
    let served = served(input.topology);
    let mut states = BTreeMap::new();
    let mut kept_from = BTreeMap::new();
    for node in &input.topology.nodes {
        let (state, kept) = plan_node(input, &served, node);
        if let Some(state) = state {
            states.insert(node.name.clone(), state);
        }
        if let Some(kept) = kept {
            kept_from.insert(node.name.clone(), kept);
        }
    }
    Planned {
        states,
        basis: Basis {
            topology: input.topology.clone(),
            readiness: input.readiness.clone(),
            holds: input.holds.clone(),
            kept_from,
        },
    }
}

/// What an incremental plan computes again.
#[derive(Debug, Clone, PartialEq)]
pub struct Replanned {
    /// Every node was planned again: the base was of no use.
    pub whole: bool,
    /// The state of each node planned again (`None`: the node has none any
    /// more); any other node keeps its previous state, with the input's
    /// revision and epoch.
    pub states: BTreeMap<String, Option<DesiredState>>,
    kept_from: BTreeMap<String, Option<Option<DesiredState>>>,
}

impl Replanned {
    /// The state of `node` in the plan this makes of `previous`, with the
    /// revision and epoch of the base where it is carried over.
    pub fn state<'a>(&'a self, previous: &'a Planned, node: &str) -> Option<&'a DesiredState> {
        match self.states.get(node) {
            Some(state) => state.as_ref(),
            None if self.whole => None,
            None => previous.states.get(node),
        }
    }
}

/// The states of the nodes whose inputs differ from `previous`'s, planned
/// for `input`: everything the plan of `input` does not share with
/// `previous`. [`replan`] applies it.
pub fn replan_changes(previous: &Planned, input: Input<'_>) -> Replanned {
    let Some(affected) = affected(previous, input) else {
        let all = plan_all(input);
        return Replanned {
            whole: true,
            states: all
                .states
                .into_iter()
                .map(|(name, state)| (name, Some(state)))
                .collect(),
            kept_from: all
                .basis
                .kept_from
                .into_iter()
                .map(|(name, kept)| (name, Some(kept)))
                .collect(),
        };
    };
    let t = input.topology;
    let served = served(t);
    let nodes: HashMap<&str, &Node> = t.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut states = BTreeMap::new();
    let mut kept_from = BTreeMap::new();
    for name in affected {
        let (state, kept) = match nodes.get(name.as_str()) {
            Some(node) => plan_node(input, &served, node),
            None => (None, None),
        };
        kept_from.insert(name.clone(), kept);
        states.insert(name, state);
    }
    Replanned {
        whole: false,
        states,
        kept_from,
    }
}

/// The plan of `input`, computing again only the nodes whose inputs differ
/// from those `previous` was made from; equal to [`plan_all`] of `input`.
pub fn replan(previous: Planned, input: Input<'_>) -> Planned {
    let changes = replan_changes(&previous, input);
    apply_changes(previous, changes, input)
}

/// `previous` with `changes` (made by [`replan_changes`] from it and `input`).
pub fn apply_changes(previous: Planned, changes: Replanned, input: Input<'_>) -> Planned {
    let Planned { mut states, basis } = previous;
    let Basis {
        topology,
        mut kept_from,
        ..
    } = basis;
    if changes.whole {
        states.clear();
        kept_from.clear();
    }
    for (name, state) in changes.states {
        match state {
            Some(state) => {
                states.insert(name, state);
            }
            None => {
                states.remove(&name);
            }
        }
    }
    for (name, kept) in changes.kept_from {
        match kept {
            Some(kept) => {
                kept_from.insert(name, kept);
            }
            None => {
                kept_from.remove(&name);
            }
        }
    }
    for state in states.values_mut() {
        state.revision = input.revision;
        state.epoch = input.epoch;
    }
    let topology = if topology == *input.topology {
        topology
    } else {
        input.topology.clone()
    };
    Planned {
        states,
        basis: Basis {
            topology,
            readiness: input.readiness.clone(),
            holds: input.holds.clone(),
            kept_from,
        },
    }
}

/// Services by real-server node.
fn served(t: &Topology) -> BTreeMap<&str, Vec<&Service>> {
    let mut served: BTreeMap<&str, Vec<&Service>> = BTreeMap::new();
    for s in &t.services {
        let mut nodes: Vec<&str> = s
            .real_servers
            .iter()
            .filter_map(topology::real_server_node)
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        for n in nodes {
            served.entry(n).or_default().push(s);
        }
    }
    served
}

/// One node's state (none for a node without a role), and for a real
/// server that keeps a held VIP, the previous state it was kept from.
#[allow(clippy::type_complexity)]
fn plan_node(
    input: Input<'_>,
    served: &BTreeMap<&str, Vec<&Service>>,
    node: &Node,
) -> (Option<DesiredState>, Option<Option<DesiredState>>) {
    let (config, kept) = match node.role() {
        NodeRole::Director => (desired_state::Config::Director(director(input, node)), None),
        NodeRole::Realserver => {
            let services = served
                .get(node.name.as_str())
                .map_or(&[][..], |v| v.as_slice());
            let (config, kept) = realserver(input, node, services);
            (desired_state::Config::Realserver(config), kept)
        }
        NodeRole::Unspecified => return (None, None),
    };
    let state = DesiredState {
        node: node.name.clone(),
        revision: input.revision,
        epoch: input.epoch,
        config: Some(config),
    };
    (Some(state), kept)
}

/// The nodes whose state may differ between `previous` and the plan of
/// `input`; `None` when the topologies cannot be compared object by object
/// (a name used twice, or objects in another order).
fn affected(previous: &Planned, input: Input<'_>) -> Option<BTreeSet<String>> {
    let basis = &previous.basis;
    let (old, new) = (&basis.topology, input.topology);
    let mut out = BTreeSet::new();
    if old != new {
        let nodes = changed(&old.nodes, &new.nodes, |n| &n.name)?;
        let groups = changed(&old.director_groups, &new.director_groups, |g| &g.name)?;
        let services = changed(&old.services, &new.services, |s| &s.name)?;
        fn view<'a>(t: &'a Topology, name: &str) -> Option<RealServerView<'a>> {
            t.services
                .iter()
                .find(|s| s.name == name)
                .map(real_server_view)
        }
        let served: BTreeSet<&str> = services
            .iter()
            .copied()
            .filter(|name| view(old, name) != view(new, name))
            .collect();
        let touched = Touched {
            nodes: &nodes,
            groups: &groups,
            services: &services,
            served: &served,
            readiness: &changed_keys(&basis.readiness, input.readiness),
        };
        out.extend(nodes.iter().map(|n| n.to_string()));
        dependents(old, &touched, &mut out);
        dependents(new, &touched, &mut out);
    } else if basis.readiness != *input.readiness {
        let none = BTreeSet::new();
        let touched = Touched {
            nodes: &none,
            groups: &none,
            services: &none,
            served: &none,
            readiness: &changed_keys(&basis.readiness, input.readiness),
        };
        dependents(new, &touched, &mut out);
    }
    if basis.holds != *input.holds {
        out.extend(
            changed_keys(&basis.holds, input.holds)
                .into_iter()
                .map(String::from),
        );
    }
    for (node, was) in &basis.kept_from {
        if (input.previous)(node) != was.as_ref() {
            out.insert(node.clone());
        }
    }
    Some(out)
}

/// What changed between two inputs, by name.
struct Touched<'a> {
    nodes: &'a BTreeSet<&'a str>,
    groups: &'a BTreeSet<&'a str>,
    services: &'a BTreeSet<&'a str>,
    /// Services changed in what their real servers' states read.
    served: &'a BTreeSet<&'a str>,
    readiness: &'a BTreeSet<&'a str>,
}

/// VIP, family, group, forwarding, tunnel and real-server nodes of a service.
type RealServerView<'a> = (
    &'a str,
    i32,
    &'a str,
    i32,
    Option<&'a lb_proto::v1::Tunnel>,
    BTreeSet<&'a str>,
);

/// What a real server's state reads of a service that lists it: see
/// [`realserver`] and [`service_vips`].
fn real_server_view(s: &Service) -> RealServerView<'_> {
    (
        &s.vip,
        s.family,
        &s.director_group,
        s.forwarding,
        s.tunnel.as_ref(),
        s.real_servers
            .iter()
            .filter_map(topology::real_server_node)
            .collect(),
    )
}

/// The names of the objects added, removed or changed from `old` to `new`;
/// `None` when a name is used twice or the objects in both are not in the
/// same order (the order of a director's objects follows the topology's).
fn changed<'a, T: PartialEq>(
    old: &'a [T],
    new: &'a [T],
    name: impl Fn(&T) -> &String,
) -> Option<BTreeSet<&'a str>> {
    let index = |items: &'a [T]| -> Option<HashMap<&'a str, (usize, &'a T)>> {
        let mut out = HashMap::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if out.insert(name(item).as_str(), (i, item)).is_some() {
                return None;
            }
        }
        Some(out)
    };
    let (before, after) = (index(old)?, index(new)?);
    let mut out = BTreeSet::new();
    // Objects in both must keep their order.
    let mut last = None;
    for item in new {
        let n = name(item).as_str();
        match before.get(n) {
            Some((i, was)) => {
                if last.is_some_and(|l| l > *i) {
                    return None;
                }
                last = Some(*i);
                if *was != item {
                    out.insert(n);
                }
            }
            None => {
                out.insert(n);
            }
        }
    }
    out.extend(
        old.iter()
            .map(|item| name(item).as_str())
            .filter(|n| !after.contains_key(n)),
    );
    Some(out)
}

/// Keys whose values differ between two maps (present in one only included).
fn changed_keys<'a, V: PartialEq>(
    old: &'a BTreeMap<String, V>,
    new: &'a BTreeMap<String, V>,
) -> BTreeSet<&'a str> {
    old.keys()
        .chain(new.keys())
        .map(String::as_str)
        .filter(|k| old.get(*k) != new.get(*k))
        .collect()
}

/// Adds to `out` the nodes of `t` whose state reads something `touched`
/// names: the directors of a touched group, of a touched service's group,
/// or of a group that names a touched node (as a director, or as a real
/// server of one of its services, or by its readiness); the real servers of
/// a service touched in what they read of it, or of a firewall-mark service
/// of a touched group.
fn dependents(t: &Topology, touched: &Touched<'_>, out: &mut BTreeSet<String>) {
    let mut directors: HashMap<&str, Vec<String>> = HashMap::new();
    for g in &t.director_groups {
        let members = topology::group_directors(g);
        if touched.groups.contains(g.name.as_str())
            || members.iter().any(|m| touched.nodes.contains(m.as_str()))
        {
            out.extend(members.iter().cloned());
        }
        directors.insert(&g.name, members);
    }
    for s in &t.services {
        let service = touched.services.contains(s.name.as_str());
        // A firewall-mark service's VIPs are its group's.
        let its_real_servers = touched.served.contains(s.name.as_str())
            || (touched.groups.contains(s.director_group.as_str())
                && s.vip.parse::<IpAddr>().is_err());
        let mut its_directors = service;
        for name in s.real_servers.iter().filter_map(topology::real_server_node) {
            if its_real_servers {
                out.insert(name.to_string());
            }
            if touched.nodes.contains(name) || touched.readiness.contains(name) {
                its_directors = true;
            }
        }
        if its_directors && let Some(members) = directors.get(s.director_group.as_str()) {
            out.extend(members.iter().cloned());
        }
    }
}

/// The VIPs a service needs on its real servers: its own VIP, or for a
/// firewall-mark service every VIP of its group in the service's family.
pub fn service_vips(t: &Topology, service: &Service) -> Vec<String> {
    service_vips_in(&t.director_groups, service)
}

/// [`service_vips`] with the director groups at hand.
fn service_vips_in(groups: &[lb_proto::v1::DirectorGroup], service: &Service) -> Vec<String> {
    if let Ok(vip) = service.vip.parse::<IpAddr>() {
        return vec![vip.to_string()];
    }
    let v6 = topology::service_is_ipv6(service);
    let mut vips: Vec<String> = groups
        .iter()
        .find(|g| g.name == service.director_group)
        .and_then(|g| g.vrrp.as_ref())
        .iter()
        .flat_map(|v| v.instances.iter())
        .flat_map(|i| i.vips.iter())
        .filter_map(|v| Prefix::parse(v))
        .filter(|p| p.address.is_ipv6() == v6)
        .map(|p| p.address.to_string())
        .collect();
    vips.sort();
    vips.dedup();
    vips
}

fn director(input: Input<'_>, node: &Node) -> DirectorConfig {
    let t = input.topology;
    let groups: Vec<_> = t
        .director_groups
        .iter()
        .filter(|g| topology::group_directors(g).contains(&node.name))
        .cloned()
        .collect();
    let mut names: BTreeSet<String> = BTreeSet::new();
    names.insert(node.name.clone());
    for g in &groups {
        names.extend(topology::group_directors(g));
    }
    let mut services = Vec::new();
    for s in t
        .services
        .iter()
        .filter(|s| groups.iter().any(|g| g.name == s.director_group))
    {
        let vips = service_vips(t, s);
        let mut s = s.clone();
        for rs in &mut s.real_servers {
            let configured = rs.weight.unwrap_or(1);
            let gated = match topology::real_server_node(rs) {
                Some(name) => {
                    names.insert(name.to_string());
                    let ready = input.readiness.get(name);
                    !vips.iter().all(|v| ready.is_some_and(|r| r.contains(v)))
                }
                None => false,
            };
            rs.weight = Some(if gated || rs.drain { 0 } else { configured });
        }
        services.push(s);
    }
    DirectorConfig {
        node: node.name.clone(),
        nodes: t
            .nodes
            .iter()
            .filter(|n| names.contains(&n.name))
            .cloned()
            .collect(),
        director_groups: groups,
        services,
        settings: None,
    }
}

/// A real server's config, and when it keeps a held VIP that left its
/// services, the previous state it looked the VIP's settings up in.
fn realserver(
    input: Input<'_>,
    node: &Node,
    services: &[&Service],
) -> (RealServerConfig, Option<Option<DesiredState>>) {
    let t = input.topology;
    let mut vips: BTreeMap<String, RealServerVip> = BTreeMap::new();
    for s in services {
        for vip in service_vips(t, s) {
            let entry = vips.entry(vip.clone()).or_insert_with(|| RealServerVip {
                address: vip,
                forwarding: s.forwarding,
                tunnel: s.tunnel,
                services: Vec::new(),
                nat_gateway: String::new(),
            });
            entry.services.push(s.name.clone());
        }
    }
    // Two-phase removal: a VIP that left the topology stays while a director
    // still forwards to this node for it.
    let mut kept_from = None;
    if let Some(held) = input.holds.get(&node.name)
        && held.iter().any(|vip| !vips.contains_key(vip))
    {
        let state = (input.previous)(&node.name);
        kept_from = Some(state.cloned());
        let previous = state.and_then(|d| match &d.config {
            Some(desired_state::Config::Realserver(rs)) => Some(rs),
            _ => None,
        });
        for vip in held {
            if vips.contains_key(vip) {
                continue;
            }
            let kept = previous
                .and_then(|p| p.vips.iter().find(|v| &v.address == vip))
                .cloned();
            if let Some(kept) = kept {
                vips.insert(vip.clone(), kept);
            }
        }
    }
    let config = RealServerConfig {
        node: node.name.clone(),
        vips: vips.into_values().collect(),
        interfaces: node.interfaces.clone(),
        settings: None,
    };
    (config, kept_from)
}

/// The (real-server node, VIP) pairs that a director state forwards to,
/// merged into `holds`. `topology` is the one the director state came from
/// (for firewall-mark services' VIPs).
pub fn add_holds(holds: &mut Holds, director_state: &DesiredState) {
    let Some(desired_state::Config::Director(d)) = &director_state.config else {
        return;
    };
    for s in &d.services {
        let vips = service_vips_in(&d.director_groups, s);
        for rs in &s.real_servers {
            if let Some(name) = topology::real_server_node(rs) {
                holds
                    .entry(name.to_string())
                    .or_default()
                    .extend(vips.iter().cloned());
            }
        }
    }
}

/// Whether two states carry the same configuration (revision and epoch aside).
pub fn same_config(a: &DesiredState, b: &DesiredState) -> bool {
    a.node == b.node && a.config == b.config
}

/// A readable diff of a node's state, object by object:
///
/// ```text
/// ~ service dns
///       - port: 53
///   -     weight: 0
///   +     weight: 3
///         node: rs1
/// + vip 192.168.56.186
///   +   address: 192.168.56.186
/// ```
///
/// `+` an object or line added, `-` removed, `~` an object changed. Empty
/// when nothing changes (revision and epoch aside).
pub fn diff(old: Option<&DesiredState>, new: &DesiredState) -> String {
    if old.is_some_and(|o| same_config(o, new)) {
        return String::new();
    }
    let before = old.map(sections).unwrap_or_default();
    let after = sections(new);
    let mut out = String::new();
    let labels: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for label in labels {
        match (before.get(label), after.get(label)) {
            // Compared as values first: only changed objects are rendered.
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => {
                let (a, b) = match (a, b) {
                    // Of a service, only the real servers that change are
                    // shown (a service may have thousands).
                    (Section::Service(a), Section::Service(b)) => {
                        let (a, b) = changed_real_servers(a, b);
                        (yaml(&a), yaml(&b))
                    }
                    _ => (a.render(), b.render()),
                };
                if a == b {
                    continue;
                }
                out.push_str(&format!("~ {label}\n"));
                let text = similar::TextDiff::from_lines(&a, &b);
                for (i, group) in text.grouped_ops(2).iter().enumerate() {
                    if i > 0 {
                        out.push_str("    ...\n");
                    }
                    for op in group {
                        for change in text.iter_changes(op) {
                            let sign = match change.tag() {
                                similar::ChangeTag::Delete => '-',
                                similar::ChangeTag::Insert => '+',
                                similar::ChangeTag::Equal => ' ',
                            };
                            out.push_str(&format!("  {sign} {}", change.value()));
                            if change.missing_newline() {
                                out.push('\n');
                            }
                        }
                    }
                }
            }
            (None, Some(b)) => {
                out.push_str(&format!("+ {label}\n"));
                for line in b.render().lines() {
                    out.push_str(&format!("  + {line}\n"));
                }
            }
            (Some(a), None) => {
                out.push_str(&format!("- {label}\n"));
                for line in a.render().lines() {
                    out.push_str(&format!("  - {line}\n"));
                }
            }
            (None, None) => {}
        }
    }
    out
}

/// Copies of two versions of a service with only the real servers that
/// differ between them (matched by target and port, in their order).
fn changed_real_servers(a: &Service, b: &Service) -> (Service, Service) {
    type Key<'a> = (Option<&'a real_server::Target>, u32);
    fn key(rs: &RealServer) -> Key<'_> {
        (rs.target.as_ref(), rs.port)
    }
    fn keyed(s: &Service) -> HashMap<Key<'_>, &RealServer> {
        s.real_servers.iter().map(|rs| (key(rs), rs)).collect()
    }
    let (in_a, in_b) = (keyed(a), keyed(b));
    let trim = |s: &Service, other: &HashMap<Key<'_>, &RealServer>| -> Service {
        let real_servers = s
            .real_servers
            .iter()
            .filter(|rs| other.get(&key(rs)) != Some(rs))
            .cloned()
            .collect();
        Service {
            real_servers,
            ..s.clone()
        }
    };
    (trim(a, &in_b), trim(b, &in_a))
}

/// YAML with map keys sorted (protobuf maps are hash maps, whose order
/// would otherwise change from run to run).
fn yaml<T: serde::Serialize>(value: &T) -> String {
    fn sorted(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(
                    entries.into_iter().map(|(k, v)| (k, sorted(v))).collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sorted).collect())
            }
            other => other,
        }
    }
    serde_json::to_value(value)
        .map(sorted)
        .map_err(|e| e.to_string())
        .and_then(|v| lb_proto::yaml::to_string(&v).map_err(|e| e.to_string()))
        .unwrap_or_else(|e| format!("# unrenderable: {e}\n"))
}

/// One object of a state, compared by value and rendered only when needed.
#[derive(PartialEq)]
enum Section<'a> {
    Group(&'a lb_proto::v1::DirectorGroup),
    Service(&'a Service),
    Node(&'a Node),
    Vip(&'a RealServerVip),
    Interfaces(&'a Vec<String>),
    Settings(&'a lb_proto::v1::AgentSettings),
}

impl Section<'_> {
    fn render(&self) -> String {
        match self {
            Section::Group(g) => yaml(g),
            Section::Service(s) => yaml(s),
            Section::Node(n) => yaml(n),
            Section::Vip(v) => yaml(v),
            Section::Interfaces(i) => yaml(i),
            Section::Settings(s) => yaml(s),
        }
    }
}

/// A state cut into objects, by label.
fn sections(state: &DesiredState) -> BTreeMap<String, Section<'_>> {
    let mut out = BTreeMap::new();
    match &state.config {
        Some(desired_state::Config::Director(d)) => {
            for g in &d.director_groups {
                out.insert(format!("director group {}", g.name), Section::Group(g));
            }
            for s in &d.services {
                out.insert(format!("service {}", s.name), Section::Service(s));
            }
            for n in &d.nodes {
                out.insert(format!("node {}", n.name), Section::Node(n));
            }
            if let Some(settings) = &d.settings {
                out.insert("settings".to_string(), Section::Settings(settings));
            }
        }
        Some(desired_state::Config::Realserver(r)) => {
            for v in &r.vips {
                out.insert(format!("vip {}", v.address), Section::Vip(v));
            }
            if !r.interfaces.is_empty() {
                out.insert("interfaces".to_string(), Section::Interfaces(&r.interfaces));
            }
            if let Some(settings) = &r.settings {
                out.insert("settings".to_string(), Section::Settings(settings));
            }
        }
        None => {}
    }
    out
}

#[cfg(test)]
mod tests;
