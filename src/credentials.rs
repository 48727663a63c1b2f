//! The operations on credentials, shared by every door (the JSON API, the
//! command line, the sweeper): each hashes off the async workers when it must,
//! goes through the store's single write path, counts itself in the metrics,
//! and leaves one audit event.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::audit::{Caller, Event};
use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::{Granted, Password, TtlPolicy, Username};
use crate::htpasswd::{self, HashType};
use crate::metrics::{inc, Metrics};
use crate::store::{Store, StoreError, WriteOp, WriteOutcome, DELETE_BATCH};

/// Attempts at a fresh generated name before giving up (a clash needs two
/// adds in one millisecond drawing the same six random characters).
const NAME_ATTEMPTS: usize = 5;
/// Pause between two delete batches (sweep, cleanup), so that the writer
/// commits the adds queued meanwhile in transactions of their own.
const BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("user {0} is not live: it does not exist or has expired")]
    NotLive(Username),
    #[error("internal error: {0}")]
    Internal(String),
}

/// A committed add.
#[derive(Debug)]
pub struct Added {
    pub user: Username,
    pub replaced: bool,
    pub created_at: i64,
    pub expires_at: i64,
    pub granted: Granted,
    /// The password, when the service generated it: shown to the caller
    /// once, never stored in clear nor logged.
    pub generated_password: Option<Password>,
}

/// A committed renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewed {
    /// None: the user never expires (a row of the original tool).
    pub expires_at: Option<i64>,
    /// Whether max_lifetime held the expiry below what was asked.
    pub limited: bool,
}

pub struct Credentials {
    pub store: Store,
    pub hash_type: HashType,
    pub bcrypt_cost: u32,
    pub ttl: TtlPolicy,
    pub cleanup_threshold: u64,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    /// Admits as many concurrent password hashings as there are cores.
    hashing: Semaphore,
}

