//! The pure core of the real-server agent: desired state plus observed kernel
//! state (plus the ledger of what the agent changed) in, a list of actions
//! out. No I/O and no clock here; `kernel.rs` observes and executes.
//!
//! Each VIP expands into [`Need`]s: facts the kernel must show ("192.0.2.10/32
//! on lo", "net/ipv4/conf/all/arp_ignore = 1"). An unmet need that the agent
//! can fix becomes an [`Action`]; one it cannot (a missing interface, a route,
//! a conflicting address) makes the VIP not ready, with the reason. What the
//! ledger records but no VIP needs any more is undone, so the last VIP that
//! needed a value takes it back to its original.
//!
//! Which values each mode needs, and why:
//!
//! - DR, IPv4: the VIP on `lo` as /32; `arp_ignore=1` (answer ARP only for
//!   addresses of the receiving interface) and `arp_announce=2` (never use the
//!   VIP as ARP source) on `all`, `lo` and the interfaces facing the
//!   directors. The kernel uses the larger of `all` and the interface's value
//!   for both, so `all` alone would do; setting both is what operators expect
//!   to read back.
//! - DR, IPv6: the VIP on `lo` as /128 with `nodad`. Nothing else: the kernel
//!   answers a neighbour solicitation only for a target address of the
//!   interface the solicitation arrived on (`ndisc_recv_ns` looks the target
//!   up with `ipv6_get_ifaddr(.., dev, strict=1)`), so a VIP on `lo` is never
//!   advertised on `eth0`. The netns test `dr_ipv6_vip_not_advertised`
//!   (integration-tests, `realserver.rs`) shows it on a real kernel.
//! - TUN: the decapsulating device (see `netif::tunnel`) present and up, the VIP on it, the ARP
//!   sysctls as for DR (IPv4: the VIP is a local address, which `eth0` would
//!   otherwise answer ARP for), and `rp_filter=0` on the device and on `all`
//!   (IPv4): a decapsulated packet comes in on the tunnel with the client's
//!   source, whose route is not the tunnel, and the kernel applies
//!   max(all, dev).
//! - GUE (TUN with `--tun-type gue`): as TUN on the fallback IP tunnel
//!   device, plus a fou receive port for GUE on the director's `--tun-port`,
//!   which strips UDP and GUE and hands the inner packet to that device.
//! - NAT: nothing bound; the default route must go through the director.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

use lb_proto::v1::VipStatus;
use serde::{Deserialize, Serialize};

use super::desired::{Desired, Mode};
use crate::netif::{
    Outcome,
    fou::{FouFamily, GuePort},
    sysctl::SysctlKey,
    tunnel::TunnelDevice,
};

/// One fact the kernel must show for a VIP to be ready.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Need {
    /// The tunnel device exists.
    Tunnel(TunnelDevice),
    /// A fou receive port for GUE is open.
    GuePort(GuePort),
    /// The interface is administratively up.
    LinkUp(String),
    /// The sysctl holds this value.
    Sysctl {
        /// Which.
        key: SysctlKey,
        /// Value.
        value: String,
    },
    /// The address is on the interface.
    Address {
        /// Interface.
        device: String,
        /// Address.
        address: IpAddr,
        /// Prefix length.
        prefix_len: u8,
    },
    /// The address is on no other interface (checked only).
    Exclusive {
        /// Address.
        address: IpAddr,
        /// The only interface that may hold it.
        device: String,
    },
    /// A default route goes through the gateway (checked only).
    RouteVia {
        /// The director.
        gateway: IpAddr,
    },
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::Tunnel(d) => write!(f, "tunnel device {d}"),
            Need::GuePort(p) => write!(f, "{p}"),
            Need::LinkUp(d) => write!(f, "link {d} up"),
            Need::Sysctl { key, value } => write!(f, "{key} = {value}"),
            Need::Address {
                device,
                address,
                prefix_len,
            } => write!(f, "address {address}/{prefix_len} on {device}"),
            Need::Exclusive { address, device } => write!(f, "{address} only on {device}"),
            Need::RouteVia { gateway } => write!(f, "default route via {gateway}"),
        }
    }
}

/// A change to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create (or adopt) the tunnel device.
    CreateTunnel(TunnelDevice),
    /// Open a GUE receive port.
    AddGuePort(GuePort),
    /// Set the interface up.
    SetLinkUp(String),
    /// Write a sysctl; `original` is what it held before the agent first
    /// changed it.
    SetSysctl {
        /// Which.
        key: SysctlKey,
        /// New value.
        value: String,
        /// Value found.
        original: String,
    },
    /// Add a host address (nodad for IPv6).
    AddAddress {
        /// Interface.
        device: String,
        /// Address.
        address: IpAddr,
        /// Prefix length.
        prefix_len: u8,
    },
    /// Remove an address the agent added.
    DelAddress {
        /// Interface.
        device: String,
        /// Address.
        address: IpAddr,
        /// Prefix length.
        prefix_len: u8,
    },
    /// Put a sysctl back to its original value.
    RestoreSysctl {
        /// Which.
        key: SysctlKey,
        /// The original value.
        value: String,
    },
    /// Set an interface the agent raised back down.
    SetLinkDown(String),
    /// Delete a tunnel device the agent created.
    DeleteTunnel(String),
    /// Close a GUE receive port the agent opened.
    DelGuePort(GuePort),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::CreateTunnel(d) => write!(f, "create tunnel device {d}"),
            Action::AddGuePort(p) => write!(f, "open {p}"),
            Action::DelGuePort(p) => write!(f, "close {p}"),
            Action::SetLinkUp(d) => write!(f, "set {d} up"),
            Action::SetSysctl {
                key,
                value,
                original,
            } => write!(f, "set {key} to {value} (was {original})"),
            Action::AddAddress {
                device,
                address,
                prefix_len,
            } => write!(f, "add {address}/{prefix_len} to {device}"),
            Action::DelAddress {
                device,
                address,
                prefix_len,
            } => write!(f, "remove {address}/{prefix_len} from {device}"),
            Action::RestoreSysctl { key, value } => write!(f, "restore {key} to {value}"),
            Action::SetLinkDown(d) => write!(f, "set {d} down"),
            Action::DeleteTunnel(d) => write!(f, "delete tunnel device {d}"),
        }
    }
}

/// An address the agent added.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LedgerAddress {
    /// Interface.
    pub device: String,
    /// Address.
    pub address: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
}

/// Everything the agent changed, with the values it found, so the changes can
/// be undone exactly; persisted before each change (see `state.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    /// Sysctls changed, with their original values.
    pub sysctls: BTreeMap<SysctlKey, String>,
    /// Addresses added.
    pub addresses: BTreeSet<LedgerAddress>,
    /// Tunnel devices created (adopted fallback devices are not here).
    pub created_tunnels: BTreeSet<String>,
    /// Interfaces that were down and were set up.
    pub raised_links: BTreeSet<String>,
    /// GUE receive ports opened (ports found open are not here).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub created_gue_ports: BTreeSet<GuePort>,
}

