//! From the director part of the topology (lb.v1) to validated instance
//! settings for one node. Pure; everything is checked before anything runs.

use std::net::IpAddr;
use std::time::Duration;

use lb_proto::v1::{DirectorConfig, DirectorGroup, VrrpInstance, authentication};

use super::instance::{InstanceConfig, NotifyCommands};
use super::packet::{Auth, Version};
use super::track::{Source, Tracked};
use super::vips::Vip;
use crate::netif::garp::GarpSchedule;

/// A VRRP setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("director group {group}, instance {instance}: {message}")]
pub struct VrrpConfigError {
    /// Director group.
    pub group: String,
    /// Instance.
    pub instance: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// An instance to run on this node, with what it tracks.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The instance.
    pub instance: InstanceConfig,
    /// Tracked interfaces and scripts (the VRRP interface itself is always
    /// tracked with weight 0, as keepalived does).
    pub tracked: Vec<Tracked>,
    /// Tracked services by name with their weight, for the quorum hook.
    pub track_services: Vec<(String, i32)>,
}

/// A duration that is set, zero included (`garp.delay: 0s` turns the second
/// burst off, as keepalived's `garp_master_delay 0` does).
fn dur(d: &Option<lb_proto::duration::Duration>) -> Option<Duration> {
    d.as_ref().and_then(|d| d.to_std())
}

/// A duration where zero means "the default" (a script's interval: zero would
/// run it in a loop).
fn nonzero(d: &Option<lb_proto::duration::Duration>) -> Option<Duration> {
    dur(d).filter(|d| !d.is_zero())
}

/// The instances of `cfg` in which node `node` has a priority.
pub fn plan(cfg: &DirectorConfig, node: &str) -> Result<Vec<Planned>, VrrpConfigError> {
    let mut out = Vec::new();
    for group in &cfg.director_groups {
        let Some(vrrp) = &group.vrrp else { continue };
        for inst in &vrrp.instances {
            let Some(priority) = inst.priorities.get(node) else {
                continue;
            };
            out.push(plan_instance(cfg, group, inst, node, *priority)?);
        }
    }
    Ok(out)
}

/// The sync groups of `cfg` as indexes into `planned` (from [`plan`]);
/// members this node does not run are left out.
pub fn sync_groups(
    cfg: &DirectorConfig,
    planned: &[Planned],
) -> Result<Vec<Vec<usize>>, VrrpConfigError> {
    let mut out = Vec::new();
    for group in &cfg.director_groups {
        let Some(vrrp) = &group.vrrp else { continue };
        for sg in &vrrp.sync_groups {
            let mut members = Vec::new();
            for name in &sg.instances {
                if !vrrp.instances.iter().any(|i| &i.name == name) {
                    return Err(VrrpConfigError {
                        group: group.name.clone(),
                        instance: name.clone(),
                        message: format!("sync group {:?} names an unknown instance", sg.name),
                    });
                }
                if let Some(i) = planned.iter().position(|p| &p.instance.name == name) {
                    members.push(i);
                }
            }
            if members.len() > 1 {
                out.push(members);
            }
        }
    }
    Ok(out)
}

