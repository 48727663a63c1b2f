//! add, remove (and its alias delete), renew, cleanup, list. Each handler
//! parses its parameters into domain types, makes one call to the credential
//! service or the store, and answers.

use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::{json, Value};

use super::envelope::{Action, ApiError, Envelope};
use super::params::Params;
use super::AppState;
use crate::audit::Caller;
use crate::credentials::CredentialError;
use crate::domain::{rfc3339, Granted, Password, PasswordError, ScopePattern, Username};
use crate::htpasswd::HashType;

/// Largest accepted `older_than`, in seconds (about 136 years).
const MAX_OLDER_THAN: u64 = u32::MAX as u64;
/// Users on one page of `list` unless `limit` says otherwise, and the most.
const DEFAULT_LIST_LIMIT: u32 = 100;
const MAX_LIST_LIMIT: u32 = 1000;

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
    let creds = &app.credentials;
    // Absent: the service names the user and draws the password. Given but
    // empty (an unset variable in the caller's script): refused, as the
    // original did, so that nobody gets a credential they did not ask for.
    let user = params.given("user").map(parse_username).transpose()?;
    let granted = grant(app, &params)?;
    let password = params
        .take_given("passwd")
        .map(|raw| parse_password(raw, creds.hash_type()))
        .transpose()?;
    let scopes = parse_scopes(&params)?;
    let added = creds.add(user, password, scopes, granted, &caller).await?;
    let mut answer = Envelope::ok(Action::Add, format!("Added user {}", added.user))
        .with("user", added.user.as_str())
        .with("replaced", added.replaced)
        .with("created_at", added.created_at)
        .with("expires_at", added.expires_at)
        .with("expires", rfc3339(added.expires_at))
        .with("ttl", added.granted.ttl)
        .with("ttl_clamped", added.granted.clamped)
        .with("scopes", added.scopes.clone());
    if let Some(password) = &added.generated_password {
        answer = answer.with("passwd", password.expose());
    }
    Ok(answer)
}

async fn remove_user(app: &AppState, req: Request) -> Result<Envelope, ApiError> {
    let caller = Caller::of(&req);
    let params = Params::from_mutation(req).await?;
    let user = parse_user(&params)?;
    let found = app.credentials.remove(&user, &caller).await?;
    Ok(Envelope::ok(Action::Remove, format!("removed user {user}"))
        .with("user", user.as_str())
        .with("found", found))
}

async fn renew_user(app: &AppState, req: Request) -> Result<Envelope, ApiError> {
    let caller = Caller::of(&req);
    let params = Params::from_mutation(req).await?;
    let user = parse_user(&params)?;
    let granted = grant(app, &params)?;
    let renewed = app.credentials.renew(&user, granted, &caller).await?;
    Ok(Envelope::ok(Action::Renew, format!("renewed user {user}"))
        .with("user", user.as_str())
        .with("expires_at", renewed.expires_at)
        .with("expires", renewed.expires_at.map(rfc3339))
        .with("ttl_clamped", granted.clamped)
        .with("lifetime_limited", renewed.limited))
}

async fn cleanup_users(app: &AppState, req: Request) -> Result<Envelope, ApiError> {
    let caller = Caller::of(&req);
    let params = Params::from_mutation(req).await?;
    let older_than = match params.get("older_than") {
        None => app.credentials.cleanup_threshold(),
        Some(raw) => bounded(raw, 0, MAX_OLDER_THAN).ok_or(ApiError::BadParameter {
            name: "older_than",
            detail: format!("must be a whole number of seconds from 0 to {MAX_OLDER_THAN}"),
        })?,
    };
    let removed = app.credentials.cleanup(older_than, &caller).await?;
    Ok(Envelope::ok(
        Action::Cleanup,
        format!("removed {removed} users older than {older_than} seconds"),
    )
    .with("removed", removed)
    .with("older_than", older_than))
}

async fn list_users(app: &AppState, req: Request) -> Result<Envelope, ApiError> {
    let caller = Caller::of(&req);
    let params = Params::from_read(req)?;
    let prefix = match params.get("prefix") {
        None => String::new(),
        Some(p) => Username::parse(p)
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
        Some(raw) => bounded(raw, 1, u64::from(MAX_LIST_LIMIT)).ok_or(ApiError::BadParameter {
            name: "limit",
            detail: format!("must be a whole number from 1 to {MAX_LIST_LIMIT}"),
        })? as u32,
    };
    // One more than a page tells whether another page follows.
    let mut users = app
        .credentials
        .list(
            prefix,
            after.map(|a| a.as_str().to_owned()),
            limit + 1,
            &caller,
        )
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
                "scopes": u.scopes,
            })
        })
        .collect();
    Ok(Envelope::ok(Action::List, format!("{} users", shown.len()))
        .with("users", shown)
        .with("next", next))
}

fn grant(app: &AppState, params: &Params) -> Result<Granted, ApiError> {
    app.credentials
        .ttl_policy()
        .grant(params.get("ttl"))
        .map_err(|e| ApiError::BadParameter {
            name: "ttl",
            detail: e.to_string(),
        })
}

/// A whole number from `min` to `max`, or None.
fn bounded(raw: &str, min: u64, max: u64) -> Option<u64> {
    raw.parse::<u64>().ok().filter(|n| (min..=max).contains(n))
}

/// The scope patterns of an add: absent, the configured default; given,
/// each value one pattern or several separated by spaces. A `scope` given
/// but empty (`scope=`, `"scope": []`) is refused rather than read as the
/// default.
fn parse_scopes(params: &Params) -> Result<Option<Vec<ScopePattern>>, ApiError> {
    let values = params.all("scope");
    if values.is_empty() {
        return Ok(None);
    }
    ScopePattern::parse_given(&values)
        .map(Some)
        .map_err(|e| ApiError::BadParameter {
            name: "scope",
            detail: e.to_string(),
        })
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

impl From<CredentialError> for ApiError {
    fn from(e: CredentialError) -> Self {
        match e {
            CredentialError::Store(e) => ApiError::Unavailable(e),
            CredentialError::NotLive(user) => ApiError::NotLive { user },
            CredentialError::Busy => ApiError::Busy,
            CredentialError::BelowFloor { floor } => ApiError::BadParameter {
                name: "older_than",
                detail: format!(
                    "must be at least {floor} seconds (min_older_than): a cleanup of younger credentials is refused"
                ),
            },
            CredentialError::Forbidden(why) => ApiError::NotPermitted(why),
            CredentialError::Internal(cause) => ApiError::Internal(cause),
        }
    }
}
