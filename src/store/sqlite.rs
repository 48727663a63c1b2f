//! SQLite backend: WAL mode with synchronous=FULL, one writer thread that
//! drains the write queue into group commits and keeps the WAL within its
//! bound, and a small pool of reader connections used from the blocking
//! thread pool.

use std::fs::OpenOptions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;

use super::migrations::{Migration, SQLITE};
use super::policy::{
    self, expired_condition, live_condition, Backend, Failed, NewRefresh, NewRow, Reach, RowOps,
};
use super::queue::WriteQueue;
use super::{
    Create, ListQuery, ListedUser, LiveCredentials, RefreshRow, StoreError, UserRow, WriteOp,
    WriteOutcome,
};
use crate::config::TableName;
use crate::domain::Username;

/// How long a statement waits for a lock held by another process (the CLI,
/// a cron job, Apache checkpointing) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a health check waits for the writer to take the write lock.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a RESTART or TRUNCATE checkpoint waits for readers still on
/// the WAL (and for a write lock held by another process) before it settles
/// for copying what it can. Writes queue meanwhile.
const CHECKPOINT_WAIT: Duration = Duration::from_millis(100);
/// How long writes pause before the writer empties the WAL.
const IDLE_CHECKPOINT_AFTER: Duration = Duration::from_secs(1);
/// Idle reader connections kept open. A credential check reads in place on
/// an async worker; other reads go to the blocking pool.
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
    /// The file opened at start: if the path comes to name another file or
    /// none (deleted, replaced), every read and write fails rather than go
    /// on in a file nobody else sees.
    file: FileId,
    table: TableName,
    /// The migrations this open applied.
    applied: Vec<Migration>,
    queue: WriteQueue,
    /// The query of `get`, the credential check's read.
    get_sql: String,
    readers: Mutex<Vec<Connection>>,
}

impl SqliteStore {
    pub async fn open(
        path: PathBuf,
        table: TableName,
        create: Create,
        wal: WalLimit,
    ) -> Result<Self, StoreError> {
        let (queue, rx, counts) = WriteQueue::new();
        let writer_path = path.clone();
        let writer_table = table.clone();
        // Opening, migrating and the writer loop all run on one dedicated
        // thread that owns the only write connection, under a runtime of its
        // own: the writer's waits on SQLite and the disk block that thread
        // only.
        let (ready_tx, ready_rx) = oneshot::channel();
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                let _entered = span.enter();
                let opened = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .map_err(|e| {
                        StoreError::Database(format!("cannot start the writer's runtime: {e}"))
                    })
                    .and_then(|rt| {
                        Ok((rt, open_writer(&writer_path, &writer_table, create, wal)?))
                    });
                let (runtime, (conn, applied)) = match opened {
                    Ok(ready) => ready,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let file = match FileId::of(&writer_path) {
                    Ok(file) => file,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let writer = match Writer::new(conn, &writer_table, writer_path, file, wal) {
                    Ok(writer) => writer,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok((file, applied)));
                runtime.block_on(policy::run_writers(vec![writer], rx, &counts));
            })
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        let (file, applied) = ready_rx.await.map_err(|_| StoreError::WriterGone)??;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                file,
                get_sql: get_query(&table),
                table,
                applied,
                queue,
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The migrations this open applied, oldest first.
    pub fn applied_migrations(&self) -> &[Migration] {
        &self.inner.applied
    }

    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        self.inner.queue.write(op, None).await
    }

    /// Lets the writer commit what is queued, then closes every connection,
    /// so that SQLite folds the WAL into the database file and removes the
    /// -wal and -shm files. Writes after this answer `WriterGone`.
    pub async fn close(&self) {
        self.inner.queue.close().await;
        if let Ok(mut idle) = self.inner.readers.lock() {
            idle.clear();
        }
    }

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

    /// A user's row. This is the read every credential check makes, so it
    /// runs in place on a pooled connection: a point read by primary key
    /// takes microseconds, less than a trip to the blocking pool. Should it
    /// have to wait for a lock (rare in WAL mode, where a reader waits only
    /// while the WAL index is rebuilt), it goes to the blocking pool with the
    /// full busy timeout instead of holding up the async worker.
    pub async fn get(&self, user: &Username) -> Result<Option<UserRow>, StoreError> {
        if let Some(result) = self.get_in_place(user) {
            self.inner.queue.count(&result);
            return result;
        }
        let (user, sql) = (user.clone(), self.inner.get_sql.clone());
        self.read(move |conn| Ok(select_user(conn, &user, &sql)?))
            .await
    }

