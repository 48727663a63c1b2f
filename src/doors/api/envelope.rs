//! The answer every request gets, success or failure:
//! `{"action", "msg", "response": "OKAY"|"ERROR", "status_code", ...extra}`,
//! with the HTTP status equal to `status_code`. The first four keys are the
//! original tool's contract; extra keys add detail.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use crate::domain::PasswordError;
use crate::store::StoreError;

/// The action an answer reports. `delete` reports as `remove`, as the
/// original did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Add,
    Remove,
    Renew,
    Cleanup,
    List,
    Healthz,
    Metrics,
    OpenApi,
    Unknown,
}

impl Action {
    /// The action a request path names.
    pub fn of_path(path: &str) -> Self {
        super::ROUTES
            .iter()
            .find(|(p, _)| *p == path)
            .map_or(Action::Unknown, |(_, action)| *action)
    }

    /// Whether the action is about the service rather than its users:
    /// answered to every caller the door admits, named or not.
    pub fn is_open(self) -> bool {
        matches!(self, Action::Healthz | Action::Metrics | Action::OpenApi)
    }

    /// Whether the action changes the users table.
    pub fn mutates(self) -> bool {
        matches!(
            self,
            Action::Add | Action::Remove | Action::Renew | Action::Cleanup
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Remove => "remove",
            Action::Renew => "renew",
            Action::Cleanup => "cleanup",
            Action::List => "list",
            Action::Healthz => "healthz",
            Action::Metrics => "metrics",
            Action::OpenApi => "openapi",
            Action::Unknown => "unknown",
        }
    }

