//! The token door: a token server for the registry's token authentication
//! (the distribution token specification), over the same credentials as
//! every other door.
//!
//! - `GET /token?service=...&scope=...` with Basic credentials, and `POST
//!   /token` with an OAuth2 form (`grant_type=password` or
//!   `grant_type=refresh_token`), answer a JWT signed with ES256 whose
//!   `access` claim lists, for each scope asked, the actions granted: those
//!   the credential's scopes allow (or the configured default), within what
//!   the static ACL allows. A partial grant is not an error.
//! - A credential's tokens never outlive it: an access token expires within
//!   `ttl`, and early enough that the registry's 60 s leeway ends by the
//!   credential's expiry; refresh tokens die with the credential.
//! - `GET /.well-known/jwks.json` publishes the public key.
//!
//! Errors come in the registry's shape, `{"errors":[{"code","message"}]}`,
//! and a 401 carries a Basic challenge.

pub mod signer;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::basic::basic_credentials;
use super::form::{self, BodyError};
use super::{Door, Refused};
use crate::audit::{Caller, Event};
use crate::config::{Section, TokenSettings};
use crate::credentials::{CredentialError, Credentials, Verdict};
use crate::domain::scope::grant;
use crate::domain::{rfc3339, AclRule, Password, RequestedScope, ScopePattern, Username};
use crate::metrics::{inc, DoorMetrics};
use crate::store::UserRow;
use crate::telemetry::RateLimitedLines;
pub use signer::{SignerError, TokenKeys};

/// The path of the token endpoint, the registry's `realm`.
pub const PATH: &str = "/token";
/// The path of the public key set.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Seconds the registry (distribution 2.8) accepts a token past its `exp`.
pub const REGISTRY_LEEWAY: i64 = 60;
/// Largest POST body read.
const MAX_FORM_BYTES: usize = 16 * 1024;
/// Most scopes one request may ask for.
const MAX_REQUESTED_SCOPES: usize = 64;
/// The door's error lines (a database outage fails every request).
static ERROR_LINES: RateLimitedLines = RateLimitedLines::new();

struct TokenDoor {
    credentials: Arc<Credentials>,
    keys: Arc<TokenKeys>,
    issuer: String,
    service: String,
    ttl: i64,
    challenge: HeaderValue,
    default_scopes: Vec<ScopePattern>,
    acl: Vec<AclRule>,
    metrics: Arc<DoorMetrics>,
}

/// The door, with the signing keys loaded by the caller (so that start-up
/// refuses a bad key before anything listens).
pub fn door(credentials: Arc<Credentials>, settings: &TokenSettings, keys: Arc<TokenKeys>) -> Door {
    let metrics = credentials
        .metrics()
        .door("token", &[PATH, JWKS_PATH], true);
    keys.report_to(Arc::clone(credentials.metrics()));
    let challenge = HeaderValue::from_str(&format!("Basic realm=\"{}\"", settings.realm))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"registry token\""));
    let state = Arc::new(TokenDoor {
        credentials,
        keys,
        issuer: settings.issuer.clone(),
        service: settings.service.clone(),
        ttl: i64::try_from(settings.ttl).unwrap_or(i64::MAX),
        challenge,
        default_scopes: settings.default_scopes.clone(),
        acl: settings.acl.clone(),
        metrics: Arc::clone(&metrics),
    });
    let routes = Router::new()
        // HEAD of /token would issue a token (and a refresh token) that
        // nobody sees: refused like any other method.
        .route(
            PATH,
            get(get_token)
                .post(post_token)
                .head(|| async { method_not_allowed("GET, POST") })
                .fallback(|| async { method_not_allowed("GET, POST") }),
        )
        .route(
            JWKS_PATH,
            get(jwks).fallback(|| async { method_not_allowed("GET, HEAD") }),
        )
        .fallback(not_found)
        .with_state(state);
    Door::new(
        "token",
        Section::Token,
        &settings.listener,
        routes,
        refuse,
        metrics,
    )
}

/// What a token request can fail with.
#[derive(Debug)]
enum TokenError {
    /// No usable credentials: 401 with the Basic challenge. The reason, and
    /// the user name as the log may show it, go to the log only.
    Unauthorized {
        reason: &'static str,
        user: Option<String>,
    },
    /// A live credential too close to its expiry for any token: one would
    /// outlive it by the registry's leeway. 401, saying so.
    ExpiresTooSoon,
    /// The request itself is wrong: 400.
    BadRequest(String),
    /// The form is larger than the door reads: 413.
    TooLarge,
    /// The client stopped sending its form: 408.
    TimedOut,
    /// The database or the hashing queue cannot answer now: 503.
    Unavailable(CredentialError),
    Internal(String),
}

