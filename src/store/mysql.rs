//! MySQL/MariaDB backend: writers, each owning one connection, that drain
//! the write queue into group commits (one InnoDB transaction per batch,
//! each job answered only after COMMIT) and overlap their transactions, and
//! a small pool of reader connections.
//!
//! Several service instances may share one database: each has its own
//! writer, and InnoDB's row locks keep their transactions apart. A batch that
//! loses a deadlock or a lock wait is rolled back and run again, a bounded
//! number of times.
//!
//! Every wait on the server is bounded, so that during an outage a request
//! fails within seconds instead of hanging: opening a connection
//! ([`CONNECT_TIMEOUT`]), taking a reader from the pool
//! ([`ACQUIRE_TIMEOUT`]), a read ([`READ_TIMEOUT`]), and a batch of writes
//! with its retries ([`WRITE_DEADLINE`]). A lost connection is opened again
//! on the next request, so the service recovers by itself when the server
//! is back.

use std::sync::Arc;
use std::time::Duration;

use sqlx::mysql::{
    MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlPool, MySqlPoolOptions,
    MySqlRow, MySqlSslMode,
};
use sqlx::{Connection, Executor, Row};
use tokio::time::Instant;
use tracing::Instrument;

use super::migrations::{Migration, MYSQL};
use super::policy::{
    self, expired_condition, live_condition, Backend, Failed, NewRefresh, NewRow, Reach, RowOps,
};
use super::queue::WriteQueue;
use super::{
    ListQuery, ListedUser, LiveCredentials, RefreshRow, StoreError, UserRow, WriteOp, WriteOutcome,
};
use crate::config::{DatabaseTls, MysqlUrl, TableName};
use crate::domain::Username;

/// Reader connections kept at most.
const MAX_READERS: u32 = 4;
/// Longest wait for a new connection to be established and logged in.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for a reader connection from the pool, connecting included.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a read may take, waiting for a connection included.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Most rows one multi-row statement of the writer carries: a power of two
/// (see policy::power_of_two_chunks), so that each connection prepares few
/// statements.
const MAX_ROWS_PER_STATEMENT: usize = 32;
/// Writer connections, each committing its own batches: while one waits for
/// its COMMIT to be durable, the next takes the writes queued meanwhile, and
/// the server flushes their commits together.
pub const WRITERS: usize = 2;
/// Longest a batch of writes may take, connecting and retries included.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// Longest a caller waits for its write: one batch ahead of it, its own, and
/// a reconnect.
const WRITE_WAIT: Duration = Duration::from_secs(12);
/// Seconds a statement of the writer waits for a row lock held by another
/// instance before failing (and the batch being retried).
const LOCK_WAIT_SECONDS: u32 = 2;
/// Times a batch is run when it loses a deadlock, a lock wait, or a
/// connection before its COMMIT was sent (within [`WRITE_DEADLINE`]).
const MAX_ATTEMPTS: u32 = 8;
/// Longest a migration's DDL waits for the table's metadata lock.
const MIGRATION_DDL_WAIT_SECONDS: u32 = 5;
/// Longest the migration runner waits for another instance's migrations.
const MIGRATION_LOCK_SECONDS: u32 = 60;

/// Longest a health check waits for the writer to commit.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Never `Debug`: the connect options hold the password.
#[derive(Clone)]
pub struct MysqlStore {
    inner: Arc<Inner>,
}

struct Inner {
    table: TableName,
    /// The migrations this open applied.
    applied: Vec<Migration>,
    queue: WriteQueue,
    readers: MySqlPool,
}

/// How connections to the server are protected.
#[derive(Debug, Clone)]
pub struct Tls {
    /// Resolved for the URL's host: never `Auto`.
    pub mode: DatabaseTls,
    pub ca: Option<std::path::PathBuf>,
}

/// The connect options for a URL, with TLS as `tls` asks.
fn connect_options(url: &MysqlUrl, tls: &Tls) -> MySqlConnectOptions {
    let mode = match tls.mode {
        DatabaseTls::Auto | DatabaseTls::Disabled => MySqlSslMode::Disabled,
        DatabaseTls::Required => MySqlSslMode::Required,
        DatabaseTls::VerifyCa => MySqlSslMode::VerifyCa,
        DatabaseTls::VerifyIdentity => MySqlSslMode::VerifyIdentity,
    };
    let mut options = MySqlConnectOptions::new()
        .host(&url.host)
        .port(url.port)
        .username(&url.user)
        .database(&url.database)
        .ssl_mode(mode)
        .charset("utf8mb4");
    if let Some(ca) = &tls.ca {
        options = options.ssl_ca(ca);
    }
    if let Some(password) = &url.password {
        options = options.password(password.expose());
    }
    options
}

/// Opens one connection, bounded by [`CONNECT_TIMEOUT`], and prepares its
/// session for writing: READ COMMITTED (no gap locks for searches; InnoDB
/// takes them only in rare cases of inserts waiting on one another), a
/// short lock wait, and strict mode (a value too long for its column is an
/// error, never silently cut).
async fn connect(
    options: &MySqlConnectOptions,
    database: &str,
) -> Result<MySqlConnection, StoreError> {
    open_session(options, database, "").await
}

/// A writer's connection: [`connect`]'s session with autocommit off, so
/// that a batch's first statement opens its transaction and its COMMIT (or
/// ROLLBACK) ends it, with no round trip for a BEGIN; and a table's metadata
/// lock (an ALTER, LOCK TABLES, a backup's FLUSH TABLES) waited for as
/// briefly as a row lock: a lost lock wait, not a batch that never returns.
async fn connect_writer(
    options: &MySqlConnectOptions,
    database: &str,
) -> Result<MySqlConnection, StoreError> {
    let writer =
        format!(", SESSION autocommit = 0, SESSION lock_wait_timeout = {LOCK_WAIT_SECONDS}");
    open_session(options, database, &writer).await
}

