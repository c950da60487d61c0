//! `ControllerService`: translates between lb.v1 messages and the
//! controller's operations. No logic of its own.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use lb_proto::v1::controller_service_server::ControllerService;
use lb_proto::v1::{
    ApplyRequest, ApplyResponse, DeleteRequest, DrainRequest, DrainResponse, Event, GetRequest,
    HistoryRequest, HistoryResponse, ListRequest, ListResponse, Object, ObjectKind,
    RollbackRequest, StatusRequest, StatusResponse, WatchEventsRequest, apply_request, event,
};
use tokio_stream::wrappers::BroadcastStream;
use tonic::{Request, Response, Status};

use crate::change::{Edit, EditError};
use crate::controller::{ApplyOutcome, ChangeRequest, Controller, ControllerError};
use crate::store::{Record, StoreError};

/// Metadata key naming who makes a change ("alice@laptop"); lbctl sets it.
pub const AUTHOR_HEADER: &str = "x-lb-author";

/// The `ControllerService` of one replica.
#[derive(Clone)]
pub struct Api {
    controller: Controller,
}

impl Api {
    /// A service over `controller`.
    pub fn new(controller: Controller) -> Self {
        Api { controller }
    }
}

impl From<ControllerError> for Status {
    fn from(e: ControllerError) -> Self {
        match &e {
            ControllerError::Store(StoreError::Unavailable(_)) => {
                Status::unavailable(e.to_string())
            }
            ControllerError::Store(StoreError::Conflict { .. }) => Status::aborted(e.to_string()),
            ControllerError::Store(_) => Status::internal(e.to_string()),
            ControllerError::Invalid(_) => Status::invalid_argument(e.to_string()),
            ControllerError::Edit(EditError::NotFound { .. })
            | ControllerError::NoSuchRevision(_) => Status::not_found(e.to_string()),
            ControllerError::Edit(EditError::Invalid(_)) => Status::invalid_argument(e.to_string()),
        }
    }
}

fn author<T>(request: &Request<T>) -> String {
    if let Some(a) = request
        .metadata()
        .get(AUTHOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|a| !a.is_empty())
    {
        return a.to_string();
    }
    request
        .remote_addr()
        .map_or_else(|| "unknown".to_string(), |a| a.to_string())
}

fn response(outcome: ApplyOutcome) -> ApplyResponse {
    ApplyResponse {
        revision: outcome.revision,
        changed: outcome.changed,
        plans: outcome.plans,
        warnings: outcome.warnings.into_iter().map(Into::into).collect(),
    }
}

fn revision(record: Record) -> lb_proto::v1::Revision {
    lb_proto::v1::Revision {
        revision: record.revision,
        author: record.author,
        time: Some(pbjson_types::Timestamp {
            seconds: (record.time_ms / 1000) as i64,
            nanos: ((record.time_ms % 1000) * 1_000_000) as i32,
        }),
        message: record.message,
    }
}

fn event_kind(e: &Event) -> &'static str {
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

