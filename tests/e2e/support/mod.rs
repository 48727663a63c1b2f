//! What every end-to-end test shares: finding the external programs, starting
//! and stopping processes, the test PKI, the Apache, nginx and registry
//! samples, the whole stack, and the clients.

pub mod accounts;
pub mod apache;
pub mod clients;
pub mod host_lock;
pub mod ledger;
pub mod nginx;
pub mod pki;
pub mod process;
pub mod registry_sample;
pub mod stack;
pub mod tmpfs;
pub mod tools;

pub use clients::Creds;
pub use stack::{Front, Stack, StackOptions};

/// A name no other test or run uses, for users and repositories.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}{}x{nanos}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Seconds since the Unix epoch, as the service stamps `created_at`.
pub fn epoch_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
