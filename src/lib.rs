//! registry-rubber: short-lived Docker registry credentials, minted and revoked
//! over a JSON API and stored as htpasswd-style hashes in a table that Apache
//! httpd reads with mod_authn_dbd.

pub mod access;
pub mod api;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod domain;
pub mod htpasswd;
pub mod metrics;
pub mod startup;
pub mod store;
pub mod sweeper;
pub mod telemetry;
pub mod tls;
