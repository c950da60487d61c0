//! `lb-controller`: parses flags, sets up logging, serves.

use std::net::SocketAddr;

use clap::Parser;

/// The lb controller: stores the topology and pushes it to the agents.
#[derive(Parser, Debug)]
#[command(name = "lb-controller", version = lb_proto::VERSION, about, long_about = None)]
struct Cli {
    /// Address of the gRPC API and the AgentSync stream.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
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
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "serving");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    lb_controller::server::run(listener, shutdown).await?;
    Ok(())
}
