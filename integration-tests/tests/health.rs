//! Health checks against real servers in a netns lab: a director host runs
//! the checkers; a real-server host runs python3 http.server, nginx (HTTPS
//! and HTTP/2 with a self-signed certificate), dnsmasq, a socat UDP echo and
//! a tonic gRPC health server. Each kind sees up, down (the server killed),
//! slow (the server stopped with SIGSTOP: the kernel still accepts, nobody
//! answers: timeout; for TCP, a blackhole route in the real server's
//! namespace: the handshake never completes), a wrong answer, and recovery
//! (SIGCONT, the route removed, or started again). The runner's rise and
//! fall are counted against the server's own request log.
//!
//! Needs root (network namespaces). Traffic stays inside the lab.

use std::{
    net::SocketAddr,
    str::FromStr,
    time::{Duration, Instant},
};

use anyhow::Result;
use lb_agent::health::{
    check::{Checker, Probe, exec::ExecEnv},
    config::{
        CheckKind, CheckSpec, DnsSpec, DnsTransport, GrpcSpec, HttpSpec, HttpVersion, Pattern,
        QuorumSpec, RealServerSpec, ReplyMatch, ServiceSpec, Timing, UdpSpec, normalise_answer,
        parse_rcode,
    },
    outcome::{CheckResult, Failure},
    runner::{HealthEvent, RunnerSettings, spawn},
    state::Transition,
};
use lb_lab::{Host, Lab, Proc, scaled, wait_for};
use nix::sys::signal::Signal;

const DIRECTOR: &str = "10.0.0.1";
const RS: &str = "10.0.0.2";

fn timeout() -> Duration {
    scaled(Duration::from_millis(800))
}

fn lab(name: &str) -> Result<(Lab, Host, Host)> {
    let lab = Lab::new(name)?;
    let director = lab.host("director", &[&format!("{DIRECTOR}/24")])?;
    let rs = lab.host("rs", &[&format!("{RS}/24")])?;
    Ok((lab, director, rs))
}

fn target(port: u16) -> SocketAddr {
    SocketAddr::new(RS.parse().unwrap(), port)
}

/// One check attempt run from the director host.
fn check(director: &Host, kind: &CheckKind, port: u16) -> CheckResult {
    timed_check(director, kind, port).0
}

/// One check attempt run from the director host, and how long the attempt
/// itself took (the runtime's start left out).
fn timed_check(director: &Host, kind: &CheckKind, port: u16) -> (CheckResult, Duration) {
    let checker = Checker::build(kind).unwrap();
    let probe = Probe {
        target: target(port),
        bind: Some(DIRECTOR.parse().unwrap()),
        timeout: timeout(),
        env: ExecEnv {
            real_server: target(port),
            vip: None,
            vport: port,
        },
    };
    director
        .in_netns(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let t0 = Instant::now();
                    let r = checker.check(probe).await;
                    (r, t0.elapsed())
                })
        })
        .unwrap()
}

fn down(r: CheckResult) -> Failure {
    match r {
        CheckResult::Down(f) => f,
        up => panic!("expected down, got {up:?}"),
    }
}

/// Waits (bounded) until a check passes: the server has started.
fn wait_up(director: &Host, kind: &CheckKind, port: u16) {
    let mut last = None;
    wait_for(
        || {
            let r = check(director, kind, port);
            let up = r == CheckResult::UP;
            last = Some(r);
            up
        },
        scaled(Duration::from_secs(10)),
    )
    .unwrap_or_else(|e| panic!("server on port {port} never came up: {e} (last: {last:?})"));
}

fn http_server(rs: &Host, lab: &Lab) -> Result<Proc> {
    let dir = lab.dir().join("www");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("index.html"), "hello from rs\n")?;
    Ok(rs.spawn([
        "python3",
        "-u",
        "-m",
        "http.server",
        "8000",
        "--bind",
        RS,
        "--directory",
        dir.to_str().unwrap(),
    ])?)
}

fn http(path: &str, body_regex: Option<&str>) -> CheckKind {
    CheckKind::Http(HttpSpec {
        path: path.into(),
        host: Some("www.example.test".into()),
        sni: None,
        tls: false,
        tls_verify: false,
        version: HttpVersion::Http1,
        expected_status: vec![],
        body: body_regex
            .map(|r| lb_agent::health::config::BodyMatch::Regex(Pattern(regex_lite(r)))),
    })
}

