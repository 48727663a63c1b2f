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
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

use super::{Door, Refused};
use crate::audit::Caller;
use crate::config::{AuthRequestSettings, Section};
use crate::credentials::{Credentials, Refusal, Verdict};
use crate::domain::{Password, Username};
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
            let shown = match refusal {
                Refusal::UnknownUser => checker.credentials.pseudonym(user.as_str()),
                _ => user.as_str().to_owned(),
            };
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

/// Base64 as Basic credentials carry it; padding is accepted but not
/// required.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The user and password of the request's one Basic `Authorization` header,
/// or why there are none. Anything unexpected is a refusal: no header, two
/// headers, another scheme, bad base64, no colon, text that is not UTF-8, a
/// user name no credential can have.
fn basic_credentials(headers: &HeaderMap) -> Result<(Username, Password), &'static str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or("no_credentials")?;
    if values.next().is_some() {
        return Err("malformed_authorization");
    }
    let value = value.as_bytes();
    let (scheme, token) = match value.iter().position(|b| *b == b' ') {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => return Err("malformed_authorization"),
    };
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return Err("not_basic");
    }
    let token = token.trim_ascii();
    let decoded = BASE64
        .decode(token)
        .map_err(|_| "malformed_authorization")?;
    let text = String::from_utf8(decoded).map_err(|_| "malformed_authorization")?;
    let (user, password) = text.split_once(':').ok_or("malformed_authorization")?;
    let user = Username::parse(user).map_err(|_| "unusable_user_name")?;
    Ok((user, Password::presented(password.to_owned())))
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

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn basic(user_password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        )
    }

    #[test]
    fn basic_credentials_are_read_strictly() {
        let (u, p) = basic_credentials(&headers(&[&basic("ci-1:pa:ss")])).unwrap();
        assert_eq!((u.as_str(), p.expose()), ("ci-1", "pa:ss"));
        let (_, p) = basic_credentials(&headers(&["bAsIc   Y2ktMTpwYXNz"])).unwrap();
        assert_eq!(
            p.expose(),
            "pass",
            "scheme in any case, spaces before the token"
        );
        let (_, p) = basic_credentials(&headers(&["Basic Y2ktMTpwYXNzMQ"])).unwrap();
        assert_eq!(p.expose(), "pass1", "padding optional");
        for (value, why) in [
            (vec![], "no_credentials"),
            (vec!["Basic"], "malformed_authorization"),
            (vec!["Bearer abc"], "not_basic"),
            (vec!["Basic !!!"], "malformed_authorization"),
            (vec!["Basic Y2ktMQ=="], "malformed_authorization"), // no colon
            (vec!["Basic /w=="], "malformed_authorization"),     // not UTF-8
            (vec!["Basic OnBhc3M="], "unusable_user_name"),      // empty user
        ] {
            assert_eq!(
                basic_credentials(&headers(&value)).err(),
                Some(why),
                "{value:?}"
            );
        }
        let two = headers(&[&basic("a:b"), &basic("c:d")]);
        assert_eq!(
            basic_credentials(&two).err(),
            Some("malformed_authorization"),
            "two headers"
        );
    }

    #[test]
    fn logged_uris_are_short_and_visible() {
        assert_eq!(loggable("/v2/a b\u{7f}é"), "/v2/a?b??");
        assert_eq!(loggable(&"x".repeat(500)).len(), MAX_LOGGED_URI);
    }
}