/// [`connect`], with `more` session settings (`, SESSION name = value`...).
async fn open_session(
    options: &MySqlConnectOptions,
    database: &str,
    more: &str,
) -> Result<MySqlConnection, StoreError> {
    let mut conn =
        match tokio::time::timeout(CONNECT_TIMEOUT, MySqlConnection::connect_with(options)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) if error_number(&e) == Some(ER_BAD_DB_ERROR) => {
                return Err(StoreError::UnknownDatabase(database.to_owned()))
            }
            Ok(Err(e)) if is_refusal(&e) => return Err(refusal(&e)),
            Ok(Err(e)) => return Err(StoreError::Unreachable(e.to_string())),
            Err(_) => {
                return Err(StoreError::Unreachable(format!(
                    "no connection within {CONNECT_TIMEOUT:?}"
                )))
            }
        };
    let setup = async {
        conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .await?;
        conn.execute(&*format!(
            "SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_SECONDS},
                 SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',STRICT_TRANS_TABLES'){more}"
        ))
        .await?;
        Ok::<_, sqlx::Error>(())
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, setup).await {
        Ok(Ok(())) => Ok(conn),
        Ok(Err(e)) => Err(StoreError::Unreachable(e.to_string())),
        Err(_) => Err(StoreError::Unreachable(format!(
            "no answer within {CONNECT_TIMEOUT:?}"
        ))),
    }
}

