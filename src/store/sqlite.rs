//! SQLite backend: WAL mode with synchronous=FULL, one writer thread that
//! drains the write queue into group commits, and a small pool of reader
//! connections used from the blocking thread pool.

use std::fs::OpenOptions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::migrations::{Migration, SQLITE};
use super::queue::{Job, Msg, WriteQueue};
use super::{
    renewed_expiry, Create, ListQuery, ListedUser, StoreError, UserRow, WriteOp, WriteOutcome,
};
use crate::config::TableName;
use crate::domain::Username;

/// Most writes committed in one transaction. Larger batches gain little: the
/// commit's fsync is paid once either way.
const MAX_BATCH: usize = 512;
/// How long a statement waits for a lock held by another process (the CLI,
/// a cron job, Apache checkpointing) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a health check waits for the writer to take the write lock.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the checkpointer copies committed WAL pages into the database.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);
/// Idle reader connections kept open.
const MAX_IDLE_READERS: usize = 8;
/// Mode of a database file this service creates: readable and writable by
/// its group, so that Apache in that group can read it in WAL mode (which
/// needs write access to the -shm file; SQLite gives -wal and -shm the
/// database file's mode).
const FILE_MODE: u32 = 0o660;

#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    table: TableName,
    queue: WriteQueue,
    checkpointer: Mutex<Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>>,
    readers: Mutex<Vec<Connection>>,
}

