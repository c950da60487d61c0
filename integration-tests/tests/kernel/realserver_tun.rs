//! LVS-TUN (IPv4 and IPv6) and LVS-DR end to end on a kernel with IPVS and IP
//! tunnels: a client, a director whose IPVS (set up with ipvsadm) forwards to
//! two real servers, and real servers configured only by
//! `lb-agent realserver`. Also the tunnel's drift repair and the undo.
//!
//! The real servers start with strict reverse-path filtering (`rp_filter=1`,
//! as several distributions ship), so HTTP through the VIP only works once the
//! agent has set it right; the test shows it fails before.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use lb_lab::{Host, Lab, Proc, bin_path, http_url, scaled, wait_for};

const VIP: &str = "10.0.0.100";

fn start_agent(host: &Host, vips: &str) -> Result<Proc> {
    let bin = bin_path("lb-agent");
    ensure!(
        bin.exists(),
        "{} is missing: cargo build -p lb-agent",
        bin.display()
    );
    let state = state_dir(host);
    let cfg = host.lab_dir().join(format!("{}.yaml", host.name()));
    std::fs::write(
        &cfg,
        format!(
            "node: {}\nvips: {vips}\nsettings: {{reconcileInterval: 1s, stateDir: {}}}\n",
            host.name(),
            state.display()
        ),
    )?;
    let cmd = host
        .command([
            bin.to_str().unwrap(),
            "realserver",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .env("RUST_LOG", "info");
    Ok(host.spawn_cmd(cmd, &format!("agent-{}", host.name()))?)
}

fn state_dir(host: &Host) -> PathBuf {
    host.lab_dir().join(format!("state-{}", host.name()))
}

fn ready(host: &Host) -> bool {
    let Ok(text) = std::fs::read_to_string(state_dir(host).join("realserver-status.json")) else {
        return false;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    v["vips"]
        .as_array()
        .is_some_and(|vips| !vips.is_empty() && vips.iter().all(|v| v["ready"] == true))
}

fn wait_ready(host: &Host, agent: &mut Proc) -> Result<()> {
    wait_for(|| ready(host), scaled(Duration::from_secs(20))).with_context(|| {
        format!(
            "VIP never ready on {}: {:?}\n{}",
            host.name(),
            std::fs::read_to_string(state_dir(host).join("realserver-status.json")),
            agent.log()
        )
    })
}

fn link_up(host: &Host, dev: &str) -> bool {
    host.ip(["-o", "link", "show", dev]).is_ok_and(|l| {
        l.split(['<', '>'])
            .nth(1)
            .is_some_and(|f| f.split(',').any(|f| f == "UP"))
    })
}

fn has_vip(host: &Host, dev: &str) -> bool {
    host.ip(["-o", "addr", "show", "dev", dev])
        .is_ok_and(|o| o.split_whitespace().any(|w| w == format!("{VIP}/32")))
}

fn sysctls(host: &Host) -> Result<Vec<(String, String)>> {
    let mut v = Vec::new();
    for dev in ["all", "default", "lo", "eth0"] {
        for name in ["arp_ignore", "arp_announce", "rp_filter"] {
            let key = format!("net.ipv4.conf.{dev}.{name}");
            let value = host.sysctl(&key)?;
            v.push((key, value));
        }
    }
    Ok(v)
}

fn modprobe(module: &str) -> Result<()> {
    lb_lab::Cmd::new(["modprobe", module]).run_ok()?;
    Ok(())
}

/// HTTP through the VIP reaches both real servers, which the agent alone
/// configured (tunl0 adopted, VIP on it, rp_filter and ARP sysctls); drift on
/// the tunnel is repaired; SIGTERM puts everything back.
#[test]
fn tun_http_through_the_vip_reaches_both_real_servers() -> Result<()> {
    lb_lab::kernel::require_ipvs();
    modprobe("ip_vs_rr")?;
    let lab = Lab::new("rs-tun")?;
    let client = lab.host("client", &["10.0.0.1/24"])?;
    let director = lab.host("dir", &["10.0.0.2/24"])?;
    let rs1 = lab.host("rs1", &["10.0.0.11/24"])?;
    let rs2 = lab.host("rs2", &["10.0.0.12/24"])?;
    director.add_addr("eth0", &format!("{VIP}/32"))?;
    director.run_ok(["ipvsadm", "-A", "-t", &format!("{VIP}:80"), "-s", "rr"])?;
    for rip in ["10.0.0.11", "10.0.0.12"] {
        director.run_ok([
            "ipvsadm",
            "-a",
            "-t",
            &format!("{VIP}:80"),
            "-r",
            &format!("{rip}:80"),
            "-i",
            "-w",
            "1",
        ])?;
    }
    let mut before = Vec::new();
    for rs in [&rs1, &rs2] {
        for key in [
            "net.ipv4.conf.all.rp_filter",
            "net.ipv4.conf.default.rp_filter",
        ] {
            rs.set_sysctl(key, "1")?;
        }
        before.push(sysctls(rs)?);
    }
    let _www1 = rs1.http_server(80)?;
    let _www2 = rs2.http_server(80)?;
    let url = http_url(VIP.parse()?, 80);

    // Without the agent the real servers drop what the director tunnels.
    let failed = client.http_get_timeout(&url, scaled(Duration::from_secs(2)));
    ensure!(
        failed.is_err(),
        "HTTP through the VIP worked without the agent: {failed:?}"
    );

    let vips = format!("[{{address: {VIP}, forwarding: tun}}]");
    let mut a1 = start_agent(&rs1, &vips)?;
    let mut a2 = start_agent(&rs2, &vips)?;
    wait_ready(&rs1, &mut a1)?;
    wait_ready(&rs2, &mut a2)?;
    for rs in [&rs1, &rs2] {
        ensure!(
            has_vip(rs, "tunl0") && link_up(rs, "tunl0"),
            "tunl0 of {}",
            rs.name()
        );
        ensure!(rs.sysctl("net.ipv4.conf.tunl0.rp_filter")? == "0");
        ensure!(rs.sysctl("net.ipv4.conf.all.rp_filter")? == "0");
    }

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let body = client.http_get(&url)?;
        seen.insert(body.trim().to_string());
        if seen.len() == 2 {
            break;
        }
    }
    ensure!(
        seen == ["rs1".to_string(), "rs2".to_string()].into(),
        "HTTP through the VIP reached {seen:?}"
    );
    let stats = director.run_ok(["ipvsadm", "-Ln", "--stats"])?;
    eprintln!("{stats}");

    // Drift on rs1: the tunnel set down, the VIP removed, rp_filter reset.
    rs1.link_down("tunl0")?;
    wait_for(|| link_up(&rs1, "tunl0"), scaled(Duration::from_secs(3)))
        .with_context(|| format!("tunl0 stayed down:\n{}", a1.log()))?;
    rs1.del_addr("tunl0", &format!("{VIP}/32"))?;
    wait_for(|| has_vip(&rs1, "tunl0"), scaled(Duration::from_secs(3)))
        .with_context(|| format!("VIP not restored on tunl0:\n{}", a1.log()))?;
    rs1.set_sysctl("net.ipv4.conf.tunl0.rp_filter", "1")?;
    wait_for(
        || {
            rs1.sysctl("net.ipv4.conf.tunl0.rp_filter")
                .is_ok_and(|v| v == "0")
        },
        scaled(Duration::from_secs(3)),
    )
    .with_context(|| format!("tunl0 rp_filter not restored:\n{}", a1.log()))?;
    let log = a1.log();
    for object in [
        "link tunl0 up",
        "address 10.0.0.100/32 on tunl0",
        "net/ipv4/conf/tunl0/rp_filter = 0",
    ] {
        ensure!(
            log.lines()
                .any(|l| l.contains("drift repaired") && l.contains(object)),
            "no drift report for {object}:\n{log}"
        );
    }
    let body = client.http_get(&url)?;
    ensure!(body.starts_with("rs"), "{body}");

    // SIGTERM: the fallback tunl0 goes back down, the VIP and the values go.
    for (rs, agent, before) in [(&rs1, &mut a1, &before[0]), (&rs2, &mut a2, &before[1])] {
        let status = agent.terminate(scaled(Duration::from_secs(10)));
        ensure!(status.success(), "{status}: {}", agent.log());
        ensure!(!has_vip(rs, "tunl0"), "VIP left on tunl0 of {}", rs.name());
        ensure!(!link_up(rs, "tunl0"), "tunl0 of {} left up", rs.name());
        ensure!(
            &sysctls(rs)? == before,
            "sysctls of {} not restored",
            rs.name()
        );
    }
    Ok(())
}

/// Where no fallback device exists (`fb_tunnels_only_for_init_net`), the agent
/// creates `tunl0` itself; deleted by hand it comes back; the undo deletes it.
#[test]
fn tun_created_tunnel_deleted_by_hand_comes_back() -> Result<()> {
    modprobe("ipip")?;
    let key = Path::new("/proc/sys/net/core/fb_tunnels_only_for_init_net");
    let old = std::fs::read_to_string(key)?;
    // 1: fallback devices only in the initial namespace, for namespaces
    // created from now on; put back as soon as the host exists (also on a
    // panic), while no other test of this binary creates a namespace.
    struct Restore<'a>(&'a Path, String);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let _ = std::fs::write(self.0, self.1.trim());
        }
    }
    let made = lb_lab::with_exclusive_netns_creation(|| -> Result<_> {
        let _restore = Restore(key, old.clone());
        std::fs::write(key, "1")?;
        let lab = Lab::new("rs-tun-create")?;
        let rs = lab.host("rs1", &["10.0.0.11/24"])?;
        Ok((lab, rs))
    });
    let (_lab, rs) = made?;
    ensure!(
        rs.ip(["link", "show", "tunl0"]).is_err(),
        "a fallback tunl0 exists"
    );

    let mut agent = start_agent(&rs, &format!("[{{address: {VIP}, forwarding: tun}}]"))?;
    wait_ready(&rs, &mut agent)?;
    ensure!(has_vip(&rs, "tunl0"));
    let ledger = std::fs::read_to_string(state_dir(&rs).join("realserver-ledger.json"))?;
    ensure!(
        ledger.contains("\"tunl0\""),
        "tunl0 not recorded as created: {ledger}"
    );

    rs.ip(["link", "del", "tunl0"])?;
    wait_for(
        || has_vip(&rs, "tunl0") && link_up(&rs, "tunl0"),
        scaled(Duration::from_secs(3)),
    )
    .with_context(|| format!("tunl0 not recreated:\n{}", agent.log()))?;
    let log = agent.log();
    ensure!(
        log.lines()
            .any(|l| l.contains("drift repaired") && l.contains("tunnel device tunl0")),
        "{log}"
    );

    let status = agent.terminate(scaled(Duration::from_secs(10)));
    ensure!(status.success(), "{status}: {}", agent.log());
    ensure!(
        rs.ip(["link", "show", "tunl0"]).is_err(),
        "tunl0 left behind"
    );
    Ok(())
}

