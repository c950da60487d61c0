//! IP addresses on interfaces: list, add and remove by interface name, with
//! an optional label (IPv4) and the IPv6 `nodad` flag.
//!
//! Add and remove are idempotent: EEXIST on add and EADDRNOTAVAIL on delete
//! mean the kernel is already as asked and are reported as
//! [`Outcome::AlreadyThere`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::AddressMessageBuilder;

use super::rtnl::{NetifError, Outcome, Rtnl, errno};

/// An address to put on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressSpec {
    /// The address.
    pub address: IpAddr,
    /// Prefix length (32 or 128 for a host address).
    pub prefix_len: u8,
    /// IPv4 label (`eth0:vip`); the kernel wants it to start with the
    /// interface name. Ignored for IPv6.
    pub label: Option<String>,
    /// IPv6: skip duplicate address detection, so the address is usable at
    /// once and never `tentative` or `dadfailed`. Ignored for IPv4.
    pub nodad: bool,
}

impl AddressSpec {
    /// A host address (/32 or /128) without label; `nodad` for IPv6.
    pub fn host(address: IpAddr) -> Self {
        AddressSpec {
            address,
            prefix_len: if address.is_ipv4() { 32 } else { 128 },
            label: None,
            nodad: address.is_ipv6(),
        }
    }
}

impl std::fmt::Display for AddressSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// An address found on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddress {
    /// Interface index.
    pub index: u32,
    /// The address (IFA_LOCAL for IPv4, IFA_ADDRESS for IPv6).
    pub address: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Label, when the kernel reports one (IPv4).
    pub label: Option<String>,
    /// Duplicate address detection is off (IPv6).
    pub nodad: bool,
    /// IPv6 duplicate address detection has not finished (or failed).
    pub tentative: bool,
}

impl IfAddress {
    fn from_message(m: &AddressMessage) -> Option<IfAddress> {
        let mut local = None;
        let mut address = None;
        let mut label = None;
        let mut flags = AddressFlags::empty();
        for attr in &m.attributes {
            match attr {
                AddressAttribute::Local(a) => local = Some(*a),
                AddressAttribute::Address(a) => address = Some(*a),
                AddressAttribute::Label(l) => label = Some(l.clone()),
                AddressAttribute::Flags(f) => flags = *f,
                _ => {}
            }
        }
        Some(IfAddress {
            index: m.header.index,
            address: local.or(address)?,
            prefix_len: m.header.prefix_len,
            label,
            nodad: flags.contains(AddressFlags::Nodad),
            tentative: flags.intersects(AddressFlags::Tentative | AddressFlags::Dadfailed),
        })
    }
}

impl Rtnl {
    /// Every address of the namespace, or of one interface.
    pub async fn addresses(&self, ifname: Option<&str>) -> Result<Vec<IfAddress>, NetifError> {
        let mut request = self.handle.address().get();
        if let Some(name) = ifname {
            let link = self.require_link(name).await?;
            request = request.set_link_index_filter(link.index);
        }
        let messages: Vec<AddressMessage> =
            request
                .execute()
                .try_collect()
                .await
                .map_err(|source| NetifError::Netlink {
                    op: "list addresses",
                    object: ifname.unwrap_or("of every interface").to_string(),
                    source,
                })?;
        Ok(messages
            .iter()
            .filter_map(IfAddress::from_message)
            .collect())
    }

    /// Adds `spec` to interface `ifname`; an address already there is
    /// [`Outcome::AlreadyThere`].
    pub async fn add_address(
        &self,
        ifname: &str,
        spec: &AddressSpec,
    ) -> Result<Outcome, NetifError> {
        let link = self.require_link(ifname).await?;
        let mut request = self
            .handle
            .address()
            .add(link.index, spec.address, spec.prefix_len);
        let message = request.message_mut();
        if spec.address.is_ipv4() {
            if let Some(label) = &spec.label {
                message
                    .attributes
                    .push(AddressAttribute::Label(label.clone()));
            }
        } else if spec.nodad {
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match request.execute().await {
            Ok(()) => Ok(Outcome::Changed),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(Outcome::AlreadyThere),
            Err(source) => Err(NetifError::Netlink {
                op: "add address",
                object: format!("{spec} on {ifname}"),
                source,
            }),
        }
    }

    /// Removes `address/prefix_len` from interface `ifname`; an address that is
    /// not there (or an interface that is gone) is [`Outcome::AlreadyThere`].
    pub async fn del_address(
        &self,
        ifname: &str,
        address: IpAddr,
        prefix_len: u8,
    ) -> Result<Outcome, NetifError> {
        let Some(link) = self.link(ifname).await? else {
            return Ok(Outcome::AlreadyThere);
        };
        let spec = AddressSpec {
            address,
            prefix_len,
            label: None,
            nodad: false,
        };
        let message = match address {
            IpAddr::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new()
                .index(link.index)
                .address(a, prefix_len)
                .build(),
            IpAddr::V6(a) => AddressMessageBuilder::<Ipv6Addr>::new()
                .index(link.index)
                .address(a, prefix_len)
                .build(),
        };
        match self.handle.address().del(message).execute().await {
            Ok(()) => Ok(Outcome::Changed),
            Err(e) if matches!(errno(&e), Some(libc::EADDRNOTAVAIL) | Some(libc::ENODEV)) => {
                Ok(Outcome::AlreadyThere)
            }
            Err(source) => Err(NetifError::Netlink {
                op: "delete address",
                object: format!("{spec} on {ifname}"),
                source,
            }),
        }
    }
}
