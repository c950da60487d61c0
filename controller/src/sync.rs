//! The `AgentSync` service: one bidirectional stream per agent.
//!
//! ```text
//!   agent ──AgentMessage──► session task ──► fleet.on_message ──► store.set_readiness
//!   agent ◄─ControllerMessage── session_tx ◄── fleet.reconcile (pushes)
//!                               session_tx ◄── session task (keepalives)
//! ```
//!
//! The first message must be a hello. The session task sends a keepalive
//! every interval and drops the stream when the agent has been silent for
//! three intervals, or when a newer stream of the same node took over.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use lb_proto::v1::agent_sync_server::AgentSync;
use lb_proto::v1::{AgentMessage, ControllerMessage, Keepalive, agent_message, controller_message};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::controller::Controller;

/// Room for pushes and keepalives not yet taken by the transport.
const SESSION_BUFFER: usize = 64;

/// The `AgentSync` service of one replica.
#[derive(Clone)]
pub struct SyncService {
    controller: Controller,
}

impl SyncService {
    /// A service over `controller`.
    pub fn new(controller: Controller) -> Self {
        SyncService { controller }
    }
}

fn keepalive() -> ControllerMessage {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    ControllerMessage {
        msg: Some(controller_message::Msg::Keepalive(Keepalive {
            time: Some(pbjson_types::Timestamp {
                seconds: d.as_secs() as i64,
                nanos: d.subsec_nanos() as i32,
            }),
        })),
    }
}

#[tonic::async_trait]
impl AgentSync for SyncService {
    type SyncStream = Pin<Box<dyn Stream<Item = Result<ControllerMessage, Status>> + Send>>;

    async fn sync(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let keepalive_every = self.controller.config().keepalive;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(keepalive_every * 3, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded("no hello within three keepalive intervals")
            })??;
        let hello = match first.and_then(|m| m.msg) {
            Some(agent_message::Msg::Hello(h)) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a hello",
                ));
            }
        };
        if hello.node.is_empty() {
            return Err(Status::invalid_argument("hello: the node name is required"));
        }
        let (session_tx, session_rx) = mpsc::channel::<ControllerMessage>(SESSION_BUFFER);
        let node = hello.node.clone();
        tracing::info!(node = %node, role = ?hello.role(), version = %hello.version, applied_revision = hello.applied_revision, "agent connected");
        let id = self.controller.fleet().connect(&hello, session_tx.clone());
        tokio::spawn(session(
            self.controller.clone(),
            node,
            id,
            inbound,
            session_tx,
            keepalive_every,
        ));
        let stream = ReceiverStream::new(session_rx);
        Ok(Response::new(Box::pin(futures::StreamExt::map(stream, Ok))))
    }
}

async fn session(
    controller: Controller,
    node: String,
    id: u64,
    mut inbound: Streaming<AgentMessage>,
    session_tx: mpsc::Sender<ControllerMessage>,
    every: Duration,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let closed = controller.closed();
    tokio::pin!(closed);
    let reason = loop {
        tokio::select! {
            _ = &mut closed => break "controller shutting down".to_string(),
            message = inbound.message() => match message {
                Ok(Some(message)) => {
                    last_heard = Instant::now();
                    if let Some(change) = controller.fleet().on_message(&node, id, message)
                        && let Err(e) = controller.store().set_readiness(&change.node, change.vips).await
                    {
                        tracing::warn!(node = %node, error = %e, "storing readiness failed; kept in memory");
                    }
                }
                Ok(None) => break "stream closed by the agent".to_string(),
                Err(status) => break format!("stream error: {status}"),
            },
            _ = ticker.tick() => {
                if last_heard.elapsed() > every * 3 {
                    break "no message for three keepalive intervals".to_string();
                }
                if !controller.fleet().is_current(&node, id) {
                    break "superseded by a newer stream".to_string();
                }
                let _ = session_tx.try_send(keepalive());
            }
            _ = session_tx.closed() => break "agent went away".to_string(),
        }
    };
    tracing::info!(node = %node, %reason, "agent disconnected");
    controller.fleet().disconnect(&node, id);
}
