//! The credential store. Every write (add, remove, cleanup) goes through one
//! queue drained by the backend's writers (SQLite has one, MySQL two), each
//! of which commits whatever has queued up in one transaction (group commit)
//! and answers each request only after that transaction is durable. Reads go
//! straight to the database.
//!
//! Two backends, chosen by the database URL's scheme: SQLite (one file on
//! the service's host) and MySQL/MariaDB (one database shared by several
//! service instances and several Apaches).

pub mod migrations;
mod mysql;
pub mod policy;
mod queue;
mod sqlite;

use std::path::PathBuf;

use crate::config::{DatabaseUrl, Settings};
use crate::domain::Username;

pub use mysql::{MysqlStore, ACQUIRE_TIMEOUT, CONNECT_TIMEOUT, READ_TIMEOUT, WRITE_DEADLINE};
pub use policy::MAX_REFRESH_TOKENS;
pub use sqlite::{SqliteStore, WalLimit};

/// Users removed per transaction by the sweeper and by cleanup: small
/// enough that a write queued behind one waits only a few milliseconds, and
/// that a large backlog never becomes one long transaction.
pub const DELETE_BATCH: u32 = 200;

/// One change to the users table, as the writer applies it. Times are epoch
/// seconds; a user is live while `expires_at` is NULL or later than now.
/// `Debug` leaves the hash out.
pub enum WriteOp {
    /// Insert the user; if it exists, replace its password, creation time and
    /// expiry when `replace` is set, or answer `Conflict` when it is not.
    /// A replacement also revokes the user's refresh tokens: they were
    /// issued to whoever held the old password.
    Add {
        user: Username,
        hash: String,
        now: i64,
        expires_at: Option<i64>,
        /// Space-separated scope patterns; None: the configured default.
        scopes: Option<String>,
        replace: bool,
    },
    /// Removes the user and its refresh tokens.
    Remove { user: Username },
    /// Move a live user's expiry to `now + ttl`, never beyond
    /// `created_at + max_lifetime` and never earlier than it already is.
    Renew {
        user: Username,
        now: i64,
        ttl: u64,
        max_lifetime: u64,
    },
    /// Remove at most `limit` users created before `cutoff`.
    Cleanup { cutoff: i64, limit: u32 },
    /// Remove at most `limit` users whose expiry is at or before `now`.
    Sweep { now: i64, limit: u32 },
    /// Records a refresh token issued to `user` for `service`, by the
    /// digest of the token.
    IssueRefresh {
        digest: String,
        user: Username,
        service: String,
        issued_at: i64,
        /// Digest of the user's stored hash when the token was issued.
        credential: String,
    },
    /// Change nothing; proves the writer can take the write lock and commit.
    Ping,
}

impl std::fmt::Debug for WriteOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteOp::Add {
                user,
                now,
                expires_at,
                scopes,
                replace,
                ..
            } => f
                .debug_struct("Add")
                .field("user", user)
                .field("now", now)
                .field("expires_at", expires_at)
                .field("scopes", scopes)
                .field("replace", replace)
                .finish_non_exhaustive(),
            WriteOp::IssueRefresh {
                user,
                service,
                issued_at,
                ..
            } => f
                .debug_struct("IssueRefresh")
                .field("user", user)
                .field("service", service)
                .field("issued_at", issued_at)
                .finish_non_exhaustive(),
            WriteOp::Remove { user } => f.debug_struct("Remove").field("user", user).finish(),
            WriteOp::Renew { user, now, ttl, .. } => f
                .debug_struct("Renew")
                .field("user", user)
                .field("now", now)
                .field("ttl", ttl)
                .finish_non_exhaustive(),
            WriteOp::Cleanup { cutoff, limit } => f
                .debug_struct("Cleanup")
                .field("cutoff", cutoff)
                .field("limit", limit)
                .finish(),
            WriteOp::Sweep { now, limit } => f
                .debug_struct("Sweep")
                .field("now", now)
                .field("limit", limit)
                .finish(),
            WriteOp::Ping => f.write_str("Ping"),
        }
    }
}

/// What a committed [`WriteOp`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Added {
        replaced: bool,
    },
    /// An add with `replace: false` found the name taken.
    Conflict,
    Removed {
        found: bool,
    },
    /// The new expiry (None: the user never expires, as rows of the original
    /// tool), and whether max_lifetime held it below what was asked.
    Renewed {
        expires_at: Option<i64>,
        limited: bool,
    },
    /// Renew found no live user of that name.
    NotLive,
    CleanedUp {
        removed: u64,
    },
    Swept {
        removed: u64,
    },
    RefreshIssued,
    Pinged,
}

/// A user as stored, for reading back.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRow {
    pub username: String,
    /// The stored hash. Never printed: `Debug` leaves it out.
    pub password_hash: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    /// Space-separated scope patterns; None: the configured default.
    pub scopes: Option<String>,
}

