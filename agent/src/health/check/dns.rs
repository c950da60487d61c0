//! DNS check (keepalived DNS_CHECK, and the `nc` script of seed 000): one
//! query over UDP or TCP; the response code must be the expected one and the
//! answer section must hold every expected value. Messages are built and
//! parsed by hickory-proto.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::RData,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{tcp, udp};
use crate::health::{
    config::{DnsSpec, DnsTransport, normalise_answer, rcode_name},
    outcome::{CheckResult, Failure},
};

/// The query for `spec` with message id `id`.
pub fn query(spec: &DnsSpec, id: u16) -> Vec<u8> {
    let mut msg = Message::new();
    msg.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(spec.name.clone(), spec.record_type));
    msg.to_vec().expect("a query with one question encodes")
}

/// Text of one answer value, as compared with the expected answers.
pub fn answer_text(data: &RData) -> String {
    normalise_answer(&data.to_string())
}

/// Judges a response to query `id`.
pub fn judge(spec: &DnsSpec, id: u16, bytes: &[u8]) -> CheckResult {
    let msg = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(e) => {
            return CheckResult::Down(Failure::Malformed {
                reason: e.to_string(),
            });
        }
    };
    if msg.id() != id || msg.message_type() != MessageType::Response {
        return CheckResult::Down(Failure::Malformed {
            reason: format!("not a response to query {id}"),
        });
    }
    if msg.response_code() != spec.rcode {
        return CheckResult::Down(Failure::Rcode {
            got: rcode_name(msg.response_code()),
            want: rcode_name(spec.rcode),
        });
    }
    let answers: Vec<String> = msg
        .answers()
        .iter()
        .map(|r| answer_text(r.data()))
        .collect();
    for want in &spec.expected_answers {
        if !answers.contains(want) {
            return CheckResult::Down(Failure::AnswerMissing {
                value: want.clone(),
            });
        }
    }
    CheckResult::UP
}

/// One DNS check attempt.
pub async fn check(
    spec: &DnsSpec,
    target: SocketAddr,
    bind: Option<IpAddr>,
    timeout: Duration,
) -> CheckResult {
    let id: u16 = rand::random();
    let q = query(spec, id);
    let exchange = async {
        match spec.transport {
            DnsTransport::Udp => {
                let socket = udp::connected_socket(target, bind)
                    .await
                    .map_err(|e| Failure::from_io("connect", &e))?;
                socket.send(&q).await.map_err(|e| udp::recv_failure(&e))?;
                let mut buf = vec![0u8; 4096];
                // Datagrams for other ids (late answers to an earlier query) are skipped;
                // the outer timeout bounds the loop.
                loop {
                    let n = socket
                        .recv(&mut buf)
                        .await
                        .map_err(|e| udp::recv_failure(&e))?;
                    if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                        return Ok(buf[..n].to_vec());
                    }
                }
            }
            DnsTransport::Tcp => {
                // RFC 1035 section 4.2.2: a two-byte length before each message.
                let mut stream = tcp::connect(target, bind)
                    .await
                    .map_err(|e| Failure::from_io("connect", &e))?;
                let mut framed = (q.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&q);
                stream
                    .write_all(&framed)
                    .await
                    .map_err(|e| Failure::from_io("send", &e))?;
                let len = stream
                    .read_u16()
                    .await
                    .map_err(|e| Failure::from_io("recv", &e))?;
                let mut buf = vec![0u8; usize::from(len)];
                stream
                    .read_exact(&mut buf)
                    .await
                    .map_err(|e| Failure::from_io("recv", &e))?;
                Ok(buf)
            }
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(bytes)) => judge(spec, id, &bytes),
        Ok(Err(f)) => CheckResult::Down(f),
        Err(_) => CheckResult::Down(Failure::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::{
        op::ResponseCode,
        rr::{Name, Record, RecordType, rdata::A},
    };
    use std::str::FromStr;

    fn spec(answers: &[&str]) -> DnsSpec {
        DnsSpec {
            name: Name::from_str("www.abc.local.").unwrap(),
            record_type: RecordType::A,
            transport: DnsTransport::Udp,
            rcode: ResponseCode::NoError,
            expected_answers: answers.iter().map(|a| normalise_answer(a)).collect(),
        }
    }

    fn response(id: u16, rcode: ResponseCode, a: Option<[u8; 4]>) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id)
            .set_message_type(MessageType::Response)
            .set_response_code(rcode);
        m.add_query(Query::query(
            Name::from_str("www.abc.local.").unwrap(),
            RecordType::A,
        ));
        if let Some(a) = a {
            m.add_answer(Record::from_rdata(
                Name::from_str("www.abc.local.").unwrap(),
                60,
                RData::A(A::from(std::net::Ipv4Addr::from(a))),
            ));
        }
        m.to_vec().unwrap()
    }

    // In: our query's bytes. Out: hickory reads back one A question for the name, RD set.
    #[test]
    fn query_round_trips() {
        let q = Message::from_vec(&query(&spec(&[]), 0x1234)).unwrap();
        assert_eq!(q.id(), 0x1234);
        assert!(q.recursion_desired());
        assert_eq!(q.queries()[0].name().to_string(), "www.abc.local.");
        assert_eq!(q.queries()[0].query_type(), RecordType::A);
    }

    // In: responses with right/wrong id, rcode and answer. Out: each failure named.
    #[test]
    fn judges_rcode_answers_and_id() {
        let s = spec(&["1.2.3.4"]);
        let ok = response(7, ResponseCode::NoError, Some([1, 2, 3, 4]));
        assert_eq!(judge(&s, 7, &ok), CheckResult::UP);
        assert!(matches!(
            judge(&s, 8, &ok),
            CheckResult::Down(Failure::Malformed { .. })
        ));
        assert_eq!(
            judge(&s, 7, &response(7, ResponseCode::NXDomain, None)),
            CheckResult::Down(Failure::Rcode {
                got: "NXDOMAIN".into(),
                want: "NOERROR".into()
            })
        );
        assert_eq!(
            judge(
                &s,
                7,
                &response(7, ResponseCode::NoError, Some([5, 6, 7, 8]))
            ),
            CheckResult::Down(Failure::AnswerMissing {
                value: "1.2.3.4".into()
            })
        );
        assert!(matches!(
            judge(&s, 7, b"\x00\x07"),
            CheckResult::Down(Failure::Malformed { .. })
        ));
    }
}
