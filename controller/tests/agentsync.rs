//! The push to agents, end to end: a served controller on a real store
//! (embedded and a real etcd), fake agents speaking AgentSync over gRPC.

mod support;

use std::time::Duration;

use lb_proto::v1::{ApplyRequest, NodeRole, StatusRequest, apply_request};
use support::harness::{Behaviour, FakeAgent, Seen, Served, eventually, vips, weights};

const VIP: &str = "192.168.56.185";

fn any_port() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn apply(served: &Served, topology: lb_proto::v1::Topology, message: &str) -> u64 {
    served
        .client()
        .await
        .apply(ApplyRequest {
            content: Some(apply_request::Content::Topology(topology)),
            message: message.to_string(),
            ..Default::default()
        })
        .await
        .expect("apply")
        .into_inner()
        .revision
}

fn status_of(served: &Served, node: &str) -> lb_proto::v1::NodeStatus {
    served
        .controller
        .status(&[node.to_string()])
        .1
        .into_iter()
        .next()
        .expect("node in status")
}

/// Apply, push on connect, ACK, and the readiness gate opening as real
/// servers report their VIP ready.
async fn push_ack_and_gate(backend: support::Backend) {
    let served = Served::start(backend.store.clone(), any_port(), "a").await;
    assert_eq!(apply(&served, support::seed(), "seed").await, 1);
    let url = served.url();
    let mut ds1 = FakeAgent::director(&url, "ds1");
    let mut rs1 = FakeAgent::realserver(&url, "rs1");
    let first = ds1.next_applied().await;
    assert_eq!((first.epoch, first.revision), (1, 1));
    let rs_state = rs1.next_applied().await;
    assert_eq!(vips(&rs_state), vec![VIP.to_string()]);
    // rs1 reported ready: ds1 sees rs1 with its weight, rs2 (no agent) still 0.
    let rs1_weighted = |s: &lb_proto::v1::DesiredState| weights(s).contains(&("rs1".into(), 1));
    // The first push may already see rs1 ready, if rs1 was quicker.
    let mut states = vec![first.clone()];
    if !rs1_weighted(&first) {
        states.extend(ds1.applied_until(rs1_weighted).await);
    }
    for s in &states {
        assert!(
            !weights(s).contains(&("rs2".into(), 1)),
            "rs2 never reported ready"
        );
    }
    let last = states.last().unwrap();
    assert_eq!(weights(last), vec![("rs1".into(), 1), ("rs2".into(), 0)]);
    eventually("ds1 acked", || {
        status_of(&served, "ds1").applied_revision == 1
    })
    .await;
    let st = status_of(&served, "rs1");
    assert!(st.connected);
    assert_eq!(st.role(), NodeRole::Realserver);
    assert_eq!(st.replica, "a");
    assert_eq!(st.status.unwrap().vips[0].address, VIP);
    // The readiness is stored, so a restarted controller plans with it.
    let mut stored = false;
    for _ in 0..100 {
        let readiness = backend.store.readiness().await.unwrap();
        if readiness.get("rs1").is_some_and(|v| v.contains(VIP)) {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stored, "rs1's readiness reached the store");
    assert!(!status_of(&served, "ds2").connected);
}

/// The readiness gate over many states: with rs1 never ready and rs2
/// ready, every state any director ever got has rs1 at weight 0.
async fn unready_never_weighted(backend: support::Backend) {
    let served = Served::start(backend.store.clone(), any_port(), "a").await;
    let url = served.url();
    let mut ds1 = FakeAgent::director(&url, "ds1");
    let mut ds2 = FakeAgent::director(&url, "ds2");
    let _rs1 = FakeAgent::start(
        vec![url.clone()],
        "rs1",
        NodeRole::Realserver,
        Behaviour::default(), // applies, never reports ready
        (0, 0),
    );
    let _rs2 = FakeAgent::realserver(&url, "rs2");
    apply(&served, support::seed(), "seed").await;
    // A few more changes, each touching the directors.
    for weight in 2..5u32 {
        let mut t = support::seed();
        for rs in &mut t.services[0].real_servers {
            rs.weight = Some(weight);
        }
        apply(&served, t, "weights").await;
    }
    for ds in [&mut ds1, &mut ds2] {
        let states = ds
            .applied_until(|s| s.revision == 4 && weights(s).contains(&("rs2".into(), 4)))
            .await;
        for s in &states {
            for (rs, w) in weights(s) {
                if rs == "rs1" {
                    assert_eq!(w, 0, "rs1 weighted in revision {}", s.revision);
                }
            }
        }
    }
}

/// A change reaches only the nodes it touches.
async fn push_only_to_touched_nodes(backend: support::Backend) {
    let served = Served::start(backend.store.clone(), any_port(), "a").await;
    apply(&served, support::seed(), "seed").await;
    let url = served.url();
    let mut ds1 = FakeAgent::director(&url, "ds1");
    let mut rs1 = FakeAgent::realserver(&url, "rs1");
    ds1.applied_until(|s| weights(s).contains(&("rs1".into(), 1)))
        .await;
    rs1.next_applied().await;
    // Change the health-check interval: directors only.
    let mut t = support::seed();
    t.services[0].health_check.as_mut().unwrap().interval =
        Some(lb_proto::duration::Duration::from_millis(3000));
    assert_eq!(apply(&served, t, "interval").await, 2);
    let s = ds1.applied_until(|s| s.revision == 2).await;
    assert_eq!(s.last().unwrap().revision, 2);
    eventually("ds1 acked 2", || {
        status_of(&served, "ds1").applied_revision == 2
    })
    .await;
    assert!(rs1.drain_seen(Duration::from_millis(300)).await.is_empty());
    assert_eq!(status_of(&served, "rs1").pushed_revision, 1);
}

/// A NACK is recorded with its reason and as an event.
async fn nack_is_recorded(backend: support::Backend) {
    let served = Served::start(backend.store.clone(), any_port(), "a").await;
    let mut events = served.controller.events();
    apply(&served, support::seed(), "seed").await;
    let mut ds1 = FakeAgent::start(
        vec![served.url()],
        "ds1",
        NodeRole::Director,
        Behaviour {
            fail: Some(lb_proto::v1::ErrorDetail {
                code: "kernel".into(),
                message: "ipvs: no such scheduler".into(),
                object: "service dns".into(),
                field: "scheduler".into(),
            }),
            ..Default::default()
        },
        (0, 0),
    );
    assert!(matches!(
        ds1.next(Duration::from_secs(10)).await,
        Some(Seen::Refused(_))
    ));
    eventually("nack recorded", || {
        status_of(&served, "ds1")
            .last_error
            .is_some_and(|e| e.code == "kernel" && e.message == "ipvs: no such scheduler")
    })
    .await;
    assert_eq!(status_of(&served, "ds1").applied_revision, 0);
    let mut saw_nack = false;
    for _ in 0..50 {
        match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
            Ok(Ok(e)) => {
                if let Some(lb_proto::v1::event::Kind::Applied(a)) = e.kind
                    && !a.ok
                {
                    assert_eq!(e.node, "ds1");
                    assert_eq!(a.error.unwrap().code, "kernel");
                    saw_nack = true;
                    break;
                }
            }
            _ => break,
        }
    }
    assert!(saw_nack);
    // Once the agent can apply, the next push is acked and the error clears.
    ds1.behaviour.lock().unwrap().fail = None;
    served.controller.fleet().set_epoch(1); // no-op: same epoch
    let mut t = support::seed();
    t.services[0].scheduler = "rr".into();
    apply(&served, t, "rr").await;
    ds1.applied_until(|s| s.revision == 2).await;
    eventually("ack clears the error", || {
        let st = status_of(&served, "ds1");
        st.applied_revision == 2 && st.last_error.is_none()
    })
    .await;
}

