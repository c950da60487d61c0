//! A `RealServerConfig` checked and turned into typed values: what the real
//! server must hold. Nothing is applied from a configuration that fails here.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use lb_proto::v1::{Forwarding, RealServerConfig, tunnel};

use crate::netif::tunnel::TunnelDevice;

/// Default time between two comparisons of the kernel with the desired state.
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(5);

/// Where the record of changed values lives when the file does not say.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/lb-agent";

/// How one VIP is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// On `lo`, with ARP for it suppressed on the other interfaces.
    Dr,
    /// On the decapsulating tunnel device.
    Tun(TunnelDevice),
    /// GUE: a fou receive port hands the inner packet to the fallback IP
    /// tunnel device (`tunl0`, `lb-ip6tnl`), which holds the VIP.
    Gue {
        /// The device that receives the inner packets.
        device: TunnelDevice,
        /// The UDP port the director sends to (`--tun-port`).
        port: u16,
    },
    /// Not bound; replies must route back through `gateway` (the director).
    Nat {
        /// The director's address.
        gateway: IpAddr,
    },
}

impl Mode {
    /// The proto enum of this mode.
    pub fn forwarding(&self) -> Forwarding {
        match self {
            Mode::Dr => Forwarding::Dr,
            Mode::Tun(_) | Mode::Gue { .. } => Forwarding::Tun,
            Mode::Nat { .. } => Forwarding::Nat,
        }
    }
}

/// One VIP the real server must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    /// The address (bound as /32 or /128).
    pub address: IpAddr,
    /// How.
    pub mode: Mode,
    /// Services that need it, for reporting.
    pub services: Vec<String>,
}

/// A validated real-server configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// This node's name.
    pub node: String,
    /// The VIPs, in configuration order.
    pub vips: Vec<Vip>,
    /// Interfaces facing the directors; empty means every interface with an
    /// address.
    pub interfaces: Vec<String>,
    /// Time between two reconciliations.
    pub reconcile_interval: Duration,
    /// Where the record of changed values is kept.
    pub state_dir: PathBuf,
}

/// A configuration that cannot be used; nothing of it is applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DesiredError {
    /// The address does not parse.
    #[error(
        "vips[{index}]: '{address}' is not an IP address (write it without a prefix, like 192.0.2.10)"
    )]
    BadAddress {
        /// Position in `vips`.
        index: usize,
        /// What was given.
        address: String,
    },
    /// The same VIP twice.
    #[error("vips[{index}]: {address} is listed twice")]
    Duplicate {
        /// Position of the second one.
        index: usize,
        /// The address.
        address: IpAddr,
    },
    /// NAT without the director's address.
    #[error(
        "vips[{index}] {address}: forwarding nat needs natGateway, the director address replies go through"
    )]
    NatWithoutGateway {
        /// Position in `vips`.
        index: usize,
        /// The VIP.
        address: IpAddr,
    },
    /// The NAT gateway does not parse or is of the other family.
    #[error(
        "vips[{index}] {address}: natGateway '{gateway}' is not an address of the VIP's family"
    )]
    BadGateway {
        /// Position in `vips`.
        index: usize,
        /// The VIP.
        address: IpAddr,
        /// What was given.
        gateway: String,
    },
    /// GUE without a usable UDP port.
    #[error(
        "vips[{index}] {address}: tunnel type gue needs tunnel.port, the UDP port the directors send to (1-65535), got {port}"
    )]
    GueWithoutPort {
        /// Position in `vips`.
        index: usize,
        /// The VIP.
        address: IpAddr,
        /// What was given.
        port: u32,
    },
    /// An unknown enum number.
    #[error("vips[{index}]: unknown forwarding {value}")]
    BadForwarding {
        /// Position in `vips`.
        index: usize,
        /// The number.
        value: i32,
    },
    /// A reconcile interval of zero or below.
    #[error("settings.reconcileInterval must be positive")]
    BadInterval,
    /// An interface name the kernel would refuse.
    #[error("interfaces[{index}]: '{name}' is not an interface name")]
    BadInterface {
        /// Position in `interfaces`.
        index: usize,
        /// What was given.
        name: String,
    },
}

