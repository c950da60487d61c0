//! The controller's gRPC server: the standard services (grpc.health.v1 and
//! reflection) that every lb server carries.

use std::future::Future;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

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

/// Serves on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let (_reporter, health) = lb_proto::services::health();
    let reflection =
        lb_proto::services::reflection_v1().map_err(|e| ServerError::Reflection(Box::new(e)))?;
    let reflection_alpha = lb_proto::services::reflection_v1alpha()
        .map_err(|e| ServerError::Reflection(Box::new(e)))?;
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}
