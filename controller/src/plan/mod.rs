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

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use lb_proto::v1::{
    DesiredState, DirectorConfig, Node, NodeRole, RealServerConfig, RealServerVip, Service,
    Topology, desired_state,
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
    let t = input.topology;
    // Services by real-server node, computed once for every real server.
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
    let mut out = BTreeMap::new();
    for node in &t.nodes {
        let config = match node.role() {
            NodeRole::Director => desired_state::Config::Director(director(input, node)),
            NodeRole::Realserver => desired_state::Config::Realserver(realserver(
                input,
                node,
                served
                    .get(node.name.as_str())
                    .map_or(&[][..], |v| v.as_slice()),
            )),
            NodeRole::Unspecified => continue,
        };
        out.insert(
            node.name.clone(),
            DesiredState {
                node: node.name.clone(),
                revision: input.revision,
                epoch: input.epoch,
                config: Some(config),
            },
        );
    }
    out
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

fn realserver(input: Input<'_>, node: &Node, services: &[&Service]) -> RealServerConfig {
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
    if let Some(held) = input.holds.get(&node.name) {
        let previous = (input.previous)(&node.name).and_then(|d| match &d.config {
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
    RealServerConfig {
        node: node.name.clone(),
        vips: vips.into_values().collect(),
        interfaces: node.interfaces.clone(),
        settings: None,
    }
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
                let (a, b) = (a.render(), b.render());
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
