//! IPVS benchmark: lb's netlink client against `ipvsadm` on the same rule
//! set, on a kernel with IPVS (`integration-tests/vm/run --bench ipvs`).
//!
//! Each side runs in a fresh network namespace of its own: the kernel keeps
//! deleted destinations in a per-namespace trash for two minutes and scans
//! it on every add, so a side that ran after the other's flush would pay
//! for it. Both namespaces stay alive until the end, so neither side runs
//! while the kernel tears the other down.
//!
//! Prints `BENCH <name> <value> <unit>` lines. Run as root, arguments
//! `[services] [dests-per-service]` (default 10000 x 10); options that cargo
//! passes (`--bench`) are ignored.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use lb_agent::ipvs::client::IpvsSocket;
use lb_agent::ipvs::reconcile::{self, IpvsOp};
use lb_agent::ipvs::{Destination, Forwarding, Protocol, Service, ServiceKey, ServiceState, Table};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let services: u32 = args.next().map_or(Ok(10_000), |a| a.parse())?;
    let dests: u32 = args.next().map_or(Ok(10), |a| a.parse())?;
    ensure!(
        services <= 60_000 && dests <= 250,
        "at most 60000 services of 250 destinations"
    );

    let ipvsadm_netns = fresh_netns()?;

    let desired = rule_set(services, dests);
    let rules = ipvsadm_rules(&desired);
    let rules_path = std::env::temp_dir().join(format!("ipvs-bench-{}.rules", std::process::id()));
    std::fs::write(&rules_path, &rules)?;
    let total_dests = u64::from(services) * u64::from(dests);
    println!("# rule set: {services} services x {dests} destinations = {total_dests} destinations");

    // ipvsadm first, on an empty table.
    let mut sock = IpvsSocket::connect()?;
    let t = Instant::now();
    let (out, rss_restore) = timed_ipvsadm(&["-R"], Some(&rules_path))?;
    let restore_ms = ms(t);
    drop(out);
    ensure!(
        count(&sock.table()?) == total_dests,
        "ipvsadm -R did not load the rule set"
    );
    let t = Instant::now();
    let (saved, rss_save) = timed_ipvsadm(&["-Sn"], None)?;
    let save_ms = ms(t);
    ensure!(
        saved.lines().count() as u64 == u64::from(services) + total_dests,
        "ipvsadm -Sn listed {} lines",
        saved.lines().count()
    );
    drop(sock);

    // Ours, in a namespace of its own.
    let ours_netns = fresh_netns()?;
    let mut sock = IpvsSocket::connect()?;
    ensure!(sock.table()?.is_empty(), "a new namespace has services");

    // Ours, cold: an empty kernel table to the whole rule set.
    let owned = BTreeSet::new();
    let t = Instant::now();
    let current = sock.table()?;
    let plan = reconcile::plan(&desired, &current, &owned);
    let report = sock.apply(&plan.ops)?;
    let apply_ms = ms(t);
    ensure!(
        report.failed.is_empty(),
        "apply failed: {:?}",
        report.failed.first()
    );
    ensure!(report.done == plan.ops.len(), "not every op was done");

    // Dump.
    let t = Instant::now();
    let dumped = sock.table()?;
    let dump_ms = ms(t);
    ensure!(dumped == desired, "our dump differs from the rule set");

    // No-op reconcile: dump and diff, no write.
    let t = Instant::now();
    let current = sock.table()?;
    let plan = reconcile::plan(&desired, &current, &reconcile::owned_after(&desired));
    let noop_ms = ms(t);
    let noop_writes = plan.ops.len();
    if noop_writes != 0 {
        bail!("a no-op reconcile planned {noop_writes} writes");
    }

    // One weight: dump, diff, one SET.
    let mut changed = desired.clone();
    let first = changed.values_mut().next().context("empty rule set")?;
    let d = first.dests.values_mut().next().context("no destination")?;
    d.weight += 1;
    let t = Instant::now();
    let current = sock.table()?;
    let plan = reconcile::plan(&changed, &current, &reconcile::owned_after(&desired));
    let report = sock.apply(&plan.ops)?;
    let one_weight_ms = ms(t);
    ensure!(
        matches!(plan.ops.as_slice(), [IpvsOp::SetDest(..)]) && report.done == 1,
        "one weight change planned {:?}",
        plan.ops
    );
    let _ = std::fs::remove_file(&rules_path);

    let rss_kib = peak_rss_kib()?;
    println!("BENCH ipvs_apply_cold_ms {apply_ms:.0} ms");
    println!("BENCH ipvsadm_restore_ms {restore_ms:.0} ms");
    println!(
        "BENCH ipvs_apply_cold_ratio {:.3} x_ipvsadm_restore",
        apply_ms / restore_ms
    );
    println!("BENCH ipvs_dump_ms {dump_ms:.0} ms");
    println!("BENCH ipvsadm_save_ms {save_ms:.0} ms");
    println!(
        "BENCH ipvs_dump_ratio {:.3} x_ipvsadm_save",
        dump_ms / save_ms
    );
    println!("BENCH ipvs_reconcile_noop_ms {noop_ms:.0} ms");
    println!("BENCH ipvs_reconcile_noop_writes {noop_writes} writes");
    println!("BENCH ipvs_change_one_weight_ms {one_weight_ms:.0} ms");
    println!("BENCH ipvs_peak_rss_kib {rss_kib} KiB");
    if let (Some(r), Some(s)) = (rss_restore, rss_save) {
        println!("BENCH ipvsadm_restore_peak_rss_kib {r} KiB");
        println!("BENCH ipvsadm_save_peak_rss_kib {s} KiB");
    }
    drop((sock, ipvsadm_netns, ours_netns));
    Ok(())
}