impl MysqlStore {
    /// Connects, brings the schema up to date, and starts the writers. The
    /// database itself must exist; its tables are created here.
    pub async fn open(url: &MysqlUrl, table: TableName, tls: Tls) -> Result<Self, StoreError> {
        let options = connect_options(url, &tls);
        let mut conn = connect(&options, &url.database).await?;
        let applied = migrate(&mut conn, &table).await?;
        let readers = MySqlPoolOptions::new()
            .max_connections(MAX_READERS)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Some(Duration::from_secs(60)))
            .test_before_acquire(true)
            .connect_lazy_with(options.clone());
        let _ = conn.close().await;
        // Every writer connects now: a server that will not take that many
        // connections says so at start.
        let mut writers = Vec::with_capacity(WRITERS);
        for _ in 0..WRITERS {
            writers.push(Writer {
                conn: Some(connect_writer(&options, &url.database).await?),
                options: options.clone(),
                database: url.database.clone(),
                sql: Statements::new(&table),
            });
        }
        let (queue, rx, counts) = WriteQueue::new();
        tokio::spawn(
            async move { policy::run_writers(writers, rx, &counts).await }.in_current_span(),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                table,
                applied,
                queue,
                readers,
            }),
        })
    }

    /// The migrations this open applied, oldest first.
    pub fn applied_migrations(&self) -> &[Migration] {
        &self.inner.applied
    }

    /// Queues `op` and waits for its commit, at most WRITE_WAIT: a caller
    /// gets its 503 in bounded time even when the writer is stuck behind a
    /// server that stopped answering.
    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        self.inner.queue.write(op, Some(WRITE_WAIT)).await
    }

    /// Lets the writer commit what is queued, then closes its connection and
    /// the readers'. Writes after this answer `WriterGone`.
    pub async fn close(&self) {
        self.inner.queue.close().await;
        self.inner.readers.close().await;
    }

    /// Transactions the writer has committed since start.
    pub fn commit_count(&self) -> u64 {
        self.inner.queue.commit_count()
    }

    pub fn split_count(&self) -> u64 {
        self.inner.queue.split_count()
    }

    pub fn taken_count(&self) -> u64 {
        self.inner.queue.taken_count()
    }

    pub fn queued(&self) -> usize {
        self.inner.queue.queued()
    }

    pub fn error_count(&self) -> u64 {
        self.inner.queue.error_count()
    }

    /// Bounds a read by [`READ_TIMEOUT`] and counts its failure.
    async fn read<T>(
        &self,
        read: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        let result = match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Database(e.to_string())),
            Err(_) => Err(StoreError::Unreachable(format!(
                "no answer within {READ_TIMEOUT:?}"
            ))),
        };
        self.inner.queue.count(&result);
        result
    }

    /// Reads the users table, then has the writer commit an empty
    /// transaction within PING_TIMEOUT: healthy means a write would succeed
    /// now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let sql = format!("SELECT 1 FROM `{}` LIMIT 1", self.inner.table);
        self.read(sqlx::query(&sql).fetch_optional(&self.inner.readers))
            .await?;
        match tokio::time::timeout(PING_TIMEOUT, self.write(WriteOp::Ping)).await {
            Ok(result) => result.map(drop),
            Err(_) => Err(StoreError::Unreachable(format!(
                "the writer did not commit within {PING_TIMEOUT:?}"
            ))),
        }
    }

    pub async fn get(&self, user: &Username) -> Result<Option<UserRow>, StoreError> {
        let sql = format!(
            "SELECT username, password, created_at, expires_at, scopes FROM `{}` WHERE username = ?",
            self.inner.table
        );
        let read = async {
            let row = sqlx::query(&sql)
                .bind(user.as_str())
                .fetch_optional(&self.inner.readers)
                .await?;
            row.map(|r| {
                Ok(UserRow {
                    username: text(&r, 0)?,
                    password_hash: text(&r, 1)?,
                    created_at: r.try_get(2)?,
                    expires_at: r.try_get(3)?,
                    scopes: optional_text(&r, 4)?,
                })
            })
            .transpose()
        };
        self.read(read).await
    }

    pub async fn refresh(&self, digest: &str) -> Result<Option<RefreshRow>, StoreError> {
        let sql = format!(
            "SELECT username, service, issued_at, credential FROM `{}_refresh` WHERE digest = ?",
            self.inner.table
        );
        let read = async {
            let row = sqlx::query(&sql)
                .bind(digest)
                .fetch_optional(&self.inner.readers)
                .await?;
            row.map(|r| {
                Ok(RefreshRow {
                    username: text(&r, 0)?,
                    service: text(&r, 1)?,
                    issued_at: r.try_get(2)?,
                    credential: text(&r, 3)?,
                })
            })
            .transpose()
        };
        self.read(read).await
    }

    pub async fn count(&self) -> Result<u64, StoreError> {
        let sql = format!("SELECT COUNT(*) FROM `{}`", self.inner.table);
        let n: i64 = self
            .read(sqlx::query_scalar(&sql).fetch_one(&self.inner.readers))
            .await?;
        Ok(n.max(0) as u64)
    }

    pub async fn count_live(&self, now: i64) -> Result<u64, StoreError> {
        let sql = format!(
            "SELECT COUNT(*) FROM `{}` WHERE {}",
            self.inner.table,
            live_condition("?")
        );
        let n: i64 = self
            .read(
                sqlx::query_scalar(&sql)
                    .bind(now)
                    .fetch_one(&self.inner.readers),
            )
            .await?;
        Ok(n.max(0) as u64)
    }

    pub async fn live_credentials(&self, now: i64) -> Result<LiveCredentials, StoreError> {
        let table = &self.inner.table;
        let users_sql = format!(
            "SELECT username, password FROM `{table}` WHERE {} ORDER BY username",
            live_condition("?")
        );
        let next_sql = format!("SELECT MIN(expires_at) FROM `{table}` WHERE expires_at > ?");
        let read = async {
            let mut conn = self.inner.readers.acquire().await?;
            let rows = sqlx::query(&users_sql)
                .bind(now)
                .fetch_all(&mut *conn)
                .await?;
            // Read as bytes: one name or hash that is not UTF-8 (the
            // column is VARBINARY, any tool can write it) is left out, not
            // a failure of the whole read.
            let mut users = Vec::with_capacity(rows.len());
            let mut unreadable = 0;
            for r in &rows {
                let name: Vec<u8> = r.try_get(0)?;
                let hash: Vec<u8> = r.try_get(1)?;
                match (String::from_utf8(name), String::from_utf8(hash)) {
                    (Ok(name), Ok(hash)) => users.push((name, hash)),
                    _ => unreadable += 1,
                }
            }
            let next_expiry: Option<i64> = sqlx::query_scalar(&next_sql)
                .bind(now)
                .fetch_one(&mut *conn)
                .await?;
            Ok(LiveCredentials {
                users,
                unreadable,
                next_expiry,
            })
        };
        self.read(read).await
    }

    pub async fn list(&self, q: ListQuery) -> Result<Vec<ListedUser>, StoreError> {
        // Every character a name may hold sorts below U+007F in ascii_bin,
        // so the names with a prefix are exactly those in
        // [prefix, prefix + U+007F).
        let sql = format!(
            "SELECT username, created_at, expires_at, scopes FROM `{}`
             WHERE username >= ? AND username < ? AND username > ? AND {}
             ORDER BY username LIMIT ?",
            self.inner.table,
            live_condition("?")
        );
        let upper = format!("{}\u{7f}", q.prefix);
        let after = q.after.clone().unwrap_or_default();
        let read = async {
            let rows = sqlx::query(&sql)
                .bind(&q.prefix)
                .bind(&upper)
                .bind(&after)
                .bind(q.now)
                .bind(q.limit)
                .fetch_all(&self.inner.readers)
                .await?;
            rows.into_iter()
                .map(|r| {
                    Ok(ListedUser {
                        username: text(&r, 0)?,
                        created_at: r.try_get(1)?,
                        expires_at: r.try_get(2)?,
                        scopes: optional_text(&r, 3)?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
        };
        self.read(read).await
    }
}

/// A text column as a string. The server flags columns with a binary
/// collation (`username` is ascii_bin) as binary, which sqlx will not decode
/// as text, so this takes the bytes and checks they are UTF-8.
fn text(row: &MySqlRow, index: usize) -> Result<String, sqlx::Error> {
    let bytes: Vec<u8> = row.try_get(index)?;
    String::from_utf8(bytes).map_err(|e| sqlx::Error::ColumnDecode {
        index: index.to_string(),
        source: Box::new(e),
    })
}

/// As [`text`], for a column that may be NULL.
fn optional_text(row: &MySqlRow, index: usize) -> Result<Option<String>, sqlx::Error> {
    let bytes: Option<Vec<u8>> = row.try_get(index)?;
    bytes
        .map(|b| {
            String::from_utf8(b).map_err(|e| sqlx::Error::ColumnDecode {
                index: index.to_string(),
                source: Box::new(e),
            })
        })
        .transpose()
}

/// The table of applied migrations, created by every start (so that the
/// account's CREATE right is used at every start, not only at the first).
const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS rubber_migrations (
     tbl        VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
     version    BIGINT       NOT NULL,
     name       VARCHAR(255) NOT NULL,
     applied_at BIGINT       NOT NULL,
     PRIMARY KEY (tbl, version)
 ) ENGINE = InnoDB DEFAULT CHARACTER SET utf8mb4";

/// Checks what a start would need of the server, changing nothing: the
/// account connects to the database, the schema is current, and the account
/// has every right a start and the writes use. Returns what was checked.
pub async fn check(url: &MysqlUrl, table: &TableName, tls: Tls) -> Result<String, StoreError> {
    let options = connect_options(url, &tls);
    let mut conn = connect(&options, &url.database).await?;
    let result = tokio::time::timeout(CONNECT_TIMEOUT * 2, check_on(&mut conn, table))
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unreachable(format!(
                "no answer within {:?}",
                CONNECT_TIMEOUT * 2
            )))
        });
    let _ = conn.close().await;
    result
}

