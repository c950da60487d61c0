//! LVS-DR smoke test: HTTP through a VIP to two real servers.
//!
//! ```text
//!   client   10.10.0.1  fd00:10::1  --+
//!   director 10.10.0.2  fd00:10::2    +  VIPs on eth0; ipvsadm -A -t VIP:80 -s rr, -a ... -g
//!   rs1      10.10.0.11 fd00:10::11 --+  VIPs on lo, arp_ignore=1, arp_announce=2,
//!   rs2      10.10.0.12 fd00:10::12 --+  HTTP :80 answering its name ("rs1", "rs2")
//!   VIPs: 10.10.0.100 and fd00:10::100
//! ```
//!
//! IPVS is set up with ipvsadm and the real servers with shell commands; lb's
//! own agent replaces both in later tests. The client fetches the VIP a
//! bounded number of times and must hear both real servers; a second test
//! stops one real server and checks that the same verdict then fails.

use std::time::Duration;

use anyhow::Result;
use lb_lab::{Host, Lab, Proc, http_url, scaled};

const VIP: &str = "10.10.0.100";
const VIP6: &str = "fd00:10::100";
const REQUESTS: usize = 6;

struct DrLab {
    // Field order is drop order: servers stop before the lab goes.
    http: Vec<Proc>,
    client: Host,
    director: Host,
    _lab: Lab,
}

/// Builds the lab of the module docs.
fn dr_lab(name: &str) -> Result<DrLab> {
    lb_lab::kernel::require_ipvs();
    let lab = Lab::new(name)?;
    let client = lab.host("client", &["10.10.0.1/24", "fd00:10::1/64"])?;
    let director = lab.host("director", &["10.10.0.2/24", "fd00:10::2/64"])?;
    director.add_addr("eth0", &format!("{VIP}/32"))?;
    director.add_addr("eth0", &format!("{VIP6}/128"))?;
    let services = [format!("{VIP}:80"), format!("[{VIP6}]:80")];
    for service in &services {
        director.run_ok(["ipvsadm", "-A", "-t", service, "-s", "rr"])?;
    }

    let mut http = Vec::new();
    for (name, addr, addr6) in [
        ("rs1", "10.10.0.11", "fd00:10::11"),
        ("rs2", "10.10.0.12", "fd00:10::12"),
    ] {
        let rs = lab.host(name, &[&format!("{addr}/24"), &format!("{addr6}/64")])?;
        // The VIP is local to the real server but it must not answer ARP for
        // it (arp_ignore=1) nor use it as ARP source (arp_announce=2). IPv6
        // answers neighbour solicitations only for addresses of the receiving
        // interface, so a VIP on lo needs nothing more.
        rs.set_sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
        rs.set_sysctl("net.ipv4.conf.all.arp_announce", "2")?;
        rs.add_addr("lo", &format!("{VIP}/32"))?;
        rs.add_addr("lo", &format!("{VIP6}/128"))?;
        http.push(rs.http_server(80)?);
        for (service, real) in services
            .iter()
            .zip([format!("{addr}:80"), format!("[{addr6}]:80")])
        {
            director.run_ok(["ipvsadm", "-a", "-t", service, "-r", &real, "-g"])?;
        }
    }
    Ok(DrLab {
        http,
        client,
        director,
        _lab: lab,
    })
}

/// What `REQUESTS` fetches of the VIP returned: bodies and errors.
#[derive(Debug, Default)]
struct Fetches {
    names: Vec<String>,
    errors: Vec<String>,
}

fn fetch_vip(client: &Host, vip: &str) -> Fetches {
    let url = http_url(vip.parse().expect("VIP"), 80);
    let mut fetches = Fetches::default();
    for _ in 0..REQUESTS {
        match client.http_get_timeout(&url, scaled(Duration::from_secs(2))) {
            Ok(body) => fetches.names.push(body.trim().to_string()),
            Err(e) => fetches.errors.push(e.to_string()),
        }
    }
    fetches
}

/// The smoke verdict: every request answered, by both real servers.
fn both_real_servers_answer(f: &Fetches) -> Result<(), String> {
    if !f.errors.is_empty() {
        return Err(format!(
            "{} of {REQUESTS} requests failed: {:?}",
            f.errors.len(),
            f.errors
        ));
    }
    for rs in ["rs1", "rs2"] {
        if !f.names.iter().any(|n| n == rs) {
            return Err(format!("{rs} never answered; answers: {:?}", f.names));
        }
    }
    Ok(())
}

#[test]
fn dr_http_reaches_both_real_servers() -> Result<()> {
    let lab = dr_lab("dr-smoke")?;
    for vip in [VIP, VIP6] {
        let fetches = fetch_vip(&lab.client, vip);
        if let Err(why) = both_real_servers_answer(&fetches) {
            let table = lab.director.run_ok(["ipvsadm", "-Ln", "--stats"])?;
            panic!("LVS-DR through {vip}: {why}\nIPVS table:\n{table}");
        }
    }
    // The connections went through IPVS, not around it: every real server
    // of both services counted connections.
    let table = lab.director.run_ok(["ipvsadm", "-Ln", "--stats"])?;
    let counted = table
        .lines()
        .filter(|l| l.trim_start().starts_with("->") && !l.contains("RemoteAddress"))
        .filter(|l| {
            l.split_whitespace()
                .nth(2)
                .and_then(|c| c.parse::<u64>().ok())
                > Some(0)
        })
        .count();
    assert_eq!(
        counted, 4,
        "expected 4 real servers with connections:\n{table}"
    );
    Ok(())
}

#[test]
fn dr_smoke_verdict_fails_when_a_real_server_is_down() -> Result<()> {
    let mut lab = dr_lab("dr-broken")?;
    // rs2's HTTP server stops; IPVS still schedules to it (no health check).
    lab.http[1].kill();
    let fetches = fetch_vip(&lab.client, VIP);
    let verdict = both_real_servers_answer(&fetches);
    assert!(
        verdict.is_err(),
        "smoke verdict passed with rs2 down: {fetches:?}"
    );
    // Round robin sends half the requests to the dead server: they fail,
    // the others are answered by rs1 alone.
    assert!(!fetches.errors.is_empty(), "{fetches:?}");
    assert!(
        fetches.names.iter().all(|n| n == "rs1") && !fetches.names.is_empty(),
        "{fetches:?}"
    );
    Ok(())
}
