//! Drain through the agent API on a kernel with IPVS: HTTP over LVS-DR with
//! one `lb-agent director` (VRRP, IPVS, TCP checks, `--api`) and two real
//! servers configured by `lb-agent realserver`.
//!
//! ```text
//!   client 10.40.0.1 ──┐
//!   ds1    10.40.0.2   ├─ lab segment; VIP 10.40.0.100 (VRRP on ds1's eth0)
//!   rs1    10.40.0.11  │  HTTP :80 answering its name, VIP on lo
//!   rs2    10.40.0.12 ─┘
//! ```
//!
//! A client connection is held open through the VIP; the real server it
//! landed on is drained over gRPC: its weight goes to 0 at once and it stays
//! in the table while the connection lives, new requests go to the other
//! one; once the connection closes the real server leaves the table and
//! stays out across a restart of the agent; an undrain brings it back with
//! its weight.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use lb_lab::{Host, Lab, Proc, bin_path, http_url, scaled, wait_for, wait_for_some};

const VIP: &str = "10.40.0.100";

fn topology(state: &std::path::Path) -> String {
    format!(
        r#"nodes:
  - {{name: ds1, role: director, address: 10.40.0.2}}
  - {{name: rs1, role: realserver, address: 10.40.0.11}}
  - {{name: rs2, role: realserver, address: 10.40.0.12}}
directorGroups:
  - name: web-lb
    interface: eth0
    vrrp:
      version: 3
      advertInterval: 1s
      instances:
        - name: VI_1
          vrid: 40
          vips: [{VIP}/24]
          priorities: {{ds1: 100}}
services:
  - name: web
    directorGroup: web-lb
    vip: {VIP}
    port: 80
    protocol: tcp
    scheduler: rr
    forwarding: dr
    healthCheck:
      tcp: {{}}
      interval: 1s
      timeout: 2s
    realServers:
      - {{node: rs1, port: 80, weight: 5}}
      - {{node: rs2, port: 80, weight: 5}}
settings: {{reconcileInterval: 1s, stateDir: {}}}
"#,
        state.display()
    )
}

fn start_realserver(host: &Host) -> Result<Proc> {
    let state = host.lab_dir().join(format!("state-{}", host.name()));
    let cfg = host.lab_dir().join(format!("{}.yaml", host.name()));
    std::fs::write(
        &cfg,
        format!(
            "node: {}\nvips: [{{address: {VIP}, forwarding: dr}}]\nsettings: {{reconcileInterval: 1s, stateDir: {}}}\n",
            host.name(),
            state.display()
        ),
    )?;
    let bin = bin_path("lb-agent");
    Ok(host.spawn([
        bin.to_str().context("path")?,
        "realserver",
        "--config",
        cfg.to_str().context("path")?,
    ])?)
}

/// `ipvsadm -Ln` lines of the service's destinations: (rip, weight, active).
fn dests(ds: &Host) -> Vec<(String, u32, u32)> {
    let Ok(out) = ds.run_ok(["ipvsadm", "-Ln", "-t", &format!("{VIP}:80")]) else {
        return vec![];
    };
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&"->") && f.len() >= 6 && f[1] != "RemoteAddress:Port").then(|| {
                (
                    f[1].to_string(),
                    f[3].parse().unwrap_or(0),
                    f[4].parse().unwrap_or(0),
                )
            })
        })
        .collect()
}

fn grpc<T: Send>(
    host: &Host,
    f: impl FnOnce(
        lb_proto::v1::agent_service_client::AgentServiceClient<tonic::transport::Channel>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send>>
    + Send,
) -> Result<T> {
    host.in_netns(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async {
                let c = lb_proto::v1::agent_service_client::AgentServiceClient::connect(
                    "http://10.40.0.2:50061",
                )
                .await?;
                f(c).await
            })
    })?
}

/// The health the agent reports for `node`'s real server of service `web`.
fn health_of(ds: &Host, node: &'static str) -> Result<Option<lb_proto::v1::HealthState>> {
    grpc(ds, move |mut c| {
        Box::pin(async move {
            let r = c
                .list_services(lb_proto::v1::ListServicesRequest { name: "web".into() })
                .await?;
            Ok(r.into_inner()
                .services
                .iter()
                .flat_map(|s| &s.real_servers)
                .find(|r| r.node == node)
                .map(|r| r.health()))
        })
    })
}

