//! Tests that need IPVS or IP tunnels: a real kernel (a VM here).

mod ipvs;
