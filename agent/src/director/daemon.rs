//! `lb-agent director` as a process: the configuration file, signals, and
//! the API and metrics servers around a [`Director`](super).
//!
//! ```text
//!  SIGHUP ──► read the file again ──► DirectorHandle::apply (the difference)
//!  --controller URL ──► sync::run ── DesiredState ──► ControllerApplier ──► DirectorHandle::apply
//!                         ▲ AgentStatus (the director's view)  ──► Ack / Nack
//!  SIGTERM/SIGINT ──► DirectorHandle::shutdown (priority 0, VIPs removed) ──► exit
//!  --api ADDR ──► agent API (lb.v1.AgentService, health, reflection)
//!  --metrics ADDR ──► Prometheus /metrics
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use lb_proto::v1::{DesiredState, DirectorConfig, ErrorDetail, NodeRole, desired_state};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::plan::{DirectorPlan, group_directors};
use super::{DirectorError, DirectorHandle, Kernel};
use crate::config::ConfigError;
use crate::store::ConfigStore;
use crate::sync::{Applier, ClientConfig};

/// How the director process was started.
#[derive(Debug, Clone)]
pub struct Options {
    /// The configuration file (standalone).
    pub config: Option<PathBuf>,
    /// Controller URLs; empty: standalone.
    pub controller: Vec<String>,
    /// Node name; default the file's `node`.
    pub node: Option<String>,
    /// State directory; default the file's `settings.stateDir`.
    pub state_dir: Option<PathBuf>,
    /// Agent API address.
    pub api: Option<SocketAddr>,
    /// Metrics address.
    pub metrics: Option<SocketAddr>,
    /// SCHED_RR priority of the VRRP thread (1..=99), if any.
    pub realtime_priority: Option<u8>,
}

/// Why the director process cannot run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The director.
    #[error(transparent)]
    Director(#[from] DirectorError),
    /// Neither a file nor a stored or pushed configuration.
    #[error("no configuration: give --config FILE, or --controller URL (and --node)")]
    NoConfig,
    /// Signals or sockets.
    #[error("{what}: {source}")]
    Io {
        /// What was being set up.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// The signals the director answers, installed before anything changes so
/// that a SIGTERM from then on always leads to a clean stop.
#[derive(Debug)]
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> Result<Self, DaemonError> {
        let io = |source| DaemonError::Io {
            what: "signal handlers".into(),
            source,
        };
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(io)?,
            int: signal(SignalKind::interrupt()).map_err(io)?,
            hup: signal(SignalKind::hangup()).map_err(io)?,
        })
    }
}

fn node_of(options: &Options, cfg: Option<&DirectorConfig>) -> String {
    options
        .node
        .clone()
        .or_else(|| cfg.map(|c| c.node.clone()))
        .unwrap_or_default()
}

/// `--check`: validates the configuration for the node (or, with no node,
/// for every director of the file) and prints what would run.
pub fn check(options: &Options) -> Result<(), DaemonError> {
    let path = options.config.as_ref().ok_or(DaemonError::NoConfig)?;
    let cfg = crate::config::load_director(path)?;
    let node = node_of(options, Some(&cfg));
    let nodes: Vec<String> = if node.is_empty() {
        let mut all: Vec<String> = cfg
            .director_groups
            .iter()
            .flat_map(group_directors)
            .collect();
        all.sort();
        all.dedup();
        all
    } else {
        vec![node]
    };
    for n in nodes {
        let plan = DirectorPlan::from_config(&cfg, &n).map_err(DirectorError::from)?;
        println!(
            "{}: node {n}: {} VRRP instance(s), {} service(s), {} real server(s): valid",
            path.display(),
            plan.vrrp.len(),
            plan.services.len(),
            plan.services
                .values()
                .map(|s| s.real_servers.len())
                .sum::<usize>()
        );
    }
    Ok(())
}

