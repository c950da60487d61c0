//! Facts about the running kernel that decide where a test can run.
//!
//! Tests of the `kernel` binary need IPVS (and IP tunnels); that binary is run
//! by `integration-tests/vm/run`, directly on a kernel with IPVS and inside a
//! Debian-kernel VM otherwise.

use std::path::Path;

/// Whether the kernel has IPVS loaded (`/proc/net/ip_vs` exists).
pub fn has_ipvs() -> bool {
    Path::new("/proc/net/ip_vs").exists()
}

/// Panics with a message saying how to run the test if IPVS is missing.
pub fn require_ipvs() {
    assert!(
        has_ipvs(),
        "this test needs IPVS, but /proc/net/ip_vs does not exist in this kernel: \
         run the kernel tests with `integration-tests/vm/run` (or `make test`), which \
         loads ip_vs here or boots a Debian kernel in a VM"
    );
}
