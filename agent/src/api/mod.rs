//! The agent's gRPC API (`lb.v1.AgentService`) for automation on the node,
//! served with grpc.health.v1 and server reflection (v1 and v1alpha).
//!
//! ```text
//!  client ──gRPC──► AgentApi (translates only) ──► dyn AgentBackend (the director)
//!                      │                               │
//!                      │ WatchEvents                   │ events(): broadcast::Receiver<Event>
//!                      ▼                               ▼
//!               event stream ◄── kind/node filter ◄── event_rx   (ends when the
//!                                                                 sender is gone
//!                                                                 or on shutdown)
//! ```
//!
//! Handlers only translate: proto in, a call of [`AgentBackend`] out, a
//! [`tonic::Status`] back. Every check of a request that needs no state
//! (empty names, negative durations, unknown actions and kinds) is made here,
//! so that the backend sees typed values only.

use std::{collections::BTreeSet, pin::Pin, sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use lb_proto::v1::{
    self, AgentDrainRequest, AgentDrainResponse, Event, FailoverRequest, FailoverResponse,
    GetStateRequest, ListServicesRequest, ListServicesResponse, WatchEventsRequest,
    agent_service_server::{AgentService, AgentServiceServer},
    event, failover_request,
};
use tokio::{
    net::TcpListener,
    sync::{broadcast, watch},
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tracing::warn;

/// What the agent API needs from the running agent.
#[tonic::async_trait]
pub trait AgentBackend: Send + Sync + 'static {
    /// The agent's whole state.
    async fn state(&self) -> Result<v1::AgentStatus, ApiError>;
    /// Services with real servers, weights, health and live IPVS counters; `name` filters.
    async fn services(&self, name: Option<String>) -> Result<Vec<v1::ServiceStatus>, ApiError>;
    /// A receiver of every event from now on.
    fn events(&self) -> tokio::sync::broadcast::Receiver<v1::Event>;
    /// Drain a real server (node name or "address:port") of a service; returns active connections left.
    ///
    /// `deadline` is `None` when the request gave none (or zero): wait for
    /// the connections to end, however long that takes.
    async fn drain(
        &self,
        service: String,
        real_server: String,
        deadline: Option<std::time::Duration>,
    ) -> Result<u32, ApiError>;
    /// Undo a drain.
    async fn undrain(&self, service: String, real_server: String) -> Result<u32, ApiError>;
    /// Force a failover of an instance; returns the state after the call.
    async fn failover(
        &self,
        instance: String,
        action: FailoverAction,
        hold: std::time::Duration,
    ) -> Result<v1::VrrpState, ApiError>;
}

/// A forced failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverAction {
    /// Give up mastership: advertise priority 0 and back off for the hold time.
    Release,
    /// Take mastership: advertise priority 254 for the hold time.
    Take,
}

/// Errors the backend reports; each maps to one gRPC code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// What the request names does not exist (`NOT_FOUND`).
    #[error("{0}")]
    NotFound(String),
    /// The request is wrong whatever the state (`INVALID_ARGUMENT`).
    #[error("{0}")]
    InvalidArgument(String),
    /// The request does not fit the state (`FAILED_PRECONDITION`): a
    /// failover on a real server, a drain of a real server already removed.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The agent cannot answer now; try again (`UNAVAILABLE`).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or a kernel failure (`INTERNAL`).
    #[error("{0}")]
    Internal(String),
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::InvalidArgument(m) => Status::invalid_argument(m),
            ApiError::FailedPrecondition(m) => Status::failed_precondition(m),
            ApiError::Unavailable(m) => Status::unavailable(m),
            ApiError::Internal(m) => Status::internal(m),
        }
    }
}

/// The API server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ApiServeError {
    /// Reflection could not be built from the descriptor sets.
    #[error("agent API: building the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("agent API: gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Hold time of a failover whose request gives none.
pub const DEFAULT_FAILOVER_HOLD: Duration = Duration::from_secs(30);

/// Event kinds, as the names of the `Event.kind` oneof fields.
pub const EVENT_KINDS: &[&str] = &[
    "vrrp",
    "health",
    "applied",
    "drift",
    "quorum",
    "topology",
    "connection",
];

/// Serves AgentService, grpc.health.v1 (lb.v1.AgentService and "" reported SERVING) and reflection on `listener` until `shutdown` completes.
///
/// On shutdown, health reports NOT_SERVING, every open WatchEvents stream
/// ends, and calls in flight finish before this returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    backend: std::sync::Arc<dyn AgentBackend>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ApiServeError> {
    let (reporter, health) = lb_proto::services::health();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    reporter.set_serving::<AgentServiceServer<AgentApi>>().await;
    let reflection = lb_proto::services::reflection_v1()?;
    let reflection_alpha = lb_proto::services::reflection_v1alpha()?;
    let (closed_tx, closed_rx) = watch::channel(false);
    let api = AgentApi { backend, closed_rx };
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(AgentServiceServer::new(api))
        .serve_with_incoming_shutdown(incoming(listener), async move {
            shutdown.await;
            reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            reporter
                .set_not_serving::<AgentServiceServer<AgentApi>>()
                .await;
            // Event streams never end on their own while the agent runs:
            // end them, or the graceful shutdown would wait for them forever.
            let _ = closed_tx.send(true);
        })
        .await?;
    Ok(())
}

