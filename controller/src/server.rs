//! The controller's gRPC server: `ControllerService`, `AgentSync`, and the
//! standard services (grpc.health.v1 and reflection) that every lb server
//! carries.

use std::future::Future;

use lb_proto::v1::agent_sync_server::AgentSyncServer;
use lb_proto::v1::controller_service_server::ControllerServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::api::Api;
use crate::controller::Controller;
use crate::sync::SyncService;

/// A server that could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Reflection could not be built from the descriptor set.
    #[error("building the reflection service: {0}")]
    Reflection(#[from] tonic_reflection_error::Error),
    /// The transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

mod tonic_reflection_error {
    /// Re-export under a short name for the error enum.
    pub type Error = Box<dyn std::error::Error + Send + Sync>;
}

/// Accepted connections with Nagle's algorithm off: gRPC writes headers,
/// data and trailers separately, and with Nagle each answer would wait for
/// the peer's delayed ACK (tens of milliseconds per call).
fn incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::StreamExt::map(TcpListenerStream::new(listener), |conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}

/// Serves `controller` on `listener` until `shutdown` completes.
pub async fn run(
    controller: Controller,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let (reporter, health) = lb_proto::services::health();
    reporter.set_serving::<ControllerServiceServer<Api>>().await;
    reporter.set_serving::<AgentSyncServer<SyncService>>().await;
    let reflection =
        lb_proto::services::reflection_v1().map_err(|e| ServerError::Reflection(Box::new(e)))?;
    let reflection_alpha = lb_proto::services::reflection_v1alpha()
        .map_err(|e| ServerError::Reflection(Box::new(e)))?;
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(ControllerServiceServer::new(Api::new(controller.clone())))
        .add_service(AgentSyncServer::new(SyncService::new(controller.clone())))
        .serve_with_incoming_shutdown(incoming(listener), async move {
            shutdown.await;
            controller.close();
        })
        .await?;
    Ok(())
}