async fn check_on(conn: &mut MySqlConnection, table: &TableName) -> Result<String, StoreError> {
    let known = MYSQL.last().map_or(0, |m| m.version);
    let found: i64 = match sqlx::query_scalar(
        "SELECT CAST(COALESCE(MAX(version), 0) AS SIGNED) FROM rubber_migrations WHERE tbl = ?",
    )
    .bind(table.as_str())
    .fetch_one(&mut *conn)
    .await
    {
        Ok(found) => found,
        Err(e) if error_number(&e) == Some(ER_NO_SUCH_TABLE) => 0,
        Err(e) => return Err(database_error(&e)),
    };
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    if found < known {
        return Ok(format!(
            "the account connects; table {table} has schema version {found} of {known}: serve and migrate apply the rest, and the CREATE, ALTER and INDEX rights that takes were not checked"
        ));
    }
    // Each statement matches no row, and is rolled back, but needs its
    // right: the server checks rights before it looks at a row.
    let statements = [
        MIGRATIONS_TABLE.to_owned(),
        "START TRANSACTION".to_owned(),
        format!("SELECT username, password FROM `{table}` WHERE 1 = 0"),
        format!("INSERT INTO `{table}` (username, password, created_at) SELECT username, password, created_at FROM `{table}` WHERE 1 = 0"),
        format!("UPDATE `{table}` SET expires_at = expires_at WHERE 1 = 0"),
        format!("DELETE FROM `{table}` WHERE 1 = 0"),
        format!("INSERT INTO `{table}_refresh` SELECT * FROM `{table}_refresh` WHERE 1 = 0"),
        format!("DELETE FROM `{table}_refresh` WHERE 1 = 0"),
    ];
    let mut result = Ok(());
    for statement in &statements {
        if let Err(e) = conn.execute(statement.as_str()).await {
            result = Err(database_error(&e));
            break;
        }
    }
    let _ = conn.execute("ROLLBACK").await;
    result.map(|()| {
        format!(
            "the account connects; table {table} has the current schema (version {known}); the account may create tables and SELECT, INSERT, UPDATE and DELETE on {table} and {table}_refresh"
        )
    })
}

/// Applies every migration this build knows and the database has not seen.
/// A server-wide lock keeps two instances starting at once from migrating
/// the same table together. Each migration's statements run one by one (MySQL
/// commits DDL by itself), and its record is written after the last one.
pub(super) async fn migrate(
    conn: &mut MySqlConnection,
    table: &TableName,
) -> Result<Vec<Migration>, StoreError> {
    let fail = |e: sqlx::Error| database_error(&e);
    conn.execute(MIGRATIONS_TABLE).await.map_err(fail)?;
    // Lock names are at most 64 characters; a digest of database and table
    // fits and keeps other databases on the same server out of the way.
    let lock: String =
        sqlx::query_scalar("SELECT CONCAT('registry-rubber.', SHA1(CONCAT(DATABASE(), '.', ?)))")
            .bind(table.as_str())
            .fetch_one(&mut *conn)
            .await
            .map_err(fail)?;
    let got: Option<i32> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
        .bind(&lock)
        .bind(MIGRATION_LOCK_SECONDS)
        .fetch_one(&mut *conn)
        .await
        .map_err(fail)?;
    if got != Some(1) {
        return Err(StoreError::Database(format!(
            "another instance has been migrating table {table} for {MIGRATION_LOCK_SECONDS} s; try again once it is done"
        )));
    }
    // DDL waits for every open transaction on the table to end, and every
    // reader (Apache's logins) queues behind it: give up after a few seconds
    // rather than hold them all (the server's default wait is a day or more).
    sqlx::query(&format!(
        "SET SESSION lock_wait_timeout = {MIGRATION_DDL_WAIT_SECONDS}"
    ))
    .execute(&mut *conn)
    .await
    .map_err(fail)?;
    let result = apply_migrations(conn, table).await.map_err(|e| match e {
        StoreError::Database(m) if m.contains("Lock wait timeout") => {
            StoreError::Database(format!(
            "{m}: another session holds a transaction open on table {table}; end it and start again"
        ))
        }
        other => other,
    });
    let released = sqlx::query("SELECT RELEASE_LOCK(?)")
        .bind(&lock)
        .execute(&mut *conn)
        .await;
    let applied = result?;
    released.map_err(fail)?;
    Ok(applied)
}

async fn apply_migrations(
    conn: &mut MySqlConnection,
    table: &TableName,
) -> Result<Vec<Migration>, StoreError> {
    let fail = |e: sqlx::Error| database_error(&e);
    let known = MYSQL.last().map_or(0, |m| m.version);
    let found: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(MAX(version), 0) AS SIGNED) FROM rubber_migrations WHERE tbl = ?",
    )
    .bind(table.as_str())
    .fetch_one(&mut *conn)
    .await
    .map_err(fail)?;
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    let mut applied = Vec::new();
    for m in MYSQL {
        let done: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM rubber_migrations WHERE tbl = ? AND version = ?",
        )
        .bind(table.as_str())
        .bind(m.version)
        .fetch_optional(&mut *conn)
        .await
        .map_err(fail)?;
        if done.is_some() {
            continue;
        }
        let statements = m.statements(table.as_str());
        for (i, statement) in statements.iter().enumerate() {
            conn.execute(statement.as_str()).await.map_err(|e| {
                let message = format!(
                    "migration {} failed at statement {} of {}: {e}{}",
                    m.file_name(),
                    i + 1,
                    statements.len(),
                    if i > 0 {
                        "; the statements before it are committed: finish this migration by hand, then record it in rubber_migrations"
                    } else {
                        ""
                    }
                );
                if is_refusal(&e) {
                    StoreError::NoRights(message)
                } else {
                    StoreError::Database(message)
                }
            })?;
        }
        sqlx::query(
            "INSERT INTO rubber_migrations (tbl, version, name, applied_at) VALUES (?, ?, ?, UNIX_TIMESTAMP())",
        )
        .bind(table.as_str())
        .bind(m.version)
        .bind(m.name)
        .execute(&mut *conn)
        .await
        .map_err(fail)?;
        applied.push(*m);
    }
    Ok(applied)
}

