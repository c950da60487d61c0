//! The lb agent.
//!
//! One binary, two roles:
//!
//! - `lb-agent director` ([`director`]): VRRP for the VIPs ([`vrrp`]), IPVS
//!   over generic netlink ([`ipvs`]), health checks of the real servers
//!   ([`health`]), the agent API ([`api`]) and metrics ([`metrics`]);
//! - `lb-agent realserver` ([`realserver`]): the VIPs on `lo` (DR) or on a
//!   tunnel (TUN), the ARP and rp_filter sysctls, and readiness.
//!
//! Both run standalone from a YAML file; a director also runs under
//! `lb-controller` (`--controller`, [`sync`]), keeping its last good
//! configuration on disk ([`store`]).

pub mod api;
pub mod config;
pub mod director;
pub mod health;
pub mod ipvs;
pub mod metrics;
pub mod netif;
pub mod realserver;
pub mod store;
pub mod sync;
pub mod vrrp;