fn regex_lite(r: &str) -> regex::bytes::Regex {
    regex::bytes::Regex::new(r).unwrap()
}

#[test]
fn tcp_and_http_against_python_http_server() -> Result<()> {
    let (lab, director, rs) = lab("health-http")?;
    let mut srv = http_server(&rs, &lab)?;
    let ok = http("/", Some("^hello from rs"));
    wait_up(&director, &ok, 8000);
    assert_eq!(check(&director, &CheckKind::Tcp, 8000), CheckResult::UP);

    // Wrong answers.
    assert_eq!(
        down(check(&director, &http("/missing", None), 8000)),
        Failure::Status {
            got: 404,
            want: "200..299".into()
        }
    );
    assert_eq!(
        down(check(&director, &http("/", Some("^goodbye")), 8000)),
        Failure::BodyMismatch {
            pattern: "^goodbye".into()
        }
    );

    // Slow: stopped, the kernel completes the handshake but nobody answers.
    srv.signal(Signal::SIGSTOP);
    let t0 = Instant::now();
    assert_eq!(down(check(&director, &ok, 8000)), Failure::Timeout);
    assert!(t0.elapsed() >= timeout());
    srv.signal(Signal::SIGCONT);
    assert_eq!(check(&director, &ok, 8000), CheckResult::UP);

    // Down: killed, refused; recovery: started again.
    srv.kill();
    assert_eq!(down(check(&director, &ok, 8000)), Failure::Refused);
    assert_eq!(
        down(check(&director, &CheckKind::Tcp, 8000)),
        Failure::Refused
    );
    let _srv = http_server(&rs, &lab)?;
    wait_up(&director, &ok, 8000);
    Ok(())
}

// In: a TCP check of python's http.server while the real server's namespace
// holds a blackhole route to the director: the SYN arrives, no SYN-ACK comes
// back. Out: down with reason Timeout, at the configured timeout (not the
// backstop's, one second later); up again once the route is removed.
#[test]
fn tcp_connect_that_never_completes_times_out() -> Result<()> {
    let (lab, director, rs) = lab("health-tcp-slow")?;
    let _srv = http_server(&rs, &lab)?;
    wait_up(&director, &CheckKind::Tcp, 8000);

    let blackhole = ["route", "add", "blackhole", &format!("{DIRECTOR}/32")];
    rs.ip(blackhole)?;
    let (result, took) = timed_check(&director, &CheckKind::Tcp, 8000);
    assert_eq!(down(result), Failure::Timeout);
    assert!(
        took >= timeout() && took < timeout() + scaled(Duration::from_millis(900)),
        "timed out after {took:?}, timeout {:?}",
        timeout()
    );
    // An HTTP check fails the same way: its connect never completes.
    assert_eq!(
        down(check(&director, &http("/", None), 8000)),
        Failure::Timeout
    );

    rs.ip(["route", "del", "blackhole", &format!("{DIRECTOR}/32")])?;
    assert_eq!(check(&director, &CheckKind::Tcp, 8000), CheckResult::UP);
    Ok(())
}

/// Names the nginx certificate is valid for (it is self-signed).
const TLS_NAMES: [&str; 3] = ["a.test", "b.test", "h2.test"];

/// Ports of the nginx real server.
const HTTPS: u16 = 8443;
const H2_TLS: u16 = 9443;
const H2C: u16 = 8081;