/// The statements the writer runs, with the table name filled in once.
struct Statements {
    insert: String,
    /// `insert` of 2, 4, 8 ... MAX_ROWS_PER_STATEMENT rows: index k holds
    /// 2^(k+1).
    insert_rows: Vec<String>,
    /// `delete_refresh` of as many users.
    delete_refresh_rows: Vec<String>,
    /// The names among as many that are taken, their rows locked.
    lock_rows: Vec<String>,
    update: String,
    upsert: String,
    remove: String,
    lookup: String,
    set_expiry: String,
    cleanup: String,
    sweep: String,
    insert_refresh: String,
    delete_refresh: String,
    count_refresh: String,
    trim_refresh: String,
    delete_orphan_refresh: String,
}

impl Statements {
    fn new(table: &TableName) -> Self {
        let sizes = || (1..=MAX_ROWS_PER_STATEMENT.ilog2()).map(|k| 1usize << k);
        let placeholders = |n: usize, one: &str| vec![one; n].join(", ");
        Self {
            insert: format!(
                "INSERT INTO `{table}` (username, password, created_at, expires_at, scopes) VALUES (?, ?, ?, ?, ?)"
            ),
            insert_rows: sizes()
                .map(|n| {
                    format!(
                        "INSERT INTO `{table}` (username, password, created_at, expires_at, scopes) VALUES {}",
                        placeholders(n, "(?, ?, ?, ?, ?)")
                    )
                })
                .collect(),
            lock_rows: sizes()
                .map(|n| {
                    format!(
                        "SELECT username FROM `{table}` WHERE username IN ({}) FOR UPDATE",
                        placeholders(n, "?")
                    )
                })
                .collect(),
            delete_refresh_rows: sizes()
                .map(|n| {
                    format!(
                        "DELETE FROM `{table}_refresh` WHERE username IN ({})",
                        placeholders(n, "?")
                    )
                })
                .collect(),
            // The connection reports rows matched, not rows changed
            // (sqlx sets CLIENT_FOUND_ROWS), so 1 means the user exists.
            update: format!(
                "UPDATE `{table}` SET password = ?, created_at = ?, expires_at = ?, scopes = ? WHERE username = ?"
            ),
            upsert: format!(
                "INSERT INTO `{table}` (username, password, created_at, expires_at, scopes) VALUES (?, ?, ?, ?, ?)
                 ON DUPLICATE KEY UPDATE password = VALUES(password),
                     created_at = VALUES(created_at), expires_at = VALUES(expires_at),
                     scopes = VALUES(scopes)"
            ),
            remove: format!("DELETE FROM `{table}` WHERE username = ?"),
            lookup: format!(
                "SELECT created_at, expires_at FROM `{table}` WHERE username = ? FOR UPDATE"
            ),
            set_expiry: format!("UPDATE `{table}` SET expires_at = ? WHERE username = ?"),
            cleanup: format!(
                "DELETE FROM `{table}` WHERE created_at < ? ORDER BY created_at LIMIT ?"
            ),
            sweep: format!(
                "DELETE FROM `{table}` WHERE {} ORDER BY expires_at LIMIT ?",
                expired_condition("?")
            ),
            insert_refresh: format!(
                "INSERT INTO `{table}_refresh` (digest, username, service, issued_at, credential)
                 VALUES (?, ?, ?, ?, ?)"
            ),
            delete_refresh: format!("DELETE FROM `{table}_refresh` WHERE username = ?"),
            count_refresh: format!("SELECT COUNT(*) FROM `{table}_refresh` WHERE username = ?"),
            trim_refresh: format!(
                "DELETE FROM `{table}_refresh` WHERE username = ? ORDER BY issued_at, digest LIMIT ?"
            ),
            delete_orphan_refresh: format!(
                "DELETE FROM `{table}_refresh`
                 WHERE NOT EXISTS (SELECT 1 FROM `{table}` u WHERE u.username = `{table}_refresh`.username)
                 LIMIT ?"
            ),
        }
    }
}

/// The server's error numbers the writer treats specially.
const ER_BAD_DB_ERROR: u16 = 1049;
/// The account or its password is refused.
const ER_ACCESS_DENIED_ERROR: u16 = 1045;
/// The account has no rights on the database (or the database, which it
/// could not see, does not exist), on a table, or on a column.
const ER_DBACCESS_DENIED_ERROR: u16 = 1044;
const ER_TABLEACCESS_DENIED_ERROR: u16 = 1142;
const ER_COLUMNACCESS_DENIED_ERROR: u16 = 1143;
const ER_NO_SUCH_TABLE: u16 = 1146;

/// Whether the server refused the account or one of its rights: a fix in
/// the set-up, not a failure of the server.
fn is_refusal(e: &sqlx::Error) -> bool {
    matches!(
        error_number(e),
        Some(
            ER_ACCESS_DENIED_ERROR
                | ER_DBACCESS_DENIED_ERROR
                | ER_TABLEACCESS_DENIED_ERROR
                | ER_COLUMNACCESS_DENIED_ERROR
        )
    )
}

/// The error for a refusal ([`is_refusal`]).
fn refusal(e: &sqlx::Error) -> StoreError {
    if error_number(e) == Some(ER_ACCESS_DENIED_ERROR) {
        StoreError::AccessDenied(e.to_string())
    } else {
        StoreError::NoRights(e.to_string())
    }
}

