//! Virtual MAC devices of VRRP (RFC 5798 section 7.3; keepalived
//! `use_vmac`): a macvlan device on the VRRP interface with the virtual
//! router MAC 00:00:5e:00:01:VRID. The VIPs live on it and
//! adverts and gratuitous ARP leave from it, so that hosts and switches keep
//! the same MAC for the VIPs whichever router is master: after a failover
//! only the switches' forwarding tables move (the new master's first advert
//! and gratuitous ARP do that), never the hosts' ARP caches.
//!
//! The device is in bridge mode, not private: every router's device has the
//! same MAC, and a macvlan port in private (or passthru) mode claims
//! multicast whose source MAC is its own ("looped back from that port"), so
//! the other router's adverts would never reach the VRRP interface. In
//! bridge mode they go up the interface as usual.
//!
//! The device is up on backups as well, silent: it has no addresses there,
//! answers no ARP (`arp_ignore=1`) and has IPv6 off, so that no frame with
//! the shared MAC leaves a backup. On the parent, `arp_ignore=1` and
//! `arp_filter=1` keep the parent from answering ARP for the VIPs with its
//! own MAC (Linux answers for any local address on any interface by
//! default), and `arp_announce=2` from asking with a VIP as sender address:
//! a reply to a client leaving by the parent would otherwise resolve the
//! client with an ARP request that teaches it the parent's MAC for the VIP.
//! `rp_filter=0` on the device: the VIP's subnet route may point
//! at the parent, and a strict reverse-path check would then drop traffic
//! for the VIP arriving on the device.

use netlink_packet_route::link::MacVlanMode;
use rtnetlink::LinkMacVlan;

use super::rtnl::{NetifError, Outcome, Rtnl, errno};
use super::sysctl::{Family, SysctlError, SysctlKey, Sysctls};

/// The virtual router MAC of `vrid`: 00:00:5e:00:01:VRID for IPv4,
/// 00:00:5e:00:02:VRID for IPv6 (RFC 5798 section 7.3).
pub fn virtual_mac(vrid: u8, ipv6: bool) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, if ipv6 { 0x02 } else { 0x01 }, vrid]
}

/// keepalived's name of the device of `vrid`.
pub fn default_name(vrid: u8) -> String {
    format!("vrrp.{vrid}")
}

/// A virtual MAC device that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum VmacError {
    /// rtnetlink refused.
    #[error(transparent)]
    Netlink(#[from] NetifError),
    /// A sysctl could not be written.
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    /// A device of that name exists and is something else.
    #[error(
        "interface {name} exists and is not a macvlan device on {parent} (kind {kind}); remove it or set vmacInterface"
    )]
    Taken {
        /// Device name.
        name: String,
        /// The VRRP interface.
        parent: String,
        /// What it is.
        kind: String,
    },
}

fn write(
    sysctls: &Sysctls,
    family: Family,
    device: &str,
    name: &str,
    value: &str,
) -> Result<(), SysctlError> {
    let key = SysctlKey {
        family,
        device: device.to_string(),
        name: name.to_string(),
    };
    sysctls.write(&key, value)
}

impl Rtnl {
    /// Makes sure the macvlan device `name` with `mac` exists on `parent`
    /// and is up, with the sysctls above: [`Outcome::AlreadyThere`] when it
    /// was there (left by a predecessor: adopted, VIPs and all).
    pub async fn ensure_vmac(
        &self,
        name: &str,
        parent: &str,
        mac: [u8; 6],
    ) -> Result<Outcome, VmacError> {
        let base = self.require_link(parent).await?;
        let outcome = match self.link(name).await? {
            Some(link) => {
                if link.kind.as_deref() != Some("macvlan") {
                    return Err(VmacError::Taken {
                        name: name.to_string(),
                        parent: parent.to_string(),
                        kind: link.kind.unwrap_or_else(|| "none".into()),
                    });
                }
                Outcome::AlreadyThere
            }
            None => {
                let message = LinkMacVlan::new(name, base.index, MacVlanMode::Bridge)
                    .address(mac.to_vec())
                    .build();
                match self.handle.link().add(message).execute().await {
                    Ok(()) => Outcome::Changed,
                    Err(e) if errno(&e) == Some(libc::EEXIST) => Outcome::AlreadyThere,
                    Err(source) => {
                        return Err(NetifError::Netlink {
                            op: "add macvlan",
                            object: format!("{name} on {parent}"),
                            source,
                        }
                        .into());
                    }
                }
            }
        };
        let sysctls = Sysctls::default();
        write(&sysctls, Family::V4, parent, "arp_ignore", "1")?;
        write(&sysctls, Family::V4, parent, "arp_filter", "1")?;
        write(&sysctls, Family::V4, parent, "arp_announce", "2")?;
        write(&sysctls, Family::V4, name, "arp_ignore", "1")?;
        write(&sysctls, Family::V4, name, "rp_filter", "0")?;
        write(&sysctls, Family::V4, name, "accept_local", "1")?;
        // No link-local address, router solicitations or MLD reports with
        // the shared MAC (best effort: IPv6 may be off in this kernel).
        let _ = write(&sysctls, Family::V6, name, "disable_ipv6", "1");
        self.set_link_up(name, true).await?;
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_macs_follow_rfc_5798() {
        assert_eq!(virtual_mac(51, false), [0, 0, 0x5e, 0, 1, 51]);
        assert_eq!(virtual_mac(255, true), [0, 0, 0x5e, 0, 2, 255]);
        assert_eq!(default_name(31), "vrrp.31");
    }
}
