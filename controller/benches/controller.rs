//! Controller benchmarks, printed as `BENCH <name> <value> <unit>`:
//!
//! - `controller_push_100_agents_p50_ms` / `_p99_ms`: from an Apply (gRPC) to
//!   the ACK of all 100 agents (2 directors, 98 real servers; agents are
//!   separate tasks speaking AgentSync over gRPC through the agent client
//!   library), with etcd on tmpfs;
//! - `controller_apply_per_s`: Applies per second, sustained for a few
//!   seconds by sequential clients, each touching the directors only.
//!
//! Run: `cargo bench -p lb-controller --bench controller` (needs /usr/bin/etcd).

#[allow(dead_code)]
#[path = "../tests/support/etcd.rs"]
mod etcd;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_agent::sync::{self as agent_client, Applier, ClientConfig};
use lb_controller::controller::{Controller, ControllerConfig};
use lb_controller::store::etcd::EtcdStore;
use lb_proto::v1::controller_service_client::ControllerServiceClient;
use lb_proto::v1::{
    AgentStatus, ApplyRequest, DesiredState, ErrorDetail, Node, NodeRole, RealServer, Topology,
    VipStatus, apply_request, desired_state, event, real_server,
};
use tokio::sync::watch;

const AGENTS: usize = 100;
const DIRECTORS: usize = 2;
const PUSH_ROUNDS: usize = 100;
const APPLY_SECONDS: u64 = 5;

fn topology(service_name: &str, weight: u32) -> Topology {
    let mut t: Topology = lb_proto::yaml::from_str(
        r#"
directorGroups:
  - name: web-lb
    interface: eth0
    vrrp:
      instances:
        - {name: VI_1, vrid: 51, vips: [10.1.0.100/16], priorities: {ds1: 100, ds2: 99}}
services:
  - {name: web, directorGroup: web-lb, vip: 10.1.0.100, port: 80, scheduler: wlc, forwarding: dr}
"#,
    )
    .expect("bench topology");
    for d in 1..=DIRECTORS {
        t.nodes.push(Node {
            name: format!("ds{d}"),
            role: NodeRole::Director as i32,
            address: format!("10.1.0.{d}"),
            ..Default::default()
        });
    }
    for r in 0..AGENTS - DIRECTORS {
        t.nodes.push(Node {
            name: format!("rs{r}"),
            role: NodeRole::Realserver as i32,
            address: format!("10.1.{}.{}", 1 + r / 200, 10 + r % 200),
            ..Default::default()
        });
        t.services[0].real_servers.push(RealServer {
            target: Some(real_server::Target::Node(format!("rs{r}"))),
            weight: Some(if r == 0 { weight } else { 1 }),
            ..Default::default()
        });
    }
    t.services[0].name = service_name.to_string();
    t
}

struct BenchApplier {
    node: String,
    status_tx: Arc<watch::Sender<Option<AgentStatus>>>,
}

#[async_trait::async_trait]
impl Applier for BenchApplier {
    async fn apply(&mut self, state: &DesiredState) -> Result<(), ErrorDetail> {
        if let Some(desired_state::Config::Realserver(rs)) = &state.config {
            let vips: Vec<VipStatus> = rs
                .vips
                .iter()
                .map(|v| VipStatus {
                    address: v.address.clone(),
                    ready: true,
                    ..Default::default()
                })
                .collect();
            let changed = self
                .status_tx
                .borrow()
                .as_ref()
                .is_none_or(|s| s.vips != vips);
            if changed {
                self.status_tx.send_replace(Some(AgentStatus {
                    node: self.node.clone(),
                    vips,
                    ..Default::default()
                }));
            }
        }
        Ok(())
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() {
    let etcd = etcd::EtcdServer::start().await;
    let store = EtcdStore::connect(&[etcd.endpoint()], "/bench", Duration::from_secs(2))
        .await
        .expect("connect etcd");
    let controller = Controller::start(
        Arc::new(store),
        ControllerConfig {
            replica: "bench".into(),
            keepalive: Duration::from_secs(5),
            epoch: 1,
        },
    )
    .await
    .expect("controller");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(lb_controller::server::run(
        controller.clone(),
        listener,
        std::future::pending(),
    ));
    let mut client = ControllerServiceClient::connect(url.clone()).await.unwrap();

    let initial = topology("web-a", 1);
    client
        .apply(ApplyRequest {
            content: Some(apply_request::Content::Topology(initial.clone())),
            message: "bench".into(),
            ..Default::default()
        })
        .await
        .expect("initial apply");

    for node in &initial.nodes {
        let (status_tx, status_rx) = watch::channel(None);
        let applier = BenchApplier {
            node: node.name.clone(),
            status_tx: Arc::new(status_tx),
        };
        let config = ClientConfig::new(vec![url.clone()], &node.name, node.role());
        tokio::spawn(agent_client::run(
            config,
            applier,
            status_rx,
            (0, 0),
            std::future::pending(),
        ));
    }
    // Settle: every agent acked revision 1 and every real server is ready.
    let settle = Instant::now();
    loop {
        let (_, nodes) = controller.status(&[]);
        let acked = nodes.iter().filter(|n| n.applied_revision >= 1).count();
        let full = controller
            .desired()
            .get("ds1")
            .is_some_and(|d| match &d.config {
                Some(desired_state::Config::Director(d)) => d.services[0]
                    .real_servers
                    .iter()
                    .all(|rs| rs.weight.unwrap_or(0) > 0),
                _ => false,
            });
        if acked == AGENTS && full {
            break;
        }
        assert!(
            settle.elapsed() < Duration::from_secs(60),
            "agents did not settle"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the last pushes of the gate settle.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Push latency: every round renames the service, which changes the
    // state of all 100 nodes.
    let mut events = controller.events();
    let rounds: usize = std::env::var("BENCH_PUSH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PUSH_ROUNDS);
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let name = if round % 2 == 0 { "web-b" } else { "web-a" };
        let start = Instant::now();
        let r = client
            .apply(ApplyRequest {
                content: Some(apply_request::Content::Topology(topology(name, 1))),
                message: format!("round {round}"),
                ..Default::default()
            })
            .await
            .expect("apply")
            .into_inner();
        let mut acked = BTreeSet::new();
        while acked.len() < AGENTS {
            let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .expect("all acks within 10 s")
                .expect("event stream");
            if let Some(event::Kind::Applied(a)) = &e.kind
                && a.ok
                && a.revision == r.revision
            {
                acked.insert(e.node.clone());
            }
        }
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "BENCH controller_push_100_agents_p50_ms {:.2} ms",
        percentile(&samples, 50.0)
    );
    println!(
        "BENCH controller_push_100_agents_p99_ms {:.2} ms",
        percentile(&samples, 99.0)
    );

    // Sustained applies: each changes one real server's weight (directors
    // only), from several clients at once, for a few seconds.
    let clients: usize = std::env::var("BENCH_APPLY_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let deadline = Instant::now() + Duration::from_secs(APPLY_SECONDS);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = ControllerServiceClient::connect(url.clone()).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let weight = 2 + ((n as u32 * clients as u32 + c as u32) % 1000);
                client
                    .apply(ApplyRequest {
                        content: Some(apply_request::Content::Topology(topology("web-a", weight))),
                        message: "weight".into(),
                        ..Default::default()
                    })
                    .await
                    .expect("apply");
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let per_s = total as f64 / start.elapsed().as_secs_f64();
    println!("BENCH controller_apply_per_s {per_s:.0} applies/s");
    drop(etcd);
}
