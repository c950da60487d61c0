//! Health checks of real servers.
//!
//! - [`config`]: the topology's health settings, validated into typed values
//!   (errors name the service, the real server and the field);
//! - [`state`]: the pure per-real-server state (rise/fall, retries with delay
//!   before retry, start state, warmup and jitter from a seeded generator,
//!   dynamic weight) and the maths that spreads checks over an interval;
//! - [`service`]: the pure per-service side (remove or inhibit, slow start,
//!   sorry server, quorum with hysteresis) whose outputs the director turns
//!   into IPVS operations;
//! - [`check`]: the checkers (TCP, HTTP(S), UDP, DNS, exec, gRPC);
//! - [`runner`]: the task that schedules every check, with bounded
//!   concurrency, and reports transitions, service actions and quorum;
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
