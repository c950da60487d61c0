//! Health-check settings, validated.
//!
//! The topology's `Service` / `RealServer` / `HealthCheck` messages are turned
//! here, at the edge, into typed values: durations as `std::time::Duration`,
//! addresses parsed, regular expressions compiled, DNS names and types
//! checked. Every error names the service, the real server and the field, so
//! nothing half-valid reaches the checkers.

use std::{
    net::{IpAddr, SocketAddr},
    str::FromStr,
    time::Duration,
};

use hickory_proto::{
    op::ResponseCode,
    rr::{Name, RecordType},
};
use lb_proto::v1;
use regex::bytes::Regex;

/// Default time between checks (keepalived's delay_loop default is 60 s; lb's is 5 s).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Default time one check may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default pause before a retry.
pub const DEFAULT_DELAY_BEFORE_RETRY: Duration = Duration::from_secs(1);

/// A health-check setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service {service}{}: {field}: {reason}", real_server_part(.real_server))]
pub struct ConfigError {
    /// Service name.
    pub service: String,
    /// Real server (node name or address), when the error is about one.
    pub real_server: Option<String>,
    /// The field, as written in topology files (`healthCheck.http.bodyRegex`).
    pub field: String,
    /// What is wrong and what to write instead.
    pub reason: String,
}

fn real_server_part(rs: &Option<String>) -> String {
    rs.as_ref()
        .map(|rs| format!(", real server {rs}"))
        .unwrap_or_default()
}

/// Health of a real server as the checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Passing.
    Up,
    /// Failing.
    Down,
}

/// How the first check of a real server is placed in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warmup {
    /// Spread evenly with the other checks over the first interval (the default).
    Spread,
    /// A random delay up to this (keepalived's warmup).
    Random(Duration),
}

/// Timing and counting of a check: the same for every checker kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Time between checks.
    pub interval: Duration,
    /// Time one attempt may take.
    pub timeout: Duration,
    /// Successes in a row to go up.
    pub rise: u32,
    /// Failures in a row to go down.
    pub fall: u32,
    /// Extra attempts inside one check before it counts as failed.
    pub retries: u32,
    /// Pause before each retry.
    pub delay_before_retry: Duration,
    /// Placement of the first check.
    pub warmup: Warmup,
    /// Health before the first result.
    pub start_state: Health,
    /// Each check moves by a random amount in `0..=jitter`.
    pub jitter: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            rise: 1,
            fall: 1,
            retries: 0,
            delay_before_retry: DEFAULT_DELAY_BEFORE_RETRY,
            warmup: Warmup::Spread,
            start_state: Health::Down,
            jitter: Duration::ZERO,
        }
    }
}

/// A compiled regular expression that compares by its source.
#[derive(Debug, Clone)]
pub struct Pattern(pub Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}
impl Eq for Pattern {}

/// How an HTTP body must look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyMatch {
    /// The body matches this regular expression.
    Regex(Pattern),
    /// The body's MD5 digest (keepalived `digest`).
    Md5([u8; 16]),
    /// The body's SHA-256 digest.
    Sha256([u8; 32]),
}

/// HTTP version of an HTTP check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2: prior knowledge on plain text, ALPN `h2` on TLS.
    Http2,
}

/// An HTTP or HTTPS GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSpec {
    /// Path and query.
    pub path: String,
    /// Host header (and SNI unless `sni` is set); `None` means the address.
    pub host: Option<String>,
    /// TLS server name when it differs from the host.
    pub sni: Option<String>,
    /// HTTPS.
    pub tls: bool,
    /// Verify the server certificate against the web PKI roots.
    pub tls_verify: bool,
    /// HTTP version.
    pub version: HttpVersion,
    /// Status codes that mean up; empty means 200..=299.
    pub expected_status: Vec<u16>,
    /// Body match.
    pub body: Option<BodyMatch>,
}

