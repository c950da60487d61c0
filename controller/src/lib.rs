//! The lb controller: the one writer of the topology.
//!
//! It stores the topology (etcd, or an embedded store for a single node),
//! validates every change, plans each node's desired state and pushes it to
//! the agents over `AgentSync`.
//!
//! - [`store`]: the store trait, the redb and etcd backends;
//! - [`validate`]: rules a topology must pass before it is written (pure);
//! - [`change`]: what an apply, delete or drain does to the topology (pure);
//! - [`plan`]: topology and readiness to one `DesiredState` per node, the
//!   readiness gate and the per-node diff (pure);
//! - [`fleet`]: the agents, their status and the push;
//! - [`controller`]: the operations and the background tasks;
//! - [`sync`], [`api`], [`server`]: the gRPC services and the server.
//!
//! The agent's side of `AgentSync` is `lb_agent::sync`.

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
