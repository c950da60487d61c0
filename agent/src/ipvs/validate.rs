//! Checks of a desired IPVS table before the kernel sees it.
//!
//! The kernel answers a bad combination with a bare errno (or accepts a
//! service that can never work); these checks name the service and say what
//! to change. Every error of a table is reported, not only the first.

use std::fmt;
use std::net::IpAddr;

use super::model::{
    Destination, Family, Forwarding, Protocol, Service, ServiceFlags, ServiceKey, TunnelFlags,
    TunnelType,
};
use super::reconcile::Table;

/// Schedulers of the kernel's IPVS, each in module `ip_vs_<name>`.
pub const SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

/// Persistence engines, each in module `ip_vs_pe_<name>`.
pub const PERSISTENCE_ENGINES: &[&str] = &["sip"];

/// The kernel module that provides a scheduler.
pub fn scheduler_module(name: &str) -> String {
    format!("ip_vs_{name}")
}

/// One thing wrong with a desired service or destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The scheduler is not one the kernel has.
    #[error(
        "service {service}: scheduler '{name}' is unknown (known: {known}); the kernel loads schedulers from module ip_vs_<name>",
        known = SCHEDULERS.join(", ")
    )]
    UnknownScheduler {
        /// The service.
        service: ServiceKey,
        /// The scheduler asked for.
        name: String,
    },
    /// The persistence engine is not one the kernel has.
    #[error(
        "service {service}: persistence engine '{name}' is unknown (known: sip, module ip_vs_pe_sip)"
    )]
    UnknownPersistenceEngine {
        /// The service.
        service: ServiceKey,
        /// The engine asked for.
        name: String,
    },
    /// Port 0 matches every port, which only makes sense with persistence.
    #[error(
        "service {service}: port 0 (all ports) needs persistence; set a persistence timeout or give a port"
    )]
    ZeroPortWithoutPersistence {
        /// The service.
        service: ServiceKey,
    },
    /// Firewall mark 0 selects nothing.
    #[error("service {service}: firewall mark 0 selects no packets; use a mark from 1")]
    ZeroFwmark {
        /// The service.
        service: ServiceKey,
    },
    /// One-packet scheduling only exists for UDP.
    #[error(
        "service {service}: one-packet scheduling works only for UDP, not {protocol}; remove it or use udp"
    )]
    OnePacketNotUdp {
        /// The service.
        service: ServiceKey,
        /// The protocol asked for.
        protocol: Protocol,
    },
    /// The scheduler flags only mean something to sh and mh.
    #[error(
        "service {service}: the fallback/port flags apply to the sh and mh schedulers, not '{scheduler}'"
    )]
    SchedulerFlagsWithoutSchedulerSupport {
        /// The service.
        service: ServiceKey,
        /// The scheduler asked for.
        scheduler: String,
    },
    /// The persistence netmask is not a valid mask of the family.
    #[error(
        "service {service}: persistence netmask {netmask} is not valid for {family} (IPv4: a contiguous mask such as 255.255.255.0; IPv6: a prefix length 1..128)"
    )]
    BadNetmask {
        /// The service.
        service: ServiceKey,
        /// The family.
        family: Family,
        /// The netmask as given (kernel encoding).
        netmask: u32,
    },
    /// Persistence without a timeout.
    #[error("service {service}: persistence needs a timeout above 0 seconds")]
    PersistenceWithoutTimeout {
        /// The service.
        service: ServiceKey,
    },
    /// Destination and service families differ and the method cannot cross them.
    #[error(
        "service {service}: destination {dest} is {dest_family} but the service is {service_family}; only tunnel forwarding can cross families, not {forwarding}"
    )]
    MixedFamily {
        /// The service.
        service: ServiceKey,
        /// The destination.
        dest: IpAddr,
        /// The service's family.
        service_family: Family,
        /// The destination's family.
        dest_family: Family,
        /// The method asked for.
        forwarding: Forwarding,
    },
    /// A weight the kernel cannot hold (it is a signed int).
    #[error("service {service}: destination {dest}: weight {weight} is above {max}", max = i32::MAX)]
    WeightTooLarge {
        /// The service.
        service: ServiceKey,
        /// The destination.
        dest: IpAddr,
        /// The weight.
        weight: u32,
    },
    /// The lower threshold is above the upper one.
    #[error(
        "service {service}: destination {dest}: lower threshold {lower} is above upper threshold {upper}"
    )]
    ThresholdOrder {
        /// The service.
        service: ServiceKey,
        /// The destination.
        dest: IpAddr,
        /// The lower threshold.
        lower: u32,
        /// The upper threshold.
        upper: u32,
    },
    /// GUE needs the port it encapsulates to.
    #[error("service {service}: destination {dest}: GUE tunnelling needs a tunnel port")]
    GueWithoutPort {
        /// The service.
        service: ServiceKey,
        /// The destination.
        dest: IpAddr,
    },
    /// Tunnel checksum flags the encapsulation does not have.
    #[error(
        "service {service}: destination {dest}: checksum flags apply to gue and gre tunnels, remote checksum to gue only, and only one of csum and remcsum"
    )]
    TunnelFlagsForType {
        /// The service.
        service: ServiceKey,
        /// The destination.
        dest: IpAddr,
    },
    /// Tunnel options on a destination that does not tunnel.
    #[error(
        "service {service}: destination {dest}: tunnel type, port and flags apply only to tunnel forwarding, not {forwarding}"
    )]
    TunnelOptionsWithoutTunnel {
        /// The service.
        service: ServiceKey,
        /// The destination.
        dest: IpAddr,
        /// The method asked for.
        forwarding: Forwarding,
    },
}

