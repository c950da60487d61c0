//! `lb-agent`: parses flags, sets up logging, runs the chosen role.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    /// Run on a director: VRRP for the VIPs, IPVS for the services, health
    /// checks of the real servers, and the agent API.
    Director {
        /// Configuration file (a DirectorConfig or a whole topology, in YAML).
        /// SIGHUP reads it again and applies the difference.
        #[arg(long, short, required_unless_present = "controller")]
        config: Option<PathBuf>,
        /// This node's name in the topology.
        #[arg(long)]
        node: Option<String>,
        /// Controller URLs (http://host:port), comma-separated or repeated:
        /// the configuration comes from the controller, and the last good
        /// one stored runs while it cannot be reached.
        #[arg(
            long,
            value_delimiter = ',',
            conflicts_with = "config",
            requires = "node"
        )]
        controller: Vec<String>,
        /// State directory (last good configuration, owned IPVS services,
        /// status); default the configuration's `settings.stateDir`, else
        /// /var/lib/lb-agent.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Address of the agent's gRPC API (lb.v1.AgentService, health,
        /// reflection), e.g. 127.0.0.1:50061.
        #[arg(long)]
        api: Option<SocketAddr>,
        /// Address of the Prometheus metrics endpoint (/metrics), e.g.
        /// 127.0.0.1:9361.
        #[arg(long)]
        metrics: Option<SocketAddr>,
        /// Run VRRP on a SCHED_RR thread at this priority (1..=99), as
        /// keepalived's vrrp_rt_priority: adverts stay on time on a loaded
        /// machine. Needs CAP_SYS_NICE.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=99))]
        realtime_priority: Option<u8>,
        /// Check the configuration and exit.
        #[arg(long)]
        check: bool,
    },
    /// Run on a real server: VIPs on lo or a tunnel, ARP and rp_filter sysctls.
    Realserver {
        /// Configuration file (a RealServerConfig, in YAML). SIGHUP reads it
        /// again and applies the difference.
        #[arg(long, short, required_unless_present = "controller")]
        config: Option<PathBuf>,
        /// This node's name in the topology; default the file's `node`.
        #[arg(long)]
        node: Option<String>,
        /// Controller URLs (http://host:port), comma-separated or repeated:
        /// the configuration comes from the controller, and the last good
        /// one stored runs while it cannot be reached.
        #[arg(
            long,
            value_delimiter = ',',
            conflicts_with_all = ["config", "check"],
            requires = "node"
        )]
        controller: Vec<String>,
        /// State directory (ledger of changed values, last good
        /// configuration, status); default the file's `settings.stateDir`,
        /// else /var/lib/lb-agent.
        #[arg(long)]
        state_dir: Option<PathBuf>,
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
            node,
            controller,
            state_dir,
            api,
            metrics,
            realtime_priority,
            check,
        } => {
            let options = lb_agent::director::daemon::Options {
                config,
                controller,
                node,
                state_dir,
                api,
                metrics,
                realtime_priority,
            };
            if check {
                return Ok(lb_agent::director::daemon::check(&options)?);
            }
            // One thread: VRRP wakes often and briefly, and a single thread
            // keeps its wake-ups cheap on a loaded machine; IPVS runs on a
            // thread of its own.
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(async move {
                    let signals = lb_agent::director::daemon::Signals::install()?;
                    Ok(lb_agent::director::daemon::run(options, signals).await?)
                })
        }
        Role::Realserver {
            config,
            node,
            controller,
            state_dir,
            check,
        } => {
            let options = lb_agent::realserver::daemon::Options {
                config,
                controller,
                node,
                state_dir,
            };
            realserver(options, check)
        }
    }
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
fn realserver(options: lb_agent::realserver::daemon::Options, check: bool) -> anyhow::Result<()> {
    use lb_agent::realserver::{check as preflight, daemon, kernel::Kernel};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        if check {
            let desired = daemon::load_file(&options)?;
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
        let signals = daemon::Signals::install()?;
        daemon::run(options, signals).await?;
        Ok(())
    })
}