impl HttpSpec {
    /// Whether `status` means up.
    pub fn status_ok(&self, status: u16) -> bool {
        if self.expected_status.is_empty() {
            (200..300).contains(&status)
        } else {
            self.expected_status.contains(&status)
        }
    }
}

/// How a UDP reply must look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyMatch {
    /// Any reply.
    Any,
    /// The reply matches this regular expression.
    Regex(Pattern),
    /// The reply starts with these bytes.
    Prefix(Vec<u8>),
}

/// A UDP check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpSpec {
    /// Datagram to send.
    pub payload: Vec<u8>,
    /// `None`: up unless an ICMP port unreachable comes back within the
    /// timeout. `Some`: a matching reply must come back.
    pub reply: Option<ReplyMatch>,
}

/// DNS transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsTransport {
    /// UDP.
    Udp,
    /// TCP, with the two-byte length prefix (RFC 1035 section 4.2.2).
    Tcp,
}

/// A DNS check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSpec {
    /// Name asked about.
    pub name: Name,
    /// Record type asked for.
    pub record_type: RecordType,
    /// Transport.
    pub transport: DnsTransport,
    /// Expected response code.
    pub rcode: ResponseCode,
    /// Values the answer section must hold, normalised (see [`normalise_answer`]).
    pub expected_answers: Vec<String>,
}

/// Normalises an answer value for comparison: lower case, no trailing dot.
pub fn normalise_answer(value: &str) -> String {
    value.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// An external command (MISC_CHECK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    /// Program and arguments.
    pub command: Vec<String>,
    /// User to run as; `None` is the agent's.
    pub user: Option<String>,
    /// Exit codes 2..=255 set the weight to code - 2.
    pub dynamic_weight: bool,
}

/// A gRPC health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcSpec {
    /// Service name asked about ("" is the whole server).
    pub service: String,
    /// TLS.
    pub tls: bool,
    /// Verify the certificate.
    pub tls_verify: bool,
    /// TLS server name; `None` is the address.
    pub authority: Option<String>,
}

/// The checker kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// Always up.
    None,
    /// TCP connect.
    Tcp,
    /// HTTP(S) GET.
    Http(HttpSpec),
    /// UDP datagram.
    Udp(UdpSpec),
    /// DNS query.
    Dns(DnsSpec),
    /// External command.
    Exec(ExecSpec),
    /// gRPC health.
    Grpc(GrpcSpec),
}

/// A whole check of one real server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    /// What is checked.
    pub kind: CheckKind,
    /// When and how often.
    pub timing: Timing,
    /// Address checked instead of the real server's.
    pub connect_address: Option<IpAddr>,
    /// Port checked instead of the real server's.
    pub connect_port: Option<u16>,
    /// Source address of the checks.
    pub bind_address: Option<IpAddr>,
}

impl Default for CheckSpec {
    fn default() -> Self {
        CheckSpec {
            kind: CheckKind::None,
            timing: Timing::default(),
            connect_address: None,
            connect_port: None,
            bind_address: None,
        }
    }
}

/// Sorry server of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SorrySpec {
    /// Where it is.
    pub addr: SocketAddr,
    /// Keep it in the table with weight 0 while not in use.
    pub inhibit: bool,
}

/// Quorum of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuorumSpec {
    /// Minimum healthy weight.
    pub value: u32,
    /// Lost below `value - hysteresis`, regained at `value + hysteresis`.
    pub hysteresis: u32,
}

impl Default for QuorumSpec {
    fn default() -> Self {
        QuorumSpec {
            value: 1,
            hysteresis: 0,
        }
    }
}

/// A real server with its check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealServerSpec {
    /// How operators name it: the node name, or the address.
    pub name: String,
    /// Address and port of the destination.
    pub addr: SocketAddr,
    /// Configured weight.
    pub weight: u32,
    /// Drained by an operator: weight 0 whatever its health.
    pub drain: bool,
    /// Its check.
    pub check: CheckSpec,
}

