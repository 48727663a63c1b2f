//! add, remove (and its alias delete), renew, cleanup, list. Each handler
//! parses its parameters into domain types, calls the store, records an audit
//! event, and answers.

use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::{json, Value};

use super::envelope::{Action, ApiError, Envelope};
use super::params::Params;
use super::AppState;
use crate::audit::{Caller, Event};
use crate::domain::{rfc3339, Password, PasswordError, Username};
use crate::htpasswd::{self, HashType};
use crate::metrics::inc;
use crate::store::{ListQuery, StoreError, WriteOp, WriteOutcome};

/// Largest accepted `older_than`, in seconds (about 136 years).
const MAX_OLDER_THAN: u64 = u32::MAX as u64;
/// Users on one page of `list` unless `limit` says otherwise, and the most.
const DEFAULT_LIST_LIMIT: u32 = 100;
const MAX_LIST_LIMIT: u32 = 1000;
/// Attempts at a fresh generated name before giving up (a clash needs two
/// adds in one millisecond drawing the same six random characters).
const NAME_ATTEMPTS: usize = 5;

pub async fn add(State(app): State<AppState>, req: Request) -> Response {
    Action::Add.answer(add_user(&app, req).await)
}

pub async fn remove(State(app): State<AppState>, req: Request) -> Response {
    Action::Remove.answer(remove_user(&app, req).await)
}

pub async fn renew(State(app): State<AppState>, req: Request) -> Response {
    Action::Renew.answer(renew_user(&app, req).await)
}

pub async fn cleanup(State(app): State<AppState>, req: Request) -> Response {
    Action::Cleanup.answer(cleanup_users(&app, req).await)
}

pub async fn list(State(app): State<AppState>, req: Request) -> Response {
    Action::List.answer(list_users(&app, req).await)
}

