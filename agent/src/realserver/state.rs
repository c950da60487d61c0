//! Files the real-server agent keeps in its state directory: the ledger of
//! changed values (so a restarted agent still knows the originals) and the
//! last status it reported.
//!
//! Every write goes to a temporary file in the same directory, is synced, and
//! is renamed over the old file, so a crash leaves either the old or the new
//! content, never half of one.

use std::path::{Path, PathBuf};

use lb_proto::v1::AgentStatus;

use super::plan::Ledger;

/// File name of the ledger.
pub const LEDGER_FILE: &str = "realserver-ledger.json";
/// File name of the last status.
pub const STATUS_FILE: &str = "realserver-status.json";

/// A state file that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The ledger is not what this agent writes; it is left alone so that no
    /// original value is lost: move it away after restoring by hand.
    #[error("{path}: not a ledger this agent can read ({source}); move it away to start afresh")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Uses (and creates when needed) `dir`.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    /// The ledger file's path.
    pub fn ledger_path(&self) -> PathBuf {
        self.dir.join(LEDGER_FILE)
    }

    /// The status file's path.
    pub fn status_path(&self) -> PathBuf {
        self.dir.join(STATUS_FILE)
    }

    /// The ledger left by a previous run, or an empty one.
    pub fn load_ledger(&self) -> Result<Ledger, StateError> {
        let path = self.ledger_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| StateError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ledger::default()),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// Persists the ledger; an empty ledger removes the file.
    pub fn save_ledger(&self, ledger: &Ledger) -> Result<(), StateError> {
        let path = self.ledger_path();
        if ledger.is_empty() {
            return match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(StateError::Io { path, source }),
            };
        }
        let bytes = serde_json::to_vec_pretty(ledger).expect("a ledger always serializes");
        write_atomic(&path, &bytes)
    }

    /// Writes the status (proto3 JSON mapping).
    pub fn save_status(&self, status: &AgentStatus) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(status).expect("a status always serializes");
        write_atomic(&self.status_path(), &bytes)
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    crate::store::write_atomic(path, bytes, true).map_err(|source| StateError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netif::sysctl::SysctlKey;

    #[test]
    fn ledger_survives_a_restart_and_an_empty_one_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("lb")).unwrap();
        assert_eq!(state.load_ledger().unwrap(), Ledger::default());
        let mut ledger = Ledger::default();
        ledger
            .sysctls
            .insert(SysctlKey::ipv4("all", "arp_ignore"), "0".into());
        ledger.created_tunnels.insert("tunl0".into());
        state.save_ledger(&ledger).unwrap();
        assert_eq!(
            StateDir::open(&dir.path().join("lb"))
                .unwrap()
                .load_ledger()
                .unwrap(),
            ledger
        );
        state.save_ledger(&Ledger::default()).unwrap();
        assert!(!state.ledger_path().exists());
    }

    #[test]
    fn a_corrupt_ledger_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        std::fs::write(state.ledger_path(), b"{not json").unwrap();
        assert!(matches!(
            state.load_ledger(),
            Err(StateError::Corrupt { .. })
        ));
    }
}