impl DesiredError {
    /// The object and field path the error is about, as the controller
    /// reports them.
    pub fn object_and_field(&self) -> (String, String) {
        match self {
            DesiredError::BadAddress { index, address } => {
                (format!("vip '{address}'"), format!("vips[{index}].address"))
            }
            DesiredError::Duplicate { index, address } => {
                (format!("vip {address}"), format!("vips[{index}].address"))
            }
            DesiredError::NatWithoutGateway { index, address }
            | DesiredError::BadGateway { index, address, .. } => (
                format!("vip {address}"),
                format!("vips[{index}].natGateway"),
            ),
            DesiredError::GueWithoutPort { index, address, .. } => (
                format!("vip {address}"),
                format!("vips[{index}].tunnel.port"),
            ),
            DesiredError::BadForwarding { index, .. } => (
                format!("vips[{index}]"),
                format!("vips[{index}].forwarding"),
            ),
            DesiredError::BadInterval => ("settings".into(), "settings.reconcileInterval".into()),
            DesiredError::BadInterface { index, .. } => {
                ("node".into(), format!("interfaces[{index}]"))
            }
        }
    }

    /// The error as the controller reads it (code "invalid").
    pub fn detail(&self) -> lb_proto::v1::ErrorDetail {
        let (object, field) = self.object_and_field();
        lb_proto::v1::ErrorDetail {
            code: "invalid".into(),
            message: self.to_string(),
            object,
            field,
        }
    }
}

impl Desired {
    /// Nothing to hold: what a controlled agent runs before its first push.
    pub fn empty(node: &str, state_dir: PathBuf) -> Desired {
        Desired {
            node: node.to_string(),
            vips: Vec::new(),
            interfaces: Vec::new(),
            reconcile_interval: DEFAULT_RECONCILE_INTERVAL,
            state_dir,
        }
    }

