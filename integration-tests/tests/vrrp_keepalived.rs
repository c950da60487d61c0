//! VRRP interop with keepalived (Debian package) in a netns lab: one
//! `lb-agent director` and one keepalived share three virtual routers —
//! version 2 with a simple password, version 3 over IPv4, version 3 over
//! IPv6 — once with the agent as master and once with keepalived as master.
//! Each side must accept the other's adverts: the backup never takes over
//! while the master runs (longer than its master down interval), and takes
//! over when the master is killed.
//!
//! Needs root, keepalived and iproute2; fails when keepalived is not
//! installed. Traffic stays inside the lab's namespaces.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use lb_lab::{Host, Lab, Proc, bin_path, scaled, wait_for};

const KEEPALIVED: &str = "/usr/sbin/keepalived";
const VIPS: [&str; 3] = ["10.32.0.160", "10.32.0.161", "fd00:32::162"];

fn has(host: &Host, vip: &str) -> bool {
    host.ip(["-br", "addr", "show", "dev", "eth0"])
        .map(|out| {
            out.split_whitespace()
                .any(|w| w.split('/').next() == Some(vip))
        })
        .unwrap_or(false)
}

fn holds_all(host: &Host) -> bool {
    VIPS.iter().all(|v| has(host, v))
}

fn holds_none(host: &Host) -> bool {
    VIPS.iter().all(|v| !has(host, v))
}

struct Pair {
    lab: Lab,
    agent_host: Host,
    ka_host: Host,
}

fn pair(name: &str) -> Result<Pair> {
    let lab = Lab::new(name)?;
    let agent_host = lab.host("agent", &["10.32.0.1/24", "fd00:32::1/64"])?;
    let ka_host = lab.host("ka", &["10.32.0.2/24", "fd00:32::2/64"])?;
    Ok(Pair {
        lab,
        agent_host,
        ka_host,
    })
}

fn start_agent(p: &Pair, priority: u32) -> Result<Proc> {
    let yaml = format!(
        r#"nodes:
  - {{name: agent, role: director, address: 10.32.0.1}}
directorGroups:
  - name: v2
    interface: eth0
    vrrp:
      version: 2
      advertInterval: 1s
      instances:
        - name: V2
          vrid: 60
          vips: [10.32.0.160/24]
          priorities: {{agent: {priority}}}
          authentication: {{type: pass, password: secret1}}
  - name: v3
    interface: eth0
    vrrp:
      version: 3
      advertInterval: 100ms
      instances:
        - name: V3
          vrid: 61
          vips: [10.32.0.161/24]
          priorities: {{agent: {priority}}}
        - name: V6
          vrid: 62
          vips: ["fd00:32::162/64"]
          priorities: {{agent: {priority}}}
"#
    );
    let config = p.lab.dir().join("agent.yaml");
    std::fs::write(&config, yaml)?;
    let bin = bin_path("lb-agent");
    Ok(p.agent_host.spawn([
        bin.to_str().context("binary path")?,
        "director",
        "--config",
        config.to_str().context("config path")?,
        "--node",
        "agent",
        "--state-dir",
        p.agent_host
            .lab_dir()
            .join("state-agent")
            .to_str()
            .context("state path")?,
    ])?)
}

fn start_keepalived(p: &Pair, priority: u32) -> Result<Proc> {
    let conf = format!(
        r#"global_defs {{
  router_id ka
}}
vrrp_instance V2 {{
  state BACKUP
  interface eth0
  virtual_router_id 60
  priority {priority}
  advert_int 1
  version 2
  authentication {{
    auth_type PASS
    auth_pass secret1
  }}
  virtual_ipaddress {{
    10.32.0.160/24
  }}
}}
vrrp_instance V3 {{
  state BACKUP
  interface eth0
  virtual_router_id 61
  priority {priority}
  advert_int 0.1
  version 3
  virtual_ipaddress {{
    10.32.0.161/24
  }}
}}
vrrp_instance V6 {{
  state BACKUP
  interface eth0
  virtual_router_id 62
  priority {priority}
  advert_int 0.1
  version 3
  virtual_ipaddress {{
    fd00:32::162/64
  }}
}}
"#
    );
    let dir = p.lab.dir();
    let file = dir.join("keepalived.conf");
    std::fs::write(&file, conf)?;
    let path = |n: &str| dir.join(n).to_string_lossy().into_owned();
    Ok(p.ka_host.spawn([
        KEEPALIVED,
        "-n",
        "-l",
        "-D",
        "-P",
        "-f",
        &path("keepalived.conf"),
        "-p",
        &path("keepalived.pid"),
        "-r",
        &path("keepalived-vrrp.pid"),
    ])?)
}

