//! Seed 000 end to end, run by lb alone (the lab of [`crate::dns_dr_lab`]):
//! two `lb-agent director`s with VRRP, IPVS and DNS health checks, two real
//! servers with `lb-agent realserver` and dnsmasq, a client asking the VIP.
//!
//! In: the topology of `examples/seed-000-dns-dr.yaml` on lab addresses, then
//! a real server's DNS stopped and started, `ipvsadm -C` behind the agent's
//! back, a weight changed by SIGHUP, the master agent SIGKILLed and
//! restarted, the master killed for good.
//! Out: answers through the VIP from both real servers (wrr); the dead one
//! leaves IPVS within fall x interval and comes back; the table repaired
//! within the reconcile interval; the new weight in one IPVS write; the
//! restart adopts the kernel (0 IPVS writes, no VRRP flap on ds2); the backup
//! takes over and answers continue.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use lb_lab::{scaled, wait_for};

use crate::agents::{RECONCILE_INTERVAL, ipvs_dests};
use crate::dns_dr_lab::{
    CHECK_INTERVAL, DnsDrLab, FALL, INSTANCE, IPVS_SERVICE, SERVICE, advert_interval, answered_by,
    topology,
};

/// Queries per verdict: enough for wrr over two real servers to reach both.
const QUERIES: usize = 6;

#[test]
fn seed000_dns_over_dr_end_to_end() -> Result<()> {
    let mut lab = DnsDrLab::start("dns-dr")?;

    // 1. Both real servers answer through the VIP.
    answered_by(&lab.digs(QUERIES), &["rs1", "rs2"]).context("step 1: wrr through the VIP")?;

    // 2. rs1's DNS stops: it leaves IPVS within fall x interval, rs2 answers
    //    alone; it comes back once DNS answers again.
    lab.stop_dns(0);
    let fall = scaled(CHECK_INTERVAL * (FALL + 1) + Duration::from_secs(2));
    lab.wait_in_ipvs(lab.ds(0), &["rs2"], fall)
        .context("step 2: rs1 down")?;
    ensure!(
        lab.ds(0).health(SERVICE, "rs1").as_deref() == Some("HEALTH_STATE_DOWN"),
        "step 2: rs1 out of IPVS but its health is {:?}",
        lab.ds(0).health(SERVICE, "rs1")
    );
    answered_by(&lab.digs(QUERIES), &["rs2"]).context("step 2: rs1 down")?;
    lab.start_dns(0)?;
    lab.wait_in_ipvs(lab.ds(0), &["rs1", "rs2"], fall)
        .context("step 2: rs1 back")?;
    answered_by(&lab.digs(QUERIES), &["rs1", "rs2"]).context("step 2: rs1 back")?;

    // 3. The table flushed behind the agent's back is repaired.
    lab.ds(0).host().run_ok(["ipvsadm", "-C"])?;
    lab.wait_in_ipvs(
        lab.ds(0),
        &["rs1", "rs2"],
        scaled(RECONCILE_INTERVAL + Duration::from_secs(2)),
    )
    .context("step 3: ipvsadm -C not repaired")?;

    // 3b. SIGHUP after a weight changed in the file: that one change, as
    //     one IPVS write.
    let mut t = topology()?;
    t["services"][0]["realServers"][1]["weight"] = 2.into();
    let mark = lab.ds(0).apply_mark();
    lab.directors[0].reload(&t)?;
    let apply = lab
        .ds(0)
        .wait_apply(&mark, scaled(Duration::from_secs(10)))
        .context("step 3b: SIGHUP")?;
    ensure!(
        apply["ok"] == true && apply["operations"].as_u64() == Some(1),
        "step 3b: a weight change by SIGHUP: last-apply.json {apply}"
    );
    let rs2_weight = || {
        ipvs_dests(lab.ds(0).host(), IPVS_SERVICE.0, IPVS_SERVICE.1)
            .ok()
            .flatten()
            .and_then(|d| d.into_iter().find(|(a, _)| a == "10.0.0.12:53"))
            .map(|(_, w)| w)
    };
    ensure!(
        rs2_weight() == Some(2),
        "step 3b: rs2's weight in IPVS is {:?}",
        rs2_weight()
    );

    // 4. SIGKILL and an immediate restart: the new agent adopts the kernel
    //    as it is (no IPVS write) and ds2 never takes over.
    let ds2_transitions = lab.ds(1).transitions(INSTANCE);
    let mark = lab.ds(0).apply_mark();
    let killed = Instant::now();
    lab.directors[0].kill();
    lab.directors[0].spawn()?;
    let ds1 = &lab.directors[0];
    let apply = ds1
        .wait_apply(&mark, scaled(Duration::from_secs(10)))
        .context("step 4: no apply after the restart")?;
    ensure!(
        apply["ok"] == true && apply["operations"].as_u64() == Some(0),
        "step 4: the restarted agent wrote to IPVS: last-apply.json {apply}\n{}",
        ds1.log()
    );
    ds1.wait_vrrp(
        INSTANCE,
        "VRRP_STATE_MASTER",
        scaled(Duration::from_secs(10)),
    )?;
    eprintln!(
        "step 4: ds1 MASTER again {:?} after SIGKILL (advert interval {:?})",
        killed.elapsed(),
        advert_interval()
    );
    // ds2 stays BACKUP for a master down interval after ds1 is back: had it
    // taken over, its transitions would have moved.
    let watch = Instant::now();
    let window = advert_interval();
    while watch.elapsed() < window {
        let state = lab.ds(1).vrrp_state(INSTANCE);
        ensure!(
            state.as_deref() == Some("VRRP_STATE_BACKUP"),
            "step 4: ds2 is {state:?} after ds1's restart\n{}\nds1:\n{}",
            lab.ds(1).log(),
            lab.ds(0).log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        lab.ds(1).transitions(INSTANCE) == ds2_transitions,
        "step 4: ds2 changed state ({ds2_transitions:?} -> {:?} transitions)\n{}\nds1:\n{}",
        lab.ds(1).transitions(INSTANCE),
        lab.ds(1).log(),
        lab.ds(0).log()
    );
    answered_by(&lab.digs(QUERIES), &["rs1", "rs2"]).context("step 4: after the restart")?;

    // 5. The master dies (agent killed, cable out): ds2 takes over and the
    //    VIP keeps answering.
    lab.directors[0].kill();
    let ds1_host = lab.ds(0).host().clone();
    lab.lab.set_cable(&ds1_host, "eth0", false)?;
    let down = Instant::now();
    lab.ds(1).wait_vrrp(
        INSTANCE,
        "VRRP_STATE_MASTER",
        advert_interval() * 4 + scaled(Duration::from_secs(2)),
    )?;
    let took_over = down.elapsed();
    ensure!(
        lab.ds(1).host().has_addr(crate::dns_dr_lab::VIP)?,
        "step 5: ds2 is MASTER without the VIP"
    );
    wait_for(|| lab.dig().is_ok(), scaled(Duration::from_secs(5)))
        .context("step 5: no answer through the VIP after the takeover")?;
    answered_by(&lab.digs(QUERIES), &["rs1", "rs2"]).context("step 5: through ds2")?;
    eprintln!("step 5: ds2 MASTER {took_over:?} after ds1 went away");
    Ok(())
}
