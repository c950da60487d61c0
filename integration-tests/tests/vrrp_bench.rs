//! VRRP benchmark (run by `make bench BENCH=vrrp`, ignored by `cargo test`):
//! takeover after kill -9 of the master and handover after SIGTERM, for
//! lb-agent and for keepalived in the same run, same lab, same method.
//!
//! Method: two routers of one implementation (master priority 200, backup
//! 100) on a lab bridge, a capture host on the bridge. The time is taken
//! from the signal (wall clock) to the first advert of the new master on
//! the wire (the capture's timestamp, same clock). After kill -9 it is also
//! taken from the dead master's last advert on the wire, which removes the
//! phase of the kill: that figure is the master down interval (printed
//! beside it) plus the backup's reaction. Each figure is the median
//! and the worst of `LB_BENCH_RUNS` runs (default 10).
//!
//! Under load: a master and a backup of each implementation at each advert
//! interval (100, 50, 30, 20 and 10 ms), all ten pairs at once, each pair in
//! a lab of its own, run for `LB_BENCH_SATURATION_SECS` (default 600) while
//! `stress-ng` saturates every core; a false takeover is any advert from a
//! backup on the wire. The figure is the lowest interval before the first
//! one, largest first.
//!
//! Prints `BENCH <name> <value> <unit>` lines.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lb_lab::{Host, Lab, Proc, bin_path, wait_for};

const VIP: &str = "10.33.0.100";
const KEEPALIVED: &str = "/usr/sbin/keepalived";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Impl {
    Lb,
    Keepalived,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::Lb => "lb",
            Impl::Keepalived => "keepalived",
        }
    }
}

fn has(host: &Host, vip: &str) -> bool {
    host.ip(["-br", "addr", "show", "dev", "eth0"])
        .map(|out| {
            out.split_whitespace()
                .any(|w| w.split('/').next() == Some(vip))
        })
        .unwrap_or(false)
}

fn wall_clock() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

struct Router {
    host: Host,
    name: String,
    address: IpAddr,
    priority: u32,
    proc: Option<Proc>,
}

/// The two routers of a bench lab: "m" (priority 200) and "b" (100).
fn pair(lab: &Lab) -> Result<[Router; 2]> {
    let router = |name: &str, address: &str, priority| -> Result<Router> {
        Ok(Router {
            host: lab.host(name, &[&format!("{address}/24")])?,
            name: name.into(),
            address: address.parse()?,
            priority,
            proc: None,
        })
    };
    Ok([
        router("m", "10.33.0.1", 200)?,
        router("b", "10.33.0.2", 100)?,
    ])
}

/// A host on the lab segment capturing VRRP into `file` in the lab directory.
fn sniffer(lab: &Lab, file: &str) -> Result<(Host, Proc, PathBuf)> {
    let sniff = lab.host("sniff", &["10.33.0.250/24"])?;
    let pcap = lab.dir().join(file);
    let cap = sniff.tcpdump("eth0", &pcap, "ip proto 112")?;
    Ok((sniff, cap, pcap))
}

