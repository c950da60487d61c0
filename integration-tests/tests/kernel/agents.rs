//! lb's agents inside lab hosts: a seed topology from `examples/` moved onto
//! the lab's addresses, `lb-agent director` and `lb-agent realserver` started
//! with it, and the status files they write read back.
//!
//! ```text
//!   examples/seed-NNN.yaml --relocate--> <lab>/director-<host>.yaml (+ settings)
//!   lb-agent director --config .. --node <host>  -> <lab>/state-<host>/director-status.json
//!                                                  <lab>/state-<host>/last-apply.json
//!   lb-agent realserver --config ..              -> <lab>/state-<host>/realserver-status.json
//! ```

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, ensure};
use lb_lab::{Host, Proc, bin_path, scaled, wait_for, wait_for_ok};
use lb_proto::v1::DirectorConfig;
use serde_json::Value;

/// The agent's reconcile interval in every lab topology.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);

/// A seed topology of `examples/` as proto3 JSON, checked to parse.
pub fn example(file: &str) -> Result<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(file);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let cfg: DirectorConfig =
        lb_proto::yaml::from_str(&text).with_context(|| format!("{}", path.display()))?;
    Ok(serde_json::to_value(cfg)?)
}

/// Moves a topology onto the lab: node addresses by name, VIPs (old to new,
/// prefix lengths kept) in instances and services, and every director group
/// onto `interface`.
pub fn relocate(
    topology: &mut Value,
    nodes: &[(&str, &str)],
    vips: &[(&str, &str)],
    interface: &str,
) -> Result<()> {
    let map_vip = |addr: &str| -> String {
        let (a, plen) = match addr.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (addr, None),
        };
        let new = vips
            .iter()
            .find(|(old, _)| *old == a)
            .map_or(a, |(_, new)| *new);
        match plen {
            Some(p) => format!("{new}/{p}"),
            None => new.to_string(),
        }
    };
    for node in array(topology, "nodes")? {
        let name = node["name"].as_str().unwrap_or_default().to_string();
        let (_, addr) = nodes
            .iter()
            .find(|(n, _)| *n == name)
            .with_context(|| format!("node {name} has no lab address"))?;
        node["address"] = Value::from(*addr);
    }
    for group in array(topology, "directorGroups")? {
        group["interface"] = Value::from(interface);
        if let Some(instances) = group
            .pointer_mut("/vrrp/instances")
            .and_then(Value::as_array_mut)
        {
            for instance in instances {
                if let Some(list) = instance["vips"].as_array_mut() {
                    for vip in list {
                        *vip = Value::from(map_vip(vip.as_str().unwrap_or_default()));
                    }
                }
            }
        }
    }
    for service in array(topology, "services")? {
        let vip = map_vip(service["vip"].as_str().unwrap_or_default());
        service["vip"] = Value::from(vip);
    }
    Ok(())
}

/// The elements of the array `key` of `v` (none if it is absent).
pub fn array<'a>(v: &'a mut Value, key: &str) -> Result<std::slice::IterMut<'a, Value>> {
    if v.get(key).is_none() {
        v[key] = Value::Array(Vec::new());
    }
    Ok(v[key]
        .as_array_mut()
        .with_context(|| format!("{key} is not a list"))?
        .iter_mut())
}

/// An `lb-agent director` in a lab host, which can be killed and started
/// again on the same configuration and state directory.
pub struct Director {
    host: Host,
    cfg: PathBuf,
    state: PathBuf,
    proc: Option<Proc>,
}

impl Director {
    /// Writes `topology` (plus the state dir and reconcile interval) for
    /// `host` and starts the agent with `--node <host name>`.
    pub fn start(host: &Host, topology: &Value) -> Result<Director> {
        let mut d = Director {
            host: host.clone(),
            cfg: host
                .lab_dir()
                .join(format!("director-{}.yaml", host.name())),
            state: host.lab_dir().join(format!("state-{}", host.name())),
            proc: None,
        };
        d.write_config(topology)?;
        d.spawn()?;
        Ok(d)
    }

