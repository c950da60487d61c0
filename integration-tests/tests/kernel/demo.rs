//! `make demo`: seed 000 (DNS over LVS-DR, two directors) run by lb alone,
//! told as it goes. The lab of [`crate::dns_dr_lab`]: answers from both real
//! servers through the VIP, a real server's DNS stopped and the traffic moving
//! to the other, the master director killed and the backup taking over while
//! the answers continue. It ends by itself.
//!
//! Ignored in the kernel suite: `director_dns_dr` proves the same steps with
//! stricter asserts, and one boot need not do them twice. `make demo` runs it
//! with `--include-ignored`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use lb_lab::{scaled, wait_for};

use crate::dns_dr_lab::{
    CHECK_INTERVAL, DnsDrLab, FALL, INSTANCE, IPVS_SERVICE, NAME, REAL_SERVERS, VIP,
    advert_interval, answered_by,
};

const QUERIES: usize = 4;

fn say(line: impl AsRef<str>) {
    println!("==> {}", line.as_ref());
}

/// `QUERIES` digs through the VIP, one line each; fails unless every one was
/// answered by one of `from`, all of them.
fn show_digs(lab: &DnsDrLab, from: &[&str]) -> Result<()> {
    let answers = lab.digs(QUERIES);
    for a in &answers {
        match a {
            Ok(rs) => {
                let ip = REAL_SERVERS
                    .iter()
                    .find(|(n, _, _)| n == rs)
                    .map_or("?", |r| r.2);
                say(format!("dig @{VIP} {NAME}: {ip} ({rs})"));
            }
            Err(e) => say(format!("dig @{VIP} {NAME}: no answer: {e}")),
        }
    }
    answered_by(&answers, from)
}

fn show_ipvs(lab: &DnsDrLab, i: usize) -> Result<()> {
    let host = lab.ds(i).host();
    let table = host.run_ok(["ipvsadm", "-Ln"])?;
    say(format!("ipvsadm -Ln on {}:", host.name()));
    for line in table.lines().skip(1) {
        println!("    {line}");
    }
    Ok(())
}

#[test]
#[ignore = "make demo runs it; director_dns_dr covers the same steps in the suite"]
fn demo_seed000() -> Result<()> {
    say(format!(
        "seed 000: DNS over LVS-DR. client 10.0.0.1, directors ds1 10.0.0.2 and ds2 10.0.0.3 \
         (lb-agent director, VRRP VI_1 vrid 50, priorities 100/99), real servers rs1 {} and \
         rs2 {} (lb-agent realserver, dnsmasq); VIP {VIP} udp/53 wrr",
        REAL_SERVERS[0].1, REAL_SERVERS[1].1
    ));
    let started = Instant::now();
    let mut lab = DnsDrLab::start("demo")?;
    say(format!(
        "agents up in {:.1?}: ds1 {}, ds2 {}; both real servers healthy",
        started.elapsed(),
        lab.ds(0).vrrp_state(INSTANCE).unwrap_or_default(),
        lab.ds(1).vrrp_state(INSTANCE).unwrap_or_default()
    ));
    show_ipvs(&lab, 0)?;

    say("queries through the VIP reach both real servers (wrr):");
    show_digs(&lab, &["rs1", "rs2"])?;

    say("stopping dnsmasq on rs1");
    lab.stop_dns(0);
    let t = Instant::now();
    let fall = scaled(CHECK_INTERVAL * (FALL + 1) + Duration::from_secs(2));
    lab.wait_in_ipvs(lab.ds(0), &["rs2"], fall)?;
    say(format!(
        "ds1's DNS check marked rs1 {} after {:.1?}: rs1 left IPVS",
        lab.ds(0).health("dns", "rs1").unwrap_or_default(),
        t.elapsed()
    ));
    show_ipvs(&lab, 0)?;
    show_digs(&lab, &["rs2"])?;

    say("starting dnsmasq on rs1 again");
    lab.start_dns(0)?;
    let t = Instant::now();
    lab.wait_in_ipvs(lab.ds(0), &["rs1", "rs2"], fall)?;
    say(format!("rs1 back in IPVS after {:.1?}", t.elapsed()));
    show_digs(&lab, &["rs1", "rs2"])?;

    say(format!(
        "killing the master: kill -9 of ds1's agent (pid {}), and ds1's cable pulled",
        lab.ds(0).pid().unwrap_or_default()
    ));
    lab.directors[0].kill();
    let ds1 = lab.ds(0).host().clone();
    lab.lab.set_cable(&ds1, "eth0", false)?;
    let t = Instant::now();
    lab.ds(1).wait_vrrp(
        INSTANCE,
        "VRRP_STATE_MASTER",
        advert_interval() * 4 + scaled(Duration::from_secs(2)),
    )?;
    say(format!(
        "ds2 is MASTER after {:.1?} (advert interval {:?}) and holds {VIP}: {}",
        t.elapsed(),
        advert_interval(),
        lab.ds(1).host().has_addr(VIP)?
    ));
    wait_for(|| lab.dig().is_ok(), scaled(Duration::from_secs(5)))
        .context("no answer through the VIP after the takeover")?;
    show_ipvs(&lab, 1)?;
    show_digs(&lab, &["rs1", "rs2"])?;
    let dests = crate::agents::ipvs_dests(lab.ds(1).host(), IPVS_SERVICE.0, IPVS_SERVICE.1)?;
    ensure!(dests.is_some_and(|d| d.len() == 2), "ds2 lost real servers");
    say(format!(
        "done in {:.1?}: answers continued through the backup",
        started.elapsed()
    ));
    Ok(())
}
