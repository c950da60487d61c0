//! The frames of a capture that [`Host::tcpdump`](crate::Host::tcpdump)
//! wrote.

use std::path::Path;
use std::time::Duration;

use pcap_file::PcapError;
use pcap_file::pcap::PcapReader;

use crate::{LabError, Result};

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// When it was captured, since the Unix epoch.
    pub time: Duration,
    /// Its bytes as captured, from the link-layer header on.
    pub data: Vec<u8>,
}

/// The frames of the pcap file at `path`, in capture order. A last frame
/// cut short (the capture was still being written) is left out.
pub fn frames(path: &Path) -> Result<Vec<Frame>> {
    let err = |e: PcapError| LabError::Io {
        what: format!("reading the capture {}", path.display()),
        source: std::io::Error::other(e),
    };
    let file = std::fs::File::open(path).map_err(|source| LabError::Io {
        what: format!("opening the capture {}", path.display()),
        source,
    })?;
    let mut reader = PcapReader::new(file).map_err(err)?;
    let mut out = Vec::new();
    while let Some(packet) = reader.next_packet() {
        match packet {
            Ok(p) => out.push(Frame {
                time: p.timestamp,
                data: p.data.into_owned(),
            }),
            Err(PcapError::IncompleteBuffer) => break,
            Err(e) => return Err(err(e)),
        }
    }
    Ok(out)
}
