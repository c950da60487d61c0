//! Network interfaces: addresses, sysctls, tunnels, gratuitous ARP.
pub mod garp;