async fn add_user(app: &AppState, req: Request) -> Result<Envelope, ApiError> {
    let caller = Caller::of(&req);
    let mut params = Params::from_mutation(req).await?;
    let named = params.get("user").map(parse_username).transpose()?;
    let granted = app
        .ttl
        .grant(params.get("ttl"))
        .map_err(|e| ApiError::BadParameter {
            name: "ttl",
            detail: e.to_string(),
        })?;
    let (password, generated) = match params.take("passwd") {
        Some(raw) => (parse_password(raw, app.hash_type)?, false),
        None => (Password::generate(), true),
    };
    let hash = hash_password(app, &password).await?;
    let now = app.clock.now();
    let expires_at = now.saturating_add(granted.ttl as i64);

    let write = |user: Username, replace: bool| {
        app.store.write(WriteOp::Add {
            user,
            hash: hash.clone(),
            now,
            expires_at: Some(expires_at),
            replace,
        })
    };
    let (user, outcome) = match named {
        Some(user) => {
            let outcome = write(user.clone(), true).await;
            (user, outcome)
        }
        None => {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let user = Username::generate(app.clock.now_millis());
                match write(user.clone(), false).await {
                    Ok(WriteOutcome::Conflict) if attempt < NAME_ATTEMPTS => continue,
                    Ok(WriteOutcome::Conflict) => {
                        break (
                            user,
                            Err(StoreError::Database("no free generated name".into())),
                        )
                    }
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
        caller: Some(&caller),
        ..Event::default()
    };
    let replaced = match outcome {
        Ok(WriteOutcome::Added { replaced }) => replaced,
        Ok(other) => {
            event.emit();
            return Err(ApiError::Internal(format!("add answered {other:?}")));
        }
        Err(e) => {
            event.emit();
            return Err(e.into());
        }
    };
    event.result = "ok";
    event.replaced = Some(replaced);
    event.emit();
    inc(&app.metrics.adds);

    let mut answer = Envelope::ok(Action::Add, format!("Added user {user}"))
        .with("user", user.as_str())
        .with("replaced", replaced)
        .with("created_at", now)
        .with("expires_at", expires_at)
        .with("expires", rfc3339(expires_at))
        .with("ttl", granted.ttl)
        .with("ttl_clamped", granted.clamped);
    if generated {
        answer = answer.with("passwd", password.expose());
    }
    Ok(answer)
}

async fn remove_user(app: &AppState, req: Request) -> Result<Envelope, ApiError> {
    let caller = Caller::of(&req);
    let params = Params::from_mutation(req).await?;
    let user = parse_user(&params)?;
    let outcome = app
        .store
        .write(WriteOp::Remove { user: user.clone() })
        .await;
    let found = matches!(outcome, Ok(WriteOutcome::Removed { found: true }));
    Event {
        action: "remove",
        result: if outcome.is_ok() { "ok" } else { "error" },
        user: Some(user.as_str()),
        removed: outcome.is_ok().then_some(u64::from(found)),
        caller: Some(&caller),
        ..Event::default()
    }
    .emit();
    outcome?;
    if found {
        inc(&app.metrics.removes);
    }
    Ok(Envelope::ok(Action::Remove, format!("removed user {user}"))
        .with("user", user.as_str())
        .with("found", found))
}

async fn renew_user(app: &AppState, req: Request) -> Result<Envelope, ApiError> {
    let caller = Caller::of(&req);
    let params = Params::from_mutation(req).await?;
    let user = parse_user(&params)?;
    let granted = app
        .ttl
        .grant(params.get("ttl"))
        .map_err(|e| ApiError::BadParameter {
            name: "ttl",
            detail: e.to_string(),
        })?;
    let outcome = app
        .store
        .write(WriteOp::Renew {
            user: user.clone(),
            now: app.clock.now(),
            ttl: granted.ttl,
            max_lifetime: app.ttl.max_lifetime,
        })
        .await;
    let mut event = Event {
        action: "renew",
        result: "error",
        user: Some(user.as_str()),
        caller: Some(&caller),
        ..Event::default()
    };
    let (expires_at, limited) = match outcome {
        Ok(WriteOutcome::Renewed {
            expires_at,
            limited,
        }) => (expires_at, limited),
        Ok(WriteOutcome::NotLive) => {
            event.result = "not_live";
            event.emit();
            return Err(ApiError::NotLive { user });
        }
        Ok(other) => {
            event.emit();
            return Err(ApiError::Internal(format!("renew answered {other:?}")));
        }
        Err(e) => {
            event.emit();
            return Err(e.into());
        }
    };
    event.result = "ok";
    event.expires_at = expires_at;
    event.emit();
    inc(&app.metrics.renews);
    Ok(Envelope::ok(Action::Renew, format!("renewed user {user}"))
        .with("user", user.as_str())
        .with("expires_at", expires_at)
        .with("expires", expires_at.map(rfc3339))
        .with("ttl_clamped", granted.clamped)
        .with("lifetime_limited", limited))
}

async fn cleanup_users(app: &AppState, req: Request) -> Result<Envelope, ApiError> {
    let caller = Caller::of(&req);
    let params = Params::from_mutation(req).await?;
    let older_than = match params.get("older_than") {
        None => app.cleanup_threshold,
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|s| *s <= MAX_OLDER_THAN)
            .ok_or(ApiError::BadParameter {
                name: "older_than",
                detail: format!("must be a whole number of seconds from 0 to {MAX_OLDER_THAN}"),
            })?,
    };
    let cutoff = app.clock.now() - older_than as i64;
    let outcome = app.store.write(WriteOp::Cleanup { cutoff }).await;
    let removed = match outcome {
        Ok(WriteOutcome::CleanedUp { removed }) => Some(removed),
        _ => None,
    };
    Event {
        action: "cleanup",
        result: if removed.is_some() { "ok" } else { "error" },
        removed,
        caller: Some(&caller),
        ..Event::default()
    }
    .emit();
    let removed = match outcome? {
        WriteOutcome::CleanedUp { removed } => removed,
        other => return Err(ApiError::Internal(format!("cleanup answered {other:?}"))),
    };
    app.metrics
        .cleaned_up
        .fetch_add(removed, std::sync::atomic::Ordering::Relaxed);
    Ok(Envelope::ok(
        Action::Cleanup,
        format!("removed {removed} users older than {older_than} seconds"),
    )
    .with("removed", removed)
    .with("older_than", older_than))
}

async fn list_users(app: &AppState, req: Request) -> Result<Envelope, ApiError> {
    let params = Params::from_read(req)?;
    let prefix = match params.get("prefix") {
        None => String::new(),
        Some(p) => parse_username(p)
            .map_err(|_| ApiError::BadParameter {
                name: "prefix",
                detail: "may contain only the characters a user name may".into(),
            })?
            .as_str()
            .to_owned(),
    };
    let after = params
        .get("after")
        .map(|a| {
            Username::parse(a).map_err(|_| ApiError::BadParameter {
                name: "after",
                detail: "must be a user name (the `next` of the previous page)".into(),
            })
        })
        .transpose()?;
    let limit = match params.get("limit") {
        None => DEFAULT_LIST_LIMIT,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
            .ok_or(ApiError::BadParameter {
                name: "limit",
                detail: format!("must be a whole number from 1 to {MAX_LIST_LIMIT}"),
            })?,
    };
    // One more than a page tells whether another page follows.
    let mut users = app
        .store
        .list(ListQuery {
            prefix,
            after: after.map(|a| a.as_str().to_owned()),
            limit: limit + 1,
            now: app.clock.now(),
        })
        .await?;
    let more = users.len() > limit as usize;
    users.truncate(limit as usize);
    let next = more
        .then(|| users.last().map(|u| u.username.clone()))
        .flatten();
    let shown: Vec<Value> = users
        .iter()
        .map(|u| {
            json!({
                "user": u.username,
                "created_at": u.created_at,
                "expires_at": u.expires_at,
                "expires": u.expires_at.map(rfc3339),
            })
        })
        .collect();
    Ok(Envelope::ok(Action::List, format!("{} users", shown.len()))
        .with("users", shown)
        .with("next", next))
}

fn parse_user(params: &Params) -> Result<Username, ApiError> {
    let raw = params.get("user").ok_or_else(|| ApiError::InvalidUser {
        detail: "user is missing".into(),
    })?;
    parse_username(raw)
}

fn parse_username(raw: &str) -> Result<Username, ApiError> {
    Username::parse(raw).map_err(|e| ApiError::InvalidUser {
        detail: e.to_string(),
    })
}

fn parse_password(raw: String, hash_type: HashType) -> Result<Password, ApiError> {
    Password::parse(raw, hash_type).map_err(|e| match e {
        PasswordError::Empty => ApiError::PasswordRequired,
        other => ApiError::BadPassword(other),
    })
}

/// Hashes on the blocking pool, one job per core at most, in arrival order
/// (more threads would only share the same cores and stretch every request's
/// latency). `{SHA}` costs a microsecond and runs in place.
async fn hash_password(app: &AppState, password: &Password) -> Result<String, ApiError> {
    let (hash_type, cost) = (app.hash_type, app.bcrypt_cost);
    let password = password.clone();
    let run = move || htpasswd::hash(hash_type, password.expose(), cost);
    let result = if hash_type == HashType::Sha1 {
        run()
    } else {
        let _permit = app
            .hashing
            .acquire()
            .await
            .map_err(|e| ApiError::Internal(format!("hashing gate closed: {e}")))?;
        tokio::task::spawn_blocking(run)
            .await
            .map_err(|e| ApiError::Internal(format!("hashing task failed: {e}")))?
    };
    result.map_err(|e| ApiError::Internal(format!("hashing failed: {e}")))
}