fn plan_instance(
    cfg: &DirectorConfig,
    group: &DirectorGroup,
    inst: &VrrpInstance,
    node: &str,
    priority: u32,
) -> Result<Planned, VrrpConfigError> {
    let err = |message: String| VrrpConfigError {
        group: group.name.clone(),
        instance: inst.name.clone(),
        message,
    };
    let vrrp = group.vrrp.clone().unwrap_or_default();
    let version = match vrrp.version {
        0 | 3 => Version::V3,
        2 => Version::V2,
        v => return Err(err(format!("version {v} is unknown (2 or 3)"))),
    };
    let vrid = u8::try_from(inst.vrid)
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| err(format!("vrid {} is not 1..255", inst.vrid)))?;
    let priority = u8::try_from(priority)
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| err(format!("priority {priority} of {node} is not 1..255")))?;
    let interface = if inst.interface.is_empty() {
        group.interface.clone()
    } else {
        inst.interface.clone()
    };
    if interface.is_empty() {
        return Err(err("no interface: set the group's or the instance's".into()));
    }
    let adver_int = dur(&inst.advert_interval)
        .or_else(|| dur(&vrrp.advert_interval))
        .unwrap_or(Duration::from_secs(1));
    match version {
        Version::V2 => {
            if adver_int.subsec_nanos() != 0 || !(1..=255).contains(&adver_int.as_secs()) {
                return Err(err(format!(
                    "advert interval {adver_int:?}: version 2 needs whole seconds 1..255; use version 3 for less"
                )));
            }
        }
        Version::V3 => {
            let cs = adver_int.as_nanos() / 10_000_000;
            if !adver_int.as_nanos().is_multiple_of(10_000_000) || !(1..=4095).contains(&cs) {
                return Err(err(format!(
                    "advert interval {adver_int:?}: version 3 needs whole centiseconds, 10ms..40.95s"
                )));
            }
        }
    }
    if inst.accept == Some(false) {
        return Err(err(
            "accept: false is not supported: the VIPs carry IPVS services and must accept traffic"
                .into(),
        ));
    }
    let mut vips = Vec::new();
    for v in &inst.vips {
        vips.push(
            v.parse::<Vip>()
                .map_err(|e| err(format!("vip {v:?}: {e}")))?,
        );
    }
    if vips.is_empty() {
        return Err(err("no vips".into()));
    }
    let ipv6 = vips[0].address.is_ipv6();
    if vips.iter().any(|v| v.address.is_ipv6() != ipv6) {
        return Err(err(
            "IPv4 and IPv6 vips mixed: split them into two instances (RFC 5798 5.2.9)".into(),
        ));
    }
    if ipv6 && version == Version::V2 {
        return Err(err("IPv6 vips need version 3".into()));
    }
    let vmac = if inst.use_vmac {
        if ipv6 {
            return Err(err(
                "useVmac is supported for IPv4 instances only: leave it out of IPv6 instances (their adverts and neighbour advertisements use the interface's MAC)"
                    .into(),
            ));
        }
        if !inst.unicast_peers.is_empty() {
            return Err(err(
                "useVmac with unicastPeers is not supported: the virtual MAC is for multicast adverts on a shared segment".into(),
            ));
        }
        let name = if inst.vmac_interface.is_empty() {
            crate::netif::vmac::default_name(vrid)
        } else {
            inst.vmac_interface.clone()
        };
        if name.len() > 15 || name.contains('/') || name == interface {
            return Err(err(format!(
                "vmacInterface {name:?} is not a usable interface name (at most 15 bytes, no '/', not the VRRP interface)"
            )));
        }
        Some(name)
    } else {
        if !inst.vmac_interface.is_empty() {
            return Err(err("vmacInterface is set but useVmac is not: set useVmac: true or leave vmacInterface out".into()));
        }
        None
    };
    if vips.len() > 255 {
        return Err(err(format!("{} vips: at most 255", vips.len())));
    }
    let auth = match &inst.authentication {
        Some(a) if a.r#type == authentication::Type::Pass as i32 => {
            if version != Version::V2 {
                return Err(err("authentication exists in version 2 only".into()));
            }
            if a.password.is_empty() || a.password.len() > 8 {
                return Err(err("password must be 1 to 8 bytes".into()));
            }
            Auth::simple_password(&a.password)
        }
        _ => Auth::None,
    };
    let parse_ip = |s: &str, what: &str| -> Result<IpAddr, VrrpConfigError> {
        s.parse()
            .map_err(|_| err(format!("{what} {s:?} is not an IP address")))
    };
    let mut unicast_peers = Vec::new();
    for p in &inst.unicast_peers {
        unicast_peers.push(parse_ip(p, "unicast peer")?);
    }
    let source = if !inst.unicast_source.is_empty() {
        Some(parse_ip(&inst.unicast_source, "unicast source")?)
    } else if !unicast_peers.is_empty() || !ipv6 {
        // The node's own address of the instance's family, if it has one.
        cfg.nodes
            .iter()
            .find(|n| n.name == node)
            .into_iter()
            .flat_map(|n| std::iter::once(&n.address).chain(n.addresses.iter()))
            .filter_map(|a| a.parse::<IpAddr>().ok())
            .find(|a| a.is_ipv6() == ipv6 && !(ipv6 && unicast_peers.is_empty()))
    } else {
        None
    };
    // One peer list serves every director of the group: leave ourselves out.
    unicast_peers.retain(|p| Some(*p) != source);
    if vrrp.strict && (!unicast_peers.is_empty() || auth != Auth::None) {
        return Err(err(
            "strict mode allows neither unicast nor authentication".into()
        ));
    }
    let initial_master =
        inst.initial_states.get(node).copied() == Some(lb_proto::v1::InitialState::Master as i32);
    let garp = {
        let g = inst.garp.or(vrrp.garp).unwrap_or_default();
        let base = vrrp.garp.unwrap_or_default();
        let d = GarpSchedule::default();
        GarpSchedule {
            delay: dur(&g.delay).or(dur(&base.delay)).unwrap_or(d.delay),
            repeat: [g.repeat, base.repeat]
                .into_iter()
                .find(|r| *r > 0)
                .unwrap_or(d.repeat),
            interval: dur(&g.interval)
                .or(dur(&base.interval))
                .unwrap_or(d.interval),
            na_interval: dur(&g.na_interval)
                .or(dur(&base.na_interval))
                .unwrap_or(d.na_interval),
            refresh: dur(&g.refresh).or(dur(&base.refresh)).unwrap_or(d.refresh),
            refresh_repeat: [g.refresh_repeat, base.refresh_repeat]
                .into_iter()
                .find(|r| *r > 0)
                .unwrap_or(d.refresh_repeat),
        }
    };
    let notify = inst
        .notify
        .as_ref()
        .map(|n| NotifyCommands {
            any: n.command.clone(),
            master: n.master.clone(),
            backup: n.backup.clone(),
            fault: n.fault.clone(),
            stop: n.stop.clone(),
            timeout: nonzero(&n.timeout).unwrap_or(Duration::from_secs(10)),
        })
        .unwrap_or_default();
    let mut tracked = vec![Tracked {
        source: Source::Interface {
            name: interface.clone(),
        },
        weight: 0,
    }];
    for t in &inst.track_interfaces {
        tracked.push(Tracked {
            source: Source::Interface {
                name: t.name.clone(),
            },
            weight: t.weight,
        });
    }
    for r in &inst.track_scripts {
        let s = vrrp
            .scripts
            .iter()
            .find(|s| s.name == r.name)
            .ok_or_else(|| err(format!("track script {:?} is not in vrrp.scripts", r.name)))?;
        if s.command.is_empty() {
            return Err(err(format!("script {:?} has no command", s.name)));
        }
        let interval = nonzero(&s.interval).unwrap_or(Duration::from_secs(1));
        tracked.push(Tracked {
            source: Source::Script {
                name: s.name.clone(),
                command: s.command.clone(),
                interval,
                timeout: nonzero(&s.timeout).unwrap_or(interval),
                rise: s.rise.max(1),
                fall: s.fall.max(1),
            },
            weight: r.weight.unwrap_or(s.weight),
        });
    }
    let track_services = inst
        .track_services
        .iter()
        .map(|t| (t.service.clone(), t.weight))
        .collect();
    Ok(Planned {
        instance: InstanceConfig {
            name: inst.name.clone(),
            interface,
            vrid,
            version,
            priority,
            adver_int,
            preempt: inst.preempt.unwrap_or(true),
            preempt_delay: dur(&inst.preempt_delay).unwrap_or(Duration::ZERO),
            initial_master,
            vips,
            label: (!inst.label.is_empty()).then(|| inst.label.clone()),
            auth,
            unicast_peers,
            source,
            garp,
            check_addresses: !vrrp.skip_check_adv_addr,
            notify,
            vmac,
        },
        tracked,
        track_services,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> DirectorConfig {
        lb_proto::yaml::from_str(yaml).unwrap()
    }

    const SEED: &str = r#"
nodes:
  - {name: ds1, role: director, address: 192.168.56.181}
  - {name: ds2, role: director, address: 192.168.56.182}
directorGroups:
  - name: dns-lb
    interface: eth2
    vrrp:
      version: 3
      advertInterval: 50ms
      scripts:
        - {name: gw, command: [ping, -c1, 192.168.56.1], interval: 2s, fall: 2, rise: 3, weight: -20}
      instances:
        - name: VI_1
          vrid: 50
          vips: [192.168.56.185/24]
          priorities: {ds1: 100, ds2: 99}
          trackScripts: [{name: gw}]
          preempt: false
"#;

    // In: the seed's director group, as ds1. Out: one v3 instance with the
    // node's address as source, the group's interval, the script tracked.
    #[test]
    fn seed_plans_for_ds1() {
        let p = plan(&cfg(SEED), "ds1").unwrap();
        assert_eq!(p.len(), 1);
        let i = &p[0].instance;
        assert_eq!(i.vrid, 50);
        assert_eq!(i.priority, 100);
        assert_eq!(i.version, Version::V3);
        assert_eq!(i.adver_int, Duration::from_millis(50));
        assert_eq!(i.adver_int_field(), 5);
        assert!(!i.preempt);
        assert_eq!(i.source, Some("192.168.56.181".parse().unwrap()));
        assert_eq!(i.vips[0].prefix_len, 24);
        assert_eq!(p[0].tracked.len(), 2);
        assert_eq!(p[0].tracked[1].weight, -20);
        assert!(plan(&cfg(SEED), "rs1").unwrap().is_empty());
    }

    // In: unicast peers listing every director. Out: each director sends to
    // the others only, from its own address.
    #[test]
    fn unicast_peers_leave_out_the_node_itself() {
        let uc = SEED.replace(
            "preempt: false",
            "preempt: false\n          unicastPeers: [192.168.56.181, 192.168.56.182]",
        );
        let p = plan(&cfg(&uc), "ds2").unwrap();
        let i = &p[0].instance;
        assert_eq!(i.source, Some("192.168.56.182".parse().unwrap()));
        assert_eq!(
            i.unicast_peers,
            vec!["192.168.56.181".parse::<IpAddr>().unwrap()]
        );
    }

    // In: useVmac, with and without a device name. Out: the VIPs go on
    // keepalived's `vrrp.VRID`, or on the named device.
    #[test]
    fn vmac_names_the_device() {
        let v = SEED.replace("preempt: false", "preempt: false\n          useVmac: true");
        let p = plan(&cfg(&v), "ds1").unwrap();
        assert_eq!(p[0].instance.vmac.as_deref(), Some("vrrp.50"));
        assert_eq!(p[0].instance.vip_interface(), "vrrp.50");
        let v = v.replace(
            "useVmac: true",
            "useVmac: true\n          vmacInterface: vmac50",
        );
        let p = plan(&cfg(&v), "ds1").unwrap();
        assert_eq!(p[0].instance.vip_interface(), "vmac50");
        assert_eq!(p[0].instance.interface, "eth2");
    }

    // In: settings the protocol cannot carry. Out: an error naming them.
    #[test]
    fn refuses_what_cannot_work() {
        let bad = SEED.replace("50ms", "55ms");
        let e = plan(&cfg(&bad), "ds1").unwrap_err();
        assert!(e.message.contains("centiseconds"), "{e}");
        let bad = SEED.replace("version: 3", "version: 2");
        let e = plan(&cfg(&bad), "ds1").unwrap_err();
        assert!(e.message.contains("whole seconds"), "{e}");
        let bad = SEED.replace(
            "[192.168.56.185/24]",
            "[192.168.56.185/24, \"2001:db8::1\"]",
        );
        let e = plan(&cfg(&bad), "ds1").unwrap_err();
        assert!(e.message.contains("mixed"), "{e}");
        let bad = SEED.replace("vrid: 50", "vrid: 300");
        assert!(plan(&cfg(&bad), "ds1").is_err());
        let bad = SEED.replace(
            "preempt: false",
            "preempt: false\n          vmacInterface: vrrp.50",
        );
        let e = plan(&cfg(&bad), "ds1").unwrap_err();
        assert!(e.message.contains("useVmac"), "{e}");
        let bad = SEED.replace("name: gw}", "name: nope}");
        let e = plan(&cfg(&bad), "ds1").unwrap_err();
        assert!(e.message.contains("nope"), "{e}");
    }
}