#[tonic::async_trait]
impl ControllerService for Api {
    async fn apply(
        &self,
        request: Request<ApplyRequest>,
    ) -> Result<Response<ApplyResponse>, Status> {
        let author = author(&request);
        let r = request.into_inner();
        let edit = match r.content {
            Some(apply_request::Content::Topology(t)) => Edit::Replace(t),
            Some(apply_request::Content::Objects(list)) => Edit::Upsert(
                list.objects
                    .into_iter()
                    .enumerate()
                    .map(|(i, o)| {
                        o.kind.ok_or_else(|| {
                            Status::invalid_argument(format!(
                                "objects[{i}]: no kind: set one of node, directorGroup, service"
                            ))
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            None => return Err(Status::invalid_argument("nothing to apply")),
        };
        let outcome = self
            .controller
            .apply(ChangeRequest {
                edit,
                dry_run: r.dry_run,
                expected_revision: r.expected_revision,
                force: r.force,
                author,
                message: r.message,
            })
            .await?;
        Ok(Response::new(response(outcome)))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<Object>, Status> {
        let r = request.into_inner();
        let kind = self.controller.get(r.kind(), &r.name).await?;
        Ok(Response::new(Object { kind: Some(kind) }))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let (revision, objects) = self.controller.list(request.into_inner().kind()).await?;
        Ok(Response::new(ListResponse {
            revision,
            objects: objects
                .into_iter()
                .map(|k| Object { kind: Some(k) })
                .collect(),
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<ApplyResponse>, Status> {
        let author = author(&request);
        let r = request.into_inner();
        let kind = r.kind();
        if kind == ObjectKind::Unspecified {
            return Err(Status::invalid_argument(
                "the kind of the objects to delete is required",
            ));
        }
        let outcome = self
            .controller
            .apply(ChangeRequest {
                edit: Edit::Delete {
                    kind,
                    names: r.names,
                },
                dry_run: r.dry_run,
                expected_revision: r.expected_revision,
                force: r.force,
                author,
                message: r.message,
            })
            .await?;
        Ok(Response::new(response(outcome)))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let (revision, nodes) = self.controller.status(&request.into_inner().nodes);
        Ok(Response::new(StatusResponse { revision, nodes }))
    }

    type WatchEventsStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send>>;

    async fn watch_events(
        &self,
        request: Request<WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let r = request.into_inner();
        let stream = BroadcastStream::new(self.controller.events())
            .filter_map(move |e| {
                let keep = match &e {
                    Ok(e) => {
                        (r.kinds.is_empty() || r.kinds.iter().any(|k| k == event_kind(e)))
                            && (r.node.is_empty() || r.node == e.node)
                    }
                    Err(_) => true,
                };
                let item = match e {
                    Ok(e) => Ok(e),
                    Err(lag) => Err(Status::data_loss(format!(
                        "the watcher fell behind: {lag}; watch again"
                    ))),
                };
                futures::future::ready(keep.then_some(item))
            })
            .take_until(self.controller.closed());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        let limit = match request.into_inner().limit {
            0 => 50,
            n => n as usize,
        };
        let records = self.controller.history(limit).await?;
        Ok(Response::new(HistoryResponse {
            revisions: records.into_iter().map(revision).collect(),
        }))
    }

    async fn rollback(
        &self,
        request: Request<RollbackRequest>,
    ) -> Result<Response<ApplyResponse>, Status> {
        let author = author(&request);
        let r = request.into_inner();
        let outcome = self
            .controller
            .rollback(r.revision, r.expected_revision, r.dry_run, author)
            .await?;
        Ok(Response::new(response(outcome)))
    }

    async fn drain(
        &self,
        request: Request<DrainRequest>,
    ) -> Result<Response<DrainResponse>, Status> {
        self.drain_flag(request, true).await
    }

    async fn undrain(
        &self,
        request: Request<DrainRequest>,
    ) -> Result<Response<DrainResponse>, Status> {
        self.drain_flag(request, false).await
    }
}

impl Api {
    async fn drain_flag(
        &self,
        request: Request<DrainRequest>,
        drain: bool,
    ) -> Result<Response<DrainResponse>, Status> {
        let author = author(&request);
        let r = request.into_inner();
        let verb = if drain { "drain" } else { "undrain" };
        let message = format!("{verb} {} of service {}", r.real_server, r.service);
        let outcome = self
            .controller
            .apply(ChangeRequest {
                edit: Edit::Drain {
                    service: r.service,
                    real_server: r.real_server,
                    drain,
                },
                dry_run: false,
                expected_revision: 0,
                force: false,
                author,
                message,
            })
            .await?;
        Ok(Response::new(DrainResponse {
            revision: outcome.revision,
        }))
    }
}

impl From<EditError> for Status {
    fn from(e: EditError) -> Self {
        ControllerError::Edit(e).into()
    }
}
