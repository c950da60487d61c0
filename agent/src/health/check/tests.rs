//! In-process tests of every checker against servers on 127.0.0.1: up,
//! down (refused / unreachable), slow (timeout), wrong answer, recovery.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    str::FromStr,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{Name, RData, Record, RecordType, rdata::A},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, UdpSocket},
};

use super::{Checker, Probe, exec::ExecEnv};
use crate::health::test_servers::{LOCAL, closed_port, http_server};
use crate::health::{
    config::{
        BodyMatch, CheckKind, DnsSpec, DnsTransport, ExecSpec, GrpcSpec, HttpSpec, HttpVersion,
        Pattern, ReplyMatch, UdpSpec, normalise_answer,
    },
    outcome::{CheckResult, Failure},
};

const TIMEOUT: Duration = Duration::from_millis(500);

fn probe(target: SocketAddr) -> Probe {
    Probe {
        target,
        bind: None,
        timeout: TIMEOUT,
        env: ExecEnv {
            real_server: target,
            vip: None,
            vport: 0,
        },
    }
}

async fn check(kind: CheckKind, target: SocketAddr) -> CheckResult {
    Checker::build(&kind).unwrap().check(probe(target)).await
}

fn down(r: CheckResult) -> Failure {
    match r {
        CheckResult::Down(f) => f,
        up => panic!("expected down, got {up:?}"),
    }
}

// ---------------------------------------------------------------- TCP

#[tokio::test]
async fn tcp_up_refused_timeout_and_recovery() {
    let l = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    assert_eq!(check(CheckKind::Tcp, addr).await, CheckResult::UP);
    drop(l);
    assert_eq!(down(check(CheckKind::Tcp, addr).await), Failure::Refused);

    // A listener whose accept queue is full drops further SYNs: connect hangs.
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(LOCAL, 0)).unwrap();
    let full = s.listen(0).unwrap();
    let full_addr = full.local_addr().unwrap();
    let mut fillers = vec![];
    let mut timed_out = false;
    for _ in 0..8 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(full_addr),
        )
        .await
        {
            Ok(Ok(c)) => fillers.push(c),
            _ => {
                timed_out = true;
                break;
            }
        }
    }
    assert!(timed_out, "the accept queue never filled");
    assert_eq!(
        down(check(CheckKind::Tcp, full_addr).await),
        Failure::Timeout
    );

    // Recovery: listening again on the first port.
    let l = TcpListener::bind(addr).await.unwrap();
    assert_eq!(check(CheckKind::Tcp, addr).await, CheckResult::UP);
    drop(l);
}

#[tokio::test]
async fn tcp_bind_address_is_the_source() {
    let l = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let accept = tokio::spawn(async move { l.accept().await.unwrap().1 });
    let mut p = probe(addr);
    p.bind = Some(source);
    assert_eq!(Checker::Tcp.check(p).await, CheckResult::UP);
    assert_eq!(accept.await.unwrap().ip(), source);
}

// ---------------------------------------------------------------- HTTP

fn http(f: impl FnOnce(&mut HttpSpec)) -> CheckKind {
    let mut spec = HttpSpec {
        path: "/health".into(),
        host: None,
        sni: None,
        tls: false,
        tls_verify: false,
        version: HttpVersion::Http1,
        expected_status: vec![],
        body: None,
    };
    f(&mut spec);
    CheckKind::Http(spec)
}

#[tokio::test]
async fn http_status_body_timeout_refused_recovery() {
    let srv = http_server(false).await;
    let plain = http(|_| {});
    assert_eq!(check(plain.clone(), srv.addr).await, CheckResult::UP);
    assert_eq!(*srv.last.lock().unwrap(), format!("{}|HTTP/1.1", srv.addr));

    srv.reply.lock().unwrap().status = 503;
    assert_eq!(
        down(check(plain.clone(), srv.addr).await),
        Failure::Status {
            got: 503,
            want: "200..299".into()
        }
    );
    let want_503 = http(|s| s.expected_status = vec![503]);
    assert_eq!(check(want_503, srv.addr).await, CheckResult::UP);
    srv.reply.lock().unwrap().status = 200;

    let regex = http(|s| {
        s.body = Some(BodyMatch::Regex(Pattern(
            regex::bytes::Regex::new("^hello w").unwrap(),
        )))
    });
    assert_eq!(check(regex.clone(), srv.addr).await, CheckResult::UP);
    srv.reply.lock().unwrap().body = "goodbye".into();
    assert_eq!(
        down(check(regex.clone(), srv.addr).await),
        Failure::BodyMismatch {
            pattern: "^hello w".into()
        }
    );

    // md5("goodbye") and sha256("goodbye").
    let md5 = http(|s| {
        s.body = Some(BodyMatch::Md5(
            hex::decode("69faab6268350295550de7d587bc323d")
                .unwrap()
                .try_into()
                .unwrap(),
        ))
    });
    assert_eq!(check(md5.clone(), srv.addr).await, CheckResult::UP);
    srv.reply.lock().unwrap().body = "hello world".into();
    assert!(matches!(
        down(check(md5, srv.addr).await),
        Failure::DigestMismatch { .. }
    ));
    let sha = http(|s| {
        s.body = Some(BodyMatch::Sha256(
            hex::decode("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9")
                .unwrap()
                .try_into()
                .unwrap(),
        ))
    });
    assert_eq!(check(sha, srv.addr).await, CheckResult::UP);

    srv.reply.lock().unwrap().delay = Duration::from_secs(5);
    let started = tokio::time::Instant::now();
    assert_eq!(down(check(plain.clone(), srv.addr).await), Failure::Timeout);
    assert!(started.elapsed() < TIMEOUT + Duration::from_millis(1500));
    srv.reply.lock().unwrap().delay = Duration::ZERO;

    // Recovery.
    assert_eq!(check(plain.clone(), srv.addr).await, CheckResult::UP);
    assert_eq!(
        down(check(plain, closed_port().await).await),
        Failure::Refused
    );
}

