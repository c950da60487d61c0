//! The agents as the controller sees them: one entry per node with its
//! session, status, and the states pushed to it and applied by it; and the
//! push itself.
//!
//! ```text
//!  store watch / apply ─► set_topology ─┐
//!  readiness (store) ───► set_readiness ─┼─► reconcile ─► plan ─► session_tx ─► agent
//!  agent stream ────────► on_message ────┘   (push only what changed for a node)
//!                          (ack, nack, status)
//! ```
//!
//! Everything here runs under one short-lived lock and never awaits; sends to
//! agents are `try_send` on each session's bounded channel. A push that does
//! not fit is retried by the next reconcile (the controller runs one
//! periodically).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use lb_proto::v1::{
    AgentConnection, AgentMessage, AgentStatus, Applied, ControllerMessage, DesiredState, Event,
    Hello, Node, NodeRole, NodeStatus, TopologyChange, VrrpTransition, agent_message,
    controller_message, event,
};
use tokio::sync::{broadcast, mpsc};

use crate::plan::{self, Holds, Planned};
use crate::store::{Readiness, Record};

/// The sending half of one agent stream.
pub type SessionTx = mpsc::Sender<ControllerMessage>;

struct Session {
    id: u64,
    tx: SessionTx,
}

struct Agent {
    role: NodeRole,
    session: Option<Session>,
    status: NodeStatus,
    /// Last state sent on the current session (None: send on next reconcile).
    pushed: Option<DesiredState>,
    /// Last state the agent acknowledged.
    applied: Option<DesiredState>,
}

struct State {
    record: Record,
    /// The plan of `record` with the readiness and holds of the last
    /// reconcile: the base of the next plan.
    planned: Planned,
    readiness: Readiness,
    agents: BTreeMap<String, Agent>,
    next_session: u64,
    epoch: u64,
}

/// A real server's ready VIPs changed and should be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessChange {
    /// Node.
    pub node: String,
    /// VIPs ready now.
    pub vips: BTreeSet<String>,
}

/// A node whose state an apply changes.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeChange {
    /// Node.
    pub node: String,
    /// What it was last told, or would be told now if it never was.
    pub old: Option<DesiredState>,
    /// What it would be told.
    pub new: DesiredState,
}

/// The agents and the push.
pub struct Fleet {
    replica: String,
    state: Mutex<State>,
    events_tx: broadcast::Sender<Event>,
}

fn event(node: &str, kind: event::Kind) -> Event {
    Event {
        time: Some(lb_proto::now()),
        node: node.to_string(),
        kind: Some(kind),
    }
}

