//! The agent's Prometheus metrics and the HTTP endpoint that serves them.
//!
//! ```text
//!  director (VRRP, health runner, IPVS reconcile)
//!        │ Metrics::vrrp_state(..), health_result(..), apply(..), ...
//!        ▼
//!  Metrics: one Registry (prefix lb_agent_) ──encode()──► OpenMetrics text
//!                                                            ▲
//!  serve_metrics: accept loop ──► one hyper connection task ─┘ GET /metrics
//! ```
//!
//! Every family is registered in [`Metrics::new`]; the director records
//! values through the methods and never touches the registry. Counters are
//! 64-bit; the IPVS counters read from the kernel are gauges of `u64` (the
//! kernel's value is set as it is, so a reset of the kernel counters shows).

use std::{convert::Infallible, sync::atomic::AtomicU64, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use hyper_util::rt::TokioIo;
use lb_proto::v1::VrrpState;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};
use tokio::net::TcpListener;
use tracing::{debug, error, warn};

use crate::ipvs::Stats;

/// Content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A gauge of a kernel counter: 64 bits unsigned.
type U64Gauge = Gauge<u64, AtomicU64>;
/// A histogram family; histograms have no default, so a constructor builds them.
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceStateLabels {
    instance: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    instance: String,
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RealServerLabels {
    service: String,
    real_server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckResultLabels {
    service: String,
    real_server: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// The five IPVS counters of a service or a real server, as gauges.
struct IpvsCounters<L> {
    connections: Family<L, U64Gauge>,
    packets_in: Family<L, U64Gauge>,
    packets_out: Family<L, U64Gauge>,
    bytes_in: Family<L, U64Gauge>,
    bytes_out: Family<L, U64Gauge>,
}

impl<L> IpvsCounters<L>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    fn new() -> Self {
        IpvsCounters {
            connections: Family::default(),
            packets_in: Family::default(),
            packets_out: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
        }
    }

    /// Registers the five gauges as `{prefix}_connections`, `{prefix}_packets_in`, ...
    fn register(&self, registry: &mut Registry, prefix: &str, of: &str) {
        let c = self;
        registry.register(
            format!("{prefix}_connections"),
            format!("Connections scheduled to the {of} (kernel counter)"),
            c.connections.clone(),
        );
        registry.register(
            format!("{prefix}_packets_in"),
            format!("Packets in to the {of} (kernel counter)"),
            c.packets_in.clone(),
        );
        registry.register(
            format!("{prefix}_packets_out"),
            format!("Packets out of the {of}, NAT only (kernel counter)"),
            c.packets_out.clone(),
        );
        registry.register(
            format!("{prefix}_bytes_in"),
            format!("Bytes in to the {of} (kernel counter)"),
            c.bytes_in.clone(),
        );
        registry.register(
            format!("{prefix}_bytes_out"),
            format!("Bytes out of the {of}, NAT only (kernel counter)"),
            c.bytes_out.clone(),
        );
    }

    fn set(&self, labels: &L, stats: &Stats) {
        self.connections.get_or_create(labels).set(stats.conns);
        self.packets_in.get_or_create(labels).set(stats.inpkts);
        self.packets_out.get_or_create(labels).set(stats.outpkts);
        self.bytes_in.get_or_create(labels).set(stats.inbytes);
        self.bytes_out.get_or_create(labels).set(stats.outbytes);
    }
}

/// Every metric of the agent, in one registry.
pub struct Metrics {
    registry: Registry,
    vrrp_state: Family<InstanceStateLabels, Gauge>,
    vrrp_priority: Family<InstanceLabels, Gauge>,
    vrrp_transitions: Family<TransitionLabels, Counter>,
    health_checks: Family<CheckResultLabels, Counter>,
    health_check_duration: HistogramFamily<ServiceLabels>,
    real_server_up: Family<RealServerLabels, Gauge>,
    service_quorum: Family<ServiceLabels, Gauge>,
    ipvs_service: IpvsCounters<ServiceLabels>,
    ipvs_real_server: IpvsCounters<RealServerLabels>,
    ipvs_real_server_active: Family<RealServerLabels, U64Gauge>,
    ipvs_real_server_inactive: Family<RealServerLabels, U64Gauge>,
    ipvs_real_server_weight: Family<RealServerLabels, U64Gauge>,
    applies: Family<ResultLabels, Counter>,
    apply_duration: Histogram,
    ipvs_operations: Counter,
    drift_repairs: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Every VRRP state, so that `vrrp_state` shows 0 for the states not held.
const VRRP_STATES: [VrrpState; 5] = [
    VrrpState::Unspecified,
    VrrpState::Initialize,
    VrrpState::Backup,
    VrrpState::Master,
    VrrpState::Fault,
];

/// The label value of a VRRP state: the proto name, lower case, without prefix.
pub fn vrrp_state_label(state: VrrpState) -> &'static str {
    match state {
        VrrpState::Unspecified => "unspecified",
        VrrpState::Initialize => "initialize",
        VrrpState::Backup => "backup",
        VrrpState::Master => "master",
        VrrpState::Fault => "fault",
    }
}

/// Buckets from 0.5 ms to about 8 s: a check or an apply is one round trip
/// on a LAN at best and a timeout at worst.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

fn bool_gauge(up: bool) -> i64 {
    i64::from(up)
}

impl Metrics {
    /// Registers every family, each named `lb_agent_...`.
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("lb_agent"),
            vrrp_state: Family::default(),
            vrrp_priority: Family::default(),
            vrrp_transitions: Family::default(),
            health_checks: Family::default(),
            health_check_duration: Family::new_with_constructor(duration_histogram),
            real_server_up: Family::default(),
            service_quorum: Family::default(),
            ipvs_service: IpvsCounters::new(),
            ipvs_real_server: IpvsCounters::new(),
            ipvs_real_server_active: Family::default(),
            ipvs_real_server_inactive: Family::default(),
            ipvs_real_server_weight: Family::default(),
            applies: Family::default(),
            apply_duration: duration_histogram(),
            ipvs_operations: Counter::default(),
            drift_repairs: Counter::default(),
        };
        let r = &mut m.registry;
        r.register(
            "vrrp_state",
            "VRRP state of an instance: 1 for the state it is in, 0 for the others",
            m.vrrp_state.clone(),
        );
        r.register(
            "vrrp_priority",
            "Effective VRRP priority of an instance",
            m.vrrp_priority.clone(),
        );
        r.register(
            "vrrp_transitions",
            "VRRP transitions of an instance, by the state entered",
            m.vrrp_transitions.clone(),
        );
        r.register(
            "health_checks",
            "Health check attempts of a real server, by result",
            m.health_checks.clone(),
        );
        r.register_with_unit(
            "health_check_duration",
            "Time a health check attempt took",
            Unit::Seconds,
            m.health_check_duration.clone(),
        );
        r.register(
            "real_server_up",
            "Health of a real server: 1 up, 0 down",
            m.real_server_up.clone(),
        );
        r.register(
            "service_quorum",
            "Quorum of a service: 1 held, 0 lost",
            m.service_quorum.clone(),
        );
        m.ipvs_service.register(r, "ipvs", "IPVS service");
        m.ipvs_real_server
            .register(r, "ipvs_real_server", "IPVS real server");
        r.register(
            "ipvs_real_server_active_connections",
            "Active connections of an IPVS real server",
            m.ipvs_real_server_active.clone(),
        );
        r.register(
            "ipvs_real_server_inactive_connections",
            "Inactive connections of an IPVS real server",
            m.ipvs_real_server_inactive.clone(),
        );
        r.register(
            "ipvs_real_server_weight",
            "Weight of an IPVS real server in the kernel",
            m.ipvs_real_server_weight.clone(),
        );
        r.register(
            "applies",
            "Configurations applied, by result (ok, error)",
            m.applies.clone(),
        );
        r.register_with_unit(
            "apply_duration",
            "Time an apply took",
            Unit::Seconds,
            m.apply_duration.clone(),
        );
        r.register(
            "ipvs_operations",
            "IPVS operations sent to the kernel by applies",
            m.ipvs_operations.clone(),
        );
        r.register(
            "drift_repairs",
            "Differences between the kernel and the desired state that were repaired",
            m.drift_repairs.clone(),
        );
        m
    }

    /// The state an instance is in: `lb_agent_vrrp_state{instance,state}` is
    /// 1 for `state` and 0 for every other state.
    pub fn vrrp_state(&self, instance: &str, state: VrrpState) {
        for s in VRRP_STATES {
            self.vrrp_state
                .get_or_create(&InstanceStateLabels {
                    instance: instance.to_string(),
                    state: vrrp_state_label(s),
                })
                .set(i64::from(s == state));
        }
    }

    /// The effective priority of an instance (`lb_agent_vrrp_priority`).
    pub fn vrrp_priority(&self, instance: &str, priority: u8) {
        self.vrrp_priority
            .get_or_create(&InstanceLabels {
                instance: instance.to_string(),
            })
            .set(i64::from(priority));
    }

    /// A transition of an instance (`lb_agent_vrrp_transitions_total{instance,to}`).
    pub fn vrrp_transition(&self, instance: &str, to: VrrpState) {
        self.vrrp_transitions
            .get_or_create(&TransitionLabels {
                instance: instance.to_string(),
                to: vrrp_state_label(to),
            })
            .inc();
    }

    /// One health check attempt: `lb_agent_health_checks_total{service,real_server,result}`
    /// (result "up" or "down") and `lb_agent_health_check_duration_seconds{service}`.
    pub fn health_result(&self, service: &str, real_server: &str, up: bool, latency: Duration) {
        self.health_checks
            .get_or_create(&CheckResultLabels {
                service: service.to_string(),
                real_server: real_server.to_string(),
                result: if up { "up" } else { "down" },
            })
            .inc();
        self.health_check_duration
            .get_or_create(&ServiceLabels {
                service: service.to_string(),
            })
            .observe(latency.as_secs_f64());
    }

    /// The health of a real server (`lb_agent_real_server_up`: 1 up, 0 down).
    pub fn health_state(&self, service: &str, real_server: &str, up: bool) {
        self.real_server_up
            .get_or_create(&RealServerLabels {
                service: service.to_string(),
                real_server: real_server.to_string(),
            })
            .set(bool_gauge(up));
    }

    /// The quorum of a service (`lb_agent_service_quorum`: 1 held, 0 lost).
    pub fn quorum(&self, service: &str, up: bool) {
        self.service_quorum
            .get_or_create(&ServiceLabels {
                service: service.to_string(),
            })
            .set(bool_gauge(up));
    }

    /// The kernel counters of a service: `lb_agent_ipvs_connections`,
    /// `_packets_in`, `_packets_out`, `_bytes_in`, `_bytes_out` `{service}`.
    pub fn ipvs_service_stats(&self, service: &str, stats: &Stats) {
        self.ipvs_service.set(
            &ServiceLabels {
                service: service.to_string(),
            },
            stats,
        );
    }

    /// The kernel counters of a real server: `lb_agent_ipvs_real_server_connections`,
    /// `_packets_in`, `_packets_out`, `_bytes_in`, `_bytes_out`,
    /// `_active_connections`, `_inactive_connections` and `_weight`
    /// `{service,real_server}`.
    pub fn ipvs_dest_stats(
        &self,
        service: &str,
        real_server: &str,
        stats: &Stats,
        active_conns: u32,
        inactive_conns: u32,
        weight: u32,
    ) {
        let labels = RealServerLabels {
            service: service.to_string(),
            real_server: real_server.to_string(),
        };
        self.ipvs_real_server.set(&labels, stats);
        self.ipvs_real_server_active
            .get_or_create(&labels)
            .set(u64::from(active_conns));
        self.ipvs_real_server_inactive
            .get_or_create(&labels)
            .set(u64::from(inactive_conns));
        self.ipvs_real_server_weight
            .get_or_create(&labels)
            .set(u64::from(weight));
    }

    /// One apply: `lb_agent_applies_total{result="ok"|"error"}`,
    /// `lb_agent_apply_duration_seconds` and `lb_agent_ipvs_operations_total`.
    pub fn apply(&self, ok: bool, operations: usize, duration: Duration) {
        self.applies
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" },
            })
            .inc();
        self.apply_duration.observe(duration.as_secs_f64());
        self.ipvs_operations
            .inc_by(u64::try_from(operations).unwrap_or(u64::MAX));
    }

    /// Drift repaired (`lb_agent_drift_repairs_total`).
    pub fn drift_repairs(&self, n: u64) {
        self.drift_repairs.inc_by(n);
    }

    /// Every metric in the OpenMetrics text format (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            // Writing to a String does not fail; an encoder that does is a bug.
            error!(error = %e, "encoding metrics");
        }
        text
    }
}

/// Serves `GET /metrics` (and `HEAD`) on `listener` until `shutdown`
/// completes; every other path is 404. Connections in flight finish first.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: std::sync::Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener) => accepted?,
        };
        let metrics = metrics.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let response = respond(&metrics, &request);
            async move { Ok::<_, Infallible>(response) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "metrics connection");
            }
        });
    }
    graceful.shutdown().await;
    Ok(())
}

/// The next connection. Errors that concern one connection or a passing
/// lack of resources are logged and waited out; others end the server.
async fn accept(
    listener: &TcpListener,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    use std::io::ErrorKind;
    loop {
        match listener.accept().await {
            Ok(accepted) => return Ok(accepted),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionAborted
                        | ErrorKind::ConnectionReset
                        | ErrorKind::Interrupted
                ) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) =>
            {
                // Out of descriptors or memory: accepting again at once would spin.
                warn!(error = %e, "metrics: accepting a connection; pausing 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn respond<B>(metrics: &Metrics, request: &Request<B>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, text: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET /metrics\n",
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut r = Response::new(Full::new(Bytes::from(metrics.encode())));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    r
}