#[tokio::test]
async fn http2_prior_knowledge_and_host_header() {
    let srv = http_server(false).await;
    let h2 = http(|s| {
        s.version = HttpVersion::Http2;
        s.host = Some("www.example.test".into());
    });
    assert_eq!(check(h2, srv.addr).await, CheckResult::UP);
    assert_eq!(*srv.last.lock().unwrap(), "www.example.test|HTTP/2.0");
}

#[tokio::test]
async fn https_verify_sni_alpn() {
    let srv = http_server(true).await;
    let https = |version, verify| {
        http(move |s| {
            s.tls = true;
            s.tls_verify = verify;
            s.version = version;
            s.host = Some("www.example.test".into());
        })
    };
    assert_eq!(
        check(https(HttpVersion::Http1, false), srv.addr).await,
        CheckResult::UP
    );
    assert_eq!(*srv.last.lock().unwrap(), "www.example.test|HTTP/1.1");
    assert_eq!(
        check(https(HttpVersion::Http2, false), srv.addr).await,
        CheckResult::UP
    );
    assert_eq!(*srv.last.lock().unwrap(), "www.example.test|HTTP/2.0");
    // A self-signed certificate does not verify.
    match down(check(https(HttpVersion::Http1, true), srv.addr).await) {
        Failure::Tls { reason } => assert!(reason.contains("UnknownIssuer"), "{reason}"),
        f => panic!("{f:?}"),
    }
    // TLS against a plain-text server fails in the handshake.
    let plain = http_server(false).await;
    assert!(matches!(
        down(check(https(HttpVersion::Http1, false), plain.addr).await),
        Failure::Tls { .. }
    ));
    assert_eq!(srv.hits.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------- UDP

/// Answers every datagram with `reply(datagram)`, or not at all for `None`.
async fn udp_server(reply: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static) -> SocketAddr {
    let s = UdpSocket::bind((LOCAL, 0)).await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            if let Some(r) = reply(&buf[..n]) {
                let _ = s.send_to(&r, from).await;
            }
        }
    });
    addr
}

async fn closed_udp_port() -> SocketAddr {
    UdpSocket::bind((LOCAL, 0))
        .await
        .unwrap()
        .local_addr()
        .unwrap()
}

fn udp(payload: &[u8], reply: Option<ReplyMatch>) -> CheckKind {
    CheckKind::Udp(UdpSpec {
        payload: payload.to_vec(),
        reply,
    })
}

#[tokio::test]
async fn udp_reply_mismatch_icmp_and_silence() {
    let echo = udp_server(|d| Some(d.to_vec())).await;
    let ok_re = Some(ReplyMatch::Regex(Pattern(
        regex::bytes::Regex::new("^ping").unwrap(),
    )));
    assert_eq!(
        check(udp(b"ping", ok_re.clone()), echo).await,
        CheckResult::UP
    );
    assert_eq!(
        check(udp(b"ping", Some(ReplyMatch::Prefix(b"pi".to_vec()))), echo).await,
        CheckResult::UP
    );
    assert_eq!(
        down(check(udp(b"pong", ok_re.clone()), echo).await),
        Failure::ReplyMismatch { got: "pong".into() }
    );

    // Nothing listens: the ICMP port unreachable means down, reply or not.
    let closed = closed_udp_port().await;
    assert_eq!(
        down(check(udp(b"ping", None), closed).await),
        Failure::IcmpUnreachable
    );
    assert_eq!(
        down(check(udp(b"ping", ok_re.clone()), closed).await),
        Failure::IcmpUnreachable
    );

    // A silent server: up without a required reply, down (no reply) with one.
    let silent = udp_server(|_| None).await;
    assert_eq!(check(udp(b"ping", None), silent).await, CheckResult::UP);
    assert_eq!(
        down(check(udp(b"ping", Some(ReplyMatch::Any)), silent).await),
        Failure::NoReply
    );
}

