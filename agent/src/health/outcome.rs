//! What one check attempt found: up (perhaps with a weight), or down and why.

use std::io;

/// The result of one check attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    /// Passed; an exec check in dynamic-weight mode also sets the weight.
    Up {
        /// Weight asked for by the check (exit code - 2), if any.
        weight: Option<u32>,
    },
    /// Failed.
    Down(Failure),
}

impl CheckResult {
    /// Up with no weight.
    pub const UP: CheckResult = CheckResult::Up { weight: None };
}

/// Why a check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Nothing listens: TCP RST.
    #[error("connection refused")]
    Refused,
    /// No answer within the timeout.
    #[error("timed out")]
    Timeout,
    /// An ICMP port unreachable came back for a UDP datagram.
    #[error("ICMP port unreachable")]
    IcmpUnreachable,
    /// The host or network cannot be reached.
    #[error("unreachable: {reason}")]
    Unreachable {
        /// The OS's words.
        reason: String,
    },
    /// Any other I/O error.
    #[error("{op}: {reason}")]
    Io {
        /// What was being done ("connect", "send", ...).
        op: &'static str,
        /// The OS's words.
        reason: String,
    },
    /// TLS handshake failed (certificate, protocol).
    #[error("TLS: {reason}")]
    Tls {
        /// Why.
        reason: String,
    },
    /// The peer spoke broken HTTP (or closed early).
    #[error("HTTP: {reason}")]
    Http {
        /// Why.
        reason: String,
    },
    /// Unexpected HTTP status.
    #[error("HTTP status {got}, want {want}")]
    Status {
        /// Status received.
        got: u16,
        /// What was wanted ("200..299", "200, 204").
        want: String,
    },
    /// The body does not match the regular expression.
    #[error("body does not match /{pattern}/")]
    BodyMismatch {
        /// The pattern.
        pattern: String,
    },
    /// The body's digest differs.
    #[error("body digest {got}, want {want}")]
    DigestMismatch {
        /// Digest of the body, hex.
        got: String,
        /// Expected digest, hex.
        want: String,
    },
    /// No UDP reply within the timeout where one is required.
    #[error("no reply")]
    NoReply,
    /// A UDP reply came but does not match.
    #[error("reply does not match ({got})")]
    ReplyMismatch {
        /// The start of the reply, escaped.
        got: String,
    },
    /// DNS answer with the wrong response code.
    #[error("rcode {got}, want {want}")]
    Rcode {
        /// Received.
        got: String,
        /// Expected.
        want: String,
    },
    /// DNS answer lacks an expected value.
    #[error("answer {value} missing")]
    AnswerMissing {
        /// The expected value.
        value: String,
    },
    /// A DNS reply that does not parse or does not answer our query.
    #[error("malformed reply: {reason}")]
    Malformed {
        /// Why.
        reason: String,
    },
    /// The command exited with a code that means down.
    #[error("exit code {code}")]
    ExitCode {
        /// The code.
        code: i32,
    },
    /// The command was killed by a signal.
    #[error("killed by signal {signal}")]
    Signal {
        /// Signal number.
        signal: i32,
    },
    /// The command could not be started.
    #[error("cannot run {program}: {reason}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        reason: String,
    },
    /// gRPC health answered something other than SERVING.
    #[error("gRPC health status {status}")]
    NotServing {
        /// The status name (NOT_SERVING, SERVICE_UNKNOWN, UNKNOWN).
        status: String,
    },
    /// The gRPC call failed.
    #[error("gRPC {code}: {message}")]
    Grpc {
        /// gRPC code name.
        code: String,
        /// Message.
        message: String,
    },
}

impl Failure {
    /// Maps an I/O error: refused and unreachable get their own variants.
    pub fn from_io(op: &'static str, e: &io::Error) -> Failure {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Failure::Refused,
            io::ErrorKind::TimedOut => Failure::Timeout,
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                Failure::Unreachable {
                    reason: e.to_string(),
                }
            }
            _ => Failure::Io {
                op,
                reason: e.to_string(),
            },
        }
    }

    /// Finds an I/O error in an error's source chain and maps it, or falls back.
    pub fn from_error_chain(
        e: &(dyn std::error::Error + 'static),
        fallback: impl FnOnce(String) -> Failure,
    ) -> Failure {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            if let Some(io) = err.downcast_ref::<io::Error>() {
                return Failure::from_io("connect", io);
            }
            cur = err.source();
        }
        fallback(error_chain_text(e))
    }
}

/// "outer: inner: innermost" for logs and failure reasons.
pub fn error_chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cur = err.source();
    }
    text
}
