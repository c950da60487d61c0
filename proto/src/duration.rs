//! `google.protobuf.Duration` with a friendlier text form.
//!
//! On the wire it is the well-known type, field for field. In JSON and YAML it
//! reads both the proto3 JSON form (`"1.5s"`) and human durations (`"50ms"`,
//! `"1m30s"`, `"2h"`), and it writes the proto3 JSON form, so files written by
//! lb parse with any proto3 JSON reader.

use std::fmt;

/// A signed span of time: seconds plus nanoseconds, as in `google.protobuf.Duration`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, ::prost::Message)]
pub struct Duration {
    /// Whole seconds.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds, -999,999,999..=999,999,999, with the sign of `seconds`.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// A duration that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' is not a duration (write it like 1s, 50ms, 1m30s or 1.5s)")]
pub struct ParseDurationError {
    /// The text that was given.
    pub text: String,
}

impl Duration {
    /// Zero length.
    pub const ZERO: Duration = Duration {
        seconds: 0,
        nanos: 0,
    };

    /// From a std duration (saturating at `i64::MAX` seconds).
    pub fn from_std(d: std::time::Duration) -> Self {
        Duration {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos() as i32,
        }
    }

    /// From milliseconds.
    pub fn from_millis(ms: u64) -> Self {
        Self::from_std(std::time::Duration::from_millis(ms))
    }

    /// As a std duration; `None` when negative.
    pub fn to_std(&self) -> Option<std::time::Duration> {
        if self.seconds < 0 || self.nanos < 0 {
            return None;
        }
        Some(std::time::Duration::new(
            self.seconds as u64,
            self.nanos as u32,
        ))
    }

    /// Whether the duration is zero (the proto3 default, meaning "not set").
    pub fn is_zero(&self) -> bool {
        self.seconds == 0 && self.nanos == 0
    }

    /// Parses `"1.5s"` (proto3 JSON) or a human duration (`"50ms"`, `"1m30s"`, `"-2s"`).
    pub fn parse(text: &str) -> Result<Self, ParseDurationError> {
        let err = || ParseDurationError {
            text: text.to_string(),
        };
        let trimmed = text.trim();
        let (negative, body) = match trimmed.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        if body.is_empty() {
            return Err(err());
        }
        let std = parse_proto_seconds(body)
            .or_else(|| humantime::parse_duration(body).ok())
            .ok_or_else(err)?;
        let mut d = Self::from_std(std);
        if negative {
            d.seconds = -d.seconds;
            d.nanos = -d.nanos;
        }
        Ok(d)
    }
}

/// The proto3 JSON form: decimal seconds with up to nine fractional digits and an `s`.
fn parse_proto_seconds(body: &str) -> Option<std::time::Duration> {
    let number = body.strip_suffix('s')?;
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    if !whole.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    if frac.len() > 9 {
        return None;
    }
    let secs: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    Some(std::time::Duration::new(secs, nanos))
}

impl fmt::Display for Duration {
    /// Writes the proto3 JSON form: `1s`, `0.050s`, `-1.5s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let negative = self.seconds < 0 || self.nanos < 0;
        let secs = self.seconds.unsigned_abs();
        let nanos = self.nanos.unsigned_abs();
        let sign = if negative { "-" } else { "" };
        if nanos == 0 {
            write!(f, "{sign}{secs}s")
        } else if nanos.is_multiple_of(1_000_000) {
            write!(f, "{sign}{secs}.{:03}s", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            write!(f, "{sign}{secs}.{:06}s", nanos / 1_000)
        } else {
            write!(f, "{sign}{secs}.{nanos:09}s")
        }
    }
}

impl std::str::FromStr for Duration {
    type Err = ParseDurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Duration::parse(s)
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration::from_std(d)
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 1s, 50ms, 1m30s or 1.5s")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_human_and_proto_forms() {
        let cases = [
            ("1s", 1, 0),
            ("50ms", 0, 50_000_000),
            ("10ms", 0, 10_000_000),
            ("1.5s", 1, 500_000_000),
            ("0.050s", 0, 50_000_000),
            ("1m30s", 90, 0),
            ("2h", 7200, 0),
            ("-2s", -2, 0),
            (".5s", 0, 500_000_000),
        ];
        for (text, seconds, nanos) in cases {
            assert_eq!(
                Duration::parse(text),
                Ok(Duration { seconds, nanos }),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_garbage() {
        for text in ["", "s", "1", "abc", "1.2.3s", "1.0000000001s", "-"] {
            assert!(Duration::parse(text).is_err(), "{text} parsed");
        }
    }

    #[test]
    fn displays_proto_json_form() {
        assert_eq!(Duration::from_millis(50).to_string(), "0.050s");
        assert_eq!(Duration::from_millis(1000).to_string(), "1s");
        assert_eq!(
            Duration {
                seconds: -1,
                nanos: -500_000_000
            }
            .to_string(),
            "-1.500s"
        );
        assert_eq!(
            Duration {
                seconds: 0,
                nanos: 1
            }
            .to_string(),
            "0.000000001s"
        );
    }

    proptest::proptest! {
        #[test]
        fn display_then_parse_round_trips(seconds in 0i64..1_000_000_000, nanos in 0i32..1_000_000_000) {
            let d = Duration { seconds, nanos };
            proptest::prop_assert_eq!(Duration::parse(&d.to_string()), Ok(d));
        }
    }
}