/// One LVS path: client, director with the VIP and an ipvsadm service in
/// `method` (-g, -i) to two real servers serving HTTP, and the real servers'
/// agents holding the VIP with `forwarding`. HTTP through the VIP fails
/// before the agents run and reaches both real servers after; SIGTERM leaves
/// no VIP behind.
fn lvs_through_agents(name: &str, vip: &str, method: &str, forwarding: &str) -> Result<()> {
    lb_lab::kernel::require_ipvs();
    modprobe("ip_vs_rr")?;
    let v6 = vip.contains(':');
    let lab = Lab::new(name)?;
    let addrs = |last: u8| [format!("10.0.0.{last}/24"), format!("fd00::{last}/64")];
    let host = |name: &str, last: u8| {
        let a = addrs(last);
        lab.host(name, &[a[0].as_str(), a[1].as_str()])
    };
    let client = host("client", 1)?;
    let director = host("dir", 2)?;
    let rs1 = host("rs1", 11)?;
    let rs2 = host("rs2", 12)?;
    let plen = if v6 { 128 } else { 32 };
    director.add_addr("eth0", &format!("{vip}/{plen}"))?;
    let service = if v6 {
        format!("[{vip}]:80")
    } else {
        format!("{vip}:80")
    };
    director.run_ok(["ipvsadm", "-A", "-t", &service, "-s", "rr"])?;
    for last in [11, 12] {
        let rip = if v6 {
            format!("[fd00::{last}]:80")
        } else {
            format!("10.0.0.{last}:80")
        };
        director.run_ok([
            "ipvsadm", "-a", "-t", &service, "-r", &rip, method, "-w", "1",
        ])?;
    }
    let _www1 = rs1.http_server(80)?;
    let _www2 = rs2.http_server(80)?;
    let url = http_url(vip.parse()?, 80);
    let failed = client.http_get_timeout(&url, scaled(Duration::from_secs(2)));
    ensure!(
        failed.is_err(),
        "HTTP through {vip} worked without the agents: {failed:?}"
    );

    let vips = format!("[{{address: '{vip}', forwarding: {forwarding}}}]");
    let mut a1 = start_agent(&rs1, &vips)?;
    let mut a2 = start_agent(&rs2, &vips)?;
    wait_ready(&rs1, &mut a1)?;
    wait_ready(&rs2, &mut a2)?;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let body = client.http_get(&url)?;
        seen.insert(body.trim().to_string());
        if seen.len() == 2 {
            break;
        }
    }
    ensure!(
        seen == ["rs1".to_string(), "rs2".to_string()].into(),
        "HTTP through {vip} reached {seen:?}"
    );
    eprintln!("{}", director.run_ok(["ipvsadm", "-Ln", "--stats"])?);
    for (rs, agent) in [(&rs1, &mut a1), (&rs2, &mut a2)] {
        let status = agent.terminate(scaled(Duration::from_secs(10)));
        ensure!(status.success(), "{status}: {}", agent.log());
        let left = rs.ip(["-o", "addr", "show"])?;
        ensure!(
            !left
                .split_whitespace()
                .any(|w| w == format!("{vip}/{plen}")),
            "{vip} left on {}: {left}",
            rs.name()
        );
    }
    Ok(())
}