/// Runs the director until SIGTERM or SIGINT: standalone from the file, or
/// under the controller (`--controller`), starting from the stored
/// configuration if there is one and the controller cannot be reached.
pub async fn run(options: Options, mut signals: Signals) -> Result<(), DaemonError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    // `shutdown` returns once the director has stopped: its task handle is
    // not needed here.
    let (director, sync) = if options.controller.is_empty() {
        (start_standalone(&options).await?, None)
    } else {
        tokio::select! {
            r = start_controlled(&options, stop_rx.clone()) => r?,
            _ = signals.term.recv() => {
                info!("SIGTERM before any configuration arrived");
                return Ok(());
            }
            _ = signals.int.recv() => {
                info!("SIGINT before any configuration arrived");
                return Ok(());
            }
        }
    };
    let servers = serve_extras(&options, &director, &stop_rx).await?;
    loop {
        tokio::select! {
            _ = signals.term.recv() => { info!("SIGTERM"); break; }
            _ = signals.int.recv() => { info!("SIGINT"); break; }
            _ = signals.hup.recv() => reload(&options, &director).await,
        }
    }
    let _ = stop_tx.send(true);
    if let Some(sync) = sync {
        let _ = sync.await;
    }
    director.shutdown().await;
    for s in servers {
        let _ = s.await;
    }
    info!("stopped");
    Ok(())
}

async fn start_standalone(options: &Options) -> Result<DirectorHandle, DaemonError> {
    let path = options.config.as_ref().ok_or(DaemonError::NoConfig)?;
    let (cfg, read_error) = match crate::config::load_director(path) {
        Ok(c) => (Some(c), None),
        Err(e) => {
            error!(error = %e, "configuration file unusable: trying the last good configuration");
            (None, Some(e))
        }
    };
    let node = node_of(options, cfg.as_ref());
    let kernel = Kernel::connect(Some(super::vrrp_thread(options.realtime_priority)?))?;
    match super::start(cfg, None, &node, options.state_dir.clone(), kernel).await {
        Ok((d, _task)) => Ok(d),
        Err(e) => Err(match read_error {
            Some(r) => r.into(),
            None => e.into(),
        }),
    }
}

/// Under the controller: the stored configuration runs at once (fail-static);
/// with none stored, the first push starts the director.
async fn start_controlled(
    options: &Options,
    stop_rx: watch::Receiver<bool>,
) -> Result<(DirectorHandle, Option<JoinHandle<()>>), DaemonError> {
    let node = options.node.clone().unwrap_or_default();
    if node.is_empty() {
        return Err(DaemonError::Director(DirectorError::Invalid(
            super::plan::PlanError::NoNode,
        )));
    }
    let state_dir = options
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(super::plan::DEFAULT_STATE_DIR));
    let stored = ConfigStore::<DirectorConfig>::new(state_dir.join(super::LAST_GOOD_FILE))
        .load()
        .map_err(DirectorError::from);
    let (started_tx, mut started_rx) = watch::channel(None);
    let mut applier = ControllerApplier {
        node: node.clone(),
        state_dir: state_dir.clone(),
        director: None,
        started_tx,
        vrrp_runtime: Some(super::vrrp_thread(options.realtime_priority)?),
    };
    let applied = match stored {
        Ok(Some(s)) => {
            info!(
                revision = s.revision,
                epoch = s.epoch,
                "starting from the stored configuration until the controller answers"
            );
            let kernel = Kernel::connect(applier.vrrp_runtime.clone())?;
            let d = super::start(None, None, &node, Some(state_dir), kernel).await?;
            applier.started_tx.send_replace(Some(d.0.clone()));
            applier.director = Some(d.0);
            (s.epoch, s.revision)
        }
        Ok(None) => {
            info!("no stored configuration: waiting for the controller's first push");
            (0, 0)
        }
        Err(e) => {
            warn!(error = %e, "stored configuration refused: waiting for the controller's first push");
            (0, 0)
        }
    };
    let config = ClientConfig::new(options.controller.clone(), &node, NodeRole::Director);
    let (status_tx, status_rx) = watch::channel(None);
    let mut started = started_rx.clone();
    // Status to the controller: the director's view whenever it changes.
    tokio::spawn(async move {
        let Ok(h) = started.wait_for(|h| h.is_some()).await.map(|h| h.clone()) else {
            return;
        };
        let Some(h) = h else { return };
        let mut view = h.watch_view();
        loop {
            let status = view.borrow_and_update().status.clone();
            if status_tx.send(Some(status)).is_err() || view.changed().await.is_err() {
                return;
            }
        }
    });
    let mut stop = stop_rx.clone();
    let sync = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        crate::sync::run(config, applier, status_rx, applied, shutdown).await;
    });
    // Wait for a director: the stored one, or the first push.
    let mut stop = stop_rx;
    let handle = tokio::select! {
        h = started_rx.wait_for(|h| h.is_some()) => match h {
            Ok(h) => h.clone(),
            Err(_) => None,
        },
        _ = stop.wait_for(|s| *s) => None,
    };
    let Some(handle) = handle else {
        return Err(DaemonError::NoConfig);
    };
    Ok((handle, Some(sync)))
}