impl UserRow {
    /// Whether the credential works at `now`.
    pub fn is_live(&self, now: i64) -> bool {
        policy::is_live(self.expires_at, now)
    }
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("username", &self.username)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A live user as `list` shows it: never a password or a hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedUser {
    pub username: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub scopes: Option<String>,
}

/// A refresh token as stored: by its digest, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRow {
    pub username: String,
    pub service: String,
    pub issued_at: i64,
    /// Digest of the user's stored hash when the token was issued.
    pub credential: String,
}

/// The live users with their hashes, for a view such as an htpasswd file.
/// `Debug` leaves the hashes out.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct LiveCredentials {
    /// (name, stored hash), in name order: the rows whose name and hash are
    /// UTF-8 text. Nothing else about them is checked here.
    pub users: Vec<(String, String)>,
    /// Live rows left out of `users` because their name or hash is not
    /// UTF-8 text (written by another tool): one odd row must not keep the
    /// others from being read.
    pub unreadable: usize,
    /// The earliest expiry still ahead, in epoch seconds.
    pub next_expiry: Option<i64>,
}

impl std::fmt::Debug for LiveCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCredentials")
            .field(
                "users",
                &self.users.iter().map(|(u, _)| u).collect::<Vec<_>>(),
            )
            .field("unreadable", &self.unreadable)
            .field("next_expiry", &self.next_expiry)
            .finish()
    }
}

/// Which live users to list: names starting with `prefix`, after the name
/// `after` (the previous page's last), at most `limit`.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub prefix: String,
    pub after: Option<String>,
    pub limit: u32,
    pub now: i64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error(
        "database file {0} does not exist; create it with `registry-rubber migrate` (same configuration) or correct database_url"
    )]
    Missing(PathBuf),
    #[error("{0}")]
    NotWritable(String),
    #[error("cannot create database file {path}: {message}")]
    Create { path: PathBuf, message: String },
    #[error(
        "database `{0}` does not exist on the MySQL/MariaDB server; create it (CREATE DATABASE `{0}`) and grant the service's account on it (see README, MySQL and MariaDB), or correct database_url"
    )]
    UnknownDatabase(String),
    #[error(
        "the MySQL/MariaDB server refused the account: {0}; check the password (database_url or database_password_file) and that the account exists for the host the service connects from (see README, MySQL and MariaDB)"
    )]
    AccessDenied(String),
    #[error(
        "the account lacks a right: {0}; if the database name in database_url is misspelt, correct it (to an account without rights on it, a database that does not exist looks the same); otherwise GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX on the database to the account (see README, MySQL and MariaDB)"
    )]
    NoRights(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("database unreachable: {0}")]
    Unreachable(String),
    #[error("the database schema has version {found}, newer than the {known} this build knows; upgrade registry-rubber")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("the database writer has stopped")]
    WriterGone,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

impl StoreError {
    /// Whether the fix is in the configuration or the set-up (a missing
    /// database, a directory the service cannot create it in, an account the
    /// server refuses), rather than a failure of the database itself.
    pub fn is_setup(&self) -> bool {
        matches!(
            self,
            StoreError::Missing(_)
                | StoreError::Create { .. }
                | StoreError::NotWritable(_)
                | StoreError::UnknownDatabase(_)
                | StoreError::AccessDenied(_)
                | StoreError::NoRights(_)
        )
    }
}

/// Whether opening may create a missing database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Create the file if it is missing (`migrate`).
    IfMissing,
    /// Create only the documented default file (`serve` with no
    /// configuration); refuse any other missing path.
    DefaultOnly,
    /// Refuse a missing file: a typo in a path must not silently start an
    /// empty database somewhere else, and a command that removes a user must
    /// not report success against a database it just made.
    Never,
}
// A MySQL database is never created by the service (its administrator
// creates it and grants the service's account on it); its tables are, at
// every open, whatever `Create` says.

/// How the connections to a MySQL/MariaDB server are protected.
fn mysql_tls(settings: &Settings, url: &crate::config::MysqlUrl) -> mysql::Tls {
    mysql::Tls {
        mode: settings.database_tls.for_host(&url.host),
        ca: settings.database_tls_ca.clone(),
    }
}

/// The store behind every door; cheap to clone.
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Mysql(MysqlStore),
}

impl Store {
    /// Opens the configured database and brings its schema up to date,
    /// creating a missing file only as `create` allows.
    pub async fn open(settings: &Settings, create: Create) -> Result<Store, StoreError> {
        match &settings.database {
            DatabaseUrl::Sqlite { path, is_default } => {
                let create = match create {
                    Create::DefaultOnly if *is_default => Create::IfMissing,
                    Create::DefaultOnly => Create::Never,
                    other => other,
                };
                let wal = WalLimit::megabytes(settings.wal_limit);
                let store =
                    SqliteStore::open(path.clone(), settings.table.clone(), create, wal).await?;
                Ok(Store::Sqlite(store))
            }
            DatabaseUrl::Mysql(url) => {
                let store =
                    MysqlStore::open(url, settings.table.clone(), mysql_tls(settings, url)).await?;
                Ok(Store::Mysql(store))
            }
        }
    }

