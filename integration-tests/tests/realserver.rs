//! The real-server agent (`lb-agent realserver`) on the host kernel, in
//! network namespaces: ARP and neighbour discovery for a VIP from a client's
//! point of view, the exact undo, drift repair, restart, and the preflight.
//!
//! Lab: one segment with a client (.1), a director (.2) and real servers
//! (.11, .12); the VIP 10.0.0.100 / fd00::100 is on-link for the client, so
//! the client resolves it with ARP / NDP and whoever answers gets the traffic.
//! Each agent runs as the real binary inside its host (`ip netns exec`), so
//! its sysctls and addresses are those of that host.
//!
//! Needs root, `arping` (iputils-arping) and `lb-agent` built
//! (`cargo build -p lb-agent`). Traffic stays inside the lab.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use lb_lab::{Host, Lab, Proc, bin_path, scaled, wait_for, wait_for_some};
use nix::sys::signal::Signal;

const VIP4: &str = "10.0.0.100";
const VIP6: &str = "fd00::100";

/// The sysctls the agent may touch, read for a before/after comparison.
const WATCHED: &[&str] = &["arp_ignore", "arp_announce", "rp_filter"];

fn agent_bin() -> PathBuf {
    let bin = bin_path("lb-agent");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p lb-agent`",
        bin.display()
    );
    bin
}

/// Writes a RealServerConfig for `host` into the lab directory.
fn config(host: &Host, vips: &str, interval: &str) -> Result<PathBuf> {
    let state = host.lab_dir().join(format!("state-{}", host.name()));
    let path = host.lab_dir().join(format!("{}.yaml", host.name()));
    let yaml = format!(
        "node: {}\nvips: {vips}\nsettings: {{reconcileInterval: {interval}, stateDir: {}}}\n",
        host.name(),
        state.display()
    );
    std::fs::write(&path, yaml)?;
    Ok(path)
}

fn state_dir(host: &Host) -> PathBuf {
    host.lab_dir().join(format!("state-{}", host.name()))
}

/// Starts `lb-agent realserver --config` inside `host`.
fn start_agent(host: &Host, config: &std::path::Path) -> Result<Proc> {
    let bin = agent_bin();
    let argv = [
        bin.to_str().unwrap(),
        "realserver",
        "--config",
        config.to_str().unwrap(),
    ];
    let cmd = host.command(argv).env("RUST_LOG", "info");
    Ok(host.spawn_cmd(cmd, &format!("agent-{}", host.name()))?)
}

/// The agent's last status report (the status file), as JSON.
fn status(host: &Host) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(state_dir(host).join("realserver-status.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// (ready, repairs) of one VIP in the last status report.
fn vip_status(host: &Host, vip: &str) -> Option<(bool, u64)> {
    let s = status(host)?;
    let v = s["vips"].as_array()?.iter().find(|v| v["address"] == vip)?;
    let repairs = match &v["repairs"] {
        serde_json::Value::String(s) => s.parse().ok()?,
        serde_json::Value::Number(n) => n.as_u64()?,
        _ => 0,
    };
    Some((v["ready"].as_bool().unwrap_or(false), repairs))
}

fn wait_ready(host: &Host, agent: &mut Proc, vip: &str) -> Result<()> {
    wait_for(
        || vip_status(host, vip).is_some_and(|(ready, _)| ready),
        scaled(Duration::from_secs(10)),
    )
    .with_context(|| {
        format!(
            "{vip} never ready on {}: status {:?}\nlog:\n{}",
            host.name(),
            status(host),
            agent.log()
        )
    })
}

fn mac(host: &Host) -> Result<String> {
    let out = host.ip(["-o", "link", "show", "eth0"])?;
    let mac = out
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .context("no link/ether on eth0")?;
    Ok(mac.to_lowercase())
}

/// MAC addresses that answered `probes` ARP requests for `target` from `client`.
fn arp_responders(client: &Host, target: &str, probes: u32) -> Result<Vec<String>> {
    let wait = scaled(Duration::from_secs(u64::from(probes) + 1))
        .as_secs()
        .to_string();
    let out = client.run([
        "arping",
        "-c",
        &probes.to_string(),
        "-w",
        &wait,
        "-I",
        "eth0",
        target,
    ])?;
    let mut macs: Vec<String> = out
        .stdout
        .lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| {
            let start = l.find('[')? + 1;
            let end = l.find(']')?;
            Some(l[start..end].to_lowercase())
        })
        .collect();
    macs.sort();
    macs.dedup();
    Ok(macs)
}

/// Every watched IPv4 sysctl of `all`, `default`, `lo` and `eth0`.
fn sysctls(host: &Host) -> Result<BTreeMap<String, String>> {
    let mut all = BTreeMap::new();
    for dev in ["all", "default", "lo", "eth0"] {
        for name in WATCHED {
            let key = format!("net.ipv4.conf.{dev}.{name}");
            all.insert(key.clone(), host.sysctl(&key)?);
        }
    }
    Ok(all)
}

/// Every address of the host, one line each, sorted (no lifetimes).
fn addresses(host: &Host) -> Result<Vec<String>> {
    let out = host.ip(["-o", "addr", "show"])?;
    let mut lines: Vec<String> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .take_while(|w| *w != "valid_lft")
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    lines.sort();
    Ok(lines)
}

fn has_addr(host: &Host, dev: &str, cidr: &str) -> Result<bool> {
    let out = host.ip(["-o", "addr", "show", "dev", dev])?;
    Ok(out.split_whitespace().any(|w| w == cidr))
}

fn stop(agent: &mut Proc) -> Result<()> {
    let status = agent.terminate(scaled(Duration::from_secs(10)));
    ensure!(
        status.success(),
        "agent exited with {status} on SIGTERM:\n{}",
        agent.log()
    );
    Ok(())
}

/// From a client, ARP for the VIP is answered by a real server that holds it
/// on lo without the agent's settings (the broken setup the agent exists to
/// prevent), and only by the director once the agent configured the real
/// servers, which do hold the VIP and report it ready.
#[test]
fn dr_arp_for_the_vip_is_answered_by_the_director_only() -> Result<()> {
    let lab = Lab::new("rs-arp")?;
    let client = lab.host("client", &["10.0.0.1/24"])?;
    let director = lab.host("dir", &["10.0.0.2/24"])?;
    let rs1 = lab.host("rs1", &["10.0.0.11/24"])?;
    let rs2 = lab.host("rs2", &["10.0.0.12/24"])?;
    let (dir_mac, rs1_mac, rs2_mac) = (mac(&director)?, mac(&rs1)?, mac(&rs2)?);

    // Without the agent: the VIP on rs1's lo with the kernel's defaults.
    rs1.add_addr("lo", &format!("{VIP4}/32"))?;
    let before = arp_responders(&client, VIP4, 2)?;
    ensure!(
        before == vec![rs1_mac.clone()],
        "without the agent rs1 ({rs1_mac}) should answer ARP for the VIP, got {before:?}"
    );
    rs1.del_addr("lo", &format!("{VIP4}/32"))?;

    // With the agent on both real servers, and the VIP on the director.
    director.add_addr("eth0", &format!("{VIP4}/32"))?;
    let vips = format!("[{{address: {VIP4}, forwarding: dr}}]");
    let mut a1 = start_agent(&rs1, &config(&rs1, &vips, "1s")?)?;
    let mut a2 = start_agent(&rs2, &config(&rs2, &vips, "1s")?)?;
    wait_ready(&rs1, &mut a1, VIP4)?;
    wait_ready(&rs2, &mut a2, VIP4)?;
    for rs in [&rs1, &rs2] {
        ensure!(
            has_addr(rs, "lo", &format!("{VIP4}/32"))?,
            "VIP not on lo of {}",
            rs.name()
        );
    }
    client.ip(["neigh", "flush", "dev", "eth0"])?;
    let after = arp_responders(&client, VIP4, 3)?;
    ensure!(
        after == vec![dir_mac.clone()],
        "with the agent only the director ({dir_mac}) may answer, got {after:?} (rs1 {rs1_mac}, rs2 {rs2_mac})"
    );
    // Traffic to the VIP goes to the director: the client's neighbour entry.
    client.run_ok(["ping", "-n", "-c", "1", "-W", "2", VIP4])?;
    let neigh = client.ip(["neigh", "show", VIP4])?;
    ensure!(
        neigh.contains(&dir_mac),
        "client neighbour entry {neigh:?} is not the director's"
    );

    // And without the director, nobody answers: the real servers stay silent.
    director.del_addr("eth0", &format!("{VIP4}/32"))?;
    let silent = arp_responders(&client, VIP4, 2)?;
    ensure!(
        silent.is_empty(),
        "real servers answered ARP for the VIP: {silent:?}"
    );

    stop(&mut a1)?;
    stop(&mut a2)?;
    Ok(())
}

/// What the kernel does for IPv6 (the mechanism the agent relies on): a VIP
/// on lo is not advertised on eth0, because Linux answers a neighbour
/// solicitation only for addresses of the interface it arrived on. So the
/// agent sets no sysctl for IPv6 DR; the client resolves the VIP to the
/// director once the director holds it.
#[test]
fn dr_ipv6_vip_not_advertised() -> Result<()> {
    let lab = Lab::new("rs-ndp")?;
    let client = lab.host("client", &["10.0.0.1/24", "fd00::1/64"])?;
    let director = lab.host("dir", &["10.0.0.2/24", "fd00::2/64"])?;
    let rs1 = lab.host("rs1", &["10.0.0.11/24", "fd00::11/64"])?;
    let vips = format!("[{{address: '{VIP6}', forwarding: dr}}]");
    let mut agent = start_agent(&rs1, &config(&rs1, &vips, "1s")?)?;
    wait_ready(&rs1, &mut agent, VIP6)?;
    ensure!(has_addr(&rs1, "lo", &format!("{VIP6}/128"))?);
    // rs1's lo VIP is usable locally (not tentative: nodad).
    rs1.run_ok(["ping", "-n", "-c", "1", "-W", "2", VIP6])?;

    // Only rs1 holds the VIP (on lo): the client's solicitations go unanswered.
    let out = client.run(["ping", "-n", "-c", "2", "-W", "1", VIP6])?;
    ensure!(
        !out.success(),
        "rs1 answered for its lo VIP: {}",
        out.stdout
    );
    let neigh = client.ip(["-6", "neigh", "show", VIP6])?;
    ensure!(
        !neigh.contains("lladdr"),
        "the VIP resolved without the director: {neigh}"
    );

    // The director holds it: resolved to the director's MAC.
    director.add_addr("eth0", &format!("{VIP6}/128"))?;
    client.ip(["-6", "neigh", "flush", "dev", "eth0"])?;
    client.run_ok(["ping", "-n", "-c", "1", "-W", "2", VIP6])?;
    let neigh = client.ip(["-6", "neigh", "show", VIP6])?;
    ensure!(neigh.contains(&mac(&director)?), "{neigh}");
    ensure!(
        rs1.sysctl("net.ipv4.conf.all.arp_ignore")? == "0",
        "an IPv6-only agent touched IPv4 sysctls"
    );
    stop(&mut agent)?;
    Ok(())
}

/// The undo on SIGTERM puts back the exact values found (odd ones included)
/// and removes only the addresses the agent added: a VIP that was already on
/// lo, and an unrelated address, stay.
#[test]
fn undo_restores_exact_previous_values_and_addresses() -> Result<()> {
    let lab = Lab::new("rs-undo")?;
    let rs = lab.host("rs1", &["10.0.0.11/24", "fd00::11/64"])?;
    rs.set_sysctl("net.ipv4.conf.all.arp_announce", "1")?;
    rs.set_sysctl("net.ipv4.conf.eth0.arp_ignore", "3")?;
    rs.set_sysctl("net.ipv4.conf.lo.arp_announce", "1")?;
    rs.add_addr("lo", "10.0.0.101/32")?; // a VIP set up before the agent
    rs.add_addr("lo", "192.0.2.1/32")?; // unrelated
    let sysctls_before = sysctls(&rs)?;
    let addresses_before = addresses(&rs)?;

    let vips = format!("[{{address: {VIP4}}}, {{address: 10.0.0.101}}, {{address: '{VIP6}'}}]");
    let mut agent = start_agent(&rs, &config(&rs, &vips, "1s")?)?;
    for vip in [VIP4, "10.0.0.101", VIP6] {
        wait_ready(&rs, &mut agent, vip)?;
    }
    ensure!(rs.sysctl("net.ipv4.conf.all.arp_ignore")? == "1");
    ensure!(rs.sysctl("net.ipv4.conf.eth0.arp_ignore")? == "1");
    ensure!(rs.sysctl("net.ipv4.conf.all.arp_announce")? == "2");
    ensure!(has_addr(&rs, "lo", &format!("{VIP4}/32"))?);
    ensure!(state_dir(&rs).join("realserver-ledger.json").exists());

    stop(&mut agent)?;
    assert_eq!(
        sysctls(&rs)?,
        sysctls_before,
        "sysctls not restored exactly"
    );
    assert_eq!(
        addresses(&rs)?,
        addresses_before,
        "addresses not restored exactly"
    );
    ensure!(
        !state_dir(&rs).join("realserver-ledger.json").exists(),
        "a ledger is left after a complete undo"
    );
    Ok(())
}

/// In: a standalone agent holding a DR VIP (10.0.0.100) and a TUN VIP
/// (10.0.0.102, on tunl0 where the host kernel has ipip, else not ready);
/// the file rewritten to drop the TUN VIP and add 10.0.0.101; SIGHUP; then a
/// broken file and SIGHUP again.
/// Out: after the first SIGHUP 10.0.0.101 is on lo, 10.0.0.100 still is (not
/// removed and added again: its address keeps its place on lo), 10.0.0.102
/// is gone and rp_filter is back to its original while the ARP sysctls stay;
/// the broken file is refused and the running configuration stays.
#[test]
fn sighup_applies_the_difference_of_the_file() -> Result<()> {
    let lab = Lab::new("rs-hup")?;
    let rs = lab.host("rs1", &["10.0.0.11/24"])?;
    rs.set_sysctl("net.ipv4.conf.all.rp_filter", "1")?;
    let sysctls_before = sysctls(&rs)?;
    let path = config(
        &rs,
        &format!("[{{address: {VIP4}}}, {{address: 10.0.0.102, forwarding: tun}}]"),
        "1s",
    )?;
    let mut agent = start_agent(&rs, &path)?;
    wait_ready(&rs, &mut agent, VIP4)?;
    let tunnel = rs.ip(["link", "show", "tunl0"]).is_ok();
    if tunnel {
        wait_ready(&rs, &mut agent, "10.0.0.102")?;
        ensure!(rs.sysctl("net.ipv4.conf.all.rp_filter")? == "0");
    }
    let lo_before = rs.ip(["-o", "addr", "show", "dev", "lo"])?;

    config(
        &rs,
        &format!("[{{address: {VIP4}}}, {{address: 10.0.0.101}}]"),
        "1s",
    )?;
    agent.signal(Signal::SIGHUP);
    wait_ready(&rs, &mut agent, "10.0.0.101")?;
    ensure!(has_addr(&rs, "lo", "10.0.0.101/32")?, "new VIP not on lo");
    let lo_after = rs.ip(["-o", "addr", "show", "dev", "lo"])?;
    let position = |text: &str| text.find(&format!("{VIP4}/32"));
    ensure!(
        position(&lo_after).is_some() && position(&lo_after) == position(&lo_before),
        "unchanged VIP moved on lo:\n{lo_before}\n{lo_after}"
    );
    ensure!(
        !rs.ip(["-o", "addr", "show"])?.contains("10.0.0.102/"),
        "removed VIP still held"
    );
    ensure!(
        rs.sysctl("net.ipv4.conf.all.rp_filter")? == "1",
        "rp_filter not restored once no VIP needs it"
    );
    ensure!(rs.sysctl("net.ipv4.conf.all.arp_ignore")? == "1");
    ensure!(agent.log().contains("reloaded"), "{}", agent.log());

    std::fs::write(&path, "vips: [{address: 10.0.0.300}]\n")?;
    agent.signal(Signal::SIGHUP);
    wait_for(
        || agent.log().contains("reload refused"),
        scaled(Duration::from_secs(10)),
    )
    .with_context(|| agent.log())?;
    ensure!(
        has_addr(&rs, "lo", "10.0.0.101/32")?,
        "refused file applied"
    );
    stop(&mut agent)?;
    ensure!(sysctls(&rs)? == sysctls_before, "sysctls after stop");
    Ok(())
}

/// Drift: a VIP deleted by hand comes back, and a sysctl reset by hand (no
/// netlink notification for it) is set again within the reconcile period;
/// both are reported in the log and counted in the VIP's status.
#[test]
fn drift_is_repaired_within_the_reconcile_period_and_reported() -> Result<()> {
    let lab = Lab::new("rs-drift")?;
    let rs = lab.host("rs1", &["10.0.0.11/24"])?;
    let interval = Duration::from_secs(1);
    let vips = format!("[{{address: {VIP4}}}]");
    let mut agent = start_agent(&rs, &config(&rs, &vips, "1s")?)?;
    wait_ready(&rs, &mut agent, VIP4)?;
    let (_, repairs0) = vip_status(&rs, VIP4).context("no status")?;
    // The period plus two of slack for process scheduling on a loaded machine;
    // the measured times are printed.
    let deadline = scaled(interval * 3);

    // The VIP deleted by hand.
    rs.del_addr("lo", &format!("{VIP4}/32"))?;
    let t = Instant::now();
    wait_for(
        || has_addr(&rs, "lo", &format!("{VIP4}/32")).unwrap_or(false),
        deadline,
    )
    .with_context(|| format!("VIP not restored within {deadline:?}:\n{}", agent.log()))?;
    let took_addr = t.elapsed();

    // Let the reconciliation that repaired the address finish (its status
    // counts the repair) before the next change.
    wait_for(
        || vip_status(&rs, VIP4).is_some_and(|(_, r)| r > repairs0),
        scaled(Duration::from_secs(5)),
    )?;

    // A sysctl reset by hand.
    rs.set_sysctl("net.ipv4.conf.all.arp_ignore", "0")?;
    let t = Instant::now();
    wait_for(
        || {
            rs.sysctl("net.ipv4.conf.all.arp_ignore")
                .is_ok_and(|v| v == "1")
        },
        deadline,
    )
    .with_context(|| {
        format!(
            "arp_ignore not restored within {deadline:?}:\n{}",
            agent.log()
        )
    })?;
    let took_sysctl = t.elapsed();
    eprintln!("drift repaired: address in {took_addr:?}, sysctl in {took_sysctl:?}");

    let repairs = wait_for_some(
        || {
            vip_status(&rs, VIP4)
                .filter(|(ready, r)| *ready && *r >= repairs0 + 2)
                .map(|(_, r)| r)
        },
        scaled(Duration::from_secs(5)),
    )
    .with_context(|| format!("repairs not reported: {:?}", status(&rs)))?;
    let log = agent.log();
    for object in [
        format!("address {VIP4}/32 on lo"),
        "net/ipv4/conf/all/arp_ignore = 1".to_string(),
    ] {
        ensure!(
            log.lines()
                .any(|l| l.contains("drift repaired") && l.contains(&object)),
            "no drift report for {object} in the log:\n{log}"
        );
    }
    eprintln!("repairs reported: {repairs}");
    stop(&mut agent)?;
    ensure!(rs.sysctl("net.ipv4.conf.all.arp_ignore")? == "0");
    Ok(())
}

/// A restarted agent (killed with SIGKILL, no undo) still knows the original
/// values from its ledger and restores them on the next clean stop.
#[test]
fn a_killed_agent_restarts_with_its_ledger_and_still_restores_the_originals() -> Result<()> {
    let lab = Lab::new("rs-restart")?;
    let rs = lab.host("rs1", &["10.0.0.11/24"])?;
    let sysctls_before = sysctls(&rs)?;
    let addresses_before = addresses(&rs)?;
    let cfg = config(&rs, &format!("[{{address: {VIP4}}}]"), "1s")?;
    let mut agent = start_agent(&rs, &cfg)?;
    wait_ready(&rs, &mut agent, VIP4)?;
    agent.kill();
    ensure!(
        rs.sysctl("net.ipv4.conf.all.arp_ignore")? == "1",
        "SIGKILL undid something"
    );
    ensure!(state_dir(&rs).join("realserver-ledger.json").exists());

    let mut agent = start_agent(&rs, &cfg)?;
    // The status file of the first run is still there: wait for a fresh one.
    std::fs::remove_file(state_dir(&rs).join("realserver-status.json"))?;
    wait_ready(&rs, &mut agent, VIP4)?;
    stop(&mut agent)?;
    assert_eq!(sysctls(&rs)?, sysctls_before);
    assert_eq!(addresses(&rs)?, addresses_before);
    Ok(())
}

/// `--check` changes nothing, passes on a clean host, and fails with a clear
/// message when the VIP is already on another interface.
#[test]
fn preflight_reports_conflicts_and_changes_nothing() -> Result<()> {
    let lab = Lab::new("rs-check")?;
    let rs = lab.host("rs1", &["10.0.0.11/24"])?;
    let cfg = config(&rs, &format!("[{{address: {VIP4}}}]"), "1s")?;
    let bin = agent_bin();
    let check = |rs: &Host| -> Result<lb_lab::Output> {
        Ok(rs.run([
            bin.to_str().unwrap(),
            "realserver",
            "--config",
            cfg.to_str().unwrap(),
            "--check",
        ])?)
    };
    let before = (sysctls(&rs)?, addresses(&rs)?);
    let out = check(&rs)?;
    ensure!(
        out.success(),
        "check failed on a clean host: {}{}",
        out.stdout,
        out.stderr
    );
    ensure!(out.stdout.contains("preflight passed"), "{}", out.stdout);
    ensure!(
        (sysctls(&rs)?, addresses(&rs)?) == before,
        "--check changed the host"
    );

    rs.add_addr("eth0", &format!("{VIP4}/32"))?;
    let out = check(&rs)?;
    if out.success() {
        bail!("check passed with the VIP on eth0: {}", out.stdout);
    }
    ensure!(
        out.stdout.contains(&format!(
            "BLOCKING vip {VIP4}: conflict: {VIP4} is also on eth0"
        )),
        "{}",
        out.stdout
    );
    Ok(())
}

const CTL_VIP: &str = "10.34.0.100";

/// The topology the controller test applies: one director, one real server,
/// and the DR service `web` only when `with_service`.
fn controller_topology(with_service: bool) -> String {
    let services = if with_service {
        format!(
            r#"services:
  - name: web
    directorGroup: web-lb
    vip: {CTL_VIP}
    port: 80
    protocol: tcp
    scheduler: wrr
    forwarding: dr
    healthCheck:
      tcp: {{}}
      interval: 500ms
      timeout: 200ms
    realServers:
      - {{node: rs1, port: 80, weight: 1}}
"#
        )
    } else {
        "services: []\n".to_string()
    };
    format!(
        r#"nodes:
  - {{name: ds1, role: director, address: 10.34.0.1}}
  - {{name: rs1, role: realserver, address: 10.34.0.11}}
directorGroups:
  - name: web-lb
    interface: eth0
    vrrp:
      version: 3
      advertInterval: 100ms
      instances:
        - name: VI_1
          vrid: 34
          vips: [{CTL_VIP}/24]
          priorities: {{ds1: 100}}
{services}"#
    )
}

/// The weight of rs1 in the director's last good configuration (what the
/// controller pushed it), `None` while it has none or no such real server.
fn director_weight(state: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(state.join("director-last-good.json")).ok()?;
    let envelope: serde_json::Value = serde_json::from_str(&text).ok()?;
    let config: serde_json::Value = serde_json::from_str(envelope["config"].as_str()?).ok()?;
    let rs = config["services"].as_array()?.first()?["realServers"]
        .as_array()?
        .first()?
        .clone();
    Some(rs["weight"].as_u64().unwrap_or(0))
}

fn lbctl(ctl: &Host, url: &str, args: &[&str]) -> Result<String> {
    let bin = bin_path("lbctl");
    let mut argv = vec![bin.to_str().context("path")?, "--controller", url];
    argv.extend_from_slice(args);
    Ok(ctl.run_ok(argv)?)
}

fn apply(ctl: &Host, url: &str, file: &std::path::Path, message: &str) -> Result<String> {
    Ok(lb_lab::wait_for_ok(
        || {
            lbctl(
                ctl,
                url,
                &[
                    "apply",
                    "-f",
                    file.to_str().unwrap_or_default(),
                    "-m",
                    message,
                ],
            )
        },
        scaled(Duration::from_secs(10)),
    )?)
}

fn start_controlled_agent(host: &Host, url: &str) -> Result<Proc> {
    let bin = agent_bin();
    let state = state_dir(host);
    let argv = [
        bin.to_str().context("path")?,
        "realserver",
        "--controller",
        url,
        "--node",
        host.name(),
        "--state-dir",
        state.to_str().context("path")?,
    ];
    let cmd = host.command(argv).env("RUST_LOG", "info");
    Ok(host.spawn_cmd(cmd, &format!("agent-{}", host.name()))?)
}

/// In: `lb-controller` (embedded store) on a lab host, a director agent and
/// a real-server agent both started with `--controller` and no file; the
/// topology applied with `lbctl` before the real-server agent starts; then
/// applied without the service, then with it again; then the controller is
/// stopped and the real-server agent restarted.
/// Out: the director is pushed rs1 at weight 0 until rs1's agent reports the
/// VIP ready, and at weight 1 after; rs1 holds the VIP on lo with the ARP
/// sysctls and `lbctl status` shows it ready; the apply without the service
/// takes the VIP off lo and puts every sysctl back; the restarted agent runs
/// the stored configuration with the controller gone; SIGTERM leaves the
/// sysctls and addresses as they were before any agent ran.
#[test]
fn controller_pushes_the_vips_and_gates_the_director_on_readiness() -> Result<()> {
    let lab = Lab::new("rs-ctl")?;
    let ctl = lab.host("ctl", &["10.34.0.50/24"])?;
    let ds1 = lab.host("ds1", &["10.34.0.1/24"])?;
    let rs1 = lab.host("rs1", &["10.34.0.11/24"])?;
    let _www = rs1.http_server(80)?;
    let url = "http://10.34.0.50:7000";
    let with = lab.dir().join("with.yaml");
    let without = lab.dir().join("without.yaml");
    std::fs::write(&with, controller_topology(true))?;
    std::fs::write(&without, controller_topology(false))?;
    let sysctls_before = sysctls(&rs1)?;
    let addresses_before = addresses(&rs1)?;

    let data = ctl.lab_dir().join("ctl-data");
    let mut controller = ctl.spawn([
        bin_path("lb-controller").to_str().context("path")?,
        "--listen",
        "10.34.0.50:7000",
        "--data-dir",
        data.to_str().context("path")?,
    ])?;
    let ds_state = ds1.lab_dir().join("state-ds1");
    let _director = ds1.spawn([
        agent_bin().to_str().context("path")?,
        "director",
        "--controller",
        url,
        "--node",
        "ds1",
        "--state-dir",
        ds_state.to_str().context("path")?,
    ])?;
    let applied = apply(&ctl, url, &with, "first")
        .with_context(|| format!("lbctl apply never succeeded:\n{}", controller.log()))?;
    ensure!(applied.contains("revision"), "lbctl apply said: {applied}");

    // No real-server agent yet: the director gets rs1 with weight 0.
    wait_for(
        || director_weight(&ds_state) == Some(0),
        scaled(Duration::from_secs(15)),
    )
    .with_context(|| {
        format!(
            "director never pushed rs1 at weight 0:\n{}",
            controller.log()
        )
    })?;

    let mut agent = start_controlled_agent(&rs1, url)?;
    wait_ready(&rs1, &mut agent, CTL_VIP)?;
    ensure!(
        has_addr(&rs1, "lo", &format!("{CTL_VIP}/32"))?,
        "VIP not on lo: {:?}\n{}",
        addresses(&rs1),
        agent.log()
    );
    for dev in ["all", "lo", "eth0"] {
        ensure!(rs1.sysctl(&format!("net.ipv4.conf.{dev}.arp_ignore"))? == "1");
        ensure!(rs1.sysctl(&format!("net.ipv4.conf.{dev}.arp_announce"))? == "2");
    }
    ensure!(
        state_dir(&rs1).join("realserver-last-good.json").exists(),
        "the pushed configuration was not stored"
    );
    // The controller sees it ready, and only then lets the director use it.
    let status = wait_for_some(
        || {
            lbctl(&ctl, url, &["status"]).ok().filter(|s| {
                s.lines()
                    .any(|l| l.starts_with("rs1 ") && l.contains(" 1/1 "))
            })
        },
        scaled(Duration::from_secs(10)),
    )
    .with_context(|| {
        format!(
            "controller never showed rs1 ready: {:?}",
            lbctl(&ctl, url, &["status"])
        )
    })?;
    ensure!(status.contains("yes"), "lbctl status: {status}");
    wait_for(
        || director_weight(&ds_state) == Some(1),
        scaled(Duration::from_secs(15)),
    )
    .with_context(|| {
        format!(
            "director never pushed rs1 at weight 1:\n{}",
            controller.log()
        )
    })?;

    // The service goes: the VIP leaves lo and the sysctls go back.
    apply(&ctl, url, &without, "no service")?;
    wait_for(
        || !has_addr(&rs1, "lo", &format!("{CTL_VIP}/32")).unwrap_or(true),
        scaled(Duration::from_secs(15)),
    )
    .with_context(|| format!("VIP still on lo:\n{}", agent.log()))?;
    wait_for(
        || sysctls(&rs1).is_ok_and(|s| s == sysctls_before),
        scaled(Duration::from_secs(5)),
    )
    .with_context(|| {
        format!(
            "sysctls not restored: {:?} (was {sysctls_before:?})",
            sysctls(&rs1)
        )
    })?;
    ensure!(agent.is_running(), "agent stopped:\n{}", agent.log());

    // Back again; then the controller goes and the agent restarts.
    apply(&ctl, url, &with, "service again")?;
    wait_ready(&rs1, &mut agent, CTL_VIP)?;
    controller.kill();
    stop(&mut agent)?;
    ensure!(
        !has_addr(&rs1, "lo", &format!("{CTL_VIP}/32"))?,
        "VIP left on lo by SIGTERM"
    );
    // The status file of the stopped run says ready; only a new one counts.
    std::fs::remove_file(state_dir(&rs1).join("realserver-status.json"))?;
    let mut agent = start_controlled_agent(&rs1, url)?;
    wait_for(
        || {
            agent
                .log()
                .contains("starting from the stored configuration")
        },
        scaled(Duration::from_secs(10)),
    )
    .with_context(|| format!("did not start from its store:\n{}", agent.log()))?;
    wait_ready(&rs1, &mut agent, CTL_VIP)?;
    ensure!(
        has_addr(&rs1, "lo", &format!("{CTL_VIP}/32"))?,
        "VIP not on lo: {:?}\n{}",
        addresses(&rs1),
        agent.log()
    );
    stop(&mut agent)?;
    ensure!(
        sysctls(&rs1)? == sysctls_before,
        "sysctls after the last stop"
    );
    ensure!(
        addresses(&rs1)? == addresses_before,
        "addresses after the last stop"
    );
    Ok(())
}

/// The reason a VIP is not ready, from the last status report.
fn vip_reason(host: &Host, vip: &str) -> String {
    status(host)
        .and_then(|s| {
            s["vips"]
                .as_array()?
                .iter()
                .find(|v| v["address"] == vip)
                .map(|v| v["reason"].as_str().unwrap_or("").to_string())
        })
        .unwrap_or_default()
}

/// In: a NAT VIP whose replies must route through the director (.2); the
/// real server's default route via the director, then via another router
/// (.1), then a multipath default route over both. Out: ready only while
/// every reply goes through the director, not ready (with the reason)
/// otherwise; nothing is bound for NAT.
#[test]
fn nat_is_ready_only_while_replies_route_through_the_director() -> Result<()> {
    let lab = Lab::new("rs-nat")?;
    let _client = lab.host("client", &["10.0.0.1/24"])?;
    let _director = lab.host("director", &["10.0.0.2/24"])?;
    let rs = lab.host("rs1", &["10.0.0.11/24"])?;
    rs.ip(["route", "add", "default", "via", "10.0.0.2"])?;
    let cfg = config(
        &rs,
        &format!("[{{address: {VIP4}, forwarding: nat, natGateway: 10.0.0.2}}]"),
        "200ms",
    )?;
    let mut agent = start_agent(&rs, &cfg)?;
    let ready = |want: bool| {
        wait_for(
            || vip_status(&rs, VIP4).is_some_and(|(r, _)| r == want),
            scaled(Duration::from_secs(10)),
        )
    };
    ready(true).with_context(|| format!("never ready via the director:\n{}", agent.log()))?;
    ensure!(!rs.has_addr(VIP4)?, "NAT bound the VIP");

    rs.ip(["route", "replace", "default", "via", "10.0.0.1"])?;
    ready(false).with_context(|| format!("still ready via another router: {:?}", status(&rs)))?;
    ensure!(
        vip_reason(&rs, VIP4).contains("10.0.0.2"),
        "reason: {}",
        vip_reason(&rs, VIP4)
    );

    rs.ip(["route", "replace", "default", "via", "10.0.0.2"])?;
    ready(true).context("not ready again via the director")?;
    rs.ip([
        "route", "replace", "default", "nexthop", "via", "10.0.0.2", "nexthop", "via", "10.0.0.1",
    ])?;
    ready(false).with_context(|| {
        format!(
            "ready with half the replies around the director: {:?}",
            status(&rs)
        )
    })?;
    agent.terminate(scaled(Duration::from_secs(10)));
    Ok(())
}