/// Writes nginx's configuration, prefix and self-signed certificate into
/// the lab directory; returns the configuration file. Servers:
/// - `HTTPS` (TLS, HTTP/1.1): `a.test` (default) and `b.test` answer with
///   their name, the SNI received and the Host header;
/// - `H2_TLS` (TLS, ALPN h2) and `H2C` (cleartext HTTP/2 with prior
///   knowledge) answer with the protocol nginx saw;
/// - on each, `/missing` answers 503; the access log records the protocol.
fn nginx_conf(lab: &Lab) -> Result<std::path::PathBuf> {
    let d = lab.dir().join("nginx");
    std::fs::create_dir_all(d.join("tmp"))?;
    let cert = rcgen::generate_simple_self_signed(TLS_NAMES.map(String::from).to_vec())?;
    std::fs::write(d.join("cert.pem"), cert.cert.pem())?;
    std::fs::write(d.join("key.pem"), cert.signing_key.serialize_pem())?;
    let d = d.display();
    let conf = format!(
        r#"daemon off; master_process off; worker_processes 1;
pid {d}/nginx.pid; error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
  log_format proto '$server_port $host $request_uri $server_protocol $status';
  access_log {d}/access.log proto;
  client_body_temp_path {d}/tmp/body; proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi; uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;
  default_type text/plain;
  server {{ listen {RS}:{HTTPS} ssl default_server; server_name a.test;
    location / {{ return 200 "a sni=$ssl_server_name host=$host\n"; }}
    location /missing {{ return 503 "gone\n"; }} }}
  server {{ listen {RS}:{HTTPS} ssl; server_name b.test;
    location / {{ return 200 "b sni=$ssl_server_name host=$host\n"; }} }}
  server {{ listen {RS}:{H2_TLS} ssl http2; server_name h2.test;
    location / {{ return 200 "h2 $server_protocol\n"; }}
    location /missing {{ return 503 "gone\n"; }} }}
  server {{ listen {RS}:{H2C} http2;
    location / {{ return 200 "h2c $server_protocol\n"; }}
    location /missing {{ return 503 "gone\n"; }} }}
}}
"#
    );
    let path = lab.dir().join("nginx").join("nginx.conf");
    std::fs::write(&path, conf)?;
    Ok(path)
}

fn nginx(rs: &Host, conf: &std::path::Path) -> Result<Proc> {
    let prefix = conf.parent().unwrap();
    Ok(rs.spawn([
        "nginx".as_ref(),
        "-p".as_ref(),
        prefix.as_os_str(),
        "-e".as_ref(),
        prefix.join("error.log").as_os_str(),
        "-c".as_ref(),
        conf.as_os_str(),
    ])?)
}

fn nginx_access_log(lab: &Lab) -> String {
    std::fs::read_to_string(lab.dir().join("nginx").join("access.log")).unwrap_or_default()
}

struct Https<'a> {
    path: &'a str,
    host: Option<&'a str>,
    sni: Option<&'a str>,
    verify: bool,
    version: HttpVersion,
    body: Option<&'a str>,
}

impl Https<'_> {
    fn kind(&self, tls: bool) -> CheckKind {
        CheckKind::Http(HttpSpec {
            path: self.path.into(),
            host: self.host.map(str::to_string),
            sni: self.sni.map(str::to_string),
            tls,
            tls_verify: self.verify,
            version: self.version,
            expected_status: vec![],
            body: self
                .body
                .map(|r| lb_agent::health::config::BodyMatch::Regex(Pattern(regex_lite(r)))),
        })
    }
}

const HTTPS_A: Https<'static> = Https {
    path: "/",
    host: Some("a.test"),
    sni: None,
    verify: false,
    version: HttpVersion::Http1,
    body: Some("^a "),
};