impl TokenError {
    fn unauthorized(reason: &'static str) -> Self {
        TokenError::Unauthorized { reason, user: None }
    }
}

impl TokenDoor {
    fn answer(&self, error: TokenError) -> Response {
        let (status, code, message) = match &error {
            TokenError::Unauthorized { .. } => (
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authentication required: give the credentials of a live user".to_owned(),
            ),
            TokenError::ExpiresTooSoon => (
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                format!(
                    "the credential expires within the registry's {REGISTRY_LEEWAY} s leeway, which a token would outlive; renew it, or add one with a longer ttl"
                ),
            ),
            TokenError::BadRequest(why) => (StatusCode::BAD_REQUEST, "UNSUPPORTED", why.clone()),
            TokenError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "UNSUPPORTED",
                format!("the form is larger than {MAX_FORM_BYTES} bytes"),
            ),
            TokenError::TimedOut => (
                StatusCode::REQUEST_TIMEOUT,
                "UNSUPPORTED",
                "the form did not arrive in time".to_owned(),
            ),
            TokenError::Unavailable(CredentialError::Busy) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "too many password checks are waiting; try again shortly".to_owned(),
            ),
            TokenError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "the credential store is unavailable; try again shortly".to_owned(),
            ),
            TokenError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "internal error".to_owned(),
            ),
        };
        match &error {
            TokenError::Unavailable(cause) => {
                if let Some(suppressed) = ERROR_LINES.admit() {
                    tracing::error!(door = "token", error = %cause, suppressed, "token request failed");
                }
            }
            TokenError::Internal(cause) => {
                tracing::error!(door = "token", error = %cause, "token request failed")
            }
            _ => {}
        }
        let mut response = errors(status, code, &message);
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, self.challenge.clone());
        }
        response
    }
}

/// `{"errors":[{"code":..., "message":...}]}` with `status`.
fn errors(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"errors": [{"code": code, "message": message}]});
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn refuse(refused: Refused, _req: &Request) -> Response {
    errors(StatusCode::FORBIDDEN, "DENIED", refused.reason())
}

async fn not_found() -> Response {
    errors(
        StatusCode::NOT_FOUND,
        "UNSUPPORTED",
        "no such endpoint; ask /token or /.well-known/jwks.json",
    )
}

