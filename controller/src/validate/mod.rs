//! Validation of a topology before anything is written. Pure: a topology (and
//! the one it replaces) in, findings out.
//!
//! Every finding names the object and the field, in the file's spelling:
//! `service dns: field realServers[1].weight: 70000 is out of range 0..65535`.
//! Errors stop the change; warnings go back to the caller with the result.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use lb_proto::v1::{DirectorGroup, Forwarding, NodeRole, Protocol, Service, Topology};

use crate::topology::{self, Prefix};

#[cfg(test)]
mod tests;

/// IPVS schedulers the kernel knows (net/netfilter/ipvs/ip_vs_*.c).
pub const SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

/// Schedulers that hash and so take the fallback and port flags.
const HASHING_SCHEDULERS: &[&str] = &["sh", "mh"];

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The object ("service dns", "node rs1", "director group dns-lb").
    pub object: String,
    /// Field path in the object ("realServers[1].weight"); empty for the object itself.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.object, self.message)
        } else {
            write!(f, "{}: field {}: {}", self.object, self.field, self.message)
        }
    }
}

/// Everything validation found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Findings that stop the change.
    pub errors: Vec<Issue>,
    /// Findings reported with the result.
    pub warnings: Vec<Issue>,
}

impl Report {
    /// No errors.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    fn error(&mut self, object: impl Into<String>, field: impl Into<String>, message: String) {
        self.errors.push(Issue {
            object: object.into(),
            field: field.into(),
            message,
        });
    }

    fn warning(&mut self, object: impl Into<String>, field: impl Into<String>, message: String) {
        self.warnings.push(Issue {
            object: object.into(),
            field: field.into(),
            message,
        });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Validates `new`, which replaces `old` (the empty topology for a first
/// apply). `force` allows a change that removes every real server of a
/// service.
pub fn validate(new: &Topology, old: &Topology, force: bool) -> Report {
    let mut report = Report::default();
    unique_names(new, &mut report);
    nodes(new, &mut report);
    for (gi, group) in new.director_groups.iter().enumerate() {
        director_group(new, gi, group, &mut report);
    }
    vrids_across_groups(new, &mut report);
    for service in &new.services {
        self::service(new, service, &mut report);
    }
    duplicate_services(new, &mut report);
    vip_is_not_a_real_server(new, &mut report);
    removed_every_real_server(new, old, force, &mut report);
    if report.is_ok() {
        agent_rules(new, old, &mut report);
    }
    report
}

/// The director agent's own validation ([`lb_agent::director::plan`]: VRRP
/// settings it can run, health checks it can build, an IPVS table the kernel
/// takes) for every director of what changed, so that what the controller
/// accepts no agent NACKs. Only the groups and services that differ from
/// `old` (and the services their instances track) are checked.
fn agent_rules(new: &Topology, old: &Topology, report: &mut Report) {
    use lb_agent::director::plan::{DirectorPlan, group_directors};
    let changed_services: BTreeSet<&str> = new
        .services
        .iter()
        .filter(|s| !old.services.contains(s))
        .map(|s| s.name.as_str())
        .collect();
    let groups: Vec<&DirectorGroup> = new
        .director_groups
        .iter()
        .filter(|g| {
            !old.director_groups.contains(g)
                || new.services.iter().any(|s| {
                    s.director_group == g.name && changed_services.contains(s.name.as_str())
                })
        })
        .collect();
    if groups.is_empty() {
        return;
    }
    let tracked: BTreeSet<&str> = groups
        .iter()
        .flat_map(|g| g.vrrp.iter().flat_map(|v| &v.instances))
        .flat_map(|i| i.track_services.iter().map(|t| t.service.as_str()))
        .collect();
    let config = lb_proto::v1::DirectorConfig {
        node: String::new(),
        nodes: new.nodes.clone(),
        director_groups: groups.iter().map(|g| (*g).clone()).collect(),
        services: new
            .services
            .iter()
            .filter(|s| {
                changed_services.contains(s.name.as_str()) || tracked.contains(s.name.as_str())
            })
            .cloned()
            .collect(),
        settings: None,
    };
    let directors: BTreeSet<String> = groups.iter().flat_map(|g| group_directors(g)).collect();
    let mut seen = BTreeSet::new();
    for node in directors {
        if let Err(e) = DirectorPlan::from_config(&config, &node) {
            use lb_agent::director::plan::PlanError;
            let (object, field, message) = match &e {
                PlanError::Service {
                    service,
                    field,
                    reason,
                } => (service_object(service), field.clone(), reason.clone()),
                PlanError::Group {
                    group,
                    field,
                    reason,
                } => (group_object(group), field.clone(), reason.clone()),
                PlanError::Health(h) => (
                    service_object(&h.service),
                    h.field.clone(),
                    match &h.real_server {
                        Some(rs) => format!("real server {rs}: {}", h.reason),
                        None => h.reason.clone(),
                    },
                ),
                PlanError::Vrrp(v) => (
                    group_object(&v.group),
                    String::new(),
                    format!("instance {}: {}", v.instance, v.message),
                ),
                other => (node_object(&node), String::new(), other.to_string()),
            };
            if seen.insert((object.clone(), field.clone(), message.clone())) {
                report.error(
                    object,
                    field,
                    format!("{message} (director {node} would refuse it)"),
                );
            }
        }
    }
}

fn node_object(name: &str) -> String {
    format!("node {name}")
}

fn group_object(name: &str) -> String {
    format!("director group {name}")
}

fn service_object(name: &str) -> String {
    format!("service {name}")
}

fn unique_names(t: &Topology, report: &mut Report) {
    fn check<'a>(
        kind: &str,
        names: impl Iterator<Item = &'a str>,
        object: impl Fn(&str) -> String,
        report: &mut Report,
    ) {
        let mut seen = BTreeMap::new();
        for (i, name) in names.enumerate() {
            if name.is_empty() {
                report.error(
                    format!("{kind}[{i}]"),
                    "name",
                    "a name is required".to_string(),
                );
            } else if let Some(first) = seen.insert(name, i) {
                report.error(
                    object(name),
                    "name",
                    format!("the name is used twice ({kind}[{first}] and {kind}[{i}]); names must be unique"),
                );
            }
        }
    }
    check(
        "nodes",
        t.nodes.iter().map(|n| n.name.as_str()),
        node_object,
        report,
    );
    check(
        "directorGroups",
        t.director_groups.iter().map(|g| g.name.as_str()),
        group_object,
        report,
    );
    check(
        "services",
        t.services.iter().map(|s| s.name.as_str()),
        service_object,
        report,
    );
}

fn nodes(t: &Topology, report: &mut Report) {
    for n in &t.nodes {
        let object = node_object(&n.name);
        if n.role() == NodeRole::Unspecified {
            report.error(
                &object,
                "role",
                "a role is required (director or realserver)".to_string(),
            );
        }
        if n.address.parse::<IpAddr>().is_err() {
            report.error(
                &object,
                "address",
                format!("'{}' is not an IPv4 or IPv6 address", n.address),
            );
        }
        for (i, a) in n.addresses.iter().enumerate() {
            if a.parse::<IpAddr>().is_err() {
                report.error(
                    &object,
                    format!("addresses[{i}]"),
                    format!("'{a}' is not an IPv4 or IPv6 address"),
                );
            }
        }
    }
}

fn director_node(t: &Topology, name: &str) -> Result<(), String> {
    match topology::node(t, name) {
        None => Err(format!("node '{name}' does not exist")),
        Some(n) if n.role() != NodeRole::Director => Err(format!(
            "node '{name}' is not a director (its role is {})",
            n.role().as_str_name()
        )),
        Some(_) => Ok(()),
    }
}

fn director_group(t: &Topology, _gi: usize, g: &DirectorGroup, report: &mut Report) {
    let object = group_object(&g.name);
    for (i, d) in g.directors.iter().enumerate() {
        if let Err(msg) = director_node(t, d) {
            report.error(&object, format!("directors[{i}]"), msg);
        }
    }
    let members = topology::group_directors(g);
    let Some(vrrp) = g.vrrp.as_ref() else {
        return;
    };
    let version = match vrrp.version {
        0 | 3 => 3,
        2 => 2,
        v => {
            report.error(
                &object,
                "vrrp.version",
                format!("VRRP version {v} is unknown (use 2 or 3)"),
            );
            3
        }
    };
    let scripts: BTreeSet<&str> = vrrp.scripts.iter().map(|s| s.name.as_str()).collect();
    let mut instance_names = BTreeSet::new();
    let mut vrids: HashMap<(String, u32, bool), usize> = HashMap::new();
    for (ii, inst) in vrrp.instances.iter().enumerate() {
        let path = format!("vrrp.instances[{ii}]");
        if !instance_names.insert(inst.name.as_str()) {
            report.error(
                &object,
                format!("{path}.name"),
                format!("instance name '{}' is used twice in the group", inst.name),
            );
        }
        if !(1..=255).contains(&inst.vrid) {
            report.error(
                &object,
                format!("{path}.vrid"),
                format!("{} is out of range 1..255", inst.vrid),
            );
        }
        let interface = if inst.interface.is_empty() {
            g.interface.clone()
        } else {
            inst.interface.clone()
        };
        let mut vips = Vec::new();
        for (vi, vip) in inst.vips.iter().enumerate() {
            match Prefix::parse(vip) {
                Some(p) => vips.push(p),
                None => report.error(
                    &object,
                    format!("{path}.vips[{vi}]"),
                    format!("'{vip}' is not an address with an optional prefix length"),
                ),
            }
        }
        let v6 = vips.first().is_some_and(|p| p.address.is_ipv6());
        if vips.iter().any(|p| p.address.is_ipv6() != v6) {
            report.error(
                &object,
                format!("{path}.vips"),
                "IPv4 and IPv6 VIPs cannot be mixed in one instance (RFC 5798 5.2.9); use two instances".to_string(),
            );
        }
        if version == 2 && vips.iter().any(|p| p.address.is_ipv6()) {
            report.error(
                &object,
                format!("{path}.vips"),
                "IPv6 VIPs need VRRP version 3 (version 2 is IPv4 only, RFC 3768)".to_string(),
            );
        }
        // VRRP keeps IPv4 and IPv6 virtual routers apart (RFC 5798 5.2.3), so
        // the same VRID may serve both families on one interface.
        if inst.vrid != 0
            && let Some(first) = vrids.insert((interface.clone(), inst.vrid, v6), ii)
        {
            report.error(
                &object,
                format!("{path}.vrid"),
                format!(
                    "VRID {} is already used on interface {interface} by vrrp.instances[{first}]; a VRID must be unique per interface",
                    inst.vrid
                ),
            );
        }
        for (node, prio) in &inst.priorities {
            let field = format!("{path}.priorities.{node}");
            if let Err(msg) = director_node(t, node) {
                report.error(&object, &field, msg);
                continue;
            }
            if !g.directors.is_empty() && !members.iter().any(|m| m == node) {
                report.error(
                    &object,
                    &field,
                    format!("node '{node}' is not one of the group's directors"),
                );
            }
            let owner = topology::node(t, node)
                .map(topology::node_addresses)
                .unwrap_or_default()
                .iter()
                .any(|a| vips.iter().any(|p| p.address == *a));
            match *prio {
                1..=254 => {}
                255 if owner => {}
                255 => report.error(
                    &object,
                    &field,
                    format!(
                        "priority 255 is only for the address owner, and node '{node}' does not own a VIP of the instance (use 1..254)"
                    ),
                ),
                p => report.error(&object, &field, format!("priority {p} is out of range 1..254")),
            }
        }
        for node in inst.initial_states.keys() {
            if let Err(msg) = director_node(t, node) {
                report.error(&object, format!("{path}.initialStates.{node}"), msg);
            }
        }
        for (si, s) in inst.track_scripts.iter().enumerate() {
            if !scripts.contains(s.name.as_str()) {
                report.error(
                    &object,
                    format!("{path}.trackScripts[{si}].name"),
                    format!("script '{}' is not defined in vrrp.scripts", s.name),
                );
            }
        }
        for (si, s) in inst.track_services.iter().enumerate() {
            let ok = t
                .services
                .iter()
                .any(|svc| svc.name == s.service && svc.director_group == g.name);
            if !ok {
                report.error(
                    &object,
                    format!("{path}.trackServices[{si}].service"),
                    format!(
                        "service '{}' does not exist in director group {}",
                        s.service, g.name
                    ),
                );
            }
        }
    }
    for (si, sg) in vrrp.sync_groups.iter().enumerate() {
        for (ii, name) in sg.instances.iter().enumerate() {
            if !instance_names.contains(name.as_str()) {
                report.error(
                    &object,
                    format!("vrrp.syncGroups[{si}].instances[{ii}]"),
                    format!("instance '{name}' does not exist in the group"),
                );
            }
        }
    }
}

/// Two groups that share a director and an interface share the VRID space.
fn vrids_across_groups(t: &Topology, report: &mut Report) {
    let mut seen: HashMap<(String, String, u32, bool), String> = HashMap::new();
    for g in &t.director_groups {
        let Some(vrrp) = g.vrrp.as_ref() else {
            continue;
        };
        let directors = topology::group_directors(g);
        for (ii, inst) in vrrp.instances.iter().enumerate() {
            let interface = if inst.interface.is_empty() {
                &g.interface
            } else {
                &inst.interface
            };
            let v6 = inst
                .vips
                .first()
                .and_then(|v| Prefix::parse(v))
                .is_some_and(|p| p.address.is_ipv6());
            for d in &directors {
                let key = (d.clone(), interface.clone(), inst.vrid, v6);
                match seen.get(&key) {
                    Some(other) if other != &g.name => {
                        report.error(
                            group_object(&g.name),
                            format!("vrrp.instances[{ii}].vrid"),
                            format!(
                                "VRID {} is also used by director group {other} on director {d} interface {interface}",
                                inst.vrid
                            ),
                        );
                    }
                    _ => {
                        seen.insert(key, g.name.clone());
                    }
                }
            }
        }
    }
}

fn service(t: &Topology, s: &Service, report: &mut Report) {
    let object = service_object(&s.name);
    let group = topology::group(t, &s.director_group);
    if group.is_none() {
        report.error(
            &object,
            "directorGroup",
            format!("director group '{}' does not exist", s.director_group),
        );
    }
    let vip: Option<IpAddr> = if s.fwmark != 0 {
        if !s.vip.is_empty() {
            report.error(
                &object,
                "vip",
                "a firewall-mark service has no VIP; set either vip or fwmark".to_string(),
            );
        }
        None
    } else {
        match s.vip.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                report.error(
                    &object,
                    "vip",
                    format!(
                        "'{}' is not an IPv4 or IPv6 address (write it without a prefix, or set fwmark)",
                        s.vip
                    ),
                );
                None
            }
        }
    };
    if let (Some(vip), Some(g)) = (vip, group) {
        let group_vips: Vec<IpAddr> = g
            .vrrp
            .iter()
            .flat_map(|v| v.instances.iter())
            .flat_map(|i| i.vips.iter())
            .filter_map(|v| Prefix::parse(v))
            .map(|p| p.address)
            .collect();
        if !group_vips.contains(&vip) {
            report.error(
                &object,
                "vip",
                format!(
                    "{vip} is not a VIP of director group {} (add it to an instance's vips)",
                    g.name
                ),
            );
        }
    }
    if s.port > 65535 {
        report.error(
            &object,
            "port",
            format!("{} is out of range 0..65535", s.port),
        );
    }
    if s.port == 0 && s.fwmark == 0 && s.persistence.is_none() {
        report.error(
            &object,
            "port",
            "port 0 (every port) needs persistence or a firewall mark".to_string(),
        );
    }
    // Scheduler: known, and its flags and the service's options make sense for it.
    let scheduler = if s.scheduler.is_empty() {
        "wlc"
    } else {
        s.scheduler.as_str()
    };
    if !SCHEDULERS.contains(&scheduler) {
        report.error(
            &object,
            "scheduler",
            format!(
                "scheduler '{scheduler}' is unknown (known: {})",
                SCHEDULERS.join(", ")
            ),
        );
    }
    if let Some(flags) = s.scheduler_flags.as_ref()
        && (flags.fallback || flags.port)
        && !HASHING_SCHEDULERS.contains(&scheduler)
    {
        report.error(
            &object,
            "schedulerFlags",
            format!("the fallback and port flags apply to the sh and mh schedulers only, not '{scheduler}'"),
        );
    }
    if s.one_packet && s.protocol() != Protocol::Udp {
        report.error(
            &object,
            "onePacket",
            format!(
                "one-packet scheduling is for UDP only; the protocol is {}",
                s.protocol().as_str_name()
            ),
        );
    }
    if let Some(p) = s.persistence.as_ref()
        && p.engine == "sip"
        && s.protocol() != Protocol::Udp
    {
        report.error(
            &object,
            "persistence.engine",
            "the sip persistence engine needs protocol udp".to_string(),
        );
    }
    let forwarding = s.forwarding();
    let segments: Vec<Prefix> = group
        .and_then(|g| g.vrrp.as_ref())
        .iter()
        .flat_map(|v| v.instances.iter())
        .flat_map(|i| i.vips.iter())
        .filter_map(|v| Prefix::parse(v))
        // A host prefix (/32, /128) says nothing about the segment.
        .filter(|p| p.len < if p.address.is_ipv4() { 32 } else { 128 })
        .collect();
    for (ri, rs) in s.real_servers.iter().enumerate() {
        let path = format!("realServers[{ri}]");
        match rs.target.as_ref() {
            None => report.error(
                &object,
                &path,
                "a real server needs a node or an address".to_string(),
            ),
            Some(lb_proto::v1::real_server::Target::Node(name)) => match topology::node(t, name) {
                None => report.error(
                    &object,
                    format!("{path}.node"),
                    format!("node '{name}' does not exist"),
                ),
                Some(n) if n.role() != NodeRole::Realserver => report.error(
                    &object,
                    format!("{path}.node"),
                    format!(
                        "node '{name}' is not a real server (its role is {})",
                        n.role().as_str_name()
                    ),
                ),
                Some(_) => {
                    if topology::real_server_address(t, s, rs).is_none() {
                        report.error(
                            &object,
                            format!("{path}.node"),
                            format!(
                                "node '{name}' has no address of the service's family ({})",
                                if topology::service_is_ipv6(s) {
                                    "IPv6"
                                } else {
                                    "IPv4"
                                }
                            ),
                        );
                    }
                }
            },
            Some(lb_proto::v1::real_server::Target::Address(a)) => match a.parse::<IpAddr>() {
                Err(_) => report.error(
                    &object,
                    format!("{path}.address"),
                    format!("'{a}' is not an IPv4 or IPv6 address"),
                ),
                Ok(ip) if ip.is_ipv6() != topology::service_is_ipv6(s) => report.error(
                    &object,
                    format!("{path}.address"),
                    format!("{ip} is not of the service's address family"),
                ),
                Ok(_) => {}
            },
        }
        if let Some(w) = rs.weight
            && w > 65535
        {
            report.error(
                &object,
                format!("{path}.weight"),
                format!("{w} is out of range 0..65535"),
            );
        }
        if rs.port > 65535 {
            report.error(
                &object,
                format!("{path}.port"),
                format!("{} is out of range 0..65535", rs.port),
            );
        }
        if matches!(
            forwarding,
            Forwarding::Dr | Forwarding::Tun | Forwarding::Unspecified
        ) && rs.port != 0
            && rs.port != s.port
            && s.fwmark == 0
        {
            report.error(
                &object,
                format!("{path}.port"),
                format!(
                    "{} differs from the service port {}; DR and TUN cannot change the port (use nat, or leave the port out)",
                    rs.port, s.port
                ),
            );
        }
        if matches!(forwarding, Forwarding::Dr | Forwarding::Unspecified)
            && !segments.is_empty()
            && let Some(addr) = topology::real_server_address(t, s, rs)
            && !segments.iter().any(|p| p.contains(addr))
        {
            report.warning(
                &object,
                &path,
                format!(
                    "{addr} is not on the segment of director group {} ({}); direct routing needs the real server on the directors' link",
                    s.director_group,
                    segments
                        .iter()
                        .map(|p| format!("{}/{}", p.address, p.len))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
}

fn duplicate_services(t: &Topology, report: &mut Report) {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for s in &t.services {
        let key = if s.fwmark != 0 {
            format!(
                "fwmark {} {}",
                s.fwmark,
                if topology::service_is_ipv6(s) {
                    "inet6"
                } else {
                    "inet"
                }
            )
        } else {
            let Ok(vip) = s.vip.parse::<IpAddr>() else {
                continue;
            };
            format!("{} {vip} port {}", s.protocol().as_str_name(), s.port)
        };
        if let Some(other) = seen.insert(key.clone(), &s.name) {
            report.error(
                service_object(&s.name),
                if s.fwmark != 0 { "fwmark" } else { "vip" },
                format!("{key} is already the key of service {other}; a VIP, port and protocol (or firewall mark) may be used once"),
            );
        }
    }
}

fn vip_is_not_a_real_server(t: &Topology, report: &mut Report) {
    let mut vips: BTreeSet<IpAddr> = t
        .services
        .iter()
        .filter_map(|s| s.vip.parse().ok())
        .collect();
    vips.extend(
        t.director_groups
            .iter()
            .flat_map(|g| g.vrrp.iter())
            .flat_map(|v| v.instances.iter())
            .flat_map(|i| i.vips.iter())
            .filter_map(|v| Prefix::parse(v))
            .map(|p| p.address),
    );
    for s in &t.services {
        for (ri, rs) in s.real_servers.iter().enumerate() {
            if let Some(addr) = topology::real_server_address(t, s, rs)
                && vips.contains(&addr)
            {
                report.error(
                    service_object(&s.name),
                    format!("realServers[{ri}]"),
                    format!("the real server's address {addr} is a VIP; a real server must have an address of its own"),
                );
            }
        }
    }
}

fn removed_every_real_server(new: &Topology, old: &Topology, force: bool, report: &mut Report) {
    if force {
        return;
    }
    for s in &new.services {
        let had = old
            .services
            .iter()
            .find(|o| o.name == s.name)
            .is_some_and(|o| !o.real_servers.is_empty());
        if had && s.real_servers.is_empty() {
            report.error(
                service_object(&s.name),
                "realServers",
                "the change removes every real server of the service; apply with force if that is meant".to_string(),
            );
        }
    }
}
