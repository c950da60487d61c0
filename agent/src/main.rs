//! `lb-agent`: parses flags, sets up logging, runs the chosen role.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lb_proto::v1::NodeRole;

/// The lb agent: runs on each director or real server.
#[derive(Parser, Debug)]
#[command(name = "lb-agent", version = lb_proto::VERSION, about, long_about = None)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// Run on a director: VRRP for the VIPs (IPVS and health checks join with the director assembly).
    Director {
        /// Configuration file (a DirectorConfig or a whole topology, in YAML).
        #[arg(long, short)]
        config: PathBuf,
        /// This node's name in the topology.
        #[arg(long)]
        node: Option<String>,
        /// Check the configuration and exit.
        #[arg(long)]
        check: bool,
    },
    /// Run on a real server: VIPs on lo or a tunnel, ARP and rp_filter sysctls.
    Realserver {
        /// Configuration file (a RealServerConfig, in YAML).
        #[arg(long, short)]
        config: PathBuf,
        /// Preflight: check the configuration, the kernel features it needs
        /// and conflicts, change nothing, exit non-zero if something blocks.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(&cli.log_format);
    match cli.role {
        Role::Director {
            config,
            check,
            node,
        } => {
            let cfg = lb_agent::config::load_director(&config)?;
            tracing::info!(
                groups = cfg.director_groups.len(),
                services = cfg.services.len(),
                "configuration read"
            );
            let node = node.unwrap_or_else(|| cfg.node.clone());
            if check && node.is_empty() {
                // No node given: check the VRRP settings of every director.
                for n in cfg
                    .nodes
                    .iter()
                    .filter(|n| n.role == NodeRole::Director as i32)
                {
                    let planned = lb_agent::vrrp::config::plan(&cfg, &n.name)?;
                    lb_agent::vrrp::config::sync_groups(&cfg, &planned)?;
                }
                return Ok(());
            }
            anyhow::ensure!(
                !node.is_empty(),
                "{}: no node name: set `node` in the file or pass --node",
                config.display()
            );
            let planned = lb_agent::vrrp::config::plan(&cfg, &node)?;
            let sync_groups = lb_agent::vrrp::config::sync_groups(&cfg, &planned)?;
            if check {
                return Ok(());
            }
            // For now the director runs VRRP only; IPVS and checks join later.
            // A tracked service's quorum comes from the health checks: refuse
            // it rather than run with a failover trigger that never fires.
            if let Some(p) = planned.iter().find(|p| !p.track_services.is_empty()) {
                let services: Vec<&str> =
                    p.track_services.iter().map(|(s, _)| s.as_str()).collect();
                anyhow::bail!(
                    "instance {}: trackServices ({}) needs the health checks, which this \
                     director does not run yet: leave trackServices out for now",
                    p.instance.name,
                    services.join(", ")
                );
            }
            // One thread: VRRP wakes often and briefly, and a single thread
            // keeps its wake-ups cheap on a loaded machine.
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(run_vrrp(planned, sync_groups))
        }
        Role::Realserver { config, check } => realserver(&config, check),
    }
}

/// Runs the VRRP instances until SIGTERM or SIGINT, then stops them cleanly
/// (priority 0, VIPs removed).
async fn run_vrrp(
    planned: Vec<lb_agent::vrrp::config::Planned>,
    sync_groups: Vec<Vec<usize>>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stopping");
        let _ = shutdown_tx.send(true);
    });
    let (events_tx, _) = tokio::sync::broadcast::channel(256);
    lb_agent::vrrp::run(
        planned,
        &sync_groups,
        std::sync::Arc::new(lb_agent::netif::Rtnl::connect()?),
        &Default::default(),
        events_tx,
        shutdown_rx,
    )
    .await?;
    Ok(())
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// `lb-agent realserver`: runs until SIGTERM or SIGINT, then undoes every change.
fn realserver(config: &std::path::Path, check: bool) -> anyhow::Result<()> {
    use lb_agent::realserver::{RealServer, check as preflight, desired::Desired, kernel::Kernel};

    let cfg = lb_agent::config::load_realserver(config)
        .with_context(|| format!("reading {}", config.display()))?;
    let desired = Desired::from_config(&cfg).with_context(|| format!("{}", config.display()))?;
    tracing::info!(node = %desired.node, vips = desired.vips.len(), "configuration read");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        if check {
            let kernel = Kernel::connect()?;
            let facts = preflight::gather(&kernel, &desired).await?;
            let findings = preflight::assess(&desired, &facts);
            for f in &findings {
                println!("{f}");
            }
            let blocking = findings.iter().filter(|f| f.blocking).count();
            if blocking > 0 {
                anyhow::bail!("{blocking} blocking problem(s): the real-server agent cannot hold its VIPs here");
            }
            println!("preflight passed");
            return Ok(());
        }
        // Handlers first: a SIGTERM from now on leads to the undo.
        let shutdown = shutdown_signal()?;
        let agent = RealServer::new(desired)?;
        agent.run(shutdown).await?;
        Ok(())
    })
}

/// Installs the SIGTERM and SIGINT handlers now; the future completes on either.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    })
}