// In: HTTPS (HTTP/1.1) checks of nginx with a self-signed certificate.
// Out: up without verification; down with it, the reason naming the
// certificate's problem; the SNI and the Host header reach nginx as set
// (two server blocks answer differently); a wrong status and a body that
// does not match are down; slow (SIGSTOP: the TLS handshake gets no answer)
// times out; down (killed: refused); recovery (started again).
#[test]
fn https_against_nginx() -> Result<()> {
    let (lab, director, rs) = lab("health-https")?;
    let conf = nginx_conf(&lab)?;
    let mut srv = nginx(&rs, &conf)?;
    let ok = HTTPS_A.kind(true);
    wait_up(&director, &ok, HTTPS);

    let verified = Https {
        verify: true,
        ..HTTPS_A
    };
    match down(check(&director, &verified.kind(true), HTTPS)) {
        Failure::Tls { reason } => assert!(
            reason.contains("invalid peer certificate") && reason.contains("UnknownIssuer"),
            "{reason}"
        ),
        f => panic!("expected a TLS failure, got {f:?}"),
    }

    // Host selects the server block; the SNI is the Host unless set apart.
    let b = Https {
        host: Some("b.test"),
        body: Some(r"^b sni=b\.test host=b\.test\n$"),
        ..HTTPS_A
    };
    assert_eq!(check(&director, &b.kind(true), HTTPS), CheckResult::UP);
    let b_via_a = Https {
        host: Some("b.test"),
        sni: Some("a.test"),
        body: Some(r"^b sni=a\.test host=b\.test\n$"),
        ..HTTPS_A
    };
    assert_eq!(
        check(&director, &b_via_a.kind(true), HTTPS),
        CheckResult::UP
    );
    // No Host set: the address goes in Host and no SNI is sent (an IP
    // address is not a server name): nginx's default server answers.
    let by_addr_body = format!(r"^a sni= host={}\n$", regex::escape(RS));
    let by_addr = Https {
        host: None,
        body: Some(&by_addr_body),
        ..HTTPS_A
    };
    assert_eq!(
        check(&director, &by_addr.kind(true), HTTPS),
        CheckResult::UP
    );

    // Wrong answers.
    let missing = Https {
        path: "/missing",
        body: None,
        ..HTTPS_A
    };
    assert_eq!(
        down(check(&director, &missing.kind(true), HTTPS)),
        Failure::Status {
            got: 503,
            want: "200..299".into()
        }
    );
    let other_body = Https {
        body: Some("^b "),
        ..HTTPS_A
    };
    assert_eq!(
        down(check(&director, &other_body.kind(true), HTTPS)),
        Failure::BodyMismatch {
            pattern: "^b ".into()
        }
    );
    // Plain HTTP to the TLS port: nginx answers 400.
    assert!(matches!(
        down(check(&director, &HTTPS_A.kind(false), HTTPS)),
        Failure::Status { got: 400, .. }
    ));

    // Slow: the kernel accepts, the ClientHello gets no answer.
    srv.signal(Signal::SIGSTOP);
    let (result, took) = timed_check(&director, &ok, HTTPS);
    srv.signal(Signal::SIGCONT);
    assert_eq!(down(result), Failure::Timeout);
    assert!(took >= timeout(), "timed out after {took:?}");
    assert_eq!(check(&director, &ok, HTTPS), CheckResult::UP);

    // Down, then recovery.
    srv.kill();
    assert_eq!(down(check(&director, &ok, HTTPS)), Failure::Refused);
    let _srv = nginx(&rs, &conf)?;
    wait_up(&director, &ok, HTTPS);
    Ok(())
}

const H2: Https<'static> = Https {
    path: "/h2-probe",
    host: Some("h2.test"),
    sni: None,
    verify: false,
    version: HttpVersion::Http2,
    body: Some(r"^h2c? HTTP/2\.0\n$"),
};

/// Access-log lines (`port host uri protocol status`) of requests to `uri` on `port`.
fn logged(lab: &Lab, port: u16, uri: &str) -> Vec<String> {
    nginx_access_log(lab)
        .lines()
        .filter(|l| l.starts_with(&format!("{port} ")) && l.contains(&format!(" {uri} ")))
        .map(str::to_string)
        .collect()
}

// In: HTTP/2 checks of nginx over TLS (ALPN h2) and in cleartext with prior
// knowledge (h2c). Out: up, and nginx's access log and the body both say
// HTTP/2.0; a wrong status is down; an HTTP/2 check of a port that only
// speaks HTTP/1.1 fails the TLS handshake (no common ALPN protocol); slow
// (SIGSTOP) times out; down (killed: refused); recovery.
#[test]
fn http2_against_nginx() -> Result<()> {
    let (lab, director, rs) = lab("health-h2")?;
    let conf = nginx_conf(&lab)?;
    let mut srv = nginx(&rs, &conf)?;
    let (h2, h2c) = (H2.kind(true), H2.kind(false));
    wait_up(&director, &h2, H2_TLS);
    assert_eq!(check(&director, &h2c, H2C), CheckResult::UP);
    for port in [H2_TLS, H2C] {
        let lines = logged(&lab, port, "/h2-probe");
        assert!(!lines.is_empty(), "no request logged on {port}");
        for l in &lines {
            assert!(l.ends_with(" HTTP/2.0 200"), "port {port}: {l}");
        }
    }

    let missing = Https {
        path: "/missing",
        body: None,
        ..H2
    };
    for (tls, port) in [(true, H2_TLS), (false, H2C)] {
        assert_eq!(
            down(check(&director, &missing.kind(tls), port)),
            Failure::Status {
                got: 503,
                want: "200..299".into()
            }
        );
    }
    assert!(
        logged(&lab, H2C, "/missing")
            .iter()
            .all(|l| l.ends_with(" HTTP/2.0 503"))
    );
    match down(check(&director, &h2, HTTPS)) {
        Failure::Tls { reason } => {
            assert!(reason.contains("NoApplicationProtocol"), "{reason}")
        }
        f => panic!("expected a TLS failure, got {f:?}"),
    }

    srv.signal(Signal::SIGSTOP);
    let slow = [check(&director, &h2, H2_TLS), check(&director, &h2c, H2C)];
    srv.signal(Signal::SIGCONT);
    assert_eq!(slow.map(down), [Failure::Timeout, Failure::Timeout]);
    assert_eq!(check(&director, &h2, H2_TLS), CheckResult::UP);

    srv.kill();
    assert_eq!(down(check(&director, &h2, H2_TLS)), Failure::Refused);
    assert_eq!(down(check(&director, &h2c, H2C)), Failure::Refused);
    let _srv = nginx(&rs, &conf)?;
    wait_up(&director, &h2, H2_TLS);
    assert_eq!(check(&director, &h2c, H2C), CheckResult::UP);
    Ok(())
}