/// LVS-DR with real traffic: the agents put the VIP on lo with ARP hidden.
#[test]
fn dr_http_through_the_vip_reaches_both_real_servers() -> Result<()> {
    lvs_through_agents("rs-dr", VIP, "-g", "dr")
}

/// LVS-TUN over IPv6: the agents create an any-to-any ip6tnl device that
/// accepts the director's VIP as outer source, and put the VIP on it.
#[test]
fn tun_ipv6_http_through_the_vip_reaches_both_real_servers() -> Result<()> {
    lvs_through_agents("rs-tun6", "fd00::100", "-i", "tun")
}

/// The UDP port of the GUE test.
const GUE_PORT: &str = "6080";

fn has_gue_port(host: &Host, port: &str) -> bool {
    host.run_ok(["ip", "fou", "show"]).is_ok_and(|o| {
        o.lines()
            .any(|l| l.split_whitespace().nth(1) == Some(port) && l.contains("gue"))
    })
}

/// One LVS-TUN lab with `encap` as IPVS's tunnel type (ipvsadm
/// `--tun-type`), real servers configured only by the agent with `tunnel`.
/// HTTP through the VIP must reach both; `check` looks at each real server
/// while the agents run, `after` once its agent stopped; on SIGTERM the
/// values go back.
fn tun_encapsulation(
    name: &str,
    ipvsadm_tunnel: &[&str],
    tunnel: &str,
    device: &str,
    check: impl Fn(&Host, &mut Proc) -> Result<()>,
    after: impl Fn(&Host) -> Result<()>,
) -> Result<()> {
    lb_lab::kernel::require_ipvs();
    modprobe("ip_vs_rr")?;
    let lab = Lab::new(name)?;
    let client = lab.host("client", &["10.0.0.1/24"])?;
    let director = lab.host("dir", &["10.0.0.2/24"])?;
    let rs1 = lab.host("rs1", &["10.0.0.11/24"])?;
    let rs2 = lab.host("rs2", &["10.0.0.12/24"])?;
    director.add_addr("eth0", &format!("{VIP}/32"))?;
    director.run_ok(["ipvsadm", "-A", "-t", &format!("{VIP}:80"), "-s", "rr"])?;
    for rip in ["10.0.0.11", "10.0.0.12"] {
        let target = format!("{rip}:80");
        let service = format!("{VIP}:80");
        let mut argv = vec![
            "ipvsadm", "-a", "-t", &service, "-r", &target, "-i", "-w", "1",
        ];
        argv.extend_from_slice(ipvsadm_tunnel);
        director.run_ok(argv)?;
    }
    eprintln!("{}", director.run_ok(["ipvsadm", "-Ln"])?);
    let mut before = Vec::new();
    for rs in [&rs1, &rs2] {
        rs.set_sysctl("net.ipv4.conf.all.rp_filter", "1")?;
        rs.set_sysctl("net.ipv4.conf.default.rp_filter", "1")?;
        before.push(sysctls(rs)?);
    }
    let _www1 = rs1.http_server(80)?;
    let _www2 = rs2.http_server(80)?;
    let url = http_url(VIP.parse()?, 80);

    let vips = format!("[{{address: {VIP}, forwarding: tun, tunnel: {tunnel}}}]");
    let mut a1 = start_agent(&rs1, &vips)?;
    let mut a2 = start_agent(&rs2, &vips)?;
    wait_ready(&rs1, &mut a1)?;
    wait_ready(&rs2, &mut a2)?;
    for (rs, agent) in [(&rs1, &mut a1), (&rs2, &mut a2)] {
        ensure!(
            has_vip(rs, device) && link_up(rs, device),
            "{device} of {}:\n{}",
            rs.name(),
            agent.log()
        );
        ensure!(rs.sysctl("net.ipv4.conf.all.rp_filter")? == "0");
        check(rs, agent)?;
    }

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let body = client
            .http_get_timeout(&url, scaled(Duration::from_secs(3)))
            .with_context(|| {
                format!(
                    "HTTP through the VIP ({name}):\n{}",
                    director
                        .run_ok(["ipvsadm", "-Ln", "--stats"])
                        .unwrap_or_default()
                )
            })?;
        seen.insert(body.trim().to_string());
        if seen.len() == 2 {
            break;
        }
    }
    ensure!(
        seen == ["rs1".to_string(), "rs2".to_string()].into(),
        "HTTP through the VIP reached {seen:?}"
    );
    eprintln!("{}", director.run_ok(["ipvsadm", "-Ln", "--stats"])?);

    for (rs, agent, before) in [(&rs1, &mut a1, &before[0]), (&rs2, &mut a2, &before[1])] {
        let status = agent.terminate(scaled(Duration::from_secs(10)));
        ensure!(status.success(), "{status}: {}", agent.log());
        ensure!(
            !has_vip(rs, device),
            "VIP left on {device} of {}",
            rs.name()
        );
        after(rs)?;
        ensure!(
            &sysctls(rs)? == before,
            "sysctls of {} not restored",
            rs.name()
        );
    }
    Ok(())
}

