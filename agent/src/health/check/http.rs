//! HTTP and HTTPS GET check (keepalived HTTP_GET / SSL_GET), on hyper.
//!
//! One new connection per check (a pooled one would prove nothing about the
//! server's accept path), HTTP/1.1 or HTTP/2, the status against the expected
//! codes and, if asked, the body against a regular expression or a digest.

use std::{future::Future, net::SocketAddr, pin::pin, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use md5::Digest as _;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

use super::{tcp, tls};
use crate::health::{
    config::{BodyMatch, HttpSpec, HttpVersion},
    outcome::{CheckResult, Failure, error_chain_text},
};

/// Largest body read for a body match.
pub const MAX_BODY: usize = 1 << 20;

const USER_AGENT: &str = concat!("lb-health/", env!("CARGO_PKG_VERSION"));

/// A byte stream a check runs over: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An HTTP checker: the settings and, for HTTPS, the TLS configuration.
#[derive(Debug)]
pub struct HttpChecker {
    spec: HttpSpec,
    tls: Option<Arc<ClientConfig>>,
}

impl HttpChecker {
    /// Builds the checker.
    pub fn new(spec: HttpSpec) -> Self {
        let tls = spec.tls.then(|| {
            let alpn: &[&[u8]] = match spec.version {
                HttpVersion::Http1 => &[b"http/1.1"],
                HttpVersion::Http2 => &[b"h2"],
            };
            tls::client_config(spec.tls_verify, alpn)
        });
        HttpChecker { spec, tls }
    }

    fn authority(&self, target: SocketAddr) -> String {
        match &self.spec.host {
            Some(h) => h.clone(),
            None => {
                let default_port = if self.spec.tls { 443 } else { 80 };
                match (target, target.port() == default_port) {
                    (SocketAddr::V4(a), true) => a.ip().to_string(),
                    (SocketAddr::V6(a), true) => format!("[{}]", a.ip()),
                    (a, false) => a.to_string(),
                }
            }
        }
    }

    /// One check attempt against `target`.
    pub async fn check(
        &self,
        target: SocketAddr,
        bind: Option<std::net::IpAddr>,
        timeout: Duration,
    ) -> CheckResult {
        match tokio::time::timeout(timeout, self.attempt(target, bind)).await {
            Ok(Ok(r)) => r,
            Ok(Err(f)) => CheckResult::Down(f),
            Err(_) => CheckResult::Down(Failure::Timeout),
        }
    }

    async fn attempt(
        &self,
        target: SocketAddr,
        bind: Option<std::net::IpAddr>,
    ) -> Result<CheckResult, Failure> {
        let stream = tcp::connect(target, bind)
            .await
            .map_err(|e| Failure::from_io("connect", &e))?;
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(stream),
            Some(config) => {
                let name = self.spec.sni.as_deref().or(self.spec.host.as_deref());
                let name = tls::server_name(name, target.ip())
                    .map_err(|reason| Failure::Tls { reason })?;
                let tls = TlsConnector::from(config.clone())
                    .connect(name, stream)
                    .await
                    .map_err(|e| Failure::Tls {
                        reason: error_chain_text(&e),
                    })?;
                let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                if self.spec.version == HttpVersion::Http2 && alpn.as_deref() != Some(b"h2") {
                    return Err(Failure::Http {
                        reason: "server did not negotiate h2 (ALPN)".into(),
                    });
                }
                Box::new(tls)
            }
        };
        let io = TokioIo::new(io);
        let authority = self.authority(target);
        let response = match self.spec.version {
            HttpVersion::Http1 => {
                let req = Request::get(self.spec.path.as_str())
                    .header(header::HOST, &authority)
                    .header(header::USER_AGENT, USER_AGENT)
                    .header(header::CONNECTION, "close")
                    .body(Empty::<Bytes>::new())
                    .map_err(http_err)?;
                let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(http_err)?;
                drive(conn, async move {
                    let resp = sender.send_request(req).await.map_err(http_err)?;
                    self.judge(resp).await
                })
                .await?
            }
            HttpVersion::Http2 => {
                let scheme = if self.spec.tls { "https" } else { "http" };
                let uri = format!("{scheme}://{authority}{}", self.spec.path);
                let req = Request::get(uri)
                    .header(header::USER_AGENT, USER_AGENT)
                    .body(Empty::<Bytes>::new())
                    .map_err(http_err)?;
                let (mut sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .map_err(http_err)?;
                drive(conn, async move {
                    let resp = sender.send_request(req).await.map_err(http_err)?;
                    self.judge(resp).await
                })
                .await?
            }
        };
        Ok(response)
    }

    async fn judge(&self, resp: http::Response<Incoming>) -> Result<CheckResult, Failure> {
        let status = resp.status().as_u16();
        if !self.spec.status_ok(status) {
            return Ok(CheckResult::Down(Failure::Status {
                got: status,
                want: self.want_status(),
            }));
        }
        let Some(body_match) = &self.spec.body else {
            return Ok(CheckResult::UP);
        };
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| Failure::Http {
                reason: format!("reading body: {e}"),
            })?
            .to_bytes();
        Ok(match body_match {
            BodyMatch::Regex(p) if p.0.is_match(&body) => CheckResult::UP,
            BodyMatch::Regex(p) => CheckResult::Down(Failure::BodyMismatch {
                pattern: p.0.as_str().to_string(),
            }),
            BodyMatch::Md5(want) => digest_result(&md5::Md5::digest(&body), want),
            BodyMatch::Sha256(want) => digest_result(&sha2::Sha256::digest(&body), want),
        })
    }

    fn want_status(&self) -> String {
        if self.spec.expected_status.is_empty() {
            "200..299".into()
        } else {
            let codes: Vec<_> = self
                .spec
                .expected_status
                .iter()
                .map(u16::to_string)
                .collect();
            codes.join(", ")
        }
    }
}

fn digest_result(got: &[u8], want: &[u8]) -> CheckResult {
    if got == want {
        CheckResult::UP
    } else {
        CheckResult::Down(Failure::DigestMismatch {
            got: hex::encode(got),
            want: hex::encode(want),
        })
    }
}

fn http_err(e: impl std::error::Error + 'static) -> Failure {
    Failure::from_error_chain(&e, |reason| Failure::Http { reason })
}

/// Runs `request` while polling the connection `conn` in the same task, so
/// that dropping the check (at its timeout) drops the connection too.
async fn drive<C, E, R>(conn: C, request: R) -> Result<CheckResult, Failure>
where
    C: Future<Output = Result<(), E>>,
    E: std::error::Error + 'static,
    R: Future<Output = Result<CheckResult, Failure>>,
{
    let mut conn = pin!(conn);
    let mut request = pin!(request);
    tokio::select! {
        r = &mut request => r,
        c = &mut conn => match c {
            Err(e) => Err(http_err(e)),
            // Closed cleanly: whatever was received is complete.
            Ok(()) => request.await,
        },
    }
}