impl Fleet {
    /// A fleet planning from `record` and `readiness`, pushing with `epoch`.
    pub fn new(replica: &str, record: Record, readiness: Readiness, epoch: u64) -> Fleet {
        let (events_tx, _) = broadcast::channel(4096);
        let mut state = State {
            record,
            planned: Planned::default(),
            readiness,
            agents: BTreeMap::new(),
            next_session: 1,
            epoch,
        };
        state.planned = with_input(
            &state,
            &state.record.topology,
            state.record.revision,
            plan::plan_all,
        );
        Fleet {
            replica: replica.to_string(),
            state: Mutex::new(state),
            events_tx,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough data (each
        // method writes whole fields); keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Events as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events_tx.subscribe()
    }

    /// Publishes a controller event.
    pub fn emit(&self, e: Event) {
        let _ = self.events_tx.send(e);
    }

    /// The topology revision the fleet plans from.
    pub fn record(&self) -> Record {
        self.lock().record.clone()
    }

    /// The epoch pushes carry.
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Moves to a newer epoch (a new leader term) and pushes again; an
    /// older or equal epoch changes nothing.
    pub fn set_epoch(&self, epoch: u64) {
        let mut state = self.lock();
        if epoch > state.epoch {
            state.epoch = epoch;
            for agent in state.agents.values_mut() {
                agent.pushed = None;
            }
            self.reconcile_locked(&mut state);
        }
    }

    /// A newer topology; older or equal revisions are ignored.
    pub fn set_topology(&self, record: Record) {
        let mut state = self.lock();
        if record.revision <= state.record.revision {
            return;
        }
        self.emit(event(
            "",
            event::Kind::Topology(TopologyChange {
                revision: record.revision,
                author: record.author.clone(),
                message: record.message.clone(),
            }),
        ));
        state.record = record;
        self.reconcile_locked(&mut state);
    }

    /// Stored readiness of one node (from the store: this or another replica).
    pub fn set_readiness(&self, node: &str, vips: BTreeSet<String>) {
        let mut state = self.lock();
        if state.readiness.get(node) == Some(&vips) {
            return;
        }
        state.readiness.insert(node.to_string(), vips);
        self.reconcile_locked(&mut state);
    }

    /// Replaces all readiness (after a store resync).
    pub fn replace_readiness(&self, readiness: Readiness) {
        let mut state = self.lock();
        if state.readiness != readiness {
            state.readiness = readiness;
            self.reconcile_locked(&mut state);
        }
    }

    /// An agent said hello on a new stream; returns the session id. A
    /// previous session of the same node is superseded.
    pub fn connect(&self, hello: &Hello, tx: SessionTx) -> u64 {
        let mut state = self.lock();
        let id = state.next_session;
        state.next_session += 1;
        let role = hello.role();
        let agent = state
            .agents
            .entry(hello.node.clone())
            .or_insert_with(|| Agent {
                role,
                session: None,
                status: NodeStatus {
                    node: hello.node.clone(),
                    ..Default::default()
                },
                pushed: None,
                applied: None,
            });
        agent.role = role;
        agent.session = Some(Session { id, tx });
        agent.pushed = None;
        agent.status.role = role as i32;
        agent.status.connected = true;
        agent.status.version = hello.version.clone();
        agent.status.applied_revision = hello.applied_revision;
        agent.status.last_seen = Some(lb_proto::now());
        agent.status.replica = self.replica.clone();
        self.emit(event(
            &hello.node,
            event::Kind::Connection(AgentConnection {
                connected: true,
                version: hello.version.clone(),
            }),
        ));
        self.reconcile_locked(&mut state);
        id
    }

    /// Whether `id` is still the node's session.
    pub fn is_current(&self, node: &str, id: u64) -> bool {
        self.lock()
            .agents
            .get(node)
            .and_then(|a| a.session.as_ref())
            .is_some_and(|s| s.id == id)
    }

    /// The stream of session `id` ended.
    pub fn disconnect(&self, node: &str, id: u64) {
        let mut state = self.lock();
        let Some(agent) = state.agents.get_mut(node) else {
            return;
        };
        if agent.session.as_ref().is_none_or(|s| s.id != id) {
            return;
        }
        agent.session = None;
        agent.pushed = None;
        agent.status.connected = false;
        let version = agent.status.version.clone();
        self.emit(event(
            node,
            event::Kind::Connection(AgentConnection {
                connected: false,
                version,
            }),
        ));
    }

    /// A message from the agent of session `id`. Returns a readiness change
    /// to store, if the message brought one.
    pub fn on_message(
        &self,
        node: &str,
        id: u64,
        message: AgentMessage,
    ) -> Option<ReadinessChange> {
        let mut state = self.lock();
        let agent = state.agents.get_mut(node)?;
        if agent.session.as_ref().is_none_or(|s| s.id != id) {
            return None;
        }
        agent.status.last_seen = Some(lb_proto::now());
        match message.msg? {
            agent_message::Msg::Hello(_) | agent_message::Msg::Keepalive(_) => None,
            agent_message::Msg::Ack(ack) => {
                let pushed = agent.pushed.as_ref()?;
                if (pushed.epoch, pushed.revision) != (ack.epoch, ack.revision) {
                    // An ack of an earlier push; the latest is still pending.
                    return None;
                }
                // Holds change only when what the director applied held
                // a (real server, VIP) pair that its new state does not.
                let releases = agent.role == NodeRole::Director
                    && agent.applied.as_ref().is_some_and(|a| {
                        !plan::same_config(a, pushed) && {
                            let (mut before, mut after) = (Holds::new(), Holds::new());
                            plan::add_holds(&mut before, a);
                            plan::add_holds(&mut after, pushed);
                            before.iter().any(|(node, vips)| {
                                after.get(node).is_none_or(|v| !vips.is_subset(v))
                            })
                        }
                    });
                agent.applied = Some(pushed.clone());
                agent.status.applied_revision = ack.revision;
                agent.status.last_error = None;
                self.emit(event(
                    node,
                    event::Kind::Applied(Applied {
                        revision: ack.revision,
                        ok: true,
                        error: None,
                        operations: 0,
                    }),
                ));
                // What directors applied decides when a real server may drop a VIP.
                if releases {
                    self.reconcile_locked(&mut state);
                }
                None
            }
            agent_message::Msg::Nack(nack) => {
                agent.status.last_error = nack.error.clone();
                self.emit(event(
                    node,
                    event::Kind::Applied(Applied {
                        revision: nack.revision,
                        ok: false,
                        error: nack.error,
                        operations: 0,
                    }),
                ));
                None
            }
            agent_message::Msg::Status(status) => {
                let old = agent.status.status.replace(status.clone());
                if status.last_error.is_some() {
                    agent.status.last_error = status.last_error.clone();
                }
                for e in vrrp_transitions(node, old.as_ref(), &status) {
                    self.emit(e);
                }
                if agent.role != NodeRole::Realserver {
                    return None;
                }
                let vips: BTreeSet<String> = status
                    .vips
                    .iter()
                    .filter(|v| v.ready)
                    .filter_map(|v| v.address.parse::<std::net::IpAddr>().ok())
                    .map(|a| a.to_string())
                    .collect();
                if state.readiness.get(node) == Some(&vips) {
                    return None;
                }
                state.readiness.insert(node.to_string(), vips.clone());
                self.reconcile_locked(&mut state);
                Some(ReadinessChange {
                    node: node.to_string(),
                    vips,
                })
            }
        }
    }

    /// Pushes whatever changed to every connected agent.
    pub fn reconcile(&self) {
        let mut state = self.lock();
        self.reconcile_locked(&mut state);
    }

    /// The desired state of every node for `topology` at `revision`, with the
    /// fleet's readiness and holds (for dry runs and apply results).
    pub fn plan_for(
        &self,
        topology: &lb_proto::v1::Topology,
        revision: u64,
    ) -> BTreeMap<String, DesiredState> {
        let state = self.lock();
        with_input(&state, topology, revision, |input| {
            plan::replan(state.planned.clone(), input).states
        })
    }

    /// The nodes whose state changes if the topology becomes `topology` at
    /// `revision`: for each, what it was last told (or would be told now if
    /// it never was, or what `earlier` says it will be told first) and what
    /// it would be told. Only the nodes whose inputs changed are planned
    /// again.
    pub fn changes_for(
        &self,
        topology: &lb_proto::v1::Topology,
        revision: u64,
        earlier: &BTreeMap<String, DesiredState>,
    ) -> Vec<NodeChange> {
        let state = self.lock();
        with_input(&state, topology, revision, |input| {
            let changes = plan::replan_changes(&state.planned, input);
            let mut names: BTreeSet<&str> = changes.states.keys().map(String::as_str).collect();
            names.extend(state.agents.keys().map(String::as_str));
            if changes.whole {
                names.extend(state.planned.states.keys().map(String::as_str));
            }
            let mut out = Vec::new();
            for name in names {
                let Some(new) = changes.state(&state.planned, name) else {
                    continue;
                };
                let old = earlier
                    .get(name)
                    .or_else(|| {
                        state
                            .agents
                            .get(name)
                            .and_then(|a| a.pushed.as_ref().or(a.applied.as_ref()))
                    })
                    .or_else(|| state.planned.states.get(name));
                if old.is_some_and(|o| plan::same_config(o, new)) {
                    continue;
                }
                let mut new = new.clone();
                new.revision = revision;
                new.epoch = state.epoch;
                out.push(NodeChange {
                    node: name.to_string(),
                    old: old.cloned(),
                    new,
                });
            }
            out
        })
    }

    /// Status of the named nodes (all when empty): every node of the
    /// topology, and every agent that connected.
    pub fn status(&self, nodes: &[String]) -> Vec<NodeStatus> {
        let state = self.lock();
        let mut out: BTreeMap<String, NodeStatus> = BTreeMap::new();
        for n in &state.record.topology.nodes {
            out.insert(
                n.name.clone(),
                NodeStatus {
                    node: n.name.clone(),
                    role: n.role,
                    ..Default::default()
                },
            );
        }
        for (name, agent) in &state.agents {
            out.insert(name.clone(), agent.status.clone());
        }
        out.into_values()
            .filter(|s| nodes.is_empty() || nodes.contains(&s.node))
            .collect()
    }

    /// Status of the agents whose stream this replica holds.
    pub fn connected_status(&self) -> Vec<NodeStatus> {
        self.lock()
            .agents
            .values()
            .filter(|a| a.session.is_some())
            .map(|a| a.status.clone())
            .collect()
    }

    fn reconcile_locked(&self, state: &mut State) {
        let previous = std::mem::take(&mut state.planned);
        state.planned = with_input(
            state,
            &state.record.topology,
            state.record.revision,
            |input| plan::replan(previous, input),
        );
        let State {
            planned, agents, ..
        } = state;
        for (name, agent) in agents.iter_mut() {
            let Some(session) = agent.session.as_ref() else {
                continue;
            };
            let Some(desired) = planned.states.get(name) else {
                continue;
            };
            if agent
                .pushed
                .as_ref()
                .is_some_and(|p| plan::same_config(p, desired) && p.epoch == desired.epoch)
            {
                continue;
            }
            let message = ControllerMessage {
                msg: Some(controller_message::Msg::Desired(desired.clone())),
            };
            match session.tx.try_send(message) {
                Ok(()) => {
                    agent.status.pushed_revision = desired.revision;
                    agent.pushed = Some(desired.clone());
                }
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "push deferred");
                }
            }
        }
    }
}

