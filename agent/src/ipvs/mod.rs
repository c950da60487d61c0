//! IPVS over generic netlink: the agent's only way to read and write the
//! kernel's virtual-server table.
//!
//! - [`model`]: services, destinations, counters, timeouts, sync daemons;
//! - [`codec`]: those objects as the IPVS family's attributes, both ways;
//! - [`validate`]: checks of a desired table before the kernel sees it;
//! - [`reconcile`]: the pure diff from (desired, current) to operations;
//! - [`ownership`]: the persisted set of services lb owns;
//! - [`client`]: the netlink socket that carries requests out, pipelined;
//! - [`converge`]: one reconcile round with ownership kept on disk.

pub mod client;
pub mod codec;
pub mod converge;
pub mod model;
pub mod ownership;
pub mod reconcile;
pub mod validate;

pub use model::*;
pub use reconcile::{IpvsOp, Plan, ServiceState, Table};