    /// Turns a handler's result into the response, errors included.
    pub fn answer(self, result: Result<Envelope, ApiError>) -> Response {
        match result {
            Ok(envelope) => envelope.into_response(),
            Err(error) => error.into_envelope(self).into_response(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Envelope {
    action: Action,
    status: StatusCode,
    msg: String,
    extra: Vec<(&'static str, Value)>,
    allow: Option<&'static str>,
}

impl Envelope {
    pub fn ok(action: Action, msg: impl Into<String>) -> Self {
        Self::new(action, StatusCode::OK, msg)
    }

    pub fn new(action: Action, status: StatusCode, msg: impl Into<String>) -> Self {
        Self {
            action,
            status,
            msg: msg.into(),
            extra: Vec::new(),
            allow: None,
        }
    }

    /// Adds an extra key after the four contract keys.
    pub fn with(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        self.extra.push((key, value.into()));
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl Serialize for Envelope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(4 + self.extra.len()))?;
        map.serialize_entry("action", self.action.name())?;
        map.serialize_entry("msg", &self.msg)?;
        let response = if self.status.is_success() {
            "OKAY"
        } else {
            "ERROR"
        };
        map.serialize_entry("response", response)?;
        map.serialize_entry("status_code", &self.status.as_u16())?;
        for (k, v) in &self.extra {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl IntoResponse for Envelope {
    fn into_response(self) -> Response {
        // Serializing a map of strings and JSON values cannot fail.
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

/// The original's message for a missing or invalid user (and action).
pub const MSG_INVALID_USER: &str = "Invalid action or user defined in request";
/// The original's message for add without a password.
pub const MSG_PASSWORD_REQUIRED: &str = "add action requires password";

/// Everything a request can fail with. The message a client sees never holds
/// a password, a hash, or a database's own error text.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{MSG_INVALID_USER}")]
    InvalidUser { detail: String },
    #[error("{MSG_PASSWORD_REQUIRED}")]
    PasswordRequired,
    #[error("{0}")]
    BadPassword(PasswordError),
    #[error("parameter {name}: {detail}")]
    BadParameter { name: &'static str, detail: String },
    #[error("{0}")]
    Malformed(String),
    #[error("POST takes its parameters in the body (a form or JSON), never in the URL, where proxies log them")]
    QueryOnPost,
    #[error(
        "unsupported content type; send application/json or application/x-www-form-urlencoded"
    )]
    UnsupportedMediaType,
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body did not arrive in time")]
    BodyTimedOut,
    #[error("method not allowed; use {hint}")]
    MethodNotAllowed {
        allow: &'static str,
        hint: &'static str,
    },
    #[error("{MSG_INVALID_USER}: no such action; use {}", user_actions())]
    NotFound,
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The caller may not do this: 403, or 409 for a name that exists and
    /// may not be replaced.
    #[error("forbidden: {0}")]
    NotPermitted(crate::domain::Forbidden),
    /// The callers file is configured and the request named no caller in
    /// it: 401.
    #[error("unauthorized: present a bearer token from the callers file, or a client certificate it names")]
    Unnamed,
    #[error("misdirected: the Host of the request is not one of this API's names; add it to allowed_hosts")]
    Misdirected,
    #[error("user {user} is not live: it does not exist or has expired")]
    NotLive { user: crate::domain::Username },
    #[error("database unavailable; try again shortly")]
    Unavailable(#[source] StoreError),
    #[error("too many password hashings are waiting; try again shortly")]
    Busy,
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidUser { .. }
            | ApiError::PasswordRequired
            | ApiError::BadPassword(_)
            | ApiError::BadParameter { .. }
            | ApiError::Malformed(_)
            | ApiError::QueryOnPost => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotPermitted(crate::domain::Forbidden::Exists(_)) => StatusCode::CONFLICT,
            ApiError::NotPermitted(_) => StatusCode::FORBIDDEN,
            ApiError::Unnamed => StatusCode::UNAUTHORIZED,
            ApiError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimedOut => StatusCode::REQUEST_TIMEOUT,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotFound | ApiError::NotLive { .. } => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) | ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn into_envelope(self, action: Action) -> Envelope {
        match &self {
            ApiError::Unavailable(cause) => {
                tracing::error!(action = action.name(), error = %cause, "database failure");
            }
            ApiError::Internal(cause) => {
                tracing::error!(action = action.name(), error = %cause, "internal error");
            }
            _ => {}
        }
        let mut envelope = Envelope::new(action, self.status(), self.to_string());
        match self {
            ApiError::InvalidUser { detail } => envelope = envelope.with("detail", detail),
            ApiError::MethodNotAllowed { allow, .. } => envelope.allow = Some(allow),
            _ => {}
        }
        envelope
    }
}

/// The paths of the actions on users, as `/add, ... or /list`.
fn user_actions() -> String {
    let paths: Vec<&str> = super::ROUTES
        .iter()
        .filter(|(_, a)| !a.is_open())
        .map(|(p, _)| *p)
        .collect();
    match paths.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Unavailable(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_keys_come_first_and_extras_follow() {
        let e = Envelope::ok(Action::Add, "Added user 1").with("user", "1");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"action":"add","msg":"Added user 1","response":"OKAY","status_code":200,"user":"1"}"#
        );
    }

    #[test]
    fn errors_carry_their_status_and_the_originals_messages() {
        let e = ApiError::PasswordRequired.into_envelope(Action::Add);
        let v: Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["status_code"], 400);
        assert_eq!(v["response"], "ERROR");
        assert_eq!(v["msg"], MSG_PASSWORD_REQUIRED);
    }

    #[test]
    fn an_unknown_path_names_the_actions() {
        assert_eq!(
            ApiError::NotFound.to_string(),
            "Invalid action or user defined in request: no such action; use /add, /remove, /delete, /renew, /cleanup or /list"
        );
        assert_eq!(Action::of_path("/delete"), Action::Remove);
        assert_eq!(Action::of_path("/nope"), Action::Unknown);
    }

    #[test]
    fn database_failures_answer_generically() {
        let e = ApiError::Unavailable(StoreError::Database(
            "disk I/O error at /secret/path".into(),
        ))
        .into_envelope(Action::Remove);
        let v: Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["status_code"], 503);
        assert!(!v["msg"].as_str().unwrap().contains("secret"));
    }
}
