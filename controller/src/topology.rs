//! Small readings of a topology shared by validation and the planner: which
//! directors a group has, what address a real server resolves to, how a VIP
//! with a prefix parses.

use std::net::IpAddr;

use lb_proto::v1::{DirectorGroup, Node, RealServer, Service, Topology, real_server};

/// A VIP as written in an instance ("192.168.56.185/24"), or a service VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// The address.
    pub address: IpAddr,
    /// Prefix length (32 or 128 when not written).
    pub len: u8,
}

impl Prefix {
    /// Parses "ADDRESS" or "ADDRESS/LEN".
    pub fn parse(text: &str) -> Option<Prefix> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let address: IpAddr = addr.trim().parse().ok()?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(l) => l.trim().parse::<u8>().ok().filter(|l| *l <= max)?,
            None => max,
        };
        Some(Prefix { address, len })
    }

    /// Whether `other` lies inside this prefix.
    pub fn contains(&self, other: IpAddr) -> bool {
        match (self.address, other) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// The director node names of a group: its `directors`, or else every node
/// named in an instance's priorities (sorted, without repeats).
pub fn group_directors(group: &DirectorGroup) -> Vec<String> {
    // The agents' rule, so both sides agree on who directs a group.
    lb_agent::director::plan::group_directors(group)
        .into_iter()
        .collect()
}

/// A node by name.
pub fn node<'a>(topology: &'a Topology, name: &str) -> Option<&'a Node> {
    topology.nodes.iter().find(|n| n.name == name)
}

/// A director group by name.
pub fn group<'a>(topology: &'a Topology, name: &str) -> Option<&'a DirectorGroup> {
    topology.director_groups.iter().find(|g| g.name == name)
}

/// Every address of a node that parses: `address` first, then `addresses`.
pub fn node_addresses(node: &Node) -> Vec<IpAddr> {
    std::iter::once(&node.address)
        .chain(node.addresses.iter())
        .filter_map(|a| a.parse().ok())
        .collect()
}

/// The service's family: from its VIP, or from `family` for a firewall mark.
pub fn service_is_ipv6(service: &Service) -> bool {
    match service.vip.parse::<IpAddr>() {
        Ok(ip) => ip.is_ipv6(),
        Err(_) => service.family() == lb_proto::v1::AddressFamily::Inet6,
    }
}

/// The address directors forward to for `rs` of `service`: a plain address,
/// or the node's first address of the service's family.
pub fn real_server_address(
    topology: &Topology,
    service: &Service,
    rs: &RealServer,
) -> Option<IpAddr> {
    match rs.target.as_ref()? {
        real_server::Target::Address(a) => a.parse().ok(),
        real_server::Target::Node(name) => {
            let v6 = service_is_ipv6(service);
            node(topology, name)
                .map(node_addresses)?
                .into_iter()
                .find(|a| a.is_ipv6() == v6)
        }
    }
}

/// The node name of a real server, if it is a node.
pub fn real_server_node(rs: &RealServer) -> Option<&str> {
    match rs.target.as_ref()? {
        real_server::Target::Node(n) => Some(n),
        real_server::Target::Address(_) => None,
    }
}

/// A readable name of a real server ("rs1" or "10.0.0.5").
pub fn real_server_label(rs: &RealServer) -> String {
    match rs.target.as_ref() {
        Some(real_server::Target::Node(n)) => n.clone(),
        Some(real_server::Target::Address(a)) => a.clone(),
        None => "(no target)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_contain() {
        let p = Prefix::parse("192.168.56.185/24").unwrap();
        assert_eq!(p.len, 24);
        assert!(p.contains("192.168.56.1".parse().unwrap()));
        assert!(!p.contains("192.168.57.1".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        assert_eq!(Prefix::parse("10.0.0.1").unwrap().len, 32);
        assert_eq!(Prefix::parse("2001:db8::1/64").unwrap().len, 64);
        assert!(Prefix::parse("10.0.0.1/33").is_none());
        assert!(Prefix::parse("nope").is_none());
        let all = Prefix::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
    }
}
