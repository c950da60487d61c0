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
pub const SEED_DNS: &str = r#"
nodes:
  - {name: ds1, role: director,   address: 192.168.56.181}
  - {name: ds2, role: director,   address: 192.168.56.182}
  - {name: rs1, role: realserver, address: 192.168.56.183}
  - {name: rs2, role: realserver, address: 192.168.56.184}
directorGroups:
  - name: dns-lb
    interface: eth2
    vrrp:
      version: 3
      advertInterval: 1s
      instances:
        - name: VI_1
          vrid: 50
          vips: [192.168.56.185/24]
          priorities: {ds1: 100, ds2: 99}
services:
  - name: dns
    directorGroup: dns-lb
    vip: 192.168.56.185
    port: 53
    protocol: udp
    scheduler: wrr
    forwarding: dr
    healthCheck:
      dns: {name: www.abc.local, type: A}
      interval: 6s
      timeout: 1s
    realServers:
      - {node: rs1, port: 53, weight: 1}
      - {node: rs2, port: 53, weight: 1}
"#;

/// The seed topology parsed.
pub fn seed() -> lb_proto::v1::Topology {
    lb_proto::yaml::from_str(SEED_DNS).expect("seed parses")
}
