//! The metrics endpoint over real HTTP on 127.0.0.1: values recorded through
//! [`Metrics`] appear with their names, labels and values in the scrape;
//! other paths are 404; shutdown ends the server.

use std::{sync::Arc, time::Duration};

use lb_agent::{
    ipvs::Stats,
    metrics::{CONTENT_TYPE, Metrics, serve_metrics},
};
use lb_proto::v1::VrrpState;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};

/// The server on 127.0.0.1:0.
struct Served {
    addr: std::net::SocketAddr,
    shutdown_tx: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(metrics: Arc<Metrics>) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_metrics(listener, metrics, async {
        let _ = shutdown_rx.await;
    }));
    Served {
        addr,
        shutdown_tx: Some(shutdown_tx),
        task,
    }
}

/// A response: status code, headers (lower-case names) and body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `method path` over a fresh connection, HTTP/1.1 with `Connection: close`.
async fn request(addr: std::net::SocketAddr, method: &str, path: &str) -> Reply {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        raw
    };
    let raw = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("no answer in time");
    let (head, body) = raw.split_once("\r\n\r\n").expect("no end of headers");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("no status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Asserts that `text` has `line` as one whole line.
#[track_caller]
fn has_line(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "no line {line:?} in:\n{text}"
    );
}

fn stats(base: u64) -> Stats {
    Stats {
        conns: base,
        inpkts: base + 1,
        outpkts: base + 2,
        inbytes: base + 3,
        outbytes: base + 4,
        ..Stats::default()
    }
}

