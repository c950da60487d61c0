//! gRPC health check: `grpc.health.v1.Health/Check` with a service name, up
//! when the answer is SERVING. The channel runs over our own TCP (and TLS)
//! connection so that the bind address and "verify or not" apply as for HTTPS.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use tokio_rustls::TlsConnector;
use tonic::transport::Endpoint;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::{http::Io, tcp, tls};
use crate::health::{
    config::GrpcSpec,
    outcome::{CheckResult, Failure, error_chain_text},
};

/// A gRPC health checker.
#[derive(Debug)]
pub struct GrpcChecker {
    spec: GrpcSpec,
    tls: Option<Arc<ClientConfig>>,
}

impl GrpcChecker {
    /// Builds the checker.
    pub fn new(spec: GrpcSpec) -> Self {
        let tls = spec
            .tls
            .then(|| tls::client_config(spec.tls_verify, &[b"h2"]));
        GrpcChecker { spec, tls }
    }

    /// One check attempt.
    pub async fn check(
        &self,
        target: SocketAddr,
        bind: Option<IpAddr>,
        timeout: Duration,
    ) -> CheckResult {
        match tokio::time::timeout(timeout, self.attempt(target, bind)).await {
            Ok(r) => r,
            Err(_) => CheckResult::Down(Failure::Timeout),
        }
    }

    async fn attempt(&self, target: SocketAddr, bind: Option<IpAddr>) -> CheckResult {
        let tls = self.tls.clone();
        let name = match tls::server_name(self.spec.authority.as_deref(), target.ip()) {
            Ok(n) => n,
            Err(reason) => return CheckResult::Down(Failure::Tls { reason }),
        };
        let endpoint = match Endpoint::from_shared(format!("http://{target}")) {
            Ok(e) => e,
            Err(e) => {
                return CheckResult::Down(Failure::Grpc {
                    code: "InvalidArgument".into(),
                    message: e.to_string(),
                });
            }
        };
        let connector = tower::service_fn(move |_uri: http::Uri| {
            let tls = tls.clone();
            let name = name.clone();
            async move {
                let stream = tcp::connect(target, bind).await?;
                let io: Box<dyn Io> = match tls {
                    None => Box::new(stream),
                    Some(config) => {
                        Box::new(TlsConnector::from(config).connect(name, stream).await?)
                    }
                };
                Ok::<_, std::io::Error>(TokioIo::new(io))
            }
        });
        let channel = match endpoint.connect_with_connector(connector).await {
            Ok(c) => c,
            Err(e) => {
                return CheckResult::Down(Failure::from_error_chain(&e, |message| Failure::Grpc {
                    code: "Unavailable".into(),
                    message,
                }));
            }
        };
        let request = HealthCheckRequest {
            service: self.spec.service.clone(),
        };
        match HealthClient::new(channel).check(request).await {
            Ok(resp) => {
                let status = resp.into_inner().status;
                if status == ServingStatus::Serving as i32 {
                    CheckResult::UP
                } else {
                    let name = ServingStatus::try_from(status)
                        .map(|s| s.as_str_name().to_string())
                        .unwrap_or_else(|_| status.to_string());
                    CheckResult::Down(Failure::NotServing { status: name })
                }
            }
            Err(status) => CheckResult::Down(Failure::Grpc {
                code: format!("{:?}", status.code()),
                message: if status.message().is_empty() {
                    error_chain_text(&status)
                } else {
                    status.message().to_string()
                },
            }),
        }
    }
}