fn dns(name: &str, answers: &[&str], transport: DnsTransport) -> CheckKind {
    CheckKind::Dns(DnsSpec {
        name: hickory_name(name),
        record_type: hickory_proto_a(),
        transport,
        rcode: parse_rcode("NOERROR").unwrap(),
        expected_answers: answers.iter().map(|a| normalise_answer(a)).collect(),
    })
}

fn hickory_name(name: &str) -> hickory_proto::rr::Name {
    hickory_proto::rr::Name::from_str(name).unwrap()
}

fn hickory_proto_a() -> hickory_proto::rr::RecordType {
    hickory_proto::rr::RecordType::A
}

fn dnsmasq(rs: &Host) -> Result<Proc> {
    Ok(rs.spawn([
        "dnsmasq",
        "--no-daemon",
        "--port",
        "53",
        "--listen-address",
        RS,
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--pid-file=",
        "--user=root",
        "--address=/www.abc.local/1.2.3.4",
    ])?)
}

// Seed 000's check: an A query for www.abc.local must get 1.2.3.4.
#[test]
fn dns_against_dnsmasq() -> Result<()> {
    let (_lab, director, rs) = lab("health-dns")?;
    let mut srv = dnsmasq(&rs)?;
    for transport in [DnsTransport::Udp, DnsTransport::Tcp] {
        let ok = dns("www.abc.local.", &["1.2.3.4"], transport);
        wait_up(&director, &ok, 53);
        assert_eq!(
            down(check(
                &director,
                &dns("www.abc.local.", &["5.6.7.8"], transport),
                53
            )),
            Failure::AnswerMissing {
                value: "5.6.7.8".into()
            }
        );
        // No upstream for other names: dnsmasq refuses them.
        match down(check(&director, &dns("other.test.", &[], transport), 53)) {
            Failure::Rcode { got, want } => {
                assert_eq!(want, "NOERROR");
                assert_ne!(got, "NOERROR");
            }
            f => panic!("{f:?}"),
        }
    }
    let udp = dns("www.abc.local.", &["1.2.3.4"], DnsTransport::Udp);
    let tcp = dns("www.abc.local.", &["1.2.3.4"], DnsTransport::Tcp);
    srv.signal(Signal::SIGSTOP);
    assert_eq!(down(check(&director, &udp, 53)), Failure::Timeout);
    srv.signal(Signal::SIGCONT);
    assert_eq!(check(&director, &udp, 53), CheckResult::UP);
    srv.kill();
    assert_eq!(down(check(&director, &udp, 53)), Failure::IcmpUnreachable);
    assert_eq!(down(check(&director, &tcp, 53)), Failure::Refused);
    let _srv = dnsmasq(&rs)?;
    wait_up(&director, &udp, 53);
    assert_eq!(check(&director, &tcp, 53), CheckResult::UP);
    Ok(())
}

fn socat_echo(rs: &Host) -> Result<Proc> {
    Ok(rs.spawn([
        "socat",
        &format!("UDP4-RECVFROM:9000,bind={RS},fork,reuseaddr"),
        "PIPE",
    ])?)
}

fn udp(payload: &str, reply_regex: Option<&str>) -> CheckKind {
    CheckKind::Udp(UdpSpec {
        payload: payload.as_bytes().to_vec(),
        reply: Some(match reply_regex {
            Some(r) => ReplyMatch::Regex(Pattern(regex_lite(r))),
            None => ReplyMatch::Any,
        }),
    })
}