/// 405, naming the methods `allow`ed.
fn method_not_allowed(allow: &'static str) -> Response {
    let mut response = errors(
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
        "method not allowed",
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

async fn jwks(State(door): State<Arc<TokenDoor>>) -> Response {
    // A key replaced by a reload stays listed while tokens it signed may
    // be live: their ttl and the registry's leeway.
    let live_for = std::time::Duration::from_secs(
        u64::try_from(door.ttl + REGISTRY_LEEWAY).unwrap_or(u64::MAX),
    );
    let body = json!({"keys": door.keys.published(live_for)});
    let mut response = body.to_string().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A request's parameters: name=value pairs, repeats kept.
struct Form(Vec<(String, String)>);

impl Form {
    fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn parse(input: &[u8], what: &str) -> Result<Self, TokenError> {
        form::pairs(input)
            .map(Form)
            .map_err(|e| TokenError::BadRequest(format!("the {what} holds {e}")))
    }
}

/// `GET /token`: Basic credentials, `service`, `scope` (repeatable, each may
/// hold several separated by spaces), `offline_token=true` for a refresh
/// token.
async fn get_token(State(door): State<Arc<TokenDoor>>, req: Request) -> Response {
    let caller = caller_of(&req);
    let (parts, _) = req.into_parts();
    let result = async {
        let params = Form::parse(
            parts.uri.query().unwrap_or_default().as_bytes(),
            "query string",
        )?;
        let row = door.authenticate(&parts.headers, None).await?;
        door.check_service(params.first("service"))?;
        let scopes = requested_scopes(params.all("scope"))?;
        let offline = params.first("offline_token") == Some("true");
        door.issue(&row, &scopes, offline, None, false).await
    }
    .await;
    door.finish(result, &caller)
}

/// `POST /token`: the OAuth2 form of the specification.
async fn post_token(State(door): State<Arc<TokenDoor>>, req: Request) -> Response {
    let caller = caller_of(&req);
    let result = async {
        let (parts, body) = req.into_parts();
        let is_form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(form::media_type)
            .is_some_and(|m| m == "application/x-www-form-urlencoded");
        if !is_form {
            return Err(TokenError::BadRequest(
                "send the form as application/x-www-form-urlencoded".into(),
            ));
        }
        if parts.uri.query().is_some_and(|q| !q.is_empty()) {
            return Err(TokenError::BadRequest(
                "POST takes its parameters in the body, not the URL".into(),
            ));
        }
        let bytes = form::read_body(Body::new(body), MAX_FORM_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => TokenError::TooLarge,
                BodyError::TimedOut => TokenError::TimedOut,
                BodyError::Broken => TokenError::BadRequest("the form could not be read".into()),
            })?;
        let params = Form::parse(&bytes, "form")?;
        door.check_service(params.first("service"))?;
        let scopes = requested_scopes(params.all("scope"))?;
        match params.first("grant_type") {
            Some("password") => {
                let login = (
                    params.first("username").unwrap_or_default(),
                    params.first("password").unwrap_or_default(),
                );
                let row = door.authenticate(&parts.headers, Some(login)).await?;
                let offline = params.first("access_type") == Some("offline");
                door.issue(&row, &scopes, offline, None, true).await
            }
            Some("refresh_token") => {
                let token = params
                    .first("refresh_token")
                    .filter(|t| !t.is_empty() && t.len() <= 256)
                    .ok_or(TokenError::unauthorized("no_refresh_token"))?;
                let row = door
                    .credentials
                    .redeem_refresh(token, &door.service)
                    .await
                    .map_err(TokenError::Unavailable)?
                    .ok_or(TokenError::unauthorized("refresh_token_not_live"))?;
                door.issue(&row, &scopes, false, Some(token.to_owned()), true)
                    .await
            }
            _ => Err(TokenError::BadRequest(
                "grant_type must be password or refresh_token".into(),
            )),
        }
    }
    .await;
    door.finish(result, &caller)
}

fn caller_of(req: &Request) -> Caller {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_default()
}

/// The scopes asked for, each checked against the grammar.
fn requested_scopes<'a>(
    values: impl Iterator<Item = &'a str>,
) -> Result<Vec<RequestedScope>, TokenError> {
    let mut scopes = Vec::new();
    for scope in values.flat_map(str::split_ascii_whitespace) {
        if scopes.len() == MAX_REQUESTED_SCOPES {
            return Err(TokenError::BadRequest(format!(
                "at most {MAX_REQUESTED_SCOPES} scopes per request"
            )));
        }
        scopes
            .push(RequestedScope::parse(scope).map_err(|e| TokenError::BadRequest(e.to_string()))?);
    }
    Ok(scopes)
}

impl TokenDoor {
    /// The credential named by the request's Basic `Authorization` header,
    /// or by the form's `login` (username, password), checked by the same
    /// verifier as every door.
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        login: Option<(&str, &str)>,
    ) -> Result<UserRow, TokenError> {
        let (user, password) = match login {
            Some((user, password)) => (
                Username::parse(user)
                    .map_err(|_| TokenError::unauthorized("unusable_user_name"))?,
                Password::presented(password.to_owned()),
            ),
            None => basic_credentials(headers).map_err(TokenError::unauthorized)?,
        };
        match self.credentials.verify(&user, password.expose()).await {
            Ok(Verdict::Allowed(row)) => Ok(*row),
            Ok(Verdict::Refused(refusal)) => Err(TokenError::Unauthorized {
                reason: refusal.name(),
                user: Some(self.credentials.shown_name(&user, refusal)),
            }),
            Err(e @ (CredentialError::Store(_) | CredentialError::Busy)) => {
                Err(TokenError::Unavailable(e))
            }
            Err(e) => Err(TokenError::Internal(e.to_string())),
        }
    }

    fn check_service(&self, service: Option<&str>) -> Result<(), TokenError> {
        match service {
            Some(s) if s == self.service => Ok(()),
            Some(_) => Err(TokenError::BadRequest(format!(
                "unknown service; this token server serves {}",
                self.service
            ))),
            None => Err(TokenError::BadRequest(format!(
                "service is required; this token server serves {}",
                self.service
            ))),
        }
    }

    /// Signs an access token for `row` granting what it may of `scopes`;
    /// with `offline`, also issues a refresh token (`refresh` is one being
    /// redeemed, answered back as the specification asks).
    async fn issue(
        &self,
        row: &UserRow,
        scopes: &[RequestedScope],
        offline: bool,
        refresh: Option<String>,
        oauth: bool,
    ) -> Result<Issued, TokenError> {
        let now = self.credentials.now();
        // The registry takes a token up to 60 s past its exp: so that none
        // outlives its credential, exp ends that much before the expiry.
        let mut exp = now.saturating_add(self.ttl);
        if let Some(expires_at) = row.expires_at {
            exp = exp.min(expires_at - REGISTRY_LEEWAY);
        }
        if exp <= now {
            return Err(TokenError::ExpiresTooSoon);
        }
        let own = match &row.scopes {
            None => self.default_scopes.clone(),
            Some(stored) => ScopePattern::parse_list([stored.as_str()]).map_err(|e| {
                TokenError::Internal(format!("the scopes stored with {}: {e}", row.username))
            })?,
        };
        let mut access = Vec::new();
        let mut granted = Vec::new();
        for scope in scopes {
            let actions = grant(scope, &row.username, &own, &self.acl);
            if actions.is_empty() {
                continue;
            }
            granted.push(format!(
                "{}:{}:{}",
                scope.full_kind(),
                scope.name,
                actions.join(",")
            ));
            let mut entry = json!({"type": scope.kind, "name": scope.name, "actions": actions});
            if let (Some(class), Value::Object(map)) = (&scope.class, &mut entry) {
                map.insert("class".into(), Value::String(class.clone()));
            }
            access.push(entry);
        }
        let claims = json!({
            "iss": self.issuer,
            "sub": row.username,
            "aud": self.service,
            "exp": exp,
            "nbf": now,
            "iat": now,
            "jti": random_id()?,
            "access": access,
        });
        let token = self
            .keys
            .current()
            .sign(&claims)
            .map_err(|_| TokenError::Internal("signing failed".into()))?;
        let refresh_was_given = refresh.is_some();
        let refresh_token = match (offline, refresh) {
            (_, Some(token)) => Some(token),
            (true, None) => Some(
                self.credentials
                    .issue_refresh(row, &self.service)
                    .await
                    .map_err(TokenError::Unavailable)?,
            ),
            (false, None) => None,
        };
        Ok(Issued {
            user: row.username.clone(),
            granted: granted.join(" "),
            token,
            expires_in: exp - now,
            issued_at: rfc3339(now),
            refresh_token,
            new_refresh: offline,
            grant: if refresh_was_given {
                "refresh_token"
            } else {
                "password"
            },
            oauth,
        })
    }

    /// The answer, the audit event and the counts of a request.
    fn finish(&self, result: Result<Issued, TokenError>, caller: &Caller) -> Response {
        match result {
            Ok(issued) => {
                inc(&self.metrics.allowed);
                inc(&self.credentials.metrics().tokens_issued);
                if issued.new_refresh {
                    inc(&self.credentials.metrics().refresh_tokens_issued);
                }
                Event {
                    door: Some("token"),
                    action: "token",
                    result: "ok",
                    user: Some(&issued.user),
                    scopes: Some(&issued.granted),
                    grant: Some(issued.grant),
                    caller: Some(caller),
                    ..Event::default()
                }
                .emit();
                issued.into_response()
            }
            Err(error) => {
                let reason = match &error {
                    TokenError::Unauthorized { reason, .. } => Some(*reason),
                    TokenError::ExpiresTooSoon => Some("expires_within_the_leeway"),
                    TokenError::BadRequest(_) => Some("bad_request"),
                    TokenError::TooLarge => Some("form_too_large"),
                    TokenError::TimedOut => Some("form_timed_out"),
                    TokenError::Unavailable(_) | TokenError::Internal(_) => None,
                };
                let user = match &error {
                    TokenError::Unauthorized { user, .. } => user.as_deref(),
                    _ => None,
                };
                if let Some(reason) = reason {
                    inc(&self.metrics.refused);
                    Event {
                        door: Some("token"),
                        action: "token",
                        result: "refused",
                        reason: Some(reason),
                        user,
                        caller: Some(caller),
                        ..Event::default()
                    }
                    .emit();
                }
                self.answer(error)
            }
        }
    }
}

/// 16 random bytes in base64url, for `jti`.
fn random_id() -> Result<String, TokenError> {
    use base64::Engine;
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| TokenError::Internal("no random source".into()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// A signed token, as answered.
struct Issued {
    user: String,
    /// The scopes granted, as a scope list.
    granted: String,
    token: String,
    expires_in: i64,
    issued_at: String,
    refresh_token: Option<String>,
    /// Whether a refresh token was issued by this request.
    new_refresh: bool,
    /// How the request proved itself: `password` or `refresh_token`.
    grant: &'static str,
    /// Answer as the OAuth2 endpoint (with `scope`).
    oauth: bool,
}

impl IntoResponse for Issued {
    fn into_response(self) -> Response {
        let mut body = json!({
            "token": self.token,
            "access_token": self.token,
            "expires_in": self.expires_in,
            "issued_at": self.issued_at,
        });
        if let Value::Object(map) = &mut body {
            if self.oauth {
                map.insert("scope".into(), Value::String(self.granted));
            }
            if let Some(refresh) = self.refresh_token {
                map.insert("refresh_token".into(), Value::String(refresh));
            }
        }
        let mut response = body.to_string().into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        response
    }
}