// ---------------------------------------------------------------- DNS

#[derive(Clone, Copy, PartialEq)]
enum DnsMode {
    Answer([u8; 4]),
    NxDomain,
    Silent,
}

fn dns_answer(query: &[u8], mode: DnsMode) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let mut r = Message::new();
    r.set_id(q.id()).set_message_type(MessageType::Response);
    r.add_queries(q.queries().to_vec());
    match mode {
        DnsMode::Silent => return None,
        DnsMode::NxDomain => {
            r.set_response_code(ResponseCode::NXDomain);
        }
        DnsMode::Answer(a) => {
            r.add_answer(Record::from_rdata(
                q.queries()[0].name().clone(),
                60,
                RData::A(A::from(Ipv4Addr::from(a))),
            ));
        }
    }
    r.to_vec().ok()
}

/// A DNS server on UDP and TCP (same port number) whose mode the test sets.
async fn dns_server(mode: Arc<Mutex<DnsMode>>) -> SocketAddr {
    let tcp = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let udp = UdpSocket::bind(addr).await.unwrap();
    let m = mode.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            let mode = *m.lock().unwrap();
            if let Some(r) = dns_answer(&buf[..n], mode) {
                let _ = udp.send_to(&r, from).await;
            }
        }
    });
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            let mode = *mode.lock().unwrap();
            tokio::spawn(async move {
                let len = s.read_u16().await.ok()?;
                let mut q = vec![0u8; len.into()];
                s.read_exact(&mut q).await.ok()?;
                if let Some(r) = dns_answer(&q, mode) {
                    s.write_u16(r.len() as u16).await.ok()?;
                    s.write_all(&r).await.ok()?;
                }
                // Hold the connection open while silent, as a hung server would.
                tokio::time::sleep(Duration::from_secs(2)).await;
                Some(())
            });
        }
    });
    addr
}

fn dns(transport: DnsTransport, answers: &[&str]) -> CheckKind {
    CheckKind::Dns(DnsSpec {
        name: Name::from_str("www.abc.local.").unwrap(),
        record_type: RecordType::A,
        transport,
        rcode: ResponseCode::NoError,
        expected_answers: answers.iter().map(|a| normalise_answer(a)).collect(),
    })
}

#[tokio::test]
async fn dns_over_udp_and_tcp() {
    let mode = Arc::new(Mutex::new(DnsMode::Answer([1, 2, 3, 4])));
    let addr = dns_server(mode.clone()).await;
    for transport in [DnsTransport::Udp, DnsTransport::Tcp] {
        *mode.lock().unwrap() = DnsMode::Answer([1, 2, 3, 4]);
        assert_eq!(check(dns(transport, &[]), addr).await, CheckResult::UP);
        assert_eq!(
            check(dns(transport, &["1.2.3.4"]), addr).await,
            CheckResult::UP
        );
        *mode.lock().unwrap() = DnsMode::Answer([5, 6, 7, 8]);
        assert_eq!(
            down(check(dns(transport, &["1.2.3.4"]), addr).await),
            Failure::AnswerMissing {
                value: "1.2.3.4".into()
            }
        );
        *mode.lock().unwrap() = DnsMode::NxDomain;
        assert_eq!(
            down(check(dns(transport, &[]), addr).await),
            Failure::Rcode {
                got: "NXDOMAIN".into(),
                want: "NOERROR".into()
            }
        );
        *mode.lock().unwrap() = DnsMode::Silent;
        assert_eq!(
            down(check(dns(transport, &[]), addr).await),
            Failure::Timeout
        );
        *mode.lock().unwrap() = DnsMode::Answer([1, 2, 3, 4]);
        assert_eq!(
            check(dns(transport, &["1.2.3.4"]), addr).await,
            CheckResult::UP
        );
    }
    assert_eq!(
        down(check(dns(DnsTransport::Udp, &[]), closed_udp_port().await).await),
        Failure::IcmpUnreachable
    );
    assert_eq!(
        down(check(dns(DnsTransport::Tcp, &[]), closed_port().await).await),
        Failure::Refused
    );
}

// ---------------------------------------------------------------- exec