impl Ledger {
    /// Nothing recorded: every change was undone.
    pub fn is_empty(&self) -> bool {
        self.sysctls.is_empty()
            && self.addresses.is_empty()
            && self.created_tunnels.is_empty()
            && self.raised_links.is_empty()
            && self.created_gue_ports.is_empty()
    }

    /// Records what an action is about to change (written to disk before the
    /// action runs, so a crash in between still knows the original).
    pub fn before(&mut self, action: &Action) {
        match action {
            Action::SetSysctl { key, original, .. } => {
                self.sysctls
                    .entry(key.clone())
                    .or_insert_with(|| original.clone());
            }
            Action::AddAddress {
                device,
                address,
                prefix_len,
            } => {
                self.addresses.insert(LedgerAddress {
                    device: device.clone(),
                    address: *address,
                    prefix_len: *prefix_len,
                });
            }
            Action::SetLinkUp(device) if !self.created_tunnels.contains(device) => {
                self.raised_links.insert(device.clone());
            }
            _ => {}
        }
    }

    /// Records what an action did once it succeeded.
    pub fn after(&mut self, action: &Action, outcome: Outcome) {
        match action {
            Action::CreateTunnel(d) if outcome == Outcome::Changed => {
                self.created_tunnels.insert(d.name().to_string());
                self.raised_links.remove(d.name());
            }
            Action::AddGuePort(p) if outcome == Outcome::Changed => {
                self.created_gue_ports.insert(*p);
            }
            Action::DelGuePort(p) => {
                self.created_gue_ports.remove(p);
            }
            Action::DelAddress {
                device,
                address,
                prefix_len,
            } => {
                self.addresses.remove(&LedgerAddress {
                    device: device.clone(),
                    address: *address,
                    prefix_len: *prefix_len,
                });
            }
            Action::RestoreSysctl { key, .. } => {
                self.sysctls.remove(key);
            }
            Action::SetLinkDown(d) => {
                self.raised_links.remove(d);
            }
            Action::DeleteTunnel(d) => {
                self.created_tunnels.remove(d);
                self.raised_links.remove(d);
            }
            _ => {}
        }
    }
}

/// An address seen on an interface.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeenAddress {
    /// Interface.
    pub device: String,
    /// Address.
    pub address: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// IPv6 DAD not finished or failed: not usable.
    pub tentative: bool,
}

/// What the kernel showed when it was last read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Interfaces by name: up or not.
    pub links: BTreeMap<String, bool>,
    /// Every address.
    pub addresses: Vec<SeenAddress>,
    /// The sysctls that were asked for and could be read.
    pub sysctls: BTreeMap<SysctlKey, String>,
    /// Gateways of the main table's default routes (IPv4 and IPv6).
    pub default_gateways: BTreeSet<IpAddr>,
    /// Open GUE receive ports (read only when some VIP or the ledger has one).
    pub gue_ports: BTreeSet<GuePort>,
}

/// A difference found on something that had been verified before, and what
/// was done about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// What drifted.
    pub need: Need,
    /// What was done.
    pub action: Action,
    /// VIPs that depend on it.
    pub vips: Vec<IpAddr>,
}

/// The actions of one pass, and the drift they repair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// In the order to run them.
    pub actions: Vec<Action>,
    /// Repairs of things that had been verified.
    pub drift: Vec<Drift>,
}

/// What a new configuration changes against the running one, VIP by VIP.
/// Only a summary: the planner itself needs no notion of "old", since what
/// the old configuration changed is in the ledger and whatever the new one
/// does not need is undone from there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconfiguration {
    /// VIPs only the new configuration has.
    pub added: Vec<IpAddr>,
    /// VIPs only the old configuration had.
    pub removed: Vec<IpAddr>,
    /// VIPs held another way (forwarding or tunnel type).
    pub changed: Vec<IpAddr>,
    /// VIPs held as before (a change of their service list only is here).
    pub unchanged: Vec<IpAddr>,
    /// The interfaces facing the directors changed.
    pub interfaces_changed: bool,
}

impl Reconfiguration {
    /// Compares the VIPs of `old` and `new`, in the new configuration's order
    /// (removed ones in the old one's).
    pub fn between(old: &Desired, new: &Desired) -> Self {
        let mut r = Reconfiguration {
            interfaces_changed: old.interfaces != new.interfaces,
            ..Default::default()
        };
        for vip in &new.vips {
            match old.vips.iter().find(|o| o.address == vip.address) {
                None => r.added.push(vip.address),
                Some(o) if o.mode != vip.mode => r.changed.push(vip.address),
                Some(_) => r.unchanged.push(vip.address),
            }
        }
        r.removed = old
            .vips
            .iter()
            .filter(|o| !new.vips.iter().any(|v| v.address == o.address))
            .map(|o| o.address)
            .collect();
        r
    }

    /// Nothing that the kernel would show differently.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && !self.interfaces_changed
    }
}

const ARP_IGNORE: &str = "arp_ignore";
const ARP_ANNOUNCE: &str = "arp_announce";
const RP_FILTER: &str = "rp_filter";

/// The interfaces whose ARP sysctls are set: the configured ones, or every
/// interface with an IPv4 address other than `lo` and the tunnel devices.
pub fn arp_interfaces(desired: &Desired, observed: &Observed) -> Vec<String> {
    if !desired.interfaces.is_empty() {
        return desired.interfaces.clone();
    }
    let mut names: BTreeSet<String> = BTreeSet::new();
    for a in &observed.addresses {
        if a.address.is_ipv4() && a.device != "lo" && TunnelDevice::from_name(&a.device).is_none() {
            names.insert(a.device.clone());
        }
    }
    names.into_iter().collect()
}

fn arp_needs(interfaces: &[String], extra: &[&str], out: &mut Vec<Need>) {
    let devices = ["all"]
        .iter()
        .chain(extra.iter())
        .map(|s| s.to_string())
        .chain(interfaces.iter().cloned());
    for device in devices {
        out.push(Need::Sysctl {
            key: SysctlKey::ipv4(&device, ARP_IGNORE),
            value: "1".into(),
        });
        out.push(Need::Sysctl {
            key: SysctlKey::ipv4(&device, ARP_ANNOUNCE),
            value: "2".into(),
        });
    }
}

