//! Routes: what the default routes of the main table point at.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::RouteMessageBuilder;

use super::rtnl::{NetifError, Rtnl};

/// The main routing table's id.
const RT_TABLE_MAIN: u32 = 254;

fn table(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

/// The gateways a route's attributes name: its own, and those of every next
/// hop of a multipath route.
pub fn route_gateways(attributes: &[RouteAttribute]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for a in attributes {
        match a {
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => out.push(IpAddr::V4(*g)),
            RouteAttribute::Gateway(RouteAddress::Inet6(g)) => out.push(IpAddr::V6(*g)),
            RouteAttribute::MultiPath(hops) => {
                for hop in hops {
                    out.extend(route_gateways(&hop.attributes));
                }
            }
            _ => {}
        }
    }
    out
}

impl Rtnl {
    /// Gateways of the default routes (0.0.0.0/0 and ::/0) of the main table
    /// that send every packet through one gateway. A multipath default route
    /// whose next hops differ names none: some replies would go around
    /// whichever gateway is asked about.
    pub async fn default_gateways(&self) -> Result<Vec<IpAddr>, NetifError> {
        let mut gateways = Vec::new();
        for message in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let routes: Vec<RouteMessage> = self
                .handle
                .route()
                .get(message)
                .execute()
                .try_collect()
                .await
                .map_err(|source| NetifError::Netlink {
                    op: "list",
                    object: "routes".into(),
                    source,
                })?;
            for r in routes {
                if r.header.destination_prefix_length != 0 || table(&r) != RT_TABLE_MAIN {
                    continue;
                }
                let mut hops = route_gateways(&r.attributes);
                hops.dedup();
                if let [one] = hops[..] {
                    gateways.push(one);
                }
            }
        }
        Ok(gateways)
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::route::RouteNextHop;

    use super::*;

    fn hop(g: [u8; 4]) -> RouteNextHop {
        let mut h = RouteNextHop::default();
        h.attributes = vec![RouteAttribute::Gateway(RouteAddress::Inet(g.into()))];
        h
    }

    /// In: a plain default route, and multipath ones with two next hops.
    /// Out: the gateway of each next hop, in order.
    #[test]
    fn multipath_next_hops_are_gateways_too() {
        let plain = [RouteAttribute::Gateway(RouteAddress::Inet(
            [10, 0, 0, 1].into(),
        ))];
        assert_eq!(route_gateways(&plain), vec![IpAddr::from([10, 0, 0, 1])]);
        let multi = [RouteAttribute::MultiPath(vec![
            hop([10, 0, 0, 1]),
            hop([10, 0, 0, 9]),
        ])];
        assert_eq!(
            route_gateways(&multi),
            vec![IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 9])]
        );
    }
}