impl SqliteStore {
    pub async fn open(path: PathBuf, table: TableName, create: Create) -> Result<Self, StoreError> {
        let (queue, rx, commits) = WriteQueue::new();
        let writer_path = path.clone();
        let writer_table = table.clone();
        // Opening, migrating and the writer loop all run on one dedicated
        // thread that owns the only write connection.
        let (ready_tx, ready_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                let conn = match open_writer(&writer_path, &writer_table, create) {
                    Ok(conn) => {
                        let _ = ready_tx.send(Ok(()));
                        conn
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                run_writer(conn, &writer_table, rx, &commits);
            })
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        ready_rx.await.map_err(|_| StoreError::WriterGone)??;
        let stop = Arc::new(AtomicBool::new(false));
        let checkpointer = {
            let (path, stop) = (path.clone(), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("sqlite-checkpoint".into())
                .spawn(move || run_checkpointer(&path, &stop))
                .map_err(|e| {
                    StoreError::Database(format!("cannot start the checkpoint thread: {e}"))
                })?
        };
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                table,
                queue,
                checkpointer: Mutex::new(Some((stop, checkpointer))),
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        self.inner.queue.write(op, None).await
    }

    /// Lets the writer commit what is queued, then closes every connection,
    /// so that SQLite folds the WAL into the database file and removes the
    /// -wal and -shm files. Writes after this answer `WriterGone`.
    pub async fn close(&self) {
        let checkpointer = self
            .inner
            .checkpointer
            .lock()
            .ok()
            .and_then(|mut c| c.take());
        if let Some((stop, handle)) = checkpointer {
            stop.store(true, Ordering::Relaxed);
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        self.inner.queue.close().await;
        if let Ok(mut idle) = self.inner.readers.lock() {
            idle.clear();
        }
    }

    pub fn commit_count(&self) -> u64 {
        self.inner.queue.commit_count()
    }

    pub fn error_count(&self) -> u64 {
        self.inner.queue.error_count()
    }

    /// Reads the users table, then has the writer take the write lock and
    /// commit, within PING_TIMEOUT: healthy means a write would succeed now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let sql = format!(
            "SELECT count(*) FROM (SELECT 1 FROM \"{}\" LIMIT 1)",
            self.inner.table
        );
        self.read(move |conn| Ok(conn.query_row(&sql, [], |_| Ok(()))?))
            .await?;
        match tokio::time::timeout(PING_TIMEOUT, self.write(WriteOp::Ping)).await {
            Ok(result) => result.map(|_| ()),
            Err(_) => Err(StoreError::Database(format!(
                "the writer did not commit within {PING_TIMEOUT:?}"
            ))),
        }
    }

    pub async fn get(&self, user: &Username) -> Result<Option<UserRow>, StoreError> {
        let sql = format!(
            "SELECT username, password, created_at, expires_at FROM \"{}\" WHERE username = ?1",
            self.inner.table
        );
        let user = user.as_str().to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([user], |r| {
                    Ok(UserRow {
                        username: r.get(0)?,
                        password_hash: r.get(1)?,
                        created_at: r.get(2)?,
                        expires_at: r.get(3)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    pub async fn count(&self) -> Result<u64, StoreError> {
        let sql = format!("SELECT count(*) FROM \"{}\"", self.inner.table);
        self.read(move |conn| Ok(conn.query_row(&sql, [], |r| r.get::<_, i64>(0))? as u64))
            .await
    }

    pub async fn count_live(&self, now: i64) -> Result<u64, StoreError> {
        let sql = format!(
            "SELECT count(*) FROM \"{}\" WHERE expires_at IS NULL OR expires_at > ?1",
            self.inner.table
        );
        self.read(move |conn| Ok(conn.query_row(&sql, [now], |r| r.get::<_, i64>(0))? as u64))
            .await
    }

    pub async fn list(&self, q: ListQuery) -> Result<Vec<ListedUser>, StoreError> {
        // Every character a name may hold sorts below U+007F, so the names
        // with a prefix are exactly those in [prefix, prefix + U+007F).
        let sql = format!(
            "SELECT username, created_at, expires_at FROM \"{}\"
             WHERE username >= ?1 AND username < ?2 AND username > ?3
               AND (expires_at IS NULL OR expires_at > ?4)
             ORDER BY username LIMIT ?5",
            self.inner.table
        );
        self.read(move |conn| {
            let upper = format!("{}\u{7f}", q.prefix);
            let after = q.after.unwrap_or_default();
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![q.prefix, upper, after, q.now, q.limit], |r| {
                Ok(ListedUser {
                    username: r.get(0)?,
                    created_at: r.get(1)?,
                    expires_at: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Runs `f` on a pooled reader connection on the blocking thread pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let result = self.read_pooled(f).await;
        self.inner.queue.count(&result);
        result
    }

    async fn read_pooled<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().ok().and_then(|mut v| v.pop());
            let conn = match pooled {
                Some(c) => c,
                None => open_reader(&inner.path)?,
            };
            let result = f(&conn);
            if let Ok(mut idle) = inner.readers.lock() {
                if idle.len() < MAX_IDLE_READERS {
                    idle.push(conn);
                }
            }
            result
        })
        .await
        .map_err(|e| StoreError::Database(format!("reader task failed: {e}")))?
    }
}

fn open_writer(path: &Path, table: &TableName, create: Create) -> Result<Connection, StoreError> {
    if !path.exists() {
        match create {
            Create::Never | Create::DefaultOnly => {
                return Err(StoreError::Missing(path.to_owned()))
            }
            Create::IfMissing => create_file(path)?,
        }
    }
    warn_unless_group_accessible(path);
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Database(format!(
            "{} cannot use WAL mode (journal_mode is {mode}); put it on a local file system",
            path.display()
        )));
    }
    // Every commit reaches the disk before a write is acknowledged. WAL
    // checkpoints run on their own thread (see run_checkpointer), not inside
    // a commit that requests are waiting for.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 0")?;
    migrate(&mut conn, table)?;
    Ok(conn)
}

/// Apache reads the file as another user in a shared group, and in WAL mode
/// a reader writes the -shm file: say so at start rather than at the first
/// refused registry login.
fn warn_unless_group_accessible(path: &Path) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o060 != 0o060 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:o}"),
            "database file is not readable and writable by its group: a reader such as Apache in that group cannot use it in WAL mode (chmod 0660 and a group-writable directory fix it)"
        );
    }
}

/// Copies committed WAL pages into the database file every
/// CHECKPOINT_INTERVAL with PASSIVE checkpoints, which never wait for or
/// block the writer or readers, so that commits never pay for one.
fn run_checkpointer(path: &Path, stop: &AtomicBool) {
    let conn = match open_reader(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no checkpoint thread: the WAL grows until the service stops");
            return;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(CHECKPOINT_INTERVAL);
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "checkpoint skipped");
        }
    }
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

fn create_file(path: &Path) -> Result<(), StoreError> {
    let fail = |e: std::io::Error| StoreError::Create {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(fail)?;
    // The umask may have taken the group's write bit; put it back.
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
        .map_err(fail)
}

/// Applies every migration this build knows and the database has not seen,
/// each in its own transaction together with its record.
pub(super) fn migrate(
    conn: &mut Connection,
    table: &TableName,
) -> Result<Vec<Migration>, StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS rubber_migrations (
             tbl        TEXT    NOT NULL,
             version    INTEGER NOT NULL,
             name       TEXT    NOT NULL,
             applied_at INTEGER NOT NULL,
             PRIMARY KEY (tbl, version)
         )",
    )?;
    let known = SQLITE.last().map_or(0, |m| m.version);
    let found: i64 = conn.query_row(
        "SELECT coalesce(max(version), 0) FROM rubber_migrations WHERE tbl = ?1",
        [table.as_str()],
        |r| r.get(0),
    )?;
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    if found == known {
        return Ok(Vec::new());
    }
    let mut applied = Vec::new();
    for m in SQLITE {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let done: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM rubber_migrations WHERE tbl = ?1 AND version = ?2)",
            params![table.as_str(), m.version],
            |r| r.get(0),
        )?;
        if done {
            continue;
        }
        tx.execute_batch(&m.sql_for(table.as_str())).map_err(|e| {
            StoreError::Database(format!("migration {} failed: {e}", m.file_name()))
        })?;
        tx.execute(
            "INSERT INTO rubber_migrations (tbl, version, name, applied_at) VALUES (?1, ?2, ?3, unixepoch())",
            params![table.as_str(), m.version, m.name],
        )?;
        tx.commit()?;
        applied.push(*m);
    }
    Ok(applied)
}

