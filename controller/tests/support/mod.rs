//! Shared test support: a real etcd, store backends, topologies.
#![allow(dead_code)]

pub mod etcd;
pub mod harness;

use std::sync::Arc;
use std::time::Duration;

use lb_controller::store::{Store, embedded::EmbeddedStore, etcd::EtcdStore};

/// A store of one backend plus what keeps it alive.
pub struct Backend {
    pub store: Arc<dyn Store>,
    pub etcd: Option<etcd::EtcdServer>,
    pub dir: Option<tempfile::TempDir>,
}

/// An embedded store in a temporary directory.
pub fn embedded() -> Backend {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open embedded store");
    Backend {
        store: Arc::new(store),
        etcd: None,
        dir: Some(dir),
    }
}

/// A store on a fresh etcd.
pub async fn etcd() -> Backend {
    let server = etcd::EtcdServer::start().await;
    let store = EtcdStore::connect(&[server.endpoint()], "/lbtest", Duration::from_secs(2))
        .await
        .expect("connect etcd");
    Backend {
        store: Arc::new(store),
        etcd: Some(server),
        dir: None,
    }
}

/// The DNS-over-DR seed topology.
/// Seed 000 (DNS over LVS-DR, two directors), from `examples/`.
pub const SEED_DNS: &str = include_str!("../../../examples/seed-000-dns-dr.yaml");

/// The seed topology parsed.
pub fn seed() -> lb_proto::v1::Topology {
    lb_proto::yaml::from_str(SEED_DNS).expect("seed parses")
}
