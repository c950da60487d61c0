//! Putting the VIPs on the interface and taking them off.
//!
//! The instance task talks to a [`VipBackend`], which the rtnetlink client of
//! `netif` ([`Rtnl`]) implements.

use std::net::IpAddr;

use futures::future::BoxFuture;

use crate::netif::Rtnl;
use crate::netif::addresses::AddressSpec;

/// A virtual address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vip {
    /// The address.
    pub address: IpAddr,
    /// Prefix length (32/128 for a host address).
    pub prefix_len: u8,
}

impl std::fmt::Display for Vip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

impl std::str::FromStr for Vip {
    type Err = String;

    /// "192.0.2.10/24", "2001:db8::10/64", or an address alone (host prefix).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let address: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("prefix length {p:?} is not 0..={max}"))?,
        };
        Ok(Vip {
            address,
            prefix_len,
        })
    }
}

/// A VIP change that failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} {vip} on {ifname}: {message}")]
pub struct VipError {
    /// "add" or "remove".
    pub op: &'static str,
    /// The VIP.
    pub vip: Vip,
    /// The interface.
    pub ifname: String,
    /// What went wrong.
    pub message: String,
}

/// Adds and removes VIPs; both idempotent (an address already there, or
/// already gone, is success).
pub trait VipBackend: Send + Sync + 'static {
    /// Adds `vip` to `ifname` with an optional IPv4 label.
    fn add<'a>(
        &'a self,
        ifname: &'a str,
        vip: Vip,
        label: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), VipError>>;
    /// Removes `vip` from `ifname`.
    fn remove<'a>(&'a self, ifname: &'a str, vip: Vip) -> BoxFuture<'a, Result<(), VipError>>;
}

impl VipBackend for Rtnl {
    fn add<'a>(
        &'a self,
        ifname: &'a str,
        vip: Vip,
        label: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), VipError>> {
        Box::pin(async move {
            let spec = AddressSpec {
                address: vip.address,
                prefix_len: vip.prefix_len,
                label: label.map(str::to_string),
                // A VIP must work at once on a new master, not after DAD.
                nodad: vip.address.is_ipv6(),
            };
            self.add_address(ifname, &spec)
                .await
                .map(|_| ())
                .map_err(|e| VipError {
                    op: "add",
                    vip,
                    ifname: ifname.to_string(),
                    message: e.to_string(),
                })
        })
    }

    fn remove<'a>(&'a self, ifname: &'a str, vip: Vip) -> BoxFuture<'a, Result<(), VipError>> {
        Box::pin(async move {
            self.del_address(ifname, vip.address, vip.prefix_len)
                .await
                .map(|_| ())
                .map_err(|e| VipError {
                    op: "remove",
                    vip,
                    ifname: ifname.to_string(),
                    message: e.to_string(),
                })
        })
    }
}

/// The addresses currently on `ifname` (to adopt VIPs left by a killed
/// predecessor).
pub fn addresses_on(ifname: &str) -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|a| a.interface_name == ifname)
        .filter_map(|a| {
            let addr = a.address?;
            if let Some(s) = addr.as_sockaddr_in() {
                Some(IpAddr::V4(s.ip()))
            } else {
                addr.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip()))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_parsing() {
        assert_eq!(
            "192.0.2.10/24".parse::<Vip>(),
            Ok(Vip {
                address: "192.0.2.10".parse().unwrap(),
                prefix_len: 24
            })
        );
        assert_eq!("2001:db8::1".parse::<Vip>().unwrap().prefix_len, 128);
        assert_eq!("192.0.2.1".parse::<Vip>().unwrap().prefix_len, 32);
        assert!("192.0.2.1/33".parse::<Vip>().is_err());
        assert!("nope/24".parse::<Vip>().is_err());
    }
}
