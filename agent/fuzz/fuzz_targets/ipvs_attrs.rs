//! The IPVS attribute decoder on arbitrary bytes: it must return, never
//! panic, and what it decodes must encode and decode to the same value.
#![no_main]

use lb_agent::ipvs::codec::{Reply, Request, decode_dest, decode_reply, decode_service};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_service(data);
    let _ = decode_dest(data);
    match decode_reply(data) {
        Ok(Reply::Service(entry)) => {
            let again = decode_reply(&Request::NewService(entry.service.clone()).encode());
            assert!(matches!(again, Ok(Reply::Service(e)) if e.service == entry.service));
        }
        Ok(Reply::Dest(entry)) => {
            let key = lb_agent::ipvs::ServiceKey::Fwmark {
                family: lb_agent::ipvs::Family::Inet,
                mark: 1,
            };
            let again = decode_reply(&Request::NewDest(key, entry.dest).encode());
            assert!(matches!(again, Ok(Reply::Dest(e)) if e.dest == entry.dest));
        }
        _ => {}
    }
});
