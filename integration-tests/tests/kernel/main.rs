//! Tests that need IPVS or IP tunnels in the kernel.
//!
//! Not run by `cargo test`: `integration-tests/vm/run` (called by `make test`)
//! builds this binary and runs it directly on a kernel with IPVS, or inside a
//! Debian-kernel VM otherwise, with the IPVS and tunnel modules loaded. Every
//! test starts with `lb_lab::kernel::require_ipvs()`.
//!
//! One module per area; add yours as a `mod` line below.

mod agents;
mod demo;
mod director_dns_dr;
mod director_drain;
mod director_seeds;
mod dns_dr_lab;
mod ipvs;
mod realserver_tun;
mod smoke_dr;
