//! Fuzzes the VRRP decoder: any bytes, from any source and destination, must
//! decode or fail with an error, never panic; and whatever decodes must encode
//! back to a message that decodes to the same value.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_agent::vrrp::packet::{Advertisement, Ipv4Header, MULTICAST_V4, MULTICAST_V6};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (src, dst, body) = if selector & 1 == 0 {
        if rest.len() < 4 {
            return;
        }
        let o: [u8; 4] = rest[..4].try_into().unwrap();
        (IpAddr::V4(Ipv4Addr::from(o)), IpAddr::V4(MULTICAST_V4), &rest[4..])
    } else {
        if rest.len() < 16 {
            return;
        }
        let o: [u8; 16] = rest[..16].try_into().unwrap();
        (IpAddr::V6(Ipv6Addr::from(o)), IpAddr::V6(MULTICAST_V6), &rest[16..])
    };
    let _ = Ipv4Header::parse(body);
    if let Ok(adv) = Advertisement::decode(body, src, dst) {
        let again = adv.encode(src, dst);
        assert_eq!(Advertisement::decode(&again, src, dst).as_ref(), Ok(&adv));
    }
});
