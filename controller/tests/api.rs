//! ControllerService over gRPC on both stores: apply, validation with nothing
//! written, dry runs, compare-and-swap, get/list/delete, history and
//! rollback, drain, events, concurrent applies; health and reflection on
//! the same server.

mod support;

use std::time::Duration;

use lb_proto::v1::{
    ApplyRequest, DeleteRequest, DrainRequest, GetRequest, HistoryRequest, ListRequest, Object,
    ObjectKind, ObjectList, RollbackRequest, WatchEventsRequest, apply_request, object,
};
use support::harness::Served;
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

async fn apply_stores_and_reports_plans(backend: support::Backend) {
    let served = Served::start(backend.store.clone(), any_port(), "a").await;
    let mut client = served.client().await;
    let mut request = tonic::Request::new(whole(support::seed(), "first"));
    request
        .metadata_mut()
        .insert("x-lb-author", "alice@laptop".parse().unwrap());
    let r = client.apply(request).await.unwrap().into_inner();
    assert_eq!(r.revision, 1);
    assert!(r.changed);
    let nodes: Vec<&str> = r.plans.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(nodes, vec!["ds1", "ds2", "rs1", "rs2"]);
    assert!(
        r.plans[0].diff.contains("+ service dns"),
        "{}",
        r.plans[0].diff
    );
    let stored = backend.store.current().await.unwrap();
    assert_eq!(stored.revision, 1);
    assert_eq!(stored.author, "alice@laptop");
    assert_eq!(stored.message, "first");
    assert_eq!(stored.topology, support::seed());
    // The same topology again: no change, no new revision.
    let r = client
        .apply(whole(support::seed(), "again"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.revision, r.changed), (1, false));
    assert!(r.plans.is_empty());
    assert_eq!(backend.store.history(10).await.unwrap().len(), 1);
}

