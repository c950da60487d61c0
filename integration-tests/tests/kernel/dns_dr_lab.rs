//! The lab of seed 000 (DNS over LVS-DR, two directors), run by lb alone:
//! `examples/seed-000-dns-dr.yaml` moved onto the lab, `lb-agent director` on
//! ds1 and ds2, `lb-agent realserver` and dnsmasq on rs1 and rs2, and a client
//! that asks the VIP with dig.
//!
//! ```text
//!   client 10.0.0.1   --+
//!   ds1    10.0.0.2     |  lb-agent director: VRRP VI_1 vrid 50 (100), IPVS, DNS checks
//!   ds2    10.0.0.3     +  lb-agent director: VRRP VI_1 vrid 50 (99),  IPVS, DNS checks
//!   rs1    10.0.0.11    |  lb-agent realserver (VIP on lo), dnsmasq: www.abc.local A 10.9.9.1
//!   rs2    10.0.0.12  --+  lb-agent realserver (VIP on lo), dnsmasq: www.abc.local A 10.9.9.2
//!   VIP 10.0.0.100 (udp 53, wrr, dr), one segment, interface eth0
//! ```

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use lb_lab::{Host, Lab, Proc, scaled, wait_for};
use serde_json::Value;

use crate::agents::{Director, example, relocate, start_realserver};

/// The VIP of the lab.
pub const VIP: &str = "10.0.0.100";
/// The VRRP instance of seed 000.
pub const INSTANCE: &str = "VI_1";
/// The service of seed 000.
pub const SERVICE: &str = "dns";
/// The IPVS service as `ipvsadm -Ln` names it.
pub const IPVS_SERVICE: (&str, &str) = ("UDP", "10.0.0.100:53");
/// The name every real server answers for.
pub const NAME: &str = "www.abc.local";
/// Health check interval and fall in the lab's topology.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Failed checks before a real server goes down.
pub const FALL: u32 = 2;
/// VRRP advertisement interval: seed 000's own (1 s), stretched like every
/// other time limit under emulation (to 10 s at most), where starting an
/// agent alone can take longer than a 1 s interval's master down interval.
pub fn advert_interval() -> Duration {
    let secs = scaled(Duration::from_secs(1)).as_secs().clamp(1, 10);
    Duration::from_secs(secs)
}

/// The real servers: name, address, what their dnsmasq answers.
pub const REAL_SERVERS: [(&str, &str, &str); 2] = [
    ("rs1", "10.0.0.11", "10.9.9.1"),
    ("rs2", "10.0.0.12", "10.9.9.2"),
];

/// One dig through the VIP: the real server that answered, or why none did.
pub type Answer = Result<&'static str, String>;

/// The running lab. Field order is drop order: processes stop before the
/// namespaces go.
pub struct DnsDrLab {
    /// dnsmasq of rs1 and rs2 (`None` while stopped).
    pub dns: [Option<Proc>; 2],
    /// The directors ds1 (master) and ds2 (backup).
    pub directors: [Director; 2],
    /// The real-server agents of rs1 and rs2.
    _rs_agents: Vec<Proc>,
    /// The client.
    pub client: Host,
    /// rs1 and rs2.
    pub rs: [Host; 2],
    /// The lab; public for `set_cable`.
    pub lab: Lab,
}

/// Seed 000 on the lab's addresses, with a 1 s health check interval.
pub fn topology() -> Result<Value> {
    let mut t = example("seed-000-dns-dr.yaml")?;
    relocate(
        &mut t,
        &[
            ("ds1", "10.0.0.2"),
            ("ds2", "10.0.0.3"),
            ("rs1", REAL_SERVERS[0].1),
            ("rs2", REAL_SERVERS[1].1),
        ],
        &[("192.168.56.185", VIP)],
        "eth0",
    )?;
    let check = t
        .pointer_mut("/services/0/healthCheck")
        .context("seed 000 has no health check")?;
    check["interval"] = Value::from(format!("{}s", CHECK_INTERVAL.as_secs()));
    check["timeout"] = Value::from("1s");
    check["fall"] = Value::from(FALL);
    check["rise"] = Value::from(1);
    let vrrp = t
        .pointer_mut("/directorGroups/0/vrrp")
        .context("seed 000 has no VRRP")?;
    vrrp["advertInterval"] = Value::from(format!("{}s", advert_interval().as_secs()));
    Ok(t)
}

impl DnsDrLab {
    /// Builds the lab, starts every agent and dnsmasq, and waits until ds1 is
    /// MASTER, ds2 BACKUP and both directors have both real servers in IPVS.
    pub fn start(name: &str) -> Result<DnsDrLab> {
        lb_lab::kernel::require_ipvs();
        let lab = Lab::new(name)?;
        let client = lab.host("client", &["10.0.0.1/24"])?;
        let ds1 = lab.host("ds1", &["10.0.0.2/24"])?;
        let ds2 = lab.host("ds2", &["10.0.0.3/24"])?;
        let rs1 = lab.host("rs1", &[&format!("{}/24", REAL_SERVERS[0].1)])?;
        let rs2 = lab.host("rs2", &[&format!("{}/24", REAL_SERVERS[1].1)])?;
        let vips = format!("[{{address: {VIP}, forwarding: dr}}]");
        let rs_agents = vec![
            start_realserver(&rs1, &vips)?,
            start_realserver(&rs2, &vips)?,
        ];
        let dns = [Some(dnsmasq(&rs1, 0)?), Some(dnsmasq(&rs2, 1)?)];
        let t = topology()?;
        let directors = [Director::start(&ds1, &t)?, Director::start(&ds2, &t)?];
        let lab = DnsDrLab {
            dns,
            directors,
            _rs_agents: rs_agents,
            client,
            rs: [rs1, rs2],
            lab,
        };
        let settle = scaled(Duration::from_secs(10));
        lab.directors[0].wait_vrrp(INSTANCE, "VRRP_STATE_MASTER", settle)?;
        lab.directors[1].wait_vrrp(INSTANCE, "VRRP_STATE_BACKUP", settle)?;
        for d in &lab.directors {
            lab.wait_in_ipvs(d, &["rs1", "rs2"], settle)?;
        }
        Ok(lab)
    }

