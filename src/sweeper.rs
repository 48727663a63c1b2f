//! Deletes expired users in the background, in bounded batches that go
//! through the same write queue as everything else, so an add never waits
//! behind more than one batch.

use std::sync::Arc;
use std::time::Duration;

use crate::credentials::Credentials;

/// Sweeps every `interval` until the task is dropped.
pub async fn run(credentials: Arc<Credentials>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match credentials.sweep_expired().await {
            Ok(0) => tracing::debug!("sweep: nothing expired"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweep failed; retrying at the next interval"),
        }
    }
}
