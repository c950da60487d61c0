//! The pure diff from a desired IPVS table and the kernel's current one to
//! the ordered, minimal list of operations that makes the kernel equal the
//! desired table on the services lb owns.
//!
//! Rules:
//! - a service is *owned* when it is desired now or was owned before (the
//!   caller persists the owned set, see [`super::ownership`]); an owned
//!   service that is no longer desired is deleted; a service that is neither
//!   desired nor owned is *foreign*: left alone and reported;
//! - a desired service that exists but was not owned is *adopted* and
//!   reported;
//! - a key change (address, port, protocol, mark, family) is a delete and
//!   an add; any other service change is one `SetService`; any destination
//!   change that keeps its address and port is one `SetDest` (the kernel
//!   updates forwarding method, weight, thresholds and tunnel options in
//!   place);
//! - order: destination deletes, service deletes, service adds and sets,
//!   destination adds and sets; within each group, by key.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{DestKey, Destination, Service, ServiceKey};

/// A service with its destinations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    /// The service.
    pub service: Service,
    /// Its destinations by address and port.
    pub dests: BTreeMap<DestKey, Destination>,
}

/// A whole IPVS table: every service by key.
pub type Table = BTreeMap<ServiceKey, ServiceState>;

/// One change to the kernel's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpvsOp {
    /// Add a service.
    AddService(Service),
    /// Change a service's options in place.
    SetService(Service),
    /// Delete a service and its destinations.
    DelService(ServiceKey),
    /// Add a destination to a service.
    AddDest(ServiceKey, Destination),
    /// Change a destination in place.
    SetDest(ServiceKey, Destination),
    /// Delete a destination.
    DelDest(ServiceKey, DestKey),
}

impl IpvsOp {
    /// The service the operation is about.
    pub fn service(&self) -> ServiceKey {
        match self {
            IpvsOp::AddService(s) | IpvsOp::SetService(s) => s.key,
            IpvsOp::DelService(k)
            | IpvsOp::AddDest(k, _)
            | IpvsOp::SetDest(k, _)
            | IpvsOp::DelDest(k, _) => *k,
        }
    }
}

/// What to do, and what was seen.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The operations, in the order to apply them.
    pub ops: Vec<IpvsOp>,
    /// Services in the kernel that lb neither wants nor owns: untouched.
    pub foreign: Vec<ServiceKey>,
    /// Desired services that already existed without being owned: lb
    /// manages them from now on.
    pub adopted: Vec<ServiceKey>,
}

/// The operations that take `current` to `desired` on the owned services.
pub fn plan(desired: &Table, current: &Table, owned: &BTreeSet<ServiceKey>) -> Plan {
    let mut del_dests = Vec::new();
    let mut del_services = Vec::new();
    let mut services = Vec::new();
    let mut dests = Vec::new();
    let mut out = Plan::default();

    for key in current.keys() {
        if desired.contains_key(key) {
            continue;
        }
        if owned.contains(key) {
            del_services.push(IpvsOp::DelService(*key));
        } else {
            out.foreign.push(*key);
        }
    }

    for (key, want) in desired {
        match current.get(key) {
            None => {
                services.push(IpvsOp::AddService(want.service.clone()));
                for d in want.dests.values() {
                    dests.push(IpvsOp::AddDest(*key, *d));
                }
            }
            Some(cur) => {
                if !owned.contains(key) {
                    out.adopted.push(*key);
                }
                if cur.service != want.service {
                    services.push(IpvsOp::SetService(want.service.clone()));
                }
                for dkey in cur.dests.keys() {
                    if !want.dests.contains_key(dkey) {
                        del_dests.push(IpvsOp::DelDest(*key, *dkey));
                    }
                }
                for (dkey, d) in &want.dests {
                    match cur.dests.get(dkey) {
                        None => dests.push(IpvsOp::AddDest(*key, *d)),
                        Some(c) if c != d => dests.push(IpvsOp::SetDest(*key, *d)),
                        Some(_) => {}
                    }
                }
            }
        }
    }

    out.ops = del_dests;
    out.ops.extend(del_services);
    out.ops.extend(services);
    out.ops.extend(dests);
    out
}

/// The owned set after a plan is applied: every desired service.
pub fn owned_after(desired: &Table) -> BTreeSet<ServiceKey> {
    desired.keys().copied().collect()
}

/// The owned set to persist *before* applying: what was owned and what is
/// about to be created, so a crash in the middle leaks no ownership.
pub fn owned_during(desired: &Table, owned: &BTreeSet<ServiceKey>) -> BTreeSet<ServiceKey> {
    owned
        .iter()
        .copied()
        .chain(desired.keys().copied())
        .collect()
}

/// Apply operations to a table the way the kernel applies them to its own;
/// what "already exists" or "not found" the kernel would report is
/// ignored, as the client treats it as convergence.
pub fn apply(table: &mut Table, ops: &[IpvsOp]) {
    for op in ops {
        match op {
            IpvsOp::AddService(s) => {
                table.entry(s.key).or_insert_with(|| ServiceState {
                    service: s.clone(),
                    dests: BTreeMap::new(),
                });
            }
            IpvsOp::SetService(s) => {
                if let Some(st) = table.get_mut(&s.key) {
                    st.service = s.clone();
                }
            }
            IpvsOp::DelService(k) => {
                table.remove(k);
            }
            IpvsOp::AddDest(k, d) => {
                if let Some(st) = table.get_mut(k) {
                    st.dests.entry(d.key).or_insert(*d);
                }
            }
            IpvsOp::SetDest(k, d) => {
                if let Some(cur) = table.get_mut(k).and_then(|st| st.dests.get_mut(&d.key)) {
                    *cur = *d;
                }
            }
            IpvsOp::DelDest(k, dk) => {
                if let Some(st) = table.get_mut(k) {
                    st.dests.remove(dk);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
