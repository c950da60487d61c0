//! The services lb owns, kept on disk so that ownership survives a restart.
//!
//! Without it, a restarted agent could not tell a service it created and no
//! longer wants (delete it) from one an operator created by hand (leave it).
//! The file is JSON, replaced atomically (write, fsync, rename).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::model::ServiceKey;

/// The file name in the agent's state directory.
pub const FILE_NAME: &str = "ipvs-owned.json";

/// Reading or writing the owned set failed.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not an owned set.
    #[error("{path}: not a list of IPVS services: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnedFile {
    version: u32,
    services: BTreeSet<ServiceKey>,
}

/// The owned set in a state directory. The file is read once; after that
/// (one agent per state directory) what was read or stored last is kept in
/// memory and shared by clones.
#[derive(Debug, Clone)]
pub struct OwnedServices {
    path: PathBuf,
    cached: Arc<Mutex<Option<BTreeSet<ServiceKey>>>>,
}

impl OwnedServices {
    /// The owned set kept in `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        OwnedServices {
            path: state_dir.join(FILE_NAME),
            cached: Arc::default(),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Option<BTreeSet<ServiceKey>>> {
        self.cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The owned services; none when the file does not exist yet.
    pub fn load(&self) -> Result<BTreeSet<ServiceKey>, OwnershipError> {
        if let Some(services) = self.cache().as_ref() {
            return Ok(services.clone());
        }
        let services = self.read()?;
        *self.cache() = Some(services.clone());
        Ok(services)
    }

    fn read(&self) -> Result<BTreeSet<ServiceKey>, OwnershipError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
            Err(source) => {
                return Err(OwnershipError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let file: OwnedFile =
            serde_json::from_slice(&bytes).map_err(|source| OwnershipError::Parse {
                path: self.path.clone(),
                source,
            })?;
        Ok(file.services)
    }

    /// Replace the owned set.
    pub fn store(&self, services: &BTreeSet<ServiceKey>) -> Result<(), OwnershipError> {
        let io = |source| OwnershipError::Io {
            path: self.path.clone(),
            source,
        };
        let body = serde_json::to_vec_pretty(&OwnedFile {
            version: 1,
            services: services.clone(),
        })
        .map_err(|source| OwnershipError::Parse {
            path: self.path.clone(),
            source,
        })?;
        crate::store::write_atomic(&self.path, &body, true).map_err(io)?;
        *self.cache() = Some(services.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv6Addr};

    use super::*;
    use crate::ipvs::model::{Family, Protocol};

    /// What is stored is what a new instance (a restarted agent) loads.
    #[test]
    fn survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let owned = OwnedServices::new(dir.path());
        assert!(owned.load().unwrap().is_empty());
        let set: BTreeSet<ServiceKey> = [
            ServiceKey::Addr {
                protocol: Protocol::Sctp,
                addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                port: 9,
            },
            ServiceKey::Fwmark {
                family: Family::Inet,
                mark: 4,
            },
        ]
        .into();
        owned.store(&set).unwrap();
        assert_eq!(OwnedServices::new(dir.path()).load().unwrap(), set);
        std::fs::write(dir.path().join(FILE_NAME), b"{\"version\":1}").unwrap();
        // A restarted agent finds the file corrupt; the running one keeps
        // what it stored last.
        assert!(matches!(
            OwnedServices::new(dir.path()).load(),
            Err(OwnershipError::Parse { .. })
        ));
        assert_eq!(owned.load().unwrap(), set);
    }
}
