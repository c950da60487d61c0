//! The director agent on the host kernel (no IPVS here: the IPVS side is in
//! the kernel suite): health checks and VRRP meet (a service's quorum lost
//! lowers the instance's priority and the VIP moves), SIGHUP applies only
//! the difference (an unchanged instance does not flap), fail-static
//! start (a broken file runs the last good configuration; a corrupt stored
//! one is refused as a whole), and drains asked over the API kept across
//! restarts for as long as their real server stays.
//!
//! Needs root (network namespaces). Traffic stays inside the lab.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use lb_lab::{Host, Lab, Proc, bin_path, scaled, wait_for};
use nix::sys::signal::Signal;

const VIP: &str = "10.32.0.100";
const RS: &str = "10.32.0.11";

struct Director {
    host: Host,
    name: String,
    agent: Option<Proc>,
}

impl Director {
    fn state_dir(&self) -> PathBuf {
        self.host.lab_dir().join(format!("state-{}", self.name))
    }

    fn start(&mut self, config: &Path) -> Result<()> {
        self.start_with(config, &[])
    }

    /// Starts the agent on `config` with `extra` options.
    fn start_with(&mut self, config: &Path, extra: &[&str]) -> Result<()> {
        let bin = bin_path("lb-agent");
        let state = self.state_dir();
        let mut argv = vec![
            bin.to_str().context("binary path")?,
            "director",
            "--config",
            config.to_str().context("config path")?,
            "--node",
            &self.name,
            "--state-dir",
            state.to_str().context("state path")?,
        ];
        argv.extend_from_slice(extra);
        let proc = self.host.spawn(argv)?;
        self.agent = Some(proc);
        Ok(())
    }

