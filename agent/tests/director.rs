//! The director assembled in-process, with no kernel IPVS and no VRRP
//! instance: what it wants in the table follows its checks, and a start with
//! more destinations than the health event queue holds does not stall.

use std::sync::Arc;
use std::time::Duration;

use lb_agent::director::{self, Kernel};
use lb_proto::v1::DirectorConfig;

fn config(real_servers: usize, state_dir: &std::path::Path) -> DirectorConfig {
    let rs: String = (0..real_servers)
        .map(|i| {
            format!(
                "      - {{address: 10.{}.{}.{}, weight: 2}}\n",
                i / 65536,
                (i / 256) % 256,
                i % 256
            )
        })
        .collect();
    let yaml = format!(
        "nodes:\n  - {{name: ds1, role: director, address: 192.0.2.1}}\n\
         directorGroups:\n  - {{name: g, interface: lo, directors: [ds1]}}\n\
         services:\n  - name: web\n    directorGroup: g\n    vip: 192.0.2.100\n    port: 80\n    \
         protocol: tcp\n    scheduler: wrr\n    forwarding: dr\n    realServers:\n{rs}\
         settings: {{stateDir: {}}}\n",
        state_dir.display()
    );
    lb_proto::yaml::from_str(&yaml).unwrap()
}

fn no_kernel() -> Kernel {
    Kernel {
        vips: Arc::new(lb_agent::netif::Rtnl::connect().unwrap()),
        ipvs: None,
        vrrp_runtime: None,
    }
}

/// In: a service of 6,000 real servers without checks (up from the start),
/// more than the health event queue holds. Out: the director starts within a
/// bound and wants every one of them at weight 2; an apply that removes half
/// of them leaves 3,000, and the stored configuration is the new one.
#[tokio::test(flavor = "current_thread")]
async fn thousands_of_destinations_start_and_shrink() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _task) = tokio::time::timeout(
        Duration::from_secs(60),
        director::start(
            Some(config(6000, dir.path())),
            None,
            "ds1",
            None,
            no_kernel(),
        ),
    )
    .await
    .expect("start within a minute")
    .unwrap();
    let weights = |d: &director::DirectorHandle| -> Vec<u32> {
        d.view().status.services[0]
            .real_servers
            .iter()
            .map(|r| r.weight)
            .collect()
    };
    let w = weights(&d);
    assert_eq!(w.len(), 6000);
    assert!(w.iter().all(|w| *w == 2), "not all at weight 2");

    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        d.apply(config(3000, dir.path()), None),
    )
    .await
    .expect("apply within a minute")
    .unwrap();
    assert!(outcome.ok);
    assert_eq!(outcome.revision, 2);
    assert_eq!(weights(&d).len(), 3000);
    let stored = lb_agent::store::ConfigStore::<DirectorConfig>::new(
        dir.path().join(director::LAST_GOOD_FILE),
    )
    .load()
    .unwrap()
    .unwrap();
    assert_eq!(stored.revision, 2);
    assert_eq!(stored.config.services[0].real_servers.len(), 3000);
    assert!(
        outcome.kernel_us <= outcome.duration_us,
        "kernel {} us, in all {} us",
        outcome.kernel_us,
        outcome.duration_us
    );
    // The status file is written off the director's task; the last one is
    // on disk once the director has stopped.
    d.shutdown().await;
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(director::STATUS_FILE)).unwrap())
            .unwrap();
    assert_eq!(
        status["services"][0]["realServers"]
            .as_array()
            .map(Vec::len),
        Some(3000),
        "director-status.json after the stop"
    );
    assert_eq!(
        status["appliedRevision"], "2",
        "director-status.json after the stop"
    );
}