impl Credentials {
    pub fn new(settings: &Settings, store: Store, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            hash_type: settings.hash_type,
            bcrypt_cost: settings.bcrypt_cost,
            ttl: settings.ttl,
            cleanup_threshold: settings.cleanup_threshold,
            clock,
            metrics: Arc::new(Metrics::default()),
            hashing: Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
        }
    }

    /// Adds `user` (or a generated name) with `password` (or a generated
    /// one), living `granted.ttl` seconds. A named user that exists has its
    /// password, creation time and expiry replaced.
    pub async fn add(
        &self,
        user: Option<Username>,
        password: Option<Password>,
        granted: Granted,
        caller: &Caller,
    ) -> Result<Added, CredentialError> {
        let generated = password.is_none();
        let password = password.unwrap_or_else(Password::generate);
        let hash = self.hash(&password).await?;
        let now = self.clock.now();
        let expires_at = now.saturating_add(granted.ttl as i64);
        let write = |user: Username, replace: bool| {
            self.store.write(WriteOp::Add {
                user,
                hash: hash.clone(),
                now,
                expires_at: Some(expires_at),
                replace,
            })
        };
        let (user, outcome) = match user {
            Some(user) => {
                let outcome = write(user.clone(), true).await;
                (user, outcome)
            }
            None => {
                let mut attempt = 1;
                loop {
                    let user = Username::generate(self.clock.now_millis());
                    match write(user.clone(), false).await {
                        Ok(WriteOutcome::Conflict) if attempt < NAME_ATTEMPTS => attempt += 1,
                        other => break (user, other),
                    }
                }
            }
        };
        let mut event = Event {
            action: "add",
            result: "error",
            user: Some(user.as_str()),
            expires_at: Some(expires_at),
            generated_password: Some(generated),
            caller: Some(caller),
            ..Event::default()
        };
        let replaced = match outcome {
            Ok(WriteOutcome::Added { replaced }) => replaced,
            other => {
                event.emit();
                return Err(unexpected("add", other));
            }
        };
        event.result = "ok";
        event.replaced = Some(replaced);
        event.emit();
        inc(&self.metrics.adds);
        Ok(Added {
            user,
            replaced,
            created_at: now,
            expires_at,
            granted,
            generated_password: generated.then_some(password),
        })
    }

    /// Removes `user`; Ok(whether it existed).
    pub async fn remove(&self, user: &Username, caller: &Caller) -> Result<bool, CredentialError> {
        let outcome = self
            .store
            .write(WriteOp::Remove { user: user.clone() })
            .await;
        let found = match outcome {
            Ok(WriteOutcome::Removed { found }) => Some(found),
            _ => None,
        };
        Event {
            action: "remove",
            result: if found.is_some() { "ok" } else { "error" },
            user: Some(user.as_str()),
            removed: found.map(u64::from),
            caller: Some(caller),
            ..Event::default()
        }
        .emit();
        let Some(found) = found else {
            return Err(unexpected("remove", outcome));
        };
        if found {
            inc(&self.metrics.removes);
        }
        Ok(found)
    }

    /// Moves a live user's expiry to `granted.ttl` from now, never beyond
    /// its creation plus max_lifetime and never earlier than it was.
    pub async fn renew(
        &self,
        user: &Username,
        granted: Granted,
        caller: &Caller,
    ) -> Result<Renewed, CredentialError> {
        let outcome = self
            .store
            .write(WriteOp::Renew {
                user: user.clone(),
                now: self.clock.now(),
                ttl: granted.ttl,
                max_lifetime: self.ttl.max_lifetime,
            })
            .await;
        let mut event = Event {
            action: "renew",
            result: "error",
            user: Some(user.as_str()),
            caller: Some(caller),
            ..Event::default()
        };
        match outcome {
            Ok(WriteOutcome::Renewed {
                expires_at,
                limited,
            }) => {
                event.result = "ok";
                event.expires_at = expires_at;
                event.emit();
                inc(&self.metrics.renews);
                Ok(Renewed {
                    expires_at,
                    limited,
                })
            }
            Ok(WriteOutcome::NotLive) => {
                event.result = "not_live";
                event.emit();
                Err(CredentialError::NotLive(user.clone()))
            }
            other => {
                event.emit();
                Err(unexpected("renew", other))
            }
        }
    }

    /// Removes every user created more than `older_than` seconds ago, in
    /// batches of DELETE_BATCH, one transaction each; returns how many.
    pub async fn cleanup(&self, older_than: u64, caller: &Caller) -> Result<u64, CredentialError> {
        let cutoff = self
            .clock
            .now()
            .saturating_sub(i64::try_from(older_than).unwrap_or(i64::MAX));
        let (removed, result) = self
            .delete_in_batches(|| WriteOp::Cleanup {
                cutoff,
                limit: DELETE_BATCH,
            })
            .await;
        Event {
            action: "cleanup",
            result: if result.is_ok() { "ok" } else { "error" },
            removed: Some(removed),
            caller: Some(caller),
            ..Event::default()
        }
        .emit();
        self.metrics
            .cleaned_up
            .fetch_add(removed, Ordering::Relaxed);
        result.map(|()| removed)
    }

    /// Removes every user whose expiry has passed, in batches of
    /// DELETE_BATCH, one transaction each; returns how many.
    pub async fn sweep_expired(&self) -> Result<u64, CredentialError> {
        let now = self.clock.now();
        let (removed, result) = self
            .delete_in_batches(|| WriteOp::Sweep {
                now,
                limit: DELETE_BATCH,
            })
            .await;
        self.metrics.expired.fetch_add(removed, Ordering::Relaxed);
        if removed > 0 || result.is_err() {
            Event {
                action: "sweep",
                result: if result.is_ok() { "ok" } else { "error" },
                removed: Some(removed),
                caller: Some(&Caller::local("sweeper")),
                ..Event::default()
            }
            .emit();
        }
        result.map(|()| removed)
    }

    /// Runs the bounded delete `op` until a batch removes fewer than
    /// DELETE_BATCH rows, pausing between batches. Returns the rows removed
    /// (committed, even when a later batch fails) and how it ended.
    async fn delete_in_batches(
        &self,
        op: impl Fn() -> WriteOp,
    ) -> (u64, Result<(), CredentialError>) {
        let mut total = 0;
        loop {
            match self.store.write(op()).await {
                Ok(WriteOutcome::Swept { removed } | WriteOutcome::CleanedUp { removed }) => {
                    total += removed;
                    if removed < u64::from(DELETE_BATCH) {
                        return (total, Ok(()));
                    }
                    tokio::time::sleep(BATCH_PAUSE).await;
                }
                other => return (total, Err(unexpected("delete", other))),
            }
        }
    }

    /// Hashes `password` in the configured format: on the blocking pool, one
    /// job per core at most, in arrival order (more threads would only share
    /// the same cores and stretch every request's latency). `{SHA}` costs a
    /// microsecond and runs in place.
    async fn hash(&self, password: &Password) -> Result<String, CredentialError> {
        let (hash_type, cost) = (self.hash_type, self.bcrypt_cost);
        let password = password.clone();
        let run = move || htpasswd::hash(hash_type, password.expose(), cost);
        let result = if hash_type == HashType::Sha1 {
            run()
        } else {
            let _permit = self
                .hashing
                .acquire()
                .await
                .map_err(|e| CredentialError::Internal(format!("hashing gate closed: {e}")))?;
            tokio::task::spawn_blocking(run)
                .await
                .map_err(|e| CredentialError::Internal(format!("hashing task failed: {e}")))?
        };
        result.map_err(|e| CredentialError::Internal(format!("hashing failed: {e}")))
    }
}

/// The error for a write that failed or answered out of turn.
fn unexpected(action: &str, outcome: Result<WriteOutcome, StoreError>) -> CredentialError {
    match outcome {
        Err(e) => CredentialError::Store(e),
        Ok(other) => CredentialError::Internal(format!("{action} answered {other:?}")),
    }
}