/// The needs of one VIP, given the interfaces facing the directors.
pub fn vip_needs(vip: &super::desired::Vip, interfaces: &[String]) -> Vec<Need> {
    let prefix_len = if vip.address.is_ipv4() { 32 } else { 128 };
    let mut needs = Vec::new();
    match &vip.mode {
        Mode::Dr => {
            needs.push(Need::LinkUp("lo".into()));
            if vip.address.is_ipv4() {
                arp_needs(interfaces, &["lo"], &mut needs);
            }
            needs.push(Need::Address {
                device: "lo".into(),
                address: vip.address,
                prefix_len,
            });
            needs.push(Need::Exclusive {
                address: vip.address,
                device: "lo".into(),
            });
        }
        Mode::Tun(dev) | Mode::Gue { device: dev, .. } => {
            let name = dev.name().to_string();
            needs.push(Need::Tunnel(*dev));
            if let Mode::Gue { port, .. } = &vip.mode {
                needs.push(Need::GuePort(GuePort {
                    port: *port,
                    family: if vip.address.is_ipv4() {
                        FouFamily::Ipv4
                    } else {
                        FouFamily::Ipv6
                    },
                }));
            }
            needs.push(Need::LinkUp(name.clone()));
            if vip.address.is_ipv4() {
                arp_needs(interfaces, &[], &mut needs);
                for device in ["all", name.as_str()] {
                    needs.push(Need::Sysctl {
                        key: SysctlKey::ipv4(device, RP_FILTER),
                        value: "0".into(),
                    });
                }
            }
            needs.push(Need::Address {
                device: name.clone(),
                address: vip.address,
                prefix_len,
            });
            needs.push(Need::Exclusive {
                address: vip.address,
                device: name,
            });
        }
        Mode::Nat { gateway } => needs.push(Need::RouteVia { gateway: *gateway }),
    }
    needs
}

/// Why a need is not met, or `None` when it is.
pub fn unmet(need: &Need, observed: &Observed) -> Option<String> {
    match need {
        Need::Tunnel(d) => (!observed.links.contains_key(d.name()))
            .then(|| format!("tunnel device {d} does not exist")),
        Need::GuePort(p) => (!observed.gue_ports.contains(p)).then(|| format!("{p} is not open")),
        Need::LinkUp(d) => match observed.links.get(d) {
            None => Some(format!("interface {d} does not exist")),
            Some(false) => Some(format!("interface {d} is down")),
            Some(true) => None,
        },
        Need::Sysctl { key, value } => match observed.sysctls.get(key) {
            None if !observed.links.contains_key(&key.device)
                && key.device != "all"
                && key.device != "default" =>
            {
                Some(format!("interface {} does not exist", key.device))
            }
            None => Some(format!("{key} cannot be read")),
            Some(v) if v == value => None,
            Some(v) => Some(format!("{key} is {v} (want {value})")),
        },
        Need::Address {
            device,
            address,
            prefix_len,
        } => {
            let seen = observed
                .addresses
                .iter()
                .find(|a| &a.device == device && a.address == *address && a.prefix_len == *prefix_len);
            match seen {
                None => Some(format!("{address}/{prefix_len} is not on {device}")),
                Some(a) if a.tentative => Some(format!(
                    "{address}/{prefix_len} on {device} is tentative (duplicate address detection)"
                )),
                Some(_) => None,
            }
        }
        Need::Exclusive { address, device } => observed
            .addresses
            .iter()
            .find(|a| a.address == *address && &a.device != device)
            .map(|a| {
                format!(
                    "conflict: {address} is also on {}, which would answer for it; remove it there",
                    a.device
                )
            }),
        Need::RouteVia { gateway } => (!observed.default_gateways.contains(gateway)).then(|| {
            format!(
                "the default route does not go through the director {gateway}: NAT replies would bypass it"
            )
        }),
    }
}

/// The action that meets a need, when the agent can act on it now.
fn fix(need: &Need, observed: &Observed) -> Option<Action> {
    match need {
        Need::Tunnel(d) => Some(Action::CreateTunnel(*d)),
        Need::GuePort(p) => Some(Action::AddGuePort(*p)),
        Need::LinkUp(d) => observed
            .links
            .contains_key(d)
            .then(|| Action::SetLinkUp(d.clone())),
        Need::Sysctl { key, value } => {
            observed.sysctls.get(key).map(|original| Action::SetSysctl {
                key: key.clone(),
                value: value.clone(),
                original: original.clone(),
            })
        }
        Need::Address {
            device,
            address,
            prefix_len,
        } => {
            let there = observed.addresses.iter().any(|a| {
                &a.device == device && a.address == *address && a.prefix_len == *prefix_len
            });
            (observed.links.contains_key(device) && !there).then(|| Action::AddAddress {
                device: device.clone(),
                address: *address,
                prefix_len: *prefix_len,
            })
        }
        Need::Exclusive { .. } | Need::RouteVia { .. } => None,
    }
}

fn rank(action: &Action) -> u8 {
    // Removals of addresses first, so a VIP stops being local before the
    // sysctls that hide it go back; sysctls before addresses, so a VIP never
    // becomes local while ARP would still answer for it.
    match action {
        Action::DelAddress { .. } => 0,
        Action::CreateTunnel(_) | Action::AddGuePort(_) => 1,
        Action::SetLinkUp(_) => 2,
        Action::SetSysctl { .. } => 3,
        Action::RestoreSysctl { .. } => 4,
        Action::AddAddress { .. } => 5,
        Action::SetLinkDown(_) => 6,
        Action::DeleteTunnel(_) | Action::DelGuePort(_) => 7,
    }
}

/// The reconciler's memory between passes: the ledger, what was verified,
/// and how often each VIP was repaired.
#[derive(Debug, Clone, Default)]
pub struct Reconciler {
    /// What the agent changed.
    pub ledger: Ledger,
    /// Needs read back as met at least once since they became needed: an
    /// unmet one of these is drift.
    verified: BTreeSet<Need>,
    /// Drift being repaired, counted once read back as met.
    repairing: BTreeMap<Need, Vec<IpAddr>>,
    repairs: BTreeMap<IpAddr, u64>,
}

impl Reconciler {
    /// Starts from a ledger read back from disk (or an empty one).
    pub fn new(ledger: Ledger) -> Self {
        Reconciler {
            ledger,
            ..Default::default()
        }
    }

    /// Every need of every VIP, with the VIPs that share it.
    fn needs(desired: Option<&Desired>, observed: &Observed) -> BTreeMap<Need, Vec<IpAddr>> {
        let mut all: BTreeMap<Need, Vec<IpAddr>> = BTreeMap::new();
        if let Some(desired) = desired {
            let interfaces = arp_interfaces(desired, observed);
            for vip in &desired.vips {
                for need in vip_needs(vip, &interfaces) {
                    all.entry(need).or_default().push(vip.address);
                }
            }
        }
        all
    }