    /// The master director (ds1) and the backup (ds2).
    pub fn ds(&self, i: usize) -> &Director {
        &self.directors[i]
    }

    /// Waits until `director`'s IPVS service holds exactly the real servers
    /// `want` (by name).
    pub fn wait_in_ipvs(
        &self,
        director: &Director,
        want: &[&str],
        timeout: Duration,
    ) -> Result<()> {
        let mut want_addrs: Vec<String> = REAL_SERVERS
            .iter()
            .filter(|(n, _, _)| want.contains(n))
            .map(|(_, a, _)| format!("{a}:53"))
            .collect();
        want_addrs.sort();
        let host = director.host();
        wait_for(
            || {
                crate::agents::ipvs_dests(host, IPVS_SERVICE.0, IPVS_SERVICE.1).is_ok_and(|d| {
                    d.is_some_and(|d| {
                        let mut got: Vec<String> = d.into_iter().map(|(a, _)| a).collect();
                        got.sort();
                        got == want_addrs
                    })
                })
            },
            timeout,
        )
        .with_context(|| {
            format!(
                "IPVS of {} never held exactly {want:?}:\n{}\nstatus {:?}\n{}",
                host.name(),
                host.run_ok(["ipvsadm", "-Ln"]).unwrap_or_default(),
                director.status(),
                director.log()
            )
        })
    }

    /// One `dig @VIP www.abc.local` from the client.
    pub fn dig(&self) -> Answer {
        // dig's own limit is wall-clock seconds; emulation stretches it.
        let secs = scaled(Duration::from_millis(300)).as_secs().max(1);
        let out = self
            .client
            .command([
                "dig",
                "+short",
                &format!("+time={secs}"),
                "+tries=1",
                &format!("@{VIP}"),
                NAME,
            ])
            // Starting dig itself is slow under emulation on a busy machine.
            .timeout(scaled(Duration::from_secs(secs + 5)))
            .run()
            .map_err(|e| e.to_string())?;
        let text = out.stdout.trim().to_string();
        if !out.success() {
            return Err(format!("dig failed: {text} {}", out.stderr.trim()));
        }
        REAL_SERVERS
            .iter()
            .find(|(_, _, a)| *a == text)
            .map(|(n, _, _)| *n)
            .ok_or_else(|| format!("unexpected answer {text:?}"))
    }

    /// `n` digs through the VIP.
    pub fn digs(&self, n: usize) -> Vec<Answer> {
        (0..n).map(|_| self.dig()).collect()
    }

    /// Stops dnsmasq on real server `i`.
    pub fn stop_dns(&mut self, i: usize) {
        if let Some(mut p) = self.dns[i].take() {
            p.kill();
        }
    }

    /// Starts dnsmasq on real server `i` again.
    pub fn start_dns(&mut self, i: usize) -> Result<()> {
        self.dns[i] = Some(dnsmasq(&self.rs[i], i)?);
        Ok(())
    }
}

/// Whether every answer came, and from exactly the real servers `from`.
pub fn answered_by(answers: &[Answer], from: &[&str]) -> Result<()> {
    let errors: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    ensure!(
        errors.is_empty(),
        "{} of {} queries failed: {errors:?}",
        errors.len(),
        answers.len()
    );
    let mut seen: Vec<&str> = answers
        .iter()
        .filter_map(|a| a.as_ref().ok().copied())
        .collect();
    seen.sort();
    seen.dedup();
    ensure!(
        seen == from,
        "answers came from {seen:?}, expected {from:?}: {answers:?}"
    );
    Ok(())
}

/// dnsmasq on real server `i`, answering `www.abc.local` with its own A
/// record on its address and on the VIP (on `lo`, bound as it appears).
fn dnsmasq(host: &Host, i: usize) -> Result<Proc> {
    let (_, addr, answer) = REAL_SERVERS[i];
    let mut p = host.spawn([
        "dnsmasq",
        "--no-daemon",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--pid-file=",
        "--bind-dynamic",
        &format!("--listen-address={addr},{VIP}"),
        &format!("--address=/{NAME}/{answer}"),
        "--log-facility=-",
    ])?;
    // Answering on its own address: the director's check asks there.
    let probe = || {
        host.run([
            "dig",
            "+short",
            "+time=1",
            "+tries=1",
            &format!("@{addr}"),
            NAME,
        ])
        .is_ok_and(|o| o.stdout.trim() == answer)
    };
    wait_for(probe, scaled(Duration::from_secs(10)))
        .with_context(|| format!("dnsmasq on {} never answered:\n{}", host.name(), p.log()))?;
    p.check_running()?;
    Ok(p)
}