/// The statements the writer runs, with the table name filled in once.
struct Statements {
    update: String,
    insert_new: String,
    remove: String,
    lookup: String,
    set_expiry: String,
    cleanup: String,
    sweep: String,
}

impl Statements {
    fn new(table: &TableName) -> Self {
        Self {
            update: format!(
                "UPDATE \"{table}\" SET password = ?2, created_at = ?3, expires_at = ?4 WHERE username = ?1"
            ),
            insert_new: format!(
                "INSERT INTO \"{table}\" (username, password, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (username) DO NOTHING"
            ),
            remove: format!("DELETE FROM \"{table}\" WHERE username = ?1"),
            lookup: format!(
                "SELECT created_at, expires_at FROM \"{table}\" WHERE username = ?1"
            ),
            set_expiry: format!("UPDATE \"{table}\" SET expires_at = ?2 WHERE username = ?1"),
            cleanup: format!(
                "DELETE FROM \"{table}\" WHERE rowid IN
                 (SELECT rowid FROM \"{table}\" WHERE created_at < ?1 LIMIT ?2)"
            ),
            sweep: format!(
                "DELETE FROM \"{table}\" WHERE rowid IN
                 (SELECT rowid FROM \"{table}\" WHERE expires_at <= ?1 LIMIT ?2)"
            ),
        }
    }
}

/// The writer loop: take the first queued job, everything queued behind it up
/// to MAX_BATCH, commit them together, answer each, repeat. Returns when every
/// sender is gone.
fn run_writer(
    mut conn: Connection,
    table: &TableName,
    mut rx: mpsc::Receiver<Msg>,
    commits: &AtomicU64,
) {
    let sql = Statements::new(table);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut closed_by = None;
    while closed_by.is_none() {
        match rx.blocking_recv() {
            Some(Msg::Write(job)) => batch.push(job),
            Some(Msg::Close(done)) => {
                closed_by = Some(done);
                break;
            }
            None => break,
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Write(job)) => batch.push(job),
                Ok(Msg::Close(done)) => {
                    closed_by = Some(done);
                    break;
                }
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, &sql, &mut batch, commits);
    }
    // Writes that raced with Close find the queue closed and answer
    // WriterGone; none is left waiting.
    rx.close();
    while let Ok(Msg::Write(job)) = rx.try_recv() {
        let _ = job.reply.send(Err(StoreError::WriterGone));
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the database connection failed");
    }
    if let Some(done) = closed_by {
        let _ = done.send(());
    }
}

fn commit_batch(
    conn: &mut Connection,
    sql: &Statements,
    batch: &mut Vec<Job>,
    commits: &AtomicU64,
) {
    let mut commit = |ops: &mut dyn Iterator<Item = &WriteOp>| {
        let result = apply_in_transaction(conn, sql, ops);
        if result.is_ok() {
            commits.fetch_add(1, Ordering::Relaxed);
        }
        result
    };
    match commit(&mut batch.iter().map(|j| &j.op)) {
        Ok(outcomes) => {
            for (job, outcome) in batch.drain(..).zip(outcomes) {
                let _ = job.reply.send(Ok(outcome));
            }
        }
        // A failure tied to one statement must not fail its neighbours:
        // retry each job alone. A lock or I/O failure would only repeat, so
        // every job gets it at once.
        Err(e) if batch.len() > 1 && !is_global_failure(&e) => {
            for job in batch.drain(..) {
                let result = commit(&mut std::iter::once(&job.op))
                    .map(|mut v| v.remove(0))
                    .map_err(StoreError::from);
                let _ = job.reply.send(result);
            }
        }
        Err(e) => {
            let err = StoreError::from(e);
            for job in batch.drain(..) {
                let _ = job.reply.send(Err(err.clone()));
            }
        }
    }
}

fn is_global_failure(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::ReadOnly
                | ErrorCode::OutOfMemory
        )
    )
}