impl RealServerSpec {
    /// Where the check connects: the connect address and port if set.
    pub fn check_target(&self) -> SocketAddr {
        SocketAddr::new(
            self.check.connect_address.unwrap_or(self.addr.ip()),
            self.check.connect_port.unwrap_or(self.addr.port()),
        )
    }
}

/// The health side of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Service name.
    pub name: String,
    /// Virtual address, if not a firewall-mark service.
    pub vip: Option<IpAddr>,
    /// Virtual port.
    pub port: u16,
    /// Keep failed real servers with weight 0 instead of removing them.
    pub inhibit_on_failure: bool,
    /// Ramp a returning real server's weight up over this time.
    pub slow_start: Option<Duration>,
    /// Sorry server.
    pub sorry: Option<SorrySpec>,
    /// Quorum.
    pub quorum: QuorumSpec,
    /// Real servers.
    pub real_servers: Vec<RealServerSpec>,
}

struct Ctx<'a> {
    service: &'a str,
    real_server: Option<&'a str>,
}

impl Ctx<'_> {
    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            service: self.service.to_string(),
            real_server: self.real_server.map(str::to_string),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

fn duration(
    ctx: &Ctx,
    field: &str,
    d: Option<&lb_proto::duration::Duration>,
) -> Result<Option<Duration>, ConfigError> {
    match d {
        None => Ok(None),
        Some(d) if d.is_zero() => Ok(None),
        Some(d) => d
            .to_std()
            .map(Some)
            .ok_or_else(|| ctx.err(field, "must not be negative")),
    }
}

fn ip(ctx: &Ctx, field: &str, text: &str) -> Result<Option<IpAddr>, ConfigError> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        ctx.err(
            field,
            format!("'{text}' is not an IP address (write 192.0.2.1 or 2001:db8::1)"),
        )
    })
}

fn port(ctx: &Ctx, field: &str, p: u32) -> Result<Option<u16>, ConfigError> {
    match p {
        0 => Ok(None),
        p => u16::try_from(p)
            .map(Some)
            .map_err(|_| ctx.err(field, format!("{p} is not a port (1..65535)"))),
    }
}

fn hex_bytes(ctx: &Ctx, field: &str, text: &str) -> Result<Vec<u8>, ConfigError> {
    hex::decode(text.trim()).map_err(|e| ctx.err(field, format!("'{text}' is not hex: {e}")))
}

