//! Tunnel devices that decapsulate what a director sends in LVS-TUN mode.
//!
//! The kernel's fallback devices (`tunl0`, `ip6tnl0`, `gre0`, `ip6gre0`)
//! receive every packet of their encapsulation that no other tunnel claims,
//! whatever its outer source: exactly what a real server behind several
//! directors needs. They appear in each network namespace when the module
//! loads (unless `net.core.fb_tunnels_only_for_init_net` says otherwise) and
//! cannot be deleted. Asking rtnetlink to create one loads the module
//! (`rtnl-link-KIND`), which creates the fallback device, so the request itself
//! ends in EEXIST: the device is then adopted, not created. Where no fallback
//! device appears, an any-to-any tunnel of that name is created, which the
//! kernel's tunnel lookup also matches for every outer address.

use netlink_packet_route::link::InfoKind;

use super::rtnl::{NetifError, Outcome, Rtnl};

/// A decapsulating device, named after the kernel's fallback device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TunnelDevice {
    /// IPv4 in IPv4 (`ipip` module): `tunl0`.
    Ipip,
    /// IPv6 in IPv6 (`ip6_tunnel` module): `ip6tnl0`.
    Ip6Tnl,
    /// GRE over IPv4 (`ip_gre` module): `gre0`.
    Gre,
    /// GRE over IPv6 (`ip6_gre` module): `ip6gre0`.
    Ip6Gre,
}

impl TunnelDevice {
    /// The device name.
    pub fn name(self) -> &'static str {
        match self {
            TunnelDevice::Ipip => "tunl0",
            TunnelDevice::Ip6Tnl => "ip6tnl0",
            TunnelDevice::Gre => "gre0",
            TunnelDevice::Ip6Gre => "ip6gre0",
        }
    }

    /// The rtnetlink kind.
    pub fn kind(self) -> InfoKind {
        match self {
            TunnelDevice::Ipip => InfoKind::IpIp,
            TunnelDevice::Ip6Tnl => InfoKind::Ip6Tnl,
            TunnelDevice::Gre => InfoKind::GreTun,
            TunnelDevice::Ip6Gre => InfoKind::GreTun6,
        }
    }

    /// The kernel module that provides it.
    pub fn module(self) -> &'static str {
        match self {
            TunnelDevice::Ipip => "ipip",
            TunnelDevice::Ip6Tnl => "ip6_tunnel",
            TunnelDevice::Gre => "ip_gre",
            TunnelDevice::Ip6Gre => "ip6_gre",
        }
    }

    /// The device of that name, if it is one of ours.
    pub fn from_name(name: &str) -> Option<TunnelDevice> {
        [
            TunnelDevice::Ipip,
            TunnelDevice::Ip6Tnl,
            TunnelDevice::Gre,
            TunnelDevice::Ip6Gre,
        ]
        .into_iter()
        .find(|d| d.name() == name)
    }
}

impl std::fmt::Display for TunnelDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Rtnl {
    /// Makes sure the tunnel device exists: [`Outcome::Changed`] when this call
    /// created it (and so it may be deleted later), [`Outcome::AlreadyThere`]
    /// when it existed or the module's fallback device appeared.
    pub async fn ensure_tunnel(&self, device: TunnelDevice) -> Result<Outcome, NetifError> {
        if self.link(device.name()).await?.is_some() {
            return Ok(Outcome::AlreadyThere);
        }
        self.add_link(device.name(), device.kind()).await
    }
}
