//! Director agent benchmark, on a kernel with IPVS
//! (`integration-tests/vm/run --bench agent`, integration-tests/bench/agent.sh):
//!
//! - the resident memory of an idle `lb-agent director` running seed 000
//!   (VRRP, one DNS service, two real servers answering its checks), once it
//!   has settled;
//! - one real server's weight changed in a topology of `services` services
//!   (default 1,000) and applied by SIGHUP, as the agent reports it in
//!   `last-apply.json`, beside `ipvsadm -e` of the same change in the same
//!   boot, and their ratio: `agent_apply_change_ms` until the kernel holds
//!   it (what `ipvsadm -e` does), `agent_apply_change_stored_ms` until it is
//!   also stored as the last good configuration and the apply is answered.
//!
//! Prints `BENCH <name> <value> <unit>` lines; figures, not verdicts. Run as
//! root; the argument is the number of services; options that cargo passes
//! (`--bench`) are ignored.

#[allow(dead_code)]
#[path = "../tests/kernel/agents.rs"]
mod agents;

use std::process::Command;
use std::time::{Duration, Instant};

use agents::{Director, RECONCILE_INTERVAL, example, relocate};
use anyhow::{Context, Result, ensure};
use lb_lab::{Host, Lab, Proc, scaled, wait_for, wait_for_ok};
use serde_json::{Value, json};

const VIP: &str = "10.0.0.100";
const RS: [(&str, &str); 2] = [("rs1", "10.0.0.11"), ("rs2", "10.0.0.12")];

fn main() -> Result<()> {
    let services: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .map_or(Ok(1000), |a| a.parse())?;
    ensure!(
        (1..=20_000).contains(&services),
        "1 to 20000 services, not {services}"
    );
    lb_lab::kernel::require_ipvs();
    let lab = Lab::new("bench-agent")?;
    let ds1 = lab.host("ds1", &["10.0.0.2/24"])?;
    let ds2 = lab.host("ds2", &["10.0.0.3/24"])?;
    let mut dns = Vec::new();
    for (name, addr) in RS {
        let rs = lab.host(name, &[&format!("{addr}/24")])?;
        dns.push(dnsmasq(&rs, addr)?);
    }
    let mut seed = example("seed-000-dns-dr.yaml")?;
    relocate(
        &mut seed,
        &[
            ("ds1", "10.0.0.2"),
            ("ds2", "10.0.0.3"),
            (RS[0].0, RS[0].1),
            (RS[1].0, RS[1].1),
        ],
        &[("192.168.56.185", VIP)],
        "eth0",
    )?;
    seed["services"][0]["healthCheck"]["interval"] = Value::from("1s");

    idle_rss(&ds1, &seed)?;
    apply_change(&ds2, &seed, services)?;
    drop(dns);
    Ok(())
}

/// `BENCH agent_rss_idle_mib`: seed 000 on ds1, both real servers up, after
/// a settling time of ten reconcile intervals.
fn idle_rss(host: &Host, seed: &Value) -> Result<()> {
    let d = Director::start(host, seed)?;
    let up = || {
        RS.iter()
            .all(|(n, _)| d.health("dns", n).as_deref() == Some("HEALTH_STATE_UP"))
    };
    wait_for(up, scaled(Duration::from_secs(30)))
        .with_context(|| format!("seed 000 never healthy: {:?}\n{}", d.status(), d.log()))?;
    std::thread::sleep(scaled(RECONCILE_INTERVAL * 10));
    let pid = d.pid().context("agent not started")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    println!("BENCH agent_rss_idle_mib {:.1} MiB", kib / 1024.0);
    Ok(())
}

