//! One reconcile round against the kernel: validate, dump, plan, record
//! ownership, apply.
//!
//! Ownership is written before the kernel changes (what was owned plus what
//! is about to be created) and narrowed to the desired services after a
//! round that converged, so a crash at any point never leaves a service lb
//! created without lb knowing it owns it.

use super::client::{ApplyReport, IpvsError, IpvsSocket};
use super::model::ServiceKey;
use super::ownership::{OwnedServices, OwnershipError};
use super::reconcile::{self, Table};
use super::validate::{self, ValidationErrors};

/// Why a round did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ConvergeError {
    /// The desired table is invalid; the kernel was not touched.
    #[error("invalid IPVS configuration: {0}")]
    Invalid(#[from] ValidationErrors),
    /// The owned set could not be read or written.
    #[error(transparent)]
    Ownership(#[from] OwnershipError),
    /// The kernel could not be read or written.
    #[error(transparent)]
    Ipvs(#[from] IpvsError),
}

/// What a round did.
#[derive(Debug)]
pub struct Round {
    /// Operations planned (and sent).
    pub planned: usize,
    /// The kernel's answers.
    pub report: ApplyReport,
    /// Services left alone because lb does not own them.
    pub foreign: Vec<ServiceKey>,
    /// Services lb took over because they were desired.
    pub adopted: Vec<ServiceKey>,
}

/// Make the kernel hold `desired` on the services lb owns.
pub fn converge(
    sock: &mut IpvsSocket,
    desired: &Table,
    owned: &OwnedServices,
) -> Result<Round, ConvergeError> {
    validate::validate(desired)?;
    let before = owned.load()?;
    let current = sock.table()?;
    let plan = reconcile::plan(desired, &current, &before);
    if !plan.ops.is_empty() {
        let during = reconcile::owned_during(desired, &before);
        if during != before {
            owned.store(&during)?;
        }
    }
    let report = sock.apply(&plan.ops)?;
    if report.converged() {
        let after = reconcile::owned_after(desired);
        if after != before {
            owned.store(&after)?;
        }
    }
    Ok(Round {
        planned: plan.ops.len(),
        report,
        foreign: plan.foreign,
        adopted: plan.adopted,
    })
}