// In: VRRP state master then backup, priority 150 and two transitions; two
// health attempts (one up in 2 ms, one down in 40 ms), health and quorum
// gauges; service counters beyond i64::MAX and real-server counters with
// active/inactive/weight; two applies (one failed) and 2 + 3 drift repairs.
// Out: GET /metrics answers 200 in the OpenMetrics text format, with every
// family under lb_agent_, the labels given, and the values recorded
// (VRRP state backup 1 and master 0, counters summed, u64 kept whole).
#[tokio::test]
async fn scrape_shows_every_recorded_value() {
    let m = Arc::new(Metrics::new());
    m.vrrp_state("VI_1", VrrpState::Master);
    m.vrrp_state("VI_1", VrrpState::Backup);
    m.vrrp_priority("VI_1", 150);
    m.vrrp_transition("VI_1", VrrpState::Master);
    m.vrrp_transition("VI_1", VrrpState::Backup);
    m.health_result("web", "rs1", true, Duration::from_millis(2));
    m.health_result("web", "rs1", false, Duration::from_millis(40));
    m.health_state("web", "rs1", true);
    m.health_state("web", "10.0.0.2:80", false);
    m.quorum("web", true);
    m.quorum("dns", false);
    let big = u64::MAX - 10;
    m.ipvs_service_stats("web", &stats(big));
    m.ipvs_dest_stats("web", "rs1", &stats(100), 7, 3, 5);
    m.apply(true, 12, Duration::from_millis(3));
    m.apply(false, 2, Duration::from_millis(30));
    m.drift_repairs(2);
    m.drift_repairs(3);

    let served = start(m).await;
    let r = request(served.addr, "GET", "/metrics").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some(CONTENT_TYPE));
    let text = &r.body;
    assert!(text.ends_with("# EOF\n"), "{text}");

    has_line(text, "# TYPE lb_agent_vrrp_state gauge");
    has_line(
        text,
        r#"lb_agent_vrrp_state{instance="VI_1",state="backup"} 1"#,
    );
    has_line(
        text,
        r#"lb_agent_vrrp_state{instance="VI_1",state="master"} 0"#,
    );
    has_line(
        text,
        r#"lb_agent_vrrp_state{instance="VI_1",state="fault"} 0"#,
    );
    has_line(text, r#"lb_agent_vrrp_priority{instance="VI_1"} 150"#);
    has_line(text, "# TYPE lb_agent_vrrp_transitions counter");
    has_line(
        text,
        r#"lb_agent_vrrp_transitions_total{instance="VI_1",to="master"} 1"#,
    );
    has_line(
        text,
        r#"lb_agent_vrrp_transitions_total{instance="VI_1",to="backup"} 1"#,
    );

    has_line(
        text,
        r#"lb_agent_health_checks_total{service="web",real_server="rs1",result="up"} 1"#,
    );
    has_line(
        text,
        r#"lb_agent_health_checks_total{service="web",real_server="rs1",result="down"} 1"#,
    );
    has_line(
        text,
        "# TYPE lb_agent_health_check_duration_seconds histogram",
    );
    has_line(
        text,
        "# UNIT lb_agent_health_check_duration_seconds seconds",
    );
    has_line(
        text,
        r#"lb_agent_health_check_duration_seconds_count{service="web"} 2"#,
    );
    has_line(
        text,
        r#"lb_agent_health_check_duration_seconds_sum{service="web"} 0.042"#,
    );
    // 2 ms falls in the bucket of 4 ms, 40 ms only from 64 ms on.
    has_line(
        text,
        r#"lb_agent_health_check_duration_seconds_bucket{le="0.004",service="web"} 1"#,
    );
    has_line(
        text,
        r#"lb_agent_health_check_duration_seconds_bucket{le="0.064",service="web"} 2"#,
    );
    has_line(
        text,
        r#"lb_agent_real_server_up{service="web",real_server="rs1"} 1"#,
    );
    has_line(
        text,
        r#"lb_agent_real_server_up{service="web",real_server="10.0.0.2:80"} 0"#,
    );
    has_line(text, r#"lb_agent_service_quorum{service="web"} 1"#);
    has_line(text, r#"lb_agent_service_quorum{service="dns"} 0"#);

    has_line(text, "# TYPE lb_agent_ipvs_connections gauge");
    for (name, value) in [
        ("connections", big),
        ("packets_in", big + 1),
        ("packets_out", big + 2),
        ("bytes_in", big + 3),
        ("bytes_out", big + 4),
    ] {
        has_line(
            text,
            &format!(r#"lb_agent_ipvs_{name}{{service="web"}} {value}"#),
        );
    }
    for (name, value) in [
        ("connections", 100),
        ("packets_in", 101),
        ("packets_out", 102),
        ("bytes_in", 103),
        ("bytes_out", 104),
        ("active_connections", 7),
        ("inactive_connections", 3),
        ("weight", 5),
    ] {
        has_line(
            text,
            &format!(
                r#"lb_agent_ipvs_real_server_{name}{{service="web",real_server="rs1"}} {value}"#
            ),
        );
    }

    has_line(text, r#"lb_agent_applies_total{result="ok"} 1"#);
    has_line(text, r#"lb_agent_applies_total{result="error"} 1"#);
    has_line(text, "lb_agent_apply_duration_seconds_count 2");
    has_line(text, "lb_agent_apply_duration_seconds_sum 0.033");
    has_line(text, "lb_agent_ipvs_operations_total 14");
    has_line(text, "lb_agent_drift_repairs_total 5");
}

// In: GET of /, /metrics/x and /metricsx; POST /metrics; HEAD /metrics.
// Out: 404 for the other paths, 405 with Allow for POST, 200 with no body
// for HEAD.
#[tokio::test]
async fn only_metrics_is_served() {
    let served = start(Arc::new(Metrics::new())).await;
    for path in ["/", "/metrics/x", "/metricsx"] {
        let r = request(served.addr, "GET", path).await;
        assert_eq!(r.status, 404, "{path}");
    }
    let r = request(served.addr, "POST", "/metrics").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = request(served.addr, "HEAD", "/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "");
}

// In: a server with an idle keep-alive connection open; the shutdown signal.
// Out: serve_metrics returns Ok, the idle connection is closed, and new
// connections are refused.
#[tokio::test]
async fn shutdown_stops_the_server() {
    let mut served = start(Arc::new(Metrics::new())).await;
    let mut idle = TcpStream::connect(served.addr).await.unwrap();
    let head = format!("GET /metrics HTTP/1.1\r\nHost: {}\r\n\r\n", served.addr);
    idle.write_all(head.as_bytes()).await.unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    served.shutdown_tx.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), served.task)
        .await
        .expect("server did not stop")
        .unwrap()
        .unwrap();
    // The rest of the first answer, then the end of the stream.
    let mut rest = vec![];
    tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest))
        .await
        .expect("idle connection not closed")
        .unwrap();
    assert!(TcpStream::connect(served.addr).await.is_err());
}
