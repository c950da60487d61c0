//! Seeds 001 to 004 end to end, each run by lb alone from its topology in
//! `examples/`, moved onto a lab segment (10.0.0.0/24, interface eth0):
//! `lb-agent director` on both directors, `lb-agent realserver` and an HTTP
//! server (answering its host name) on each real server, a client.
//!
//! In and out, per seed:
//! - 001 HTTP over LVS-DR (VRRP v2 with a password, TCP checks): the master
//!   is director-a and HTTP through the VIP reaches web-a and web-b; on
//!   SIGTERM director-a gives the VIP away and keeps its IPVS rules, and
//!   director-b carries the traffic;
//! - 002 active-active (two instances with swapped priorities, HTTP checks,
//!   tracked services): director1 is master of VI_1, director2 of VI_2, and
//!   HTTP through both VIPs reaches rs1 and rs2;
//! - 003 HTTP over LVS-TUN (IPIP, TCP checks on port 80): HTTP through the
//!   VIP reaches rs01 and rs02, decapsulated on tunl0;
//! - 004 gateway tracking: node-a holds the three VIPs; when node-a alone
//!   cannot reach the gateway its script fails, node-b takes the VIPs and the
//!   client still reaches them; with the gateway back node-a takes them back.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use lb_lab::{Host, Lab, Proc, http_url, scaled, wait_for, wait_for_ok};
use serde_json::Value;

use crate::agents::{Director, array, example, relocate, start_realserver};

/// A seed's lab. Field order is drop order: processes before namespaces.
struct SeedLab {
    directors: Vec<Director>,
    _procs: Vec<Proc>,
    client: Host,
    hosts: Vec<Host>,
    _lab: Lab,
}

/// What a seed lab is made of.
struct Seed<'a> {
    file: &'a str,
    directors: &'a [(&'a str, &'a str)],
    real_servers: &'a [(&'a str, &'a str)],
    /// Example VIP -> lab VIP.
    vips: &'a [(&'a str, &'a str)],
    /// How the real servers hold the VIPs (`dr`, `tun`).
    forwarding: &'a str,
    /// Other hosts (a gateway), up before the agents start.
    others: &'a [(&'a str, &'a str)],
}

impl SeedLab {
    fn start(name: &str, seed: &Seed, tweak: impl FnOnce(&mut Value)) -> Result<SeedLab> {
        lb_lab::kernel::require_ipvs();
        let lab = Lab::new(name)?;
        let client = lab.host("client", &["10.0.0.1/24"])?;
        let mut hosts = Vec::new();
        let mut procs = Vec::new();
        for (n, addr) in seed.directors {
            hosts.push(lab.host(n, &[&format!("{addr}/24")])?);
        }
        let rs_vips: Vec<String> = seed
            .vips
            .iter()
            .map(|(_, v)| format!("{{address: {v}, forwarding: {}}}", seed.forwarding))
            .collect();
        for (n, addr) in seed.real_servers {
            let rs = lab.host(n, &[&format!("{addr}/24")])?;
            procs.push(start_realserver(&rs, &format!("[{}]", rs_vips.join(", ")))?);
            procs.push(rs.http_server(80)?);
            hosts.push(rs);
        }
        for (n, addr) in seed.others {
            hosts.push(lab.host(n, &[&format!("{addr}/24")])?);
        }
        let mut t = example(seed.file)?;
        let nodes: Vec<(&str, &str)> = seed
            .directors
            .iter()
            .chain(seed.real_servers)
            .copied()
            .collect();
        relocate(&mut t, &nodes, seed.vips, "eth0")?;
        // Checks every second: the examples' 3 s to 6 s only make a test wait.
        for service in array(&mut t, "services")? {
            if let Some(check) = service.get_mut("healthCheck") {
                check["interval"] = Value::from("1s");
                check["timeout"] = Value::from("1s");
            }
        }
        tweak(&mut t);
        let mut directors = Vec::new();
        for h in &hosts[..seed.directors.len()] {
            directors.push(Director::start(h, &t)?);
        }
        Ok(SeedLab {
            directors,
            _procs: procs,
            client,
            hosts,
            _lab: lab,
        })
    }

    fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name() == name)
            .expect("a host of the seed")
    }

    /// HTTP through `vip` reaches exactly `names`, within a bounded number of
    /// fetches and time (the checks may still be bringing real servers up).
    fn http_reaches(&self, vip: &str, names: &[&str]) -> Result<()> {
        let url = http_url(vip.parse()?, 80);
        let want: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
        wait_for_ok(
            || {
                let mut seen = BTreeSet::new();
                for _ in 0..(4 * names.len()) {
                    let body = self
                        .client
                        .http_get_timeout(&url, scaled(Duration::from_secs(2)))
                        .map_err(|e| e.to_string())?;
                    seen.insert(body.trim().to_string());
                    if seen == want {
                        return Ok(());
                    }
                }
                Err(format!("HTTP through {vip} reached {seen:?}"))
            },
            scaled(Duration::from_secs(30)),
        )
        .with_context(|| {
            let tables: Vec<String> = self
                .directors
                .iter()
                .map(|d| {
                    format!(
                        "{}: {}\n{:?}\n{}",
                        d.host().name(),
                        d.host().run_ok(["ipvsadm", "-Ln"]).unwrap_or_default(),
                        d.status(),
                        d.log()
                    )
                })
                .collect();
            format!("HTTP through {vip}:\n{}", tables.join("\n"))
        })
    }
}

fn settle() -> Duration {
    scaled(Duration::from_secs(15))
}

#[test]
fn seed001_http_over_dr() -> Result<()> {
    let mut lab = SeedLab::start(
        "seed001",
        &Seed {
            file: "seed-001-http-dr.yaml",
            directors: &[("director-a", "10.0.0.2"), ("director-b", "10.0.0.3")],
            real_servers: &[("web-a", "10.0.0.31"), ("web-b", "10.0.0.32")],
            vips: &[("172.16.0.30", "10.0.0.30")],
            forwarding: "dr",
            others: &[],
        },
        |_| {},
    )?;
    lab.directors[0].wait_vrrp("VI_1", "VRRP_STATE_MASTER", settle())?;
    lab.directors[1].wait_vrrp("VI_1", "VRRP_STATE_BACKUP", settle())?;
    lab.http_reaches("10.0.0.30", &["web-a", "web-b"])?;

    // SIGTERM on the master: it steps down (priority 0) and takes its VIP
    // away, its IPVS rules stay; the backup carries the traffic.
    let mut a = lab.directors.remove(0);
    let status = a.terminate(scaled(Duration::from_secs(10)));
    ensure!(
        status.is_some_and(|s| s.success()),
        "director-a on SIGTERM: {status:?}\n{}",
        a.log()
    );
    lab.directors[0].wait_vrrp("VI_1", "VRRP_STATE_MASTER", settle())?;
    ensure!(
        !a.host().has_addr("10.0.0.30")?,
        "director-a kept the VIP after SIGTERM"
    );
    let kept = crate::agents::ipvs_dests(a.host(), "TCP", "10.0.0.30:80")?;
    ensure!(
        kept.as_ref().is_some_and(|d| d.len() == 2),
        "director-a's IPVS rules after SIGTERM: {kept:?}"
    );
    lab.http_reaches("10.0.0.30", &["web-a", "web-b"])
}

#[test]
fn seed002_active_active() -> Result<()> {
    let lab = SeedLab::start(
        "seed002",
        &Seed {
            file: "seed-002-active-active.yaml",
            directors: &[("director1", "10.0.0.2"), ("director2", "10.0.0.3")],
            real_servers: &[("rs1", "10.0.0.4"), ("rs2", "10.0.0.5")],
            vips: &[("172.16.1.8", "10.0.0.8"), ("172.16.1.9", "10.0.0.9")],
            forwarding: "dr",
            others: &[],
        },
        |_| {},
    )?;
    for (i, (master, backup)) in [(0, 1), (1, 0)].into_iter().enumerate() {
        let instance = format!("VI_{}", i + 1);
        lab.directors[master].wait_vrrp(&instance, "VRRP_STATE_MASTER", settle())?;
        lab.directors[backup].wait_vrrp(&instance, "VRRP_STATE_BACKUP", settle())?;
    }
    ensure!(lab.host("director1").has_addr("10.0.0.8")?);
    ensure!(lab.host("director2").has_addr("10.0.0.9")?);
    lab.http_reaches("10.0.0.8", &["rs1", "rs2"])?;
    lab.http_reaches("10.0.0.9", &["rs1", "rs2"])
}