fn pattern(ctx: &Ctx, field: &str, text: &str) -> Result<Pattern, ConfigError> {
    Regex::new(text)
        .map(Pattern)
        .map_err(|e| ctx.err(field, format!("not a regular expression: {e}")))
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Response codes by their RFC 1035 / RFC 2136 mnemonic.
pub fn parse_rcode(text: &str) -> Option<ResponseCode> {
    let code: u16 = match text.to_ascii_uppercase().as_str() {
        "NOERROR" => 0,
        "FORMERR" => 1,
        "SERVFAIL" => 2,
        "NXDOMAIN" => 3,
        "NOTIMP" => 4,
        "REFUSED" => 5,
        "YXDOMAIN" => 6,
        "YXRRSET" => 7,
        "NXRRSET" => 8,
        "NOTAUTH" => 9,
        "NOTZONE" => 10,
        _ => return None,
    };
    Some(<ResponseCode as From<u16>>::from(code))
}

/// The mnemonic of a response code (`NXDOMAIN`), or its number.
pub fn rcode_name(rcode: ResponseCode) -> String {
    match u16::from(rcode) {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        6 => "YXDOMAIN".into(),
        7 => "YXRRSET".into(),
        8 => "NXRRSET".into(),
        9 => "NOTAUTH".into(),
        10 => "NOTZONE".into(),
        n => n.to_string(),
    }
}

fn digest(ctx: &Ctx, field: &str, text: &str) -> Result<BodyMatch, ConfigError> {
    let bad = || {
        ctx.err(
            field,
            format!("'{text}' is not a digest (write md5:HEX or sha256:HEX)"),
        )
    };
    let (algo, hexdigits) = text.split_once(':').ok_or_else(bad)?;
    let bytes = hex::decode(hexdigits.trim()).map_err(|_| bad())?;
    match algo.to_ascii_lowercase().as_str() {
        "md5" => Ok(BodyMatch::Md5(bytes.try_into().map_err(|_| bad())?)),
        "sha256" => Ok(BodyMatch::Sha256(bytes.try_into().map_err(|_| bad())?)),
        _ => Err(bad()),
    }
}

fn http_spec(ctx: &Ctx, h: &v1::HttpCheck) -> Result<HttpSpec, ConfigError> {
    let path = if h.path.is_empty() {
        "/".to_string()
    } else if h.path.starts_with('/') {
        h.path.clone()
    } else {
        return Err(ctx.err(
            "healthCheck.http.path",
            format!("'{}' must start with /", h.path),
        ));
    };
    path.parse::<http::uri::PathAndQuery>().map_err(|e| {
        ctx.err(
            "healthCheck.http.path",
            format!("'{path}' is not a path: {e}"),
        )
    })?;
    let mut expected_status = Vec::with_capacity(h.expected_status.len());
    for &s in &h.expected_status {
        if !(100..=599).contains(&s) {
            return Err(ctx.err(
                "healthCheck.http.expectedStatus",
                format!("{s} is not an HTTP status (100..599)"),
            ));
        }
        expected_status.push(s as u16);
    }
    let body = match (h.body_regex.is_empty(), h.body_digest.is_empty()) {
        (true, true) => None,
        (false, true) => Some(BodyMatch::Regex(pattern(
            ctx,
            "healthCheck.http.bodyRegex",
            &h.body_regex,
        )?)),
        (true, false) => Some(digest(ctx, "healthCheck.http.bodyDigest", &h.body_digest)?),
        (false, false) => {
            return Err(ctx.err(
                "healthCheck.http.bodyDigest",
                "set bodyRegex or bodyDigest, not both",
            ));
        }
    };
    let version = match v1::http_check::Version::try_from(h.version) {
        Ok(v1::http_check::Version::Http2) => HttpVersion::Http2,
        Ok(_) => HttpVersion::Http1,
        Err(_) => {
            return Err(ctx.err(
                "healthCheck.http.version",
                format!("{} is not a version (http1, http2)", h.version),
            ));
        }
    };
    Ok(HttpSpec {
        path,
        host: non_empty(&h.host),
        sni: non_empty(&h.sni),
        tls: h.tls,
        tls_verify: h.tls_verify,
        version,
        expected_status,
        body,
    })
}

fn udp_spec(ctx: &Ctx, u: &v1::UdpCheck) -> Result<UdpSpec, ConfigError> {
    let payload = if u.payload_hex.is_empty() {
        u.payload.as_bytes().to_vec()
    } else {
        hex_bytes(ctx, "healthCheck.udp.payloadHex", &u.payload_hex)?
    };
    let reply = match (u.reply_regex.is_empty(), u.reply_hex.is_empty()) {
        (true, true) => u.require_reply.then_some(ReplyMatch::Any),
        (false, true) => Some(ReplyMatch::Regex(pattern(
            ctx,
            "healthCheck.udp.replyRegex",
            &u.reply_regex,
        )?)),
        (true, false) => Some(ReplyMatch::Prefix(hex_bytes(
            ctx,
            "healthCheck.udp.replyHex",
            &u.reply_hex,
        )?)),
        (false, false) => {
            return Err(ctx.err(
                "healthCheck.udp.replyHex",
                "set replyRegex or replyHex, not both",
            ));
        }
    };
    Ok(UdpSpec { payload, reply })
}

fn dns_spec(ctx: &Ctx, d: &v1::DnsCheck) -> Result<DnsSpec, ConfigError> {
    let name_text = if d.name.is_empty() { "." } else { &d.name };
    let mut name = Name::from_str(name_text).map_err(|e| {
        ctx.err(
            "healthCheck.dns.name",
            format!("'{name_text}' is not a DNS name: {e}"),
        )
    })?;
    name.set_fqdn(true);
    let type_text = if d.r#type.is_empty() {
        "SOA"
    } else {
        &d.r#type
    };
    let record_type = RecordType::from_str(&type_text.to_ascii_uppercase()).map_err(|_| {
        ctx.err(
            "healthCheck.dns.type",
            format!("'{type_text}' is not a record type (A, AAAA, SOA, NS, CNAME, MX, TXT, ...)"),
        )
    })?;
    let rcode = if d.rcode.is_empty() {
        ResponseCode::NoError
    } else {
        parse_rcode(&d.rcode).ok_or_else(|| {
            ctx.err(
                "healthCheck.dns.rcode",
                format!(
                    "'{}' is not a response code (NOERROR, NXDOMAIN, SERVFAIL, REFUSED, ...)",
                    d.rcode
                ),
            )
        })?
    };
    let transport = match v1::dns_check::Transport::try_from(d.transport) {
        Ok(v1::dns_check::Transport::Tcp) => DnsTransport::Tcp,
        Ok(_) => DnsTransport::Udp,
        Err(_) => {
            return Err(ctx.err(
                "healthCheck.dns.transport",
                format!("{} is not a transport (udp, tcp)", d.transport),
            ));
        }
    };
    Ok(DnsSpec {
        name,
        record_type,
        transport,
        rcode,
        expected_answers: d
            .expected_answers
            .iter()
            .map(|a| normalise_answer(a))
            .collect(),
    })
}