    /// Writes `topology` to the agent's file and sends SIGHUP: the agent
    /// reads it again and applies the difference.
    pub fn reload(&mut self, topology: &Value) -> Result<()> {
        self.write_config(topology)?;
        let p = self.proc.as_mut().context("the agent is not running")?;
        p.check_running()?;
        p.signal(nix::sys::signal::Signal::SIGHUP);
        Ok(())
    }

    fn write_config(&self, topology: &Value) -> Result<()> {
        let mut topology = topology.clone();
        topology["settings"] = serde_json::json!({
            "stateDir": self.state.display().to_string(),
            "reconcileInterval": format!("{}s", RECONCILE_INTERVAL.as_secs()),
        });
        // What the agent reads must be a valid DirectorConfig.
        let cfg: DirectorConfig =
            serde_json::from_value(topology).context("the lab topology is not a DirectorConfig")?;
        // Written whole and renamed: a reload never reads half a file.
        let tmp = self.cfg.with_extension("yaml.new");
        std::fs::write(&tmp, lb_proto::yaml::to_string(&cfg)?)?;
        std::fs::rename(&tmp, &self.cfg)?;
        Ok(())
    }

    /// The host it runs on.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Starts the agent (again) on its configuration and state.
    pub fn spawn(&mut self) -> Result<()> {
        let bin = bin_path("lb-agent");
        ensure!(
            bin.exists(),
            "{} is missing: cargo build -p lb-agent",
            bin.display()
        );
        let cmd = self
            .host
            .command([
                bin.to_str().unwrap(),
                "director",
                "--config",
                self.cfg.to_str().unwrap(),
                "--node",
                self.host.name(),
            ])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        self.proc = Some(
            self.host
                .spawn_cmd(cmd, &format!("director-{}", self.host.name()))?,
        );
        Ok(())
    }

    /// `kill -9`: the agent leaves its kernel state behind.
    pub fn kill(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.kill();
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; how it exited.
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        self.proc.as_mut().map(|p| p.terminate(grace))
    }

    /// Its process id, while started.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// Its log (this run's), for failure messages.
    pub fn log(&self) -> String {
        self.proc.as_ref().map(Proc::log).unwrap_or_default()
    }