fn exec(script: &str, dynamic_weight: bool, user: Option<&str>) -> CheckKind {
    CheckKind::Exec(ExecSpec {
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        user: user.map(str::to_string),
        dynamic_weight,
    })
}

#[tokio::test]
async fn exec_exit_codes_environment_and_user() {
    let rs: SocketAddr = "192.0.2.7:8080".parse().unwrap();
    let mut p = probe(rs);
    p.env.vip = Some("198.51.100.1".parse().unwrap());
    p.env.vport = 80;
    let run = |kind: CheckKind| async move { Checker::build(&kind).unwrap().check(p).await };
    assert_eq!(run(exec("exit 0", false, None)).await, CheckResult::UP);
    assert_eq!(
        down(run(exec("exit 1", false, None)).await),
        Failure::ExitCode { code: 1 }
    );
    assert_eq!(
        run(exec("exit 12", true, None)).await,
        CheckResult::Up { weight: Some(10) }
    );
    let env_ok = r#"test "$LB_RS_ADDRESS" = 192.0.2.7 && test "$LB_RS_PORT" = 8080 && test "$LB_VIP" = 198.51.100.1 && test "$LB_VPORT" = 80"#;
    assert_eq!(run(exec(env_ok, false, None)).await, CheckResult::UP);
    assert_eq!(
        run(exec(r#"test "$(id -u)" = 65534"#, false, Some("nobody"))).await,
        CheckResult::UP
    );
    assert!(matches!(
        down(
            run(CheckKind::Exec(ExecSpec {
                command: vec!["/nonexistent/check".into()],
                user: None,
                dynamic_weight: false
            }))
            .await
        ),
        Failure::Spawn { .. }
    ));
    assert_eq!(
        down(run(exec("kill -9 $$", false, None)).await),
        Failure::Signal { signal: 9 }
    );
}

/// Whether a process is gone (or a zombie nobody reaped yet: it runs no more).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn exec_hanging_is_killed_with_its_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    // The shell starts a background child, writes both pids, then hangs.
    let script = format!(
        "sleep 30 & echo $$ $! > {p}.tmp; mv {p}.tmp {p}; wait",
        p = pids.display()
    );
    let started = tokio::time::Instant::now();
    let r = Checker::build(&exec(&script, false, None))
        .unwrap()
        .check(probe("127.0.0.1:1".parse().unwrap()))
        .await;
    let took = started.elapsed();
    assert_eq!(down(r), Failure::Timeout);
    assert!(
        took >= TIMEOUT && took < TIMEOUT + Duration::from_millis(1500),
        "{took:?}"
    );
    let text = std::fs::read_to_string(&pids).unwrap();
    let pids: Vec<i32> = text
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    // SIGKILL is delivered at once, but the orphaned child is reaped by init:
    // poll its state, bounded.
    for _ in 0..100 {
        if pids.iter().all(|&p| gone(p)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for p in pids {
        assert!(gone(p), "process {p} of the check's group still runs");
    }
}

// ---------------------------------------------------------------- gRPC

async fn grpc_server() -> (SocketAddr, tonic_health::server::HealthReporter) {
    let (reporter, service) = tonic_health::server::health_reporter();
    let l = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    (addr, reporter)
}

fn grpc(service: &str) -> CheckKind {
    CheckKind::Grpc(GrpcSpec {
        service: service.into(),
        tls: false,
        tls_verify: false,
        authority: None,
    })
}

#[tokio::test]
async fn grpc_serving_not_serving_unknown_refused_timeout() {
    use tonic_health::ServingStatus;
    let (addr, reporter) = grpc_server().await;
    reporter
        .set_service_status("lb.test", ServingStatus::Serving)
        .await;
    assert_eq!(check(grpc(""), addr).await, CheckResult::UP);
    assert_eq!(check(grpc("lb.test"), addr).await, CheckResult::UP);
    reporter
        .set_service_status("lb.test", ServingStatus::NotServing)
        .await;
    assert_eq!(
        down(check(grpc("lb.test"), addr).await),
        Failure::NotServing {
            status: "NOT_SERVING".into()
        }
    );
    assert!(matches!(
        down(check(grpc("other"), addr).await),
        Failure::Grpc { code, .. } if code == "NotFound"
    ));
    reporter
        .set_service_status("lb.test", ServingStatus::Serving)
        .await;
    assert_eq!(check(grpc("lb.test"), addr).await, CheckResult::UP);
    assert_eq!(
        down(check(grpc(""), closed_port().await).await),
        Failure::Refused
    );

    // Accepts TCP but never speaks HTTP/2.
    let mute = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let mute_addr = mute.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((s, _)) = mute.accept().await {
            held.push(s);
        }
    });
    assert_eq!(down(check(grpc(""), mute_addr).await), Failure::Timeout);
}