    fn status(&self) -> serde_json::Value {
        std::fs::read_to_string(self.state_dir().join("director-status.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    fn instance(&self, name: &str) -> serde_json::Value {
        self.status()["vrrp"]
            .as_array()
            .and_then(|v| v.iter().find(|i| i["name"] == name).cloned())
            .unwrap_or(serde_json::Value::Null)
    }

    fn state(&self, instance: &str) -> String {
        self.instance(instance)["state"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn transitions(&self, instance: &str) -> u64 {
        let t = &self.instance(instance)["transitions"];
        t.as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| t.as_u64())
            .unwrap_or(0)
    }

    fn has_vip(&self) -> bool {
        self.host
            .ip(["-br", "addr", "show", "dev", "eth0"])
            .map(|out| {
                out.split_whitespace()
                    .any(|w| w.split('/').next() == Some(VIP))
            })
            .unwrap_or(false)
    }

    fn log(&self) -> String {
        self.agent.as_ref().map(|p| p.log()).unwrap_or_default()
    }
}

fn topology(priorities: (u32, u32), check_interval: &str) -> String {
    format!(
        r#"nodes:
  - {{name: ds1, role: director, address: 10.32.0.1}}
  - {{name: ds2, role: director, address: 10.32.0.2}}
  - {{name: rs1, role: realserver, address: {RS}}}
directorGroups:
  - name: web-lb
    interface: eth0
    vrrp:
      version: 3
      advertInterval: 100ms
      garp: {{delay: 0s, repeat: 1}}
      instances:
        - name: VI_1
          vrid: 32
          vips: [{VIP}/24]
          priorities: {{ds1: {}, ds2: {}}}
          trackServices: [{{service: web, weight: -50}}]
        - name: VI_2
          vrid: 33
          vips: [10.32.0.101/24]
          priorities: {{ds1: 100, ds2: 110}}
services:
  - name: web
    directorGroup: web-lb
    vip: {VIP}
    port: 80
    protocol: tcp
    scheduler: wrr
    forwarding: dr
    healthCheck:
      tcp: {{}}
      interval: {check_interval}
      timeout: 200ms
      rise: 1
      fall: 2
    realServers:
      - {{node: rs1, port: 80, weight: 1}}
"#,
        priorities.0, priorities.1
    )
}

struct Setup {
    _lab: Lab,
    rs: Host,
    _www: Proc,
    ds: Vec<Director>,
    config: PathBuf,
}

fn setup(name: &str) -> Result<Setup> {
    let lab = Lab::new(name)?;
    let rs = lab.host("rs1", &[&format!("{RS}/24")])?;
    let www = rs.http_server(80)?;
    let config = lab.dir().join("director.yaml");
    std::fs::write(&config, topology((110, 100), "200ms"))?;
    let mut ds = Vec::new();
    for (i, n) in ["ds1", "ds2"].iter().enumerate() {
        let host = lab.host(n, &[&format!("10.32.0.{}/24", i + 1)])?;
        ds.push(Director {
            host,
            name: n.to_string(),
            agent: None,
        });
    }
    Ok(Setup {
        _lab: lab,
        rs,
        _www: www,
        ds,
        config,
    })
}

fn wait_state(d: &Director, instance: &str, state: &str, timeout: Duration) -> Result<()> {
    wait_for(|| d.state(instance) == state, scaled(timeout)).with_context(|| {
        format!(
            "{} {instance} never {state} (now {:?}):\n{}",
            d.name,
            d.state(instance),
            tail(&d.log())
        )
    })
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// In: two directors checking one real server over TCP, VI_1 tracking the
/// service's quorum with weight -50 (ds1 110, ds2 100). A blackhole route
/// on ds1 makes only ds1's checks fail. Out: ds1 loses quorum, its priority
/// falls to 60, ds2 takes VI_1 and the VIP; with the route gone ds1 regains
/// quorum and takes VI_1 back (preempt). VI_2 never moves.
#[test]
fn quorum_loss_moves_the_vip() -> Result<()> {
    let mut s = setup("dir-quorum")?;
    let config = s.config.clone();
    for d in &mut s.ds {
        d.start(&config)?;
    }
    let (ds1, ds2) = (&s.ds[0], &s.ds[1]);
    wait_state(ds1, "VI_1", "VRRP_STATE_MASTER", Duration::from_secs(10))?;
    wait_state(ds2, "VI_1", "VRRP_STATE_BACKUP", Duration::from_secs(10))?;
    wait_state(ds2, "VI_2", "VRRP_STATE_MASTER", Duration::from_secs(10))?;
    wait_for(
        || ds1.status()["services"][0]["realServers"][0]["health"] == "HEALTH_STATE_UP",
        scaled(Duration::from_secs(10)),
    )
    .with_context(|| format!("rs1 never up on ds1: {}", ds1.status()))?;
    ensure!(ds1.has_vip() && !ds2.has_vip(), "VIP on ds1 only");
    let vi2_before = ds2.transitions("VI_2");

    ds1.host
        .ip(["route", "add", "blackhole", &format!("{RS}/32")])?;
    wait_state(ds2, "VI_1", "VRRP_STATE_MASTER", Duration::from_secs(10))?;
    wait_state(ds1, "VI_1", "VRRP_STATE_BACKUP", Duration::from_secs(10))?;
    let st = ds1.status();
    ensure!(
        st["services"][0]["quorum"] != true,
        "ds1 still reports quorum: {st}"
    );
    ensure!(
        ds1.instance("VI_1")["effectivePriority"] == 60,
        "ds1 VI_1 priority after quorum loss: {}",
        ds1.instance("VI_1")
    );
    wait_for(
        || ds2.has_vip() && !ds1.has_vip(),
        scaled(Duration::from_secs(5)),
    )
    .context("VIP did not move to ds2")?;

    ds1.host
        .ip(["route", "del", "blackhole", &format!("{RS}/32")])?;
    wait_state(ds1, "VI_1", "VRRP_STATE_MASTER", Duration::from_secs(10))?;
    wait_for(
        || ds1.has_vip() && !ds2.has_vip(),
        scaled(Duration::from_secs(5)),
    )
    .context("VIP did not come back to ds1")?;
    ensure!(
        ds2.transitions("VI_2") == vi2_before && ds2.state("VI_2") == "VRRP_STATE_MASTER",
        "VI_2 moved: {}",
        ds2.instance("VI_2")
    );
    drop(s.rs);
    Ok(())
}

/// In: a running director, then SIGHUP after (a) a change of the check
/// interval only, (b) a change of VI_2's priority. Out: (a) neither instance
/// makes a transition and the revision grows; (b) VI_2 restarts, VI_1 makes
/// no transition.
#[test]
fn sighup_applies_only_the_difference() -> Result<()> {
    let mut s = setup("dir-hup")?;
    let config = s.config.clone();
    s.ds[0].start(&config)?;
    let ds1 = &mut s.ds[0];
    wait_state(ds1, "VI_1", "VRRP_STATE_MASTER", Duration::from_secs(10))?;
    wait_state(ds1, "VI_2", "VRRP_STATE_MASTER", Duration::from_secs(10))?;
    let rev = |d: &Director| {
        d.status()["appliedRevision"]
            .as_str()
            .unwrap_or("0")
            .to_string()
    };
    let r0 = rev(ds1);
    let (t1, t2) = (ds1.transitions("VI_1"), ds1.transitions("VI_2"));

    std::fs::write(&config, topology((110, 100), "300ms"))?;
    ds1.agent.as_mut().unwrap().signal(Signal::SIGHUP);
    wait_for(|| rev(ds1) != r0, scaled(Duration::from_secs(10)))
        .with_context(|| format!("revision never moved:\n{}", tail(&ds1.log())))?;
    // Let a few advert intervals pass: nothing may move.
    std::thread::sleep(scaled(Duration::from_millis(500)));
    ensure!(
        ds1.transitions("VI_1") == t1 && ds1.transitions("VI_2") == t2,
        "an instance flapped on a check change: {}",
        ds1.status()
    );

    let r1 = rev(ds1);
    let changed =
        topology((110, 100), "300ms").replace("{ds1: 100, ds2: 110}", "{ds1: 120, ds2: 110}");
    std::fs::write(&config, changed)?;
    ds1.agent.as_mut().unwrap().signal(Signal::SIGHUP);
    wait_for(|| rev(ds1) != r1, scaled(Duration::from_secs(10)))
        .with_context(|| format!("revision never moved:\n{}", tail(&ds1.log())))?;
    wait_for(
        || ds1.instance("VI_2")["basePriority"] == 120,
        scaled(Duration::from_secs(10)),
    )
    .with_context(|| format!("VI_2 not restarted with 120: {}", ds1.status()))?;
    ensure!(
        ds1.transitions("VI_1") == t1,
        "VI_1 flapped on a change of VI_2: {}",
        ds1.instance("VI_1")
    );
    Ok(())
}

/// In: a director stopped after a good run; its file then broken (an
/// unknown scheduler). Out: the next start runs the last good configuration
/// (VRRP up, the error reported in lastError naming the field); with the
/// stored file corrupted as well, the start fails with both reasons clear
/// and nothing is configured.
#[test]
fn broken_file_runs_the_last_good_configuration() -> Result<()> {
    let mut s = setup("dir-static")?;
    let config = s.config.clone();
    let ds1 = &mut s.ds[0];
    ds1.start(&config)?;
    wait_state(ds1, "VI_1", "VRRP_STATE_MASTER", Duration::from_secs(10))?;
    ds1.agent
        .as_mut()
        .unwrap()
        .terminate(scaled(Duration::from_secs(10)));
    wait_for(|| !ds1.has_vip(), scaled(Duration::from_secs(5))).context("SIGTERM left the VIP")?;

    std::fs::write(
        &config,
        topology((110, 100), "200ms").replace("wrr", "wrrr"),
    )?;
    ds1.start(&config)?;
    wait_state(ds1, "VI_1", "VRRP_STATE_MASTER", Duration::from_secs(10))?;
    let err = ds1.status()["lastError"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    ensure!(
        err.contains("scheduler 'wrrr' is unknown"),
        "lastError: {}",
        ds1.status()
    );
    ds1.agent
        .as_mut()
        .unwrap()
        .terminate(scaled(Duration::from_secs(10)));

    let stored = ds1.state_dir().join("director-last-good.json");
    let text = std::fs::read_to_string(&stored)?;
    std::fs::write(&stored, text.replacen("VI_1", "VI_9", 1))?;
    ds1.start(&config)?;
    let agent = ds1.agent.as_mut().unwrap();
    let status = agent.wait_timeout(scaled(Duration::from_secs(10)))?;
    ensure!(!status.success(), "started with nothing usable");
    let log = agent.log();
    if !(log.contains("checksum mismatch") && log.contains("scheduler 'wrrr' is unknown")) {
        bail!("unclear refusal:\n{log}");
    }
    ensure!(!ds1.has_vip(), "VIP added by a refused start");
    Ok(())
}

/// In: `lb-controller` (embedded store) on a lab host, two directors started
/// with `--controller` and no file, then `lbctl apply` of the topology.
/// Out: both directors apply the pushed revision and elect ds1 for VI_1.
/// Then the controller is stopped and ds1's agent killed and started again:
/// it runs the stored configuration (fail-static) and is master again.
#[test]
fn controller_pushes_and_the_director_keeps_its_last_good() -> Result<()> {
    let mut s = setup("dir-ctl")?;
    let ctl = s._lab.host("ctl", &["10.32.0.50/24"])?;
    let url = "http://10.32.0.50:7000";
    let data = ctl.lab_dir().join("ctl-data");
    let controller = ctl.spawn([
        bin_path("lb-controller").to_str().context("path")?,
        "--listen",
        "10.32.0.50:7000",
        "--data-dir",
        data.to_str().context("path")?,
    ])?;
    let mut controller = Some(controller);
    for d in &mut s.ds {
        let bin = bin_path("lb-agent");
        let proc = d.host.spawn([
            bin.to_str().context("path")?,
            "director",
            "--controller",
            url,
            "--node",
            &d.name,
            "--state-dir",
            d.state_dir().to_str().context("path")?,
        ])?;
        d.agent = Some(proc);
    }
    let lbctl = bin_path("lbctl");
    let applied = lb_lab::wait_for_ok(
        || {
            ctl.run_ok([
                lbctl.to_str().unwrap_or_default(),
                "--controller",
                url,
                "apply",
                "-f",
                s.config.to_str().unwrap_or_default(),
                "-m",
                "first",
            ])
        },
        scaled(Duration::from_secs(10)),
    )
    .with_context(|| {
        format!(
            "lbctl apply never succeeded:\n{}",
            controller.as_ref().map(|c| c.log()).unwrap_or_default()
        )
    })?;
    ensure!(applied.contains("revision"), "lbctl apply said: {applied}");
    let (ds1, ds2) = (&s.ds[0], &s.ds[1]);
    wait_state(ds1, "VI_1", "VRRP_STATE_MASTER", Duration::from_secs(15))?;
    wait_state(ds2, "VI_1", "VRRP_STATE_BACKUP", Duration::from_secs(15))?;
    let rev = ds1.status()["appliedRevision"].clone();
    ensure!(
        rev.as_str().is_some_and(|r| r != "0"),
        "ds1 applied revision: {}",
        ds1.status()
    );
    // The controller sees the director's status.
    let status = ctl.run_ok([
        lbctl.to_str().unwrap_or_default(),
        "--controller",
        url,
        "status",
    ])?;
    ensure!(status.contains("ds1"), "lbctl status: {status}");

    // Controller gone, ds1 restarted: it runs what it stored.
    if let Some(mut c) = controller.take() {
        c.kill();
    }
    let ds1 = &mut s.ds[0];
    ds1.agent.as_mut().unwrap().kill();
    let bin = bin_path("lb-agent");
    let proc = ds1.host.spawn([
        bin.to_str().context("path")?,
        "director",
        "--controller",
        url,
        "--node",
        "ds1",
        "--state-dir",
        ds1.state_dir().to_str().context("path")?,
    ])?;
    ds1.agent = Some(proc);
    wait_for(
        || ds1.log().contains("starting from the stored configuration"),
        scaled(Duration::from_secs(10)),
    )
    .with_context(|| format!("ds1 did not start from its store:\n{}", tail(&ds1.log())))?;
    wait_state(ds1, "VI_1", "VRRP_STATE_MASTER", Duration::from_secs(15))?;
    ensure!(
        ds1.status()["appliedRevision"] == rev,
        "revision after restart: {}",
        ds1.status()
    );
    Ok(())
}

/// Runs `f` on a fresh tokio runtime inside `host`'s network namespace, so
/// its sockets reach the lab's addresses.
fn in_lab<T: Send>(
    host: &Host,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send>> + Send,
) -> Result<T> {
    host.in_netns(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(f())
    })?
}

/// In: ds1 and ds2 with the agent API and metrics on their lab addresses;
/// over gRPC (a real tonic client inside ds1's namespace) GetState, then
/// Failover(release, hold 2 s) of VI_1, then a scrape of /metrics. Out:
/// GetState lists VI_1 as master; the release answers a non-master state,
/// ds2 takes VI_1, and after the hold ds1 takes it back (preempt); an
/// unknown instance is NOT_FOUND naming it; the scrape shows the
/// transitions and the health check results.
#[test]
fn agent_api_forces_a_failover_and_metrics_count_it() -> Result<()> {
    use lb_proto::v1::agent_service_client::AgentServiceClient;
    use lb_proto::v1::{FailoverRequest, GetStateRequest, failover_request::Action};

    let mut s = setup("dir-api")?;
    let config = s.config.clone();
    for (i, d) in s.ds.iter_mut().enumerate() {
        let (api, metrics) = (
            format!("10.32.0.{}:50061", i + 1),
            format!("10.32.0.{}:9361", i + 1),
        );
        d.start_with(&config, &["--api", &api, "--metrics", &metrics])?;
    }
    let (ds1, ds2) = (&s.ds[0], &s.ds[1]);
    wait_state(ds1, "VI_1", "VRRP_STATE_MASTER", Duration::from_secs(10))?;
    wait_state(ds2, "VI_1", "VRRP_STATE_BACKUP", Duration::from_secs(10))?;

    let (state, released, missing) = in_lab(&ds1.host, || {
        Box::pin(async {
            let mut c = AgentServiceClient::connect("http://10.32.0.1:50061").await?;
            let state = c.get_state(GetStateRequest {}).await?.into_inner();
            let released = c
                .failover(FailoverRequest {
                    instance: "VI_1".into(),
                    action: Action::Release as i32,
                    hold: Some(lb_proto::duration::Duration::from_std(Duration::from_secs(
                        2,
                    ))),
                })
                .await?
                .into_inner();
            let missing = c
                .failover(FailoverRequest {
                    instance: "VI_9".into(),
                    action: Action::Release as i32,
                    hold: None,
                })
                .await
                .unwrap_err();
            Ok((state, released, missing))
        })
    })?;
    let vi1 = state
        .vrrp
        .iter()
        .find(|i| i.name == "VI_1")
        .context("VI_1 in GetState")?;
    ensure!(
        vi1.state == lb_proto::v1::VrrpState::Master as i32,
        "GetState: {vi1:?}"
    );
    ensure!(
        released.state != lb_proto::v1::VrrpState::Master as i32,
        "still master after a release: {released:?}"
    );
    ensure!(
        missing.code() == tonic::Code::NotFound && missing.message().contains("VI_9"),
        "unknown instance: {missing:?}"
    );
    wait_state(ds2, "VI_1", "VRRP_STATE_MASTER", Duration::from_secs(5))?;
    wait_state(ds1, "VI_1", "VRRP_STATE_MASTER", Duration::from_secs(10))?;

    let scrape = ds1.host.run_ok([
        "curl",
        "-sS",
        "--max-time",
        "5",
        "http://10.32.0.1:9361/metrics",
    ])?;
    for want in [
        "lb_agent_vrrp_transitions_total{instance=\"VI_1\",to=\"fault\"}",
        "lb_agent_health_checks_total{",
        "lb_agent_applies_total{result=\"ok\"}",
    ] {
        ensure!(scrape.contains(want), "metrics lack {want}:\n{scrape}");
    }
    Ok(())
}

/// The health ds1's agent API reports for rs1 in service `web`; `None`
/// while the API does not answer.
fn rs1_health(ds1: &Director) -> Option<lb_proto::v1::HealthState> {
    use lb_proto::v1::ListServicesRequest;
    use lb_proto::v1::agent_service_client::AgentServiceClient;
    in_lab(&ds1.host, || {
        Box::pin(async {
            let mut c = AgentServiceClient::connect("http://10.32.0.1:50061").await?;
            let r = c
                .list_services(ListServicesRequest { name: "web".into() })
                .await?
                .into_inner();
            r.services
                .iter()
                .flat_map(|s| &s.real_servers)
                .find(|r| r.node == "rs1")
                .map(|r| r.health())
                .context("rs1 not in ListServices")
        })
    })
    .ok()
}

/// In: ds1 with the agent API; rs1 drained over gRPC; the agent restarted
/// on the same file; then restarted on a file where rs1 serves on another
/// port; then restarted on the first file again. Out: the drain holds
/// across the first restart (stored, not in memory only); the second start
/// drops it, since that real server left; the third finds rs1 on port 80
/// again and not drained: a drain of a real server that left does not come
/// back with it.
#[test]
fn a_drain_outlives_a_restart_but_not_its_real_server() -> Result<()> {
    use lb_proto::v1::AgentDrainRequest;
    use lb_proto::v1::HealthState::Drained;
    use lb_proto::v1::agent_service_client::AgentServiceClient;

    let mut s = setup("dir-drains")?;
    let config = s.config.clone();
    let ds1 = &mut s.ds[0];
    let start = |d: &mut Director| d.start_with(&config, &["--api", "10.32.0.1:50061"]);
    let restart = |d: &mut Director| -> Result<()> {
        if let Some(a) = d.agent.as_mut() {
            a.terminate(scaled(Duration::from_secs(10)));
        }
        start(d)
    };
    let answered = |d: &Director| {
        lb_lab::wait_for_some(|| rs1_health(d), scaled(Duration::from_secs(10)))
            .with_context(|| format!("the agent API never answered:\n{}", tail(&d.log())))
    };

    start(ds1)?;
    answered(ds1)?;
    in_lab(&ds1.host, || {
        Box::pin(async {
            let mut c = AgentServiceClient::connect("http://10.32.0.1:50061").await?;
            c.drain(AgentDrainRequest {
                service: "web".into(),
                real_server: "rs1".into(),
                deadline: None,
            })
            .await?;
            Ok(())
        })
    })?;
    ensure!(answered(ds1)? == Drained, "rs1 not drained by Drain");

    restart(ds1)?;
    let h = answered(ds1)?;
    ensure!(
        h == Drained,
        "rs1 {h:?} after a restart, not drained:\n{}",
        tail(&ds1.log())
    );

    let moved = topology((110, 100), "200ms").replace("port: 80, weight", "port: 8080, weight");
    std::fs::write(&config, moved)?;
    restart(ds1)?;
    let h = answered(ds1)?;
    ensure!(h != Drained, "rs1 on another port is drained");

    std::fs::write(&config, topology((110, 100), "200ms"))?;
    restart(ds1)?;
    let h = answered(ds1)?;
    ensure!(
        h != Drained,
        "rs1 back on port 80 came back drained:\n{}",
        tail(&ds1.log())
    );
    Ok(())
}

/// The scheduling policy of the process's thread named `name`, from
/// /proc (field 41 of the thread's stat: 0 SCHED_OTHER, 2 SCHED_RR).
fn thread_policy(pid: u32, name: &str) -> Option<u32> {
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let dir = entry.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // Fields after the command (which is in parentheses) start at 3.
        let rest = &stat[stat.rfind(')')? + 2..];
        return rest.split_whitespace().nth(41 - 3)?.parse().ok();
    }
    None
}

/// In: a director started with `--realtime-priority 10`. Out: its VRRP
/// thread runs SCHED_RR and VRRP works (VI_1 master); without the flag
/// the thread is SCHED_OTHER.
#[test]
fn vrrp_thread_runs_realtime_when_asked() -> Result<()> {
    let mut s = setup("dir-rt")?;
    let config = s.config.clone();
    let d = &mut s.ds[0];
    d.start_with(&config, &["--realtime-priority", "10"])?;
    wait_state(d, "VI_1", "VRRP_STATE_MASTER", Duration::from_secs(10))?;
    let pid = d.agent.as_ref().unwrap().pid();
    ensure!(
        thread_policy(pid, "vrrp") == Some(2),
        "VRRP thread policy {:?}:\n{}",
        thread_policy(pid, "vrrp"),
        tail(&d.log())
    );
    d.agent
        .as_mut()
        .unwrap()
        .terminate(scaled(Duration::from_secs(10)));
    d.start(&config)?;
    wait_state(d, "VI_1", "VRRP_STATE_MASTER", Duration::from_secs(10))?;
    let pid = d.agent.as_ref().unwrap().pid();
    ensure!(
        thread_policy(pid, "vrrp") == Some(0),
        "VRRP thread policy without the flag: {:?}",
        thread_policy(pid, "vrrp")
    );
    Ok(())
}
