//! What the store means, written once for both backends: when a user is
//! live, how each [`WriteOp`] is carried out in terms of a few row
//! operations, and how a batch of writes is committed and isolated when one
//! of them fails. A backend supplies only its SQL ([`RowOps`]) and its
//! connection handling ([`Backend`]); the writer loop that drains the queue
//! ([`run_writers`]) is the same for both.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::queue::{Job, Msg};
use super::{StoreError, WriteOp, WriteOutcome};
use crate::domain::Username;

/// Most writes committed in one transaction. Larger batches gain little: the
/// commit's durable write is paid once either way.
pub(super) const MAX_BATCH: usize = 512;

/// Whether a user whose expiry is `expires_at` (None: never, as rows of the
/// original tool) still works at `now`. The credential stops working at its
/// expiry second. [`live_condition`] is the same rule in SQL.
pub fn is_live(expires_at: Option<i64>, now: i64) -> bool {
    expires_at.is_none_or(|e| e > now)
}

/// The SQL condition [`is_live`] states, with the current time bound to the
/// placeholder `now` (`?` or `?4`). Apache's query in the deploy samples
/// states the same rule with the database's own clock.
pub(super) fn live_condition(now: &str) -> String {
    format!("(expires_at IS NULL OR expires_at > {now})")
}

/// The SQL condition for a row the sweeper removes: the negation of
/// [`live_condition`] among rows that expire at all.
pub(super) fn expired_condition(now: &str) -> String {
    format!("expires_at <= {now}")
}

/// The columns of a row being written.
#[derive(Clone, Copy)]
pub(super) struct NewRow<'a> {
    pub user: &'a Username,
    pub hash: &'a str,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub scopes: Option<&'a str>,
}

/// Most refresh tokens one credential holds: issuing another revokes its
/// oldest, so that a credential cannot fill the database with them.
pub const MAX_REFRESH_TOKENS: u32 = 16;

/// The columns of a refresh token being recorded.
#[derive(Clone, Copy)]
pub(super) struct NewRefresh<'a> {
    pub digest: &'a str,
    pub user: &'a Username,
    pub service: &'a str,
    pub issued_at: i64,
    pub credential: &'a str,
}

