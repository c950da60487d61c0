//! `lb-agent realserver --check`: a preflight that changes nothing. It reads
//! the kernel, asks whether every value the agent would write is writable and
//! every tunnel module is there, and looks for conflicts; [`assess`] (pure)
//! turns those facts into findings, each blocking or not.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::Path,
};

use super::{
    desired::{Desired, Mode},
    kernel::{Kernel, KernelError},
    plan::{Need, Observed, Reconciler, arp_interfaces, unmet, vip_needs},
};
use crate::netif::{sysctl::SysctlKey, tunnel::TunnelDevice};

/// Whether a tunnel module can be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleState {
    /// Loaded or built in.
    Present,
    /// Not loaded, but the module file is installed: creating the device loads it.
    Loadable,
    /// Nowhere.
    Missing,
}

/// What the preflight read from the machine.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The kernel state.
    pub observed: Observed,
    /// Sysctls the agent would write: `Err(why)` when not writable.
    pub writable: BTreeMap<SysctlKey, Result<(), String>>,
    /// Tunnel modules.
    pub modules: BTreeMap<TunnelDevice, ModuleState>,
    /// IPv6 is enabled (`/proc/sys/net/ipv6` exists and lo has it on).
    pub ipv6: bool,
    /// The kernel release, for messages.
    pub release: String,
}

/// One result of the preflight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The agent cannot do its job until this is fixed.
    pub blocking: bool,
    /// What it is about ("vip 192.0.2.10", "net/ipv4/conf/all/arp_ignore").
    pub subject: String,
    /// What was found and what to do.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = if self.blocking { "BLOCKING" } else { "ok" };
        write!(f, "{level:8} {}: {}", self.subject, self.message)
    }
}

/// Turns facts into findings: one per VIP, plus one per problem.
pub fn assess(desired: &Desired, facts: &Facts) -> Vec<Finding> {
    let mut findings = Vec::new();
    let interfaces = arp_interfaces(desired, &facts.observed);
    for name in &desired.interfaces {
        if !facts.observed.links.contains_key(name) {
            findings.push(Finding {
                blocking: true,
                subject: format!("interface {name}"),
                message: "does not exist: fix `interfaces` in the configuration".into(),
            });
        }
    }
    let mut reported_keys: BTreeSet<SysctlKey> = BTreeSet::new();
    for vip in &desired.vips {
        let subject = format!("vip {}", vip.address);
        let before = findings.len();
        if vip.address.is_ipv6() && !facts.ipv6 && !matches!(vip.mode, Mode::Nat { .. }) {
            findings.push(Finding {
                blocking: true,
                subject: subject.clone(),
                message:
                    "IPv6 is disabled on this host (net.ipv6 missing or lo has disable_ipv6=1)"
                        .into(),
            });
        }
        if let Mode::Tun(device) | Mode::Gue { device, .. } = &vip.mode {
            let exists = facts.observed.links.contains_key(device.name());
            match facts.modules.get(device).copied().unwrap_or(ModuleState::Missing) {
                _ if exists => {}
                ModuleState::Present | ModuleState::Loadable => {}
                ModuleState::Missing => findings.push(Finding {
                    blocking: true,
                    subject: subject.clone(),
                    message: format!(
                        "kernel {} has no {} tunnel: module {} is neither loaded nor installed (install the kernel's modules package or use forwarding dr)",
                        facts.release,
                        device.name(),
                        device.module()
                    ),
                }),
            }
        }
        for need in vip_needs(vip, &interfaces) {
            match &need {
                Need::Sysctl { key, .. } => {
                    if let Some(Err(why)) = facts.writable.get(key)
                        && reported_keys.insert(key.clone())
                    {
                        findings.push(Finding {
                            blocking: true,
                            subject: key.to_string(),
                            message: format!("not writable ({why}): the agent needs CAP_NET_ADMIN and a writable /proc/sys in its network namespace"),
                        });
                    }
                }
                Need::Exclusive { .. } | Need::RouteVia { .. } => {
                    if let Some(reason) = unmet(&need, &facts.observed) {
                        findings.push(Finding {
                            blocking: true,
                            subject: subject.clone(),
                            message: reason,
                        });
                    }
                }
                _ => {}
            }
        }
        if findings.len() == before {
            findings.push(Finding {
                blocking: false,
                subject,
                message: format!("{:?} can be held", vip.mode.forwarding()).to_lowercase(),
            });
        }
    }
    findings
}

