//! With a real etcd: the API answers UNAVAILABLE while etcd is down and
//! agents keep their config; several replicas serve agents and the API at
//! once; an agent fails over to another replica.

mod support;

use std::sync::Arc;
use std::time::Duration;

use lb_controller::store::{Store, etcd::EtcdStore};
use lb_proto::v1::{ApplyRequest, ListRequest, NodeRole, StatusRequest, apply_request};
use support::harness::{Behaviour, FakeAgent, Served, eventually, weights};
use tonic::Code;

fn any_port() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn whole(t: lb_proto::v1::Topology, message: &str) -> ApplyRequest {
    ApplyRequest {
        content: Some(apply_request::Content::Topology(t)),
        message: message.to_string(),
        ..Default::default()
    }
}

async fn replica_store(etcd: &support::etcd::EtcdServer) -> Arc<dyn Store> {
    Arc::new(
        EtcdStore::connect(&[etcd.endpoint()], "/lbtest", Duration::from_secs(1))
            .await
            .unwrap(),
    )
}

fn connected(served: &Served, node: &str) -> bool {
    served
        .controller
        .status(&[node.to_string()])
        .1
        .first()
        .is_some_and(|s| s.connected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_api_unavailable_agents_keep_config() {
    let mut etcd = support::etcd::EtcdServer::start().await;
    let served = Served::start(replica_store(&etcd).await, any_port(), "a").await;
    let mut client = served.client().await;
    client.apply(whole(support::seed(), "seed")).await.unwrap();
    let mut ds1 = FakeAgent::director(&served.url(), "ds1");
    let mut rs1 = FakeAgent::realserver(&served.url(), "rs1");
    ds1.applied_until(|s| weights(s).contains(&("rs1".into(), 1)))
        .await;
    rs1.next_applied().await;

    etcd.stop();
    for _ in 0..3 {
        let err = client.list(ListRequest { kind: 0 }).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    }
    let mut t = support::seed();
    t.services[0].scheduler = "rr".into();
    let err = client.apply(whole(t.clone(), "rr")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    // Status is served from memory; the agents stay connected and are told
    // nothing new: they keep running what they have.
    let status = client
        .status(StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.revision, 1);
    assert!(connected(&served, "ds1") && connected(&served, "rs1"));
    assert!(ds1.drain_seen(Duration::from_secs(1)).await.is_empty());
    assert!(rs1.drain_seen(Duration::from_millis(100)).await.is_empty());

    etcd.restart().await;
    let mut revision = None;
    for _ in 0..50 {
        match client.apply(whole(t.clone(), "rr")).await {
            Ok(r) => {
                revision = Some(r.into_inner().revision);
                break;
            }
            Err(e) => {
                assert_eq!(e.code(), Code::Unavailable, "{e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(revision, Some(2));
    ds1.applied_until(|s| s.revision == 2).await;
    assert_eq!(ds1.stop().await, (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_serve_at_once() {
    let etcd = support::etcd::EtcdServer::start().await;
    let a = Served::start(replica_store(&etcd).await, any_port(), "a").await;
    let b = Served::start(replica_store(&etcd).await, any_port(), "b").await;
    let mut ds1 = FakeAgent::director(&a.url(), "ds1");
    let mut ds2 = FakeAgent::director(&b.url(), "ds2");
    let mut rs1 = FakeAgent::realserver(&b.url(), "rs1");
    let mut rs2 = FakeAgent::realserver(&a.url(), "rs2");
    // Apply through A: agents on both replicas get revision 1.
    let r = a
        .client()
        .await
        .apply(whole(support::seed(), "seed via a"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.revision, 1);
    rs1.next_applied().await;
    rs2.next_applied().await;
    // rs1 reports ready to B; ds1 on A opens the gate for it (and rs2, which
    // reported to A, opens on ds2 behind B): readiness travels through etcd.
    let full = |s: &lb_proto::v1::DesiredState| {
        weights(s) == vec![("rs1".to_string(), 1), ("rs2".to_string(), 1)]
    };
    ds1.applied_until(full).await;
    ds2.applied_until(full).await;
    // Apply through B: the director on A follows.
    let mut t = support::seed();
    t.services[0].scheduler = "rr".into();
    let r = b
        .client()
        .await
        .apply(whole(t, "rr via b"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.revision, 2);
    ds1.applied_until(|s| s.revision == 2).await;
    ds2.applied_until(|s| s.revision == 2).await;
    // Both read the same store.
    for served in [&a, &b] {
        let list = served
            .client()
            .await
            .list(ListRequest { kind: 0 })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(list.revision, 2);
    }
    // A race on one expected revision: exactly one wins.
    let mut t3 = support::seed();
    t3.services[0].scheduler = "lc".into();
    let mut ra = whole(t3.clone(), "lc via a");
    ra.expected_revision = 2;
    let mut rb = whole(t3, "lc via b");
    rb.expected_revision = 2;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let (x, y) = tokio::join!(ca.apply(ra), cb.apply(rb));
    let codes = [&x, &y].map(|r| r.as_ref().map(|_| Code::Ok).unwrap_or_else(|e| e.code()));
    assert!(
        codes.contains(&Code::Ok) && codes.contains(&Code::Aborted),
        "{codes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_fails_over_to_another_replica() {
    let etcd = support::etcd::EtcdServer::start().await;
    let mut a = Served::start(replica_store(&etcd).await, any_port(), "a").await;
    // A is elected (term 1) before B starts, so A is the leader to lose.
    let probe = replica_store(&etcd).await;
    for _ in 0..100 {
        if probe.epoch().await.unwrap() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(probe.epoch().await.unwrap(), 1);
    let b = Served::start(replica_store(&etcd).await, any_port(), "b").await;
    a.client()
        .await
        .apply(whole(support::seed(), "seed"))
        .await
        .unwrap();
    let mut ds1 = FakeAgent::start(
        vec![a.url(), b.url()],
        "ds1",
        NodeRole::Director,
        Behaviour::default(),
        (0, 0),
    );
    let before = ds1.next_applied().await;
    eventually("ds1 on a", || connected(&a, "ds1")).await;
    assert_eq!(probe.epoch().await.unwrap(), 1);
    assert_eq!(before.epoch, 1);
    a.kill();
    eventually("ds1 on b", || connected(&b, "ds1")).await;
    let after = ds1.next_applied().await;
    assert_eq!(
        (after.revision, &after.config),
        (before.revision, &before.config),
        "the other replica pushes the same state"
    );
    // B is elected once A is gone: a new term, pushed with the same content.
    let newer = ds1.applied_until(|s| s.epoch > before.epoch).await;
    let last = newer.last().unwrap();
    assert_eq!(
        (last.revision, &last.config),
        (before.revision, &before.config)
    );
    assert_eq!(last.epoch, 2);
    assert_eq!(probe.epoch().await.unwrap(), 2);
    let st = b.controller.status(&["ds1".to_string()]).1;
    assert_eq!(st[0].replica, "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_reports_every_agent() {
    let etcd = support::etcd::EtcdServer::start().await;
    let a = Served::start(replica_store(&etcd).await, any_port(), "a").await;
    let b = Served::start(replica_store(&etcd).await, any_port(), "b").await;
    a.client()
        .await
        .apply(whole(support::seed(), "seed"))
        .await
        .unwrap();
    let mut ds1 = FakeAgent::director(&a.url(), "ds1");
    let mut rs1 = FakeAgent::realserver(&b.url(), "rs1");
    ds1.next_applied().await;
    rs1.next_applied().await;
    // Through B's API: ds1 (held by A) is connected, as A sees it.
    let mut client = b.client().await;
    let mut last = None;
    for _ in 0..100 {
        let status = client
            .status(StatusRequest {
                nodes: vec!["ds1".into(), "rs1".into()],
            })
            .await
            .unwrap()
            .into_inner();
        let ds1 = status.nodes.iter().find(|n| n.node == "ds1").cloned();
        if ds1
            .as_ref()
            .is_some_and(|s| s.connected && s.replica == "a" && s.applied_revision == 1)
        {
            let rs1 = status.nodes.iter().find(|n| n.node == "rs1").unwrap();
            assert!(rs1.connected);
            assert_eq!(rs1.replica, "b");
            return;
        }
        last = Some(status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("B never reported ds1 as connected to A: {last:?}");
}