    /// The read of [`SqliteStore::get`] on the calling thread, or None when
    /// it would have to wait for a lock.
    fn get_in_place(&self, user: &Username) -> Option<Result<Option<UserRow>, StoreError>> {
        let inner = &self.inner;
        if let Err(e) = inner.file.check(&inner.path) {
            return Some(Err(e));
        }
        let pooled = inner.readers.lock().ok().and_then(|mut v| v.pop());
        let conn = match pooled.map_or_else(|| open_reader(&inner.path), Ok) {
            Ok(conn) => conn,
            Err(e) => return Some(Err(e)),
        };
        let result = conn
            .busy_timeout(Duration::ZERO)
            .and_then(|()| select_user(&conn, user, &inner.get_sql));
        let busy =
            matches!(&result, Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy));
        if conn.busy_timeout(BUSY_TIMEOUT).is_ok() {
            if let Ok(mut idle) = inner.readers.lock() {
                if idle.len() < MAX_IDLE_READERS {
                    idle.push(conn);
                }
            }
        }
        (!busy).then(|| result.map_err(StoreError::from))
    }

    pub async fn count(&self) -> Result<u64, StoreError> {
        let sql = format!("SELECT count(*) FROM \"{}\"", self.inner.table);
        self.read(move |conn| Ok(conn.query_row(&sql, [], |r| r.get::<_, i64>(0))? as u64))
            .await
    }

    pub async fn count_live(&self, now: i64) -> Result<u64, StoreError> {
        let sql = format!(
            "SELECT count(*) FROM \"{}\" WHERE {}",
            self.inner.table,
            live_condition("?1")
        );
        self.read(move |conn| Ok(conn.query_row(&sql, [now], |r| r.get::<_, i64>(0))? as u64))
            .await
    }

    pub async fn live_credentials(&self, now: i64) -> Result<LiveCredentials, StoreError> {
        let table = &self.inner.table;
        let users_sql = format!(
            "SELECT username, password FROM \"{table}\" WHERE {} ORDER BY username",
            live_condition("?1")
        );
        let next_sql = format!("SELECT min(expires_at) FROM \"{table}\" WHERE expires_at > ?1");
        self.read(move |conn| {
            // One transaction, so that the users and the next expiry agree.
            conn.execute_batch("BEGIN")?;
            let read = (|| {
                let rows = conn
                    .prepare(&users_sql)?
                    .query_map([now], |r| Ok((utf8_text(r, 0)?, utf8_text(r, 1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                let mut users = Vec::with_capacity(rows.len());
                let mut unreadable = 0;
                for row in rows {
                    match row {
                        (Some(name), Some(hash)) => users.push((name, hash)),
                        _ => unreadable += 1,
                    }
                }
                let next_expiry = conn.query_row(&next_sql, [now], |r| r.get(0))?;
                Ok::<_, rusqlite::Error>(LiveCredentials {
                    users,
                    unreadable,
                    next_expiry,
                })
            })();
            conn.execute_batch("COMMIT")?;
            Ok(read?)
        })
        .await
    }

    pub async fn refresh(&self, digest: &str) -> Result<Option<RefreshRow>, StoreError> {
        let sql = format!(
            "SELECT username, service, issued_at, credential FROM \"{}_refresh\" WHERE digest = ?1",
            self.inner.table
        );
        let digest = digest.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([digest], |r| {
                    Ok(RefreshRow {
                        username: r.get(0)?,
                        service: r.get(1)?,
                        issued_at: r.get(2)?,
                        credential: r.get(3)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    pub async fn list(&self, q: ListQuery) -> Result<Vec<ListedUser>, StoreError> {
        // Every character a name may hold sorts below U+007F, so the names
        // with a prefix are exactly those in [prefix, prefix + U+007F).
        let sql = format!(
            "SELECT username, created_at, expires_at, scopes FROM \"{}\"
             WHERE username >= ?1 AND username < ?2 AND username > ?3 AND {}
             ORDER BY username LIMIT ?5",
            self.inner.table,
            live_condition("?4")
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
                    scopes: r.get(3)?,
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
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            inner.file.check(&inner.path)?;
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

/// The write connection, and the migrations it applied.
fn open_writer(
    path: &Path,
    table: &TableName,
    create: Create,
    wal: WalLimit,
) -> Result<(Connection, Vec<Migration>), StoreError> {
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
    // Every commit reaches the disk before a write is acknowledged. The
    // writer checkpoints between batches (see WalUpkeep), not inside a commit
    // that requests are waiting for; a WAL file that grew past
    // journal_size_limit is cut back to it when the WAL restarts.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {}",
        wal.kept_bytes()
    ))?;
    let applied = migrate(&mut conn, table)?;
    Ok((conn, applied))
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

/// Checks what a start would need of the database file, changing nothing:
/// it exists (or is the default, which a start creates), is an SQLite
/// database with a schema this build knows, and the service may write it and
/// its directory (WAL mode keeps two files beside it). Returns what was
/// checked.
pub fn check(path: &Path, table: &TableName, is_default: bool) -> Result<String, StoreError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let exists = path.exists();
    if !exists && !is_default {
        return Err(StoreError::Missing(path.to_owned()));
    }
    let targets: &[(&str, &Path)] = if exists {
        &[("database file", path), ("directory", dir)]
    } else {
        &[("directory", dir)]
    };
    for (what, target) in targets {
        let c_path = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
            .map_err(|e| StoreError::Database(e.to_string()))?;
        // SAFETY: access only reads the NUL-terminated path.
        if unsafe { libc::access(c_path.as_ptr(), libc::R_OK | libc::W_OK) } != 0 {
            return Err(StoreError::NotWritable(format!(
                "the service cannot read and write the {what} {}: {}; WAL mode writes the file and two beside it",
                target.display(),
                std::io::Error::last_os_error()
            )));
        }
    }
    if !exists {
        return Ok(format!(
            "database file {} does not exist: serve creates it (the default database_url), and may create files in {}",
            path.display(),
            dir.display()
        ));
    }
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let recorded: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rubber_migrations')",
        [],
        |r| r.get(0),
    )?;
    let found: i64 = if recorded {
        conn.query_row(
            "SELECT coalesce(max(version), 0) FROM rubber_migrations WHERE tbl = ?1",
            [table.as_str()],
            |r| r.get(0),
        )?
    } else {
        0
    };
    let known = SQLITE.last().map_or(0, |m| m.version);
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    // The write lock a start takes, taken and given back.
    conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK")?;
    Ok(if found < known {
        format!(
            "database file {} is writable; table {table} has schema version {found} of {known}: serve and migrate apply the rest",
            path.display()
        )
    } else {
        format!(
            "database file {} is writable; table {table} has the current schema (version {known})",
            path.display()
        )
    })
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

/// The query of [`SqliteStore::get`] for `table`.
fn get_query(table: &TableName) -> String {
    format!(
        "SELECT username, password, created_at, expires_at, scopes FROM \"{table}\" WHERE username = ?1"
    )
}

fn select_user(
    conn: &Connection,
    user: &Username,
    sql: &str,
) -> Result<Option<UserRow>, rusqlite::Error> {
    conn.prepare_cached(sql)?
        .query_row([user.as_str()], |r| {
            Ok(UserRow {
                username: r.get(0)?,
                password_hash: r.get(1)?,
                created_at: r.get(2)?,
                expires_at: r.get(3)?,
                scopes: r.get(4)?,
            })
        })
        .optional()
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
    insert_refresh: String,
    delete_refresh: String,
    trim_refresh: String,
    delete_orphan_refresh: String,
}

impl Statements {
    fn new(table: &TableName) -> Self {
        Self {
            update: format!(
                "UPDATE \"{table}\" SET password = ?2, created_at = ?3, expires_at = ?4, scopes = ?5 WHERE username = ?1"
            ),
            insert_new: format!(
                "INSERT INTO \"{table}\" (username, password, created_at, expires_at, scopes) VALUES (?1, ?2, ?3, ?4, ?5)
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
                 (SELECT rowid FROM \"{table}\" WHERE {} LIMIT ?2)",
                expired_condition("?1")
            ),
            insert_refresh: format!(
                "INSERT INTO \"{table}_refresh\" (digest, username, service, issued_at, credential)
                 VALUES (?1, ?2, ?3, ?4, ?5)"
            ),
            delete_refresh: format!("DELETE FROM \"{table}_refresh\" WHERE username = ?1"),
            trim_refresh: format!(
                "DELETE FROM \"{table}_refresh\" WHERE rowid IN
                 (SELECT rowid FROM \"{table}_refresh\" WHERE username = ?1
                  ORDER BY issued_at DESC, rowid DESC LIMIT -1 OFFSET ?2)"
            ),
            delete_orphan_refresh: format!(
                "DELETE FROM \"{table}_refresh\" WHERE rowid IN
                 (SELECT r.rowid FROM \"{table}_refresh\" r
                  WHERE NOT EXISTS (SELECT 1 FROM \"{table}\" u WHERE u.username = r.username)
                  LIMIT ?1)"
            ),
        }
    }
}

/// The writer's connection. It runs on a thread of its own, where blocking
/// on SQLite (and on the disk) holds up nothing else.
struct Writer {
    /// Declared before `wal`, whose frame count its WAL hook writes to: a
    /// field is dropped in the order declared.
    conn: Connection,
    sql: Statements,
    path: PathBuf,
    file: FileId,
    wal: WalUpkeep,
}

impl Writer {
    fn new(
        conn: Connection,
        table: &TableName,
        path: PathBuf,
        file: FileId,
        limit: WalLimit,
    ) -> Result<Self, StoreError> {
        let page_size: u64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let frames = Box::new(AtomicU32::new(0));
        // SAFETY: the hook only reads its argument as the AtomicU32 boxed
        // here, whose address is stable and which the Writer drops after the
        // connection (see the order of its fields), so the connection never
        // calls the hook with a dangling pointer.
        unsafe {
            rusqlite::ffi::sqlite3_wal_hook(
                conn.handle(),
                Some(record_wal_frames),
                std::ptr::from_ref::<AtomicU32>(&frames).cast_mut().cast(),
            );
        }
        // Beside the file SQLite opened: the path's target when the path is
        // a symbolic link.
        let mut wal_path = conn
            .path()
            .filter(|p| !p.is_empty())
            .map_or_else(|| path.clone(), PathBuf::from)
            .into_os_string();
        wal_path.push("-wal");
        Ok(Self {
            conn,
            sql: Statements::new(table),
            path,
            file,
            wal: WalUpkeep {
                limit,
                frame_bytes: page_size + WAL_FRAME_HEADER,
                frames,
                wal_path: wal_path.into(),
                out_of_space: false,
                held_back: None,
            },
        })
    }

    /// Runs a checkpoint on the writer's connection, between transactions:
    /// no frame is added to the WAL while it runs, so a PASSIVE one copies
    /// every frame no reader still needs, and the next transaction then
    /// starts the WAL over from its beginning.
    fn checkpoint(&mut self, mode: Checkpoint) {
        let started = Instant::now();
        let waits = mode != Checkpoint::Passive;
        let sql = match mode {
            Checkpoint::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
            Checkpoint::Restart => "PRAGMA wal_checkpoint(RESTART)",
            Checkpoint::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
        };
        if waits {
            let _ = self.conn.busy_timeout(CHECKPOINT_WAIT);
        }
        let result = self.conn.query_row(sql, [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        });
        if waits {
            let _ = self.conn.busy_timeout(BUSY_TIMEOUT);
        }
        match result {
            Ok((blocked, frames, copied)) => {
                if waits && blocked == 0 {
                    // Started over (and, for TRUNCATE, emptied): no frame
                    // in use until the next commit says otherwise.
                    self.wal.frames.store(0, Ordering::Relaxed);
                    self.wal.held_back = None;
                } else if waits {
                    self.wal.hold_back(frames, copied);
                }
                tracing::debug!(
                    mode = ?mode,
                    frames,
                    copied,
                    blocked = blocked != 0,
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    "checkpoint"
                );
            }
            Err(e) => tracing::warn!(mode = ?mode, error = %e, "checkpoint failed"),
        }
    }
}

/// Bytes of a WAL frame besides its page.
const WAL_FRAME_HEADER: u64 = 24;

/// The most the SQLite WAL may hold, and the sizes the writer derives
/// from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalLimit {
    bytes: u64,
}

impl WalLimit {
    /// `megabytes` MiB.
    pub fn megabytes(megabytes: u64) -> Self {
        Self {
            bytes: megabytes.saturating_mul(1 << 20),
        }
    }

    /// WAL content past which the writer checkpoints between batches. Small
    /// enough that one checkpoint copies few pages (a pause of a few
    /// milliseconds for the writes queued meanwhile).
    fn checkpoint_bytes(self) -> u64 {
        self.bytes / 16
    }

    /// WAL content past which the writer's checkpoint waits (up to
    /// CHECKPOINT_WAIT) for readers still on the WAL, which keep a PASSIVE
    /// one from copying everything and the WAL from starting over.
    fn restart_bytes(self) -> u64 {
        self.bytes / 2
    }

    /// The size a WAL file that grew beyond it is cut back to when the WAL
    /// starts over (SQLite's journal_size_limit).
    fn kept_bytes(self) -> u64 {
        self.bytes / 4
    }
}

impl Default for WalLimit {
    fn default() -> Self {
        Self::megabytes(64)
    }
}

/// The kinds of checkpoint the writer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checkpoint {
    /// Copies what no reader needs; waits for nothing.
    Passive,
    /// Also waits for readers, so that the WAL starts over.
    Restart,
    /// As Restart, and empties the WAL file.
    Truncate,
}

/// What the writer knows of the WAL: its bound, and the frames it holds as
/// SQLite reports them after each commit.
struct WalUpkeep {
    limit: WalLimit,
    /// Bytes of one frame: a page and its header.
    frame_bytes: u64,
    /// Written by [`record_wal_frames`] after every commit.
    frames: Box<AtomicU32>,
    wal_path: PathBuf,
    /// The last write failed for want of space (SQLITE_FULL).
    out_of_space: bool,
    /// Set while a reader kept the last RESTART or TRUNCATE from starting
    /// the WAL over: until when the writer runs PASSIVE ones only, and the
    /// pause it will take after the next one blocked.
    held_back: Option<(Instant, Duration)>,
}

/// The first pause of waiting checkpoints after one was blocked by a
/// reader; it doubles with each blocked one, up to RESTART_BACKOFF_MAX.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);

impl WalUpkeep {
    /// Bytes of the WAL in use: up to its last frame.
    fn in_use(&self) -> u64 {
        u64::from(self.frames.load(Ordering::Relaxed)) * self.frame_bytes
    }

    /// Whether checkpoints that wait for readers are paused: the last one
    /// was blocked by a reader a moment ago.
    fn waiting_paused(&self) -> bool {
        self.held_back
            .is_some_and(|(until, _)| Instant::now() < until)
    }

    /// A waiting checkpoint was blocked by a reader (a long read
    /// transaction: a backup, a sqlite3 shell): rather than wait
    /// CHECKPOINT_WAIT after every batch while it lasts, the writer runs
    /// PASSIVE checkpoints only for a pause that doubles each time.
    fn hold_back(&mut self, frames: i64, copied: i64) {
        let pause = match self.held_back {
            None => RESTART_BACKOFF,
            Some((_, last)) => (last * 2).min(RESTART_BACKOFF_MAX),
        };
        self.held_back = Some((Instant::now() + pause, pause));
        let wal_bytes = std::fs::metadata(&self.wal_path).map_or(0, |m| m.len());
        tracing::warn!(
            wal_bytes,
            frames,
            copied,
            retry_in_s = pause.as_secs(),
            "a read transaction keeps the WAL from starting over; it grows until that reader ends"
        );
    }

    /// WAL content past which the writer checkpoints: the limit's share,
    /// or a quarter of the space left beside the WAL when that is less, so
    /// that on a nearly full disk the WAL starts over in the space it has
    /// rather than growing into what is left.
    fn checkpoint_threshold(&self) -> u64 {
        let share = self.limit.checkpoint_bytes();
        if self.in_use() == 0 {
            return share;
        }
        match available_bytes(&self.wal_path) {
            Some(free) => share.min(free / 4),
            None => share,
        }
    }
}

/// Bytes an unprivileged writer may still take on the filesystem holding
/// `path`'s directory; None when it cannot be told.
fn available_bytes(path: &Path) -> Option<u64> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let dir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `dir` is a NUL-terminated path and `stat` is writable memory
    // of the size statvfs fills; it is read only when the call succeeded.
    let stat = unsafe {
        if libc::statvfs(dir.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// SQLite's WAL hook: after every commit, the number of frames the WAL
/// holds. `count` is the writer's AtomicU32.
unsafe extern "C" fn record_wal_frames(
    count: *mut std::ffi::c_void,
    _db: *mut rusqlite::ffi::sqlite3,
    _schema: *const std::ffi::c_char,
    frames: std::ffi::c_int,
) -> std::ffi::c_int {
    // SAFETY: registered in Writer::new with the writer's AtomicU32, which
    // outlives the connection.
    let count = unsafe { &*count.cast::<AtomicU32>() };
    count.store(u32::try_from(frames).unwrap_or(0), Ordering::Relaxed);
    rusqlite::ffi::SQLITE_OK
}

/// A file's identity: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(path: &Path) -> Result<Self, StoreError> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path)
            .map(|m| Self {
                dev: m.dev(),
                ino: m.ino(),
            })
            .map_err(|e| StoreError::Database(format!("{}: {e}", path.display())))
    }

    /// Fails unless `path` still names this file.
    fn check(self, path: &Path) -> Result<(), StoreError> {
        match Self::of(path) {
            Ok(now) if now == self => Ok(()),
            _ => Err(StoreError::Database(format!(
                "the database file {} was deleted or replaced while in use; restore it, or restart the service to open what is there now",
                path.display()
            ))),
        }
    }
}

impl Backend for Writer {
    /// One IMMEDIATE transaction: the write lock is taken at BEGIN, so a lock
    /// held by another process (waited for up to BUSY_TIMEOUT) fails the
    /// batch before any statement runs.
    async fn commit(&mut self, ops: &[&WriteOp]) -> Result<Vec<WriteOutcome>, Failed> {
        if let Err(error) = self.file.check(&self.path) {
            return Err(Failed {
                reach: Reach::Batch,
                error,
            });
        }
        let result = self.transaction(ops).await;
        if let Err(e) = &result {
            // The WAL may be what filled the disk: the next upkeep
            // checkpoints so that the WAL starts over in the space it has.
            self.wal.out_of_space |= e.sqlite_error_code() == Some(ErrorCode::DiskFull);
        }
        // A failed statement or commit is rolled back when the transaction is
        // dropped, but that rollback's own failure is silent; left open, the
        // transaction would make every later BEGIN fail.
        if result.is_err() && !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::error!(error = %e, "rollback after a failed write failed");
            }
        }
        result.map_err(|e| Failed {
            reach: if is_global_failure(&e) {
                Reach::Batch
            } else {
                Reach::Statement
            },
            error: StoreError::from(e),
        })
    }

    /// Checkpoints once the WAL holds WalLimit::checkpoint_bytes (or a
    /// quarter of the space left on its filesystem, when that is less),
    /// waiting for readers once it holds WalLimit::restart_bytes or after a
    /// write failed for want of space, unless a reader blocked the last
    /// waiting one a moment ago (see WalUpkeep::hold_back).
    fn after_batch(&mut self) {
        let in_use = self.wal.in_use();
        let out_of_space = std::mem::take(&mut self.wal.out_of_space);
        if !out_of_space && in_use < self.wal.checkpoint_threshold()
            || self.file.check(&self.path).is_err()
        {
            return;
        }
        let wait = out_of_space || in_use >= self.wal.limit.restart_bytes();
        self.checkpoint(if wait && !self.wal.waiting_paused() {
            Checkpoint::Restart
        } else {
            Checkpoint::Passive
        });
    }

    fn idle_after(&self) -> Option<Duration> {
        Some(IDLE_CHECKPOINT_AFTER)
    }

    /// Empties the WAL file once writes pause.
    fn idle(&mut self) {
        let len = std::fs::metadata(&self.wal.wal_path).map_or(0, |m| m.len());
        if len > 0 && !self.wal.waiting_paused() && self.file.check(&self.path).is_ok() {
            self.checkpoint(Checkpoint::Truncate);
        }
    }

    async fn close(self) {
        if let Err((_, e)) = self.conn.close() {
            tracing::warn!(error = %e, "closing the database connection failed");
        }
    }
}

impl Writer {
    async fn transaction(
        &mut self,
        ops: &[&WriteOp],
    ) -> Result<Vec<WriteOutcome>, rusqlite::Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut rows = Rows {
            conn: &tx,
            sql: &self.sql,
        };
        let outcomes = policy::apply_all(&mut rows, ops).await?;
        tx.commit()?;
        Ok(outcomes)
    }
}

/// Failures that every job of a batch would meet alike: retrying the jobs
/// one by one would only repeat them.
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

/// The row operations on the writer's open transaction.
struct Rows<'a> {
    conn: &'a Connection,
    sql: &'a Statements,
}

impl RowOps for Rows<'_> {
    type Error = rusqlite::Error;

    async fn insert_new(&mut self, row: NewRow<'_>) -> Result<bool, Self::Error> {
        let args = params![
            row.user.as_str(),
            row.hash,
            row.created_at,
            row.expires_at,
            row.scopes
        ];
        Ok(self
            .conn
            .prepare_cached(&self.sql.insert_new)?
            .execute(args)?
            > 0)
    }

    /// New names are the common case: one statement for them.
    async fn upsert(&mut self, row: NewRow<'_>) -> Result<bool, Self::Error> {
        if self.insert_new(row).await? {
            return Ok(false);
        }
        let args = params![
            row.user.as_str(),
            row.hash,
            row.created_at,
            row.expires_at,
            row.scopes
        ];
        self.conn.prepare_cached(&self.sql.update)?.execute(args)?;
        Ok(true)
    }

    async fn delete(&mut self, user: &Username) -> Result<bool, Self::Error> {
        Ok(self
            .conn
            .prepare_cached(&self.sql.remove)?
            .execute([user.as_str()])?
            > 0)
    }

    /// No lock to take: the IMMEDIATE transaction holds the database's.
    async fn lifetime(
        &mut self,
        user: &Username,
    ) -> Result<Option<(i64, Option<i64>)>, Self::Error> {
        self.conn
            .prepare_cached(&self.sql.lookup)?
            .query_row([user.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
    }

    async fn set_expiry(&mut self, user: &Username, expires_at: i64) -> Result<(), Self::Error> {
        self.conn
            .prepare_cached(&self.sql.set_expiry)?
            .execute(params![user.as_str(), expires_at])?;
        Ok(())
    }

    async fn delete_created_before(&mut self, cutoff: i64, limit: u32) -> Result<u64, Self::Error> {
        Ok(self
            .conn
            .prepare_cached(&self.sql.cleanup)?
            .execute(params![cutoff, limit])? as u64)
    }

    async fn delete_expired(&mut self, now: i64, limit: u32) -> Result<u64, Self::Error> {
        Ok(self
            .conn
            .prepare_cached(&self.sql.sweep)?
            .execute(params![now, limit])? as u64)
    }

    async fn insert_refresh(&mut self, token: NewRefresh<'_>) -> Result<(), Self::Error> {
        self.conn
            .prepare_cached(&self.sql.insert_refresh)?
            .execute(params![
                token.digest,
                token.user.as_str(),
                token.service,
                token.issued_at,
                token.credential
            ])?;
        Ok(())
    }

    async fn delete_refresh(&mut self, user: &Username) -> Result<(), Self::Error> {
        self.conn
            .prepare_cached(&self.sql.delete_refresh)?
            .execute([user.as_str()])?;
        Ok(())
    }

    async fn trim_refresh(&mut self, user: &Username, keep: u32) -> Result<(), Self::Error> {
        self.conn
            .prepare_cached(&self.sql.trim_refresh)?
            .execute(params![user.as_str(), keep])?;
        Ok(())
    }

    async fn delete_orphan_refresh(&mut self, limit: u32) -> Result<(), Self::Error> {
        self.conn
            .prepare_cached(&self.sql.delete_orphan_refresh)?
            .execute([limit])?;
        Ok(())
    }
}

/// Column `index` when it is TEXT holding UTF-8; None for anything else.
/// A BLOB is None even when its bytes are UTF-8: SQLite never finds it by
/// a text name (a BLOB equals no TEXT), so neither this service's lookups
/// nor Apache's would, and it is no user for them.
fn utf8_text(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Option<String>> {
    Ok(match row.get_ref(index)? {
        rusqlite::types::ValueRef::Text(bytes) => {
            std::str::from_utf8(bytes).ok().map(str::to_owned)
        }
        _ => None,
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
            scopes: None,
            replace: true,
        }
    }

    /// Opens the store at `path` with the default WAL limit.
    async fn open_at(path: PathBuf, create: Create) -> Result<SqliteStore, StoreError> {
        SqliteStore::open(path, table(), create, WalLimit::default()).await
    }

    async fn fresh() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = open_at(dir.path().join("db.sqlite"), Create::IfMissing)
            .await
            .unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_missing_file_is_refused_unless_creation_is_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let err = open_at(path.clone(), Create::Never).await.err().unwrap();
        assert!(matches!(err, StoreError::Missing(_)), "{err}");
        assert!(!path.exists());
        open_at(path.clone(), Create::IfMissing).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, FILE_MODE);
    }

    #[tokio::test]
    async fn a_deleted_or_replaced_file_fails_reads_and_writes() {
        let (dir, store) = fresh().await;
        store.write(add("kept", "h", 1)).await.unwrap();
        let path = dir.path().join("db.sqlite");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let err = store.write(add("lost", "h", 1)).await.unwrap_err();
        assert!(err.to_string().contains("deleted or replaced"), "{err}");
        assert!(
            store.get(&u("kept")).await.is_err(),
            "no answer from a ghost"
        );
        assert!(store.ping().await.is_err(), "unhealthy");
        // A new file at the path is another file: still refused.
        drop(open_at(path.clone(), Create::IfMissing).await.unwrap());
        assert!(store.get(&u("kept")).await.is_err());
    }

    #[tokio::test]
    async fn wal_and_full_sync_are_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let store = open_at(path.clone(), Create::IfMissing).await.unwrap();
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
        let (writer, _) = open_writer(&path, &table(), Create::Never, WalLimit::default()).unwrap();
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
        let store = open_at(path.clone(), Create::Never).await.unwrap();
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

    /// Adds flat out from 32 tasks while one thread samples the WAL file's
    /// size and another reads as Apache does (its own connection, a 1 s
    /// busy timeout): the WAL stays within its bound, no read is refused,
    /// and the WAL file is emptied once the adds stop.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_within_its_bound_and_empties_when_writes_pause() {
        use std::sync::atomic::{AtomicBool, AtomicU64};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let limit = WalLimit::megabytes(2);
        let store = SqliteStore::open(path.clone(), table(), Create::IfMissing, limit)
            .await
            .unwrap();
        let wal = dir.path().join("db.sqlite-wal");
        let stop = Arc::new(AtomicBool::new(false));
        let largest = Arc::new(AtomicU64::new(0));
        let sampler = {
            let (stop, largest, wal) = (Arc::clone(&stop), Arc::clone(&largest), wal.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let len = std::fs::metadata(&wal).map_or(0, |m| m.len());
                    largest.fetch_max(len, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        let reader = {
            let (stop, path) = (Arc::clone(&stop), path.clone());
            std::thread::spawn(move || {
                let conn = Connection::open(&path).unwrap();
                conn.busy_timeout(Duration::from_secs(1)).unwrap();
                let (mut reads, mut refused) = (0, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let found = conn.query_row(
                        "SELECT password FROM users WHERE username = ?1",
                        [format!("w{}-{}", reads % 32, reads % 300)],
                        |r| r.get::<_, String>(0),
                    );
                    match found {
                        Ok(_) | Err(rusqlite::Error::QueryReturnedNoRows) => {}
                        Err(e) => refused.push(e.to_string()),
                    }
                    reads += 1;
                }
                (reads, refused)
            })
        };
        // 9,600 adds in batches of up to 32: unchecked, their WAL frames
        // would come to tens of megabytes.
        let writers: Vec<_> = (0..32)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..300 {
                        let hash = format!("{{SHA}}{w:04}{i:024}");
                        store
                            .write(add(&format!("w{w}-{i}"), &hash, 1))
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        assert_eq!(store.count().await.unwrap(), 9_600);
        stop.store(true, Ordering::Relaxed);
        sampler.join().unwrap();
        let (reads, refused) = reader.join().unwrap();
        let largest = largest.load(Ordering::Relaxed);
        assert!(largest > 0, "the adds went through the WAL");
        assert!(
            largest <= limit.bytes,
            "the WAL file reached {largest} bytes, beyond its bound of {}",
            limit.bytes
        );
        assert!(
            reads > 0 && refused.is_empty(),
            "{refused:?} of {reads} reads"
        );
        // Writes have paused: the writer empties the WAL file.
        let deadline = Instant::now() + Duration::from_secs(30);
        let len = || std::fs::metadata(&wal).map_or(0, |m| m.len());
        while len() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(len(), 0, "the WAL file once writes paused");
        assert_eq!(
            store.count().await.unwrap(),
            9_600,
            "all of it in the database"
        );
    }

    #[test]
    fn a_blocked_restart_pauses_waiting_checkpoints_for_longer_each_time() {
        let mut wal = WalUpkeep {
            limit: WalLimit::default(),
            frame_bytes: 4096 + WAL_FRAME_HEADER,
            frames: Box::new(AtomicU32::new(0)),
            wal_path: PathBuf::from("/nonexistent/db.sqlite-wal"),
            out_of_space: false,
            held_back: None,
        };
        assert!(!wal.waiting_paused());
        let mut pauses = Vec::new();
        for _ in 0..8 {
            wal.hold_back(10, 0);
            assert!(wal.waiting_paused(), "paused right after a blocked one");
            pauses.push(wal.held_back.unwrap().1.as_secs());
        }
        assert_eq!(pauses, [1, 2, 4, 8, 16, 30, 30, 30]);
        // Once the pause is over, a waiting checkpoint may run again.
        wal.held_back = Some((Instant::now(), RESTART_BACKOFF_MAX));
        assert!(!wal.waiting_paused());
    }

    #[test]
    fn write_op_debug_leaves_the_hash_out() {
        let shown = format!("{:?}", add("u", "$apr1$secret-hash", 1));
        assert!(!shown.contains("secret-hash"), "{shown}");
        assert!(shown.contains("Username(u)"), "{shown}");
    }
}