fn exec_spec(ctx: &Ctx, e: &v1::ExecCheck) -> Result<ExecSpec, ConfigError> {
    if e.command.first().is_none_or(|c| c.is_empty()) {
        return Err(ctx.err(
            "healthCheck.exec.command",
            "is empty (write the program and its arguments: [/usr/local/bin/check, --fast])",
        ));
    }
    Ok(ExecSpec {
        command: e.command.clone(),
        user: non_empty(&e.user),
        dynamic_weight: e.dynamic_weight,
    })
}

/// Validates one `HealthCheck` (of a service or of one real server).
fn check_spec(ctx: &Ctx, h: &v1::HealthCheck) -> Result<CheckSpec, ConfigError> {
    use v1::health_check::Kind;
    let kind = match &h.kind {
        None | Some(Kind::None(_)) => CheckKind::None,
        Some(Kind::Tcp(_)) => CheckKind::Tcp,
        Some(Kind::Http(x)) => CheckKind::Http(http_spec(ctx, x)?),
        Some(Kind::Udp(x)) => CheckKind::Udp(udp_spec(ctx, x)?),
        Some(Kind::Dns(x)) => CheckKind::Dns(dns_spec(ctx, x)?),
        Some(Kind::Exec(x)) => CheckKind::Exec(exec_spec(ctx, x)?),
        Some(Kind::Grpc(x)) => CheckKind::Grpc(GrpcSpec {
            service: x.service.clone(),
            tls: x.tls,
            tls_verify: x.tls_verify,
            authority: non_empty(&x.authority),
        }),
    };
    let d = Timing::default();
    let interval =
        duration(ctx, "healthCheck.interval", h.interval.as_ref())?.unwrap_or(d.interval);
    let timeout = duration(ctx, "healthCheck.timeout", h.timeout.as_ref())?.unwrap_or(d.timeout);
    let start_state = match v1::StartState::try_from(h.start_state) {
        Ok(v1::StartState::Up) => Health::Up,
        Ok(_) => Health::Down,
        Err(_) => {
            return Err(ctx.err(
                "healthCheck.startState",
                format!("{} is not a start state (down, up)", h.start_state),
            ));
        }
    };
    let timing = Timing {
        interval,
        timeout,
        rise: h.rise.max(1),
        fall: h.fall.max(1),
        retries: h.retries,
        delay_before_retry: duration(
            ctx,
            "healthCheck.delayBeforeRetry",
            h.delay_before_retry.as_ref(),
        )?
        .unwrap_or(d.delay_before_retry),
        warmup: duration(ctx, "healthCheck.warmup", h.warmup.as_ref())?
            .map_or(Warmup::Spread, Warmup::Random),
        start_state,
        jitter: duration(ctx, "healthCheck.jitter", h.jitter.as_ref())?.unwrap_or_default(),
    };
    if timing.jitter >= timing.interval {
        return Err(ctx.err(
            "healthCheck.jitter",
            format!(
                "{:?} must be shorter than the interval ({:?})",
                timing.jitter, timing.interval
            ),
        ));
    }
    Ok(CheckSpec {
        kind,
        timing,
        connect_address: ip(ctx, "healthCheck.connectAddress", &h.connect_address)?,
        connect_port: port(ctx, "healthCheck.connectPort", h.connect_port)?,
        bind_address: ip(ctx, "healthCheck.bindAddress", &h.bind_address)?,
    })
}

