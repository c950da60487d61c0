//! From a `DirectorConfig` to everything one director runs, validated as a
//! whole before anything touches the kernel: the VRRP instances, the IPVS
//! services with a template of every destination, the health checks, and the
//! agent's own settings. Pure: no I/O, no clock.
//!
//! The IPVS table the director wants is then a function of this plan and of
//! what the health checks say each destination should weigh
//! ([`DirectorPlan::service_state`]): the plan gives the shape, health the
//! weights.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lb_proto::v1::{self, DirectorConfig, DirectorGroup};

use crate::health::config::{ConfigError as HealthConfigError, ServiceSpec};
use crate::health::service::Target;
use crate::ipvs::reconcile::ServiceState;
use crate::ipvs::validate::{self, ValidationErrors};
use crate::ipvs::{
    DestKey, Destination, Family, Forwarding, Protocol, Service, ServiceFlags, ServiceKey,
    Timeouts, TunnelFlags, TunnelType, ipv4_netmask,
};
use crate::vrrp::config::{Planned, VrrpConfigError};

/// Where the agent keeps its state when the configuration does not say.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/lb-agent";
/// How often the kernel is compared with the desired state by default.
pub const DEFAULT_RECONCILE: Duration = Duration::from_secs(5);
/// ipvsadm's default scheduler.
pub const DEFAULT_SCHEDULER: &str = "wlc";
/// ipvsadm's default persistence timeout.
pub const DEFAULT_PERSISTENCE: Duration = Duration::from_secs(300);