#[test]
fn udp_against_socat_echo() -> Result<()> {
    let (_lab, director, rs) = lab("health-udp")?;
    let mut srv = socat_echo(&rs)?;
    let ok = udp("ping", Some("^ping$"));
    wait_up(&director, &ok, 9000);
    assert_eq!(
        down(check(&director, &udp("pong", Some("^ping$")), 9000)),
        Failure::ReplyMismatch { got: "pong".into() }
    );
    srv.signal(Signal::SIGSTOP);
    assert_eq!(down(check(&director, &ok, 9000)), Failure::NoReply);
    srv.signal(Signal::SIGCONT);
    wait_up(&director, &ok, 9000);
    srv.kill();
    assert_eq!(down(check(&director, &ok, 9000)), Failure::IcmpUnreachable);
    // Without a required reply, the ICMP port unreachable alone means down.
    let no_reply = CheckKind::Udp(UdpSpec {
        payload: b"ping".to_vec(),
        reply: None,
    });
    assert_eq!(
        down(check(&director, &no_reply, 9000)),
        Failure::IcmpUnreachable
    );
    let _srv = socat_echo(&rs)?;
    wait_up(&director, &ok, 9000);
    assert_eq!(check(&director, &no_reply, 9000), CheckResult::UP);
    Ok(())
}

/// A tonic health server in the real-server host, on its own thread; it
/// stops when `stop` is dropped.
struct GrpcServer {
    reporter: tonic_health::server::HealthReporter,
    rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GrpcServer {
    fn start(rs: &Host) -> GrpcServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (reporter, service) = tonic_health::server::health_reporter();
        // The listening socket is opened inside the host; the server runs on our runtime.
        let listener = rs
            .in_netns(|| std::net::TcpListener::bind((RS, 50051)).unwrap())
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let handle = rt.handle().clone();
        let thread = std::thread::spawn(move || {
            handle.block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                let _ = tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::TcpListenerStream::new(l),
                        async {
                            let _ = stop_rx.await;
                        },
                    )
                    .await;
            })
        });
        GrpcServer {
            reporter,
            rt,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn set(&self, service: &str, status: tonic_health::ServingStatus) {
        self.rt
            .block_on(self.reporter.set_service_status(service, status));
    }

    fn stop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn grpc(service: &str) -> CheckKind {
    CheckKind::Grpc(GrpcSpec {
        service: service.into(),
        tls: false,
        tls_verify: false,
        authority: None,
    })
}

#[test]
fn grpc_against_tonic_health_server() -> Result<()> {
    use tonic_health::ServingStatus;
    let (_lab, director, rs) = lab("health-grpc")?;
    let mut srv = GrpcServer::start(&rs);
    srv.set("lb.web", ServingStatus::Serving);
    let ok = grpc("lb.web");
    wait_up(&director, &ok, 50051);
    srv.set("lb.web", ServingStatus::NotServing);
    assert_eq!(
        down(check(&director, &ok, 50051)),
        Failure::NotServing {
            status: "NOT_SERVING".into()
        }
    );
    assert!(matches!(
        down(check(&director, &grpc("lb.unknown"), 50051)),
        Failure::Grpc { code, .. } if code == "NotFound"
    ));
    srv.set("lb.web", ServingStatus::Serving);
    assert_eq!(check(&director, &ok, 50051), CheckResult::UP);
    srv.stop();
    assert_eq!(down(check(&director, &ok, 50051)), Failure::Refused);
    // Slow: something accepts on the port but never speaks HTTP/2.
    let _mute = rs.spawn([
        "socat",
        &format!("TCP4-LISTEN:50051,bind={RS},reuseaddr,fork"),
        "EXEC:sleep 30",
    ])?;
    wait_for(
        || check(&director, &CheckKind::Tcp, 50051) == CheckResult::UP,
        scaled(Duration::from_secs(10)),
    )?;
    assert_eq!(down(check(&director, &ok, 50051)), Failure::Timeout);
    Ok(())
}

// In: the runner checks python's http.server with rise 3 and fall 2 every
// 300 ms. Out: the Up transition comes when the server has logged exactly 3
// requests; after SIGSTOP the Down transition comes with reason Timeout.
async fn next_transition(rx: &mut tokio::sync::mpsc::Receiver<HealthEvent>) -> Transition {
    let deadline = tokio::time::Instant::now() + scaled(Duration::from_secs(10));
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(HealthEvent::Transition { transition, .. })) => return transition,
            Ok(Some(_)) => {}
            _ => panic!("no transition in time"),
        }
    }
}

