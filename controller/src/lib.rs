//! The lb controller: the one writer of the topology.
//!
//! It stores the topology (etcd, or an embedded store for a single node),
//! validates every change, plans each node's desired state and pushes it to
//! the agents over `AgentSync`.

pub mod agent_client;
pub mod api;
pub mod change;
pub mod controller;
pub mod fleet;
pub mod plan;
pub mod server;
pub mod store;
pub mod sync;
pub mod topology;
pub mod validate;
