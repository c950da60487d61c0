//! Health checks of real servers.
//!
//! - [`config`]: the topology's health settings, validated into typed values;
//! - [`state`]: the pure per-real-server state (rise/fall, retries, schedule);
//! - [`service`]: the pure per-service side (weights, inhibit, slow start,
//!   sorry server, quorum) whose outputs the director turns into IPVS ops;
//! - [`outcome`]: what a check attempt found and why it failed.

pub mod check;
pub mod config;
pub mod outcome;
pub mod runner;
pub mod service;
pub mod state;

#[cfg(test)]
mod runner_tests;
#[cfg(test)]
mod test_servers;