#[test]
fn runner_rise_and_fall_counted_against_the_server_log() -> Result<()> {
    let (lab, director, rs) = lab("health-rise")?;
    let srv = http_server(&rs, &lab)?;
    wait_for(
        || check(&director, &CheckKind::Tcp, 8000) == CheckResult::UP,
        scaled(Duration::from_secs(10)),
    )?;
    let log_path = srv.log_path().to_path_buf();
    let requests = || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET /health-probe"))
            .count()
    };
    let spec = ServiceSpec {
        name: "web".into(),
        vip: None,
        port: 8000,
        inhibit_on_failure: false,
        slow_start: None,
        sorry: None,
        quorum: QuorumSpec::default(),
        real_servers: vec![RealServerSpec {
            name: "rs".into(),
            addr: target(8000),
            weight: 1,
            drain: false,
            check: CheckSpec {
                // /health-probe answers 404: expect 404 so it is "up" and logged.
                kind: CheckKind::Http(HttpSpec {
                    path: "/health-probe".into(),
                    host: None,
                    sni: None,
                    tls: false,
                    tls_verify: false,
                    version: HttpVersion::Http1,
                    expected_status: vec![404],
                    body: None,
                }),
                timing: Timing {
                    interval: scaled(Duration::from_millis(300)),
                    timeout: scaled(Duration::from_millis(250)),
                    rise: 3,
                    fall: 2,
                    ..Timing::default()
                },
                ..CheckSpec::default()
            },
        }],
    };
    let mut srv = srv;
    let (up_logged, down_failure) = director.in_netns(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, mut rx) = tokio::sync::mpsc::channel(64);
            let (h, _task) = spawn(
                RunnerSettings {
                    max_concurrent: 4,
                    seed: 3,
                },
                tx,
            );
            h.apply(vec![spec]).await.unwrap();
            let t = next_transition(&mut rx).await;
            assert_eq!(t, Transition::Up { weight: None });
            let up_logged = requests();
            srv.signal(Signal::SIGSTOP);
            let t = next_transition(&mut rx).await;
            srv.signal(Signal::SIGCONT);
            (up_logged, t)
        })
    })?;
    assert_eq!(up_logged, 3, "up after exactly rise = 3 answered checks");
    assert_eq!(
        down_failure,
        Transition::Down {
            reason: Failure::Timeout
        }
    );
    Ok(())
}

fn exec(script: &str, dynamic_weight: bool) -> CheckKind {
    CheckKind::Exec(lb_agent::health::config::ExecSpec {
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        user: None,
        dynamic_weight,
    })
}

// A MISC_CHECK as operators write them: curl the real server named by the
// environment. Up (exit 0), wrong answer (curl -f exits 22 on a 404: down),
// dynamic weight (exit 2 + weight), slow (server stopped: the whole process
// group is killed at the timeout), down (refused: curl exits 7), recovery.
#[test]
fn exec_misc_check_with_curl() -> Result<()> {
    let (lab, director, rs) = lab("health-exec")?;
    let mut srv = http_server(&rs, &lab)?;
    let curl = |path: &str| {
        exec(
            &format!("curl -sf -o /dev/null --max-time 30 http://$LB_RS_ADDRESS:$LB_RS_PORT{path}"),
            false,
        )
    };
    wait_up(&director, &curl("/"), 8000);
    assert_eq!(
        down(check(&director, &curl("/missing"), 8000)),
        Failure::ExitCode { code: 22 }
    );
    let weighted = exec(
        "curl -sf -o /dev/null http://$LB_RS_ADDRESS:$LB_RS_PORT/ && exit 7",
        true,
    );
    assert_eq!(
        check(&director, &weighted, 8000),
        CheckResult::Up { weight: Some(5) }
    );
    srv.signal(Signal::SIGSTOP);
    let t0 = Instant::now();
    assert_eq!(down(check(&director, &curl("/"), 8000)), Failure::Timeout);
    assert!(t0.elapsed() >= timeout() && t0.elapsed() < timeout() + scaled(Duration::from_secs(2)));
    srv.signal(Signal::SIGCONT);
    assert_eq!(check(&director, &curl("/"), 8000), CheckResult::UP);
    srv.kill();
    assert_eq!(
        down(check(&director, &curl("/"), 8000)),
        Failure::ExitCode { code: 7 }
    );
    let _srv = http_server(&rs, &lab)?;
    wait_up(&director, &curl("/"), 8000);
    Ok(())
}