/// Accepted connections with Nagle's algorithm off: gRPC writes headers,
/// data and trailers separately, and with Nagle each answer would wait for
/// the peer's delayed ACK.
fn incoming(listener: TcpListener) -> impl Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}

/// `AgentService` over a backend.
struct AgentApi {
    backend: Arc<dyn AgentBackend>,
    /// Turns true when the server shuts down.
    closed_rx: watch::Receiver<bool>,
}

/// A drain or undrain request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DrainTarget {
    service: String,
    real_server: String,
    /// `None`: wait forever.
    deadline: Option<Duration>,
}

/// Checks a drain or undrain request; `verb` names the call in errors.
fn drain_target(verb: &str, r: AgentDrainRequest) -> Result<DrainTarget, Status> {
    if r.service.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{verb}: field 'service' is empty; name the service"
        )));
    }
    if r.real_server.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{verb} in service {}: field 'real_server' is empty; \
             name the real server (node name or address:port)",
            r.service
        )));
    }
    let deadline = match r.deadline {
        None => None,
        Some(d) => match d.to_std() {
            None => {
                return Err(Status::invalid_argument(format!(
                    "{verb} of {} in service {}: field 'deadline' is negative ({d}); \
                     give a positive duration, or 0 to wait for every connection to end",
                    r.real_server, r.service
                )));
            }
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
        },
    };
    Ok(DrainTarget {
        service: r.service,
        real_server: r.real_server,
        deadline,
    })
}

/// A failover request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FailoverOrder {
    instance: String,
    action: FailoverAction,
    hold: Duration,
}

/// Checks a failover request; a hold left out (or zero) is [`DEFAULT_FAILOVER_HOLD`].
fn failover_order(r: FailoverRequest) -> Result<FailoverOrder, Status> {
    if r.instance.is_empty() {
        return Err(Status::invalid_argument(
            "failover: field 'instance' is empty; name the VRRP instance",
        ));
    }
    let action = match failover_request::Action::try_from(r.action) {
        Ok(failover_request::Action::Release) => FailoverAction::Release,
        Ok(failover_request::Action::Take) => FailoverAction::Take,
        Ok(failover_request::Action::Unspecified) | Err(_) => {
            return Err(Status::invalid_argument(format!(
                "failover of instance {}: action must be release or take",
                r.instance
            )));
        }
    };
    let hold = match r.hold {
        None => DEFAULT_FAILOVER_HOLD,
        Some(d) => match d.to_std() {
            None => {
                return Err(Status::invalid_argument(format!(
                    "failover of instance {}: field 'hold' is negative ({d}); \
                     give a positive duration, or leave it out for {}s",
                    r.instance,
                    DEFAULT_FAILOVER_HOLD.as_secs()
                )));
            }
            Some(d) if d.is_zero() => DEFAULT_FAILOVER_HOLD,
            Some(d) => d,
        },
    };
    Ok(FailoverOrder {
        instance: r.instance,
        action,
        hold,
    })
}

/// The name of an event's kind, as in [`EVENT_KINDS`]; `""` for none.
pub fn event_kind(e: &Event) -> &'static str {
    match e.kind {
        Some(event::Kind::Vrrp(_)) => "vrrp",
        Some(event::Kind::Health(_)) => "health",
        Some(event::Kind::Applied(_)) => "applied",
        Some(event::Kind::Drift(_)) => "drift",
        Some(event::Kind::Quorum(_)) => "quorum",
        Some(event::Kind::Topology(_)) => "topology",
        Some(event::Kind::Connection(_)) => "connection",
        None => "",
    }
}

/// Which events a watcher wants.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EventFilter {
    /// Empty: every kind.
    kinds: BTreeSet<&'static str>,
    /// Empty: every node.
    node: String,
}

impl EventFilter {
    /// Checks the kinds of a request.
    fn new(r: WatchEventsRequest) -> Result<Self, Status> {
        let mut kinds = BTreeSet::new();
        for k in &r.kinds {
            match EVENT_KINDS.iter().find(|known| **known == k.as_str()) {
                Some(known) => {
                    kinds.insert(*known);
                }
                None => {
                    return Err(Status::invalid_argument(format!(
                        "watch events: kind '{k}' is unknown (known: {})",
                        EVENT_KINDS.join(", ")
                    )));
                }
            }
        }
        Ok(EventFilter {
            kinds,
            node: r.node,
        })
    }

    fn keeps(&self, e: &Event) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(event_kind(e)))
            && (self.node.is_empty() || self.node == e.node)
    }
}

