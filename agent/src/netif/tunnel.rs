//! Tunnel devices that decapsulate what a director sends in LVS-TUN mode.
//!
//! IPv4: the kernel's fallback devices (`tunl0`, `gre0`) receive every packet
//! of their encapsulation that no other tunnel claims, whatever its outer
//! source: exactly what a real server behind several directors needs. They
//! appear in each network namespace when the module loads (unless
//! `net.core.fb_tunnels_only_for_init_net` says otherwise) and cannot be
//! deleted. Asking rtnetlink to create one loads the module (`rtnl-link-KIND`),
//! which creates the fallback device, so the request itself ends in EEXIST:
//! the device is then adopted, not created. Where no fallback device appears,
//! an any-to-any tunnel of that name is created, which the kernel's tunnel
//! lookup also matches for every outer address.
//!
//! IPv6: the agent creates a device of its own (any to any) with
//! `allow-localremote` (`IP6_TNL_F_ALLOW_LOCAL_REMOTE`). A director whose IPv6
//! VIP is a /128 on its interface encapsulates with the VIP as outer source
//! (Linux limits the longest-prefix rule of source selection to each
//! address's prefix length, so the /128 VIP beats the /64 address), and the
//! receive check of an ip6 tunnel (`ip6_tnl_rcv_ctl`) drops a packet whose
//! outer source is a local address, which the VIP is on the real server. The
//! VM test showed exactly that with the fallback `ip6tnl0` on Linux 6.1. The
//! kernel refuses a second any-to-any tunnel with the fallback's parameters
//! (EEXIST), so the agent's device is bound to `lo` (`IFLA_IPTUN_LINK`):
//! that only tells them apart (the receive check accepts any global address of
//! the host as outer destination), and the newest any-to-any device is the one
//! the lookup finds first.

use netlink_packet_route::link::{InfoData, InfoGre6, InfoIpTunnel, InfoKind, Ip6TunnelFlags};

use super::rtnl::{NetifError, Outcome, Rtnl};

/// A decapsulating device, named after the kernel's fallback device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TunnelDevice {
    /// IPv4 in IPv4 (`ipip` module): `tunl0`.
    Ipip,
    /// IPv6 in IPv6 (`ip6_tunnel` module): `lb-ip6tnl`, created by the agent.
    Ip6Tnl,
    /// GRE over IPv4 (`ip_gre` module): `gre0`.
    Gre,
    /// GRE over IPv6 (`ip6_gre` module): `lb-ip6gre`, created by the agent.
    Ip6Gre,
}

impl TunnelDevice {
    /// The device name.
    pub fn name(self) -> &'static str {
        match self {
            TunnelDevice::Ipip => "tunl0",
            TunnelDevice::Ip6Tnl => "lb-ip6tnl",
            TunnelDevice::Gre => "gre0",
            TunnelDevice::Ip6Gre => "lb-ip6gre",
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
        let data = match device {
            TunnelDevice::Ipip | TunnelDevice::Gre => None,
            TunnelDevice::Ip6Tnl | TunnelDevice::Ip6Gre => {
                let lo = self.require_link("lo").await?.index;
                Some(match device {
                    TunnelDevice::Ip6Tnl => InfoData::IpTunnel(vec![
                        InfoIpTunnel::Link(lo),
                        InfoIpTunnel::Ipv6Flags(Ip6TunnelFlags::AllowLocalRemote),
                    ]),
                    _ => InfoData::GreTun6(vec![InfoGre6::Link(lo)]),
                })
            }
        };
        self.add_link_with(device.name(), device.kind(), data).await
    }
}