    /// Checks `config` whole; the first problem found is returned.
    pub fn from_config(config: &RealServerConfig) -> Result<Desired, DesiredError> {
        let mut vips: Vec<Vip> = Vec::with_capacity(config.vips.len());
        for (index, v) in config.vips.iter().enumerate() {
            let address: IpAddr =
                v.address
                    .trim()
                    .parse()
                    .map_err(|_| DesiredError::BadAddress {
                        index,
                        address: v.address.clone(),
                    })?;
            if vips.iter().any(|o| o.address == address) {
                return Err(DesiredError::Duplicate { index, address });
            }
            let forwarding =
                Forwarding::try_from(v.forwarding).map_err(|_| DesiredError::BadForwarding {
                    index,
                    value: v.forwarding,
                })?;
            let mode = match forwarding {
                Forwarding::Unspecified | Forwarding::Dr => Mode::Dr,
                Forwarding::Tun => {
                    let kind = v
                        .tunnel
                        .as_ref()
                        .map(|t| t.r#type())
                        .unwrap_or(tunnel::Type::Ipip);
                    match (kind, address.is_ipv4()) {
                        (tunnel::Type::Unspecified | tunnel::Type::Ipip, true) => {
                            Mode::Tun(TunnelDevice::Ipip)
                        }
                        (tunnel::Type::Unspecified | tunnel::Type::Ipip, false) => {
                            Mode::Tun(TunnelDevice::Ip6Tnl)
                        }
                        (tunnel::Type::Gre, true) => Mode::Tun(TunnelDevice::Gre),
                        (tunnel::Type::Gre, false) => Mode::Tun(TunnelDevice::Ip6Gre),
                        (tunnel::Type::Gue, v4) => {
                            let port = v.tunnel.as_ref().map(|t| t.port).unwrap_or(0);
                            let port = u16::try_from(port).ok().filter(|p| *p != 0).ok_or(
                                DesiredError::GueWithoutPort {
                                    index,
                                    address,
                                    port,
                                },
                            )?;
                            let device = if v4 {
                                TunnelDevice::Ipip
                            } else {
                                TunnelDevice::Ip6Tnl
                            };
                            Mode::Gue { device, port }
                        }
                    }
                }
                Forwarding::Nat => {
                    if v.nat_gateway.trim().is_empty() {
                        return Err(DesiredError::NatWithoutGateway { index, address });
                    }
                    let gateway: IpAddr = v
                        .nat_gateway
                        .trim()
                        .parse()
                        .ok()
                        .filter(|g: &IpAddr| g.is_ipv4() == address.is_ipv4())
                        .ok_or_else(|| DesiredError::BadGateway {
                            index,
                            address,
                            gateway: v.nat_gateway.clone(),
                        })?;
                    Mode::Nat { gateway }
                }
            };
            vips.push(Vip {
                address,
                mode,
                services: v.services.clone(),
            });
        }
        for (index, name) in config.interfaces.iter().enumerate() {
            // IFNAMSIZ is 16 with the NUL; '/' and whitespace never occur.
            if name.is_empty()
                || name.len() > 15
                || name.contains('/')
                || name.chars().any(char::is_whitespace)
                || name == "."
                || name == ".."
            {
                return Err(DesiredError::BadInterface {
                    index,
                    name: name.clone(),
                });
            }
        }
        let settings = config.settings.clone().unwrap_or_default();
        let reconcile_interval = match settings.reconcile_interval {
            None => DEFAULT_RECONCILE_INTERVAL,
            Some(d) if d.is_zero() => DEFAULT_RECONCILE_INTERVAL,
            Some(d) => d
                .to_std()
                .filter(|d| !d.is_zero())
                .ok_or(DesiredError::BadInterval)?,
        };
        let state_dir = if settings.state_dir.is_empty() {
            PathBuf::from(DEFAULT_STATE_DIR)
        } else {
            PathBuf::from(&settings.state_dir)
        };
        Ok(Desired {
            node: config.node.clone(),
            vips,
            interfaces: config.interfaces.clone(),
            reconcile_interval,
            state_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Desired, DesiredError> {
        let cfg: RealServerConfig = lb_proto::yaml::from_str(yaml).unwrap();
        Desired::from_config(&cfg)
    }

    #[test]
    fn reads_modes_tunnels_and_defaults() {
        let d = parse(
            r#"
node: rs1
vips:
  - {address: 192.0.2.10, forwarding: dr}
  - {address: "2001:db8::10", forwarding: tun}
  - {address: 192.0.2.11, forwarding: tun, tunnel: {type: gre}}
  - {address: 192.0.2.12, forwarding: nat, natGateway: 10.0.0.1}
  - {address: 192.0.2.13, forwarding: tun, tunnel: {type: gue, port: 6080}}
interfaces: [eth0]
settings: {reconcileInterval: 250ms, stateDir: /run/lb}
"#,
        )
        .unwrap();
        assert_eq!(d.vips[0].mode, Mode::Dr);
        assert_eq!(d.vips[1].mode, Mode::Tun(TunnelDevice::Ip6Tnl));
        assert_eq!(d.vips[2].mode, Mode::Tun(TunnelDevice::Gre));
        assert_eq!(
            d.vips[3].mode,
            Mode::Nat {
                gateway: "10.0.0.1".parse().unwrap()
            }
        );
        assert_eq!(
            d.vips[4].mode,
            Mode::Gue {
                device: TunnelDevice::Ipip,
                port: 6080
            }
        );
        assert_eq!(d.reconcile_interval, Duration::from_millis(250));
        assert_eq!(d.state_dir, PathBuf::from("/run/lb"));
        let d = parse("node: rs1\nvips: [{address: 192.0.2.10}]\n").unwrap();
        assert_eq!(d.vips[0].mode, Mode::Dr);
        assert_eq!(d.reconcile_interval, DEFAULT_RECONCILE_INTERVAL);
    }

    #[test]
    fn refuses_what_it_cannot_hold() {
        assert!(matches!(
            parse("vips: [{address: 192.0.2.10/32}]"),
            Err(DesiredError::BadAddress { index: 0, .. })
        ));
        assert!(matches!(
            parse("vips: [{address: 192.0.2.10}, {address: 192.0.2.10, forwarding: tun}]"),
            Err(DesiredError::Duplicate { index: 1, .. })
        ));
        assert!(matches!(
            parse("vips: [{address: 192.0.2.10, forwarding: nat}]"),
            Err(DesiredError::NatWithoutGateway { .. })
        ));
        assert!(matches!(
            parse("vips: [{address: 192.0.2.10, forwarding: nat, natGateway: '2001:db8::1'}]"),
            Err(DesiredError::BadGateway { .. })
        ));
        let err = parse("vips: [{address: 192.0.2.10, forwarding: tun, tunnel: {type: gue}}]")
            .unwrap_err();
        assert!(err.to_string().contains("needs tunnel.port"), "{err}");
        assert_eq!(err.object_and_field().1, "vips[0].tunnel.port");
        assert!(matches!(
            parse(
                "vips: [{address: 192.0.2.10, forwarding: tun, tunnel: {type: gue, port: 70000}}]"
            ),
            Err(DesiredError::GueWithoutPort { port: 70000, .. })
        ));
        assert!(matches!(
            parse("interfaces: ['eth 0']"),
            Err(DesiredError::BadInterface { index: 0, .. })
        ));
        assert!(matches!(
            parse("settings: {reconcileInterval: -1s}"),
            Err(DesiredError::BadInterval)
        ));
    }
}
