//! A controller served on 127.0.0.1 and fake agents that speak the real
//! AgentSync protocol over real gRPC, through the agent client library.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_agent::sync::{self as agent_client, Applier, ClientConfig};
use lb_controller::controller::{Controller, ControllerConfig};
use lb_controller::store::Store;
use lb_proto::v1::controller_service_client::ControllerServiceClient;
use lb_proto::v1::{AgentStatus, DesiredState, ErrorDetail, NodeRole, VipStatus, desired_state};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Keepalive used in tests: short, so dead streams show quickly.
pub const KEEPALIVE: Duration = Duration::from_millis(200);

/// A served controller.
pub struct Served {
    pub controller: Controller,
    pub address: SocketAddr,
    server: Option<JoinHandle<()>>,
}

impl Served {
    /// Serves a controller over `store` on `address` (port 0 for any).
    pub async fn start(store: Arc<dyn Store>, address: SocketAddr, replica: &str) -> Served {
        let controller = Controller::start(
            store,
            ControllerConfig {
                replica: replica.to_string(),
                keepalive: KEEPALIVE,
                epoch: 1,
            },
        )
        .await
        .expect("controller starts");
        let mut listener = None;
        for _ in 0..50 {
            match tokio::net::TcpListener::bind(address).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let listener = listener.expect("bind the controller address");
        let address = listener.local_addr().unwrap();
        let c = controller.clone();
        let server = tokio::spawn(async move {
            lb_controller::server::run(c, listener, std::future::pending())
                .await
                .expect("server runs");
        });
        Served {
            controller,
            address,
            server: Some(server),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A ControllerService client.
    pub async fn client(&self) -> ControllerServiceClient<tonic::transport::Channel> {
        ControllerServiceClient::connect(self.url())
            .await
            .expect("connect to the controller")
    }

    /// Stops serving at once (connections dropped), like a crashed process.
    pub fn kill(&mut self) {
        self.controller.close();
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a fake agent saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// A state it applied.
    Applied(DesiredState),
    /// A state it refused (the applier failed).
    Refused(DesiredState),
}

/// Behaviour of a fake agent's applier.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Fail every apply with this error.
    pub fail: Option<ErrorDetail>,
    /// A real server reports every VIP of an applied state ready.
    pub report_ready: bool,
}

struct FakeApplier {
    node: String,
    seen_tx: mpsc::UnboundedSender<Seen>,
    behaviour: Arc<Mutex<Behaviour>>,
    status_tx: Arc<watch::Sender<Option<AgentStatus>>>,
}

#[async_trait::async_trait]
impl Applier for FakeApplier {
    async fn apply(&mut self, state: &DesiredState) -> Result<(), ErrorDetail> {
        let behaviour = self.behaviour.lock().unwrap().clone();
        if let Some(error) = behaviour.fail {
            let _ = self.seen_tx.send(Seen::Refused(state.clone()));
            return Err(error);
        }
        let _ = self.seen_tx.send(Seen::Applied(state.clone()));
        if behaviour.report_ready
            && let Some(desired_state::Config::Realserver(rs)) = &state.config
        {
            self.status_tx.send_replace(Some(AgentStatus {
                node: self.node.clone(),
                applied_revision: state.revision,
                applied_epoch: state.epoch,
                vips: rs
                    .vips
                    .iter()
                    .map(|v| VipStatus {
                        address: v.address.clone(),
                        forwarding: v.forwarding,
                        ready: true,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }));
        }
        Ok(())
    }
}

/// A fake agent.
pub struct FakeAgent {
    pub node: String,
    pub seen_rx: mpsc::UnboundedReceiver<Seen>,
    pub behaviour: Arc<Mutex<Behaviour>>,
    pub status_tx: Arc<watch::Sender<Option<AgentStatus>>>,
    /// The last state applied that a test has taken.
    pub last: Option<DesiredState>,
    shutdown_tx: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<(u64, u64)>>,
}

impl FakeAgent {
    /// Starts an agent for `node` against `urls`, having applied `applied`.
    pub fn start(
        urls: Vec<String>,
        node: &str,
        role: NodeRole,
        behaviour: Behaviour,
        applied: (u64, u64),
    ) -> FakeAgent {
        let (seen_tx, seen_rx) = mpsc::unbounded_channel();
        let (status_tx, status_rx) = watch::channel(None);
        let status_tx = Arc::new(status_tx);
        let behaviour = Arc::new(Mutex::new(behaviour));
        let applier = FakeApplier {
            node: node.to_string(),
            seen_tx,
            behaviour: behaviour.clone(),
            status_tx: status_tx.clone(),
        };
        let mut config = ClientConfig::new(urls, node, role);
        config.keepalive = KEEPALIVE;
        config.backoff_min = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(400);
        config.connect_timeout = Duration::from_secs(1);
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(agent_client::run(
            config,
            applier,
            status_rx,
            applied,
            async move {
                let _ = shutdown_rx.await;
            },
        ));
        FakeAgent {
            node: node.to_string(),
            seen_rx,
            behaviour,
            status_tx,
            last: None,
            shutdown_tx: Some(shutdown_tx),
            task: Some(task),
        }
    }

    /// A director agent.
    pub fn director(url: &str, node: &str) -> FakeAgent {
        Self::start(
            vec![url.to_string()],
            node,
            NodeRole::Director,
            Behaviour::default(),
            (0, 0),
        )
    }

    /// A real-server agent that reports its VIPs ready once applied.
    pub fn realserver(url: &str, node: &str) -> FakeAgent {
        Self::start(
            vec![url.to_string()],
            node,
            NodeRole::Realserver,
            Behaviour {
                report_ready: true,
                ..Default::default()
            },
            (0, 0),
        )
    }

    /// The next thing the agent saw, within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Seen> {
        let seen = tokio::time::timeout(within, self.seen_rx.recv())
            .await
            .ok()
            .flatten();
        if let Some(Seen::Applied(s)) = &seen {
            self.last = Some(s.clone());
        }
        seen
    }

    /// The next applied state, within 10 s; panics otherwise.
    pub async fn next_applied(&mut self) -> DesiredState {
        match self.next(Duration::from_secs(10)).await {
            Some(Seen::Applied(s)) => s,
            other => panic!("{}: expected an applied state, got {other:?}", self.node),
        }
    }

    /// Waits (10 s at most) for an applied state that satisfies `pred`,
    /// returning every state applied on the way; the last state taken
    /// already counts.
    pub async fn applied_until(
        &mut self,
        pred: impl Fn(&DesiredState) -> bool,
    ) -> Vec<DesiredState> {
        if let Some(last) = self.last.as_ref().filter(|s| pred(s)) {
            return vec![last.clone()];
        }
        let mut all = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(Seen::Applied(s)) => {
                    let done = pred(&s);
                    all.push(s);
                    if done {
                        return all;
                    }
                }
                Some(Seen::Refused(_)) => {}
                None => panic!(
                    "{}: no state matched within 10 s; applied: {:#?}",
                    self.node,
                    all.iter().map(|s| s.revision).collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Everything seen until `quiet` passes with nothing new.
    pub async fn drain_seen(&mut self, quiet: Duration) -> Vec<Seen> {
        let mut out = Vec::new();
        while let Some(s) = self.next(quiet).await {
            out.push(s);
            if out.len() > 1000 {
                break;
            }
        }
        out
    }

    /// Stops the agent; returns the (epoch, revision) it applied last.
    pub async fn stop(mut self) -> (u64, u64) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap().await.unwrap()
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Real-server weights in a director state, by real server label.
pub fn weights(state: &DesiredState) -> Vec<(String, u32)> {
    let Some(desired_state::Config::Director(d)) = &state.config else {
        panic!("not a director state: {state:?}");
    };
    d.services
        .iter()
        .flat_map(|s| s.real_servers.iter())
        .map(|rs| {
            (
                lb_controller::topology::real_server_label(rs),
                rs.weight.unwrap_or(1),
            )
        })
        .collect()
}

/// VIPs in a real-server state.
pub fn vips(state: &DesiredState) -> Vec<String> {
    let Some(desired_state::Config::Realserver(r)) = &state.config else {
        panic!("not a real-server state: {state:?}");
    };
    r.vips.iter().map(|v| v.address.clone()).collect()
}

/// Polls `check` every 20 ms for up to 10 s.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not within 10 s: {what}");
}
