//! Where password hashings run: off the async workers, one per core per
//! lane, with a bounded queue. Checks (from the doors anyone may knock on)
//! and the hashing of new credentials (from the admin API and the command
//! line) are separate lanes, so that a flood of guesses on a checking door
//! can fill its own queue but never refuse or delay an add behind it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Longest a job may expect to wait for a core before it is refused: a
/// queue of slow hashings (bcrypt at a high cost) is bounded by the time its
/// last job would wait, not only by its length.
pub const MAX_EXPECTED_WAIT: Duration = Duration::from_secs(10);

/// One lane: `permits` hashings at once, at most `max_waiting` waiting, and
/// none whose expected wait passes `max_wait`.
pub struct Lane {
    permits: Arc<Semaphore>,
    cores: u64,
    waiting: AtomicUsize,
    max_waiting: usize,
    max_wait: Duration,
    /// A moving average of how long a job of this lane runs, in
    /// microseconds (0 until one has run).
    job_micros: Arc<AtomicU64>,
}

impl Lane {
    pub fn new(permits: usize, max_waiting: usize) -> Self {
        Self::with_max_wait(permits, max_waiting, MAX_EXPECTED_WAIT)
    }

    pub fn with_max_wait(permits: usize, max_waiting: usize, max_wait: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(permits)),
            cores: permits.max(1) as u64,
            waiting: AtomicUsize::new(0),
            max_waiting,
            max_wait,
            job_micros: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How long a job that would be the `position`-th waiting can expect to
    /// wait: the jobs ahead of it, and its own place, shared by the cores.
    fn expected_wait(&self, position: usize) -> Duration {
        let per_job = self.job_micros.load(Ordering::Relaxed);
        Duration::from_micros(per_job.saturating_mul(position as u64 + 1) / self.cores)
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
                if waiting >= self.max_waiting || self.expected_wait(waiting) > self.max_wait {
                    return Err(LaneError::Full);
                }
                Arc::clone(&self.permits)
                    .acquire_owned()
                    .await
                    .map_err(|e| LaneError::Failed(format!("hashing gate closed: {e}")))?
            }
        };
        let span = tracing::Span::current();
        let job_micros = Arc::clone(&self.job_micros);
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let started = Instant::now();
            let out = job();
            drop(permit);
            record(&job_micros, started.elapsed());
            out
        })
        .await
        .map_err(|e| LaneError::Failed(format!("hashing task failed: {e}")))
    }
}

/// Folds one job's duration into the lane's moving average (an eighth of
/// the new one), so that a change of hash type or cost shows within a few
/// jobs.
fn record(average: &AtomicU64, took: Duration) {
    let took = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    let _ = average.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
        Some(if old == 0 {
            took
        } else {
            old - old / 8 + took / 8
        })
    });
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

    /// Starts a job on `lane` that runs until `release` lets it go, and
    /// gives it a moment to take its place (running, or waiting).
    async fn spawn_held(
        lane: &Arc<Lane>,
        release: &Arc<std::sync::Mutex<mpsc::Receiver<()>>>,
    ) -> tokio::task::JoinHandle<Result<(), LaneError>> {
        let handle = tokio::spawn({
            let (lane, job) = (Arc::clone(lane), held(release));
            async move { lane.run(job).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        handle
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_lane_refuses_at_once_and_leaves_the_other_lane_alone() {
        let checks = Arc::new(Lane::new(1, 1));
        let adds = Lane::new(1, 1);
        let (tx, rx) = mpsc::channel::<()>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        // One running, one waiting: the lane is full.
        let running = spawn_held(&checks, &rx).await;
        let waiting = spawn_held(&checks, &rx).await;
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_queue_of_slow_jobs_is_bounded_by_its_expected_wait() {
        // Jobs of 200 ms on one core, at most 300 ms of expected wait: the
        // first waiter (200 ms, the running job's) is admitted, the second
        // (400 ms) refused, though the queue has room for a hundred.
        let lane = Arc::new(Lane::with_max_wait(1, 100, Duration::from_millis(300)));
        lane.run(|| std::thread::sleep(Duration::from_millis(200)))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let running = spawn_held(&lane, &rx).await;
        let waiting = spawn_held(&lane, &rx).await;
        let refused = tokio::time::timeout(Duration::from_secs(5), lane.run(|| ())).await;
        assert_eq!(refused, Ok(Err(LaneError::Full)), "refused at once");
        tx.send(()).unwrap();
        tx.send(()).unwrap();
        assert_eq!(running.await.unwrap(), Ok(()));
        assert_eq!(waiting.await.unwrap(), Ok(()));
        // Fast jobs bring the average down: a queue is admitted again.
        for _ in 0..40 {
            lane.run(|| ()).await.unwrap();
        }
        assert!(lane.expected_wait(1) < Duration::from_millis(300));
    }

    #[test]
    fn the_average_follows_the_jobs() {
        let average = AtomicU64::new(0);
        record(&average, Duration::from_millis(80));
        assert_eq!(
            average.load(Ordering::Relaxed),
            80_000,
            "the first job sets it"
        );
        for _ in 0..100 {
            record(&average, Duration::from_millis(8));
        }
        let settled = average.load(Ordering::Relaxed);
        assert!((8_000..8_100).contains(&settled), "{settled}");
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