    /// Checks, changing nothing, what opening the configured database at
    /// start would need: it exists (or would be created), answers, has a
    /// schema this build knows, and lets the service write. Returns what was
    /// checked, as a sentence.
    pub async fn check(settings: &Settings) -> Result<String, StoreError> {
        match &settings.database {
            DatabaseUrl::Sqlite { path, is_default } => {
                let (path, table, is_default) = (path.clone(), settings.table.clone(), *is_default);
                tokio::task::spawn_blocking(move || sqlite::check(&path, &table, is_default))
                    .await
                    .map_err(|e| StoreError::Database(format!("the check failed: {e}")))?
            }
            DatabaseUrl::Mysql(url) => {
                mysql::check(url, &settings.table, mysql_tls(settings, url)).await
            }
        }
    }

    /// The migrations this open applied, oldest first; empty when the
    /// schema was already current.
    pub fn applied_migrations(&self) -> &[migrations::Migration] {
        match self {
            Store::Sqlite(s) => s.applied_migrations(),
            Store::Mysql(s) => s.applied_migrations(),
        }
    }

    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        match self {
            Store::Sqlite(s) => s.write(op).await,
            Store::Mysql(s) => s.write(op).await,
        }
    }

    /// Succeeds when the database answers a query on the users table and the
    /// writer is running.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.ping().await,
            Store::Mysql(s) => s.ping().await,
        }
    }

    pub async fn get(&self, user: &Username) -> Result<Option<UserRow>, StoreError> {
        match self {
            Store::Sqlite(s) => s.get(user).await,
            Store::Mysql(s) => s.get(user).await,
        }
    }

    pub async fn count(&self) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.count().await,
            Store::Mysql(s) => s.count().await,
        }
    }

    /// Users live at `now`.
    pub async fn count_live(&self, now: i64) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.count_live(now).await,
            Store::Mysql(s) => s.count_live(now).await,
        }
    }

    /// Every user live at `now`, name and stored hash, in name order; and
    /// the next expiry after `now`, when one is due.
    pub async fn live_credentials(&self, now: i64) -> Result<LiveCredentials, StoreError> {
        match self {
            Store::Sqlite(s) => s.live_credentials(now).await,
            Store::Mysql(s) => s.live_credentials(now).await,
        }
    }

    /// The refresh token of this digest, if one is recorded.
    pub async fn refresh(&self, digest: &str) -> Result<Option<RefreshRow>, StoreError> {
        match self {
            Store::Sqlite(s) => s.refresh(digest).await,
            Store::Mysql(s) => s.refresh(digest).await,
        }
    }

    pub async fn list(&self, query: ListQuery) -> Result<Vec<ListedUser>, StoreError> {
        match self {
            Store::Sqlite(s) => s.list(query).await,
            Store::Mysql(s) => s.list(query).await,
        }
    }

    /// Commits what is queued and closes the database cleanly.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => s.close().await,
            Store::Mysql(s) => s.close().await,
        }
    }

    /// Transactions the writer has committed since start.
    pub fn commit_count(&self) -> u64 {
        match self {
            Store::Sqlite(s) => s.commit_count(),
            Store::Mysql(s) => s.commit_count(),
        }
    }

    /// Batches that failed on one write and were committed again one write
    /// at a time, so that the others still went through.
    pub fn split_count(&self) -> u64 {
        match self {
            Store::Sqlite(s) => s.split_count(),
            Store::Mysql(s) => s.split_count(),
        }
    }

    /// Writes the writer has taken from the queue into a batch since
    /// start, committed or still in its hands.
    pub fn taken_count(&self) -> u64 {
        match self {
            Store::Sqlite(s) => s.taken_count(),
            Store::Mysql(s) => s.taken_count(),
        }
    }

    /// Writes waiting for the writer.
    pub fn queued(&self) -> usize {
        match self {
            Store::Sqlite(s) => s.queued(),
            Store::Mysql(s) => s.queued(),
        }
    }

    /// Database failures seen since start (writes and reads).
    pub fn error_count(&self) -> u64 {
        match self {
            Store::Sqlite(s) => s.error_count(),
            Store::Mysql(s) => s.error_count(),
        }
    }

    /// Writers draining the queue, each with a connection of its own.
    pub fn writers(&self) -> usize {
        match self {
            Store::Sqlite(_) => 1,
            Store::Mysql(_) => mysql::WRITERS,
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Mysql(_) => "mysql",
        }
    }
}
