//! `lb-controller`: parses flags, sets up logging, opens the store, serves.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use lb_controller::controller::{Controller, ControllerConfig};
use lb_controller::store::{Store, embedded::EmbeddedStore, etcd::EtcdStore};

/// The lb controller: stores the topology and pushes it to the agents.
#[derive(Parser, Debug)]
#[command(name = "lb-controller", version = lb_proto::VERSION, about, long_about = None)]
struct Cli {
    /// Address of the gRPC API and the AgentSync stream.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// etcd endpoints, comma separated ("http://10.0.0.1:2379,http://10.0.0.2:2379").
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with = "data_dir",
        required_unless_present = "data_dir"
    )]
    etcd: Vec<String>,
    /// Key prefix in etcd; replicas of one controller share it.
    #[arg(long, default_value = "/lb")]
    etcd_prefix: String,
    /// Timeout of each etcd request.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    etcd_timeout: Duration,
    /// Directory of the embedded store, for a single controller without etcd.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keepalive interval on agent streams.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    keepalive: Duration,
    /// Name of this replica in node status; default the listen address.
    #[arg(long)]
    replica: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let store: Arc<dyn Store> = match &cli.data_dir {
        Some(dir) => Arc::new(
            EmbeddedStore::open(dir)
                .with_context(|| format!("opening the store in {}", dir.display()))?,
        ),
        None => Arc::new(
            EtcdStore::connect(&cli.etcd, &cli.etcd_prefix, cli.etcd_timeout)
                .await
                .with_context(|| format!("connecting to etcd at {}", cli.etcd.join(",")))?,
        ),
    };
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    let address = listener.local_addr()?;
    let config = ControllerConfig {
        replica: cli.replica.unwrap_or_else(|| address.to_string()),
        keepalive: cli.keepalive,
        ..ControllerConfig::default()
    };
    let controller = Controller::start(store.clone(), config)
        .await
        .context("reading the topology")?;
    tracing::info!(%address, store = store.kind(), "serving");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    lb_controller::server::run(controller, listener, shutdown).await?;
    Ok(())
}
