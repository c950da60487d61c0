//! Topology files in YAML (or JSON, which is YAML too) mapped onto the lb.v1
//! types through the proto3 JSON mapping: lowerCamelCase names, enums by
//! value name, durations as text. Unknown fields and wrong types are refused
//! with the path of the offending field and its line in the file.

use std::fmt;

use serde::de::DeserializeOwned;

/// A file that does not map onto the expected message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// Path of the offending field, as written in the file
    /// (`services[0].healthCheck.dns.nmae`); empty for the document itself.
    pub path: String,
    /// What was wrong.
    pub message: String,
    /// 1-based line of the offending text, when known.
    pub line: Option<usize>,
    /// 1-based column of the offending text, when known.
    pub column: Option<usize>,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, "line {line} column {column}: ")?;
        }
        if self.path.is_empty() || self.path == "." {
            write!(f, "{}", self.message)
        } else {
            write!(f, "field {}: {}", self.path, self.message)
        }
    }
}

/// Parses YAML (or JSON) text into `T` (a `Topology`, `DirectorConfig`, ...).
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, ParseError> {
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let location = inner.location();
        ParseError {
            path: if path == "." { String::new() } else { path },
            message: strip_location(&inner.to_string()),
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
        }
    })
}

/// Serializes `T` as YAML in the proto3 JSON mapping.
pub fn to_string<T: serde::Serialize>(value: &T) -> Result<String, ParseError> {
    serde_yaml_ng::to_string(value).map_err(|err| ParseError {
        path: String::new(),
        message: err.to_string(),
        line: None,
        column: None,
    })
}

/// serde_yaml_ng appends " at line L column C" to messages; we report the
/// location separately.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(idx) => message[..idx].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Forwarding, Protocol, Topology, health_check};

    /// Seed 000 (DNS over LVS-DR), from `examples/`.
    const SEED_000: &str = include_str!("../../examples/seed-000-dns-dr.yaml");

    #[test]
    fn reads_the_design_example() {
        let t: Topology = from_str(SEED_000).expect("parses");
        assert_eq!(t.nodes.len(), 4);
        let svc = &t.services[0];
        assert_eq!(svc.protocol(), Protocol::Udp);
        assert_eq!(svc.forwarding(), Forwarding::Dr);
        let hc = svc.health_check.as_ref().unwrap();
        assert_eq!(hc.interval.unwrap().seconds, 6);
        assert_eq!(hc.timeout.unwrap().seconds, 1);
        match hc.kind.as_ref().unwrap() {
            health_check::Kind::Dns(dns) => assert_eq!(dns.name, "www.abc.local"),
            other => panic!("wrong kind {other:?}"),
        }
        let instance = &t.director_groups[0].vrrp.as_ref().unwrap().instances[0];
        assert_eq!(instance.priorities["ds1"], 100);
        assert_eq!(svc.real_servers[0].weight, Some(1));
    }

    #[test]
    fn unknown_field_names_its_path() {
        let text = SEED_000.replace("dns: {name: www", "dns: {nmae: www");
        let err = from_str::<Topology>(&text).unwrap_err();
        assert!(err.path.starts_with("services[0].healthCheck.dns"), "{err}");
        assert!(err.message.contains("nmae"), "{err}");
        assert!(err.line.is_some(), "{err}");
    }

    #[test]
    fn wrong_type_names_its_path() {
        let text = SEED_000.replace("port: 53\n", "port: fifty-three\n");
        let err = from_str::<Topology>(&text).unwrap_err();
        assert_eq!(err.path, "services[0].port", "{err}");
    }

    #[test]
    fn bad_enum_and_duration_name_their_paths() {
        let err =
            from_str::<Topology>(&SEED_000.replace("protocol: udp", "protocol: udpp")).unwrap_err();
        assert_eq!(err.path, "services[0].protocol", "{err}");
        let err = from_str::<Topology>(&SEED_000.replace("interval: 6s", "interval: 6 parsecs"))
            .unwrap_err();
        assert_eq!(err.path, "services[0].healthCheck.interval", "{err}");
        assert!(err.to_string().contains("not a duration"), "{err}");
    }

    #[test]
    fn round_trips_through_yaml() {
        let t: Topology = from_str(SEED_000).unwrap();
        let text = to_string(&t).unwrap();
        let back: Topology = from_str(&text).unwrap();
        assert_eq!(t, back);
    }
}