/// An agent that has applied something newer refuses an older push.
async fn stale_revision_refused(backend: support::Backend) {
    let served = Served::start(backend.store.clone(), any_port(), "a").await;
    apply(&served, support::seed(), "seed").await;
    let mut ds1 = FakeAgent::start(
        vec![served.url()],
        "ds1",
        NodeRole::Director,
        Behaviour::default(),
        (1, 50),
    );
    eventually("stale nack", || {
        status_of(&served, "ds1")
            .last_error
            .is_some_and(|e| e.code == "stale")
    })
    .await;
    assert!(ds1.drain_seen(Duration::from_millis(200)).await.is_empty());
    assert_eq!(status_of(&served, "ds1").applied_revision, 50);
    let applied = ds1.stop().await;
    assert_eq!(applied, (1, 50), "the agent kept what it had");
}

/// A controller restart (same store, same address): the agents reconnect,
/// get a push, and its content and revision are what they already run.
async fn restart_pushes_no_new_content(backend: support::Backend) {
    let mut served = Served::start(backend.store.clone(), any_port(), "a").await;
    let address = served.address;
    apply(&served, support::seed(), "seed").await;
    let url = served.url();
    let mut ds1 = FakeAgent::director(&url, "ds1");
    let mut rs1 = FakeAgent::realserver(&url, "rs1");
    let before_ds = ds1
        .applied_until(|s| weights(s).contains(&("rs1".into(), 1)))
        .await
        .pop()
        .unwrap();
    let before_rs = rs1.next_applied().await;
    eventually("ds1 acked", || {
        status_of(&served, "ds1").applied_revision == 1
    })
    .await;
    served.kill();
    drop(served);
    let served = Served::start(backend.store.clone(), address, "a").await;
    // Reconnect: the agents are pushed what they already run: the same
    // revision and configuration. (With etcd the restarted replica opens a
    // new leader term, so a push may carry a higher epoch.)
    let after_ds = ds1.drain_seen(Duration::from_millis(800)).await;
    let after_rs = rs1.drain_seen(Duration::from_millis(100)).await;
    for (before, after) in [(&before_ds, &after_ds), (&before_rs, &after_rs)] {
        assert!(!after.is_empty(), "a push after reconnect");
        for seen in after {
            let Seen::Applied(s) = seen else {
                panic!("refused: {seen:?}")
            };
            assert_eq!(s.revision, before.revision);
            assert_eq!(s.config, before.config, "no new content");
            assert!(s.epoch >= before.epoch);
        }
    }
    eventually("reconnected", || {
        status_of(&served, "ds1").connected && status_of(&served, "rs1").connected
    })
    .await;
}

