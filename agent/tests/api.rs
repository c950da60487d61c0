//! The agent's gRPC API in process: a fake backend, the server on
//! 127.0.0.1:0 and a real tonic client. Every RPC's success path, every
//! request the API refuses before the backend sees it, every backend error's
//! gRPC code, event filtering and the end of event streams, health and
//! reflection.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use lb_agent::api::{self, AgentBackend, ApiError, ApiServeError, FailoverAction};
use lb_proto::{
    duration::Duration as PDuration,
    v1::{
        self, AgentDrainRequest, Event, FailoverRequest, GetStateRequest, ListServicesRequest,
        WatchEventsRequest, agent_service_client::AgentServiceClient, event, failover_request,
    },
};
use tokio::{
    net::TcpListener,
    sync::{broadcast, oneshot},
    task::JoinHandle,
};
use tonic::{Code, transport::Channel};

/// What the fake backend was asked.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    State,
    Services(Option<String>),
    Drain(String, String, Option<Duration>),
    Undrain(String, String),
    Failover(String, FailoverAction, Duration),
}

/// A backend that records its calls and answers with fixed values, or with
/// `fail` when it is set.
struct Fake {
    calls: Mutex<Vec<Call>>,
    fail: Mutex<Option<ApiError>>,
    event_tx: Mutex<Option<broadcast::Sender<Event>>>,
}

impl Fake {
    fn new(event_capacity: usize) -> Arc<Self> {
        Arc::new(Fake {
            calls: Mutex::new(vec![]),
            fail: Mutex::new(None),
            event_tx: Mutex::new(Some(broadcast::channel(event_capacity).0)),
        })
    }

