//! Audit events: one structured line per add, remove, renew, cleanup and sweep
//! under the target `registry_rubber::audit` (JSON with `log_format = "json"`).
//! They carry the action, the user, the result, the expiry and the caller;
//! never a password or a hash.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::Request;

use crate::domain::Rights;

/// Who made a request: the client's address (a forwarded one when it came
/// through a trusted proxy), the subject of its client certificate, its
/// name in the callers file, and what it may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub ip: Option<IpAddr>,
    pub subject: Option<String>,
    /// For work that came from no network client: `cli`, `sweeper`, or a
    /// caller on the API's Unix socket: `unix`.
    pub local: Option<&'static str>,
    /// The user of the process on the other end of a Unix socket.
    pub uid: Option<u32>,
    /// The caller's name, when the callers file named it.
    pub name: Option<Arc<str>>,
    /// What the caller may do; None until a door has decided, and a caller
    /// whose rights nobody decided may do nothing.
    pub rights: Option<Arc<Rights>>,
}

impl Caller {
    /// The caller the access guard recorded for this request.
    pub fn of(req: &Request) -> Self {
        req.extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or_default()
    }

    /// Work started on this host rather than by a network client: the
    /// host's operator, with every right.
    pub fn local(origin: &'static str) -> Self {
        Self {
            local: Some(origin),
            rights: Some(Arc::new(Rights::all())),
            ..Self::default()
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ip, self.local, self.uid) {
            (Some(ip), _, _) => write!(f, "{ip}"),
            (None, Some(origin), Some(uid)) => write!(f, "{origin}:uid={uid}"),
            (None, Some(origin), None) => f.write_str(origin),
            (None, None, _) => f.write_str("unknown"),
        }
    }
}

/// One audit event. Unset fields are left out of the line.
#[derive(Debug, Default)]
pub struct Event<'a> {
    /// The door a check or a token request came through.
    pub door: Option<&'static str>,
    pub action: &'static str,
    pub result: &'static str,
    /// Why a check or a token request was refused.
    pub reason: Option<&'a str>,
    pub user: Option<&'a str>,
    pub expires_at: Option<i64>,
    pub removed: Option<u64>,
    pub replaced: Option<bool>,
    pub generated_password: Option<bool>,
    /// Scope patterns stored with an added credential, or granted in a token.
    pub scopes: Option<&'a str>,
    /// How a token request proved itself: `password` or `refresh_token`.
    pub grant: Option<&'static str>,
    pub caller: Option<&'a Caller>,
}

impl Event<'_> {
    pub fn emit(&self) {
        tracing::info!(
            target: "registry_rubber::audit",
            door = self.door,
            action = self.action,
            result = self.result,
            reason = self.reason,
            user = self.user,
            expires_at = self.expires_at,
            removed = self.removed,
            replaced = self.replaced,
            generated_password = self.generated_password,
            scopes = self.scopes,
            grant = self.grant,
            caller = %self.caller.map_or_else(|| "unknown".to_owned(), ToString::to_string),
            subject = self.caller.and_then(|c| c.subject.as_deref()),
            caller_name = self.caller.and_then(|c| c.name.as_deref()),
            "audit"
        );
    }
}