/// A stream whose agent stops talking is dropped after three keepalives.
async fn dead_stream_detected(backend: support::Backend) {
    let served = Served::start(backend.store.clone(), any_port(), "a").await;
    apply(&served, support::seed(), "seed").await;
    let mut client = lb_proto::v1::agent_sync_client::AgentSyncClient::connect(served.url())
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(lb_proto::v1::AgentMessage {
        msg: Some(lb_proto::v1::agent_message::Msg::Hello(
            lb_proto::v1::Hello {
                node: "ds2".into(),
                role: NodeRole::Director as i32,
                version: "test".into(),
                ..Default::default()
            },
        )),
    })
    .await
    .unwrap();
    let mut inbound = client
        .sync(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = inbound.message().await.unwrap().unwrap();
    assert!(matches!(
        first.msg,
        Some(lb_proto::v1::controller_message::Msg::Desired(_))
    ));
    eventually("ds2 connected", || status_of(&served, "ds2").connected).await;
    // Silence (tx kept open, nothing sent): the controller gives up.
    eventually("ds2 dropped", || !status_of(&served, "ds2").connected).await;
    drop(tx);
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::support::embedded()).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::support::etcd().await).await;
                }
            )*
        }
    };
}

both_backends!(
    push_ack_and_gate,
    unready_never_weighted,
    push_only_to_touched_nodes,
    nack_is_recorded,
    stale_revision_refused,
    restart_pushes_no_new_content,
    dead_stream_detected,
);

#[tokio::test]
async fn status_lists_topology_nodes_that_never_connected() {
    let backend = support::embedded();
    let served = Served::start(backend.store.clone(), any_port(), "a").await;
    apply(&served, support::seed(), "seed").await;
    let status = served
        .client()
        .await
        .status(StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.revision, 1);
    let names: Vec<&str> = status.nodes.iter().map(|n| n.node.as_str()).collect();
    assert_eq!(names, vec!["ds1", "ds2", "rs1", "rs2"]);
    assert!(status.nodes.iter().all(|n| !n.connected));
}