/// Applies what the controller pushes, starting the director on the first
/// push when nothing was stored.
struct ControllerApplier {
    node: String,
    state_dir: PathBuf,
    director: Option<DirectorHandle>,
    started_tx: watch::Sender<Option<DirectorHandle>>,
    vrrp_runtime: Option<tokio::runtime::Handle>,
}

#[async_trait::async_trait]
impl Applier for ControllerApplier {
    async fn apply(&mut self, state: &DesiredState) -> Result<(), ErrorDetail> {
        let Some(desired_state::Config::Director(cfg)) = state.config.clone() else {
            return Err(ErrorDetail {
                code: "invalid".into(),
                message: format!(
                    "node {}: the pushed state is not a director configuration: this agent runs `lb-agent director`",
                    self.node
                ),
                object: format!("node {}", self.node),
                field: "config".into(),
            });
        };
        let revision = Some((state.revision, state.epoch));
        match &self.director {
            Some(d) => d
                .apply(cfg, revision)
                .await
                .map(|_| ())
                .map_err(|e| e.detail()),
            None => {
                let kernel = Kernel::connect(self.vrrp_runtime.clone()).map_err(|e| e.detail())?;
                let (d, _task) = super::start(
                    Some(cfg),
                    revision,
                    &self.node,
                    Some(self.state_dir.clone()),
                    kernel,
                )
                .await
                .map_err(|e| e.detail())?;
                self.started_tx.send_replace(Some(d.clone()));
                self.director = Some(d);
                Ok(())
            }
        }
    }
}

async fn reload(options: &Options, director: &DirectorHandle) {
    let Some(path) = options
        .config
        .as_ref()
        .filter(|_| options.controller.is_empty())
    else {
        info!("SIGHUP: the configuration comes from the controller; nothing to read");
        return;
    };
    info!(file = %path.display(), "SIGHUP: reading the configuration again");
    match crate::config::load_director(path) {
        Ok(cfg) => match director.apply(cfg, None).await {
            Ok(o) => info!(revision = o.revision, operations = o.operations, "reloaded"),
            Err(e) => warn!(error = %e, "reload refused: the running configuration stays"),
        },
        Err(e) => warn!(error = %e, "reload refused: the running configuration stays"),
    }
}

/// Starts the agent API and the metrics endpoint when asked for.
async fn serve_extras(
    options: &Options,
    director: &DirectorHandle,
    stop_rx: &watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, DaemonError> {
    let mut servers = Vec::new();
    let stopped = |rx: &watch::Receiver<bool>| {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    if let Some(addr) = options.api {
        let listener = bind(addr, "agent API").await?;
        info!(%addr, "agent API listening");
        let backend: std::sync::Arc<dyn crate::api::AgentBackend> =
            std::sync::Arc::new(director.clone());
        let shutdown = stopped(stop_rx);
        servers.push(tokio::spawn(async move {
            if let Err(e) = crate::api::serve(listener, backend, shutdown).await {
                error!(error = %e, "agent API stopped");
            }
        }));
    }
    if let Some(addr) = options.metrics {
        let listener = bind(addr, "metrics").await?;
        info!(%addr, "metrics listening");
        let metrics = director.metrics();
        let shutdown = stopped(stop_rx);
        servers.push(tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve_metrics(listener, metrics, shutdown).await {
                error!(error = %e, "metrics endpoint stopped");
            }
        }));
    }
    Ok(servers)
}

async fn bind(addr: SocketAddr, what: &str) -> Result<tokio::net::TcpListener, DaemonError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Io {
            what: format!("{what} on {addr}"),
            source,
        })
}
