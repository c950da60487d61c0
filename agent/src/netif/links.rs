//! Network interfaces: lookup by name, up and down, and a watch on link and
//! address changes (rtnetlink multicast groups) so drift is seen without
//! waiting for the next poll.

use futures::{StreamExt, TryStreamExt};
use netlink_packet_route::link::{
    InfoData, InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::{LinkUnspec, MulticastGroup};

use super::rtnl::{NetifError, Outcome, Rtnl, errno};

/// One network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// rtnetlink kind ("ipip", "veth", ...), when it has one.
    pub kind: Option<String>,
}

impl Link {
    fn from_message(m: &LinkMessage) -> Option<Link> {
        let mut name = None;
        let mut kind = None;
        for attr in &m.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(k) = info {
                            kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        Some(Link {
            index: m.header.index,
            name: name?,
            up: m.header.flags.contains(LinkFlags::Up),
            kind,
        })
    }
}

impl Rtnl {
    /// Every interface of the namespace.
    pub async fn links(&self) -> Result<Vec<Link>, NetifError> {
        let messages: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetifError::Netlink {
                op: "list",
                object: "links".into(),
                source,
            })?;
        Ok(messages.iter().filter_map(Link::from_message).collect())
    }

    /// The interface called `name`, if it exists.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, NetifError> {
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match stream.next().await {
            None => Ok(None),
            Some(Ok(m)) => Ok(Link::from_message(&m)),
            // ENODEV: no such interface.
            Some(Err(e)) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Some(Err(source)) => Err(NetifError::Netlink {
                op: "get link",
                object: name.to_string(),
                source,
            }),
        }
    }

    /// The interface called `name`, or [`NetifError::NoSuchLink`].
    pub async fn require_link(&self, name: &str) -> Result<Link, NetifError> {
        self.link(name)
            .await?
            .ok_or_else(|| NetifError::NoSuchLink {
                name: name.to_string(),
            })
    }

    /// Sets an interface administratively up or down.
    pub async fn set_link_up(&self, name: &str, up: bool) -> Result<Outcome, NetifError> {
        let link = self.require_link(name).await?;
        if link.up == up {
            return Ok(Outcome::AlreadyThere);
        }
        let builder = LinkUnspec::new_with_index(link.index);
        let message = if up { builder.up() } else { builder.down() }.build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(|source| NetifError::Netlink {
                op: if up { "set link up" } else { "set link down" },
                object: name.to_string(),
                source,
            })?;
        Ok(Outcome::Changed)
    }

    /// Deletes an interface; a missing one is already converged.
    pub async fn delete_link(&self, name: &str) -> Result<Outcome, NetifError> {
        let Some(link) = self.link(name).await? else {
            return Ok(Outcome::AlreadyThere);
        };
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(Outcome::Changed),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(Outcome::AlreadyThere),
            Err(source) => Err(NetifError::Netlink {
                op: "delete link",
                object: name.to_string(),
                source,
            }),
        }
    }

    /// Creates an interface of `kind` called `name` with no further
    /// attributes (`ip link add NAME type KIND`); EEXIST means it is there.
    pub async fn add_link(&self, name: &str, kind: InfoKind) -> Result<Outcome, NetifError> {
        self.add_link_with(name, kind, None).await
    }

    /// As [`Rtnl::add_link`], with the kind's attributes (`IFLA_INFO_DATA`).
    pub async fn add_link_with(
        &self,
        name: &str,
        kind: InfoKind,
        data: Option<InfoData>,
    ) -> Result<Outcome, NetifError> {
        let mut builder = rtnetlink::LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(kind)
            .name(name.to_string());
        if let Some(data) = data {
            builder = builder.set_info_data(data);
        }
        let message = builder.build();
        match self.handle.link().add(message).execute().await {
            Ok(()) => Ok(Outcome::Changed),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(Outcome::AlreadyThere),
            Err(source) => Err(NetifError::Netlink {
                op: "add link",
                object: name.to_string(),
                source,
            }),
        }
    }
}

/// What changed, as announced by the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A link appeared, changed or went away.
    Link,
    /// An address was added or removed.
    Address,
    /// Something else of the subscribed groups.
    Other,
}

/// A subscription to link, address and netconf changes of the namespace.
pub struct Watch {
    changes_rx: futures::channel::mpsc::UnboundedReceiver<(
        netlink_packet_core::NetlinkMessage<netlink_packet_route::RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watch")
    }
}

impl Watch {
    /// Subscribes to links and IPv4 and IPv6 addresses. Sysctls are not
    /// announced here (arp_ignore has no notification at all, and the netconf
    /// group's messages are not decoded by netlink-packet-route): they are only
    /// seen by polling.
    pub fn subscribe() -> Result<Watch, NetifError> {
        let (connection, _handle, changes_rx) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
        ])
        .map_err(NetifError::Connect)?;
        tokio::spawn(connection);
        Ok(Watch { changes_rx })
    }

    /// The next change; `None` when the socket closed.
    pub async fn next(&mut self) -> Option<Change> {
        use netlink_packet_core::NetlinkPayload;
        use netlink_packet_route::RouteNetlinkMessage as M;
        let (message, _) = self.changes_rx.next().await?;
        Some(match message.payload {
            NetlinkPayload::InnerMessage(M::NewLink(_) | M::DelLink(_) | M::SetLink(_)) => {
                Change::Link
            }
            NetlinkPayload::InnerMessage(M::NewAddress(_) | M::DelAddress(_)) => Change::Address,
            _ => Change::Other,
        })
    }
}
