//! `lb-agent realserver` as a process: the configuration file or the
//! controller, signals, and the status stream around a [`RealServer`].
//!
//! ```text
//!  SIGHUP ──► read the file again ──► RealServerHandle::apply (the difference)
//!  --controller URL ──► sync::run ── DesiredState ──► ControllerApplier
//!                         │            validate whole ─► ConfigStore (last good) ─► RealServerHandle::apply
//!                         ▲                                                              │
//!                         └── AgentStatus (VIP readiness), only when it changes ◄── status watch
//!  SIGTERM/SIGINT ──► stop the run loop: every change undone ──► exit
//! ```
//!
//! Under the controller the stored configuration runs at once (fail-static);
//! with none stored the agent holds nothing until the first push.

use std::path::PathBuf;

use lb_proto::v1::{
    AgentStatus, DesiredState, ErrorDetail, NodeRole, RealServerConfig, desired_state,
};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tracing::{info, warn};

use super::desired::{DEFAULT_STATE_DIR, Desired, DesiredError};
use super::{RealServer, RealServerError, RealServerHandle};
use crate::config::ConfigError;
use crate::store::{ConfigStore, StoreError, Stored};
use crate::sync::{Applier, ClientConfig};

/// File name of the last good configuration pushed by the controller.
pub const LAST_GOOD_FILE: &str = "realserver-last-good.json";

/// How the real-server process was started.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The configuration file (standalone).
    pub config: Option<PathBuf>,
    /// Controller URLs; empty: standalone.
    pub controller: Vec<String>,
    /// Node name; default the file's `node`.
    pub node: Option<String>,
    /// State directory; default the file's `settings.stateDir`, else
    /// /var/lib/lb-agent.
    pub state_dir: Option<PathBuf>,
}

/// Why the real-server process cannot run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The configuration file's content.
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: DesiredError,
    },
    /// The agent.
    #[error(transparent)]
    RealServer(#[from] RealServerError),
    /// Neither a file nor a controller.
    #[error("no configuration: give --config FILE, or --controller URL and --node NAME")]
    NoConfig,
    /// Signal handlers.
    #[error("signal handlers: {0}")]
    Signals(std::io::Error),
}

/// The signals the agent answers, installed before anything changes so that
/// a SIGTERM from then on always leads to the undo.
#[derive(Debug)]
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> Result<Self, DaemonError> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(DaemonError::Signals)?,
            int: signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?,
            hup: signal(SignalKind::hangup()).map_err(DaemonError::Signals)?,
        })
    }
}

/// Reads and checks the file, with `--node` and `--state-dir` over what it
/// says.
pub fn load_file(options: &Options) -> Result<Desired, DaemonError> {
    let path = options.config.as_ref().ok_or(DaemonError::NoConfig)?;
    let cfg = crate::config::load_realserver(path)?;
    let mut desired = Desired::from_config(&cfg).map_err(|source| DaemonError::Invalid {
        path: path.clone(),
        source,
    })?;
    if let Some(node) = &options.node {
        desired.node = node.clone();
    }
    if let Some(dir) = &options.state_dir {
        desired.state_dir = dir.clone();
    }
    Ok(desired)
}

/// A pushed or stored configuration checked for this node; the node name and
/// state directory are the process's, whatever the configuration says.
pub fn desired_for(
    cfg: &RealServerConfig,
    node: &str,
    state_dir: &std::path::Path,
) -> Result<Desired, DesiredError> {
    let mut desired = Desired::from_config(cfg)?;
    desired.node = node.to_string();
    desired.state_dir = state_dir.to_path_buf();
    Ok(desired)
}

/// Runs the real-server agent until SIGTERM or SIGINT, then undoes every
/// change: standalone from the file (SIGHUP applies the difference), or under
/// the controller.
pub async fn run(options: Options, mut signals: Signals) -> Result<(), DaemonError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (agent, sync) = if options.controller.is_empty() {
        let desired = load_file(&options)?;
        info!(node = %desired.node, vips = desired.vips.len(), "configuration read");
        (RealServer::new(desired)?, None)
    } else {
        let (agent, sync) = start_controlled(&options, stop_rx.clone())?;
        (agent, Some(sync))
    };
    let handle = agent.handle();
    let mut stop = stop_rx;
    let task = tokio::spawn(agent.run(async move {
        let _ = stop.wait_for(|s| *s).await;
    }));
    loop {
        tokio::select! {
            _ = signals.term.recv() => { info!("SIGTERM"); break; }
            _ = signals.int.recv() => { info!("SIGINT"); break; }
            _ = signals.hup.recv() => reload(&options, &handle).await,
        }
    }
    let _ = stop_tx.send(true);
    if let Some(sync) = sync {
        let _ = sync.await;
    }
    match task.await {
        Ok(result) => result?,
        Err(e) => warn!(error = %e, "the real-server task ended abnormally"),
    }
    info!("stopped");
    Ok(())
}

async fn reload(options: &Options, handle: &RealServerHandle) {
    if !options.controller.is_empty() {
        info!("SIGHUP: the configuration comes from the controller; nothing to read");
        return;
    }
    info!("SIGHUP: reading the configuration again");
    let desired = match load_file(options) {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "reload refused: the running configuration stays");
            return;
        }
    };
    match handle.apply(desired, None).await {
        Ok(a) => info!(
            added = a.changes.added.len(),
            removed = a.changes.removed.len(),
            changed = a.changes.changed.len(),
            unchanged = a.changes.unchanged.len(),
            ready = a.vips.iter().filter(|v| v.ready).count(),
            "reloaded"
        ),
        Err(e) => warn!(error = %e, "reload refused: the running configuration stays"),
    }
}

