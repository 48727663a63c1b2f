//! The package test installs the Debian package on this host and purges it;
//! the recipe tests' throwaway roots lay overlays on this host's /etc and
//! /var, and an overlay's lower directories must not change while it is
//! mounted (the package's files appearing or vanishing under a running
//! recipe could make its database look replaced). Both take one lock: the
//! package test alone, the recipe roots together.

use std::fs::File;
use std::os::unix::io::AsRawFd;

const LOCK: &str = "/run/lock/registry-rubber-package-test.lock";

/// Held until dropped.
pub struct HostLock(#[allow(dead_code)] File);

/// For changing what the host has installed: waits until no recipe root and
/// no other such change is running.
pub fn exclusive() -> HostLock {
    take(libc::LOCK_EX)
}

/// For a root laid over the host's directories: waits until no change of
/// the host's installed packages is running; roots share it.
pub fn shared() -> HostLock {
    take(libc::LOCK_SH)
}

fn take(how: libc::c_int) -> HostLock {
    let file = File::create(LOCK).unwrap_or_else(|e| panic!("create {LOCK}: {e}"));
    // SAFETY: flock on a descriptor owned here; it blocks until granted.
    let locked = unsafe { libc::flock(file.as_raw_fd(), how) };
    assert_eq!(
        locked,
        0,
        "lock {LOCK}: {}",
        std::io::Error::last_os_error()
    );
    HostLock(file)
}
