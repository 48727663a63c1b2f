//! End-to-end tests: a real docker-registry behind a real Apache httpd started
//! from deploy/httpd.conf.sample (only its `Define` values substituted), or
//! behind a real nginx started from deploy/nginx.conf.sample (only its
//! `${RR_*}` placeholders substituted) asking the service's auth_request
//! door, or with no web server at all, the registry started from
//! deploy/registry-htpasswd.yml.sample checking the htpasswd file the
//! service keeps, or from deploy/registry-token.yml.sample trusting the
//! tokens the service's token door signs; guarded by credentials the real
//! registry-rubber binary mints, exercised with skopeo and curl. And the
//! faults the binary lives through without losing an acknowledged write:
//! kills of the service, a killed MariaDB, a full disk. And what ships: the
//! Debian package scripts/deb.sh builds, installed with dpkg, and the
//! container image scripts/image.sh builds, pushed, pulled and run (both
//! fail, never skip, when the package or the image was not built; the image
//! test needs umoci).
//!
//! Run with `cargo test --test e2e` as root on a Debian host with the
//! packages apache2, apache2-utils, libaprutil1-dbd-sqlite3, nginx,
//! gettext-base, docker-registry, skopeo, openssl and curl (and, for the
//! MySQL stacks, mariadb-server and libaprutil1-dbd-mysql); a missing one
//! fails the tests with its name.
//! Each test starts its own stack on its own ports and temporary directory,
//! so the tests run in parallel.

mod apache_user;
mod api_vhost;
mod concurrency;
mod credentials;
mod faults;
mod hash_types;
mod htpasswd;
mod image;
#[path = "../support/mariadb.rs"]
mod mariadb;
mod mysql;
mod nginx;
mod oci;
mod package;
mod recipes;
mod sample;
mod slow_clients;
mod support;
mod token;