/// Every problem of a desired table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Check a whole desired table.
pub fn validate(table: &Table) -> Result<(), ValidationErrors> {
    validate_services(table.values().map(|s| (&s.service, s.dests.values())))
}

/// As [`validate`], for services and their destinations given where they
/// stand (no table built), in the order given.
pub fn validate_services<'a, D>(
    services: impl IntoIterator<Item = (&'a Service, D)>,
) -> Result<(), ValidationErrors>
where
    D: IntoIterator<Item = &'a Destination>,
{
    let mut errors = Vec::new();
    for (service, dests) in services {
        validate_service(service, &mut errors);
        for dest in dests {
            validate_dest(&service.key, dest, &mut errors);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}

/// Check one service's own options.
pub fn validate_service(svc: &Service, errors: &mut Vec<ValidationError>) {
    let service = svc.key;
    if !SCHEDULERS.contains(&svc.scheduler.as_str()) {
        errors.push(ValidationError::UnknownScheduler {
            service,
            name: svc.scheduler.clone(),
        });
    }
    if let Some(pe) = svc
        .pe_name
        .as_ref()
        .filter(|pe| !PERSISTENCE_ENGINES.contains(&pe.as_str()))
    {
        errors.push(ValidationError::UnknownPersistenceEngine {
            service,
            name: pe.clone(),
        });
    }
    let persistent = svc.flags.contains(ServiceFlags::PERSISTENT);
    match svc.key {
        ServiceKey::Addr { port: 0, .. } if !persistent => {
            errors.push(ValidationError::ZeroPortWithoutPersistence { service });
        }
        ServiceKey::Fwmark { mark: 0, .. } => errors.push(ValidationError::ZeroFwmark { service }),
        _ => {}
    }
    match svc.key {
        ServiceKey::Addr { protocol, .. }
            if svc.flags.contains(ServiceFlags::ONEPACKET) && protocol != Protocol::Udp =>
        {
            errors.push(ValidationError::OnePacketNotUdp { service, protocol });
        }
        _ => {}
    }
    if svc.flags.0 & (ServiceFlags::SCHED1 | ServiceFlags::SCHED2 | ServiceFlags::SCHED3) != 0
        && !matches!(svc.scheduler.as_str(), "sh" | "mh")
    {
        errors.push(ValidationError::SchedulerFlagsWithoutSchedulerSupport {
            service,
            scheduler: svc.scheduler.clone(),
        });
    }
    if persistent && svc.timeout == 0 {
        errors.push(ValidationError::PersistenceWithoutTimeout { service });
    }
    let family = svc.key.family();
    let netmask_ok = match family {
        // Contiguous: the ones are all at the top.
        Family::Inet => svc.netmask.leading_ones() + svc.netmask.trailing_zeros() == 32,
        Family::Inet6 => (1..=128).contains(&svc.netmask),
    };
    if !netmask_ok {
        errors.push(ValidationError::BadNetmask {
            service,
            family,
            netmask: svc.netmask,
        });
    }
}

/// Check one destination of a service.
pub fn validate_dest(service: &ServiceKey, d: &Destination, errors: &mut Vec<ValidationError>) {
    let service = *service;
    let dest = d.key.addr;
    let service_family = service.family();
    let dest_family = Family::of(&dest);
    if service_family != dest_family && d.forwarding != Forwarding::Tunnel {
        errors.push(ValidationError::MixedFamily {
            service,
            dest,
            service_family,
            dest_family,
            forwarding: d.forwarding,
        });
    }
    if d.weight > i32::MAX as u32 {
        errors.push(ValidationError::WeightTooLarge {
            service,
            dest,
            weight: d.weight,
        });
    }
    if d.l_threshold > d.u_threshold {
        errors.push(ValidationError::ThresholdOrder {
            service,
            dest,
            lower: d.l_threshold,
            upper: d.u_threshold,
        });
    }
    if d.forwarding == Forwarding::Tunnel {
        if d.tun_type == TunnelType::Gue && d.tun_port == 0 {
            errors.push(ValidationError::GueWithoutPort { service, dest });
        }
        let flags_ok = match d.tun_type {
            TunnelType::Ipip => d.tun_flags.0 == 0,
            TunnelType::Gre => d.tun_flags.0 & !TunnelFlags::CSUM == 0,
            // One of none, csum and remcsum, as ipvsadm offers them.
            TunnelType::Gue => {
                matches!(d.tun_flags.0, 0 | TunnelFlags::CSUM | TunnelFlags::REMCSUM)
            }
        };
        if !flags_ok {
            errors.push(ValidationError::TunnelFlagsForType { service, dest });
        }
    } else if d.tun_type != TunnelType::Ipip || d.tun_port != 0 || d.tun_flags.0 != 0 {
        errors.push(ValidationError::TunnelOptionsWithoutTunnel {
            service,
            dest,
            forwarding: d.forwarding,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::super::model::ipv4_netmask;
    use super::super::reconcile::ServiceState;
    use super::*;

    fn key(protocol: Protocol, port: u16) -> ServiceKey {
        ServiceKey::Addr {
            protocol,
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            port,
        }
    }

    fn one(svc: Service, dests: Vec<Destination>) -> Table {
        let mut t = Table::new();
        t.insert(
            svc.key,
            ServiceState {
                service: svc,
                dests: dests.into_iter().map(|d| (d.key, d)).collect(),
            },
        );
        t
    }

    fn errors(t: &Table) -> Vec<String> {
        match validate(t) {
            Ok(()) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn good_table_passes() {
        let mut svc = Service::new(key(Protocol::Udp, 53), "wrr");
        svc.flags = ServiceFlags(ServiceFlags::ONEPACKET);
        let d = Destination::new(
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            53,
            Forwarding::Route,
        );
        assert_eq!(validate(&one(svc, vec![d])), Ok(()));
    }

    #[test]
    fn unknown_scheduler_names_service_and_module() {
        let e = errors(&one(Service::new(key(Protocol::Tcp, 80), "wrrr"), vec![]));
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with(
                "service tcp 192.0.2.1:80: scheduler 'wrrr' is unknown (known: rr, wrr,"
            ),
            "{}",
            e[0]
        );
        assert!(e[0].contains("ip_vs_<name>"), "{}", e[0]);
        assert_eq!(scheduler_module("mh"), "ip_vs_mh");
    }

    #[test]
    fn zero_port_needs_persistence() {
        let e = errors(&one(Service::new(key(Protocol::Tcp, 0), "rr"), vec![]));
        assert_eq!(
            e,
            [
                "service tcp 192.0.2.1:0: port 0 (all ports) needs persistence; set a persistence timeout or give a port"
            ]
        );
        let mut svc = Service::new(key(Protocol::Tcp, 0), "rr");
        svc.flags = ServiceFlags(ServiceFlags::PERSISTENT);
        svc.timeout = 300;
        assert_eq!(validate(&one(svc, vec![])), Ok(()));
        // A fwmark service has no port at all.
        let fw = ServiceKey::Fwmark {
            family: Family::Inet,
            mark: 1,
        };
        assert_eq!(validate(&one(Service::new(fw, "rr"), vec![])), Ok(()));
    }

    #[test]
    fn one_packet_only_udp() {
        let mut svc = Service::new(key(Protocol::Tcp, 80), "rr");
        svc.flags = ServiceFlags(ServiceFlags::ONEPACKET);
        let e = errors(&one(svc, vec![]));
        assert_eq!(
            e,
            [
                "service tcp 192.0.2.1:80: one-packet scheduling works only for UDP, not tcp; remove it or use udp"
            ]
        );
    }

    #[test]
    fn ipv6_vip_with_ipv4_route_destination_is_refused() {
        let key6 = ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            port: 80,
        };
        let v4dest = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let e = errors(&one(
            Service::new(key6, "rr"),
            vec![Destination::new(v4dest, 80, Forwarding::Route)],
        ));
        assert_eq!(
            e,
            [
                "service tcp [2001:db8::1]:80: destination 10.0.0.2 is ipv4 but the service is ipv6; only tunnel forwarding can cross families, not route"
            ]
        );
        // Tunnelling may cross families.
        let ok = one(
            Service::new(key6, "rr"),
            vec![Destination::new(v4dest, 80, Forwarding::Tunnel)],
        );
        assert_eq!(validate(&ok), Ok(()));
    }

    #[test]
    fn netmasks() {
        let mut svc = Service::new(key(Protocol::Tcp, 80), "rr");
        svc.netmask = ipv4_netmask(24);
        assert_eq!(validate(&one(svc.clone(), vec![])), Ok(()));
        svc.netmask = 0xff00ff00;
        assert_eq!(
            errors(&one(svc, vec![])),
            [
                "service tcp 192.0.2.1:80: persistence netmask 4278255360 is not valid for ipv4 (IPv4: a contiguous mask such as 255.255.255.0; IPv6: a prefix length 1..128)"
            ]
        );
        let key6 = ServiceKey::Fwmark {
            family: Family::Inet6,
            mark: 3,
        };
        let mut svc = Service::new(key6, "rr");
        svc.netmask = 129;
        assert_eq!(errors(&one(svc, vec![])).len(), 1);
    }

    #[test]
    fn destination_checks() {
        let svc = Service::new(key(Protocol::Tcp, 80), "rr");
        let addr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let mut d = Destination::new(addr, 80, Forwarding::Route);
        d.l_threshold = 10;
        d.u_threshold = 5;
        d.weight = u32::MAX;
        d.tun_flags = TunnelFlags(TunnelFlags::CSUM);
        let e = errors(&one(svc.clone(), vec![d]));
        assert_eq!(e.len(), 3, "{e:?}");
        let mut gue = Destination::new(addr, 80, Forwarding::Tunnel);
        gue.tun_type = TunnelType::Gue;
        assert_eq!(
            errors(&one(svc.clone(), vec![gue])),
            ["service tcp 192.0.2.1:80: destination 10.0.0.2: GUE tunnelling needs a tunnel port"]
        );
        gue.tun_port = 6080;
        assert_eq!(validate(&one(svc, vec![gue])), Ok(()));
    }
}
