//! `lb_lab`: labs for testing lb against real kernels.
//!
//! - [`Lab`]: network namespaces on a bridge that lives in a namespace of its
//!   own; [`Host`]s with IPv4 and IPv6 addresses; commands, background
//!   processes ([`Proc`]) and Rust closures run inside a host; teardown on
//!   drop, also during a panic.
//! - [`wait_for`] and friends: bounded waiting for state that changes on its own.
//! - [`Host::http_server`] / [`Host::http_get`]: a tiny HTTP server that names
//!   its host, and a client bounded by `--max-time`.
//! - [`kernel`]: what the running kernel offers (IPVS).
//!
//! Every operation is bounded in time and every error names the command and
//! carries its stderr. Under emulation (the VM) time limits are multiplied by
//! `LB_LAB_TIME_SCALE` (see [`scaled`]). `LB_LAB_TRACE=1` prints each command,
//! `LB_LAB_KEEP=1` keeps labs after the test for inspection.
//!
//! ```no_run
//! use lb_lab::Lab;
//! let lab = Lab::new("ping").unwrap();
//! let a = lab.host("a", &["10.0.0.1/24", "fd00::1/64"]).unwrap();
//! let _b = lab.host("b", &["10.0.0.2/24", "fd00::2/64"]).unwrap();
//! a.run_ok(["ping", "-c1", "-W2", "10.0.0.2"]).unwrap();
//! ```

pub mod cmd;
pub mod error;
pub mod http;
pub mod kernel;
pub mod lab;
pub mod netns;
pub mod pcap;
pub mod process;
pub mod wait;

use std::path::PathBuf;
use std::time::Duration;

pub use cmd::{Cmd, Output};
pub use error::{LabError, Result};
pub use http::http_url;
pub use lab::{Host, Lab, sweep_stale, with_exclusive_netns_creation};
pub use netns::in_netns;
pub use process::Proc;
pub use wait::{wait_for, wait_for_ok, wait_for_some};

/// `d` multiplied by `LB_LAB_TIME_SCALE` (a positive number, default 1).
/// The VM runner sets it because everything runs 10-30 times slower under
/// emulation; use it for every time limit a test sets.
pub fn scaled(d: Duration) -> Duration {
    let factor = std::env::var("LB_LAB_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f > 0.0)
        .unwrap_or(1.0);
    d.mul_f64(factor)
}

/// Path of a binary of this workspace (`lb-agent`, `lb-controller`, ...):
/// in `LB_BIN_DIR` if set (the VM runner sets it), else next to the test
/// binary's directory (`target/<profile>/`).
pub fn bin_path(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("LB_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test binary> -> target/<profile>/<name>
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(|p| p.join(name))
        .unwrap_or_else(|| name.into())
}

/// Prints a lab trace line when `LB_LAB_TRACE` is set.
pub(crate) fn trace(msg: impl FnOnce() -> String) {
    if std::env::var_os("LB_LAB_TRACE").is_some() {
        eprintln!("lb_lab: {}", msg());
    }
}