/// The events of `event_rx` that `filter` keeps, until the sender is gone.
/// A receiver that fell behind skips what it lost and goes on.
fn event_stream(
    event_rx: broadcast::Receiver<Event>,
    filter: EventFilter,
) -> impl Stream<Item = Event> {
    futures::stream::unfold((event_rx, filter), |(mut event_rx, filter)| async move {
        loop {
            match event_rx.recv().await {
                Ok(e) if filter.keeps(&e) => return Some((e, (event_rx, filter))),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    warn!(skipped, "event watcher fell behind; events skipped");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn get_state(
        &self,
        _request: Request<GetStateRequest>,
    ) -> Result<Response<v1::AgentStatus>, Status> {
        Ok(Response::new(self.backend.state().await?))
    }

    async fn list_services(
        &self,
        request: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        let name = Some(request.into_inner().name).filter(|n| !n.is_empty());
        let services = self.backend.services(name).await?;
        Ok(Response::new(ListServicesResponse { services }))
    }

    type WatchEventsStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send>>;

    async fn watch_events(
        &self,
        request: Request<WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let filter = EventFilter::new(request.into_inner())?;
        let mut closed_rx = self.closed_rx.clone();
        let closed = async move {
            // An error means the server is gone: end too.
            let _ = closed_rx.wait_for(|closed| *closed).await;
        };
        let stream = event_stream(self.backend.events(), filter)
            .map(Ok)
            .take_until(closed);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn drain(
        &self,
        request: Request<AgentDrainRequest>,
    ) -> Result<Response<AgentDrainResponse>, Status> {
        let t = drain_target("drain", request.into_inner())?;
        let active_connections = self
            .backend
            .drain(t.service, t.real_server, t.deadline)
            .await?;
        Ok(Response::new(AgentDrainResponse { active_connections }))
    }

    async fn undrain(
        &self,
        request: Request<AgentDrainRequest>,
    ) -> Result<Response<AgentDrainResponse>, Status> {
        // An undrain has no deadline; one given is checked all the same.
        let t = drain_target("undrain", request.into_inner())?;
        let active_connections = self.backend.undrain(t.service, t.real_server).await?;
        Ok(Response::new(AgentDrainResponse { active_connections }))
    }

    async fn failover(
        &self,
        request: Request<FailoverRequest>,
    ) -> Result<Response<FailoverResponse>, Status> {
        let o = failover_order(request.into_inner())?;
        let state = self.backend.failover(o.instance, o.action, o.hold).await?;
        Ok(Response::new(FailoverResponse {
            state: state.into(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use lb_proto::duration::Duration as PDuration;

    use super::*;

    fn drain_req(
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

    // In: drain requests with no deadline, a zero one, a positive one.
    // Out: None, None (both wait forever), Some(the duration).
    #[test]
    fn drain_deadline_zero_or_absent_waits_forever() {
        let t = drain_target("drain", drain_req("web", "rs1", None)).unwrap();
        assert_eq!(t.deadline, None);
        let t = drain_target("drain", drain_req("web", "rs1", Some(PDuration::ZERO))).unwrap();
        assert_eq!(t.deadline, None);
        let t = drain_target(
            "drain",
            drain_req("web", "rs1", Some(PDuration::from_millis(1500))),
        )
        .unwrap();
        assert_eq!(t.deadline, Some(Duration::from_millis(1500)));
    }

    // In: a failover request whose hold has mixed signs (1s, -5ns).
    // Out: INVALID_ARGUMENT naming 'hold', like any negative duration.
    #[test]
    fn failover_hold_with_negative_nanos_is_refused() {
        let e = failover_order(FailoverRequest {
            instance: "VI_1".into(),
            action: failover_request::Action::Take.into(),
            hold: Some(PDuration {
                seconds: 1,
                nanos: -5,
            }),
        })
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("'hold'"), "{}", e.message());
    }

    // In: a failover request with an action number the proto does not define.
    // Out: the same INVALID_ARGUMENT as UNSPECIFIED.
    #[test]
    fn failover_unknown_action_number_is_refused() {
        let e = failover_order(FailoverRequest {
            instance: "VI_1".into(),
            action: 7,
            hold: None,
        })
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            e.message(),
            "failover of instance VI_1: action must be release or take"
        );
    }

    // In: every known kind, with a duplicate.
    // Out: a filter that keeps each kind once, and events of those kinds.
    #[test]
    fn every_known_kind_is_accepted() {
        let f = EventFilter::new(WatchEventsRequest {
            kinds: EVENT_KINDS
                .iter()
                .chain(["vrrp"].iter())
                .map(|k| k.to_string())
                .collect(),
            node: String::new(),
        })
        .unwrap();
        assert_eq!(f.kinds.len(), EVENT_KINDS.len());
        let e = Event {
            kind: Some(event::Kind::Drift(v1::DriftRepaired::default())),
            ..Event::default()
        };
        assert!(f.keeps(&e));
    }
}