fn start(lab: &Lab, r: &mut Router, imp: Impl, interval_ms: u64) -> Result<()> {
    let dir = lab.dir();
    let proc = match imp {
        Impl::Lb => {
            let config = dir.join(format!("{}.yaml", r.name));
            let initial = if r.priority == 200 {
                "master"
            } else {
                "backup"
            };
            std::fs::write(
                &config,
                format!(
                    r#"nodes:
  - {{name: {n}, role: director, address: {a}}}
directorGroups:
  - name: g
    interface: eth0
    vrrp:
      version: 3
      advertInterval: {interval_ms}ms
      garp: {{delay: 0s, repeat: 1}}
      instances:
        - name: VI_1
          vrid: 33
          vips: [{VIP}/24]
          priorities: {{{n}: {p}}}
          initialStates: {{{n}: {initial}}}
"#,
                    n = r.name,
                    a = r.address,
                    p = r.priority
                ),
            )?;
            let bin = bin_path("lb-agent");
            r.host.spawn([
                bin.to_str().context("path")?,
                "director",
                "--config",
                config.to_str().context("path")?,
                "--node",
                &r.name,
                "--state-dir",
                dir.join(format!("state-{}", r.name))
                    .to_str()
                    .context("path")?,
            ])?
        }
        Impl::Keepalived => {
            let conf = dir.join(format!("{}.conf", r.name));
            let state = if r.priority == 200 {
                "MASTER"
            } else {
                "BACKUP"
            };
            let int = interval_ms as f64 / 1000.0;
            std::fs::write(
                &conf,
                format!(
                    "global_defs {{\n  router_id {n}\n  vrrp_garp_master_delay 0\n  vrrp_garp_master_repeat 1\n}}\n\
                     vrrp_instance VI_1 {{\n  state {state}\n  interface eth0\n  virtual_router_id 33\n  \
                     priority {p}\n  advert_int {int}\n  version 3\n  virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n",
                    n = r.name,
                    p = r.priority
                ),
            )?;
            let path = |s: &str| {
                dir.join(format!("{}-{s}", r.name))
                    .to_string_lossy()
                    .into_owned()
            };
            // After kill -9 the pid files stay behind and their pids may
            // have been reused: keepalived would refuse to start.
            for f in ["ka.pid", "ka-vrrp.pid"] {
                let _ = std::fs::remove_file(path(f));
            }
            r.host.spawn([
                KEEPALIVED,
                "-n",
                "-l",
                "-P",
                "-f",
                conf.to_str().context("path")?,
                "-p",
                &path("ka.pid"),
                "-r",
                &path("ka-vrrp.pid"),
            ])?
        }
    };
    r.proc = Some(proc);
    Ok(())
}

/// Adverts on the wire: (time, source).
fn adverts(pcap: &Path) -> Result<Vec<(f64, IpAddr)>> {
    let mut out = Vec::new();
    for f in lb_lab::pcap::frames(pcap)? {
        let d = &f.data;
        // Ethernet, IPv4, protocol 112: the source address at bytes 26..30.
        if d.len() >= 34 && d[12..14] == [0x08, 0x00] && d[14 + 9] == 112 {
            out.push((
                f.time.as_secs_f64(),
                IpAddr::from([d[26], d[27], d[28], d[29]]),
            ));
        }
    }
    Ok(out)
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (median, *v.last().unwrap_or(&f64::NAN))
}

