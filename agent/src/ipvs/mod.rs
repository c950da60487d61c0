//! IPVS over generic netlink: the agent's only way to read and write the
//! kernel's virtual-server table.
//!
//! - [`model`]: services, destinations, counters, timeouts, sync daemons;
//! - [`codec`]: those objects as the IPVS family's attributes, both ways;

pub mod codec;
pub mod model;

pub use model::*;