fn apply_in_transaction(
    conn: &mut Connection,
    sql: &Statements,
    ops: &mut dyn Iterator<Item = &WriteOp>,
) -> Result<Vec<WriteOutcome>, rusqlite::Error> {
    let result = (|| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut outcomes = Vec::new();
        for op in ops {
            outcomes.push(apply(&tx, sql, op)?);
        }
        tx.commit()?;
        Ok(outcomes)
    })();
    // A failed statement or commit is rolled back when the transaction is
    // dropped, but that rollback's own failure is silent; left open, the
    // transaction would make every later BEGIN fail.
    if result.is_err() && !conn.is_autocommit() {
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::error!(error = %e, "rollback after a failed write failed");
        }
    }
    result
}

fn apply(
    conn: &Connection,
    sql: &Statements,
    op: &WriteOp,
) -> Result<WriteOutcome, rusqlite::Error> {
    Ok(match op {
        WriteOp::Add {
            user,
            hash,
            now,
            expires_at,
            replace: true,
        } => {
            // New names are the common case: one statement for them.
            let args = params![user.as_str(), hash, now, expires_at];
            let inserted = conn.prepare_cached(&sql.insert_new)?.execute(args)? > 0;
            if !inserted {
                conn.prepare_cached(&sql.update)?.execute(args)?;
            }
            WriteOutcome::Added {
                replaced: !inserted,
            }
        }
        WriteOp::Add {
            user,
            hash,
            now,
            expires_at,
            replace: false,
        } => {
            let args = params![user.as_str(), hash, now, expires_at];
            match conn.prepare_cached(&sql.insert_new)?.execute(args)? {
                0 => WriteOutcome::Conflict,
                _ => WriteOutcome::Added { replaced: false },
            }
        }
        WriteOp::Remove { user } => WriteOutcome::Removed {
            found: conn.prepare_cached(&sql.remove)?.execute([user.as_str()])? > 0,
        },
        WriteOp::Renew {
            user,
            now,
            ttl,
            max_lifetime,
        } => {
            let found: Option<(i64, Option<i64>)> = conn
                .prepare_cached(&sql.lookup)?
                .query_row([user.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            match found {
                None => WriteOutcome::NotLive,
                Some((_, Some(expires_at))) if expires_at <= *now => WriteOutcome::NotLive,
                Some((_, None)) => WriteOutcome::Renewed {
                    expires_at: None,
                    limited: false,
                },
                Some((created_at, Some(current))) => {
                    let (new, limited) =
                        renewed_expiry(*now, *ttl, created_at, *max_lifetime, current);
                    conn.prepare_cached(&sql.set_expiry)?
                        .execute(params![user.as_str(), new])?;
                    WriteOutcome::Renewed {
                        expires_at: Some(new),
                        limited,
                    }
                }
            }
        }
        WriteOp::Cleanup { cutoff, limit } => WriteOutcome::CleanedUp {
            removed: conn
                .prepare_cached(&sql.cleanup)?
                .execute(params![cutoff, limit])? as u64,
        },
        WriteOp::Sweep { now, limit } => WriteOutcome::Swept {
            removed: conn
                .prepare_cached(&sql.sweep)?
                .execute(params![now, limit])? as u64,
        },
        WriteOp::Ping => WriteOutcome::Pinged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> TableName {
        TableName::parse("users").unwrap()
    }

    fn u(s: &str) -> Username {
        Username::parse(s).unwrap()
    }

    fn add(user: &str, hash: &str, now: i64) -> WriteOp {
        WriteOp::Add {
            user: u(user),
            hash: hash.into(),
            now,
            expires_at: Some(now + 100),
            replace: true,
        }
    }

    async fn fresh() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db.sqlite"), table(), Create::IfMissing)
            .await
            .unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn an_add_without_replace_never_overwrites() {
        let (_dir, store) = fresh().await;
        store.write(add("taken", "h1", 10)).await.unwrap();
        let outcome = store
            .write(WriteOp::Add {
                user: u("taken"),
                hash: "h2".into(),
                now: 20,
                expires_at: None,
                replace: false,
            })
            .await
            .unwrap();
        assert_eq!(outcome, WriteOutcome::Conflict);
        assert_eq!(
            store.get(&u("taken")).await.unwrap().unwrap().password_hash,
            "h1"
        );
    }

    #[tokio::test]
    async fn renew_extends_live_users_only_within_the_lifetime() {
        let (_dir, store) = fresh().await;
        store.write(add("live", "h", 1000)).await.unwrap(); // expires 1100
        let renew = |now, ttl| WriteOp::Renew {
            user: u("live"),
            now,
            ttl,
            max_lifetime: 500,
        };
        assert_eq!(
            store.write(renew(1050, 200)).await.unwrap(),
            WriteOutcome::Renewed {
                expires_at: Some(1250),
                limited: false
            }
        );
        assert_eq!(
            store.write(renew(1200, 1000)).await.unwrap(),
            WriteOutcome::Renewed {
                expires_at: Some(1500),
                limited: true
            },
            "held to created_at + max_lifetime"
        );
        assert_eq!(
            store.write(renew(1210, 1)).await.unwrap(),
            WriteOutcome::Renewed {
                expires_at: Some(1500),
                limited: false
            },
            "a renewal never shortens"
        );
        assert_eq!(
            store.write(renew(1500, 10)).await.unwrap(),
            WriteOutcome::NotLive,
            "expired"
        );
        let missing = WriteOp::Renew {
            user: u("nobody"),
            now: 0,
            ttl: 1,
            max_lifetime: 1,
        };
        assert_eq!(store.write(missing).await.unwrap(), WriteOutcome::NotLive);
    }

    #[tokio::test]
    async fn sweep_removes_expired_rows_in_bounded_batches() {
        let (_dir, store) = fresh().await;
        for i in 0..25 {
            store.write(add(&format!("old-{i}"), "h", 0)).await.unwrap(); // expires 100
        }
        store.write(add("young", "h", 1000)).await.unwrap(); // expires 1100
        let sweep = |limit| WriteOp::Sweep { now: 100, limit };
        assert_eq!(
            store.write(sweep(10)).await.unwrap(),
            WriteOutcome::Swept { removed: 10 }
        );
        assert_eq!(
            store.write(sweep(10)).await.unwrap(),
            WriteOutcome::Swept { removed: 10 }
        );
        assert_eq!(
            store.write(sweep(10)).await.unwrap(),
            WriteOutcome::Swept { removed: 5 }
        );
        assert_eq!(store.count().await.unwrap(), 1);
        assert_eq!(store.count_live(100).await.unwrap(), 1);
        assert_eq!(
            store.count_live(1100).await.unwrap(),
            0,
            "expired at its expiry second"
        );
    }

    #[tokio::test]
    async fn list_filters_by_prefix_pages_and_hides_the_expired() {
        let (_dir, store) = fresh().await;
        for name in ["ci-a", "ci-b", "ci-c", "ci_d", "cj", "other"] {
            store.write(add(name, "h", 1000)).await.unwrap();
        }
        store.write(add("ci-old", "h", 0)).await.unwrap();
        let names = |v: Vec<ListedUser>| v.into_iter().map(|u| u.username).collect::<Vec<_>>();
        let q = |prefix: &str, after: Option<&str>, limit| ListQuery {
            prefix: prefix.into(),
            after: after.map(Into::into),
            limit,
            now: 500,
        };
        assert_eq!(
            names(store.list(q("ci-", None, 10)).await.unwrap()),
            ["ci-a", "ci-b", "ci-c"]
        );
        assert_eq!(
            names(store.list(q("ci", None, 2)).await.unwrap()),
            ["ci-a", "ci-b"]
        );
        assert_eq!(
            names(store.list(q("ci", Some("ci-b"), 10)).await.unwrap()),
            ["ci-c", "ci_d"]
        );
        assert_eq!(store.list(q("", None, 100)).await.unwrap().len(), 6);
    }

    #[tokio::test]
    async fn a_missing_file_is_refused_unless_creation_is_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let err = SqliteStore::open(path.clone(), table(), Create::Never)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::Missing(_)), "{err}");
        assert!(!path.exists());
        SqliteStore::open(path.clone(), table(), Create::IfMissing)
            .await
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, FILE_MODE);
    }

    #[tokio::test]
    async fn wal_and_full_sync_are_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let store = SqliteStore::open(path.clone(), table(), Create::IfMissing)
            .await
            .unwrap();
        store
            .write(WriteOp::Remove {
                user: Username::parse("x").unwrap(),
            })
            .await
            .unwrap();
        let conn = Connection::open(&path).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        // synchronous is per connection: read the writer's own setting.
        let writer = open_writer(&path, &table(), Create::Never).unwrap();
        let sync: i64 = writer
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
        assert!(dir.path().join("db.sqlite-wal").exists());
    }

    #[tokio::test]
    async fn the_original_schema_is_adopted_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("original.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE users (username integer PRIMARY KEY, password varchar(64));
                 INSERT INTO users VALUES (1423382819, '{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=');
                 INSERT INTO users VALUES (1423382819123, '{SHA}x');",
            )
            .unwrap();
        }
        let store = SqliteStore::open(path.clone(), table(), Create::Never)
            .await
            .unwrap();
        let row = store
            .get(&Username::parse("1423382819").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.password_hash, "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=");
        assert_eq!(row.created_at, 1_423_382_819);
        let ms = store
            .get(&Username::parse("1423382819123").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ms.created_at, 1_423_382_819);
        // Text names now fit where the original's integer key refused them.
        store.write(add("build-7", "{SHA}y", 5)).await.unwrap();
        assert_eq!(store.count().await.unwrap(), 3);
        // Apache's query of the original still finds the adopted users.
        let conn = Connection::open(&path).unwrap();
        let hash: String = conn
            .query_row(
                "SELECT password FROM users WHERE username = ?1",
                ["1423382819"],
                |r| r.get(0),
            )
            .unwrap();
        assert!(hash.starts_with("{SHA}"));
    }

    #[test]
    fn migrations_run_once_and_a_newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn, &table()).unwrap().len(), SQLITE.len());
        assert!(migrate(&mut conn, &table()).unwrap().is_empty());
        conn.execute(
            "INSERT INTO rubber_migrations VALUES ('users', 999, 'future', 0)",
            [],
        )
        .unwrap();
        assert!(matches!(
            migrate(&mut conn, &table()),
            Err(StoreError::SchemaTooNew { found: 999, .. })
        ));
    }

    #[test]
    fn tables_are_migrated_independently() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, &table()).unwrap();
        let other = TableName::parse("other_users").unwrap();
        assert_eq!(migrate(&mut conn, &other).unwrap().len(), SQLITE.len());
    }

    #[tokio::test]
    async fn concurrent_writes_share_commits() {
        let (_dir, store) = fresh().await;
        let writes: Vec<_> = (0..300)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.write(add(&format!("u{i}"), "h", 1)).await })
            })
            .collect();
        for w in writes {
            assert_eq!(
                w.await.unwrap().unwrap(),
                WriteOutcome::Added { replaced: false }
            );
        }
        assert_eq!(store.count().await.unwrap(), 300);
        let commits = store.commit_count();
        assert!(
            (1..300).contains(&commits),
            "{commits} commits for 300 writes"
        );
    }

    #[tokio::test]
    async fn one_failing_write_does_not_fail_its_batch_neighbours() {
        let (dir, store) = fresh().await;
        let conn = Connection::open(dir.path().join("db.sqlite")).unwrap();
        conn.execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON users WHEN NEW.username = 'poison'
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
        drop(conn);
        let writes: Vec<_> = ["a", "b", "poison", "c", "d"]
            .into_iter()
            .map(|name| {
                let store = store.clone();
                tokio::spawn(async move { (name, store.write(add(name, "h", 1)).await) })
            })
            .collect();
        for w in writes {
            let (name, result) = w.await.unwrap();
            assert_eq!(result.is_err(), name == "poison", "{name}: {result:?}");
        }
        assert_eq!(store.count().await.unwrap(), 4);
        // The writer is not left inside a transaction.
        store.write(add("after", "h", 1)).await.unwrap();
        store.ping().await.unwrap();
    }

    #[tokio::test]
    async fn ping_fails_while_another_process_holds_the_write_lock() {
        let (dir, store) = fresh().await;
        store.ping().await.unwrap();
        let blocker = Connection::open(dir.path().join("db.sqlite")).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        assert!(store.ping().await.is_err(), "a write would block now");
        blocker.execute_batch("ROLLBACK").unwrap();
        // The writer recovers on its own once the lock is gone.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.ping().await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "writer did not recover"
            );
        }
    }

    #[tokio::test]
    async fn close_commits_what_was_queued_and_removes_the_wal() {
        let (dir, store) = fresh().await;
        let writes: Vec<_> = (0..50)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.write(add(&format!("q{i}"), "h", 1)).await })
            })
            .collect();
        tokio::task::yield_now().await;
        store.close().await;
        let mut acknowledged = 0;
        for w in writes {
            match w.await.unwrap() {
                Ok(_) => acknowledged += 1,
                Err(e) => assert!(matches!(e, StoreError::WriterGone), "{e}"),
            }
        }
        assert!(
            !dir.path().join("db.sqlite-wal").exists(),
            "WAL folded in and removed"
        );
        let conn = Connection::open(dir.path().join("db.sqlite")).unwrap();
        let stored: i64 = conn
            .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            stored, acknowledged,
            "every acknowledged write, and only those"
        );
        assert!(matches!(
            store.write(WriteOp::Ping).await,
            Err(StoreError::WriterGone)
        ));
    }

    #[test]
    fn write_op_debug_leaves_the_hash_out() {
        let shown = format!("{:?}", add("u", "$apr1$secret-hash", 1));
        assert!(!shown.contains("secret-hash"), "{shown}");
        assert!(shown.contains("Username(u)"), "{shown}");
    }

    #[tokio::test]
    async fn a_batch_commits_every_job_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db.sqlite"), table(), Create::IfMissing)
            .await
            .unwrap();
        let u = |s: &str| Username::parse(s).unwrap();
        let (a, b, c) = tokio::join!(
            store.write(add("a", "h1", 10)),
            store.write(add("a", "h2", 20)),
            store.write(WriteOp::Cleanup {
                cutoff: 15,
                limit: 10
            }),
        );
        assert_eq!(a.unwrap(), WriteOutcome::Added { replaced: false });
        assert_eq!(b.unwrap(), WriteOutcome::Added { replaced: true });
        // created_at was refreshed to 20 by the replacement, so the cleanup
        // queued after it keeps the user.
        assert_eq!(c.unwrap(), WriteOutcome::CleanedUp { removed: 0 });
        let row = store.get(&u("a")).await.unwrap().unwrap();
        assert_eq!((row.password_hash.as_str(), row.created_at), ("h2", 20));
    }
}