/// The interop tests never pass without their peer: `make test` installs it.
fn require_keepalived() {
    assert!(
        Path::new(KEEPALIVED).exists(),
        "{KEEPALIVED} is not installed (apt-get install keepalived, or run `make test`, which installs it)"
    );
}

/// Checks for `period` that `master` holds every VIP and `backup` none.
fn stable(master: &Host, backup: &Host, period: Duration, logs: &dyn Fn() -> String) -> Result<()> {
    let end = Instant::now() + period;
    while Instant::now() < end {
        ensure!(
            holds_all(master) && holds_none(backup),
            "VIPs moved: {} holds all: {}, {} holds none: {}\n{}",
            master.name(),
            holds_all(master),
            backup.name(),
            holds_none(backup),
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// In: the agent (priority 200) is master of V2, V3 and V6; keepalived
// (priority 100) joins as backup. Out: for 5 s — longer than keepalived's
// 3.6 s version 2 master down interval — keepalived never enters MASTER
// (it accepts our adverts, password and checksums included) and the VIPs
// stay on the agent; our agent drops none of keepalived's packets. Killed,
// the agent leaves the VIPs to keepalived.
#[test]
fn agent_master_keepalived_backup() -> Result<()> {
    require_keepalived();
    let p = pair("vrrp-ka-am")?;
    let mut agent = start_agent(&p, 200)?;
    wait_for(|| holds_all(&p.agent_host), scaled(Duration::from_secs(8)))
        .with_context(|| format!("agent did not become master:\n{}", agent.log()))?;
    let mut ka = start_keepalived(&p, 100)?;
    let logs = || format!("--- agent\n{}\n--- keepalived\n{}", agent.log(), ka.log());
    wait_for(
        || ka.log().matches("Entering BACKUP STATE").count() >= 3,
        scaled(Duration::from_secs(5)),
    )
    .with_context(logs)?;
    stable(
        &p.agent_host,
        &p.ka_host,
        scaled(Duration::from_secs(5)),
        &logs,
    )?;
    let ka_log = ka.log();
    ensure!(
        !ka_log.contains("Entering MASTER STATE"),
        "keepalived became master while the agent was master:\n{ka_log}"
    );
    let agent_log = strip_ansi(&agent.log());
    ensure!(
        !agent_log.contains("dropped advertisement"),
        "the agent dropped keepalived's packets:\n{agent_log}"
    );
    agent.kill();
    wait_for(|| holds_all(&p.ka_host), scaled(Duration::from_secs(8))).with_context(|| ka.log())?;
    ka.check_running()?;
    Ok(())
}

// In: keepalived (priority 200) is master of V2, V3 and V6; the agent
// (priority 100) joins as backup. Out: for 5 s the agent never becomes
// master (it accepts keepalived's adverts of both versions and families,
// including keepalived's IPv4 v3 checksum and password) and the VIPs stay
// on keepalived; keepalived killed, the agent takes all three VIPs.
#[test]
fn keepalived_master_agent_backup() -> Result<()> {
    require_keepalived();
    let p = pair("vrrp-ka-km")?;
    let mut ka = start_keepalived(&p, 200)?;
    wait_for(|| holds_all(&p.ka_host), scaled(Duration::from_secs(8)))
        .with_context(|| format!("keepalived did not become master:\n{}", ka.log()))?;
    let mut agent = start_agent(&p, 100)?;
    let logs = || format!("--- agent\n{}\n--- keepalived\n{}", agent.log(), ka.log());
    wait_for(
        || strip_ansi(&agent.log()).matches("to=\"BACKUP\"").count() >= 3,
        scaled(Duration::from_secs(5)),
    )
    .with_context(logs)?;
    stable(
        &p.ka_host,
        &p.agent_host,
        scaled(Duration::from_secs(5)),
        &logs,
    )?;
    let agent_log = strip_ansi(&agent.log());
    ensure!(
        !agent_log.contains("to=\"MASTER\""),
        "the agent became master while keepalived was master:\n{agent_log}"
    );
    ensure!(
        !agent_log.contains("dropped advertisement"),
        "the agent dropped keepalived's packets:\n{agent_log}"
    );
    ka.kill();
    wait_for(|| holds_all(&p.agent_host), scaled(Duration::from_secs(8)))
        .with_context(|| agent.log())?;
    agent.check_running()?;
    Ok(())
}