/// `BENCH agent_apply_change_ms`, `ipvsadm_edit_ms` and their ratio: one
/// weight in `n` services, by SIGHUP and by `ipvsadm -e`.
fn apply_change(host: &Host, seed: &Value, n: usize) -> Result<()> {
    let mut t = seed.clone();
    t["services"] = Value::Array((0..n).map(service).collect());
    let mut d = Director::start(host, &t)?;
    let loaded = || -> Result<(), String> {
        let listing = host.run_ok(["ipvsadm", "-Ln"]).map_err(|e| e.to_string())?;
        let got = listing.lines().filter(|l| l.starts_with("TCP")).count();
        match d.last_apply() {
            Some(a) if a["ok"] == true && got == n => Ok(()),
            a => Err(format!("{got} of {n} services in IPVS, last apply {a:?}")),
        }
    };
    wait_for_ok(loaded, scaled(Duration::from_secs(120)))
        .with_context(|| format!("{n} services never applied\n{}", d.log()))?;
    let mark = d.apply_mark();

    // The same change both ways: the middle service's first real server,
    // weight 1 -> 2 by the agent, then 2 -> 3 by ipvsadm.
    let k = n / 2;
    t["services"][k]["realServers"][0]["weight"] = Value::from(2);
    d.reload(&t)?;
    let apply = d.wait_apply(&mark, scaled(Duration::from_secs(60)))?;
    ensure!(
        apply["ok"] == true && apply["operations"].as_u64() == Some(1),
        "the reload took other than one IPVS write: {apply}"
    );
    // To the kernel, as `ipvsadm -e` goes; and with the configuration
    // stored as the last good one, after which the apply is answered.
    let agent_ms = apply["kernelUs"].as_f64().context("kernelUs missing")? / 1000.0;
    let stored_ms = apply["durationUs"].as_f64().context("durationUs missing")? / 1000.0;
    let (port, rs) = (port(k), RS[0].1);
    let argv = [
        "ipvsadm".to_string(),
        "-e".into(),
        "-t".into(),
        format!("{VIP}:{port}"),
        "-r".into(),
        format!("{rs}:{port}"),
        "-g".into(),
        "-w".into(),
        "3".into(),
    ];
    // Timed inside the namespace, without `ip netns exec` in the figure.
    let ipvsadm_ms = host.in_netns(move || -> Result<f64> {
        let t0 = Instant::now();
        let status = Command::new(&argv[0]).args(&argv[1..]).status()?;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        ensure!(status.success(), "{argv:?}: {status}");
        Ok(ms)
    })??;
    println!("# {n} services x 2 real servers; one weight changed");
    println!("BENCH agent_apply_change_ms {agent_ms:.3} ms");
    println!("BENCH agent_apply_change_stored_ms {stored_ms:.3} ms");
    println!("BENCH ipvsadm_edit_ms {ipvsadm_ms:.3} ms");
    println!(
        "BENCH agent_apply_change_ratio {:.2} ratio",
        agent_ms / ipvsadm_ms
    );
    let listing = host.run_ok(["ipvsadm", "-Ln", "-t", &format!("{VIP}:{port}")])?;
    ensure!(
        listing.lines().any(
            |l| l.contains(&format!("{rs}:{port}")) && l.split_whitespace().nth(3) == Some("3")
        ),
        "ipvsadm -e not in the table:\n{listing}"
    );
    d.kill();
    Ok(())
}

fn port(i: usize) -> usize {
    10_000 + i
}

/// Service `i` of the large topology: TCP, two real servers, no check, so
/// that only IPVS work is measured.
fn service(i: usize) -> Value {
    let port = port(i);
    json!({
        "name": format!("svc-{i}"),
        "directorGroup": "dns-lb",
        "vip": VIP,
        "port": port,
        "protocol": "tcp",
        "scheduler": "wrr",
        "forwarding": "dr",
        "healthCheck": {"none": {}},
        "realServers": RS.iter().map(|(n, _)| json!({"node": n, "port": port, "weight": 1})).collect::<Vec<_>>(),
    })
}

/// dnsmasq answering seed 000's check on `addr`.
fn dnsmasq(host: &Host, addr: &str) -> Result<Proc> {
    let p = host.spawn([
        "dnsmasq",
        "--no-daemon",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--pid-file=",
        "--bind-dynamic",
        &format!("--listen-address={addr}"),
        "--address=/www.abc.local/10.9.9.1",
    ])?;
    Ok(p)
}
