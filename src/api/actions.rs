//! add, remove (and its alias delete), cleanup. Each handler parses its
//! parameters into domain types, makes one call to the store, and answers.

use axum::extract::{Request, State};
use axum::response::Response;

use super::envelope::{Action, ApiError, Envelope};
use super::params::Params;
use super::AppState;
use crate::domain::{Password, PasswordError, Username};
use crate::htpasswd::{self, HashType};
use crate::store::{WriteOp, WriteOutcome};

/// Largest accepted `older_than`, in seconds (about 136 years).
const MAX_OLDER_THAN: u64 = u32::MAX as u64;

pub async fn add(State(app): State<AppState>, req: Request) -> Response {
    Action::Add.answer(add_user(&app, req).await)
}

pub async fn remove(State(app): State<AppState>, req: Request) -> Response {
    Action::Remove.answer(remove_user(&app, req).await)
}

pub async fn cleanup(State(app): State<AppState>, req: Request) -> Response {
    Action::Cleanup.answer(cleanup_users(&app, req).await)
}

async fn add_user(app: &AppState, req: Request) -> Result<Envelope, ApiError> {
    let mut params = Params::from_mutation(req).await?;
    let user = parse_user(&params)?;
    let password = params.take("passwd").ok_or(ApiError::PasswordRequired)?;
    let password = Password::parse(password, app.hash_type).map_err(|e| match e {
        PasswordError::Empty => ApiError::PasswordRequired,
        other => ApiError::BadPassword(other),
    })?;
    let hash = hash_password(app, password).await?;
    let now = app.clock.now();
    let outcome = app
        .store
        .write(WriteOp::Add {
            user: user.clone(),
            hash,
            now,
        })
        .await?;
    let replaced = matches!(outcome, WriteOutcome::Added { replaced: true });
    Ok(Envelope::ok(Action::Add, format!("Added user {user}"))
        .with("user", user.as_str())
        .with("replaced", replaced)
        .with("created_at", now))
}

async fn remove_user(app: &AppState, req: Request) -> Result<Envelope, ApiError> {
    let params = Params::from_mutation(req).await?;
    let user = parse_user(&params)?;
    let outcome = app
        .store
        .write(WriteOp::Remove { user: user.clone() })
        .await?;
    let found = matches!(outcome, WriteOutcome::Removed { found: true });
    Ok(Envelope::ok(Action::Remove, format!("removed user {user}"))
        .with("user", user.as_str())
        .with("found", found))
}

async fn cleanup_users(app: &AppState, req: Request) -> Result<Envelope, ApiError> {
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
    let outcome = app.store.write(WriteOp::Cleanup { cutoff }).await?;
    let WriteOutcome::CleanedUp { removed } = outcome else {
        return Err(ApiError::Internal(format!("cleanup answered {outcome:?}")));
    };
    Ok(Envelope::ok(
        Action::Cleanup,
        format!("removed {removed} users older than {older_than} seconds"),
    )
    .with("removed", removed)
    .with("older_than", older_than))
}

fn parse_user(params: &Params) -> Result<Username, ApiError> {
    let raw = params.get("user").ok_or_else(|| ApiError::InvalidUser {
        detail: "user is missing".into(),
    })?;
    Username::parse(raw).map_err(|e| ApiError::InvalidUser {
        detail: e.to_string(),
    })
}

/// Hashes on the blocking pool, one job per core at most, in arrival order
/// (more threads would only share the same cores and stretch every request's
/// latency). `{SHA}` costs a microsecond and runs in place.
async fn hash_password(app: &AppState, password: Password) -> Result<String, ApiError> {
    let (hash_type, cost) = (app.hash_type, app.bcrypt_cost);
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