    /// The sysctls to read for the next pass: those needed and those the
    /// ledger holds.
    pub fn sysctl_keys(
        &self,
        desired: Option<&Desired>,
        observed: &Observed,
    ) -> BTreeSet<SysctlKey> {
        let mut keys: BTreeSet<SysctlKey> = self.ledger.sysctls.keys().cloned().collect();
        for need in Self::needs(desired, observed).into_keys() {
            if let Need::Sysctl { key, .. } = need {
                keys.insert(key);
            }
        }
        keys
    }

    /// One pass: what to do so the kernel shows `desired` (`None`: undo
    /// everything the ledger holds).
    pub fn plan(&mut self, desired: Option<&Desired>, observed: &Observed) -> Plan {
        let needs = Self::needs(desired, observed);
        let mut plan = Plan::default();
        // A need that goes away and comes back later starts afresh.
        self.verified.retain(|n| needs.contains_key(n));
        self.repairing.retain(|n, _| needs.contains_key(n));

        for (need, vips) in &needs {
            if unmet(need, observed).is_none() {
                continue;
            }
            let Some(action) = fix(need, observed) else {
                continue;
            };
            if self.verified.contains(need) && !self.repairing.contains_key(need) {
                self.repairing.insert(need.clone(), vips.clone());
                plan.drift.push(Drift {
                    need: need.clone(),
                    action: action.clone(),
                    vips: vips.clone(),
                });
            }
            plan.actions.push(action);
        }

        // Undo what no VIP needs any more.
        let needed_addresses: BTreeSet<LedgerAddress> = needs
            .keys()
            .filter_map(|n| match n {
                Need::Address {
                    device,
                    address,
                    prefix_len,
                } => Some(LedgerAddress {
                    device: device.clone(),
                    address: *address,
                    prefix_len: *prefix_len,
                }),
                _ => None,
            })
            .collect();
        let needed_keys: BTreeSet<&SysctlKey> = needs
            .keys()
            .filter_map(|n| match n {
                Need::Sysctl { key, .. } => Some(key),
                _ => None,
            })
            .collect();
        let needed_up: BTreeSet<&str> = needs
            .keys()
            .filter_map(|n| match n {
                Need::LinkUp(d) => Some(d.as_str()),
                _ => None,
            })
            .collect();
        let needed_tunnels: BTreeSet<&str> = needs
            .keys()
            .filter_map(|n| match n {
                Need::Tunnel(d) => Some(d.name()),
                _ => None,
            })
            .collect();
        for a in &self.ledger.addresses {
            if !needed_addresses.contains(a) {
                plan.actions.push(Action::DelAddress {
                    device: a.device.clone(),
                    address: a.address,
                    prefix_len: a.prefix_len,
                });
            }
        }
        for (key, original) in &self.ledger.sysctls {
            if !needed_keys.contains(key) {
                plan.actions.push(Action::RestoreSysctl {
                    key: key.clone(),
                    value: original.clone(),
                });
            }
        }
        for device in &self.ledger.raised_links {
            if !needed_up.contains(device.as_str()) && !self.ledger.created_tunnels.contains(device)
            {
                plan.actions.push(Action::SetLinkDown(device.clone()));
            }
        }
        for device in &self.ledger.created_tunnels {
            if !needed_tunnels.contains(device.as_str()) {
                plan.actions.push(Action::DeleteTunnel(device.clone()));
            }
        }
        for port in &self.ledger.created_gue_ports {
            if !needs.contains_key(&Need::GuePort(*port)) {
                plan.actions.push(Action::DelGuePort(*port));
            }
        }
        plan.actions.sort_by_key(rank);
        plan
    }

