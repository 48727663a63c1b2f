//! The credential core every door calls: the admin API, the command line,
//! the sweeper, and the doors that check credentials (nginx auth_request).
//! Each write hashes off the async workers when it must, goes through the
//! store's single write path, counts itself in the metrics and leaves one
//! audit event; each check reads the user's row and verifies the password
//! against it, through a bounded cache of successes, with the same cost for
//! an unknown user as for a wrong password.

mod hashing;
mod verifier;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::audit::{Caller, Event};
use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::{
    Forbidden, Granted, Password, Right, Rights, ScopePattern, TtlPolicy, Username,
    MAX_PASSWORD_BYTES,
};
use crate::htpasswd::{self, HashType};
use crate::metrics::{inc, Metrics, StoreCounts};
use crate::store::{
    ListQuery, ListedUser, LiveCredentials, Store, StoreError, UserRow, WriteOp, WriteOutcome,
    DELETE_BATCH,
};
use hashing::{Lane, LaneError};
pub use verifier::VerifyCache;

/// Attempts at a fresh generated name before giving up (a clash needs two
/// adds in one millisecond drawing the same six random characters).
const NAME_ATTEMPTS: usize = 5;
/// Hashing jobs that may wait for a core, per core: past that, a request
/// that needs a hashing is answered 503 at once.
const HASH_QUEUE_PER_CORE: usize = 32;
/// Pause between two delete batches (sweep, cleanup), so that the writer
/// commits the adds queued meanwhile in transactions of their own.
const BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("user {0} is not live: it does not exist or has expired")]
    NotLive(Username),
    /// A cleanup of credentials younger than the configured floor.
    #[error("older_than must be at least {floor} seconds (min_older_than)")]
    BelowFloor { floor: u64 },
    /// Too many password checks are waiting for a core: answered at once,
    /// rather than after a wait that only grows.
    #[error("too many password checks are waiting; try again shortly")]
    Busy,
    /// The caller may not do this.
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why the service is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    #[error("database does not answer: {0}")]
    Database(StoreError),
    /// The last write failed (a full disk, say), and none has committed
    /// since.
    #[error("the last write failed and none has committed since")]
    WritesFailing,
}

/// How long a failed write marks the service unhealthy when no write
/// commits after it: then the check lets traffic in again, to find out.
const WRITES_FAILING_FOR_MS: i64 = 60_000;

/// A committed add.
#[derive(Debug)]
pub struct Added {
    pub user: Username,
    pub replaced: bool,
    pub created_at: i64,
    pub expires_at: i64,
    pub granted: Granted,
    /// The scope patterns stored with it; None: the configured default.
    pub scopes: Option<String>,
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

/// The answer to a password check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The credential, as read for this check.
    Allowed(Box<UserRow>),
    Refused(Refusal),
}

/// Why a check was refused: for the log and the metrics, never for the
/// caller, who learns only that it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownUser,
    Expired,
    WrongPassword,
    /// A password no credential can have (NUL, or too long).
    UnusablePassword,
}

impl Refusal {
    pub fn name(self) -> &'static str {
        match self {
            Refusal::UnknownUser => "unknown_user",
            Refusal::Expired => "expired",
            Refusal::WrongPassword => "wrong_password",
            Refusal::UnusablePassword => "unusable_password",
        }
    }
}

pub struct Credentials {
    shared: Arc<Shared>,
    store: Store,
    hash_type: HashType,
    bcrypt_cost: u32,
    ttl: TtlPolicy,
    cleanup_threshold: u64,
    min_older_than: u64,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// The hashings of checks, and those of new credentials: separate, so
    /// that a flood of checks never holds up an add.
    check_lane: Lane,
    add_lane: Lane,
    /// A hash of a random password in the configured format: what a check
    /// verifies against when there is no live user, so that it costs what a
    /// wrong password costs.
    dummy_hash: String,
    cache: Option<VerifyCache>,
}