    fn record(&self, call: Call) -> Result<(), ApiError> {
        self.calls.lock().unwrap().push(call);
        match self.fail.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn send(&self, e: Event) {
        let tx = self.event_tx.lock().unwrap();
        tx.as_ref().expect("events closed").send(e).unwrap();
    }

    /// Drops the sender: every event stream must end.
    fn close_events(&self) {
        self.event_tx.lock().unwrap().take();
    }
}

fn service(name: &str) -> v1::ServiceStatus {
    v1::ServiceStatus {
        name: name.into(),
        key: "tcp 192.0.2.1:80".into(),
        scheduler: "wrr".into(),
        quorum: true,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl AgentBackend for Fake {
    async fn state(&self) -> Result<v1::AgentStatus, ApiError> {
        self.record(Call::State)?;
        Ok(v1::AgentStatus {
            node: "d1".into(),
            applied_revision: 7,
            applied_epoch: 2,
            services: vec![service("web")],
            ..Default::default()
        })
    }

    async fn services(&self, name: Option<String>) -> Result<Vec<v1::ServiceStatus>, ApiError> {
        self.record(Call::Services(name.clone()))?;
        Ok(match name {
            Some(n) => vec![service(&n)],
            None => vec![service("dns"), service("web")],
        })
    }

    fn events(&self) -> broadcast::Receiver<Event> {
        match self.event_tx.lock().unwrap().as_ref() {
            Some(tx) => tx.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    async fn drain(
        &self,
        service: String,
        real_server: String,
        deadline: Option<Duration>,
    ) -> Result<u32, ApiError> {
        self.record(Call::Drain(service, real_server, deadline))?;
        Ok(3)
    }

    async fn undrain(&self, service: String, real_server: String) -> Result<u32, ApiError> {
        self.record(Call::Undrain(service, real_server))?;
        Ok(0)
    }

    async fn failover(
        &self,
        instance: String,
        action: FailoverAction,
        hold: Duration,
    ) -> Result<v1::VrrpState, ApiError> {
        self.record(Call::Failover(instance, action, hold))?;
        Ok(match action {
            FailoverAction::Take => v1::VrrpState::Master,
            FailoverAction::Release => v1::VrrpState::Backup,
        })
    }
}

/// A server over a fake backend.
struct Served {
    channel: Channel,
    shutdown_tx: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ApiServeError>>,
}

impl Served {
    async fn start(backend: Arc<Fake>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(api::serve(listener, backend, async {
            let _ = shutdown_rx.await;
        }));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Served {
            channel,
            shutdown_tx: Some(shutdown_tx),
            task,
        }
    }

    fn client(&self) -> AgentServiceClient<Channel> {
        AgentServiceClient::new(self.channel.clone())
    }
}

fn drain_request(
    service: &str,
    real_server: &str,
    deadline: Option<PDuration>,
) -> AgentDrainRequest {
    AgentDrainRequest {
        service: service.into(),
        real_server: real_server.into(),
        deadline,
    }
}

fn failover_request(
    instance: &str,
    action: failover_request::Action,
    hold: Option<PDuration>,
) -> FailoverRequest {
    FailoverRequest {
        instance: instance.into(),
        action: action.into(),
        hold,
    }
}

fn secs(seconds: i64) -> Option<PDuration> {
    Some(PDuration { seconds, nanos: 0 })
}

/// An event whose kind is `kind` and whose node names it, to tell events apart.
fn event_of(kind: &str, n: u64) -> Event {
    let k = match kind {
        "vrrp" => event::Kind::Vrrp(v1::VrrpTransition::default()),
        "health" => event::Kind::Health(v1::HealthTransition::default()),
        "applied" => event::Kind::Applied(v1::Applied {
            revision: n,
            ..Default::default()
        }),
        "drift" => event::Kind::Drift(v1::DriftRepaired::default()),
        "quorum" => event::Kind::Quorum(v1::QuorumChange::default()),
        other => panic!("no such kind in these tests: {other}"),
    };
    Event {
        time: None,
        node: format!("{kind}-{n}"),
        kind: Some(k),
    }
}

async fn watch(
    client: &mut AgentServiceClient<Channel>,
    kinds: &[&str],
) -> tonic::Streaming<Event> {
    client
        .watch_events(WatchEventsRequest {
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            node: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// The next event, within 5 s.
async fn next(stream: &mut tonic::Streaming<Event>) -> Option<Event> {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("no event in time")
        .unwrap()
}

// In: GetState.
// Out: the backend's AgentStatus, field for field.
#[tokio::test]
async fn get_state_returns_the_backend_state() {
    let fake = Fake::new(16);
    let served = Served::start(fake.clone()).await;
    let state = served
        .client()
        .get_state(GetStateRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state.node, "d1");
    assert_eq!((state.applied_revision, state.applied_epoch), (7, 2));
    assert_eq!(state.services, vec![service("web")]);
    assert_eq!(fake.calls(), vec![Call::State]);
}

// In: ListServices with no name, then with name "web".
// Out: the backend is asked with None, then Some("web"); the response holds
// what it returned.
#[tokio::test]
async fn list_services_passes_the_name_filter() {
    let fake = Fake::new(16);
    let served = Served::start(fake.clone()).await;
    let mut client = served.client();
    let all = client
        .list_services(ListServicesRequest {
            name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = all.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["dns", "web"]);
    let one = client
        .list_services(ListServicesRequest { name: "web".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.services, vec![service("web")]);
    assert_eq!(
        fake.calls(),
        vec![Call::Services(None), Call::Services(Some("web".into()))]
    );
}

// In: Drain web/rs1 with a 5 s deadline, Drain web/10.0.0.2:80 with none,
// Drain with a zero deadline, Undrain web/rs1.
// Out: the backend gets Some(5s), None, None (zero waits forever) and the
// undrain; the responses carry the connections it returned (3, 3, 3, 0).
#[tokio::test]
async fn drain_and_undrain_translate_to_the_backend() {
    let fake = Fake::new(16);
    let served = Served::start(fake.clone()).await;
    let mut client = served.client();
    for request in [
        drain_request("web", "rs1", secs(5)),
        drain_request("web", "10.0.0.2:80", None),
        drain_request("web", "rs1", Some(PDuration::ZERO)),
    ] {
        let r = client.drain(request).await.unwrap().into_inner();
        assert_eq!(r.active_connections, 3);
    }
    let r = client
        .undrain(drain_request("web", "rs1", None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.active_connections, 0);
    assert_eq!(
        fake.calls(),
        vec![
            Call::Drain("web".into(), "rs1".into(), Some(Duration::from_secs(5))),
            Call::Drain("web".into(), "10.0.0.2:80".into(), None),
            Call::Drain("web".into(), "rs1".into(), None),
            Call::Undrain("web".into(), "rs1".into()),
        ]
    );
}

// In: Failover VI_1 take with no hold, release with a 2 s hold, take with a
// zero hold.
// Out: the backend gets (Take, 30 s), (Release, 2 s), (Take, 30 s); the
// responses carry the state it returned (MASTER, BACKUP, MASTER).
#[tokio::test]
async fn failover_translates_action_and_hold() {
    let fake = Fake::new(16);
    let served = Served::start(fake.clone()).await;
    let mut client = served.client();
    use failover_request::Action;
    let cases = [
        (Action::Take, None, v1::VrrpState::Master),
        (Action::Release, secs(2), v1::VrrpState::Backup),
        (Action::Take, Some(PDuration::ZERO), v1::VrrpState::Master),
    ];
    for (action, hold, state) in cases {
        let r = client
            .failover(failover_request("VI_1", action, hold))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.state(), state);
    }
    assert_eq!(
        fake.calls(),
        vec![
            Call::Failover("VI_1".into(), FailoverAction::Take, Duration::from_secs(30)),
            Call::Failover(
                "VI_1".into(),
                FailoverAction::Release,
                Duration::from_secs(2)
            ),
            Call::Failover("VI_1".into(), FailoverAction::Take, Duration::from_secs(30)),
        ]
    );
}

// In: requests with an empty name, a negative duration, an unspecified
// action, an unknown event kind.
// Out: INVALID_ARGUMENT with a message that names the field (or lists the
// known kinds); the backend is never called.
#[tokio::test]
async fn malformed_requests_are_refused_before_the_backend() {
    let fake = Fake::new(16);
    let served = Served::start(fake.clone()).await;
    let mut client = served.client();
    use failover_request::Action;
    let failovers = [
        (
            failover_request("VI_1", Action::Unspecified, None),
            "failover of instance VI_1: action must be release or take",
        ),
        (
            failover_request("", Action::Take, None),
            "failover: field 'instance' is empty; name the VRRP instance",
        ),
        (
            failover_request("VI_1", Action::Release, secs(-1)),
            "failover of instance VI_1: field 'hold' is negative (-1s); \
             give a positive duration, or leave it out for 30s",
        ),
    ];
    for (request, message) in failovers {
        let e = client.failover(request).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, message));
    }
    let drains = [
        (
            drain_request("", "rs1", None),
            "drain: field 'service' is empty; name the service",
        ),
        (
            drain_request("web", "", None),
            "drain in service web: field 'real_server' is empty; \
             name the real server (node name or address:port)",
        ),
        (
            drain_request("web", "rs1", secs(-5)),
            "drain of rs1 in service web: field 'deadline' is negative (-5s); \
             give a positive duration, or 0 to wait for every connection to end",
        ),
    ];
    for (request, message) in drains {
        let e = client.drain(request).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, message));
    }
    let e = client
        .undrain(drain_request("", "rs1", None))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::InvalidArgument,
            "undrain: field 'service' is empty; name the service"
        )
    );
    let e = client
        .watch_events(WatchEventsRequest {
            kinds: vec!["vrrp".into(), "bgp".into()],
            node: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::InvalidArgument,
            "watch events: kind 'bgp' is unknown \
             (known: vrrp, health, applied, drift, quorum, topology, connection)"
        )
    );
    assert_eq!(fake.calls(), vec![]);
}

// In: each ApiError variant returned by the backend, for every unary RPC.
// Out: the matching gRPC code (NOT_FOUND, INVALID_ARGUMENT,
// FAILED_PRECONDITION, UNAVAILABLE, INTERNAL), the message unchanged.
#[tokio::test]
async fn backend_errors_map_to_grpc_codes() {
    let fake = Fake::new(16);
    let served = Served::start(fake.clone()).await;
    let mut client = served.client();
    let cases = [
        (
            ApiError::NotFound("service web: no real server rs9".into()),
            Code::NotFound,
        ),
        (
            ApiError::InvalidArgument("real server 'x:y' is not address:port".into()),
            Code::InvalidArgument,
        ),
        (
            ApiError::FailedPrecondition("this agent is a real server".into()),
            Code::FailedPrecondition,
        ),
        (
            ApiError::Unavailable("no configuration applied yet".into()),
            Code::Unavailable,
        ),
        (ApiError::Internal("netlink: EPERM".into()), Code::Internal),
    ];
    for (error, code) in cases {
        let message = error.to_string();
        *fake.fail.lock().unwrap() = Some(error);
        let errors = [
            client.get_state(GetStateRequest {}).await.unwrap_err(),
            client
                .list_services(ListServicesRequest::default())
                .await
                .unwrap_err(),
            client
                .drain(drain_request("web", "rs9", None))
                .await
                .unwrap_err(),
            client
                .undrain(drain_request("web", "rs9", None))
                .await
                .unwrap_err(),
            client
                .failover(failover_request(
                    "VI_1",
                    failover_request::Action::Take,
                    None,
                ))
                .await
                .unwrap_err(),
        ];
        for e in errors {
            assert_eq!((e.code(), e.message()), (code, message.as_str()));
        }
    }
}

// In: two watchers, one for every kind and one for "vrrp" and "quorum";
// events vrrp, health, quorum, applied; then the backend drops its sender.
// Out: the first sees all four in order, the second vrrp and quorum only;
// both streams then end cleanly.
#[tokio::test]
async fn watch_events_filters_by_kind_and_ends_with_the_sender() {
    let fake = Fake::new(16);
    let served = Served::start(fake.clone()).await;
    let mut client = served.client();
    let mut all = watch(&mut client, &[]).await;
    let mut some = watch(&mut client, &["vrrp", "quorum"]).await;
    for (i, kind) in ["vrrp", "health", "quorum", "applied"]
        .into_iter()
        .enumerate()
    {
        fake.send(event_of(kind, i as u64));
    }
    fake.close_events();
    let mut seen = vec![];
    while let Some(e) = next(&mut all).await {
        seen.push(e.node);
    }
    assert_eq!(seen, ["vrrp-0", "health-1", "quorum-2", "applied-3"]);
    let mut seen = vec![];
    while let Some(e) = next(&mut some).await {
        seen.push(e.node);
    }
    assert_eq!(seen, ["vrrp-0", "quorum-2"]);
}

// In: an event channel of capacity 4; a watcher; 10 events sent before the
// server reads any (one thread: nothing runs between the sends); the sender
// dropped.
// Out: the watcher skips the 6 it lost and receives the last 4, then its
// stream ends without an error.
#[tokio::test(flavor = "current_thread")]
async fn a_lagging_watcher_skips_lost_events_and_goes_on() {
    let fake = Fake::new(4);
    let served = Served::start(fake.clone()).await;
    let mut client = served.client();
    let mut stream = watch(&mut client, &[]).await;
    for n in 0..10 {
        fake.send(event_of("applied", n));
    }
    fake.close_events();
    let mut seen = vec![];
    while let Some(e) = next(&mut stream).await {
        seen.push(e.node);
    }
    assert_eq!(seen, ["applied-6", "applied-7", "applied-8", "applied-9"]);
}

// In: an open WatchEvents stream whose backend sender stays alive; the
// shutdown signal.
// Out: the stream ends, and serve returns Ok.
#[tokio::test]
async fn shutdown_ends_event_streams_and_the_server() {
    let fake = Fake::new(16);
    let mut served = Served::start(fake.clone()).await;
    let mut client = served.client();
    let mut stream = watch(&mut client, &[]).await;
    fake.send(event_of("drift", 1));
    assert_eq!(next(&mut stream).await.unwrap().node, "drift-1");
    served.shutdown_tx.take().unwrap().send(()).unwrap();
    assert_eq!(next(&mut stream).await, None);
    drop(client);
    drop(served.channel);
    tokio::time::timeout(Duration::from_secs(5), served.task)
        .await
        .expect("server did not stop")
        .unwrap()
        .unwrap();
}

// In: grpc.health.v1 Check for "" and for "lb.v1.AgentService".
// Out: SERVING for both.
#[tokio::test]
async fn health_reports_serving() {
    let served = Served::start(Fake::new(16)).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(served.channel.clone());
    for service in ["", "lb.v1.AgentService"] {
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
            "{service:?}"
        );
    }
}

// In: a reflection ListServices request, over v1 and over v1alpha.
// Out: both lists hold lb.v1.AgentService and grpc.health.v1.Health.
#[tokio::test]
async fn reflection_lists_the_agent_service() {
    let served = Served::start(Fake::new(16)).await;
    {
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut reflection = ServerReflectionClient::new(served.channel.clone());
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
        assert!(names.iter().any(|n| n == "lb.v1.AgentService"), "{names:?}");
        assert!(
            names.iter().any(|n| n == "grpc.health.v1.Health"),
            "{names:?}"
        );
    }
    {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut reflection = ServerReflectionClient::new(served.channel.clone());
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
        assert!(names.iter().any(|n| n == "lb.v1.AgentService"), "{names:?}");
    }
}