    /// Readiness of every VIP from a fresh read of the kernel; what is met
    /// now counts as verified, so a later difference is reported as drift,
    /// and drift being repaired that is met now counts as a repair.
    pub fn status(&mut self, desired: &Desired, observed: &Observed) -> Vec<VipStatus> {
        let interfaces = arp_interfaces(desired, observed);
        let repaired: Vec<Need> = self
            .repairing
            .keys()
            .filter(|n| unmet(n, observed).is_none())
            .cloned()
            .collect();
        for need in repaired {
            for vip in self.repairing.remove(&need).unwrap_or_default() {
                *self.repairs.entry(vip).or_default() += 1;
            }
        }
        desired
            .vips
            .iter()
            .map(|vip| {
                let mut reasons = Vec::new();
                for need in vip_needs(vip, &interfaces) {
                    match unmet(&need, observed) {
                        None => {
                            self.verified.insert(need);
                        }
                        Some(reason) => reasons.push(reason),
                    }
                }
                VipStatus {
                    address: vip.address.to_string(),
                    forwarding: vip.mode.forwarding() as i32,
                    ready: reasons.is_empty(),
                    reason: reasons.join("; "),
                    repairs: self.repairs.get(&vip.address).copied().unwrap_or(0),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    //! The core against a simulated kernel: `World` holds every link, address
    //! and sysctl; `observe` shows the core what the driver would read, and
    //! `apply` does what the kernel does with each action.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct World {
        links: BTreeMap<String, bool>,
        addresses: BTreeSet<(String, IpAddr, u8)>,
        sysctls: BTreeMap<SysctlKey, String>,
        gateways: BTreeSet<IpAddr>,
        gue_ports: BTreeSet<GuePort>,
        /// Devices the "kernel" refuses to create (no module).
        no_module: bool,
    }

    impl World {
        /// lo and eth0 (10.0.0.5/24), every ARP and rp_filter sysctl at
        /// `arp`/`rp`, default route via 10.0.0.1.
        fn new(arp: &str, rp: &str) -> World {
            let mut w = World {
                links: BTreeMap::new(),
                addresses: BTreeSet::new(),
                sysctls: BTreeMap::new(),
                gateways: ["10.0.0.1".parse().unwrap()].into(),
                gue_ports: BTreeSet::new(),
                no_module: false,
            };
            for dev in ["all", "default", "lo", "eth0"] {
                w.add_device_sysctls(dev, arp, rp);
            }
            w.links.insert("lo".into(), true);
            w.links.insert("eth0".into(), true);
            w.addresses
                .insert(("lo".into(), "127.0.0.1".parse().unwrap(), 8));
            w.addresses
                .insert(("eth0".into(), "10.0.0.5".parse().unwrap(), 24));
            w
        }

        fn add_device_sysctls(&mut self, dev: &str, arp: &str, rp: &str) {
            for (name, v) in [(ARP_IGNORE, arp), (ARP_ANNOUNCE, arp), (RP_FILTER, rp)] {
                self.sysctls.insert(SysctlKey::ipv4(dev, name), v.into());
            }
        }

        fn observe(&self, r: &Reconciler, desired: Option<&Desired>) -> Observed {
            let mut o = Observed {
                links: self.links.clone(),
                addresses: self
                    .addresses
                    .iter()
                    .map(|(d, a, p)| SeenAddress {
                        device: d.clone(),
                        address: *a,
                        prefix_len: *p,
                        tentative: false,
                    })
                    .collect(),
                sysctls: BTreeMap::new(),
                default_gateways: self.gateways.clone(),
                gue_ports: self.gue_ports.clone(),
            };
            for key in r.sysctl_keys(desired, &o) {
                if let Some(v) = self.sysctls.get(&key) {
                    o.sysctls.insert(key, v.clone());
                }
            }
            o
        }

        fn apply(&mut self, action: &Action) -> Outcome {
            match action {
                Action::CreateTunnel(d) => {
                    if self.links.contains_key(d.name()) {
                        return Outcome::AlreadyThere;
                    }
                    assert!(!self.no_module, "no module");
                    self.links.insert(d.name().into(), false);
                    // A new device takes `default`'s values.
                    let arp = self.sysctls[&SysctlKey::ipv4("default", ARP_IGNORE)].clone();
                    let rp = self.sysctls[&SysctlKey::ipv4("default", RP_FILTER)].clone();
                    self.add_device_sysctls(d.name(), &arp, &rp);
                    Outcome::Changed
                }
                Action::SetLinkUp(d) => {
                    *self.links.get_mut(d).unwrap() = true;
                    Outcome::Changed
                }
                Action::SetLinkDown(d) => {
                    *self.links.get_mut(d).unwrap() = false;
                    Outcome::Changed
                }
                Action::SetSysctl { key, value, .. } | Action::RestoreSysctl { key, value } => {
                    assert!(self.sysctls.contains_key(key), "{key} missing");
                    self.sysctls.insert(key.clone(), value.clone());
                    Outcome::Changed
                }
                Action::AddAddress {
                    device,
                    address,
                    prefix_len,
                } => {
                    assert!(self.links.contains_key(device));
                    if self
                        .addresses
                        .insert((device.clone(), *address, *prefix_len))
                    {
                        Outcome::Changed
                    } else {
                        Outcome::AlreadyThere
                    }
                }
                Action::DelAddress {
                    device,
                    address,
                    prefix_len,
                } => {
                    if self
                        .addresses
                        .remove(&(device.clone(), *address, *prefix_len))
                    {
                        Outcome::Changed
                    } else {
                        Outcome::AlreadyThere
                    }
                }
                Action::DeleteTunnel(d) => {
                    self.links.remove(d);
                    self.addresses.retain(|(dev, _, _)| dev != d);
                    self.sysctls.retain(|k, _| &k.device != d);
                    Outcome::Changed
                }
                Action::AddGuePort(p) => {
                    if self.gue_ports.insert(*p) {
                        Outcome::Changed
                    } else {
                        Outcome::AlreadyThere
                    }
                }
                Action::DelGuePort(p) => {
                    self.gue_ports.remove(p);
                    Outcome::Changed
                }
            }
        }

        /// What the driver does: passes until the plan is empty; returns
        /// every action and drift seen.
        fn converge(
            &mut self,
            r: &mut Reconciler,
            desired: Option<&Desired>,
        ) -> (Vec<Action>, Vec<Drift>) {
            let mut actions = Vec::new();
            let mut drift = Vec::new();
            for _ in 0..4 {
                let plan = r.plan(desired, &self.observe(r, desired));
                if plan.actions.is_empty() {
                    return (actions, drift);
                }
                drift.extend(plan.drift);
                for a in plan.actions {
                    r.ledger.before(&a);
                    let outcome = self.apply(&a);
                    r.ledger.after(&a, outcome);
                    actions.push(a);
                }
            }
            panic!("did not converge in 4 passes: {actions:#?}");
        }

        fn status(&self, r: &mut Reconciler, desired: &Desired) -> Vec<VipStatus> {
            r.status(desired, &self.observe(r, Some(desired)))
        }
    }

    fn desired(yaml: &str) -> Desired {
        Desired::from_config(&lb_proto::yaml::from_str(yaml).unwrap()).unwrap()
    }

    fn key(dev: &str, name: &str) -> SysctlKey {
        SysctlKey::ipv4(dev, name)
    }

    #[test]
    fn dr_sets_arp_sysctls_before_binding_the_vip_and_is_ready() {
        // In: one DR VIP on a host with every ARP sysctl at 0.
        // Out: arp_ignore=1/arp_announce=2 on all, lo, eth0 first, then the
        // VIP on lo; a second pass has nothing to do; the VIP is ready.
        let d = desired("vips: [{address: 192.0.2.10}]");
        let mut w = World::new("0", "1");
        let mut r = Reconciler::default();
        let (actions, drift) = w.converge(&mut r, Some(&d));
        assert!(drift.is_empty());
        let add = actions
            .iter()
            .position(|a| matches!(a, Action::AddAddress { .. }))
            .unwrap();
        assert_eq!(add, actions.len() - 1, "address last: {actions:#?}");
        assert_eq!(actions.len(), 7);
        for dev in ["all", "lo", "eth0"] {
            assert_eq!(w.sysctls[&key(dev, ARP_IGNORE)], "1");
            assert_eq!(w.sysctls[&key(dev, ARP_ANNOUNCE)], "2");
            assert_eq!(r.ledger.sysctls[&key(dev, ARP_IGNORE)], "0");
        }
        assert!(
            w.addresses
                .contains(&("lo".into(), "192.0.2.10".parse().unwrap(), 32))
        );
        assert!(
            r.plan(Some(&d), &w.observe(&r, Some(&d)))
                .actions
                .is_empty()
        );
        let status = w.status(&mut r, &d);
        assert!(status[0].ready, "{status:?}");
        assert_eq!(status[0].forwarding, lb_proto::v1::Forwarding::Dr as i32);
    }

    #[test]
    fn ipv6_dr_binds_nodad_on_lo_and_touches_no_sysctl() {
        let d = desired("vips: [{address: '2001:db8::10'}]");
        let mut w = World::new("0", "1");
        let mut r = Reconciler::default();
        let (actions, _) = w.converge(&mut r, Some(&d));
        assert_eq!(
            actions,
            vec![Action::AddAddress {
                device: "lo".into(),
                address: "2001:db8::10".parse().unwrap(),
                prefix_len: 128
            }]
        );
        assert!(r.ledger.sysctls.is_empty());
    }

    #[test]
    fn a_shared_sysctl_is_restored_only_when_the_last_vip_goes() {
        // In: two DR VIPs applied, then one removed, then the other.
        // Out: after the first removal only its address goes; after the
        // second, every sysctl is back to its original value.
        let both = desired("vips: [{address: 192.0.2.10}, {address: 192.0.2.11}]");
        let one = desired("vips: [{address: 192.0.2.11}]");
        let mut w = World::new("0", "1");
        let before = w.clone();
        let mut r = Reconciler::default();
        w.converge(&mut r, Some(&both));
        let (actions, _) = w.converge(&mut r, Some(&one));
        assert_eq!(
            actions,
            vec![Action::DelAddress {
                device: "lo".into(),
                address: "192.0.2.10".parse().unwrap(),
                prefix_len: 32
            }]
        );
        assert_eq!(w.sysctls[&key("all", ARP_IGNORE)], "1");
        w.converge(&mut r, None);
        assert_eq!(w, before);
        assert!(r.ledger.is_empty());
    }

    #[test]
    fn values_already_right_and_addresses_already_there_are_left_alone() {
        // In: the VIP already on lo and arp_ignore already 1 on eth0 (an old
        // rs_init script ran). Out: the undo removes neither.
        let d = desired("vips: [{address: 192.0.2.10}]");
        let mut w = World::new("0", "1");
        w.sysctls.insert(key("eth0", ARP_IGNORE), "1".into());
        w.addresses
            .insert(("lo".into(), "192.0.2.10".parse().unwrap(), 32));
        let before = w.clone();
        let mut r = Reconciler::default();
        w.converge(&mut r, Some(&d));
        assert!(!r.ledger.sysctls.contains_key(&key("eth0", ARP_IGNORE)));
        assert!(r.ledger.addresses.is_empty());
        w.converge(&mut r, None);
        assert_eq!(w, before);
    }

    #[test]
    fn drift_after_verification_is_repaired_and_counted() {
        // In: a converged, verified DR VIP; then the VIP deleted and a sysctl
        // reset by hand. Out: both repaired in one pass, reported as drift,
        // and counted in the VIP's repairs.
        let d = desired("vips: [{address: 192.0.2.10}]");
        let mut w = World::new("0", "1");
        let mut r = Reconciler::default();
        w.converge(&mut r, Some(&d));
        w.status(&mut r, &d);
        w.addresses
            .remove(&("lo".into(), "192.0.2.10".parse().unwrap(), 32));
        w.sysctls.insert(key("all", ARP_ANNOUNCE), "0".into());
        let status = w.status(&mut r.clone(), &d);
        assert!(!status[0].ready);
        assert!(
            status[0].reason.contains("192.0.2.10/32 is not on lo"),
            "{}",
            status[0].reason
        );
        let (actions, drift) = w.converge(&mut r, Some(&d));
        assert_eq!(actions.len(), 2);
        let objects: Vec<String> = drift.iter().map(|d| d.need.to_string()).collect();
        assert_eq!(
            objects,
            vec![
                "net/ipv4/conf/all/arp_announce = 2".to_string(),
                "address 192.0.2.10/32 on lo".to_string()
            ]
        );
        let status = w.status(&mut r, &d);
        assert!(status[0].ready);
        assert_eq!(status[0].repairs, 2);
        // The original is still the one from before the agent, not the
        // value the hand reset left.
        assert_eq!(r.ledger.sysctls[&key("all", ARP_ANNOUNCE)], "0");
    }

    #[test]
    fn drift_between_a_repair_and_the_next_read_back_is_still_drift() {
        // In: a verified VIP; the VIP deleted, repaired, and before the
        // status read a sysctl reset. Out: the sysctl's repair is drift too
        // (it was verified once), and both repairs are counted once each.
        let d = desired("vips: [{address: 192.0.2.10}]");
        let mut w = World::new("0", "1");
        let mut r = Reconciler::default();
        w.converge(&mut r, Some(&d));
        w.status(&mut r, &d);
        w.addresses
            .remove(&("lo".into(), "192.0.2.10".parse().unwrap(), 32));
        let (_, drift) = w.converge(&mut r, Some(&d));
        assert_eq!(drift.len(), 1);
        w.sysctls.insert(key("lo", ARP_IGNORE), "0".into());
        assert!(!w.status(&mut r, &d)[0].ready);
        let (_, drift) = w.converge(&mut r, Some(&d));
        assert_eq!(drift.len(), 1, "{drift:?}");
        let s = &w.status(&mut r, &d)[0];
        assert!(s.ready);
        assert_eq!(s.repairs, 2);
    }

    #[test]
    fn first_application_is_not_drift() {
        let d = desired("vips: [{address: 192.0.2.10}]");
        let mut w = World::new("0", "1");
        let mut r = Reconciler::default();
        let (_, drift) = w.converge(&mut r, Some(&d));
        assert!(drift.is_empty());
        assert_eq!(w.status(&mut r, &d)[0].repairs, 0);
    }

    #[test]
    fn tun_creates_the_device_then_sets_its_sysctls_and_undo_deletes_it() {
        // In: an IPv4 TUN VIP on a host without tunl0 whose new devices get
        // rp_filter=1. Out: tunl0 created, up, rp_filter 0 on it and on all,
        // ARP sysctls on all and eth0, the VIP on tunl0; undo deletes tunl0
        // and restores the rest exactly.
        let d = desired("vips: [{address: 192.0.2.20, forwarding: tun}]");
        let mut w = World::new("0", "1");
        let before = w.clone();
        let mut r = Reconciler::default();
        let (actions, _) = w.converge(&mut r, Some(&d));
        assert_eq!(actions[0], Action::CreateTunnel(TunnelDevice::Ipip));
        assert_eq!(w.links.get("tunl0"), Some(&true));
        assert_eq!(w.sysctls[&key("tunl0", RP_FILTER)], "0");
        assert_eq!(w.sysctls[&key("all", RP_FILTER)], "0");
        assert_eq!(w.sysctls[&key("eth0", ARP_IGNORE)], "1");
        assert!(
            w.addresses
                .contains(&("tunl0".into(), "192.0.2.20".parse().unwrap(), 32))
        );
        assert!(r.ledger.created_tunnels.contains("tunl0"));
        assert!(w.status(&mut r, &d)[0].ready);
        w.converge(&mut r, None);
        assert_eq!(w, before);
    }

    #[test]
    fn an_adopted_fallback_tunnel_is_set_down_again_not_deleted() {
        let d = desired("vips: [{address: 192.0.2.20, forwarding: tun}]");
        let mut w = World::new("0", "1");
        w.links.insert("tunl0".into(), false);
        w.add_device_sysctls("tunl0", "0", "1");
        let before = w.clone();
        let mut r = Reconciler::default();
        w.converge(&mut r, Some(&d));
        assert!(r.ledger.created_tunnels.is_empty());
        assert!(r.ledger.raised_links.contains("tunl0"));
        let (undo, _) = w.converge(&mut r, None);
        assert!(undo.contains(&Action::SetLinkDown("tunl0".into())));
        assert_eq!(w, before);
    }

    #[test]
    fn a_deleted_tunnel_comes_back_as_drift() {
        let d = desired("vips: [{address: 192.0.2.20, forwarding: tun}]");
        let mut w = World::new("0", "1");
        let mut r = Reconciler::default();
        w.converge(&mut r, Some(&d));
        w.status(&mut r, &d);
        w.apply(&Action::DeleteTunnel("tunl0".into()));
        let (actions, drift) = w.converge(&mut r, Some(&d));
        assert_eq!(actions[0], Action::CreateTunnel(TunnelDevice::Ipip));
        assert!(
            drift
                .iter()
                .any(|d| d.need == Need::Tunnel(TunnelDevice::Ipip))
        );
        assert!(w.status(&mut r, &d)[0].ready);
    }

    #[test]
    fn a_vip_on_another_interface_is_a_conflict_left_for_the_operator() {
        let d = desired("vips: [{address: 192.0.2.10}]");
        let mut w = World::new("0", "1");
        w.addresses
            .insert(("eth0".into(), "192.0.2.10".parse().unwrap(), 32));
        let mut r = Reconciler::default();
        let (actions, _) = w.converge(&mut r, Some(&d));
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::DelAddress { .. }))
        );
        let s = &w.status(&mut r, &d)[0];
        assert!(!s.ready);
        assert!(
            s.reason.contains("conflict: 192.0.2.10 is also on eth0"),
            "{}",
            s.reason
        );
    }

