//! The lb agent.
//!
//! One binary, two roles:
//!
//! - `lb-agent director`: VRRP for the VIPs, IPVS over generic netlink
//!   ([`ipvs`]), health checks of the real servers ([`health`]), a gRPC API
//!   ([`api`]) and Prometheus metrics ([`metrics`]); today the binary runs
//!   VRRP, and the director assembly that joins them is still to come;
//! - `lb-agent realserver`: the VIPs on `lo` (DR) or on a tunnel (TUN), the ARP
//!   and rp_filter sysctls, and readiness.
//!
//! Both run standalone from a YAML file; the link to `lb-controller`
//! (`--controller`) is still to come.

pub mod api;
pub mod config;
pub mod health;
pub mod ipvs;
pub mod metrics;
pub mod netif;
pub mod realserver;
pub mod vrrp;