/// The agent with the stored configuration (or nothing), and the AgentSync
/// client task.
fn start_controlled(
    options: &Options,
    stop_rx: watch::Receiver<bool>,
) -> Result<(RealServer, tokio::task::JoinHandle<()>), DaemonError> {
    let node = options
        .node
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(DaemonError::NoConfig)?;
    let state_dir = options
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let store = ConfigStore::<RealServerConfig>::new(state_dir.join(LAST_GOOD_FILE));
    let stored = store
        .load()
        .map_err(StoredError::Store)
        .and_then(|s| match s {
            Some(s) => desired_for(&s.config, &node, &state_dir)
                .map(|d| Some((d, s.epoch, s.revision)))
                .map_err(StoredError::Invalid),
            None => Ok(None),
        });
    let (desired, applied) = match stored {
        Ok(Some((d, epoch, revision))) => {
            info!(
                revision,
                epoch,
                vips = d.vips.len(),
                "starting from the stored configuration until the controller answers"
            );
            (d, (epoch, revision))
        }
        Ok(None) => {
            info!("no stored configuration: holding nothing until the controller's first push");
            (Desired::empty(&node, state_dir.clone()), (0, 0))
        }
        Err(e) => {
            warn!(error = %e, "stored configuration refused: holding nothing until the controller's first push");
            (Desired::empty(&node, state_dir.clone()), (0, 0))
        }
    };
    let agent = RealServer::new(desired)?.with_revision(applied.0, applied.1);
    let applier = ControllerApplier {
        node: node.clone(),
        state_dir,
        store,
        handle: agent.handle(),
    };
    let status_rx = changes_only(agent.status());
    let config = ClientConfig::new(options.controller.clone(), &node, NodeRole::Realserver);
    let mut stop = stop_rx;
    let sync = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        crate::sync::run(config, applier, status_rx, applied, shutdown).await;
    });
    Ok((agent, sync))
}

#[derive(Debug, thiserror::Error)]
enum StoredError {
    #[error(transparent)]
    Store(StoreError),
    #[error("stored configuration: {0}")]
    Invalid(DesiredError),
}

/// The agent's status, passed on only when something other than its time
/// changed: a reconciliation every few seconds that finds everything in
/// place is not news for the controller.
fn changes_only(
    mut status_rx: watch::Receiver<AgentStatus>,
) -> watch::Receiver<Option<AgentStatus>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut last: Option<AgentStatus> = None;
        loop {
            let status = status_rx.borrow_and_update().clone();
            // Nothing reconciled yet: nothing to report.
            if status.time.is_some() {
                let timeless = AgentStatus {
                    time: None,
                    ..status.clone()
                };
                if last.as_ref() != Some(&timeless) {
                    last = Some(timeless);
                    if tx.send(Some(status)).is_err() {
                        return;
                    }
                }
            }
            if status_rx.changed().await.is_err() {
                return;
            }
        }
    });
    rx
}

/// Applies what the controller pushes: the whole bundle checked, stored as
/// the last good one, then handed to the running agent.
struct ControllerApplier {
    node: String,
    state_dir: PathBuf,
    store: ConfigStore<RealServerConfig>,
    handle: RealServerHandle,
}

impl ControllerApplier {
    fn refuse(&self, code: &str, message: String, field: &str) -> ErrorDetail {
        ErrorDetail {
            code: code.into(),
            message,
            object: format!("node {}", self.node),
            field: field.into(),
        }
    }
}

#[async_trait::async_trait]
impl Applier for ControllerApplier {
    async fn apply(&mut self, state: &DesiredState) -> Result<(), ErrorDetail> {
        let Some(desired_state::Config::Realserver(cfg)) = state.config.clone() else {
            return Err(self.refuse(
                "invalid",
                format!(
                    "node {}: the pushed state is not a real-server configuration: this agent runs `lb-agent realserver`",
                    self.node
                ),
                "config",
            ));
        };
        if !cfg.node.is_empty() && cfg.node != self.node {
            return Err(self.refuse(
                "invalid",
                format!(
                    "the pushed configuration is for node {}, this agent runs as {} (--node)",
                    cfg.node, self.node
                ),
                "node",
            ));
        }
        let desired = desired_for(&cfg, &self.node, &self.state_dir).map_err(|e| {
            warn!(revision = state.revision, error = %e, "pushed configuration refused");
            e.detail()
        })?;
        self.store
            .save(&Stored {
                revision: state.revision,
                epoch: state.epoch,
                config: cfg,
            })
            .map_err(|e| self.refuse("internal", e.to_string(), ""))?;
        let applied = self
            .handle
            .apply(desired, Some((state.epoch, state.revision)))
            .await
            .map_err(|e| e.detail())?;
        info!(
            revision = state.revision,
            epoch = state.epoch,
            added = applied.changes.added.len(),
            removed = applied.changes.removed.len(),
            changed = applied.changes.changed.len(),
            unchanged = applied.changes.unchanged.len(),
            "applied the pushed configuration"
        );
        Ok(())
    }
}
