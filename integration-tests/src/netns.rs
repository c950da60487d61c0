//! Running Rust code inside a named network namespace.
//!
//! setns(2) with `CLONE_NEWNET` switches only the calling thread, so the
//! closure runs on a fresh scoped thread that enters the namespace and ends
//! with the closure: the test's own threads never change namespace. Sockets
//! opened by the closure stay in that namespace after the thread ends, so a
//! test can open a socket "in a host" and use it from anywhere.
//!
//! Threads started by the closure inherit the namespace and keep it after
//! the closure returns. So a multi-thread tokio runtime built inside
//! `in_netns` has its workers in the namespace: tasks given to
//! `Runtime::spawn` run there (while `block_on` runs on the caller's thread).

use std::fs::File;
use std::path::PathBuf;

use nix::sched::{CloneFlags, setns};

use crate::error::{LabError, Result};

/// Where `ip netns add NAME` pins a namespace.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Runs `f` on a thread inside the network namespace `name` and returns its
/// result. A panic inside `f` is propagated to the caller.
pub fn in_netns<F, T>(name: &str, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let path = netns_path(name);
    let file = File::open(&path).map_err(|source| LabError::Io {
        what: format!("opening {}", path.display()),
        source,
    })?;
    std::thread::scope(|s| {
        let handle = s.spawn(move || -> Result<T> {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| LabError::Setns {
                netns: name.to_string(),
                source,
            })?;
            Ok(f())
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
