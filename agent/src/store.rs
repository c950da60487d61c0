//! The last good configuration on disk, so an agent that restarts while the
//! controller is out of reach (or its own file has been broken by hand) runs
//! what it last ran: fail-static.
//!
//! The file is a small JSON envelope around the configuration's proto3 JSON
//! form, with the revision and epoch it was applied at and a SHA-256 of the
//! configuration text:
//!
//! ```text
//! {"format": 1, "revision": 7, "epoch": 2, "sha256": "9f86…", "config": "{\"node\":\"ds1\",…}"}
//! ```
//!
//! Writes go to a temporary file in the same directory, which is synced and
//! renamed over the old one, and the directory is synced: a crash leaves the
//! old file or the new one, never half of one. A file whose checksum, format
//! or content does not hold is refused as a whole, never half-applied.

use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

/// Replaces `path` with `bytes` through a temporary file in the same
/// directory and a rename, so a reader sees the old content or the new, never
/// half. `durable` also syncs the file before the rename and the directory
/// after it, so the new content survives a crash; reports rewritten often
/// and not needed after one pass `false`.
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
    }
    std::fs::rename(&tmp, path)?;
    if durable {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Version of the envelope this agent writes and reads.
pub const FORMAT: u32 = 1;

/// A stored configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not an envelope this agent writes.
    #[error("{path}: not a stored configuration ({reason}); move it away to start without it")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The configuration does not match its checksum.
    #[error(
        "{path}: checksum mismatch (stored {stored}, computed {computed}): the file was changed or truncated; it is refused"
    )]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Checksum in the file.
        stored: String,
        /// Checksum of the configuration text.
        computed: String,
    },
}

/// A configuration with the revision and epoch it was applied at.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored<T> {
    /// Revision (0 for a standalone file that never had one).
    pub revision: u64,
    /// Controller epoch (0 standalone).
    pub epoch: u64,
    /// The configuration.
    pub config: T,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    format: u32,
    revision: u64,
    epoch: u64,
    sha256: String,
    config: String,
}

/// The last good configuration of one kind, in one file.
#[derive(Debug, Clone)]
pub struct ConfigStore<T> {
    path: PathBuf,
    _kind: PhantomData<fn() -> T>,
}

fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl<T: Serialize + DeserializeOwned> ConfigStore<T> {
    /// The store at `path` (nothing is read yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ConfigStore {
            path: path.into(),
            _kind: PhantomData,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// The stored configuration, `None` when there is no file.
    pub fn load(&self) -> Result<Option<Stored<T>>, StoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        let env: Envelope =
            serde_json::from_slice(&bytes).map_err(|e| self.corrupt(e.to_string()))?;
        if env.format != FORMAT {
            return Err(self.corrupt(format!(
                "format {} is not {FORMAT}, the one this agent reads",
                env.format
            )));
        }
        let computed = digest(&env.config);
        if computed != env.sha256 {
            return Err(StoreError::Checksum {
                path: self.path.clone(),
                stored: env.sha256,
                computed,
            });
        }
        let config = serde_json::from_str(&env.config)
            .map_err(|e| self.corrupt(format!("configuration: {e}")))?;
        Ok(Some(Stored {
            revision: env.revision,
            epoch: env.epoch,
            config,
        }))
    }

    /// Replaces the stored configuration atomically.
    pub fn save(&self, stored: &Stored<T>) -> Result<(), StoreError> {
        let config =
            serde_json::to_string(&stored.config).map_err(|e| self.io(std::io::Error::other(e)))?;
        let env = Envelope {
            format: FORMAT,
            revision: stored.revision,
            epoch: stored.epoch,
            sha256: digest(&config),
            config,
        };
        let bytes = serde_json::to_vec(&env).map_err(|e| self.io(std::io::Error::other(e)))?;
        write_atomic(&self.path, &bytes, true).map_err(|e| self.io(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use lb_proto::v1::DirectorConfig;

    use super::*;

    fn sample() -> Stored<DirectorConfig> {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/seed-000-dns-dr.yaml"
        ))
        .unwrap();
        Stored {
            revision: 7,
            epoch: 2,
            config: lb_proto::yaml::from_str(&text).unwrap(),
        }
    }

    /// In: a saved seed-000 configuration. Out: the same revision, epoch and
    /// configuration read back; no temporary file left.
    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::new(dir.path().join("last-good.json"));
        assert!(store.load().unwrap().is_none());
        store.save(&sample()).unwrap();
        assert_eq!(store.load().unwrap(), Some(sample()));
        assert!(!dir.path().join("last-good.tmp").exists());
    }

    /// In: a stored file whose configuration text was edited (one weight).
    /// Out: refused with a checksum error naming the file.
    #[test]
    fn edited_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::<DirectorConfig>::new(dir.path().join("last-good.json"));
        store.save(&sample()).unwrap();
        let text = std::fs::read_to_string(store.path()).unwrap();
        let edited = text.replacen("\\\"weight\\\":1", "\\\"weight\\\":9", 1);
        assert_ne!(text, edited, "the sample has a weight to edit");
        std::fs::write(store.path(), edited).unwrap();
        let err = store.load().unwrap_err();
        assert!(matches!(err, StoreError::Checksum { .. }), "{err}");
        assert!(err.to_string().contains("last-good.json"), "{err}");
    }

    /// In: a truncated file, then a file of another format. Out: each refused
    /// as corrupt, with the reason.
    #[test]
    fn truncated_or_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::<DirectorConfig>::new(dir.path().join("last-good.json"));
        store.save(&sample()).unwrap();
        let text = std::fs::read_to_string(store.path()).unwrap();
        std::fs::write(store.path(), &text[..text.len() / 2]).unwrap();
        assert!(matches!(
            store.load().unwrap_err(),
            StoreError::Corrupt { .. }
        ));
        std::fs::write(
            store.path(),
            text.replacen("\"format\":1", "\"format\":9", 1),
        )
        .unwrap();
        let err = store.load().unwrap_err();
        assert!(err.to_string().contains("format 9"), "{err}");
    }
}