/// Calls `f` with the planner's input for `topology` at `revision`: the
/// fleet's readiness and epoch, and the holds and previous states of its
/// agents.
fn with_input<R>(
    state: &State,
    topology: &lb_proto::v1::Topology,
    revision: u64,
    f: impl FnOnce(plan::Input<'_>) -> R,
) -> R {
    let mut holds = Holds::new();
    for agent in state.agents.values() {
        if agent.role == NodeRole::Director {
            for s in agent.pushed.iter().chain(agent.applied.iter()) {
                plan::add_holds(&mut holds, s);
            }
        }
    }
    let previous = |node: &str| {
        state
            .agents
            .get(node)
            .filter(|a| a.role == NodeRole::Realserver)
            .and_then(|a| a.pushed.as_ref().or(a.applied.as_ref()))
    };
    // Agents whose node left the topology are told to run nothing (real
    // servers keep what directors still forward to them).
    let named: std::collections::HashSet<&str> =
        topology.nodes.iter().map(|n| n.name.as_str()).collect();
    let missing: Vec<Node> = state
        .agents
        .iter()
        .filter(|(name, agent)| {
            agent.role != NodeRole::Unspecified && !named.contains(name.as_str())
        })
        .map(|(name, agent)| Node {
            name: name.clone(),
            role: agent.role as i32,
            ..Default::default()
        })
        .collect();
    let extended;
    let topology = if missing.is_empty() {
        topology
    } else {
        let mut t = topology.clone();
        t.nodes.extend(missing);
        extended = t;
        &extended
    };
    f(plan::Input {
        topology,
        revision,
        epoch: state.epoch,
        readiness: &state.readiness,
        holds: &holds,
        previous: &previous,
    })
}

fn vrrp_transitions(node: &str, old: Option<&AgentStatus>, new: &AgentStatus) -> Vec<Event> {
    new.vrrp
        .iter()
        .filter_map(|inst| {
            let before = old
                .and_then(|o| o.vrrp.iter().find(|i| i.name == inst.name))
                .map(|i| i.state)
                .unwrap_or_default();
            (before != inst.state).then(|| {
                event(
                    node,
                    event::Kind::Vrrp(VrrpTransition {
                        instance: inst.name.clone(),
                        from: before,
                        to: inst.state,
                        priority: inst.effective_priority,
                        reason: "reported by the agent".to_string(),
                    }),
                )
            })
        })
        .collect()
}