/// IPVS in TUN mode with GRE (`--tun-type gre`, Linux 5.3+); the real
/// servers have `tunnel: {type: gre}` and hold the VIP on gre0.
#[test]
fn tun_gre_through_the_vip_reaches_both_real_servers() -> Result<()> {
    modprobe("ip_gre")?;
    tun_encapsulation(
        "rs-gre",
        &["--tun-type", "gre"],
        "{type: gre}",
        "gre0",
        |_, _| Ok(()),
        |_| Ok(()),
    )
}

/// IPVS in TUN mode with GUE (`--tun-type gue --tun-port 6080`); the real
/// servers have `tunnel: {type: gue, port: 6080}`: the agent opens the fou
/// port and holds the VIP on tunl0. A port closed by hand is opened again;
/// SIGTERM closes it.
#[test]
fn tun_gue_through_the_vip_reaches_both_real_servers() -> Result<()> {
    modprobe("fou")?;
    modprobe("ipip")?;
    tun_encapsulation(
        "rs-gue",
        &["--tun-type", "gue", "--tun-port", GUE_PORT],
        &format!("{{type: gue, port: {GUE_PORT}}}"),
        "tunl0",
        |rs, agent| {
            ensure!(
                has_gue_port(rs, GUE_PORT),
                "no GUE port on {}: {:?}\n{}",
                rs.name(),
                rs.run_ok(["ip", "fou", "show"]),
                agent.log()
            );
            rs.run_ok(["ip", "fou", "del", "port", GUE_PORT])?;
            wait_for(
                || has_gue_port(rs, GUE_PORT),
                scaled(Duration::from_secs(10)),
            )
            .with_context(|| format!("GUE port not opened again:\n{}", agent.log()))?;
            ensure!(
                agent
                    .log()
                    .lines()
                    .any(|l| l.contains("drift repaired") && l.contains("GUE port 6080")),
                "no drift report:\n{}",
                agent.log()
            );
            Ok(())
        },
        |rs| {
            ensure!(
                !has_gue_port(rs, GUE_PORT),
                "GUE port left open on {}",
                rs.name()
            );
            Ok(())
        },
    )
}
