//! The agent's side of `AgentSync`: the link of `lb-agent --controller` to
//! the controller (also used by the controller's tests and benchmarks as
//! fake agents speaking the real protocol).
//!
//! ```text
//!   controller URLs (round robin, backoff) ──► stream
//!     ─► Hello(node, role, version, applied revision/epoch), then the latest status
//!     ◄─ DesiredState ─► stale? Nack("stale") : applier.apply() ─► Ack | Nack(error)
//!     ◄─ Keepalive; ─► Keepalive every interval; silent three intervals = dead
//!     ─► AgentStatus whenever status_rx changes
//! ```
//!
//! The applier is the agent's: it validates the whole bundle, persists it and
//! applies it, or refuses it without applying any of it. The client refuses a
//! state whose (epoch, revision) is older than the one applied; the same
//! (epoch, revision) is applied again (a controller re-pushes on every
//! reconnect, and a readiness change re-plans within one revision).

use std::time::Duration;

use lb_proto::v1::agent_sync_client::AgentSyncClient;
use lb_proto::v1::{
    Ack, AgentMessage, AgentStatus, DesiredState, ErrorDetail, Hello, Keepalive, Nack, NodeRole,
    agent_message, controller_message,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

/// Applies pushed states: the agent's part.
#[async_trait::async_trait]
pub trait Applier: Send {
    /// Validates, persists and applies `state` as a whole, or returns why not
    /// (nothing of it applied).
    async fn apply(&mut self, state: &DesiredState) -> Result<(), ErrorDetail>;
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Controller URLs ("http://10.0.0.1:7000"); tried in turn.
    pub urls: Vec<String>,
    /// This node's name.
    pub node: String,
    /// This agent's role.
    pub role: NodeRole,
    /// Agent version.
    pub version: String,
    /// Keepalive interval; three silent intervals end a stream.
    pub keepalive: Duration,
    /// First reconnect delay; doubles per failure up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Timeout of one connection attempt.
    pub connect_timeout: Duration,
}

impl ClientConfig {
    /// Settings with the usual timings.
    pub fn new(urls: Vec<String>, node: &str, role: NodeRole) -> Self {
        ClientConfig {
            urls,
            node: node.to_string(),
            role,
            version: lb_proto::VERSION.to_string(),
            keepalive: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// (epoch, revision) of the state an agent runs; compared in that order.
pub type Applied = (u64, u64);

/// Whether a push at `(epoch, revision)` is older than `applied`.
pub fn is_stale(applied: Applied, epoch: u64, revision: u64) -> bool {
    (epoch, revision) < applied
}

/// Why a stream ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Could not connect or open the stream.
    #[error("connecting to {url}: {reason}")]
    Connect {
        /// Controller URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The stream failed or closed.
    #[error("stream to {url} ended: {reason}")]
    Stream {
        /// Controller URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// Runs the client until `shutdown` resolves: connects, applies pushes
/// through `applier`, sends status from `status_rx`, reconnects with backoff.
/// `applied` is what the agent runs already (from its stored state). Returns
/// the (epoch, revision) applied last.
pub async fn run<A: Applier>(
    config: ClientConfig,
    mut applier: A,
    mut status_rx: watch::Receiver<Option<AgentStatus>>,
    mut applied: Applied,
    shutdown: impl std::future::Future<Output = ()>,
) -> Applied {
    tokio::pin!(shutdown);
    if config.urls.is_empty() {
        tracing::error!("no controller URL given: the agent keeps its stored configuration");
        shutdown.await;
        return applied;
    }
    let mut backoff = config.backoff_min;
    let mut index = 0usize;
    loop {
        let url = config.urls[index % config.urls.len()].clone();
        index += 1;
        let started = Instant::now();
        let result = tokio::select! {
            r = session(&config, &url, &mut applier, &mut status_rx, &mut applied) => r,
            _ = &mut shutdown => return applied,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "controller stream ended");
        }
        // A stream that lived a while resets the backoff.
        if started.elapsed() > config.keepalive * 3 {
            backoff = config.backoff_min;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = &mut shutdown => return applied,
        }
        backoff = (backoff * 2).min(config.backoff_max);
    }
}

fn msg(m: agent_message::Msg) -> AgentMessage {
    AgentMessage { msg: Some(m) }
}

async fn session<A: Applier>(
    config: &ClientConfig,
    url: &str,
    applier: &mut A,
    status_rx: &mut watch::Receiver<Option<AgentStatus>>,
    applied: &mut Applied,
) -> Result<(), SessionError> {
    let connect_err = |reason: String| SessionError::Connect {
        url: url.to_string(),
        reason,
    };
    let stream_err = |reason: String| SessionError::Stream {
        url: url.to_string(),
        reason,
    };
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| connect_err(e.to_string()))?
        .connect_timeout(config.connect_timeout)
        .http2_keep_alive_interval(config.keepalive)
        .keep_alive_timeout(config.keepalive * 3);
    let channel = tokio::time::timeout(config.connect_timeout, endpoint.connect())
        .await
        .map_err(|_| connect_err("timed out".to_string()))?
        .map_err(|e| connect_err(e.to_string()))?;
    let mut client = AgentSyncClient::new(channel);
    let (out_tx, out_rx) = mpsc::channel::<AgentMessage>(16);
    let hello = Hello {
        node: config.node.clone(),
        role: config.role as i32,
        version: config.version.clone(),
        applied_revision: applied.1,
        applied_epoch: applied.0,
    };
    out_tx
        .send(msg(agent_message::Msg::Hello(hello)))
        .await
        .map_err(|e| stream_err(e.to_string()))?;
    let current = status_rx.borrow_and_update().clone();
    if let Some(status) = current {
        let _ = out_tx.send(msg(agent_message::Msg::Status(status))).await;
    }
    let mut inbound = client
        .sync(ReceiverStream::new(out_rx))
        .await
        .map_err(|e| connect_err(e.to_string()))?
        .into_inner();
    tracing::info!(%url, node = %config.node, "connected to the controller");
    let mut ticker = tokio::time::interval(config.keepalive);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut status_open = true;
    loop {
        tokio::select! {
            message = inbound.message() => {
                let message = match message {
                    Ok(Some(m)) => m,
                    Ok(None) => return Err(stream_err("closed by the controller".to_string())),
                    Err(status) => return Err(stream_err(status.to_string())),
                };
                last_heard = Instant::now();
                let Some(controller_message::Msg::Desired(state)) = message.msg else {
                    continue;
                };
                let reply = if is_stale(*applied, state.epoch, state.revision) {
                    tracing::warn!(epoch = state.epoch, revision = state.revision, applied_epoch = applied.0, applied_revision = applied.1, "refused a stale state");
                    agent_message::Msg::Nack(Nack {
                        revision: state.revision,
                        epoch: state.epoch,
                        error: Some(ErrorDetail {
                            code: "stale".to_string(),
                            message: format!(
                                "state (epoch {}, revision {}) is older than the applied (epoch {}, revision {})",
                                state.epoch, state.revision, applied.0, applied.1
                            ),
                            ..Default::default()
                        }),
                    })
                } else {
                    match applier.apply(&state).await {
                        Ok(()) => {
                            *applied = (state.epoch, state.revision);
                            agent_message::Msg::Ack(Ack { revision: state.revision, epoch: state.epoch })
                        }
                        Err(error) => agent_message::Msg::Nack(Nack {
                            revision: state.revision,
                            epoch: state.epoch,
                            error: Some(error),
                        }),
                    }
                };
                out_tx.send(msg(reply)).await.map_err(|e| stream_err(e.to_string()))?;
            }
            changed = status_rx.changed(), if status_open => {
                if changed.is_err() {
                    // The agent dropped its status sender: nothing more to report.
                    status_open = false;
                    continue;
                }
                let current = status_rx.borrow_and_update().clone();
                if let Some(status) = current {
                    out_tx.send(msg(agent_message::Msg::Status(status))).await.map_err(|e| stream_err(e.to_string()))?;
                }
            }
            _ = ticker.tick() => {
                if last_heard.elapsed() > config.keepalive * 3 {
                    return Err(stream_err("no message for three keepalive intervals".to_string()));
                }
                let _ = out_tx.try_send(msg(agent_message::Msg::Keepalive(Keepalive { time: Some(lb_proto::now()) })));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_orders_epoch_before_revision() {
        assert!(is_stale((1, 5), 1, 4));
        assert!(!is_stale((1, 5), 1, 5), "the same state is applied again");
        assert!(!is_stale((1, 5), 1, 6));
        assert!(
            !is_stale((1, 5), 2, 1),
            "a newer epoch wins over a revision"
        );
        assert!(
            is_stale((2, 1), 1, 99),
            "an older epoch loses whatever its revision"
        );
    }
}