/// A failed statement of start-up or of a check: a refusal as such, any
/// other as a database error.
fn database_error(e: &sqlx::Error) -> StoreError {
    if is_refusal(e) {
        refusal(e)
    } else {
        StoreError::Database(e.to_string())
    }
}
const ER_DUP_ENTRY: u16 = 1062;
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
const ER_LOCK_DEADLOCK: u16 = 1213;

fn error_number(e: &sqlx::Error) -> Option<u16> {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(MySqlDatabaseError::number),
        _ => None,
    }
}

/// What a failed statement means for the batch it was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Lost a deadlock or a lock wait: InnoDB rolled back, run it again.
    Contention,
    /// The connection is gone or unusable: open a new one.
    Connection,
    /// The server refuses every write alike (read-only, full, denied): no
    /// job would fare better alone.
    Global,
    /// Tied to one statement: the other jobs of the batch may succeed alone.
    Statement,
}

fn classify(e: &sqlx::Error) -> Failure {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Failure::Connection,
        sqlx::Error::Database(_) => match error_number(e) {
            Some(ER_LOCK_DEADLOCK | ER_LOCK_WAIT_TIMEOUT) => Failure::Contention,
            // Server shutdown, connection killed, idle disconnect.
            Some(1053 | 1927 | 4031) => Failure::Connection,
            // Read-only server or transaction, table or disk full, access
            // denied.
            Some(1290 | 1792 | 1114 | 1021 | 1142 | 1044 | 1045) => Failure::Global,
            _ => Failure::Statement,
        },
        _ => Failure::Statement,
    }
}

/// Why a batch's transaction failed, and whether COMMIT had been sent: a
/// connection lost during COMMIT leaves the outcome unknown, so that batch
/// must not be run again.
struct TxError {
    error: sqlx::Error,
    at_commit: bool,
    /// The ROLLBACK after the failure failed too: the session may still be
    /// inside the transaction, and must not be used again.
    broken: bool,
}

/// A writer: owns one of this instance's [`WRITERS`] write connections,
/// opened again whenever it is lost.
struct Writer {
    options: MySqlConnectOptions,
    database: String,
    conn: Option<MySqlConnection>,
    sql: Statements,
}

impl Backend for Writer {
    async fn commit(&mut self, ops: &[&WriteOp]) -> Result<Vec<WriteOutcome>, Failed> {
        self.run_with_retries(ops)
            .await
            .map_err(|(failure, error)| Failed {
                reach: match failure {
                    Failure::Statement => Reach::Statement,
                    Failure::Connection if self.conn.is_none() => Reach::Unreachable,
                    Failure::Contention | Failure::Connection | Failure::Global => Reach::Batch,
                },
                error,
            })
    }

    async fn recover(&mut self) -> bool {
        if self.conn.is_none() {
            self.conn = connect_writer(&self.options, &self.database).await.ok();
        }
        self.conn.is_some()
    }

    async fn close(mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }
}

impl Writer {
    /// Runs `ops` in one transaction until it commits, a failure that would
    /// only repeat occurs, or [`WRITE_DEADLINE`] passes.
    async fn run_with_retries(
        &mut self,
        ops: &[&WriteOp],
    ) -> Result<Vec<WriteOutcome>, (Failure, StoreError)> {
        let deadline = Instant::now() + WRITE_DEADLINE;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let conn = match self.conn.take() {
                Some(conn) => conn,
                None => {
                    match tokio::time::timeout_at(
                        deadline,
                        connect_writer(&self.options, &self.database),
                    )
                    .await
                    {
                        Ok(Ok(conn)) => conn,
                        Ok(Err(e)) => return Err((Failure::Connection, e)),
                        Err(_) => {
                            return Err((
                                Failure::Connection,
                                StoreError::Unreachable(format!(
                                    "no connection within {WRITE_DEADLINE:?}"
                                )),
                            ))
                        }
                    }
                }
            };
            let conn = self.conn.insert(conn);
            let result = tokio::time::timeout_at(
                deadline,
                apply_in_transaction(conn, &self.sql, ops, attempt == 1),
            )
            .await;
            let TxError {
                error,
                at_commit,
                broken,
            } = match result {
                Ok(Ok(outcomes)) => return Ok(outcomes),
                Ok(Err(e)) => e,
                Err(_) => {
                    // Where the transaction stood is unknown: drop the
                    // connection (the server rolls back what was not
                    // committed) and do not run the batch again.
                    self.conn = None;
                    return Err((
                        Failure::Connection,
                        StoreError::Unreachable(format!(
                            "the batch did not complete within {WRITE_DEADLINE:?}"
                        )),
                    ));
                }
            };
            let failure = classify(&error);
            if failure == Failure::Connection || broken {
                self.conn = None;
            }
            let again = match failure {
                Failure::Contention => true,
                Failure::Connection => !at_commit,
                Failure::Global | Failure::Statement => false,
            };
            if !again || attempt >= MAX_ATTEMPTS || Instant::now() >= deadline {
                let err = if at_commit && failure == Failure::Connection {
                    StoreError::Database(format!(
                        "the connection was lost during COMMIT; the outcome is unknown: {error}"
                    ))
                } else {
                    StoreError::Database(error.to_string())
                };
                return Err((failure, err));
            }
            if failure == Failure::Contention {
                tracing::debug!(attempt, error = %error, "write batch lost a lock; running it again");
                tokio::time::sleep(backoff(attempt)).await;
            } else {
                tracing::info!(attempt, error = %error, "write connection lost; reconnecting");
            }
        }
    }
}

/// A short, randomized pause before running a batch again, so that two
/// instances that deadlocked do not collide the same way twice.
fn backoff(attempt: u32) -> Duration {
    use rand::Rng;
    let base = 5u64 << attempt.min(5);
    Duration::from_millis(rand::thread_rng().gen_range(base / 2..=base))
}