/// The row operations a backend provides inside an open transaction, each
/// one SQL statement or two. Everything they mean is decided in [`apply`].
#[allow(async_fn_in_trait)]
pub(super) trait RowOps {
    type Error;
    /// Inserts the row; false, changing nothing, when the name is taken.
    async fn insert_new(&mut self, row: NewRow<'_>) -> Result<bool, Self::Error>;
    /// Inserts the row, or replaces the password, creation time and expiry
    /// of the user of that name; true when it replaced one.
    async fn upsert(&mut self, row: NewRow<'_>) -> Result<bool, Self::Error>;
    /// Deletes the user; true when it existed.
    async fn delete(&mut self, user: &Username) -> Result<bool, Self::Error>;
    /// The user's creation time and expiry, locked against other writers
    /// until the transaction ends.
    async fn lifetime(
        &mut self,
        user: &Username,
    ) -> Result<Option<(i64, Option<i64>)>, Self::Error>;
    async fn set_expiry(&mut self, user: &Username, expires_at: i64) -> Result<(), Self::Error>;
    /// Deletes at most `limit` users created before `cutoff`.
    async fn delete_created_before(&mut self, cutoff: i64, limit: u32) -> Result<u64, Self::Error>;
    /// Deletes at most `limit` users expired at `now`.
    async fn delete_expired(&mut self, now: i64, limit: u32) -> Result<u64, Self::Error>;
    async fn insert_refresh(&mut self, token: NewRefresh<'_>) -> Result<(), Self::Error>;
    /// Deletes the user's refresh tokens.
    async fn delete_refresh(&mut self, user: &Username) -> Result<(), Self::Error>;
    /// [`RowOps::insert_new`] for each row of `rows`, whose names are
    /// distinct, in order: whether each was inserted. A backend that pays
    /// a round trip per statement does it in fewer.
    async fn insert_new_all(&mut self, rows: &[NewRow<'_>]) -> Result<Vec<bool>, Self::Error> {
        let mut inserted = Vec::with_capacity(rows.len());
        for row in rows {
            inserted.push(self.insert_new(*row).await?);
        }
        Ok(inserted)
    }
    /// [`RowOps::upsert`] for each row of `rows`, whose names are distinct,
    /// in order: whether each replaced a user.
    async fn upsert_all(&mut self, rows: &[NewRow<'_>]) -> Result<Vec<bool>, Self::Error> {
        let mut replaced = Vec::with_capacity(rows.len());
        for row in rows {
            replaced.push(self.upsert(*row).await?);
        }
        Ok(replaced)
    }
    /// [`RowOps::delete_refresh`] for each of `users`.
    async fn delete_refresh_all(&mut self, users: &[&Username]) -> Result<(), Self::Error> {
        for user in users {
            self.delete_refresh(user).await?;
        }
        Ok(())
    }
    /// Deletes the user's oldest refresh tokens beyond the newest `keep`.
    async fn trim_refresh(&mut self, user: &Username, keep: u32) -> Result<(), Self::Error>;
    /// Deletes at most `limit` refresh tokens whose user is gone.
    async fn delete_orphan_refresh(&mut self, limit: u32) -> Result<(), Self::Error>;
}

/// Most adds handed to the backend together by [`apply_all`].
const MAX_ADD_RUN: usize = 64;

/// Carries out `ops` in order inside the backend's open transaction, each
/// with the outcome it would have alone. Consecutive adds of distinct names
/// that all replace, or all do not, go to the backend together
/// ([`RowOps::upsert_all`], [`RowOps::insert_new_all`]).
pub(super) async fn apply_all<R: RowOps>(
    rows: &mut R,
    ops: &[&WriteOp],
) -> Result<Vec<WriteOutcome>, R::Error> {
    let mut outcomes = Vec::with_capacity(ops.len());
    let mut rest = ops;
    while let Some(&op) = rest.first() {
        let (replace, run) = adds_ahead(rest);
        if run.len() < 2 {
            outcomes.push(apply(rows, op).await?);
            rest = &rest[1..];
            continue;
        }
        let written: Vec<(bool, WriteOutcome)> = if replace {
            let replaced = rows.upsert_all(&run).await?;
            replaced
                .into_iter()
                .map(|replaced| (true, WriteOutcome::Added { replaced }))
                .collect()
        } else {
            let inserted = rows.insert_new_all(&run).await?;
            inserted
                .into_iter()
                .map(|new| {
                    let outcome = if new {
                        WriteOutcome::Added { replaced: false }
                    } else {
                        WriteOutcome::Conflict
                    };
                    (new, outcome)
                })
                .collect()
        };
        // As for one add: a new credential starts with no refresh tokens.
        let fresh: Vec<&Username> = run
            .iter()
            .zip(&written)
            .filter_map(|(row, &(new, _))| new.then_some(row.user))
            .collect();
        rows.delete_refresh_all(&fresh).await?;
        outcomes.extend(written.into_iter().map(|(_, outcome)| outcome));
        rest = &rest[run.len()..];
    }
    Ok(outcomes)
}

/// The rows of the adds at the head of `ops` that replace as the first
/// does, and whether they replace; up to the first other write, the first
/// name seen twice, or [`MAX_ADD_RUN`].
fn adds_ahead<'a>(ops: &[&'a WriteOp]) -> (bool, Vec<NewRow<'a>>) {
    let mut run: Vec<NewRow<'a>> = Vec::new();
    let mut run_replaces = None;
    for &op in ops.iter().take(MAX_ADD_RUN) {
        let WriteOp::Add {
            user,
            hash,
            now,
            expires_at,
            scopes,
            replace,
        } = op
        else {
            break;
        };
        if *run_replaces.get_or_insert(*replace) != *replace
            || run.iter().any(|row| row.user == user)
        {
            break;
        }
        run.push(NewRow {
            user,
            hash,
            created_at: *now,
            expires_at: *expires_at,
            scopes: scopes.as_deref(),
        });
    }
    (run_replaces.unwrap_or(false), run)
}

/// Splits `items` into slices whose lengths are powers of two, at most
/// `max` (itself one), largest first: a backend that prepares a statement
/// per number of rows then prepares few.
pub(super) fn power_of_two_chunks<T>(mut items: &[T], max: usize) -> Vec<&[T]> {
    debug_assert!(max.is_power_of_two());
    let mut chunks = Vec::new();
    while !items.is_empty() {
        let len = max.min(1 << items.len().ilog2());
        let (chunk, rest) = items.split_at(len);
        chunks.push(chunk);
        items = rest;
    }
    chunks
}

/// Carries out one write inside the backend's open transaction.
pub(super) async fn apply<R: RowOps>(rows: &mut R, op: &WriteOp) -> Result<WriteOutcome, R::Error> {
    Ok(match op {
        WriteOp::Add {
            user,
            hash,
            now,
            expires_at,
            scopes,
            replace,
        } => {
            let row = NewRow {
                user,
                hash,
                created_at: *now,
                expires_at: *expires_at,
                scopes: scopes.as_deref(),
            };
            let outcome = if *replace {
                WriteOutcome::Added {
                    replaced: rows.upsert(row).await?,
                }
            } else if rows.insert_new(row).await? {
                WriteOutcome::Added { replaced: false }
            } else {
                return Ok(WriteOutcome::Conflict);
            };
            // A new credential starts with no refresh tokens: none of an
            // earlier one of the same name, whether replaced or removed
            // (those of a removed one may outlive it until a sweep takes
            // them), ever counts for it.
            rows.delete_refresh(user).await?;
            outcome
        }
        WriteOp::Remove { user } => {
            // The user's row, then its refresh tokens: the order an add
            // locks them in.
            let found = rows.delete(user).await?;
            rows.delete_refresh(user).await?;
            WriteOutcome::Removed { found }
        }
        WriteOp::Renew {
            user,
            now,
            ttl,
            max_lifetime,
        } => match plan_renew(rows.lifetime(user).await?, *now, *ttl, *max_lifetime) {
            RenewPlan::NotLive => WriteOutcome::NotLive,
            RenewPlan::NeverExpires => WriteOutcome::Renewed {
                expires_at: None,
                limited: false,
            },
            RenewPlan::Extend {
                expires_at,
                limited,
            } => {
                rows.set_expiry(user, expires_at).await?;
                WriteOutcome::Renewed {
                    expires_at: Some(expires_at),
                    limited,
                }
            }
        },
        WriteOp::Cleanup { cutoff, limit } => {
            let removed = rows.delete_created_before(*cutoff, *limit).await?;
            rows.delete_orphan_refresh(*limit).await?;
            WriteOutcome::CleanedUp { removed }
        }
        WriteOp::Sweep { now, limit } => {
            let removed = rows.delete_expired(*now, *limit).await?;
            rows.delete_orphan_refresh(*limit).await?;
            WriteOutcome::Swept { removed }
        }
        WriteOp::IssueRefresh {
            digest,
            user,
            service,
            issued_at,
            credential,
        } => {
            rows.insert_refresh(NewRefresh {
                digest,
                user,
                service,
                issued_at: *issued_at,
                credential,
            })
            .await?;
            rows.trim_refresh(user, MAX_REFRESH_TOKENS).await?;
            WriteOutcome::RefreshIssued
        }
        WriteOp::Ping => WriteOutcome::Pinged,
    })
}

/// What a renewal does to a user found with `lifetime` (creation, expiry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RenewPlan {
    /// No such user, or it has expired: a renewal never revives.
    NotLive,
    /// A row of the original tool, which never expires: nothing to do.
    NeverExpires,
    /// Set the expiry, and say whether max_lifetime held it back.
    Extend { expires_at: i64, limited: bool },
}

/// The expiry a renewal gives: `now + ttl`, held to `created_at +
/// max_lifetime`, and never earlier than it already is.
pub(super) fn plan_renew(
    lifetime: Option<(i64, Option<i64>)>,
    now: i64,
    ttl: u64,
    max_lifetime: u64,
) -> RenewPlan {
    match lifetime {
        None => RenewPlan::NotLive,
        Some((_, expires_at)) if !is_live(expires_at, now) => RenewPlan::NotLive,
        Some((_, None)) => RenewPlan::NeverExpires,
        Some((created_at, Some(current))) => {
            let wanted = now.saturating_add(ttl as i64);
            let ceiling = created_at.saturating_add(max_lifetime as i64);
            RenewPlan::Extend {
                expires_at: wanted.min(ceiling).max(current),
                limited: wanted > ceiling,
            }
        }
    }
}

/// How far a failed transaction's cause reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// One statement's own fault: the other writes of the batch may succeed
    /// alone.
    Statement,
    /// Every write would fail alike now (locked, read-only, full, denied).
    Batch,
    /// The database cannot be reached at all: the writes queued behind the
    /// batch would only wait for the same answer.
    Unreachable,
}

/// A transaction that did not commit, and how far its cause reaches.
#[derive(Debug)]
pub(super) struct Failed {
    pub reach: Reach,
    pub error: StoreError,
}

/// A backend's connection handling: commit a batch of writes in one
/// transaction (retrying what its database makes worth retrying), and close.
#[allow(async_fn_in_trait)]
pub(super) trait Backend {
    /// Runs `ops` in order in one transaction and commits it; the outcomes
    /// come in the same order. On failure nothing of the batch is committed.
    async fn commit(&mut self, ops: &[&WriteOp]) -> Result<Vec<WriteOutcome>, Failed>;
    /// Upkeep between batches, once every job of the last one is answered:
    /// this writer writes nothing meanwhile, and with one writer the writes
    /// queued since wait.
    fn after_batch(&mut self) {}
    /// How long the queue stays empty before [`Backend::idle`] runs; None:
    /// never.
    fn idle_after(&self) -> Option<Duration> {
        None
    }
    /// Upkeep once writes have paused for [`Backend::idle_after`].
    fn idle(&mut self) {}
    /// After a batch found the database unreachable: tries to reach it
    /// again without a batch, and says whether it did.
    async fn recover(&mut self) -> bool {
        true
    }
    /// Closes the write connection.
    async fn close(self);
}

/// What the writer counts, shared with the queue for /metrics.
#[derive(Debug, Default)]
pub(super) struct WriterCounts {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Batches that failed on one write and were run again one write at a
    /// time.
    pub splits: AtomicU64,
    /// Writes taken from the queue.
    pub taken: AtomicU64,
}

/// The queue and what the writers learn from it, shared by the writers of
/// one store: whoever holds it takes the next batch.
struct Intake {
    rx: mpsc::Receiver<Msg>,
    /// The close request, once taken: no writer takes another batch.
    closing: Option<oneshot::Sender<()>>,
    /// Every sender is gone.
    ended: bool,
    /// Writers, and how many of them found the database unreachable on
    /// their last batch.
    writers: usize,
    down: usize,
}

/// What a writer found when it went to the queue.
enum Taken {
    /// Writes to commit (in the writer's batch).
    Batch,
    /// Nothing within the backend's idle pause.
    Quiet,
    /// The queue is closing or gone.
    Stop,
}

/// The writers: each takes the first queued write and everything queued
/// behind it up to [`MAX_BATCH`], commits them together, answers each once
/// the commit is durable, lets its backend do its upkeep, and repeats. While
/// one commits, the next takes the writes queued meanwhile, so several
/// backends (connections) overlap their transactions; with one, batches
/// follow each other. Returns when asked to close, after every write queued
/// ahead of the request has committed, or when every sender is gone; writes
/// that race with the close are answered `WriterGone`.
pub(super) async fn run_writers<B: Backend>(
    backends: Vec<B>,
    rx: mpsc::Receiver<Msg>,
    counts: &WriterCounts,
) {
    let intake = tokio::sync::Mutex::new(Intake {
        rx,
        closing: None,
        ended: false,
        writers: backends.len(),
        down: 0,
    });
    let backends =
        futures_util::future::join_all(backends.into_iter().map(|b| write(b, &intake, counts)))
            .await;
    let Intake {
        mut rx, closing, ..
    } = intake.into_inner();
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        match msg {
            Msg::Write(job) => {
                let _ = job.reply.send(Err(StoreError::WriterGone));
            }
            Msg::Close(done) => {
                let _ = done.send(());
            }
        }
    }
    for backend in backends {
        backend.close().await;
    }
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

/// How long a writer that cannot reach the database waits between attempts
/// while another writer still reaches it.
const RECOVER_PAUSE: Duration = Duration::from_secs(1);

/// One writer's loop over its own backend; gives the backend back when the
/// queue closes.
async fn write<B: Backend>(
    mut backend: B,
    intake: &tokio::sync::Mutex<Intake>,
    counts: &WriterCounts,
) -> B {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // This writer's last batch found the database unreachable.
    let mut down = false;
    loop {
        if down {
            // While another writer reaches the database, this one takes no
            // writes (they would only fail) until it reaches it again.
            let others_up = {
                let intake = intake.lock().await;
                if intake.closing.is_some() || intake.ended {
                    return backend;
                }
                intake.down < intake.writers
            };
            if others_up {
                if backend.recover().await {
                    down = false;
                    intake.lock().await.down -= 1;
                } else {
                    tokio::time::sleep(RECOVER_PAUSE).await;
                }
                continue;
            }
        }
        let taken = {
            let mut intake = intake.lock().await;
            take(&mut intake, &backend, &mut batch, counts).await
        };
        match taken {
            Taken::Stop => return backend,
            Taken::Quiet => {
                backend.idle();
                continue;
            }
            Taken::Batch => {}
        }
        let unreachable = commit_batch(&mut backend, &mut batch, counts).await;
        backend.after_batch();
        let mut intake = intake.lock().await;
        match unreachable {
            None if down => {
                down = false;
                intake.down -= 1;
            }
            None => {}
            Some(err) => {
                if !down {
                    down = true;
                    intake.down += 1;
                }
                // With no writer reaching the database, the writes queued
                // meanwhile would only wait for the same answer; those
                // behind a close are the close's to refuse.
                if intake.down == intake.writers && intake.closing.is_none() {
                    while let Ok(msg) = intake.rx.try_recv() {
                        match msg {
                            Msg::Write(job) => {
                                let _ = job.reply.send(Err(err.clone()));
                            }
                            Msg::Close(done) => {
                                intake.closing = Some(done);
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Waits for the first queued write and takes it with those behind it into
/// `batch`, up to [`MAX_BATCH`] or a close request.
async fn take<B: Backend>(
    intake: &mut Intake,
    backend: &B,
    batch: &mut Vec<Job>,
    counts: &WriterCounts,
) -> Taken {
    if intake.closing.is_some() || intake.ended {
        return Taken::Stop;
    }
    let first = match backend.idle_after() {
        None => intake.rx.recv().await,
        Some(pause) => match tokio::time::timeout(pause, intake.rx.recv()).await {
            Ok(msg) => msg,
            Err(_) => return Taken::Quiet,
        },
    };
    let mut next = first;
    loop {
        match next {
            Some(Msg::Write(job)) => {
                counts.taken.fetch_add(1, Ordering::Relaxed);
                batch.push(job);
            }
            Some(Msg::Close(done)) => {
                intake.closing = Some(done);
                break;
            }
            None => {
                intake.ended = true;
                break;
            }
        }
        if batch.len() >= MAX_BATCH {
            break;
        }
        match intake.rx.try_recv() {
            Ok(msg) => next = Some(msg),
            Err(_) => break,
        }
    }
    if batch.is_empty() {
        Taken::Stop
    } else {
        Taken::Batch
    }
}

/// Commits `batch` and answers every job in it. A failure tied to one
/// statement must not fail its neighbours: the batch is then run again one
/// job at a time, each in its own transaction. Returns the error when the
/// database cannot be reached at all.
async fn commit_batch<B: Backend>(
    backend: &mut B,
    batch: &mut Vec<Job>,
    counts: &WriterCounts,
) -> Option<StoreError> {
    let ops: Vec<&WriteOp> = batch.iter().map(|j| &j.op).collect();
    let started = std::time::Instant::now();
    let result = backend.commit(&ops).await;
    tracing::debug!(
        jobs = ops.len(),
        bulk_deletes = ops
            .iter()
            .filter(|op| matches!(op, WriteOp::Sweep { .. } | WriteOp::Cleanup { .. }))
            .count(),
        ok = result.is_ok(),
        ms = started.elapsed().as_secs_f64() * 1e3,
        "commit"
    );
    drop(ops);
    match result {
        Ok(outcomes) => {
            counts.commits.fetch_add(1, Ordering::Relaxed);
            for (job, outcome) in batch.drain(..).zip(outcomes) {
                let _ = job.reply.send(Ok(outcome));
            }
            None
        }
        Err(Failed {
            reach: Reach::Statement,
            ..
        }) if batch.len() > 1 => {
            counts.splits.fetch_add(1, Ordering::Relaxed);
            let mut jobs = batch.drain(..);
            while let Some(job) = jobs.next() {
                let result = match backend.commit(&[&job.op]).await {
                    Ok(mut outcomes) => {
                        counts.commits.fetch_add(1, Ordering::Relaxed);
                        Ok(outcomes.remove(0))
                    }
                    // The rest of the batch would wait for the same answer.
                    Err(Failed {
                        reach: Reach::Unreachable,
                        error,
                    }) => {
                        for job in std::iter::once(job).chain(jobs) {
                            let _ = job.reply.send(Err(error.clone()));
                        }
                        return Some(error);
                    }
                    Err(failed) => Err(failed.error),
                };
                let _ = job.reply.send(result);
            }
            None
        }
        Err(Failed { reach, error }) => {
            for job in batch.drain(..) {
                let _ = job.reply.send(Err(error.clone()));
            }
            (reach == Reach::Unreachable).then_some(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::queue::WriteQueue;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    /// A backend whose commits take `delay`, counting how many overlap; an
    /// `unreachable` one fails every batch so, and never recovers; a
    /// `splitting` one fails a batch of several on one statement, and finds
    /// the database unreachable for a single write.
    #[derive(Clone)]
    struct Fake {
        delay: Duration,
        unreachable: bool,
        splitting: bool,
        calls: Arc<AtomicUsize>,
        committing: Arc<AtomicUsize>,
        most_at_once: Arc<AtomicUsize>,
        committed: Arc<AtomicUsize>,
        closed: Arc<AtomicUsize>,
    }

    impl Fake {
        fn new(delay_ms: u64) -> Self {
            Self {
                delay: Duration::from_millis(delay_ms),
                unreachable: false,
                splitting: false,
                calls: Arc::default(),
                committing: Arc::default(),
                most_at_once: Arc::default(),
                committed: Arc::default(),
                closed: Arc::default(),
            }
        }

        /// One more backend counting into the same totals.
        fn another(&self, delay_ms: u64, unreachable: bool) -> Self {
            Self {
                delay: Duration::from_millis(delay_ms),
                unreachable,
                ..self.clone()
            }
        }
    }

    impl Backend for Fake {
        async fn commit(&mut self, ops: &[&WriteOp]) -> Result<Vec<WriteOutcome>, Failed> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.splitting {
                let reach = if ops.len() > 1 {
                    Reach::Statement
                } else {
                    Reach::Unreachable
                };
                return Err(Failed {
                    reach,
                    error: StoreError::Unreachable("down".into()),
                });
            }
            let now = self.committing.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_at_once.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            self.committing.fetch_sub(1, Ordering::SeqCst);
            if self.unreachable {
                return Err(Failed {
                    reach: Reach::Unreachable,
                    error: StoreError::Unreachable("down".into()),
                });
            }
            self.committed.fetch_add(ops.len(), Ordering::SeqCst);
            Ok(ops.iter().map(|_| WriteOutcome::Pinged).collect())
        }

        async fn recover(&mut self) -> bool {
            !self.unreachable
        }

        async fn close(self) {
            self.closed.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn start(backends: Vec<Fake>) -> (Arc<WriteQueue>, tokio::task::JoinHandle<()>) {
        let (queue, rx, counts) = WriteQueue::new();
        let running = tokio::spawn(async move { run_writers(backends, rx, &counts).await });
        (Arc::new(queue), running)
    }

    fn ping(queue: &Arc<WriteQueue>) -> tokio::task::JoinHandle<Result<WriteOutcome, StoreError>> {
        let queue = Arc::clone(queue);
        tokio::spawn(async move { queue.write(WriteOp::Ping, None).await })
    }

    /// Writes arriving every 5 ms against commits of 20 ms, then a close:
    /// the two writers take turns at the queue and overlap their commits,
    /// and the close is answered only once every write queued ahead of it
    /// has committed on either.
    #[tokio::test(start_paused = true)]
    async fn two_writers_overlap_their_commits_and_close_after_both() {
        let fake = Fake::new(20);
        let (queue, running) = start(vec![fake.clone(), fake.another(20, false)]);
        let mut answers = Vec::new();
        for _ in 0..40 {
            answers.push(ping(&queue));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        queue.close().await;
        assert_eq!(
            fake.committed.load(Ordering::SeqCst),
            40,
            "committed before the close's answer"
        );
        assert_eq!(fake.closed.load(Ordering::SeqCst), 2, "both closed");
        assert_eq!(fake.most_at_once.load(Ordering::SeqCst), 2);
        for answer in answers {
            assert!(matches!(answer.await.unwrap(), Ok(WriteOutcome::Pinged)));
        }
        assert!(matches!(
            queue.write(WriteOp::Ping, None).await,
            Err(StoreError::WriterGone)
        ));
        running.await.unwrap();
    }

    /// One write after another's answer, with one of two writers unable to
    /// reach the database: the one batch it takes fails, then it leaves the
    /// writes to the other.
    #[tokio::test(start_paused = true)]
    async fn a_writer_that_cannot_reach_the_database_leaves_the_writes_to_one_that_can() {
        let fake = Fake::new(2);
        let (queue, running) = start(vec![fake.clone(), fake.another(2, true)]);
        let mut failed = 0;
        for _ in 0..20 {
            match ping(&queue).await.unwrap() {
                Ok(WriteOutcome::Pinged) => {}
                Err(StoreError::Unreachable(_)) => failed += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!(failed <= 1, "{failed} of 20 writes failed");
        assert_eq!(fake.committed.load(Ordering::SeqCst), 20 - failed);
        queue.close().await;
        running.await.unwrap();
    }

    /// A writer failing while the other commits a batch that holds a close:
    /// the writes and the close queued behind it are left to the close, which
    /// is answered only after that batch commits.
    #[tokio::test(start_paused = true)]
    async fn a_failing_writer_neither_fails_the_others_writes_nor_answers_their_close() {
        let fake = Fake::new(100);
        let (queue, running) = start(vec![fake.another(10, true), fake.clone()]);
        let first = ping(&queue);
        tokio::time::sleep(Duration::from_millis(1)).await;
        // Queued together: the healthy writer takes both in one batch.
        let second = ping(&queue);
        let close = tokio::spawn({
            let queue = Arc::clone(&queue);
            async move { queue.close().await }
        });
        // Behind the close, before the failure: refused by the close; a
        // second close is answered too.
        tokio::time::sleep(Duration::from_millis(4)).await;
        let late = ping(&queue);
        let again = tokio::spawn({
            let queue = Arc::clone(&queue);
            async move { queue.close().await }
        });
        assert!(matches!(
            first.await.unwrap(),
            Err(StoreError::Unreachable(_))
        ));
        close.await.unwrap();
        again.await.unwrap();
        assert_eq!(
            fake.committed.load(Ordering::SeqCst),
            1,
            "before the close's answer"
        );
        assert!(matches!(second.await.unwrap(), Ok(WriteOutcome::Pinged)));
        assert!(matches!(late.await.unwrap(), Err(StoreError::WriterGone)));
        running.await.unwrap();
    }

    /// Both writers unable to reach the database: once the second finds
    /// out, the writes queued behind them fail at once rather than each
    /// waiting for a batch of its own, and a close still ends the writers.
    #[tokio::test(start_paused = true)]
    async fn with_every_writer_down_the_queued_writes_fail_at_once() {
        let fake = Fake::new(10);
        let (queue, running) = start(vec![fake.another(10, true), fake.another(10, true)]);
        let started = tokio::time::Instant::now();
        let first = ping(&queue);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let second = ping(&queue);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let queued = [ping(&queue), ping(&queue)];
        for write in [first, second].into_iter().chain(queued) {
            assert!(matches!(
                write.await.unwrap(),
                Err(StoreError::Unreachable(_))
            ));
        }
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "answered after {:?}",
            started.elapsed()
        );
        queue.close().await;
        running.await.unwrap();
        assert_eq!(fake.closed.load(Ordering::SeqCst), 2);
    }

    /// A batch split after one statement failed, whose first write alone
    /// finds the database unreachable: the rest of it fails with that write,
    /// without a transaction each.
    #[tokio::test(start_paused = true)]
    async fn a_split_batch_stops_at_the_first_write_that_finds_the_database_unreachable() {
        let fake = Fake {
            splitting: true,
            ..Fake::new(0)
        };
        let (queue, running) = start(vec![fake.clone()]);
        // Queued before the writer runs: one batch of three.
        let writes = [ping(&queue), ping(&queue), ping(&queue)];
        for write in writes {
            assert!(matches!(
                write.await.unwrap(),
                Err(StoreError::Unreachable(_))
            ));
        }
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            2,
            "the batch, then its first write alone"
        );
        queue.close().await;
        running.await.unwrap();
    }

    #[test]
    fn chunks_are_powers_of_two_largest_first() {
        let items: Vec<usize> = (0..45).collect();
        let lens: Vec<usize> = power_of_two_chunks(&items, 32)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(lens, [32, 8, 4, 1]);
        let joined: Vec<usize> = power_of_two_chunks(&items, 32).concat();
        assert_eq!(joined, items, "every item once, in order");
        assert!(power_of_two_chunks::<usize>(&[], 32).is_empty());
        assert_eq!(power_of_two_chunks(&items[..3], 1).len(), 3);
    }

    #[test]
    fn a_run_of_adds_ends_at_another_write_another_kind_of_add_or_a_name_seen_again() {
        let user = |s: &str| Username::parse(s).unwrap();
        let add = |name: &str, replace: bool| WriteOp::Add {
            user: user(name),
            hash: "h".into(),
            now: 1,
            expires_at: Some(2),
            scopes: None,
            replace,
        };
        let names = |ops: &[WriteOp]| -> (bool, Vec<String>) {
            let refs: Vec<&WriteOp> = ops.iter().collect();
            let (replace, rows) = adds_ahead(&refs);
            let names = rows.iter().map(|r| r.user.as_str().to_owned()).collect();
            (replace, names)
        };
        let run = |replace: bool, names: &[&str]| {
            (
                replace,
                names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            names(&[add("a", false), add("b", false), add("a", false)]),
            run(false, &["a", "b"])
        );
        assert_eq!(
            names(&[add("a", true), add("b", true), add("c", false)]),
            run(true, &["a", "b"])
        );
        assert_eq!(
            names(&[add("a", false), add("b", true)]),
            run(false, &["a"])
        );
        assert_eq!(
            names(&[add("a", true), WriteOp::Ping, add("c", true)]),
            run(true, &["a"])
        );
        assert!(names(&[WriteOp::Ping, add("a", false)]).1.is_empty());
        let many: Vec<WriteOp> = (0..100).map(|i| add(&format!("u{i}"), true)).collect();
        assert_eq!(names(&many).1.len(), MAX_ADD_RUN);
    }

    #[test]
    fn live_until_the_expiry_second() {
        assert!(is_live(None, i64::MAX), "rows of the original never expire");
        assert!(is_live(Some(100), 99));
        assert!(!is_live(Some(100), 100));
        assert!(!is_live(Some(100), 101));
    }

    #[test]
    fn the_sql_condition_states_the_same_rule() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let sql = format!(
            "SELECT {} , NOT ({}) FROM (SELECT ?1 AS expires_at)",
            live_condition("?2"),
            expired_condition("?2")
        );
        for (expires_at, now) in [
            (None, 0),
            (Some(100), 99),
            (Some(100), 100),
            (Some(100), 101),
        ] {
            let (live, not_expired): (bool, Option<bool>) = conn
                .query_row(&sql, rusqlite::params![expires_at, now], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap();
            assert_eq!(live, is_live(expires_at, now), "{expires_at:?} at {now}");
            // NULL expiry: neither live-by-SQL-false nor swept.
            if expires_at.is_some() {
                assert_eq!(not_expired, Some(live), "{expires_at:?} at {now}");
            }
        }
    }

    #[test]
    fn renewals_extend_within_the_lifetime_and_never_shorten() {
        let plan = |found, now, ttl| plan_renew(found, now, ttl, 500);
        assert_eq!(plan(None, 0, 1), RenewPlan::NotLive);
        assert_eq!(plan(Some((1000, Some(1100))), 1100, 10), RenewPlan::NotLive);
        assert_eq!(plan(Some((1000, None)), 5000, 10), RenewPlan::NeverExpires);
        assert_eq!(
            plan(Some((1000, Some(1100))), 1050, 200),
            RenewPlan::Extend {
                expires_at: 1250,
                limited: false
            }
        );
        assert_eq!(
            plan(Some((1000, Some(1250))), 1200, 1000),
            RenewPlan::Extend {
                expires_at: 1500,
                limited: true
            }
        );
        assert_eq!(
            plan(Some((1000, Some(1500))), 1210, 1),
            RenewPlan::Extend {
                expires_at: 1500,
                limited: false
            }
        );
    }
}
