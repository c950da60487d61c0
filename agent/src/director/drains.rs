//! Drains asked over the API, kept in the state directory: a real server an
//! operator took out stays out when the agent restarts, and one whose
//! connections were gone is not put back in the kernel at weight 0 by the
//! restart. Written with the last good configuration's envelope (checksum,
//! temporary file, fsync, rename): a corrupt file is refused whole.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::ipvs::DestKey;

/// The file in the state directory.
pub const FILE: &str = "director-drains.json";

/// One drained real server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DrainRecord {
    /// The service's name.
    pub service: String,
    /// The real server's destination.
    pub real_server: SocketAddr,
    /// When it leaves the table even with connections (Unix time, ms).
    pub deadline_unix_ms: Option<u64>,
    /// Already out of the table (its connections were gone).
    pub removed: bool,
}

/// Drains by (service, destination), with their deadlines.
pub type Drained = BTreeMap<(String, DestKey), Option<Instant>>;
/// Drained real servers already out of the table.
pub type Removed = BTreeSet<(String, DestKey)>;

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The records of the drains, deadlines turned from `now` to wall time at
/// `wall`.
pub fn records(
    drained: &Drained,
    removed: &Removed,
    now: Instant,
    wall: SystemTime,
) -> Vec<DrainRecord> {
    drained
        .iter()
        .map(|((service, dest), until)| DrainRecord {
            service: service.clone(),
            real_server: SocketAddr::new(dest.addr, dest.port),
            deadline_unix_ms: until
                .map(|u| unix_ms(wall) + u.saturating_duration_since(now).as_millis() as u64),
            removed: removed.contains(&(service.clone(), *dest)),
        })
        .collect()
}

/// The drains of `records`, deadlines turned from wall time at `wall` to
/// `now` (one already passed is due at once).
pub fn restore(records: &[DrainRecord], now: Instant, wall: SystemTime) -> (Drained, Removed) {
    let wall_ms = unix_ms(wall);
    let mut drained = Drained::new();
    let mut removed = Removed::new();
    for r in records {
        let key = (
            r.service.clone(),
            DestKey {
                addr: r.real_server.ip(),
                port: r.real_server.port(),
            },
        );
        let until = r
            .deadline_unix_ms
            .map(|d| now + Duration::from_millis(d.saturating_sub(wall_ms)));
        if r.removed {
            removed.insert(key.clone());
        }
        drained.insert(key, until);
    }
    (drained, removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ConfigStore, Stored};

    fn key(service: &str, addr: &str) -> (String, DestKey) {
        let a: SocketAddr = addr.parse().unwrap();
        (
            service.into(),
            DestKey {
                addr: a.ip(),
                port: a.port(),
            },
        )
    }

    fn save(store: &ConfigStore<Vec<DrainRecord>>, config: Vec<DrainRecord>) {
        store
            .save(&Stored {
                revision: 0,
                epoch: 0,
                config,
            })
            .unwrap();
    }

    // In: two drains, one with a deadline 30 s away and not yet out, one
    // without a deadline already out of the table; stored, loaded 10 s of
    // wall time later. Out: the same drains, the deadline 20 s from the new
    // now (to the millisecond), the removed one still removed; a deadline
    // passed while the agent was down is due at once.
    #[test]
    fn drains_survive_a_restart_with_their_deadlines() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::<Vec<DrainRecord>>::new(dir.path().join(FILE));
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut drained = Drained::new();
        drained.insert(
            key("web", "10.0.0.11:80"),
            Some(now + Duration::from_secs(30)),
        );
        drained.insert(key("dns", "[fd00::12]:53"), None);
        let removed: Removed = [key("dns", "[fd00::12]:53")].into();
        save(&store, records(&drained, &removed, now, wall));

        let loaded = store.load().unwrap().unwrap().config;
        let later = Instant::now();
        let (d, r) = restore(&loaded, later, wall + Duration::from_secs(10));
        assert_eq!(r, removed);
        assert_eq!(d.len(), 2);
        assert_eq!(d[&key("dns", "[fd00::12]:53")], None);
        let until = d[&key("web", "10.0.0.11:80")].unwrap();
        assert_eq!(until.duration_since(later).as_millis(), 20_000);

        let (d, _) = restore(&loaded, later, wall + Duration::from_secs(60));
        assert_eq!(d[&key("web", "10.0.0.11:80")], Some(later));
    }

    // In: a stored drains file with one byte of a record changed. Out: load
    // refuses it (checksum), so no part of it is used.
    #[test]
    fn a_changed_drains_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let store = ConfigStore::<Vec<DrainRecord>>::new(&path);
        let mut drained = Drained::new();
        drained.insert(key("web", "10.0.0.11:80"), None);
        save(
            &store,
            records(&drained, &Removed::new(), Instant::now(), SystemTime::now()),
        );
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("10.0.0.11", "10.0.0.12")).unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
    }
}
