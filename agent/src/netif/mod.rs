//! Network interfaces: addresses, sysctls, tunnels, gratuitous ARP.

pub mod addresses;
pub mod fou;
pub mod garp;
pub mod links;
pub mod routes;
pub mod rtnl;
pub mod sysctl;
pub mod tunnel;
pub mod vmac;

pub use rtnl::{NetifError, Outcome, Rtnl};