/// Runs `runs` failovers of one implementation at one interval; returns the
/// takeover (kill -9) and handover (SIGTERM) times.
fn failovers(imp: Impl, interval_ms: u64, runs: usize) -> Result<Failovers> {
    let lab = Lab::new(&format!("vrrp-bench-{}-{interval_ms}", imp.name()))?;
    let mut routers = pair(&lab)?;
    let (_sniff, mut cap, pcap) = sniffer(&lab, "bench.pcap")?;
    std::thread::sleep(Duration::from_millis(500));
    let interval = Duration::from_millis(interval_ms);
    let settle = interval * 8 + Duration::from_millis(300);
    let mut kills = Vec::new();
    let mut terms = Vec::new();
    start(&lab, &mut routers[1], imp, interval_ms)?;
    for run in 0..runs * 2 {
        // Master up, backup following it.
        let [m, b] = &mut routers[..] else {
            unreachable!()
        };
        start(&lab, m, imp, interval_ms)?;
        wait_for(
            || has(&m.host, VIP) && !has(&b.host, VIP),
            Duration::from_secs(15),
        )
        .with_context(|| format!("master not elected in run {run}"))?;
        std::thread::sleep(settle);
        let proc = m.proc.as_mut().context("master running")?;
        let t0 = wall_clock();
        if run % 2 == 0 {
            proc.kill();
            kills.push(t0);
        } else {
            proc.terminate(Duration::from_secs(10));
            terms.push(t0);
        }
        wait_for(|| has(&b.host, VIP), Duration::from_secs(15))
            .with_context(|| format!("backup did not take over in run {run}"))?;
        std::thread::sleep(interval * 3);
        m.proc = None;
        // kill -9 leaves the VIP behind: clean up as an operator would.
        let _ = m
            .host
            .ip(["addr", "del", &format!("{VIP}/24"), "dev", "eth0"]);
    }
    std::thread::sleep(Duration::from_millis(300));
    cap.terminate(Duration::from_secs(5));
    let wire = adverts(&pcap)?;
    let backup: IpAddr = "10.33.0.2".parse()?;
    let first_after = |t0: f64| {
        wire.iter()
            .find(|(t, src)| *t > t0 && *src == backup)
            .map(|(t, _)| (t - t0) * 1000.0)
    };
    let master: IpAddr = "10.33.0.1".parse()?;
    // From the dead master's last advert on the wire, whatever the phase of
    // the kill: the master down interval plus the backup's reaction.
    let from_last_advert = |t0: f64| {
        let last = wire
            .iter()
            .filter(|(t, src)| *t <= t0 && *src == master)
            .map(|(t, _)| *t)
            .next_back()?;
        let first = wire
            .iter()
            .find(|(t, src)| *t > t0 && *src == backup)
            .map(|(t, _)| *t)?;
        Some((first - last) * 1000.0)
    };
    let k = kills.iter().filter_map(|t| first_after(*t)).collect();
    let h = terms.iter().filter_map(|t| first_after(*t)).collect();
    let l = kills.iter().filter_map(|t| from_last_advert(*t)).collect();
    Ok(Failovers {
        takeover: k,
        handover: h,
        takeover_from_last_advert: l,
    })
}

/// Failover times of one implementation at one interval, in milliseconds.
struct Failovers {
    /// From kill -9 of the master to the backup's first advert.
    takeover: Vec<f64>,
    /// From SIGTERM of the master to the backup's first advert.
    handover: Vec<f64>,
    /// From the killed master's last advert to the backup's first.
    takeover_from_last_advert: Vec<f64>,
}

/// RFC 5798's master down interval of the benchmark's backup (priority
/// 100), in milliseconds.
fn master_down_interval_ms(interval_ms: u64) -> f64 {
    let interval = interval_ms as f64;
    3.0 * interval + (256.0 - 100.0) * interval / 256.0
}

/// CPU time (user + system) of process `pid` and its threads, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3; utime 14 and stime 15 (1-based).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // /proc counts in USER_HZ, which the kernel fixes at 100 for user space.
    Some((utime + stime) / 100.0)
}

/// CPU use (percent of one core) of the master and the backup at 10 ms
/// adverts over `period`. keepalived's figure adds its parent process.
fn cpu_at_10ms(imp: Impl, period: Duration) -> Result<(f64, f64)> {
    let lab = Lab::new(&format!("vrrp-cpu-{}", imp.name()))?;
    let [mut m, mut b] = pair(&lab)?;
    start(&lab, &mut m, imp, 10)?;
    start(&lab, &mut b, imp, 10)?;
    wait_for(
        || has(&m.host, VIP) && !has(&b.host, VIP),
        Duration::from_secs(15),
    )?;
    std::thread::sleep(Duration::from_secs(1));
    // Every process of the router's namespace (keepalived runs two).
    let ns_cpu = |h: &Host| -> f64 {
        lb_lab::Cmd::new(["ip", "netns", "pids", h.netns()])
            .run_ok()
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter_map(cpu_seconds)
            .sum()
    };
    let (m0, b0) = (ns_cpu(&m.host), ns_cpu(&b.host));
    std::thread::sleep(period);
    let (m1, b1) = (ns_cpu(&m.host), ns_cpu(&b.host));
    let pct = |d: f64| d / period.as_secs_f64() * 100.0;
    Ok((pct(m1 - m0), pct(b1 - b0)))
}