/// Move into a new network namespace with `lo` up (the kernel takes an IPv4
/// destination only when the routing tables call it unicast); the returned
/// file keeps the namespace alive after we leave it.
fn fresh_netns() -> anyhow::Result<std::fs::File> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("unshare: run as root")?;
    run_ok("ip", &["link", "set", "lo", "up"])?;
    Ok(std::fs::File::open("/proc/thread-self/ns/net")?)
}

/// `services` TCP services on 10.0.0.0/8 port 80, wrr, each with `dests`
/// direct-routing destinations on 172.16.0.0/12 of weight 1..=dests.
fn rule_set(services: u32, dests: u32) -> Table {
    let mut t = Table::new();
    for s in 0..services {
        let key = ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr: IpAddr::V4(Ipv4Addr::from(0x0a00_0001 + s)),
            port: 80,
        };
        let dests = (0..dests)
            .map(|d| {
                let addr = IpAddr::V4(Ipv4Addr::from(0xac10_0001 + d));
                let mut dest = Destination::new(addr, 80, Forwarding::Route);
                dest.weight = d + 1;
                (dest.key, dest)
            })
            .collect();
        t.insert(
            key,
            ServiceState {
                service: Service::new(key, "wrr"),
                dests,
            },
        );
    }
    t
}

/// The same rule set as `ipvsadm -R` input.
fn ipvsadm_rules(t: &Table) -> String {
    let mut out = String::new();
    for (key, st) in t {
        let ServiceKey::Addr { addr, port, .. } = key else {
            continue;
        };
        let _ = writeln!(out, "-A -t {addr}:{port} -s {}", st.service.scheduler);
        for d in st.dests.values() {
            let _ = writeln!(
                out,
                "-a -t {addr}:{port} -r {}:{} -g -w {}",
                d.key.addr, d.key.port, d.weight
            );
        }
    }
    out
}

fn count(t: &Table) -> u64 {
    t.values().map(|s| s.dests.len() as u64).sum()
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn run_ok(cmd: &str, args: &[&str]) -> anyhow::Result<()> {
    let st = Command::new(cmd)
        .args(args)
        .status()
        .with_context(|| cmd.to_string())?;
    ensure!(st.success(), "{cmd} {args:?}: {st}");
    Ok(())
}

/// Run ipvsadm (under GNU time when present, for its peak RSS); stdout and
/// the peak RSS in KiB.
fn timed_ipvsadm(
    args: &[&str],
    stdin: Option<&std::path::Path>,
) -> anyhow::Result<(String, Option<u64>)> {
    let rss_file = std::env::temp_dir().join(format!("ipvs-bench-rss-{}", std::process::id()));
    let gnu_time = std::path::Path::new("/usr/bin/time").exists();
    let mut cmd = if gnu_time {
        let mut c = Command::new("/usr/bin/time");
        c.arg("-f")
            .arg("%M")
            .arg("-o")
            .arg(&rss_file)
            .arg("ipvsadm");
        c
    } else {
        Command::new("ipvsadm")
    };
    cmd.args(args).stdout(Stdio::piped());
    if let Some(p) = stdin {
        cmd.stdin(std::fs::File::open(p)?);
    }
    let out = cmd.output().context("ipvsadm")?;
    ensure!(
        out.status.success(),
        "ipvsadm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rss = std::fs::read_to_string(&rss_file)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let _ = std::fs::remove_file(&rss_file);
    std::io::stdout().flush()?;
    Ok((String::from_utf8(out.stdout)?, rss))
}

/// Peak resident set of this process (`VmHWM`), KiB.
fn peak_rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status")
}
