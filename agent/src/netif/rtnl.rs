//! The rtnetlink connection every `netif` operation goes through, and the
//! errors those operations return.
//!
//! One [`Rtnl`] owns one netlink socket: its connection task runs on the tokio
//! runtime that created it. The operations live next to their concern
//! (`addresses.rs`, `links.rs`, `tunnel.rs`) as `impl Rtnl` blocks.

/// A route-netlink socket of the caller's network namespace.
#[derive(Clone)]
pub struct Rtnl {
    pub(crate) handle: rtnetlink::Handle,
}

impl std::fmt::Debug for Rtnl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rtnl")
    }
}

/// A netlink operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum NetifError {
    /// The netlink socket could not be opened.
    #[error("cannot open a route netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    /// The interface does not exist.
    #[error("interface {name} does not exist")]
    NoSuchLink {
        /// Interface name.
        name: String,
    },
    /// The kernel refused a request.
    #[error("{op} {object}: {source}")]
    Netlink {
        /// What was asked ("add address", "set link up").
        op: &'static str,
        /// What it was about ("10.0.0.1/32 on lo").
        object: String,
        /// The kernel's answer.
        source: rtnetlink::Error,
    },
}

impl NetifError {
    /// The kernel's errno (positive), when the kernel answered with one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetifError::Netlink { source, .. } => errno(source),
            _ => None,
        }
    }
}

/// The positive errno of a netlink error reply.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// What an idempotent request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The kernel changed.
    Changed,
    /// The kernel was already in the asked state (EEXIST on add, EADDRNOTAVAIL
    /// or ENODEV on delete).
    AlreadyThere,
}

impl Rtnl {
    /// Opens a route-netlink socket in the current network namespace and spawns
    /// its connection task on the current tokio runtime.
    pub fn connect() -> Result<Self, NetifError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetifError::Connect)?;
        tokio::spawn(connection);
        Ok(Rtnl { handle })
    }
}
