//! Deletes expired users in the background, in bounded batches that go
//! through the same write queue as everything else, so an add never waits
//! behind more than one batch.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::audit::{Caller, Event};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError, WriteOp, WriteOutcome, SWEEP_BATCH};

/// Pause between two sweep batches, so that the writer commits the adds
/// queued meanwhile in transactions of their own.
const BATCH_PAUSE: Duration = Duration::from_millis(2);

/// Removes every user whose expiry is at or before `now`, one batch per
/// transaction; returns how many.
pub async fn sweep_expired(store: &Store, now: i64) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let outcome = store
            .write(WriteOp::Sweep {
                now,
                limit: SWEEP_BATCH,
            })
            .await?;
        let WriteOutcome::Swept { removed } = outcome else {
            return Ok(total);
        };
        total += removed;
        if removed < u64::from(SWEEP_BATCH) {
            return Ok(total);
        }
        tokio::time::sleep(BATCH_PAUSE).await;
    }
}

/// Sweeps every `interval` until the task is dropped.
pub async fn run(store: Store, clock: Arc<dyn Clock>, metrics: Arc<Metrics>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match sweep_expired(&store, clock.now()).await {
            Ok(0) => tracing::debug!("sweep: nothing expired"),
            Ok(removed) => {
                metrics.expired.fetch_add(removed, Ordering::Relaxed);
                Event {
                    action: "sweep",
                    result: "ok",
                    removed: Some(removed),
                    caller: Some(&Caller::service()),
                    ..Event::default()
                }
                .emit();
            }
            Err(e) => tracing::warn!(error = %e, "sweep failed; retrying at the next interval"),
        }
    }
}
