//! The API integration suite: the real application on port 0, a fresh
//! database per test (SQLite, or MySQL/MariaDB when REGISTRY_RUBBER_TEST_MYSQL_URL
//! names a server), driven over HTTP.

#[path = "../support/binary.rs"]
mod binary;
#[path = "../support/mariadb.rs"]
mod mariadb;

mod auth_request;
mod callers;
mod cleanup;
mod cli;
mod contract;
mod errors;
mod helpers;
mod htpasswd_file;
mod lifetimes;
mod logs;
mod race;
mod secrets;
mod store_contract;
mod tls;
mod token;
mod two_instances;
mod unix_socket;
