//! The lb.v1 view of VRRP: transitions as `Event`s for the event streams,
//! instances as `VrrpInstanceStatus` for status reports.

use std::time::SystemTime;

use lb_proto::v1::{Event, VrrpInstanceStatus, VrrpState, VrrpTransition, event};

use super::fsm::State;
use super::instance::{DropCounters, InstanceConfig, Status, Transition};

/// The lb.v1 state.
pub fn vrrp_state(s: State) -> VrrpState {
    match s {
        State::Initialize => VrrpState::Initialize,
        State::Backup => VrrpState::Backup,
        State::Master => VrrpState::Master,
        State::Fault => VrrpState::Fault,
    }
}

/// A transition as an lb.v1 event of node `node` at `time`.
pub fn transition_event(t: &Transition, node: &str, time: SystemTime) -> Event {
    Event {
        time: Some(lb_proto::timestamp(time)),
        node: node.to_string(),
        kind: Some(event::Kind::Vrrp(VrrpTransition {
            instance: t.instance.clone(),
            from: vrrp_state(t.from) as i32,
            to: vrrp_state(t.to) as i32,
            priority: u32::from(t.priority),
            reason: t.reason.to_string(),
        })),
    }
}

/// An instance's status report.
pub fn instance_status(
    cfg: &InstanceConfig,
    status: &Status,
    drops: &DropCounters,
) -> VrrpInstanceStatus {
    VrrpInstanceStatus {
        name: cfg.name.clone(),
        vrid: u32::from(cfg.vrid),
        interface: cfg.interface.clone(),
        state: vrrp_state(status.state) as i32,
        base_priority: u32::from(cfg.priority),
        effective_priority: u32::from(status.priority),
        master_address: status.master.map(|a| a.to_string()).unwrap_or_default(),
        advert_interval: Some(lb_proto::duration::Duration::from_std(status.adver_int)),
        since: Some(lb_proto::timestamp(status.since)),
        transitions: status.transitions,
        drops: drops
            .snapshot()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        vips: cfg.vips.iter().map(|v| v.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_maps_to_the_api_event() {
        let t = Transition {
            instance: "VI_1".into(),
            vrid: 50,
            from: State::Backup,
            to: State::Master,
            priority: 100,
            reason: "master down timer",
        };
        let e = transition_event(&t, "ds1", SystemTime::UNIX_EPOCH);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["node"], "ds1");
        assert_eq!(json["vrrp"]["instance"], "VI_1");
        assert_eq!(json["vrrp"]["from"], "VRRP_STATE_BACKUP");
        assert_eq!(json["vrrp"]["to"], "VRRP_STATE_MASTER");
        assert_eq!(json["vrrp"]["priority"], 100);
    }
}