#[test]
#[ignore = "benchmark: make bench BENCH=vrrp"]
fn vrrp_failover_benchmark() -> Result<()> {
    let runs: usize = std::env::var("LB_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut imps = vec![Impl::Lb];
    if Path::new(KEEPALIVED).exists() {
        imps.push(Impl::Keepalived);
    } else {
        eprintln!("keepalived not installed: its figures are left out");
    }
    for interval_ms in bench_intervals() {
        println!(
            "BENCH vrrp_master_down_interval_ms{{advert={interval_ms}ms,priority=100}} {:.1} ms",
            master_down_interval_ms(interval_ms)
        );
        for &imp in &imps {
            let f = failovers(imp, interval_ms, runs)?;
            let (k, h, l) = (f.takeover, f.handover, f.takeover_from_last_advert);
            if k.len() < runs || h.len() < runs || l.len() < runs {
                bail!(
                    "{} at {interval_ms} ms: {} of {runs} takeovers ({} with the master's last advert), {} handovers seen on the wire",
                    imp.name(),
                    k.len(),
                    l.len(),
                    h.len()
                );
            }
            let (km, kw) = stats(k);
            let (hm, hw) = stats(h);
            let (lm, lw) = stats(l);
            let who = imp.name();
            println!(
                "BENCH vrrp_takeover_ms{{impl={who},advert={interval_ms}ms,stat=median}} {km:.1} ms"
            );
            println!(
                "BENCH vrrp_takeover_ms{{impl={who},advert={interval_ms}ms,stat=worst}} {kw:.1} ms"
            );
            println!(
                "BENCH vrrp_takeover_from_last_advert_ms{{impl={who},advert={interval_ms}ms,stat=median}} {lm:.1} ms"
            );
            println!(
                "BENCH vrrp_takeover_from_last_advert_ms{{impl={who},advert={interval_ms}ms,stat=worst}} {lw:.1} ms"
            );
            println!(
                "BENCH vrrp_handover_ms{{impl={who},advert={interval_ms}ms,stat=median}} {hm:.1} ms"
            );
            println!(
                "BENCH vrrp_handover_ms{{impl={who},advert={interval_ms}ms,stat=worst}} {hw:.1} ms"
            );
        }
    }
    for &imp in &imps {
        let (m, b) = cpu_at_10ms(imp, Duration::from_secs(10))?;
        let who = imp.name();
        println!("BENCH vrrp_cpu_percent{{impl={who},advert=10ms,role=master}} {m:.2} %");
        println!("BENCH vrrp_cpu_percent{{impl={who},advert=10ms,role=backup}} {b:.2} %");
    }
    Ok(())
}

fn bench_intervals() -> Vec<u64> {
    std::env::var("LB_BENCH_INTERVALS")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1000, 50, 10])
}

/// What the wire showed of one pair under load.
#[derive(Clone, Copy)]
struct Saturated {
    /// Adverts from the backup: false takeovers.
    from_backup: usize,
    /// The longest time between two adverts of the master.
    worst_gap_ms: f64,
}