#[test]
fn seed003_http_over_tun() -> Result<()> {
    lb_lab::Cmd::new(["modprobe", "ipip"]).run_ok()?;
    let lab = SeedLab::start(
        "seed003",
        &Seed {
            file: "seed-003-http-tun.yaml",
            directors: &[("dr01", "10.0.0.90"), ("dr02", "10.0.0.91")],
            real_servers: &[("rs01", "10.0.0.92"), ("rs02", "10.0.0.93")],
            vips: &[("192.168.43.166", "10.0.0.166")],
            forwarding: "tun",
            others: &[],
        },
        |_| {},
    )?;
    lab.directors[0].wait_vrrp("VI_1", "VRRP_STATE_MASTER", settle())?;
    lab.http_reaches("10.0.0.166", &["rs01", "rs02"])?;
    let table = lab.host("dr01").run_ok(["ipvsadm", "-Ln"])?;
    ensure!(
        table.lines().filter(|l| l.contains("Tunnel")).count() == 2,
        "dr01 does not tunnel to both real servers:\n{table}"
    );
    Ok(())
}

#[test]
fn seed004_gateway_tracking() -> Result<()> {
    const GATEWAY: &str = "10.0.0.254";
    const VIPS: [&str; 3] = ["10.0.0.16", "10.0.0.17", "10.0.0.18"];
    let lab = SeedLab::start(
        "seed004",
        &Seed {
            file: "seed-004-gateway-track.yaml",
            directors: &[("node-a", "10.0.0.11"), ("node-b", "10.0.0.12")],
            real_servers: &[],
            vips: &[
                ("192.168.200.16", VIPS[0]),
                ("192.168.200.17", VIPS[1]),
                ("192.168.200.18", VIPS[2]),
            ],
            forwarding: "dr",
            others: &[("gw", GATEWAY)],
        },
        |t| {
            let group = &mut t["directorGroups"][0];
            // The gateway is a lab host; no mail leaves the lab.
            if let Some(g) = group.as_object_mut() {
                g.remove("email");
            }
            if let Some(n) = group
                .pointer_mut("/vrrp/instances/0")
                .and_then(Value::as_object_mut)
            {
                n.remove("notify");
            }
            let script = &mut group["vrrp"]["scripts"][0];
            script["command"] = serde_json::json!(["ping", "-c1", "-W1", GATEWAY]);
            script["interval"] = Value::from("1s");
        },
    )?;
    let (a, b) = (&lab.directors[0], &lab.directors[1]);
    a.wait_vrrp("VI_1", "VRRP_STATE_MASTER", settle())?;
    b.wait_vrrp("VI_1", "VRRP_STATE_BACKUP", settle())?;
    let pings = |holder: &Host| -> Result<()> {
        for vip in VIPS {
            ensure!(holder.has_addr(vip)?, "{} lacks {vip}", holder.name());
            lab.client.run_ok(["ping", "-c1", "-W2", vip])?;
        }
        Ok(())
    };
    pings(a.host())?;

    // node-a alone loses the gateway: its script fails, node-b takes over.
    a.host()
        .ip(["route", "add", "blackhole", &format!("{GATEWAY}/32")])?;
    a.wait_vrrp("VI_1", "VRRP_STATE_FAULT", settle())?;
    b.wait_vrrp("VI_1", "VRRP_STATE_MASTER", settle())?;
    wait_for(|| pings(b.host()).is_ok(), scaled(Duration::from_secs(5)))
        .context("the VIPs on node-b")?;

    // The gateway back: node-a (priority 100) takes the VIPs back.
    a.host()
        .ip(["route", "del", "blackhole", &format!("{GATEWAY}/32")])?;
    a.wait_vrrp("VI_1", "VRRP_STATE_MASTER", settle())?;
    b.wait_vrrp("VI_1", "VRRP_STATE_BACKUP", settle())?;
    wait_for(|| pings(a.host()).is_ok(), scaled(Duration::from_secs(5)))
        .context("the VIPs back on node-a")
}