impl ServiceSpec {
    /// Validates the health side of a service. `nodes` resolves real servers
    /// given by node name to their address.
    pub fn from_proto(service: &v1::Service, nodes: &[v1::Node]) -> Result<Self, ConfigError> {
        let ctx = Ctx {
            service: &service.name,
            real_server: None,
        };
        let vip = ip(&ctx, "vip", &service.vip)?;
        let vport = port(&ctx, "port", service.port)?.unwrap_or(0);
        let default_check = match &service.health_check {
            Some(h) => check_spec(&ctx, h)?,
            None => CheckSpec::default(),
        };
        let sorry = match &service.sorry_server {
            None => None,
            Some(s) => {
                let addr = ip(&ctx, "sorryServer.address", &s.address)?.ok_or_else(|| {
                    ctx.err(
                        "sorryServer.address",
                        "is empty (write the sorry server's address)",
                    )
                })?;
                let p = port(&ctx, "sorryServer.port", s.port)?.unwrap_or(vport);
                Some(SorrySpec {
                    addr: SocketAddr::new(addr, p),
                    inhibit: s.inhibit,
                })
            }
        };
        let quorum = service
            .quorum
            .as_ref()
            .map_or_else(QuorumSpec::default, |q| QuorumSpec {
                value: q.value.max(1),
                hysteresis: q.hysteresis,
            });
        if quorum.hysteresis >= quorum.value && service.quorum.is_some() {
            return Err(ctx.err(
                "quorum.hysteresis",
                format!(
                    "{} must be smaller than quorum.value ({})",
                    quorum.hysteresis, quorum.value
                ),
            ));
        }
        let mut real_servers = Vec::with_capacity(service.real_servers.len());
        for (i, rs) in service.real_servers.iter().enumerate() {
            use v1::real_server::Target;
            let (name, address) = match &rs.target {
                Some(Target::Node(n)) => {
                    let node = nodes.iter().find(|x| &x.name == n).ok_or_else(|| {
                        ctx.err(
                            format!("realServers[{i}].node"),
                            format!("node '{n}' is not among the nodes"),
                        )
                    })?;
                    (n.clone(), node.address.clone())
                }
                Some(Target::Address(a)) => (a.clone(), a.clone()),
                None => {
                    return Err(
                        ctx.err(format!("realServers[{i}]"), "has neither node nor address")
                    );
                }
            };
            let rctx = Ctx {
                service: &service.name,
                real_server: Some(&name),
            };
            let addr = ip(&rctx, "address", &address)?
                .ok_or_else(|| rctx.err("address", "the node has no address"))?;
            let p = port(&rctx, "port", rs.port)?.unwrap_or(vport);
            let weight = rs.weight.unwrap_or(1);
            if weight > 65535 {
                return Err(rctx.err("weight", format!("{weight} is out of 0..65535")));
            }
            let check = match &rs.health_check {
                Some(h) => check_spec(&rctx, h)?,
                None => default_check.clone(),
            };
            if p == 0 && check.connect_port.is_none() && needs_port(&check.kind) {
                return Err(rctx.err(
                    "healthCheck.connectPort",
                    "the real server has no port: set connectPort for this check",
                ));
            }
            real_servers.push(RealServerSpec {
                name,
                addr: SocketAddr::new(addr, p),
                weight,
                drain: rs.drain,
                check,
            });
        }
        Ok(ServiceSpec {
            name: service.name.clone(),
            vip,
            port: vport,
            inhibit_on_failure: service.inhibit_on_failure,
            slow_start: duration(&ctx, "slowStart", service.slow_start.as_ref())?,
            sorry,
            quorum,
            real_servers,
        })
    }
}

