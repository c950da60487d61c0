//! Servers on 127.0.0.1 for the in-process tests of the checkers and the runner.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{ServerConfig, pki_types::PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// 127.0.0.1.
pub const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A port on 127.0.0.1 where nothing listens (bound, then closed).
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind((LOCAL, 0)).await.unwrap();
    l.local_addr().unwrap()
}

#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
}

pub struct HttpServer {
    pub addr: SocketAddr,
    pub reply: Arc<Mutex<Reply>>,
    pub hits: Arc<AtomicUsize>,
    /// Replies with a status of 400 or more.
    pub bad: Arc<AtomicUsize>,
    /// "host|version" of the last request.
    pub last: Arc<Mutex<String>>,
}

pub fn tls_server_config() -> Arc<ServerConfig> {
    let cert = rcgen::generate_simple_self_signed(vec!["www.example.test".to_string()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let mut cfg =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

pub async fn http_server(tls: bool) -> HttpServer {
    let l = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    let reply = Arc::new(Mutex::new(Reply {
        status: 200,
        body: "hello world".into(),
        delay: Duration::ZERO,
    }));
    let hits = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(Mutex::new(String::new()));
    let acceptor = tls.then(|| TlsAcceptor::from(tls_server_config()));
    let (r, h, la, b) = (reply.clone(), hits.clone(), last.clone(), bad.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = l.accept().await else {
                return;
            };
            let (r, h, la, b, acceptor) = (
                r.clone(),
                h.clone(),
                la.clone(),
                b.clone(),
                acceptor.clone(),
            );
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (r, h, la, b) = (r.clone(), h.clone(), la.clone(), b.clone());
                    async move {
                        h.fetch_add(1, Ordering::SeqCst);
                        let host = req
                            .headers()
                            .get(http::header::HOST)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                            .or_else(|| req.uri().authority().map(|a| a.to_string()))
                            .unwrap_or_default();
                        *la.lock().unwrap() = format!("{host}|{:?}", req.version());
                        let reply = r.lock().unwrap().clone();
                        tokio::time::sleep(reply.delay).await;
                        if reply.status >= 400 {
                            b.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .status(reply.status)
                                .body(Full::new(Bytes::from(reply.body)))
                                .unwrap(),
                        )
                    }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match acceptor {
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                    }
                    Some(acc) => {
                        if let Ok(s) = acc.accept(stream).await {
                            let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                }
            });
        }
    });
    HttpServer {
        addr,
        reply,
        hits,
        bad,
        last,
    }
}