/// In: an HTTP connection held open through the VIP, then Drain of the real
/// server it landed on (no deadline), then the connection closed, then
/// a restart of the agent, then Undrain. Out: Drain answers one active
/// connection; the kernel has the real server at weight 0 and still listed
/// while the connection lives, and new requests all reach the other one;
/// after the close it leaves the table; the restarted agent reports it
/// drained and keeps it out; after Undrain it is back with weight 5 and
/// answers again.
#[test]
fn drain_waits_for_the_open_connection() -> Result<()> {
    lb_lab::kernel::require_ipvs();
    lb_lab::Cmd::new(["modprobe", "ip_vs_rr"]).run_ok()?;
    let lab = Lab::new("drain")?;
    let client = lab.host("client", &["10.40.0.1/24"])?;
    let ds = lab.host("ds1", &["10.40.0.2/24"])?;
    let mut rs = Vec::new();
    let mut www = Vec::new();
    let mut agents = Vec::new();
    for (name, addr) in [("rs1", "10.40.0.11"), ("rs2", "10.40.0.12")] {
        let h = lab.host(name, &[&format!("{addr}/24")])?;
        www.push(h.http_server(80)?);
        agents.push(start_realserver(&h)?);
        rs.push(h);
    }
    let state: PathBuf = lab.dir().join("state-ds1");
    let cfg = lab.dir().join("ds1.yaml");
    std::fs::write(&cfg, topology(&state))?;
    let bin = bin_path("lb-agent");
    let argv = [
        bin.to_str().context("path")?,
        "director",
        "--config",
        cfg.to_str().context("path")?,
        "--node",
        "ds1",
        "--api",
        "10.40.0.2:50061",
    ];
    let start_director = || ds.spawn(argv);
    let mut director = start_director()?;
    let url = http_url(VIP.parse()?, 80);
    wait_for(
        || {
            let d = dests(&ds);
            d.len() == 2 && d.iter().all(|(_, w, _)| *w == 5)
        },
        scaled(Duration::from_secs(30)),
    )
    .with_context(|| {
        format!(
            "IPVS never had both real servers: {:?}\n{}",
            dests(&ds),
            director.log()
        )
    })?;
    wait_for_some(
        || client.http_get(&url).ok(),
        scaled(Duration::from_secs(20)),
    )
    .with_context(|| format!("no answer through the VIP\n{}", director.log()))?;

    // A connection held open: socat keeps it while `sleep` runs.
    let mut held = client.spawn(["socat", "-u", "EXEC:sleep 600", &format!("TCP:{VIP}:80")])?;
    let (busy, _, _) = wait_for_some(
        || dests(&ds).into_iter().find(|(_, _, active)| *active >= 1),
        scaled(Duration::from_secs(10)),
    )
    .with_context(|| format!("no active connection in IPVS: {:?}", dests(&ds)))?;
    let (busy_name, other_name) = if busy.starts_with("10.40.0.11") {
        ("rs1", "rs2")
    } else {
        ("rs2", "rs1")
    };

    let active = grpc(&ds, move |mut c| {
        Box::pin(async move {
            let r = c
                .drain(lb_proto::v1::AgentDrainRequest {
                    service: "web".into(),
                    real_server: busy_name.into(),
                    deadline: None,
                })
                .await?;
            Ok(r.into_inner().active_connections)
        })
    })?;
    ensure!(active >= 1, "Drain reported {active} active connections");
    wait_for(
        || dests(&ds).iter().any(|(a, w, _)| *a == busy && *w == 0),
        scaled(Duration::from_secs(10)),
    )
    .with_context(|| format!("{busy} not at weight 0: {:?}", dests(&ds)))?;
    for _ in 0..4 {
        let body = client.http_get(&url)?;
        ensure!(
            body.trim() == other_name,
            "a request reached {} while {busy_name} drains",
            body.trim()
        );
    }
    ensure!(
        dests(&ds).iter().any(|(a, _, _)| *a == busy),
        "{busy} left the table with its connection open: {:?}",
        dests(&ds)
    );

    held.kill();
    wait_for(
        || !dests(&ds).iter().any(|(a, _, _)| *a == busy),
        scaled(Duration::from_secs(20)),
    )
    .with_context(|| {
        format!(
            "{busy} still in the table after the close: {:?}",
            dests(&ds)
        )
    })?;

    // A restart keeps the drain: the new agent says the real server is
    // drained, and neither its start nor its reconciles put it back.
    director.terminate(scaled(Duration::from_secs(10)));
    director = start_director()?;
    let health = wait_for_some(
        || health_of(&ds, busy_name).ok().flatten(),
        scaled(Duration::from_secs(20)),
    )
    .with_context(|| format!("the restarted agent never answered\n{}", director.log()))?;
    ensure!(
        health == lb_proto::v1::HealthState::Drained,
        "{busy_name} is {health:?} after the restart, not drained\n{}",
        director.log()
    );
    for _ in 0..3 {
        std::thread::sleep(scaled(Duration::from_secs(1)));
        let d = dests(&ds);
        ensure!(
            !d.iter().any(|(a, _, _)| *a == busy),
            "{busy} back in the table after the restart: {d:?}"
        );
    }
    wait_for_some(
        || client.http_get(&url).ok(),
        scaled(Duration::from_secs(20)),
    )
    .with_context(|| {
        format!(
            "no answer through the VIP after the restart\n{}",
            director.log()
        )
    })?;

    grpc(&ds, move |mut c| {
        Box::pin(async move {
            c.undrain(lb_proto::v1::AgentDrainRequest {
                service: "web".into(),
                real_server: busy_name.into(),
                deadline: None,
            })
            .await?;
            Ok(())
        })
    })?;
    wait_for(
        || dests(&ds).iter().any(|(a, w, _)| *a == busy && *w == 5),
        scaled(Duration::from_secs(10)),
    )
    .with_context(|| format!("{busy} not back at weight 5: {:?}", dests(&ds)))?;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        seen.insert(client.http_get(&url)?.trim().to_string());
    }
    if !seen.contains(busy_name) {
        bail!("{busy_name} never answered after the undrain: {seen:?}");
    }
    director.terminate(scaled(Duration::from_secs(10)));
    for a in &mut agents {
        a.terminate(scaled(Duration::from_secs(10)));
    }
    drop(www);
    Ok(())
}
