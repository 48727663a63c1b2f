//! registry-rubber: short-lived Docker registry credentials, minted and revoked
//! over a JSON API and stored as htpasswd-style hashes. One credential core
//! (store and verifier) behind several doors: the admin API that writes,
//! Apache httpd reading the table with mod_authn_dbd, and nginx asking the
//! auth_request door.

pub mod access;
pub mod allocator;
pub mod audit;
pub mod callers;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod domain;
pub mod doors;
#[doc(hidden)]
pub mod fuzzing;
pub mod host;
pub mod htpasswd;
pub mod metrics;
pub mod sinks;
pub mod startup;
pub mod store;
pub mod sweeper;
pub mod telemetry;
pub mod tls;
