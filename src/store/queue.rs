//! The write queue both backends share: callers queue a [`WriteOp`] and wait
//! for its answer, which one of the backend's writers sends only after the
//! transaction holding it has committed. It also keeps the counts both
//! backends report: failed operations, and the writer's commits and split
//! batches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::policy::WriterCounts;
use super::{StoreError, WriteOp, WriteOutcome};

/// Queued writes beyond which callers wait for room (backpressure).
const QUEUE_DEPTH: usize = 4096;

/// One queued write and where its answer goes.
pub(super) struct Job {
    pub op: WriteOp,
    pub reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
}

/// What the writer's queue carries: a write, or the request to finish.
pub(super) enum Msg {
    Write(Job),
    /// Commit what is queued ahead, close the connection, stop, then say so.
    Close(oneshot::Sender<()>),
}

pub(super) struct WriteQueue {
    sender: mpsc::Sender<Msg>,
    errors: AtomicU64,
    writer: Arc<WriterCounts>,
}

impl WriteQueue {
    /// The queue, the receiver its writer drains, and the counts the writer
    /// keeps.
    pub fn new() -> (Self, mpsc::Receiver<Msg>, Arc<WriterCounts>) {
        let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
        let writer = Arc::new(WriterCounts::default());
        let queue = Self {
            sender,
            errors: AtomicU64::new(0),
            writer: Arc::clone(&writer),
        };
        (queue, receiver, writer)
    }

    /// Queues `op` and waits for its commit, for at most `limit` if given.
    pub async fn write(
        &self,
        op: WriteOp,
        limit: Option<Duration>,
    ) -> Result<WriteOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        let queued = async {
            match self.sender.send(Msg::Write(Job { op, reply })).await {
                Ok(()) => answer.await.unwrap_or(Err(StoreError::WriterGone)),
                Err(_) => Err(StoreError::WriterGone),
            }
        };
        let result = match limit {
            None => queued.await,
            Some(limit) => tokio::time::timeout(limit, queued)
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Database(format!(
                        "no answer from the writer within {limit:?}"
                    )))
                }),
        };
        self.count(&result);
        result
    }

    /// Lets the writer commit what is queued ahead and close its
    /// connection; returns once it has. Writes after this answer
    /// `WriterGone`.
    pub async fn close(&self) {
        let (done, finished) = oneshot::channel();
        if self.sender.send(Msg::Close(done)).await.is_ok() {
            let _ = finished.await;
        }
    }

    /// Counts `result` among the failures when it is one.
    pub fn count<T>(&self, result: &Result<T, StoreError>) {
        if result.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub fn commit_count(&self) -> u64 {
        self.writer.commits.load(Ordering::Relaxed)
    }

    pub fn split_count(&self) -> u64 {
        self.writer.splits.load(Ordering::Relaxed)
    }

    pub fn taken_count(&self) -> u64 {
        self.writer.taken.load(Ordering::Relaxed)
    }

    /// Writes queued and not yet taken by the writer.
    pub fn queued(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }
}