/// What the wire showed of each pair during `period` (adverts of the backup
/// are false takeovers), by interval and implementation: every pair (one per implementation and
/// interval, each in a lab of its own) runs at once, under one `stress-ng`
/// that saturates every core.
fn false_takeovers(
    imps: &[Impl],
    intervals: &[u64],
    period: Duration,
) -> Result<Vec<Vec<Saturated>>> {
    let mut labs = Vec::new();
    for &interval_ms in intervals {
        for &imp in imps {
            let lab = Lab::new(&format!("vrrp-sat-{}-{interval_ms}", imp.name()))?;
            let [mut m, mut b] = pair(&lab)?;
            start(&lab, &mut m, imp, interval_ms)?;
            wait_for(|| has(&m.host, VIP), Duration::from_secs(15))?;
            start(&lab, &mut b, imp, interval_ms)?;
            std::thread::sleep(Duration::from_millis(interval_ms * 5 + 500));
            let (sniff, cap, pcap) = sniffer(&lab, "sat.pcap")?;
            labs.push((lab, m, b, sniff, cap, pcap));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let stress = labs[0].3.spawn([
        "stress-ng",
        "--cpu",
        &cores.to_string(),
        "--timeout",
        &format!("{}s", period.as_secs().max(1)),
        "--quiet",
    ])?;
    std::thread::sleep(period);
    drop(stress);
    let (master, backup): (IpAddr, IpAddr) = ("10.33.0.1".parse()?, "10.33.0.2".parse()?);
    let mut counts = Vec::new();
    for (_lab, _m, _b, _sniff, mut cap, pcap) in labs {
        std::thread::sleep(Duration::from_millis(200));
        cap.terminate(Duration::from_secs(5));
        let seen = adverts(&pcap)?;
        let from_backup = seen.iter().filter(|(_, src)| *src == backup).count();
        let times: Vec<f64> = seen
            .iter()
            .filter(|(_, src)| *src == master)
            .map(|(t, _)| *t)
            .collect();
        let worst_gap = times.windows(2).map(|w| w[1] - w[0]).fold(0.0f64, f64::max);
        counts.push(Saturated {
            from_backup,
            worst_gap_ms: worst_gap * 1000.0,
        });
    }
    Ok(counts
        .chunks(imps.len())
        .map(<[Saturated]>::to_vec)
        .collect())
}

#[test]
#[ignore = "benchmark: make bench BENCH=vrrp"]
fn vrrp_saturation_benchmark() -> Result<()> {
    let secs: u64 = std::env::var("LB_BENCH_SATURATION_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    if lb_lab::Cmd::new(["stress-ng", "--version"])
        .run_ok()
        .is_err()
    {
        eprintln!("stress-ng not installed: saturation figures left out");
        return Ok(());
    }
    let mut imps = vec![Impl::Lb];
    if Path::new(KEEPALIVED).exists() {
        imps.push(Impl::Keepalived);
    }
    // Largest first: an implementation's figure is the lowest interval
    // before its first false takeover.
    let intervals = [100u64, 50, 30, 20, 10];
    let counts = false_takeovers(&imps, &intervals, Duration::from_secs(secs))?;
    let mut lowest: Vec<Option<u64>> = vec![None; imps.len()];
    let mut failed = vec![false; imps.len()];
    for (interval_ms, counts) in intervals.iter().zip(counts) {
        for (i, seen) in counts.into_iter().enumerate() {
            let who = imps[i].name();
            let n = seen.from_backup;
            eprintln!(
                "{who} at {interval_ms} ms under load for {secs} s: {n} adverts from the backup"
            );
            println!(
                "BENCH vrrp_false_takeover_adverts{{impl={who},advert={interval_ms}ms,load=all_cores,secs={secs}}} {n} adverts"
            );
            println!(
                "BENCH vrrp_worst_advert_gap_ms{{impl={who},advert={interval_ms}ms,load=all_cores,secs={secs}}} {:.1} ms",
                seen.worst_gap_ms
            );
            if n == 0 && !failed[i] {
                lowest[i] = Some(*interval_ms);
            } else {
                failed[i] = true;
            }
        }
    }
    for (imp, low) in imps.iter().zip(lowest) {
        let who = imp.name();
        match low {
            Some(ms) => println!(
                "BENCH vrrp_stable_interval_ms{{impl={who},load=all_cores,secs={secs}}} {ms} ms"
            ),
            None => println!(
                "BENCH vrrp_stable_interval_ms{{impl={who},load=all_cores,secs={secs}}} none ms"
            ),
        }
    }
    Ok(())
}