/// A director configuration that cannot run; nothing of it was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// No node name.
    #[error("node: no node name: set `node` in the configuration or pass --node")]
    NoNode,
    /// The node is not a director of any group.
    #[error(
        "node {node}: not a director of any director group (known groups: {groups}); check the node name"
    )]
    NotADirector {
        /// The node.
        node: String,
        /// The groups.
        groups: String,
    },
    /// A field of a service.
    #[error("service {service}: {field}: {reason}")]
    Service {
        /// Service.
        service: String,
        /// Field path.
        field: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A field of a director group.
    #[error("director group {group}: {field}: {reason}")]
    Group {
        /// Group.
        group: String,
        /// Field path.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// VRRP settings.
    #[error(transparent)]
    Vrrp(#[from] VrrpConfigError),
    /// Health settings.
    #[error(transparent)]
    Health(#[from] HealthConfigError),
    /// The IPVS table the services make.
    #[error("{0}")]
    Ipvs(String),
}

impl PlanError {
    /// The object the error is about ("service dns") and the field.
    pub fn object_and_field(&self) -> (String, String) {
        match self {
            PlanError::NoNode => ("agent".into(), "node".into()),
            PlanError::NotADirector { node, .. } => (format!("node {node}"), "node".into()),
            PlanError::Service { service, field, .. } => {
                (format!("service {service}"), field.clone())
            }
            PlanError::Group { group, field, .. } => {
                (format!("director group {group}"), field.clone())
            }
            PlanError::Vrrp(e) => (format!("instance {}", e.instance), String::new()),
            PlanError::Health(e) => (format!("service {}", e.service), e.field.clone()),
            PlanError::Ipvs(_) => ("ipvs".into(), String::new()),
        }
    }
}

/// A real server of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealServerPlan {
    /// How operators name it: node name or address.
    pub name: String,
    /// Node name, when it is a node.
    pub node: Option<String>,
    /// The destination as it goes to the kernel, with the configured weight.
    pub dest: Destination,
}

/// One IPVS service of this director.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePlan {
    /// Service name.
    pub name: String,
    /// Director group.
    pub group: String,
    /// The virtual service.
    pub service: Service,
    /// Real servers, in configuration order.
    pub real_servers: Vec<RealServerPlan>,
    /// The sorry server's destination, if any.
    pub sorry: Option<Destination>,
    /// Remove the service from the kernel when the agent stops cleanly.
    pub remove_on_shutdown: bool,
}

impl ServicePlan {
    /// The destination template of a health target.
    pub fn dest_of(&self, target: Target) -> Option<Destination> {
        match target {
            Target::Real(addr) => self
                .real_servers
                .iter()
                .find(|r| r.dest.key == dest_key(addr))
                .map(|r| r.dest),
            Target::Sorry(addr) => self.sorry.filter(|d| d.key == dest_key(addr)),
        }
    }

    /// A real server by node name or `address:port`.
    pub fn find_real_server(&self, name: &str) -> Option<&RealServerPlan> {
        self.real_servers.iter().find(|r| {
            r.name == name
                || r.node.as_deref() == Some(name)
                || r.dest.key.to_string() == name
                || SocketAddr::new(r.dest.key.addr, r.dest.key.port).to_string() == name
        })
    }
}

/// The key of a destination at `addr`.
pub fn dest_key(addr: SocketAddr) -> DestKey {
    DestKey {
        addr: addr.ip(),
        port: addr.port(),
    }
}

/// Everything one director runs.
#[derive(Debug, Clone)]
pub struct DirectorPlan {
    /// This node.
    pub node: String,
    /// VRRP instances of this node.
    pub vrrp: Vec<Planned>,
    /// Sync groups, as indexes into `vrrp`.
    pub sync_groups: Vec<Vec<usize>>,
    /// IPVS services by name.
    pub services: BTreeMap<String, ServicePlan>,
    /// Health side of the services, in the order the configuration lists
    /// them.
    pub health: Vec<ServiceSpec>,
    /// IPVS connection timeouts to set, if any.
    pub timeouts: Option<Timeouts>,
    /// Reconcile period.
    pub reconcile_interval: Duration,
    /// State directory.
    pub state_dir: PathBuf,
}

impl DirectorPlan {
    /// Validates `cfg` for node `node` (or `cfg.node` when `node` is empty).
    pub fn from_config(cfg: &DirectorConfig, node: &str) -> Result<Self, PlanError> {
        let node = if node.is_empty() { &cfg.node } else { node };
        if node.is_empty() {
            return Err(PlanError::NoNode);
        }
        let groups: Vec<&DirectorGroup> = cfg
            .director_groups
            .iter()
            .filter(|g| group_directors(g).contains(node))
            .collect();
        if groups.is_empty() {
            return Err(PlanError::NotADirector {
                node: node.to_string(),
                groups: cfg
                    .director_groups
                    .iter()
                    .map(|g| g.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let vrrp = crate::vrrp::config::plan(cfg, node)?;
        let sync_groups = crate::vrrp::config::sync_groups(cfg, &vrrp)?;

        let mut services = BTreeMap::new();
        let mut health = Vec::new();
        let mut keys: BTreeMap<ServiceKey, String> = BTreeMap::new();
        for s in &cfg.services {
            let Some(group) = groups.iter().find(|g| g.name == s.director_group) else {
                continue;
            };
            let spec = ServiceSpec::from_proto(s, &cfg.nodes)?;
            let plan = service_plan(s, group, &spec)?;
            if let Some(other) = keys.insert(plan.service.key, s.name.clone()) {
                return Err(PlanError::Service {
                    service: s.name.clone(),
                    field: "vip".into(),
                    reason: format!(
                        "{} is also service {other}'s: each VIP, port and protocol once",
                        plan.service.key
                    ),
                });
            }
            if services.insert(s.name.clone(), plan).is_some() {
                return Err(PlanError::Service {
                    service: s.name.clone(),
                    field: "name".into(),
                    reason: "is used twice".into(),
                });
            }
            health.push(spec);
        }
        for p in &vrrp {
            for (service, _) in &p.track_services {
                if !services.contains_key(service) {
                    return Err(PlanError::Vrrp(VrrpConfigError {
                        group: groups
                            .iter()
                            .find(|g| {
                                g.vrrp
                                    .iter()
                                    .flat_map(|v| &v.instances)
                                    .any(|i| i.name == p.instance.name)
                            })
                            .map(|g| g.name.clone())
                            .unwrap_or_default(),
                        instance: p.instance.name.clone(),
                        message: format!(
                            "trackServices: service '{service}' is not a service of this director"
                        ),
                    }));
                }
            }
        }
        // The whole table with every destination at its configured weight
        // must be one the kernel takes (checked where it stands, in the
        // table's order, without building it).
        validate::validate_services(keys.values().map(|name| {
            let p = &services[name];
            let dests = p.real_servers.iter().map(|r| &r.dest);
            (&p.service, dests.chain(p.sorry.as_ref()))
        }))
        .map_err(|e: ValidationErrors| PlanError::Ipvs(e.to_string()))?;

        let timeouts = groups
            .iter()
            .find_map(|g| g.ipvs_timeouts.as_ref().map(|t| (g, t)))
            .map(|(g, t)| {
                let secs = |field: &str, d: &Option<lb_proto::duration::Duration>| match d
                    .as_ref()
                    .map(|d| d.to_std())
                {
                    None => Ok(0),
                    Some(None) => Err(PlanError::Group {
                        group: g.name.clone(),
                        field: format!("ipvsTimeouts.{field}"),
                        reason: "must not be negative".into(),
                    }),
                    Some(Some(d)) => Ok(u32::try_from(d.as_secs()).unwrap_or(u32::MAX)),
                };
                Ok::<_, PlanError>(Timeouts {
                    tcp: secs("tcp", &t.tcp)?,
                    tcp_fin: secs("tcpFin", &t.tcp_fin)?,
                    udp: secs("udp", &t.udp)?,
                })
            })
            .transpose()?
            .filter(|t| *t != Timeouts::default());

        let settings = cfg.settings.clone().unwrap_or_default();
        let reconcile_interval = match settings.reconcile_interval.as_ref().map(|d| d.to_std()) {
            None => DEFAULT_RECONCILE,
            Some(Some(d)) if !d.is_zero() => d,
            Some(Some(_)) => DEFAULT_RECONCILE,
            Some(None) => {
                return Err(PlanError::Group {
                    group: "settings".into(),
                    field: "settings.reconcileInterval".into(),
                    reason: "must not be negative".into(),
                });
            }
        };
        let state_dir = if settings.state_dir.is_empty() {
            PathBuf::from(DEFAULT_STATE_DIR)
        } else {
            PathBuf::from(&settings.state_dir)
        };
        Ok(DirectorPlan {
            node: node.to_string(),
            vrrp,
            sync_groups,
            services,
            health,
            timeouts,
            reconcile_interval,
            state_dir,
        })
    }

    /// The kernel state of service `name` when the health checks ask for
    /// `weights` (destination -> weight; absent: not in the table) and the
    /// destinations in `removed` are out (drained to the end).
    pub fn service_state(
        &self,
        name: &str,
        weights: &BTreeMap<Target, u32>,
        removed: &BTreeSet<DestKey>,
    ) -> Option<ServiceState> {
        let p = self.services.get(name)?;
        let mut dests = BTreeMap::new();
        for (target, weight) in weights {
            let Some(mut d) = p.dest_of(*target) else {
                continue;
            };
            if matches!(target, Target::Real(_)) && removed.contains(&d.key) {
                continue;
            }
            d.weight = *weight;
            dests.insert(d.key, d);
        }
        Some(ServiceState {
            service: p.service.clone(),
            dests,
        })
    }
}

/// The directors of a group: its `directors`, or every node with a priority
/// in one of its instances.
pub fn group_directors(group: &DirectorGroup) -> BTreeSet<String> {
    if group.directors.is_empty() {
        group
            .vrrp
            .iter()
            .flat_map(|v| v.instances.iter())
            .flat_map(|i| i.priorities.keys().cloned())
            .collect()
    } else {
        group.directors.iter().cloned().collect()
    }
}

fn service_plan(
    s: &v1::Service,
    group: &DirectorGroup,
    spec: &ServiceSpec,
) -> Result<ServicePlan, PlanError> {
    let err = |field: &str, reason: String| PlanError::Service {
        service: s.name.clone(),
        field: field.to_string(),
        reason,
    };
    let protocol = match v1::Protocol::try_from(s.protocol) {
        Ok(v1::Protocol::Tcp | v1::Protocol::Unspecified) => Protocol::Tcp,
        Ok(v1::Protocol::Udp) => Protocol::Udp,
        Ok(v1::Protocol::Sctp) => Protocol::Sctp,
        Err(_) => {
            return Err(err(
                "protocol",
                format!("{} is unknown (tcp, udp, sctp)", s.protocol),
            ));
        }
    };
    let key = if s.fwmark != 0 {
        let family = match v1::AddressFamily::try_from(s.family) {
            Ok(v1::AddressFamily::Inet6) => Family::Inet6,
            Ok(_) => Family::Inet,
            Err(_) => {
                return Err(err(
                    "family",
                    format!("{} is unknown (inet, inet6)", s.family),
                ));
            }
        };
        if !s.vip.is_empty() {
            return Err(err(
                "vip",
                "a firewall-mark service has no VIP: leave vip out or fwmark at 0".into(),
            ));
        }
        ServiceKey::Fwmark {
            family,
            mark: s.fwmark,
        }
    } else {
        let addr = spec.vip.ok_or_else(|| {
            err(
                "vip",
                "is empty: give the virtual address or a firewall mark".into(),
            )
        })?;
        ServiceKey::Addr {
            protocol,
            addr,
            port: spec.port,
        }
    };
    let scheduler = if s.scheduler.is_empty() {
        DEFAULT_SCHEDULER.to_string()
    } else {
        s.scheduler.clone()
    };
    let mut service = Service::new(key, scheduler);
    let mut flags = 0;
    if let Some(f) = &s.scheduler_flags {
        if f.fallback {
            flags |= ServiceFlags::SCHED1;
        }
        if f.port {
            flags |= ServiceFlags::SCHED2;
        }
    }
    if s.one_packet {
        flags |= ServiceFlags::ONEPACKET;
    }
    if let Some(p) = &s.persistence {
        flags |= ServiceFlags::PERSISTENT;
        let timeout = match p.timeout.as_ref().map(|d| d.to_std()) {
            None => DEFAULT_PERSISTENCE,
            Some(Some(d)) if !d.is_zero() => d,
            Some(Some(_)) => DEFAULT_PERSISTENCE,
            Some(None) => return Err(err("persistence.timeout", "must not be negative".into())),
        };
        service.timeout = u32::try_from(timeout.as_secs().max(1)).unwrap_or(u32::MAX);
        if !p.netmask.is_empty() {
            service.netmask = netmask(key.family(), &p.netmask)
                .ok_or_else(|| err("persistence.netmask", format!("'{}' is not a mask of the family (IPv4: 255.255.255.0 or 24; IPv6: a prefix length 1..128)", p.netmask)))?;
        }
        if !p.engine.is_empty() {
            service.pe_name = Some(p.engine.clone());
        }
    }
    service.flags = ServiceFlags(flags);

    let forwarding = forwarding(s.forwarding).ok_or_else(|| {
        err(
            "forwarding",
            format!("{} is unknown (dr, tun, nat)", s.forwarding),
        )
    })?;
    let (tun_type, tun_port, tun_flags) =
        tunnel(s.tunnel.as_ref()).map_err(|m| err("tunnel", m))?;
    let template = |addr: SocketAddr, fwd: Forwarding| {
        let mut d = Destination::new(addr.ip(), addr.port(), fwd);
        if fwd == Forwarding::Tunnel {
            d.tun_type = tun_type;
            d.tun_port = tun_port;
            d.tun_flags = tun_flags;
        }
        d
    };
    let mut real_servers = Vec::with_capacity(spec.real_servers.len());
    for (i, (rs, cfg)) in spec.real_servers.iter().zip(&s.real_servers).enumerate() {
        let mut dest = template(rs.addr, forwarding);
        dest.weight = rs.weight;
        dest.u_threshold = cfg.upper_threshold;
        dest.l_threshold = cfg.lower_threshold;
        if cfg.lower_threshold > cfg.upper_threshold && cfg.upper_threshold != 0 {
            return Err(err(
                &format!("realServers[{i}].lowerThreshold"),
                format!(
                    "{} is above upperThreshold {}",
                    cfg.lower_threshold, cfg.upper_threshold
                ),
            ));
        }
        let node = match &cfg.target {
            Some(v1::real_server::Target::Node(n)) => Some(n.clone()),
            _ => None,
        };
        real_servers.push(RealServerPlan {
            name: rs.name.clone(),
            node,
            dest,
        });
    }
    let sorry = match (&spec.sorry, &s.sorry_server) {
        (Some(sp), Some(cfg)) => {
            let fwd = if cfg.forwarding == 0 {
                forwarding
            } else {
                self::forwarding(cfg.forwarding).ok_or_else(|| {
                    err(
                        "sorryServer.forwarding",
                        format!("{} is unknown (dr, tun, nat)", cfg.forwarding),
                    )
                })?
            };
            Some(template(sp.addr, fwd))
        }
        _ => None,
    };
    Ok(ServicePlan {
        name: s.name.clone(),
        group: group.name.clone(),
        service,
        real_servers,
        sorry,
        remove_on_shutdown: group.on_shutdown == v1::ShutdownPolicy::Remove as i32,
    })
}

fn forwarding(f: i32) -> Option<Forwarding> {
    match v1::Forwarding::try_from(f).ok()? {
        v1::Forwarding::Dr | v1::Forwarding::Unspecified => Some(Forwarding::Route),
        v1::Forwarding::Tun => Some(Forwarding::Tunnel),
        v1::Forwarding::Nat => Some(Forwarding::Masq),
    }
}

fn tunnel(t: Option<&v1::Tunnel>) -> Result<(TunnelType, u16, TunnelFlags), String> {
    let Some(t) = t else {
        return Ok((TunnelType::Ipip, 0, TunnelFlags::default()));
    };
    let kind = match v1::tunnel::Type::try_from(t.r#type) {
        Ok(v1::tunnel::Type::Ipip | v1::tunnel::Type::Unspecified) => TunnelType::Ipip,
        Ok(v1::tunnel::Type::Gue) => TunnelType::Gue,
        Ok(v1::tunnel::Type::Gre) => TunnelType::Gre,
        Err(_) => return Err(format!("type {} is unknown (ipip, gue, gre)", t.r#type)),
    };
    let port = u16::try_from(t.port).map_err(|_| format!("port {} is not a port", t.port))?;
    let flags = match v1::tunnel::Checksum::try_from(t.checksum) {
        Ok(v1::tunnel::Checksum::Csum) => TunnelFlags(TunnelFlags::CSUM),
        Ok(v1::tunnel::Checksum::Remcsum) => TunnelFlags(TunnelFlags::REMCSUM),
        Ok(_) => TunnelFlags::default(),
        Err(_) => {
            return Err(format!(
                "checksum {} is unknown (nocsum, csum, remcsum)",
                t.checksum
            ));
        }
    };
    Ok((kind, port, flags))
}

fn netmask(family: Family, text: &str) -> Option<u32> {
    match family {
        Family::Inet => {
            if let Ok(a) = text.parse::<std::net::Ipv4Addr>() {
                let m = u32::from(a);
                // Contiguous ones from the top.
                (m.leading_ones() + m.trailing_zeros() == 32).then_some(m)
            } else {
                let p: u8 = text.trim_start_matches('/').parse().ok()?;
                (p <= 32).then(|| ipv4_netmask(p))
            }
        }
        Family::Inet6 => {
            let p: u32 = text.trim_start_matches('/').parse().ok()?;
            (1..=128).contains(&p).then_some(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(name: &str) -> DirectorConfig {
        let text = std::fs::read_to_string(format!(
            "{}/../examples/{name}.yaml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        lb_proto::yaml::from_str(&text).unwrap()
    }

    /// In: seed 000 for ds1. Out: one VRRP instance, one UDP wrr DR service
    /// on 192.168.56.185:53 with rs1 and rs2 at weight 1 on port 53.
    #[test]
    fn seed_000_plans() {
        let p = DirectorPlan::from_config(&seed("seed-000-dns-dr"), "ds1").unwrap();
        assert_eq!(p.vrrp.len(), 1);
        let dns = &p.services["dns"];
        assert_eq!(
            dns.service.key,
            ServiceKey::Addr {
                protocol: Protocol::Udp,
                addr: "192.168.56.185".parse().unwrap(),
                port: 53
            }
        );
        assert_eq!(dns.service.scheduler, "wrr");
        let dests: Vec<String> = dns
            .real_servers
            .iter()
            .map(|r| format!("{} {} {:?}", r.name, r.dest.key, r.dest.forwarding))
            .collect();
        assert_eq!(
            dests,
            ["rs1 192.168.56.183:53 Route", "rs2 192.168.56.184:53 Route"]
        );
        assert_eq!(p.reconcile_interval, DEFAULT_RECONCILE);
    }

    /// In: every example topology, for each of its directors. Out: each plans.
    #[test]
    fn every_example_plans_for_every_director() {
        for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples")).unwrap()
        {
            let path = entry.unwrap().path();
            let cfg: DirectorConfig =
                lb_proto::yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let directors: BTreeSet<String> = cfg
                .director_groups
                .iter()
                .flat_map(group_directors)
                .collect();
            assert!(!directors.is_empty(), "{}", path.display());
            for d in directors {
                DirectorPlan::from_config(&cfg, &d)
                    .unwrap_or_else(|e| panic!("{} for {d}: {e}", path.display()));
            }
        }
    }

    /// In: seed 000 with a bad scheduler, a real server node that does not
    /// exist, a node that is no director. Out: each refused, naming the object
    /// and the field.
    #[test]
    fn bad_input_names_object_and_field() {
        let mut c = seed("seed-000-dns-dr");
        c.services[0].scheduler = "wrrr".into();
        let e = DirectorPlan::from_config(&c, "ds1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("scheduler 'wrrr' is unknown"), "{e}");

        let mut c = seed("seed-000-dns-dr");
        c.services[0].real_servers[1].target = Some(v1::real_server::Target::Node("rs9".into()));
        let e = DirectorPlan::from_config(&c, "ds1")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("service dns") && e.contains("realServers[1].node"),
            "{e}"
        );

        let e = DirectorPlan::from_config(&seed("seed-000-dns-dr"), "rs1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("node rs1: not a director"), "{e}");
    }

    /// In: health weights for rs1 only, then rs2 removed by a drain. Out: the
    /// service state holds exactly the weighted, not removed destinations.
    #[test]
    fn service_state_follows_weights() {
        let p = DirectorPlan::from_config(&seed("seed-000-dns-dr"), "ds1").unwrap();
        let rs1: SocketAddr = "192.168.56.183:53".parse().unwrap();
        let rs2: SocketAddr = "192.168.56.184:53".parse().unwrap();
        let w = BTreeMap::from([(Target::Real(rs1), 3), (Target::Real(rs2), 0)]);
        let st = p.service_state("dns", &w, &BTreeSet::new()).unwrap();
        let got: Vec<(String, u32)> = st
            .dests
            .values()
            .map(|d| (d.key.to_string(), d.weight))
            .collect();
        assert_eq!(
            got,
            [
                ("192.168.56.183:53".to_string(), 3),
                ("192.168.56.184:53".to_string(), 0)
            ]
        );
        let st = p
            .service_state("dns", &w, &BTreeSet::from([dest_key(rs2)]))
            .unwrap();
        assert_eq!(st.dests.len(), 1);
    }

    /// In: persistence with a /24 mask and a timeout, sh with both flags. Out:
    /// the kernel's flags, timeout and netmask.
    #[test]
    fn persistence_and_scheduler_flags() {
        let mut c = seed("seed-000-dns-dr");
        let s = &mut c.services[0];
        s.scheduler = "sh".into();
        s.scheduler_flags = Some(v1::SchedulerFlags {
            fallback: true,
            port: true,
        });
        s.persistence = Some(v1::Persistence {
            timeout: Some(lb_proto::duration::Duration::from_std(Duration::from_secs(
                600,
            ))),
            netmask: "255.255.255.0".into(),
            engine: String::new(),
        });
        let p = DirectorPlan::from_config(&c, "ds1").unwrap();
        let svc = &p.services["dns"].service;
        assert_eq!(
            svc.flags.0,
            ServiceFlags::PERSISTENT | ServiceFlags::SCHED1 | ServiceFlags::SCHED2
        );
        assert_eq!(svc.timeout, 600);
        assert_eq!(svc.netmask, 0xffff_ff00);
    }
}
