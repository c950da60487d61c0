//! VRRP v2/v3 (RFC 3768, RFC 5798): codec, state machine, driver.
//!
//! ```text
//!  config::plan(DirectorConfig, node) ──► Planned instances
//!        │
//!        ▼ run()
//!  track::spawn(tracked) ── watch<Tracking> ──► instance task (one per instance)
//!  track::sync_group, sync_relay ◄── reports ──┤ (sync groups: FAULT; MASTER, BACKUP)
//!                                                 │  packet (codec), fsm (pure)
//!                                                 │  socket (raw IP 112), vips, netif::garp
//!                                                 ▼
//!                               broadcast<Transition> (event stream), notify hooks
//! ```

pub mod config;
pub mod fsm;
pub mod instance;
pub mod packet;
pub mod socket;
pub mod status;
pub mod timer;
pub mod track;
pub mod vips;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use config::Planned;
use instance::{InstanceError, InstanceHandle, Transition};
use track::{Source, Tracked};
use vips::VipBackend;

/// Runs `planned` instances until `shutdown_rx` turns true, then stops them
/// all (priority 0, VIPs removed) and returns. `sync_groups` lists members
/// (indexes into `planned`) that share FAULT, MASTER and BACKUP; `quorum` maps service names to
/// the hook of their quorum (true: the service has quorum).
pub async fn run(
    planned: Vec<Planned>,
    sync_groups: &[Vec<usize>],
    backend: Arc<dyn VipBackend>,
    quorum: &HashMap<String, watch::Receiver<bool>>,
    events_tx: broadcast::Sender<Transition>,
    shutdown_rx: watch::Receiver<bool>,
) -> Result<(), InstanceError> {
    let handles = start(
        planned,
        sync_groups,
        backend,
        quorum,
        events_tx,
        shutdown_rx,
    );
    let mut first_err = None;
    for h in handles {
        match h.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "instance failed");
                first_err.get_or_insert(e);
            }
            Err(e) => tracing::error!(error = %e, "instance task panicked"),
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Starts `planned` instances with their tracking and returns their handles.
pub fn start(
    planned: Vec<Planned>,
    sync_groups: &[Vec<usize>],
    backend: Arc<dyn VipBackend>,
    quorum: &HashMap<String, watch::Receiver<bool>>,
    events_tx: broadcast::Sender<Transition>,
    shutdown_rx: watch::Receiver<bool>,
) -> Vec<InstanceHandle> {
    // Each instance's own tracking first.
    let mut tracking: Vec<Option<watch::Receiver<track::Tracking>>> = planned
        .iter()
        .map(|p| {
            let mut tracked = p.tracked.clone();
            for (service, weight) in &p.track_services {
                match quorum.get(service) {
                    Some(rx) => tracked.push(Tracked {
                        source: Source::Hook {
                            name: service.clone(),
                            rx: rx.clone(),
                        },
                        weight: *weight,
                    }),
                    None => tracing::warn!(
                        instance = %p.instance.name,
                        service = %service,
                        "tracked service has no quorum hook; ignored"
                    ),
                }
            }
            Some(track::spawn(tracked))
        })
        .collect();
    // Then sync groups join the members' FAULT, and relay MASTER and BACKUP.
    let mut links: Vec<Option<track::SyncLink>> = planned.iter().map(|_| None).collect();
    for members in sync_groups {
        let own: Vec<_> = members
            .iter()
            .filter_map(|i| tracking.get(*i).cloned().flatten())
            .collect();
        if own.len() != members.len() {
            tracing::warn!(
                ?members,
                "sync group with an instance listed twice or unknown; ignored"
            );
            continue;
        }
        if members.iter().any(|i| links[*i].is_some()) {
            tracing::warn!(
                ?members,
                "instance in two sync groups; MASTER and BACKUP follow the first only"
            );
        } else {
            for (i, link) in members.iter().zip(track::sync_relay(members.len())) {
                links[*i] = Some(link);
            }
        }
        for (i, rx) in members.iter().zip(track::sync_group(own)) {
            tracking[*i] = Some(rx);
        }
    }
    planned
        .into_iter()
        .zip(tracking)
        .zip(links)
        .filter_map(|((p, rx), link)| {
            Some(instance::spawn(
                p.instance,
                backend.clone(),
                rx?,
                link,
                events_tx.clone(),
                shutdown_rx.clone(),
            ))
        })
        .collect()
}
