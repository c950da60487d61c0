//! Network interfaces: addresses, sysctls, tunnels, gratuitous ARP.
