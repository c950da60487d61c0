//! `lb-agent director` as a process: the configuration file, signals, and
//! the API and metrics servers around a [`Director`](super).
//!
//! ```text
//!  SIGHUP ──► read the file again ──► DirectorHandle::apply (the difference)
//!  SIGTERM/SIGINT ──► DirectorHandle::shutdown (priority 0, VIPs removed) ──► exit
//!  --api ADDR ──► agent API (lb.v1.AgentService, health, reflection)
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use lb_proto::v1::DirectorConfig;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{error, info, warn};

use super::plan::{DirectorPlan, group_directors};
use super::{DirectorError, Kernel};
use crate::config::ConfigError;

/// How the director process was started.
#[derive(Debug, Clone)]
pub struct Options {
    /// The configuration file.
    pub config: PathBuf,
    /// Node name; default the file's `node`.
    pub node: Option<String>,
    /// State directory; default the file's `settings.stateDir`.
    pub state_dir: Option<PathBuf>,
    /// Agent API address.
    pub api: Option<SocketAddr>,
    /// Metrics address.
    pub metrics: Option<SocketAddr>,
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
    let cfg = crate::config::load_director(&options.config)?;
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
            options.config.display(),
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

/// Runs the director until SIGTERM or SIGINT.
pub async fn run(options: Options, mut signals: Signals) -> Result<(), DaemonError> {
    let read = || crate::config::load_director(&options.config);
    let (cfg, read_error) = match read() {
        Ok(c) => (Some(c), None),
        Err(e) => {
            error!(error = %e, "configuration file unusable: trying the last good configuration");
            (None, Some(e))
        }
    };
    let node = node_of(&options, cfg.as_ref());
    let kernel = Kernel::connect()?;
    let (director, task) = match super::start(cfg, &node, options.state_dir.clone(), kernel).await {
        Ok(d) => d,
        Err(e) => {
            return Err(match read_error {
                Some(r) => r.into(),
                None => e.into(),
            });
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    // API_AND_METRICS
    let _ = (&stop_rx, &mut servers);
    loop {
        tokio::select! {
            _ = signals.term.recv() => { info!("SIGTERM"); break; }
            _ = signals.int.recv() => { info!("SIGINT"); break; }
            _ = signals.hup.recv() => {
                info!(file = %options.config.display(), "SIGHUP: reading the configuration again");
                match read() {
                    Ok(cfg) => match director.apply(cfg, None).await {
                        Ok(o) => info!(revision = o.revision, operations = o.operations, "reloaded"),
                        Err(e) => warn!(error = %e, "reload refused: the running configuration stays"),
                    },
                    Err(e) => warn!(error = %e, "reload refused: the running configuration stays"),
                }
            }
        }
    }
    director.shutdown().await;
    let _ = task.await;
    let _ = stop_tx.send(true);
    for s in servers {
        let _ = s.await;
    }
    info!("stopped");
    Ok(())
}
