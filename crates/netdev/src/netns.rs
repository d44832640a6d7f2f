//! Entering a network namespace for the current thread.
//!
//! `setns(2)` changes only the calling thread, so a device meant for another namespace is
//! opened while this thread stands in it, before any multi-threaded runtime starts (or from a
//! current-thread runtime). The guard puts the thread back where it was.

use crate::cvt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// While alive, the current thread is in another network namespace.
pub struct NetnsGuard {
    original: File,
}

impl NetnsGuard {
    /// Moves the current thread into the namespace at `path` (e.g. `/run/netns/d11-fabric`).
    pub fn enter(path: &Path) -> io::Result<Self> {
        let original = File::open("/proc/thread-self/ns/net")?;
        let target = File::open(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("network namespace {}: {e}", path.display()),
            )
        })?;
        // SAFETY: setns on a valid namespace descriptor only changes this thread's namespace.
        cvt(unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) })?;
        Ok(Self { original })
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        // SAFETY: as above; returning to the namespace we came from cannot fail for root.
        let r = unsafe { libc::setns(self.original.as_raw_fd(), libc::CLONE_NEWNET) };
        if r < 0 {
            // A thread left in the wrong namespace would open later devices in the wrong place.
            panic!(
                "cannot return to the original network namespace: {}",
                io::Error::last_os_error()
            );
        }
    }
}

/// Runs `f` with the current thread in the namespace at `path`, if one is given.
pub fn within<T>(path: Option<&Path>, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let _guard = match path {
        Some(p) => Some(NetnsGuard::enter(p)?),
        None => None,
    };
    f()
}
