//! The real-server role: VIPs, ARP and rp_filter, readiness.
