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

impl Rtnl {
    /// Gateways of the default routes (0.0.0.0/0 and ::/0) of the main table.
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
                for a in &r.attributes {
                    match a {
                        RouteAttribute::Gateway(RouteAddress::Inet(g)) => {
                            gateways.push(IpAddr::V4(*g))
                        }
                        RouteAttribute::Gateway(RouteAddress::Inet6(g)) => {
                            gateways.push(IpAddr::V6(*g))
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(gateways)
    }
}
