//! `lbctl`: the operator's command line against the lb controller.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lb_proto::v1::Topology;

/// Operate an lb system through its controller.
#[derive(Parser, Debug)]
#[command(name = "lbctl", version = lb_proto::VERSION, about, long_about = None)]
struct Cli {
    /// Controller address.
    #[arg(
        long,
        env = "LB_CONTROLLER",
        default_value = "http://127.0.0.1:7000",
        global = true
    )]
    controller: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check that a topology file parses, without a controller.
    Validate {
        /// Topology file (YAML or JSON).
        file: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let topology: Topology = lb_proto::yaml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            println!(
                "{}: {} nodes, {} director groups, {} services",
                file.display(),
                topology.nodes.len(),
                topology.director_groups.len(),
                topology.services.len()
            );
            Ok(())
        }
    }
}