impl Credentials {
    /// The core on `store`. Computes the dummy hash (one hashing, up to a
    /// fraction of a second at a high bcrypt cost).
    pub fn new(
        settings: &Settings,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, CredentialError> {
        let dummy_hash = htpasswd::hash(
            settings.hash_type,
            Password::generate().expose(),
            settings.bcrypt_cost,
        )
        .map_err(|e| CredentialError::Internal(format!("cannot make the dummy hash: {e}")))?;
        let metrics = Arc::new(Metrics::default());
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let pseudonym_key =
            ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
                .map_err(|_| CredentialError::Internal("no random source for a key".into()))?;
        Ok(Self {
            shared: Arc::new(Shared {
                changes: Arc::new(Notify::new()),
                store: store.clone(),
                ttl: settings.ttl,
                clock: Arc::clone(&clock),
                metrics: Arc::clone(&metrics),
                last_write_ok: AtomicI64::new(0),
                last_write_failed: AtomicI64::new(0),
                pseudonym_key,
            }),
            store,
            hash_type: settings.hash_type,
            bcrypt_cost: settings.bcrypt_cost,
            ttl: settings.ttl,
            cleanup_threshold: settings.cleanup_threshold,
            min_older_than: settings.min_older_than,
            clock,
            metrics,
            check_lane: Lane::new(cores, cores * HASH_QUEUE_PER_CORE),
            add_lane: Lane::new(cores, cores * HASH_QUEUE_PER_CORE),
            dummy_hash,
            cache: VerifyCache::new(settings.verify_cache_entries),
        })
    }

    pub fn hash_type(&self) -> HashType {
        self.hash_type
    }

    pub fn ttl_policy(&self) -> TtlPolicy {
        self.ttl
    }

    pub fn cleanup_threshold(&self) -> u64 {
        self.cleanup_threshold
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub fn now_millis(&self) -> i64 {
        self.clock.now_millis()
    }

    /// Notified after every committed write of this instance, for views
    /// that follow the store (the htpasswd file).
    pub fn changes(&self) -> Arc<Notify> {
        Arc::clone(&self.shared.changes)
    }

    /// Every live user with its stored hash, and the next expiry.
    pub async fn live_credentials(&self) -> Result<LiveCredentials, CredentialError> {
        Ok(self.store.live_credentials(self.clock.now()).await?)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Issues a refresh token for the credential `row`, to get more access
    /// tokens for `service`: a random token whose digest only is stored,
    /// bound to the credential's current hash, so that a replaced, removed
    /// or re-created credential never honours it.
    pub async fn issue_refresh(
        &self,
        row: &UserRow,
        service: &str,
    ) -> Result<String, CredentialError> {
        use base64::Engine;
        let mut bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| CredentialError::Internal("no random source for a token".into()))?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let user = Username::parse(&row.username)
            .map_err(|e| CredentialError::Internal(format!("stored user name: {e}")))?;
        let op = WriteOp::IssueRefresh {
            digest: sha256_hex(token.as_bytes()),
            user,
            service: service.to_owned(),
            issued_at: self.clock.now(),
            credential: credential_digest(row),
        };
        let shared = Arc::clone(&self.shared);
        match detached(async move { shared.write(op).await }).await? {
            Ok(WriteOutcome::RefreshIssued) => Ok(token),
            other => Err(unexpected("refresh", other)),
        }
    }

    /// The credential a refresh token was issued to, for `service`, when
    /// the token is known, the credential is still the one it was issued to
    /// and is live; None otherwise.
    pub async fn redeem_refresh(
        &self,
        token: &str,
        service: &str,
    ) -> Result<Option<UserRow>, CredentialError> {
        let Some(found) = self.store.refresh(&sha256_hex(token.as_bytes())).await? else {
            return Ok(None);
        };
        if found.service != service {
            return Ok(None);
        }
        let Ok(user) = Username::parse(&found.username) else {
            return Ok(None);
        };
        let row = self.store.get(&user).await?;
        Ok(row.filter(|row| {
            row.is_live(self.clock.now()) && credential_digest(row) == found.credential
        }))
    }

    /// A stable stand-in for a name that must not be logged as it is (a
    /// user name no credential has may be a password typed in the wrong
    /// field): `unknown-` and a keyed digest, the same for the same name
    /// while the process runs.
    pub fn pseudonym(&self, name: &str) -> String {
        self.shared.pseudonym(name)
    }

    /// Ok when the caller's rights pass `check`; otherwise the refusal,
    /// audited. The name refused is shown as a pseudonym: no credential of
    /// this caller's has it, and it may be anything, a password included.
    fn permitted(
        &self,
        caller: &Caller,
        action: &'static str,
        user: Option<&Username>,
        check: impl FnOnce(&Rights) -> Result<(), Forbidden>,
    ) -> Result<(), CredentialError> {
        let refusal = match rights_of(caller) {
            Ok(rights) => match check(rights) {
                Ok(()) => return Ok(()),
                Err(why) => why,
            },
            Err(why) => why,
        };
        let reason = refusal.to_string();
        let shown = user.map(|u| self.shared.pseudonym(u.as_str()));
        Event {
            action,
            result: "forbidden",
            reason: Some(&reason),
            user: shown.as_deref(),
            caller: Some(caller),
            ..Event::default()
        }
        .emit();
        Err(refusal.into())
    }

    /// The name of a refused `user` as a log line may show it: a pseudonym
    /// when no credential has it.
    pub fn shown_name(&self, user: &Username, refusal: Refusal) -> String {
        match refusal {
            Refusal::UnknownUser => self.pseudonym(user.as_str()),
            _ => user.as_str().to_owned(),
        }
    }

    /// The store itself, for tools and tests that read or write rows
    /// directly; the doors go through the operations above.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn backend_name(&self) -> &'static str {
        self.store.backend_name()
    }

    /// Succeeds when the database answers and a write would commit now:
    /// the writer commits an empty transaction, and the last write did not
    /// fail (within `WRITES_FAILING_FOR` without a success since). An empty
    /// commit needs no space, so a full disk shows in the writes only.
    pub async fn health(&self) -> Result<(), Unhealthy> {
        self.store.ping().await.map_err(Unhealthy::Database)?;
        let failed = self.shared.last_write_failed.load(Ordering::Relaxed);
        let ok = self.shared.last_write_ok.load(Ordering::Relaxed);
        let recent = self.clock.now_millis().saturating_sub(failed) < WRITES_FAILING_FOR_MS;
        if failed > ok && recent {
            return Err(Unhealthy::WritesFailing);
        }
        Ok(())
    }

    /// The metrics text, with the store's counts read now.
    pub async fn render_metrics(&self) -> String {
        let store = &self.store;
        self.metrics.render(StoreCounts {
            live_users: store.count_live(self.clock.now()).await.ok(),
            errors: store.error_count(),
            commits: store.commit_count(),
            splits: store.split_count(),
            queued: store.queued(),
        })
    }

    /// Live users named `prefix`..., after `after`, at most `limit`; for a
    /// caller limited to some names, only those.
    pub async fn list(
        &self,
        prefix: String,
        after: Option<String>,
        limit: u32,
        caller: &Caller,
    ) -> Result<Vec<ListedUser>, CredentialError> {
        let prefix = rights_of(caller)?.list_prefix(&prefix)?;
        Ok(self
            .store
            .list(ListQuery {
                prefix,
                after,
                limit,
                now: self.clock.now(),
            })
            .await?)
    }

    /// Commits what is queued and closes the database.
    pub async fn close(&self) {
        self.store.close().await;
    }

    /// Checks `password` for `user`: allowed when the user is live now and
    /// the password matches its stored hash. The row is read on every call,
    /// so a removal or an expiry refuses the very next check; only the
    /// hashing is cached. An unknown or expired user costs a verification
    /// against the dummy hash, as a wrong password does.
    pub async fn verify(
        &self,
        user: &Username,
        password: &str,
    ) -> Result<Verdict, CredentialError> {
        // No credential can have such a password: refused before any
        // hashing, whoever the user (so this tells nothing about who exists,
        // and costs an attacker's long password nothing).
        if password.len() > MAX_PASSWORD_BYTES || password.contains('\0') {
            return Ok(Verdict::Refused(Refusal::UnusablePassword));
        }
        let row = self.store.get(user).await?;
        let now = self.clock.now();
        let refusal = match row {
            Some(row) if row.is_live(now) => {
                let digest = self
                    .cache
                    .as_ref()
                    .map(|c| c.digest(&row.password_hash, password));
                if let (Some(cache), Some(digest)) = (&self.cache, &digest) {
                    if cache.contains(digest) {
                        inc(&self.metrics.verify_cached);
                        return Ok(Verdict::Allowed(Box::new(row)));
                    }
                }
                let matches = self.check(password, row.password_hash.clone()).await?;
                inc(&self.metrics.verify_hashed);
                if !matches {
                    // A row in another format or at another cost than the
                    // dummy hash (the original's rows, a changed hash_type)
                    // costs at least what an unknown user costs.
                    if !htpasswd::same_work(&row.password_hash, &self.dummy_hash) {
                        self.check(password, self.dummy_hash.clone()).await?;
                    }
                    return Ok(Verdict::Refused(Refusal::WrongPassword));
                }
                // The hashing may have waited for a core: a removal or a
                // replacement committed meanwhile wins.
                match self.store.get(user).await? {
                    Some(now_row)
                        if now_row.password_hash == row.password_hash
                            && now_row.is_live(self.clock.now()) =>
                    {
                        if let (Some(cache), Some(digest)) = (&self.cache, digest) {
                            cache.insert(digest);
                        }
                        return Ok(Verdict::Allowed(Box::new(now_row)));
                    }
                    Some(_) => return Ok(Verdict::Refused(Refusal::WrongPassword)),
                    None => return Ok(Verdict::Refused(Refusal::UnknownUser)),
                }
            }
            Some(_) => Refusal::Expired,
            None => Refusal::UnknownUser,
        };
        self.check(password, self.dummy_hash.clone()).await?;
        inc(&self.metrics.verify_dummy);
        Ok(Verdict::Refused(refusal))
    }

    /// Adds `user` (or a generated name) with `password` (or a generated
    /// one), living `granted.ttl` seconds. A named user that exists has its
    /// password, creation time and expiry replaced. Once hashed, the write
    /// and its audit event complete even if the caller stops waiting.
    pub async fn add(
        &self,
        user: Option<Username>,
        password: Option<Password>,
        scopes: Option<Vec<ScopePattern>>,
        granted: Granted,
        caller: &Caller,
    ) -> Result<Added, CredentialError> {
        self.permitted(caller, "add", user.as_ref(), |r| match &user {
            Some(user) => r.check_user(Right::Add, user),
            None => r.check(Right::Add),
        })?;
        let generated = password.is_none();
        let password = password.unwrap_or_else(Password::generate);
        let hash = self.hash(&password).await?;
        let shared = Arc::clone(&self.shared);
        let caller = caller.clone();
        let scopes = scopes.map(|s| ScopePattern::join(&s));
        let mut added = detached(async move {
            shared
                .add(user, hash, scopes, granted, generated, &caller)
                .await
        })
        .await??;
        added.generated_password = generated.then_some(password);
        Ok(added)
    }

    /// Removes `user`; Ok(whether it existed).
    pub async fn remove(&self, user: &Username, caller: &Caller) -> Result<bool, CredentialError> {
        self.permitted(caller, "remove", Some(user), |r| {
            r.check_user(Right::Remove, user)
        })?;
        let (shared, user, caller) = (Arc::clone(&self.shared), user.clone(), caller.clone());
        detached(async move { shared.remove(&user, &caller).await }).await?
    }

    /// Moves a live user's expiry to `granted.ttl` from now, never beyond
    /// its creation plus max_lifetime and never earlier than it was.
    pub async fn renew(
        &self,
        user: &Username,
        granted: Granted,
        caller: &Caller,
    ) -> Result<Renewed, CredentialError> {
        self.permitted(caller, "renew", Some(user), |r| {
            r.check_user(Right::Renew, user)
        })?;
        let (shared, user, caller) = (Arc::clone(&self.shared), user.clone(), caller.clone());
        detached(async move { shared.renew(&user, granted, &caller).await }).await?
    }

    /// Removes every user created more than `older_than` seconds ago, in
    /// batches of DELETE_BATCH, one transaction each; returns how many.
    pub async fn cleanup(&self, older_than: u64, caller: &Caller) -> Result<u64, CredentialError> {
        self.permitted(caller, "cleanup", None, Rights::check_cleanup)?;
        if older_than < self.min_older_than {
            return Err(CredentialError::BelowFloor {
                floor: self.min_older_than,
            });
        }
        let (shared, caller) = (Arc::clone(&self.shared), caller.clone());
        detached(async move { shared.cleanup(older_than, &caller).await }).await?
    }

    /// Removes every user whose expiry has passed, in batches of
    /// DELETE_BATCH, one transaction each; returns how many.
    pub async fn sweep_expired(&self) -> Result<u64, CredentialError> {
        let shared = Arc::clone(&self.shared);
        detached(async move { shared.sweep_expired().await }).await?
    }

    /// Hashes `password` in the configured format.
    async fn hash(&self, password: &Password) -> Result<String, CredentialError> {
        let (hash_type, cost) = (self.hash_type, self.bcrypt_cost);
        let password = password.clone();
        self.off_the_workers(&self.add_lane, hash_type == HashType::Sha1, move || {
            htpasswd::hash(hash_type, password.expose(), cost)
                .map_err(|e| CredentialError::Internal(format!("hashing failed: {e}")))
        })
        .await?
    }

    /// Whether `password` matches the stored hash `stored`.
    async fn check(&self, password: &str, stored: String) -> Result<bool, CredentialError> {
        let cheap = htpasswd::detect(&stored) == Some(HashType::Sha1);
        let password = Password::presented(password.to_owned());
        self.off_the_workers(&self.check_lane, cheap, move || {
            htpasswd::verify(password.expose(), &stored)
        })
        .await
    }

    /// Runs a hashing job: in place when it is `cheap` (`{SHA}` costs a
    /// microsecond), otherwise on `lane`.
    async fn off_the_workers<T: Send + 'static>(
        &self,
        lane: &Lane,
        cheap: bool,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CredentialError> {
        if cheap {
            return Ok(job());
        }
        lane.run(job).await.map_err(|e| match e {
            LaneError::Full => {
                inc(&self.metrics.hashing_refused);
                CredentialError::Busy
            }
            LaneError::Failed(why) => CredentialError::Internal(why),
        })
    }
}

/// What the writes share, owned by the tasks that carry them out.
struct Shared {
    /// Notified after every committed write.
    changes: Arc<Notify>,
    store: Store,
    ttl: TtlPolicy,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// When a write last committed, and when one last failed (milliseconds
    /// since the epoch; 0: never), for the health check.
    last_write_ok: AtomicI64,
    last_write_failed: AtomicI64,
    /// Key of [`Shared::pseudonym`], drawn at start.
    pseudonym_key: ring::hmac::Key,
}

impl Shared {
    /// A name no credential has, as a log line shows it (it may be a
    /// password typed into the wrong field): `unknown-` and a keyed digest,
    /// the same for the same name while the process runs.
    pub fn pseudonym(&self, name: &str) -> String {
        let tag = ring::hmac::sign(&self.pseudonym_key, name.as_bytes());
        let hex: String = tag.as_ref()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("unknown-{hex}")
    }