/// Runs `ops` in one transaction on a writer's session (autocommit off:
/// the first statement opens the transaction, with no round trip for a
/// BEGIN) and commits it, or rolls it back when a statement fails.
/// `insert_first` on a batch's first attempt only ([`Rows::insert_first`]).
async fn apply_in_transaction(
    conn: &mut MySqlConnection,
    sql: &Statements,
    ops: &[&WriteOp],
    insert_first: bool,
) -> Result<Vec<WriteOutcome>, TxError> {
    let rows = &mut Rows {
        conn,
        sql,
        insert_first,
    };
    let applied = policy::apply_all(rows, ops).await;
    let conn = &mut *rows.conn;
    // A batch of pings sends no statement before its COMMIT: that COMMIT
    // failing leaves nothing in doubt, and the batch may run again.
    let wrote = ops.iter().any(|op| !matches!(op, WriteOp::Ping));
    let (error, at_commit) = match applied {
        Ok(outcomes) => match conn.execute("COMMIT").await {
            Ok(_) => return Ok(outcomes),
            Err(error) => (error, wrote),
        },
        Err(error) => (error, false),
    };
    // Left open, the failed batch's transaction would take the next batch's
    // statements into it.
    let broken = conn.execute("ROLLBACK").await.is_err();
    Err(TxError {
        error,
        at_commit,
        broken,
    })
}

/// The row operations on the writer's open transaction.
struct Rows<'a> {
    conn: &'a mut MySqlConnection,
    sql: &'a Statements,
    /// Whether a chunk of replacing adds is inserted before its names are
    /// looked for ([`RowOps::upsert_all`]): on a batch's first attempt,
    /// until a chunk finds a name taken.
    insert_first: bool,
}