    #[test]
    fn nat_binds_nothing_and_is_ready_only_through_the_director() {
        let d = desired("vips: [{address: 192.0.2.30, forwarding: nat, natGateway: 10.0.0.1}]");
        let mut w = World::new("0", "1");
        let before = w.clone();
        let mut r = Reconciler::default();
        let (actions, _) = w.converge(&mut r, Some(&d));
        assert!(actions.is_empty());
        assert_eq!(w, before);
        assert!(w.status(&mut r, &d)[0].ready);
        w.gateways = ["10.0.0.254".parse().unwrap()].into();
        let s = &w.status(&mut r, &d)[0];
        assert!(!s.ready);
        assert!(
            s.reason
                .contains("does not go through the director 10.0.0.1")
        );
    }

    #[test]
    fn a_missing_configured_interface_makes_the_vip_not_ready() {
        let d = desired("vips: [{address: 192.0.2.10}]\ninterfaces: [eth9]");
        let mut w = World::new("0", "1");
        let mut r = Reconciler::default();
        w.converge(&mut r, Some(&d));
        let s = &w.status(&mut r, &d)[0];
        assert!(!s.ready);
        assert!(
            s.reason.contains("interface eth9 does not exist"),
            "{}",
            s.reason
        );
    }

    #[test]
    fn a_restarted_agent_keeps_the_first_originals() {
        // In: the agent applied, "restarted" with its ledger (as read from
        // disk), applied again, then undone. Out: the values from before the
        // first start.
        let d = desired("vips: [{address: 192.0.2.10}]");
        let mut w = World::new("0", "1");
        let before = w.clone();
        let mut r = Reconciler::default();
        w.converge(&mut r, Some(&d));
        let json = serde_json::to_string(&r.ledger).unwrap();
        let mut r2 = Reconciler::new(serde_json::from_str(&json).unwrap());
        w.converge(&mut r2, Some(&d));
        w.converge(&mut r2, None);
        assert_eq!(w, before);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn reconfiguration_names_added_removed_changed_and_unchanged_vips() {
        let old = desired(
            "vips: [{address: 192.0.2.10}, {address: 192.0.2.11}, {address: 192.0.2.12, services: [a]}]",
        );
        let new = desired(
            "vips: [{address: 192.0.2.12, services: [a, b]}, {address: 192.0.2.11, forwarding: tun}, {address: 192.0.2.13}]\ninterfaces: [eth0]",
        );
        let r = Reconfiguration::between(&old, &new);
        assert_eq!(r.added, vec![ip("192.0.2.13")]);
        assert_eq!(r.removed, vec![ip("192.0.2.10")]);
        assert_eq!(r.changed, vec![ip("192.0.2.11")]);
        assert_eq!(
            r.unchanged,
            vec![ip("192.0.2.12")],
            "a service list is no kernel change"
        );
        assert!(r.interfaces_changed);
        assert!(!r.is_empty());
        assert!(Reconfiguration::between(&new, &new).is_empty());
    }

    #[test]
    fn a_vip_added_to_a_running_configuration_touches_only_its_address() {
        // In: a converged DR VIP, then a configuration with a second DR VIP.
        // Out: the one action is the new address on lo: the ARP sysctls are
        // already right and the first VIP is left alone.
        let one = desired("vips: [{address: 192.0.2.10}]");
        let two = desired("vips: [{address: 192.0.2.10}, {address: 192.0.2.11}]");
        let mut w = World::new("0", "1");
        let mut r = Reconciler::default();
        w.converge(&mut r, Some(&one));
        w.status(&mut r, &one);
        let (actions, drift) = w.converge(&mut r, Some(&two));
        assert!(drift.is_empty());
        assert_eq!(
            actions,
            vec![Action::AddAddress {
                device: "lo".into(),
                address: ip("192.0.2.11"),
                prefix_len: 32
            }]
        );
        assert!(w.status(&mut r, &two).iter().all(|s| s.ready));
    }

    #[test]
    fn a_vip_that_changes_mode_moves_and_only_the_values_no_vip_needs_go_back() {
        // In: DR VIPs .10 and .11 converged; then .11 moves to TUN; then .11
        // is removed; then .10 too.
        // Out: the move takes .11 off lo and puts it on a new tunl0 with
        // rp_filter 0, leaving .10 and the ARP sysctls alone. The removal
        // restores rp_filter and deletes tunl0, but keeps the ARP sysctls,
        // which .10 still needs. The last removal restores everything.
        let dr = desired("vips: [{address: 192.0.2.10}, {address: 192.0.2.11}]");
        let tun = desired("vips: [{address: 192.0.2.10}, {address: 192.0.2.11, forwarding: tun}]");
        let only = desired("vips: [{address: 192.0.2.10}]");
        let none = desired("vips: []");
        let mut w = World::new("0", "1");
        let before = w.clone();
        let mut r = Reconciler::default();
        w.converge(&mut r, Some(&dr));
        w.status(&mut r, &dr);
        let arp_after_dr: Vec<_> = w
            .sysctls
            .iter()
            .filter(|(k, _)| k.name != RP_FILTER)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();

        let (actions, drift) = w.converge(&mut r, Some(&tun));
        assert!(drift.is_empty(), "{drift:?}");
        assert_eq!(
            actions[0],
            Action::DelAddress {
                device: "lo".into(),
                address: ip("192.0.2.11"),
                prefix_len: 32
            },
            "off lo first: {actions:#?}"
        );
        assert!(actions.contains(&Action::CreateTunnel(TunnelDevice::Ipip)));
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::RestoreSysctl { .. })
                    || matches!(a, Action::AddAddress { device, .. } if device == "lo")),
            "{actions:#?}"
        );
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::SetSysctl { key, .. } if key.name != RP_FILTER))
        );
        assert!(w.addresses.contains(&("lo".into(), ip("192.0.2.10"), 32)));
        assert!(
            w.addresses
                .contains(&("tunl0".into(), ip("192.0.2.11"), 32))
        );
        assert_eq!(w.sysctls[&key("all", RP_FILTER)], "0");
        assert!(w.status(&mut r, &tun).iter().all(|s| s.ready));

        let (actions, _) = w.converge(&mut r, Some(&only));
        assert!(actions.contains(&Action::RestoreSysctl {
            key: key("all", RP_FILTER),
            value: "1".into()
        }));
        assert!(actions.contains(&Action::DeleteTunnel("tunl0".into())));
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::RestoreSysctl { key, .. } if key.name != RP_FILTER)),
            "ARP sysctls still needed by 192.0.2.10: {actions:#?}"
        );
        let arp_now: Vec<_> = w
            .sysctls
            .iter()
            .filter(|(k, _)| k.name != RP_FILTER)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(arp_now, arp_after_dr);
        assert!(w.status(&mut r, &only)[0].ready);

        w.converge(&mut r, Some(&none));
        assert!(r.ledger.is_empty());
        assert_eq!(w, before);
    }

    #[test]
    fn gue_opens_its_port_with_the_tunnel_and_closes_it_when_the_last_vip_goes() {
        // In: two GUE VIPs on port 6080, then one, then none; and a port
        // closed by hand in between. Out: the port opened once, next to the
        // tunl0 of plain TUN; closing it by hand is drift repaired; it stays
        // while a VIP needs it and is closed with the last; the kernel ends
        // as it began.
        let port = GuePort {
            port: 6080,
            family: FouFamily::Ipv4,
        };
        let both = desired(
            "vips: [{address: 192.0.2.20, forwarding: tun, tunnel: {type: gue, port: 6080}}, {address: 192.0.2.21, forwarding: tun, tunnel: {type: gue, port: 6080}}]",
        );
        let one = desired(
            "vips: [{address: 192.0.2.21, forwarding: tun, tunnel: {type: gue, port: 6080}}]",
        );
        let mut w = World::new("0", "1");
        let before = w.clone();
        let mut r = Reconciler::default();
        let (actions, _) = w.converge(&mut r, Some(&both));
        assert_eq!(
            actions
                .iter()
                .filter(|a| **a == Action::AddGuePort(port))
                .count(),
            1
        );
        assert!(actions.contains(&Action::CreateTunnel(TunnelDevice::Ipip)));
        assert!(
            w.addresses
                .contains(&("tunl0".into(), ip("192.0.2.20"), 32))
        );
        assert!(w.status(&mut r, &both).iter().all(|s| s.ready));

        w.gue_ports.clear();
        let s = &w.status(&mut r.clone(), &both)[0];
        assert!(!s.ready);
        assert!(
            s.reason.contains("GUE port 6080 (IPv4) is not open"),
            "{}",
            s.reason
        );
        let (actions, drift) = w.converge(&mut r, Some(&both));
        assert_eq!(actions, vec![Action::AddGuePort(port)]);
        assert_eq!(drift.len(), 1);

        let (actions, _) = w.converge(&mut r, Some(&one));
        assert!(!actions.contains(&Action::DelGuePort(port)), "{actions:#?}");
        let (actions, _) = w.converge(&mut r, None);
        assert!(actions.contains(&Action::DelGuePort(port)));
        assert!(r.ledger.is_empty());
        assert_eq!(w, before);
    }

    #[test]
    fn a_gue_port_found_open_is_used_and_left_open() {
        let d = desired(
            "vips: [{address: 192.0.2.20, forwarding: tun, tunnel: {type: gue, port: 6080}}]",
        );
        let mut w = World::new("0", "1");
        w.gue_ports.insert(GuePort {
            port: 6080,
            family: FouFamily::Ipv4,
        });
        let before = w.clone();
        let mut r = Reconciler::default();
        let (actions, _) = w.converge(&mut r, Some(&d));
        assert!(!actions.iter().any(|a| matches!(a, Action::AddGuePort(_))));
        assert!(w.status(&mut r, &d)[0].ready);
        w.converge(&mut r, None);
        assert_eq!(w, before);
    }

    #[test]
    fn a_ledger_without_gue_ports_still_reads() {
        let ledger: Ledger = serde_json::from_str(
            r#"{"sysctls": {}, "addresses": [], "created_tunnels": ["tunl0"], "raised_links": []}"#,
        )
        .unwrap();
        assert!(ledger.created_gue_ports.is_empty());
    }

    fn vip_strategy() -> impl Strategy<Value = String> {
        (0u8..6, 0u8..4).prop_map(|(host, mode)| match mode {
            0 => format!("{{address: 192.0.2.{host}}}"),
            1 => format!("{{address: '2001:db8::{host}'}}"),
            2 => format!(
                "{{address: 203.0.113.{host}, forwarding: tun, tunnel: {{type: gue, port: 6080}}}}"
            ),
            _ => format!("{{address: 198.51.100.{host}, forwarding: tun}}"),
        })
    }

    proptest! {
        /// Any sequence of VIP sets applied one after another, then an undo,
        /// leaves the kernel exactly as it was, whatever the starting values;
        /// every converged state is ready and needs no further action.
        #[test]
        fn any_sequence_then_undo_restores_everything(
            arp in prop::sample::select(vec!["0", "1", "2"]),
            rp in prop::sample::select(vec!["0", "1", "2"]),
            steps in prop::collection::vec(prop::collection::btree_set(vip_strategy(), 0..4), 1..5),
        ) {
            let mut w = World::new(arp, rp);
            let before = w.clone();
            let mut r = Reconciler::default();
            for vips in steps {
                let yaml = format!("vips: [{}]", vips.into_iter().collect::<Vec<_>>().join(", "));
                let d = desired(&yaml);
                w.converge(&mut r, Some(&d));
                prop_assert!(r.plan(Some(&d), &w.observe(&r, Some(&d))).actions.is_empty());
                for s in w.status(&mut r, &d) {
                    prop_assert!(s.ready, "{:?}", s);
                }
            }
            w.converge(&mut r, None);
            prop_assert!(r.ledger.is_empty());
            prop_assert_eq!(w, before);
        }
    }
}
