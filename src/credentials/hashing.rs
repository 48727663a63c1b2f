//! Where password hashings run: off the async workers, one per core per
//! lane, with a bounded queue. Checks (from the doors anyone may knock on)
//! and the hashing of new credentials (from the admin API and the command
//! line) are separate lanes, so that a flood of guesses on a checking door
//! can fill its own queue but never refuse or delay an add behind it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

/// Why a hashing did not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaneError {
    /// The lane's queue is full: answered at once, rather than after a
    /// wait that only grows.
    #[error("the hashing queue is full")]
    Full,
    #[error("{0}")]
    Failed(String),
}

/// One lane: `permits` hashings at once, at most `max_waiting` waiting.
pub struct Lane {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl Lane {
    pub fn new(permits: usize, max_waiting: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(permits)),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// Runs `job` on the blocking pool once the lane admits it, in arrival
    /// order (more threads would only share the same cores and stretch
    /// every request's latency), or refuses it at once when the queue is
    /// full. The permit goes with the job and is released when the job
    /// ends, even when the request that asked for it was abandoned.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, LaneError> {
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let waiting = self.waiting.fetch_add(1, Ordering::AcqRel);
                let _leave = Leave(&self.waiting);
                if waiting >= self.max_waiting {
                    return Err(LaneError::Full);
                }
                Arc::clone(&self.permits)
                    .acquire_owned()
                    .await
                    .map_err(|e| LaneError::Failed(format!("hashing gate closed: {e}")))?
            }
        };
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let out = job();
            drop(permit);
            out
        })
        .await
        .map_err(|e| LaneError::Failed(format!("hashing task failed: {e}")))
    }
}

/// Leaves the count of waiting jobs when dropped.
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A job that runs until `release` is dropped or sent to.
    fn held(release: &Arc<std::sync::Mutex<mpsc::Receiver<()>>>) -> impl FnOnce() + Send {
        let release = Arc::clone(release);
        move || {
            let _ = release.lock().unwrap().recv();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_lane_refuses_at_once_and_leaves_the_other_lane_alone() {
        let checks = Arc::new(Lane::new(1, 1));
        let adds = Lane::new(1, 1);
        let (tx, rx) = mpsc::channel::<()>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        // One running, one waiting: the lane is full.
        let running = tokio::spawn({
            let (checks, job) = (Arc::clone(&checks), held(&rx));
            async move { checks.run(job).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let waiting = tokio::spawn({
            let (checks, job) = (Arc::clone(&checks), held(&rx));
            async move { checks.run(job).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(checks.run(|| ()).await, Err(LaneError::Full));
        // The other lane runs as if nothing were happening.
        let added = tokio::time::timeout(Duration::from_secs(5), adds.run(|| 7)).await;
        assert_eq!(added.expect("not held up"), Ok(7));
        // Once the held jobs end, the lane admits again.
        tx.send(()).unwrap();
        tx.send(()).unwrap();
        assert_eq!(running.await.unwrap(), Ok(()));
        assert_eq!(waiting.await.unwrap(), Ok(()));
        assert_eq!(checks.run(|| 1).await, Ok(1));
    }

    #[tokio::test]
    async fn an_abandoned_wait_leaves_the_queue() {
        let lane = Arc::new(Lane::new(1, 1));
        let (tx, rx) = mpsc::channel::<()>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let running = tokio::spawn({
            let (lane, job) = (Arc::clone(&lane), held(&rx));
            async move { lane.run(job).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A waiter that gives up frees its place in the queue.
        let gave_up = tokio::time::timeout(Duration::from_millis(50), lane.run(|| ())).await;
        assert!(gave_up.is_err());
        let waiting = tokio::spawn({
            let lane = Arc::clone(&lane);
            async move { lane.run(|| 2).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(()).unwrap();
        assert_eq!(running.await.unwrap(), Ok(()));
        assert_eq!(waiting.await.unwrap(), Ok(2));
    }
}