impl Rows<'_> {
    /// Inserts a chunk of two or more rows with one INSERT: true when all
    /// were inserted, false when a name was taken (the server then rolled
    /// back that statement, and only it).
    async fn insert_chunk(&mut self, chunk: &[NewRow<'_>]) -> Result<bool, sqlx::Error> {
        let mut insert = sqlx::query(&self.sql.insert_rows[chunk.len().ilog2() as usize - 1]);
        for row in chunk {
            insert = insert
                .bind(row.user.as_str())
                .bind(row.hash)
                .bind(row.created_at)
                .bind(row.expires_at)
                .bind(row.scopes);
        }
        match insert.execute(&mut *self.conn).await {
            Ok(_) => Ok(true),
            Err(e) if error_number(&e) == Some(ER_DUP_ENTRY) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl RowOps for Rows<'_> {
    type Error = sqlx::Error;

    async fn insert_new(&mut self, row: NewRow<'_>) -> Result<bool, Self::Error> {
        let inserted = sqlx::query(&self.sql.insert)
            .bind(row.user.as_str())
            .bind(row.hash)
            .bind(row.created_at)
            .bind(row.expires_at)
            .bind(row.scopes)
            .execute(&mut *self.conn)
            .await;
        match inserted {
            Ok(_) => Ok(true),
            // Only the statement was rolled back; the transaction goes on.
            Err(e) if error_number(&e) == Some(ER_DUP_ENTRY) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One INSERT per chunk of rows: a round trip for many adds. A chunk
    /// with a name already taken is then inserted row by row, so that each
    /// add gets its own answer.
    async fn insert_new_all(&mut self, rows: &[NewRow<'_>]) -> Result<Vec<bool>, Self::Error> {
        let mut inserted = Vec::with_capacity(rows.len());
        for chunk in policy::power_of_two_chunks(rows, MAX_ROWS_PER_STATEMENT) {
            if chunk.len() > 1 && self.insert_chunk(chunk).await? {
                inserted.resize(inserted.len() + chunk.len(), true);
                continue;
            }
            for row in chunk {
                inserted.push(self.insert_new(*row).await?);
            }
        }
        Ok(inserted)
    }

    /// A chunk is inserted with one INSERT, as [`RowOps::insert_new_all`]
    /// does: names are new, as a rule, and then nothing is replaced. When
    /// one is taken, the users of the chunk that exist are locked and found
    /// with one SELECT and replaced one by one; the others are inserted, and
    /// one that another instance inserted meanwhile is then replaced.
    ///
    /// The failed INSERT leaves a shared lock on the taken row (the
    /// duplicate check's), which the SELECT makes exclusive: a writer that
    /// asked for that row meanwhile (a remove, a renewal, a replacement of
    /// the same name, from this instance or another) deadlocks with it. So
    /// the rest of the batch, and every attempt after the first, locks the
    /// names first, as the batch would then lose a deadlock the same way
    /// again and again while the writers replace the same names.
    async fn upsert_all(&mut self, rows: &[NewRow<'_>]) -> Result<Vec<bool>, Self::Error> {
        let mut replaced = Vec::with_capacity(rows.len());
        for chunk in policy::power_of_two_chunks(rows, MAX_ROWS_PER_STATEMENT) {
            if chunk.len() == 1 {
                replaced.push(self.upsert(chunk[0]).await?);
                continue;
            }
            if self.insert_first {
                if self.insert_chunk(chunk).await? {
                    replaced.resize(replaced.len() + chunk.len(), false);
                    continue;
                }
                self.insert_first = false;
            }
            let mut lock = sqlx::query(&self.sql.lock_rows[chunk.len().ilog2() as usize - 1]);
            for row in chunk {
                lock = lock.bind(row.user.as_str());
            }
            let taken = lock
                .fetch_all(&mut *self.conn)
                .await?
                .iter()
                .map(|r| text(r, 0))
                .collect::<Result<std::collections::HashSet<String>, _>>()?;
            let mut flags = vec![false; chunk.len()];
            let mut new = Vec::new();
            for (i, row) in chunk.iter().enumerate() {
                if taken.contains(row.user.as_str()) {
                    flags[i] = self.upsert(*row).await?;
                } else {
                    new.push(i);
                }
            }
            let rows_new: Vec<NewRow<'_>> = new.iter().map(|&i| chunk[i]).collect();
            let inserted = self.insert_new_all(&rows_new).await?;
            for (&i, inserted) in new.iter().zip(inserted) {
                if !inserted {
                    // Inserted by another instance since the SELECT.
                    flags[i] = self.upsert(chunk[i]).await?;
                }
            }
            replaced.extend(flags);
        }
        Ok(replaced)
    }

    async fn delete_refresh_all(&mut self, users: &[&Username]) -> Result<(), Self::Error> {
        for chunk in policy::power_of_two_chunks(users, MAX_ROWS_PER_STATEMENT) {
            if chunk.len() == 1 {
                self.delete_refresh(chunk[0]).await?;
                continue;
            }
            let mut delete =
                sqlx::query(&self.sql.delete_refresh_rows[chunk.len().ilog2() as usize - 1]);
            for user in chunk {
                delete = delete.bind(user.as_str());
            }
            delete.execute(&mut *self.conn).await?;
        }
        Ok(())
    }

    /// UPDATE first: it locks an existing row exclusively at once (a
    /// writer of the same user waits for it, or it for the writer; only a
    /// chunk that inserted first may deadlock with it), and it tells a
    /// replacement from an insert even when the row already held these
    /// values.
    async fn upsert(&mut self, row: NewRow<'_>) -> Result<bool, Self::Error> {
        let matched = sqlx::query(&self.sql.update)
            .bind(row.hash)
            .bind(row.created_at)
            .bind(row.expires_at)
            .bind(row.scopes)
            .bind(row.user.as_str())
            .execute(&mut *self.conn)
            .await?
            .rows_affected();
        if matched > 0 {
            return Ok(true);
        }
        // New, unless another instance inserted it since: then it is
        // replaced (2 rows affected). Only a row already holding exactly
        // these values reads as inserted (1).
        let affected = sqlx::query(&self.sql.upsert)
            .bind(row.user.as_str())
            .bind(row.hash)
            .bind(row.created_at)
            .bind(row.expires_at)
            .bind(row.scopes)
            .execute(&mut *self.conn)
            .await?
            .rows_affected();
        Ok(affected > 1)
    }

    async fn delete(&mut self, user: &Username) -> Result<bool, Self::Error> {
        Ok(sqlx::query(&self.sql.remove)
            .bind(user.as_str())
            .execute(&mut *self.conn)
            .await?
            .rows_affected()
            > 0)
    }

    /// SELECT ... FOR UPDATE: the row stays locked until the commit.
    async fn lifetime(
        &mut self,
        user: &Username,
    ) -> Result<Option<(i64, Option<i64>)>, Self::Error> {
        let found = sqlx::query(&self.sql.lookup)
            .bind(user.as_str())
            .fetch_optional(&mut *self.conn)
            .await?;
        found
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .transpose()
    }

    async fn set_expiry(&mut self, user: &Username, expires_at: i64) -> Result<(), Self::Error> {
        sqlx::query(&self.sql.set_expiry)
            .bind(expires_at)
            .bind(user.as_str())
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }

    async fn delete_created_before(&mut self, cutoff: i64, limit: u32) -> Result<u64, Self::Error> {
        Ok(sqlx::query(&self.sql.cleanup)
            .bind(cutoff)
            .bind(limit)
            .execute(&mut *self.conn)
            .await?
            .rows_affected())
    }

    async fn delete_expired(&mut self, now: i64, limit: u32) -> Result<u64, Self::Error> {
        Ok(sqlx::query(&self.sql.sweep)
            .bind(now)
            .bind(limit)
            .execute(&mut *self.conn)
            .await?
            .rows_affected())
    }

    async fn insert_refresh(&mut self, token: NewRefresh<'_>) -> Result<(), Self::Error> {
        sqlx::query(&self.sql.insert_refresh)
            .bind(token.digest)
            .bind(token.user.as_str())
            .bind(token.service)
            .bind(token.issued_at)
            .bind(token.credential)
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }

    async fn delete_refresh(&mut self, user: &Username) -> Result<(), Self::Error> {
        sqlx::query(&self.sql.delete_refresh)
            .bind(user.as_str())
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }

    async fn trim_refresh(&mut self, user: &Username, keep: u32) -> Result<(), Self::Error> {
        // MySQL takes no LIMIT in a subquery of a DELETE: count, then delete
        // the oldest beyond `keep`.
        let held: i64 = sqlx::query_scalar(&self.sql.count_refresh)
            .bind(user.as_str())
            .fetch_one(&mut *self.conn)
            .await?;
        let excess = held - i64::from(keep);
        if excess > 0 {
            sqlx::query(&self.sql.trim_refresh)
                .bind(user.as_str())
                .bind(excess)
                .execute(&mut *self.conn)
                .await?;
        }
        Ok(())
    }

    async fn delete_orphan_refresh(&mut self, limit: u32) -> Result<(), Self::Error> {
        sqlx::query(&self.sql.delete_orphan_refresh)
            .bind(limit)
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified() {
        assert_eq!(
            classify(&sqlx::Error::Io(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused
            ))),
            Failure::Connection
        );
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), Failure::Connection);
        assert_eq!(classify(&sqlx::Error::RowNotFound), Failure::Statement);
    }

    #[test]
    fn backoff_grows_and_stays_short() {
        for attempt in 1..=MAX_ATTEMPTS {
            let pause = backoff(attempt);
            assert!(pause >= Duration::from_millis(5), "{pause:?}");
            assert!(pause <= Duration::from_millis(160), "{pause:?}");
        }
    }
}