async fn invalid_topology_writes_nothing(backend: support::Backend) {
    let served = Served::start(backend.store.clone(), any_port(), "a").await;
    let mut client = served.client().await;
    let mut t = support::seed();
    t.services[0].real_servers[1].weight = Some(70000);
    t.services[0].scheduler = "wrrr".into();
    let err = client.apply(whole(t, "bad")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("service dns: field realServers[1].weight: 70000 is out of range 0..65535"),
        "{}",
        err.message()
    );
    assert!(err.message().contains("scheduler 'wrrr' is unknown"));
    assert_eq!(backend.store.current().await.unwrap().revision, 0);
    assert!(backend.store.history(10).await.unwrap().is_empty());
    // Removing every real server needs force.
    client.apply(whole(support::seed(), "seed")).await.unwrap();
    let mut empty = support::seed();
    empty.services[0].real_servers.clear();
    let err = client
        .apply(whole(empty.clone(), "empty"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("apply with force"),
        "{}",
        err.message()
    );
    assert_eq!(backend.store.current().await.unwrap().revision, 1);
    let mut forced = whole(empty, "empty, forced");
    forced.force = true;
    assert_eq!(client.apply(forced).await.unwrap().into_inner().revision, 2);
}

async fn dry_run_plans_and_writes_nothing(backend: support::Backend) {
    let served = Served::start(backend.store.clone(), any_port(), "a").await;
    let mut client = served.client().await;
    client.apply(whole(support::seed(), "seed")).await.unwrap();
    let mut t = support::seed();
    t.services[0].real_servers[0].weight = Some(5);
    let mut request = whole(t, "dry");
    request.dry_run = true;
    let r = client.apply(request).await.unwrap().into_inner();
    assert_eq!(r.revision, 1);
    assert!(r.changed);
    // Nothing ready yet, so the directors keep rs1 at weight 0 either way:
    // the plan shows no change for them, and none for the real servers.
    assert!(r.plans.is_empty(), "{:?}", r.plans);
    // A change the directors do see.
    let mut t = support::seed();
    t.services[0].scheduler = "rr".into();
    let mut request = whole(t, "dry");
    request.dry_run = true;
    let r = client.apply(request).await.unwrap().into_inner();
    let nodes: Vec<&str> = r.plans.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(nodes, vec!["ds1", "ds2"]);
    assert!(
        r.plans[0].diff.contains("~ service dns")
            && r.plans[0].diff.contains("  + scheduler: rr\n"),
        "{}",
        r.plans[0].diff
    );
    assert_eq!(r.plans[0].desired.as_ref().unwrap().revision, 2);
    assert_eq!(backend.store.current().await.unwrap().revision, 1);
}

async fn expected_revision_is_compare_and_swap(backend: support::Backend) {
    let served = Served::start(backend.store.clone(), any_port(), "a").await;
    let mut client = served.client().await;
    client.apply(whole(support::seed(), "seed")).await.unwrap();
    let mut t = support::seed();
    t.services[0].scheduler = "rr".into();
    let mut stale = whole(t.clone(), "cas");
    stale.expected_revision = 7;
    let err = client.apply(stale).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert!(
        err.message()
            .contains("expects revision 7 but the store is at 1")
    );
    let mut good = whole(t, "cas");
    good.expected_revision = 1;
    assert_eq!(client.apply(good).await.unwrap().into_inner().revision, 2);
}

async fn objects_get_list_delete(backend: support::Backend) {
    let served = Served::start(backend.store.clone(), any_port(), "a").await;
    let mut client = served.client().await;
    client.apply(whole(support::seed(), "seed")).await.unwrap();
    // Apply one object: the others stay.
    let mut svc = support::seed().services[0].clone();
    svc.name = "dns-tcp".into();
    svc.protocol = lb_proto::v1::Protocol::Tcp as i32;
    let r = client
        .apply(ApplyRequest {
            content: Some(apply_request::Content::Objects(ObjectList {
                objects: vec![Object {
                    kind: Some(object::Kind::Service(svc.clone())),
                }],
            })),
            message: "add dns-tcp".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.revision, 2);
    let got = client
        .get(GetRequest {
            kind: ObjectKind::Service as i32,
            name: "dns-tcp".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.kind, Some(object::Kind::Service(svc)));
    let err = client
        .get(GetRequest {
            kind: ObjectKind::Node as i32,
            name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let list = client
        .list(ListRequest {
            kind: ObjectKind::Service as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((list.revision, list.objects.len()), (2, 2));
    let all = client
        .list(ListRequest { kind: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.objects.len(), 4 + 1 + 2);
    // Deleting a node still referenced is refused by validation.
    let err = client
        .delete(DeleteRequest {
            kind: ObjectKind::Node as i32,
            names: vec!["rs1".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("node 'rs1' does not exist"),
        "{}",
        err.message()
    );
    let r = client
        .delete(DeleteRequest {
            kind: ObjectKind::Service as i32,
            names: vec!["dns-tcp".into()],
            message: "drop dns-tcp".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.revision, 3);
    assert_eq!(
        backend.store.current().await.unwrap().topology,
        support::seed()
    );
}

async fn history_and_rollback(backend: support::Backend) {
    let served = Served::start(backend.store.clone(), any_port(), "a").await;
    let mut client = served.client().await;
    client.apply(whole(support::seed(), "seed")).await.unwrap();
    let mut t = support::seed();
    t.services[0].scheduler = "rr".into();
    client.apply(whole(t, "use rr")).await.unwrap();
    let h = client
        .history(HistoryRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner();
    let messages: Vec<(u64, &str)> = h
        .revisions
        .iter()
        .map(|r| (r.revision, r.message.as_str()))
        .collect();
    assert_eq!(messages, vec![(2, "use rr"), (1, "seed")]);
    assert!(h.revisions[0].time.unwrap().seconds > 1_600_000_000);
    assert!(
        h.revisions[0].author.starts_with("127.0.0.1:"),
        "{}",
        h.revisions[0].author
    );
    let r = client
        .rollback(RollbackRequest {
            revision: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.revision, 3);
    let current = backend.store.current().await.unwrap();
    assert_eq!(current.topology, support::seed());
    assert_eq!(current.message, "rollback to revision 1");
    let err = client
        .rollback(RollbackRequest {
            revision: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

async fn drain_and_undrain(backend: support::Backend) {
    let served = Served::start(backend.store.clone(), any_port(), "a").await;
    let mut client = served.client().await;
    client.apply(whole(support::seed(), "seed")).await.unwrap();
    let r = client
        .drain(DrainRequest {
            service: "dns".into(),
            real_server: "rs2".into(),
            deadline: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.revision, 2);
    let current = backend.store.current().await.unwrap();
    assert!(current.topology.services[0].real_servers[1].drain);
    assert_eq!(current.message, "drain rs2 of service dns");
    let planned = served.controller.desired();
    let w = support::harness::weights(&planned["ds1"]);
    assert_eq!(w[1], ("rs2".to_string(), 0));
    let r = client
        .undrain(DrainRequest {
            service: "dns".into(),
            real_server: "rs2".into(),
            deadline: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.revision, 3);
    assert!(!backend.store.current().await.unwrap().topology.services[0].real_servers[1].drain);
    let err = client
        .drain(DrainRequest {
            service: "dns".into(),
            real_server: "rs9".into(),
            deadline: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

async fn watch_events_streams_topology_changes(backend: support::Backend) {
    let served = Served::start(backend.store.clone(), any_port(), "a").await;
    let mut client = served.client().await;
    let mut events = client
        .watch_events(WatchEventsRequest {
            kinds: vec!["topology".into()],
            node: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    client.apply(whole(support::seed(), "seed")).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), events.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match e.kind {
        Some(lb_proto::v1::event::Kind::Topology(t)) => {
            assert_eq!(t.revision, 1);
            assert_eq!(t.message, "seed");
        }
        other => panic!("{other:?}"),
    }
}

/// Eight clients apply at once, each adding its own node: every apply gets
/// its own revision, each revision in the history holds the nodes of those
/// before it, and the last holds all eight (no apply lost another's change).
async fn concurrent_applies_each_build_on_the_last(backend: support::Backend) {
    let served = Served::start(backend.store.clone(), any_port(), "a").await;
    let mut client = served.client().await;
    client.apply(whole(support::seed(), "first")).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..8u32 {
        let mut client = served.client().await;
        tasks.push(tokio::spawn(async move {
            let request = add_node(n, format!("192.168.56.{}", 200 + n), 0);
            client.apply(request).await.unwrap().into_inner()
        }));
    }
    let mut revisions = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert!(r.changed);
        revisions.push(r.revision);
    }
    revisions.sort();
    assert_eq!(revisions, (2..=9).collect::<Vec<u64>>());
    let history = backend.store.history(100).await.unwrap();
    assert_eq!(history.len(), 9);
    for record in &history {
        let extra = record
            .topology
            .nodes
            .iter()
            .filter(|n| n.name.starts_with("extra"))
            .count();
        assert_eq!(
            extra as u64,
            record.revision - 1,
            "revision {}",
            record.revision
        );
    }
    let current = backend.store.current().await.unwrap();
    assert_eq!(current.revision, 9);
    assert_eq!(served.controller.fleet().record().revision, 9);
}

/// An Apply of one real-server node `extra{n}` at `address`.
fn add_node(n: u32, address: String, expected_revision: u64) -> ApplyRequest {
    let node = lb_proto::v1::Node {
        name: format!("extra{n}"),
        role: lb_proto::v1::NodeRole::Realserver as i32,
        address,
        ..Default::default()
    };
    ApplyRequest {
        content: Some(apply_request::Content::Objects(ObjectList {
            objects: vec![Object {
                kind: Some(object::Kind::Node(node)),
            }],
        })),
        message: format!("add extra{n}"),
        expected_revision,
        ..Default::default()
    }
}

/// Applies that meet in one commit are still answered one by one: each
/// valid one with a revision and plans of its own, each bad one with its own
/// error, and nothing of the bad ones written.
async fn concurrent_applies_are_answered_each_on_its_own(backend: support::Backend) {
    let served = Served::start(backend.store.clone(), any_port(), "a").await;
    let mut client = served.client().await;
    client.apply(whole(support::seed(), "first")).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..12u32 {
        let mut client = served.client().await;
        tasks.push(tokio::spawn(async move {
            let address = if n % 4 == 1 {
                "not-an-address".to_string()
            } else {
                format!("192.168.56.{}", 200 + n)
            };
            let request = add_node(n, address, if n % 4 == 3 { 999 } else { 0 });
            (n, client.apply(request).await)
        }));
    }
    let mut revisions = Vec::new();
    for t in tasks {
        let (n, result) = t.await.unwrap();
        match n % 4 {
            1 => {
                let status = result.unwrap_err();
                assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
                assert!(
                    status.message().contains(&format!("extra{n}")),
                    "{status:?}"
                );
            }
            3 => {
                let status = result.unwrap_err();
                assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
            }
            _ => {
                let r = result.unwrap().into_inner();
                assert!(r.changed);
                let nodes: Vec<&str> = r.plans.iter().map(|p| p.node.as_str()).collect();
                assert_eq!(nodes, vec![format!("extra{n}")], "revision {}", r.revision);
                revisions.push(r.revision);
            }
        }
    }
    revisions.sort();
    assert_eq!(revisions, (2..=7).collect::<Vec<u64>>());
    let history = backend.store.history(100).await.unwrap();
    assert_eq!(history.len(), 7);
    for record in &history[..6] {
        let n: u32 = record
            .message
            .trim_start_matches("add extra")
            .parse()
            .unwrap();
        assert_eq!(n % 4 % 2, 0, "{}", record.message);
        assert!(
            record
                .topology
                .nodes
                .iter()
                .any(|node| node.name == format!("extra{n}"))
        );
        assert!(
            !record
                .topology
                .nodes
                .iter()
                .any(|node| node.address == "not-an-address")
        );
    }
    assert_eq!(backend.store.current().await.unwrap().revision, 7);
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
    apply_stores_and_reports_plans,
    invalid_topology_writes_nothing,
    dry_run_plans_and_writes_nothing,
    expected_revision_is_compare_and_swap,
    objects_get_list_delete,
    history_and_rollback,
    drain_and_undrain,
    watch_events_streams_topology_changes,
    concurrent_applies_each_build_on_the_last,
    concurrent_applies_are_answered_each_on_its_own,
);

#[tokio::test]
async fn health_and_reflection_are_served() {
    let backend = support::embedded();
    let served = Served::start(backend.store.clone(), any_port(), "a").await;
    let channel = tonic::transport::Endpoint::from_shared(served.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "lb.v1.ControllerService", "lb.v1.AgentSync"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service}"
        );
    }
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let r = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = r.message_response else {
        panic!("{r:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"lb.v1.ControllerService".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"lb.v1.AgentSync".to_string()), "{names:?}");
}
