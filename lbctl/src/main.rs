//! `lbctl`: the operator's command line against the lb controller.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use lb_proto::v1::controller_service_client::ControllerServiceClient;
use lb_proto::v1::{
    ApplyRequest, ApplyResponse, DeleteRequest, DrainRequest, GetRequest, HistoryRequest,
    ListRequest, NodeRole, NodeStatus, ObjectKind, RollbackRequest, StatusRequest, Topology,
    WatchEventsRequest, apply_request, event, object,
};
use tonic::transport::Channel;

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

/// Object kinds as typed on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    #[value(alias = "nodes")]
    Node,
    #[value(alias = "groups", alias = "group", alias = "directorgroup")]
    DirectorGroup,
    #[value(alias = "services", alias = "svc")]
    Service,
}

impl Kind {
    fn proto(self) -> ObjectKind {
        match self {
            Kind::Node => ObjectKind::Node,
            Kind::DirectorGroup => ObjectKind::DirectorGroup,
            Kind::Service => ObjectKind::Service,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a topology file offline: it parses and passes every validation rule.
    Validate {
        /// Topology file (YAML or JSON).
        file: PathBuf,
    },
    /// Store a topology file (the whole topology: objects not in it are deleted).
    Apply {
        /// Topology file (YAML or JSON).
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// Show the per-node plan; store nothing.
        #[arg(long)]
        dry_run: bool,
        /// Allow removing every real server of a service.
        #[arg(long)]
        force: bool,
        /// Apply only if the controller is at this revision.
        #[arg(long, default_value_t = 0)]
        expected_revision: u64,
        /// Change message for the history.
        #[arg(short = 'm', long, default_value = "")]
        message: String,
    },
    /// Show what applying a file would change on each node.
    Diff {
        /// Topology file (YAML or JSON).
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// Print objects as YAML: one by name, or every object of a kind.
    Get {
        /// Kind.
        kind: Kind,
        /// Name; all of the kind when left out.
        name: Option<String>,
    },
    /// An object with its live status.
    Describe {
        /// Kind.
        kind: Kind,
        /// Name.
        name: String,
    },
    /// Delete objects.
    Delete {
        /// Kind.
        kind: Kind,
        /// Names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Allow removing every real server of a service.
        #[arg(long)]
        force: bool,
        /// Show the plan; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Change message.
        #[arg(short = 'm', long, default_value = "")]
        message: String,
    },
    /// Drain a real server of a service on every director.
    Drain {
        /// Service name.
        service: String,
        /// Real server: node name or address:port.
        real_server: String,
    },
    /// Undo a drain.
    Undrain {
        /// Service name.
        service: String,
        /// Real server: node name or address:port.
        real_server: String,
    },
    /// Each node: connected, pushed and applied revision, last error.
    Status {
        /// Only these nodes.
        nodes: Vec<String>,
    },
    /// Follow events as they happen.
    Events {
        /// Only these kinds (vrrp, health, applied, drift, quorum, topology, connection).
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// Only this node.
        #[arg(long, default_value = "")]
        node: String,
    },
    /// Stored revisions, newest first.
    History {
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Make an older revision current again.
    Rollback {
        /// Revision.
        revision: u64,
        /// Show the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn read_topology(file: &Path) -> anyhow::Result<Topology> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    lb_proto::yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

fn author() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_string());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string());
    format!("lbctl:{user}@{host}")
}

fn request<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Ok(value) = author().parse() {
        r.metadata_mut().insert("x-lb-author", value);
    }
    r
}

fn yaml<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    lb_proto::yaml::to_string(value).map_err(|e| anyhow::anyhow!("{e}"))
}

fn print_apply(r: &ApplyResponse, dry_run: bool) {
    for w in &r.warnings {
        eprintln!("warning: {}: field {}: {}", w.object, w.field, w.message);
    }
    for plan in &r.plans {
        println!("node {}:", plan.node);
        for line in plan.diff.lines() {
            println!("  {line}");
        }
    }
    if dry_run {
        println!(
            "dry run: {} at revision {}; {} node(s) would change",
            if r.changed { "changes" } else { "no change" },
            r.revision,
            r.plans.len()
        );
    } else if r.changed {
        println!("revision {}: {} node(s) change", r.revision, r.plans.len());
    } else {
        println!("no change (revision {})", r.revision);
    }
}

fn status_table(nodes: &[NodeStatus]) -> String {
    let mut out = format!(
        "{:<16} {:<11} {:<10} {:>7} {:>8} {:<10} {:<10} {}\n",
        "NODE", "ROLE", "CONNECTED", "PUSHED", "APPLIED", "REPLICA", "VIPS READY", "LAST ERROR"
    );
    let mut not_ready = String::new();
    for n in nodes {
        let error = n
            .last_error
            .as_ref()
            .map(|e| format!("{}: {}", e.code, e.message))
            .unwrap_or_default();
        // Real servers: how many of their VIPs the agent reports ready.
        let vips = n.status.as_ref().map(|s| s.vips.as_slice()).unwrap_or(&[]);
        let ready = if n.role() == NodeRole::Realserver {
            format!("{}/{}", vips.iter().filter(|v| v.ready).count(), vips.len())
        } else {
            "-".to_string()
        };
        for v in vips.iter().filter(|v| !v.ready) {
            not_ready.push_str(&format!(
                "{}: VIP {} not ready: {}\n",
                n.node, v.address, v.reason
            ));
        }
        out.push_str(&format!(
            "{:<16} {:<11} {:<10} {:>7} {:>8} {:<10} {:<10} {}\n",
            n.node,
            n.role().as_str_name(),
            if n.connected { "yes" } else { "no" },
            n.pushed_revision,
            n.applied_revision,
            n.replica,
            ready,
            error
        ));
    }
    out.push_str(&not_ready);
    out
}

fn describe_event(e: &lb_proto::v1::Event) -> String {
    let what = match &e.kind {
        Some(event::Kind::Vrrp(v)) => format!(
            "vrrp {} {} -> {} (priority {}): {}",
            v.instance,
            v.from().as_str_name(),
            v.to().as_str_name(),
            v.priority,
            v.reason
        ),
        Some(event::Kind::Health(h)) => format!(
            "health {} {} {} -> {}: {}",
            h.service,
            h.real_server,
            h.from().as_str_name(),
            h.to().as_str_name(),
            h.reason
        ),
        Some(event::Kind::Applied(a)) if a.ok => format!("applied revision {}", a.revision),
        Some(event::Kind::Applied(a)) => format!(
            "refused revision {}: {}",
            a.revision,
            a.error.as_ref().map(|e| e.message.as_str()).unwrap_or("")
        ),
        Some(event::Kind::Drift(d)) => format!("drift {}: {}", d.object, d.action),
        Some(event::Kind::Quorum(q)) => format!(
            "quorum {} {} (weight {})",
            q.service,
            if q.quorum { "gained" } else { "lost" },
            q.weight
        ),
        Some(event::Kind::Topology(t)) => format!(
            "topology revision {} by {}: {}",
            t.revision, t.author, t.message
        ),
        Some(event::Kind::Connection(c)) => format!(
            "{} (version {})",
            if c.connected {
                "connected"
            } else {
                "disconnected"
            },
            c.version
        ),
        None => "?".to_string(),
    };
    let time = e.time.map(|t| t.seconds).unwrap_or_default();
    let node = if e.node.is_empty() { "-" } else { &e.node };
    format!("{time} {node} {what}")
}

async fn connect(url: &str) -> anyhow::Result<ControllerServiceClient<Channel>> {
    ControllerServiceClient::connect(url.to_string())
        .await
        .with_context(|| format!("connecting to the controller at {url}"))
}

fn status_error(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Validate { file } = &cli.command {
        let topology = read_topology(file)?;
        let report = lb_controller::validate::validate(&topology, &Topology::default(), false);
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        if !report.is_ok() {
            for e in &report.errors {
                eprintln!("error: {e}");
            }
            bail!("{}: {} error(s)", file.display(), report.errors.len());
        }
        println!(
            "{}: valid: {} nodes, {} director groups, {} services",
            file.display(),
            topology.nodes.len(),
            topology.director_groups.len(),
            topology.services.len()
        );
        return Ok(());
    }
    let mut client = connect(&cli.controller).await?;
    match cli.command {
        Command::Validate { .. } => unreachable!("handled above"),
        Command::Apply {
            file,
            dry_run,
            force,
            expected_revision,
            message,
        } => {
            let topology = read_topology(&file)?;
            let message = if message.is_empty() {
                format!("apply {}", file.display())
            } else {
                message
            };
            let r = client
                .apply(request(ApplyRequest {
                    content: Some(apply_request::Content::Topology(topology)),
                    dry_run,
                    expected_revision,
                    force,
                    message,
                }))
                .await
                .map_err(status_error)?
                .into_inner();
            print_apply(&r, dry_run);
        }
        Command::Diff { file } => {
            let topology = read_topology(&file)?;
            let r = client
                .apply(request(ApplyRequest {
                    content: Some(apply_request::Content::Topology(topology)),
                    dry_run: true,
                    force: true,
                    ..Default::default()
                }))
                .await
                .map_err(status_error)?
                .into_inner();
            print_apply(&r, true);
        }
        Command::Get { kind, name } => match name {
            Some(name) => {
                let o = client
                    .get(GetRequest {
                        kind: kind.proto() as i32,
                        name,
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                print!("{}", yaml(&o)?);
            }
            None => {
                let list = client
                    .list(ListRequest {
                        kind: kind.proto() as i32,
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                println!("# revision {}", list.revision);
                print!("{}", yaml(&list.objects)?);
            }
        },
        Command::Describe { kind, name } => {
            let o = client
                .get(GetRequest {
                    kind: kind.proto() as i32,
                    name: name.clone(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print!("{}", yaml(&o)?);
            let nodes = match &o.kind {
                Some(object::Kind::Node(n)) => vec![n.name.clone()],
                Some(object::Kind::DirectorGroup(g)) => lb_controller::topology::group_directors(g),
                Some(object::Kind::Service(s)) => s
                    .real_servers
                    .iter()
                    .filter_map(|rs| {
                        lb_controller::topology::real_server_node(rs).map(String::from)
                    })
                    .collect(),
                None => Vec::new(),
            };
            if !nodes.is_empty() {
                let status = client
                    .status(StatusRequest { nodes })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                println!("---\n# status at revision {}", status.revision);
                print!("{}", status_table(&status.nodes));
            }
        }
        Command::Delete {
            kind,
            names,
            force,
            dry_run,
            message,
        } => {
            let r = client
                .delete(request(DeleteRequest {
                    kind: kind.proto() as i32,
                    message: if message.is_empty() {
                        format!("delete {}", names.join(", "))
                    } else {
                        message
                    },
                    names,
                    expected_revision: 0,
                    force,
                    dry_run,
                }))
                .await
                .map_err(status_error)?
                .into_inner();
            print_apply(&r, dry_run);
        }
        Command::Drain {
            service,
            real_server,
        } => {
            let r = client
                .drain(request(DrainRequest {
                    service,
                    real_server,
                    deadline: None,
                }))
                .await
                .map_err(status_error)?
                .into_inner();
            println!("drained at revision {}", r.revision);
        }
        Command::Undrain {
            service,
            real_server,
        } => {
            let r = client
                .undrain(request(DrainRequest {
                    service,
                    real_server,
                    deadline: None,
                }))
                .await
                .map_err(status_error)?
                .into_inner();
            println!("undrained at revision {}", r.revision);
        }
        Command::Status { nodes } => {
            let status = client
                .status(StatusRequest { nodes })
                .await
                .map_err(status_error)?
                .into_inner();
            println!("revision {}", status.revision);
            print!("{}", status_table(&status.nodes));
        }
        Command::Events { kinds, node } => {
            let mut stream = client
                .watch_events(WatchEventsRequest { kinds, node })
                .await
                .map_err(status_error)?
                .into_inner();
            while let Some(e) = stream.message().await.map_err(status_error)? {
                println!("{}", describe_event(&e));
            }
        }
        Command::History { limit } => {
            let h = client
                .history(HistoryRequest { limit })
                .await
                .map_err(status_error)?
                .into_inner();
            println!(
                "{:>8}  {:<20}  {:<28}  MESSAGE",
                "REVISION", "TIME", "AUTHOR"
            );
            for r in h.revisions {
                let time = r.time.map(|t| t.seconds).unwrap_or_default();
                let time = humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(time.max(0) as u64),
                );
                println!(
                    "{:>8}  {:<20}  {:<28}  {}",
                    r.revision, time, r.author, r.message
                );
            }
        }
        Command::Rollback { revision, dry_run } => {
            let r = client
                .rollback(request(RollbackRequest {
                    revision,
                    expected_revision: 0,
                    dry_run,
                }))
                .await
                .map_err(status_error)?
                .into_inner();
            print_apply(&r, dry_run);
        }
    }
    Ok(())
}
