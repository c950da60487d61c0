//! Per-interface IP sysctls (`/proc/sys/net/ipv4/conf/DEV/NAME`) of the
//! caller's network namespace: read and write, named by a typed key.

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
};

/// Address family of a sysctl tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// `net/ipv4`.
    V4,
    /// `net/ipv6`.
    V6,
}

impl Family {
    fn dir(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// One per-interface sysctl, such as `net/ipv4/conf/all/arp_ignore`.
///
/// Written and parsed as that path (relative to `/proc/sys`); an interface
/// name cannot hold `/`, so the form is unambiguous.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SysctlKey {
    /// ipv4 or ipv6.
    pub family: Family,
    /// Interface name, or `all` / `default`.
    pub device: String,
    /// Setting name (`arp_ignore`, `rp_filter`, ...).
    pub name: String,
}

impl SysctlKey {
    /// `net/ipv4/conf/DEVICE/NAME`.
    pub fn ipv4(device: &str, name: &str) -> Self {
        SysctlKey {
            family: Family::V4,
            device: device.to_string(),
            name: name.to_string(),
        }
    }

    /// The file under a sysctl root (the interface name is used as it is,
    /// also with a `.` as in `eth0.100`).
    pub fn path(&self, root: &Path) -> PathBuf {
        root.join("net")
            .join(self.family.dir())
            .join("conf")
            .join(&self.device)
            .join(&self.name)
    }
}

impl fmt::Display for SysctlKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "net/{}/conf/{}/{}",
            self.family.dir(),
            self.device,
            self.name
        )
    }
}

/// A string that is not `net/ipv{4,6}/conf/DEV/NAME`.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a sysctl key of the form net/ipv4/conf/DEVICE/NAME")]
pub struct BadSysctlKey(String);

impl FromStr for SysctlKey {
    type Err = BadSysctlKey;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let [net, fam, conf, device, name] = parts.as_slice() else {
            return Err(BadSysctlKey(s.to_string()));
        };
        let family = match *fam {
            "ipv4" => Family::V4,
            "ipv6" => Family::V6,
            _ => return Err(BadSysctlKey(s.to_string())),
        };
        if *net != "net" || *conf != "conf" || device.is_empty() || name.is_empty() {
            return Err(BadSysctlKey(s.to_string()));
        }
        Ok(SysctlKey {
            family,
            device: device.to_string(),
            name: name.to_string(),
        })
    }
}

impl serde::Serialize for SysctlKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SysctlKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A sysctl that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// Reading failed (ENOENT: the interface does not exist).
    #[error("cannot read {key}: {source}")]
    Read {
        /// The sysctl.
        key: SysctlKey,
        /// Why.
        source: std::io::Error,
    },
    /// Writing failed (EACCES/EROFS: /proc/sys is read-only here).
    #[error("cannot write {key} = {value}: {source}")]
    Write {
        /// The sysctl.
        key: SysctlKey,
        /// The value.
        value: String,
        /// Why.
        source: std::io::Error,
    },
}

impl SysctlError {
    /// The sysctl's interface does not exist.
    pub fn is_not_found(&self) -> bool {
        let source = match self {
            SysctlError::Read { source, .. } | SysctlError::Write { source, .. } => source,
        };
        source.kind() == std::io::ErrorKind::NotFound
    }
}

/// The sysctl tree of the current network namespace (`/proc/sys`), or another
/// root for tests.
#[derive(Debug, Clone)]
pub struct Sysctls {
    root: PathBuf,
}

impl Default for Sysctls {
    fn default() -> Self {
        Sysctls {
            root: PathBuf::from("/proc/sys"),
        }
    }
}

impl Sysctls {
    /// A tree rooted elsewhere than `/proc/sys`.
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Sysctls { root: root.into() }
    }

    /// The value, trimmed.
    pub fn read(&self, key: &SysctlKey) -> Result<String, SysctlError> {
        std::fs::read_to_string(key.path(&self.root))
            .map(|v| v.trim().to_string())
            .map_err(|source| SysctlError::Read {
                key: key.clone(),
                source,
            })
    }

    /// Writes `value`.
    pub fn write(&self, key: &SysctlKey, value: &str) -> Result<(), SysctlError> {
        std::fs::write(key.path(&self.root), value).map_err(|source| SysctlError::Write {
            key: key.clone(),
            value: value.to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_through_its_path_form() {
        let key = SysctlKey::ipv4("eth0.100", "arp_ignore");
        assert_eq!(key.to_string(), "net/ipv4/conf/eth0.100/arp_ignore");
        assert_eq!(key.to_string().parse::<SysctlKey>().unwrap(), key);
        assert!("net/ipv4/eth0/arp_ignore".parse::<SysctlKey>().is_err());
        assert!("net/ipx/conf/eth0/arp_ignore".parse::<SysctlKey>().is_err());
    }

    #[test]
    fn reads_trimmed_and_writes_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let key = SysctlKey::ipv4("all", "rp_filter");
        std::fs::create_dir_all(key.path(dir.path()).parent().unwrap()).unwrap();
        std::fs::write(key.path(dir.path()), "1\n").unwrap();
        let s = Sysctls::with_root(dir.path());
        assert_eq!(s.read(&key).unwrap(), "1");
        s.write(&key, "0").unwrap();
        assert_eq!(s.read(&key).unwrap(), "0");
        let missing = SysctlKey::ipv4("nope0", "rp_filter");
        assert!(s.read(&missing).unwrap_err().is_not_found());
    }
}
