//! nginx's `auth_request` door: `GET /auth` (HEAD too) with the client's
//! Basic `Authorization` header, answered with a bare 200 naming the user
//! for a live credential, or 401 with a Basic challenge otherwise; never a
//! body nginx would have to read. nginx asks on every request it guards, so
//! the answer comes from the same store and verifier as every other door: a
//! removed credential is refused on the very next request, an expired one
//! from the second it expires, and only the password hashing is cached.
//!
//! nginx passes `X-Original-URI` and `X-Original-Method`; they go into the
//! log line of a refusal (the URI without its query string).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::basic::basic_credentials;
use super::{Door, Refused};
use crate::audit::Caller;
use crate::config::{AuthRequestSettings, Section};
use crate::credentials::{Credentials, Verdict};
use crate::metrics::{inc, DoorMetrics};
use crate::telemetry::RateLimitedLines;

/// The path nginx's `auth_request` subrequest is sent to.
pub const PATH: &str = "/auth";
/// The header of a 200 that names the user, for nginx to log or forward.
pub const USER_HEADER: &str = "x-rubber-user";
/// Longest X-Original-URI path written to the log.
const MAX_LOGGED_URI: usize = 200;
/// The door's error lines (a database outage fails every check).
static ERROR_LINES: RateLimitedLines = RateLimitedLines::new();

#[derive(Clone)]
struct Checker {
    credentials: Arc<Credentials>,
    challenge: HeaderValue,
    metrics: Arc<DoorMetrics>,
}

/// The door, when `settings` gives it an address.
pub fn door(credentials: Arc<Credentials>, settings: &AuthRequestSettings) -> Door {
    let metrics = credentials.metrics().door("auth_request", &[PATH], true);
    // The realm was checked to be printable ASCII without quotes.
    let challenge = HeaderValue::from_str(&format!("Basic realm=\"{}\"", settings.realm))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"registry\""));
    let checker = Checker {
        credentials,
        challenge,
        metrics: Arc::clone(&metrics),
    };
    let routes = Router::new()
        .route(PATH, get(check).fallback(method_not_allowed))
        .fallback(not_found)
        .with_state(checker);
    Door::new(
        "auth_request",
        Section::AuthRequest,
        &settings.listener,
        routes,
        refuse,
        metrics,
    )
}

/// A caller the door's allowlist does not admit: 403, which nginx passes on
/// to its client as 403.
fn refuse(_refused: Refused, _req: &Request) -> Response {
    bare(StatusCode::FORBIDDEN)
}

async fn not_found() -> Response {
    bare(StatusCode::NOT_FOUND)
}

async fn method_not_allowed() -> Response {
    let mut response = bare(StatusCode::METHOD_NOT_ALLOWED);
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

/// A status with an empty body that nothing caches.
fn bare(status: StatusCode) -> Response {
    let mut response = status.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn check(State(checker): State<Checker>, req: Request) -> Response {
    let headers = req.headers();
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_default();
    let (user, password) = match basic_credentials(headers) {
        Ok(credentials) => credentials,
        Err(why) => {
            inc(&checker.metrics.refused);
            log_refusal(None, why, &caller, headers);
            return checker.unauthorized();
        }
    };
    match checker.credentials.verify(&user, password.expose()).await {
        Ok(Verdict::Allowed(_)) => {
            inc(&checker.metrics.allowed);
            let mut response = bare(StatusCode::OK);
            // A user name is ASCII letters, digits and . _ - @ only.
            if let Ok(value) = HeaderValue::from_str(user.as_str()) {
                response.headers_mut().insert(USER_HEADER, value);
            }
            response
        }
        Ok(Verdict::Refused(refusal)) => {
            inc(&checker.metrics.refused);
            // A name no credential has may be a password typed in the
            // wrong field: only a pseudonym of it goes to the log.
            let shown = checker.credentials.shown_name(&user, refusal);
            log_refusal(Some(&shown), refusal.name(), &caller, headers);
            checker.unauthorized()
        }
        Err(e) => {
            // nginx answers its client 500 for this: closed, not open. One
            // line a second at most: an outage must not flood the log.
            if let Some(suppressed) = ERROR_LINES.admit() {
                tracing::error!(door = "auth_request", error = %e, suppressed, "check failed");
            }
            bare(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

impl Checker {
    fn unauthorized(&self) -> Response {
        let mut response = bare(StatusCode::UNAUTHORIZED);
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, self.challenge.clone());
        response
    }
}

/// One line per refusal: the user name when there was a usable one (never
/// the password or the header), why, the caller, and what nginx said the
/// client asked for.
fn log_refusal(user: Option<&str>, reason: &str, caller: &Caller, headers: &HeaderMap) {
    let original = |name: &str| {
        headers.get(name).map(|v| {
            let bytes = v.as_bytes();
            let path = bytes.split(|b| *b == b'?').next().unwrap_or_default();
            loggable(&String::from_utf8_lossy(path))
        })
    };
    tracing::info!(
        target: "registry_rubber::audit",
        door = "auth_request",
        action = "check",
        result = "refused",
        reason,
        user,
        caller = %caller,
        uri = original("x-original-uri").as_deref(),
        method = original("x-original-method").as_deref(),
        "audit"
    );
}

/// `text` cut to MAX_LOGGED_URI characters, anything but visible ASCII
/// replaced by `?`.
fn loggable(text: &str) -> String {
    text.chars()
        .take(MAX_LOGGED_URI)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_uris_are_short_and_visible() {
        assert_eq!(loggable("/v2/a b\u{7f}é"), "/v2/a?b??");
        assert_eq!(loggable(&"x".repeat(500)).len(), MAX_LOGGED_URI);
    }
}