fn module_state(device: TunnelDevice, release: &str) -> ModuleState {
    if Path::new("/sys/module").join(device.module()).exists() {
        return ModuleState::Present;
    }
    let file = format!("/{}.ko", device.module());
    let dir = Path::new("/lib/modules").join(release);
    for (list, state) in [
        ("modules.builtin", ModuleState::Present),
        ("modules.dep", ModuleState::Loadable),
    ] {
        if let Ok(text) = std::fs::read_to_string(dir.join(list)) {
            let found = text.lines().any(|l| {
                let path = l.split(':').next().unwrap_or("");
                path.contains(&file) && {
                    // ".../ipip.ko", ".../ipip.ko.xz", ...: the name ends there.
                    let rest = &path[path.find(&file).unwrap_or(0) + file.len()..];
                    rest.is_empty() || rest.starts_with('.')
                }
            });
            if found {
                return state;
            }
        }
    }
    ModuleState::Missing
}

/// Reads the facts from this host, changing nothing.
pub async fn gather(kernel: &Kernel, desired: &Desired) -> Result<Facts, KernelError> {
    let reconciler = Reconciler::default();
    let observed = kernel.observe(&reconciler, Some(desired)).await?;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut writable = BTreeMap::new();
    for key in reconciler.sysctl_keys(Some(desired), &observed) {
        let path = key.path(Path::new("/proc/sys"));
        // Opening for writing checks permission and a read-only /proc/sys
        // without changing the value.
        let result = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map(|_| ())
            .map_err(|e| e.to_string());
        // A missing tunnel device has no sysctls yet: judged by its module.
        let missing_device = TunnelDevice::from_name(&key.device).is_some()
            && !observed.links.contains_key(&key.device);
        if !missing_device {
            writable.insert(key, result);
        }
    }
    let mut modules = BTreeMap::new();
    for vip in &desired.vips {
        if let Mode::Tun(device) | Mode::Gue { device, .. } = vip.mode {
            modules.insert(device, module_state(device, &release));
        }
    }
    let ipv6 = std::fs::read_to_string("/proc/sys/net/ipv6/conf/lo/disable_ipv6")
        .map(|v| v.trim() == "0")
        .unwrap_or(false);
    Ok(Facts {
        observed,
        writable,
        modules,
        ipv6,
        release,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realserver::plan::SeenAddress;

    fn desired(yaml: &str) -> Desired {
        Desired::from_config(&lb_proto::yaml::from_str(yaml).unwrap()).unwrap()
    }

    fn facts() -> Facts {
        let mut f = Facts {
            ipv6: true,
            release: "6.1.0-test".into(),
            ..Default::default()
        };
        f.observed.links.insert("lo".into(), true);
        f.observed.links.insert("eth0".into(), true);
        f.observed.addresses.push(SeenAddress {
            device: "eth0".into(),
            address: "10.0.0.5".parse().unwrap(),
            prefix_len: 24,
            tentative: false,
        });
        f
    }

    #[test]
    fn a_clean_host_has_no_blocking_finding() {
        let d = desired("vips: [{address: 192.0.2.10}]\ninterfaces: [eth0]");
        let found = assess(&d, &facts());
        assert_eq!(found.len(), 1);
        assert!(!found[0].blocking, "{}", found[0]);
    }

    #[test]
    fn missing_module_read_only_sysctl_conflict_and_bad_route_block() {
        let d = desired(
            "vips:\n - {address: 192.0.2.10, forwarding: tun}\n - {address: 192.0.2.11}\n - {address: 192.0.2.12, forwarding: nat, natGateway: 10.0.0.1}\ninterfaces: [eth0, eth9]",
        );
        let mut f = facts();
        f.modules.insert(TunnelDevice::Ipip, ModuleState::Missing);
        f.writable.insert(
            SysctlKey::ipv4("all", "arp_ignore"),
            Err("Read-only file system".into()),
        );
        f.observed.addresses.push(SeenAddress {
            device: "eth0".into(),
            address: "192.0.2.11".parse().unwrap(),
            prefix_len: 32,
            tentative: false,
        });
        let found = assess(&d, &f);
        let text: Vec<String> = found.iter().map(|f| f.to_string()).collect();
        let has = |s: &str| {
            text.iter()
                .any(|t| t.starts_with("BLOCKING") && t.contains(s))
        };
        assert!(has("interface eth9"), "{text:#?}");
        assert!(
            has("module ipip is neither loaded nor installed"),
            "{text:#?}"
        );
        assert!(
            has("net/ipv4/conf/all/arp_ignore: not writable"),
            "{text:#?}"
        );
        assert!(has("192.0.2.11 is also on eth0"), "{text:#?}");
        assert!(has("not go through the director 10.0.0.1"), "{text:#?}");
        // The read-only sysctl is reported once, not once per VIP.
        assert_eq!(
            text.iter().filter(|t| t.contains("all/arp_ignore")).count(),
            1
        );
    }
}