fn needs_port(kind: &CheckKind) -> bool {
    !matches!(kind, CheckKind::None | CheckKind::Exec(_))
}

/// Validates the health side of every service of a director configuration.
pub fn services_from_proto(cfg: &v1::DirectorConfig) -> Result<Vec<ServiceSpec>, ConfigError> {
    cfg.services
        .iter()
        .map(|s| ServiceSpec::from_proto(s, &cfg.nodes))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(yaml: &str) -> Result<ServiceSpec, ConfigError> {
        let cfg: v1::DirectorConfig = lb_proto::yaml::from_str(yaml).expect("yaml");
        ServiceSpec::from_proto(&cfg.services[0], &cfg.nodes)
    }

    // Seed 000: a DNS check every 6 s with a 1 s timeout on two node real servers.
    #[test]
    fn seed_000_dns_check() {
        let s = service(
            r#"
nodes:
  - {name: rs1, role: realserver, address: 192.168.56.183}
services:
  - name: dns
    vip: 192.168.56.185
    port: 53
    protocol: udp
    healthCheck:
      dns: {name: www.abc.local, type: A}
      interval: 6s
      timeout: 1s
    realServers:
      - {node: rs1, port: 53, weight: 1}
      - {address: 192.168.56.184}
"#,
        )
        .unwrap();
        assert_eq!(s.real_servers.len(), 2);
        assert_eq!(s.real_servers[0].addr, "192.168.56.183:53".parse().unwrap());
        assert_eq!(s.real_servers[1].addr, "192.168.56.184:53".parse().unwrap());
        let c = &s.real_servers[0].check;
        assert_eq!(c.timing.interval, Duration::from_secs(6));
        assert_eq!(c.timing.timeout, Duration::from_secs(1));
        assert_eq!(c.timing.start_state, Health::Down);
        let CheckKind::Dns(d) = &c.kind else {
            panic!("not dns: {:?}", c.kind)
        };
        assert_eq!(d.record_type, RecordType::A);
        assert_eq!(d.name.to_string(), "www.abc.local.");
        assert_eq!(d.rcode, ResponseCode::NoError);
        assert_eq!(d.transport, DnsTransport::Udp);
    }

    // In: every example topology (one per seed). Out: every service's
    // health settings validate, and every real server has a check target.
    #[test]
    fn every_example_validates() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let cfg: v1::DirectorConfig = lb_proto::yaml::from_str(&text).unwrap();
            let services =
                services_from_proto(&cfg).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for s in &services {
                assert!(!s.real_servers.is_empty(), "{}: {}", path.display(), s.name);
                for rs in &s.real_servers {
                    assert_ne!(rs.check_target().port(), 0, "{}", rs.name);
                }
            }
            n += 1;
        }
        assert!(n >= 5, "only {n} examples found");
    }

    #[test]
    fn errors_name_service_real_server_and_field() {
        let e = service(
            r#"
services:
  - name: web
    port: 80
    healthCheck: {http: {bodyRegex: "(("}}
    realServers: [{address: 10.0.0.1}]
"#,
        )
        .unwrap_err();
        assert_eq!(e.service, "web");
        assert_eq!(e.real_server, None);
        assert_eq!(e.field, "healthCheck.http.bodyRegex");

        let e = service(
            r#"
services:
  - name: web
    port: 80
    realServers:
      - address: 10.0.0.1
        healthCheck: {dns: {type: BOGUS}}
"#,
        )
        .unwrap_err();
        assert_eq!(e.real_server.as_deref(), Some("10.0.0.1"));
        assert_eq!(e.field, "healthCheck.dns.type");
        assert!(
            e.to_string()
                .starts_with("service web, real server 10.0.0.1: healthCheck.dns.type:"),
            "{e}"
        );

        let e = service(
            r#"
services:
  - name: web
    port: 80
    healthCheck: {tcp: {}, interval: 1s, jitter: 2s}
    realServers: [{node: nowhere}]
"#,
        )
        .unwrap_err();
        assert_eq!(e.field, "healthCheck.jitter");

        let e = service(
            r#"
services:
  - name: web
    port: 80
    realServers: [{node: nowhere}]
"#,
        )
        .unwrap_err();
        assert_eq!(e.field, "realServers[0].node");
    }

    #[test]
    fn http_udp_exec_settings() {
        let s = service(
            r#"
services:
  - name: web
    vip: 10.0.0.100
    port: 443
    inhibitOnFailure: true
    slowStart: 10s
    sorryServer: {address: 10.0.0.9, inhibit: true}
    quorum: {value: 3, hysteresis: 1}
    healthCheck:
      http: {path: /health, host: www.example.org, tls: true, version: http2,
             expectedStatus: [200, 204], bodyDigest: "md5:d41d8cd98f00b204e9800998ecf8427e"}
      rise: 3
      fall: 2
      retries: 2
      delayBeforeRetry: 200ms
      warmup: 3s
      startState: up
    realServers:
      - {address: 10.0.0.1, weight: 5}
      - address: 10.0.0.2
        drain: true
        healthCheck:
          udp: {payloadHex: "0a0b", replyRegex: "^ok"}
          connectPort: 9000
      - address: 10.0.0.3
        healthCheck: {exec: {command: [/bin/true], dynamicWeight: true, user: nobody}}
"#,
        )
        .unwrap();
        assert!(s.inhibit_on_failure);
        assert_eq!(s.slow_start, Some(Duration::from_secs(10)));
        assert_eq!(
            s.sorry,
            Some(SorrySpec {
                addr: "10.0.0.9:443".parse().unwrap(),
                inhibit: true
            })
        );
        assert_eq!(
            s.quorum,
            QuorumSpec {
                value: 3,
                hysteresis: 1
            }
        );
        let rs = &s.real_servers;
        assert_eq!(rs[0].weight, 5);
        let t = rs[0].check.timing;
        assert_eq!((t.rise, t.fall, t.retries), (3, 2, 2));
        assert_eq!(t.delay_before_retry, Duration::from_millis(200));
        assert_eq!(t.warmup, Warmup::Random(Duration::from_secs(3)));
        assert_eq!(t.start_state, Health::Up);
        let CheckKind::Http(h) = &rs[0].check.kind else {
            panic!()
        };
        assert_eq!(h.version, HttpVersion::Http2);
        assert!(h.status_ok(204) && !h.status_ok(201));
        assert!(matches!(h.body, Some(BodyMatch::Md5(_))));
        assert!(rs[1].drain);
        assert_eq!(rs[1].check_target(), "10.0.0.2:9000".parse().unwrap());
        let CheckKind::Udp(u) = &rs[1].check.kind else {
            panic!()
        };
        assert_eq!(u.payload, vec![0x0a, 0x0b]);
        assert!(matches!(u.reply, Some(ReplyMatch::Regex(_))));
        let CheckKind::Exec(e) = &rs[2].check.kind else {
            panic!()
        };
        assert!(e.dynamic_weight);
        assert_eq!(e.user.as_deref(), Some("nobody"));
    }
}