    /// Queues `op` and waits for its commit; a commit that changed the table
    /// is announced to the views that follow it.
    async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        let outcome = self.store.write(op).await;
        let changed = match &outcome {
            Ok(WriteOutcome::Added { .. } | WriteOutcome::Renewed { .. }) => true,
            Ok(WriteOutcome::Removed { found }) => *found,
            Ok(WriteOutcome::CleanedUp { removed } | WriteOutcome::Swept { removed }) => {
                *removed > 0
            }
            _ => false,
        };
        // For the health check: a write that stored something shows that
        // writes commit; one that changed nothing (a sweep with nothing to
        // sweep) needs no space and shows nothing.
        let now = self.clock.now_millis();
        match &outcome {
            Ok(WriteOutcome::RefreshIssued) => self.last_write_ok.store(now, Ordering::Relaxed),
            Ok(_) if changed => self.last_write_ok.store(now, Ordering::Relaxed),
            Ok(_) => {}
            Err(_) => self.last_write_failed.store(now, Ordering::Relaxed),
        }
        if changed {
            self.changes.notify_one();
        }
        outcome
    }

    /// Writes an add with its hash, and its audit event.
    async fn add(
        &self,
        user: Option<Username>,
        hash: String,
        scopes: Option<String>,
        granted: Granted,
        generated: bool,
        caller: &Caller,
    ) -> Result<Added, CredentialError> {
        let rights = rights_of(caller)?;
        let now = self.clock.now();
        let expires_at = now.saturating_add(granted.ttl as i64);
        let write = |user: Username, replace: bool| {
            self.write(WriteOp::Add {
                user,
                hash: hash.clone(),
                now,
                expires_at: Some(expires_at),
                scopes: scopes.clone(),
                replace,
            })
        };
        let (user, outcome) = match user {
            Some(user) => {
                let outcome = write(user.clone(), rights.may(Right::Replace)).await;
                (user, outcome)
            }
            None => {
                let mut attempt = 1;
                loop {
                    let user =
                        Username::generate_under(rights.user_prefix(), self.clock.now_millis());
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
            scopes: scopes.as_deref(),
            caller: Some(caller),
            ..Event::default()
        };
        let replaced = match outcome {
            Ok(WriteOutcome::Added { replaced }) => replaced,
            Ok(WriteOutcome::Conflict) if !rights.may(Right::Replace) => {
                let why = Forbidden::Exists(user.clone());
                event.result = "forbidden";
                let reason = why.to_string();
                event.reason = Some(&reason);
                event.emit();
                return Err(why.into());
            }
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
            scopes,
            generated_password: None,
        })
    }

    /// Removes `user`; Ok(whether it existed).
    async fn remove(&self, user: &Username, caller: &Caller) -> Result<bool, CredentialError> {
        let outcome = self.write(WriteOp::Remove { user: user.clone() }).await;
        let found = match outcome {
            Ok(WriteOutcome::Removed { found }) => Some(found),
            _ => None,
        };
        // A name no credential had may be anything a caller typed.
        let shown = match found {
            Some(false) => self.pseudonym(user.as_str()),
            _ => user.as_str().to_owned(),
        };
        Event {
            action: "remove",
            result: if found.is_some() { "ok" } else { "error" },
            user: Some(&shown),
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
    async fn renew(
        &self,
        user: &Username,
        granted: Granted,
        caller: &Caller,
    ) -> Result<Renewed, CredentialError> {
        let outcome = self
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
                let shown = self.pseudonym(user.as_str());
                event.result = "not_live";
                event.user = Some(&shown);
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
    async fn cleanup(&self, older_than: u64, caller: &Caller) -> Result<u64, CredentialError> {
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
    async fn sweep_expired(&self) -> Result<u64, CredentialError> {
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
            match self.write(op()).await {
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
}

/// Runs `work` on a task of its own and waits for it: when the caller stops
/// waiting (a client gone), the work still completes, so that a write that
/// was queued is answered and its audit event written.
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, CredentialError> {
    tokio::spawn(tracing::Instrument::in_current_span(work))
        .await
        .map_err(|e| CredentialError::Internal(format!("write task failed: {e}")))
}

/// The rights of `caller`; a caller whose rights no door decided has none.
fn rights_of(caller: &Caller) -> Result<&Rights, Forbidden> {
    caller.rights.as_deref().ok_or(Forbidden::Unknown)
}

/// What binds a refresh token to the credential it was issued to: the
/// SHA-256 of the stored hash and the creation time. A replaced credential
/// has another hash; a re-created one another creation time, even when its
/// hash is the same (an unsalted `{SHA}` of the same password).
fn credential_digest(row: &UserRow) -> String {
    sha256_hex(format!("{}\n{}", row.created_at, row.password_hash).as_bytes())
}

/// The SHA-256 of `bytes`, in lower-case hex.
fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The error for a write that failed or answered out of turn.
fn unexpected(action: &str, outcome: Result<WriteOutcome, StoreError>) -> CredentialError {
    match outcome {
        Err(e) => CredentialError::Store(e),
        Ok(other) => CredentialError::Internal(format!("{action} answered {other:?}")),
    }
}
