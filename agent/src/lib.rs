//! The lb agent.
//!
//! One binary, two roles:
//!
//! - `lb-agent director`: VRRP for the VIPs, IPVS over generic netlink, health
//!   checks of the real servers, and a gRPC API;
//! - `lb-agent realserver`: the VIPs on `lo` (DR) or on a tunnel (TUN), the ARP
//!   and rp_filter sysctls, and readiness.
//!
//! Both run standalone from a YAML file or under `lb-controller`.

pub mod config;
pub mod health;
pub mod ipvs;
pub mod netif;
pub mod realserver;
pub mod vrrp;
