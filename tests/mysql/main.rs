//! The MySQL/MariaDB backend against real MariaDB servers of the tests' own
//! (mariadbd from the Debian package mariadb-server, started in a temporary
//! directory on a free port and stopped when each test ends): migrations and
//! adoption of the original's table, the store's semantics, passwords that
//! never leak, and an outage the service lives through.

#[path = "../support/binary.rs"]
mod binary;
#[path = "../support/mariadb.rs"]
mod mariadb;

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

mod cli;
mod migrations;
mod outage;
mod secrets;
mod tls;
mod writers;

use std::sync::Arc;

use helpers::{TestDatabase, TestDb};
use mariadb::MariaDb;

/// A fresh database on `server`, as the API helpers take it.
pub async fn database_on(server: &MariaDb) -> Arc<TestDb> {
    Arc::new(TestDb::Mysql(TestDatabase::create(&server.url()).await))
}

/// The pool of a MySQL test database.
pub fn pool(db: &TestDb) -> &sqlx::MySqlPool {
    match db {
        TestDb::Mysql(d) => &d.pool,
        TestDb::Sqlite { .. } => unreachable!("these tests make MySQL databases only"),
    }
}