    fn read_json(&self, file: &str) -> Option<Value> {
        let text = std::fs::read_to_string(self.state.join(file)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// `director-status.json` (an `lb.v1.AgentStatus`), if written and whole.
    pub fn status(&self) -> Option<Value> {
        self.read_json("director-status.json")
    }

    /// `last-apply.json`, if written and whole.
    pub fn last_apply(&self) -> Option<Value> {
        self.read_json("last-apply.json")
    }

    /// What `last-apply.json` says now, to tell a later apply from it.
    pub fn apply_mark(&self) -> ApplyMark {
        let modified = std::fs::metadata(self.state.join("last-apply.json"))
            .and_then(|m| m.modified())
            .ok();
        ApplyMark(modified, self.last_apply())
    }

    /// Waits for an apply reported after `mark` and returns it.
    pub fn wait_apply(&self, mark: &ApplyMark, timeout: Duration) -> Result<Value> {
        wait_for_ok(
            || {
                let now = self.apply_mark();
                match now {
                    ApplyMark(_, Some(v)) if now != *mark => Ok(v),
                    _ => Err(format!("no apply after {mark:?} yet")),
                }
            },
            timeout,
        )
        .with_context(|| format!("{}: no new apply\n{}", self.host.name(), self.log()))
    }

    /// The reported VRRP state of `instance` (`VRRP_STATE_MASTER`, ...).
    pub fn vrrp_state(&self, instance: &str) -> Option<String> {
        self.vrrp(instance)?["state"].as_str().map(str::to_string)
    }

    /// The reported transitions of `instance` since the agent started.
    pub fn transitions(&self, instance: &str) -> Option<u64> {
        let v = self.vrrp(instance)?;
        // uint64 is a string in proto3 JSON; absent means 0.
        match &v["transitions"] {
            Value::Null => Some(0),
            Value::String(s) => s.parse().ok(),
            other => other.as_u64(),
        }
    }

    fn vrrp(&self, instance: &str) -> Option<Value> {
        self.status()?["vrrp"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == instance)
            .cloned()
    }

    /// The reported health of real server `node` of `service`
    /// (`HEALTH_STATE_UP`, ...).
    pub fn health(&self, service: &str, node: &str) -> Option<String> {
        let status = self.status()?;
        let svc = status["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == service)?;
        svc["realServers"]
            .as_array()?
            .iter()
            .find(|r| r["node"] == node)?["health"]
            .as_str()
            .map(str::to_string)
    }

    /// Waits until `instance` reports `state`; fails with the status and log.
    pub fn wait_vrrp(&self, instance: &str, state: &str, timeout: Duration) -> Result<()> {
        wait_for(
            || self.vrrp_state(instance).as_deref() == Some(state),
            timeout,
        )
        .with_context(|| {
            format!(
                "{} {instance} never {state}: status {:?}\n{}",
                self.host.name(),
                self.status(),
                self.log()
            )
        })
    }
}

/// The time and content of `last-apply.json` at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplyMark(Option<SystemTime>, Option<Value>);

/// Starts `lb-agent realserver` on `host` holding `vips` (a YAML list) and
/// waits until every VIP is ready.
pub fn start_realserver(host: &Host, vips: &str) -> Result<Proc> {
    let bin = bin_path("lb-agent");
    ensure!(
        bin.exists(),
        "{} is missing: cargo build -p lb-agent",
        bin.display()
    );
    let state = host.lab_dir().join(format!("state-{}", host.name()));
    let cfg = host
        .lab_dir()
        .join(format!("realserver-{}.yaml", host.name()));
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
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    let agent = host.spawn_cmd(cmd, &format!("realserver-{}", host.name()))?;
    let status = state.join("realserver-status.json");
    let ready = || {
        let Ok(text) = std::fs::read_to_string(&status) else {
            return false;
        };
        serde_json::from_str::<Value>(&text).is_ok_and(|v| {
            v["vips"]
                .as_array()
                .is_some_and(|l| !l.is_empty() && l.iter().all(|v| v["ready"] == true))
        })
    };
    wait_for(ready, scaled(Duration::from_secs(20))).with_context(|| {
        format!(
            "VIPs never ready on {}: {:?}\n{}",
            host.name(),
            std::fs::read_to_string(&status),
            agent.log()
        )
    })?;
    Ok(agent)
}

/// The real servers of one IPVS service in `host`'s table as `(address:port,
/// weight)`, or `None` when the service is absent. `service` is as
/// `ipvsadm -Ln` prints it: `UDP  10.0.0.100:53` is `("UDP", "10.0.0.100:53")`.
pub fn ipvs_dests(host: &Host, proto: &str, service: &str) -> Result<Option<Vec<(String, u32)>>> {
    let table = host.run_ok(["ipvsadm", "-Ln"])?;
    Ok(parse_dests(&table, proto, service))
}

fn parse_dests(table: &str, proto: &str, service: &str) -> Option<Vec<(String, u32)>> {
    let mut lines = table.lines();
    lines.find(|l| {
        let mut w = l.split_whitespace();
        w.next() == Some(proto) && w.next() == Some(service)
    })?;
    let mut dests = Vec::new();
    for line in lines {
        let mut w = line.split_whitespace();
        if w.next() != Some("->") {
            break;
        }
        let (Some(addr), Some(_fwd), Some(weight)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        dests.push((addr.to_string(), weight.parse().unwrap_or(0)));
    }
    Some(dests)
}

#[test]
fn ipvsadm_listing_parses() {
    let table = "IP Virtual Server version 1.2.1 (size=4096)\n\
        Prot LocalAddress:Port Scheduler Flags\n  \
        -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
        TCP  10.0.0.100:80 rr\n\
        UDP  10.0.0.100:53 wrr\n  \
        -> 10.0.0.11:53                 Route   1      0          0\n  \
        -> 10.0.0.12:53                 Route   2      0          3\n";
    assert_eq!(
        parse_dests(table, "UDP", "10.0.0.100:53"),
        Some(vec![
            ("10.0.0.11:53".to_string(), 1),
            ("10.0.0.12:53".to_string(), 2)
        ])
    );
    assert_eq!(parse_dests(table, "TCP", "10.0.0.100:80"), Some(vec![]));
    assert_eq!(parse_dests(table, "UDP", "10.0.0.100:80"), None);
}
