//! Agent configuration files: a `DirectorConfig` (which a whole topology file
//! also is) or a `RealServerConfig`, read from YAML and checked before use.

use std::path::{Path, PathBuf};

use lb_proto::v1::{DirectorConfig, RealServerConfig};

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not map onto the configuration message.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and why.
        source: lb_proto::yaml::ParseError,
    },
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a director configuration (or a whole topology) from a YAML file.
pub fn load_director(path: &Path) -> Result<DirectorConfig, ConfigError> {
    lb_proto::yaml::from_str(&read(path)?).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a real-server configuration from a YAML file.
pub fn load_realserver(path: &Path) -> Result<RealServerConfig, ConfigError> {
    lb_proto::yaml::from_str(&read(path)?).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })
}
