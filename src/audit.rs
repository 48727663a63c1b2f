//! Audit events: one structured line per add, remove, renew, cleanup and sweep
//! under the target `registry_rubber::audit` (JSON with `log_format = "json"`).
//! They carry the action, the user, the result, the expiry and the caller;
//! never a password or a hash.

use std::fmt;
use std::net::SocketAddr;

use axum::extract::Request;

use crate::api::ClientAddr;

/// Who made a request: the client's address for now.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub addr: Option<SocketAddr>,
}

impl Caller {
    pub fn of(req: &Request) -> Self {
        Self {
            addr: req.extensions().get::<ClientAddr>().map(|c| c.0),
        }
    }

    /// The service itself (the sweeper).
    pub fn service() -> Self {
        Self { addr: None }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("registry-rubber"),
        }
    }
}

/// One audit event. Unset fields are left out of the line.
#[derive(Debug, Default)]
pub struct Event<'a> {
    pub action: &'static str,
    pub result: &'static str,
    pub user: Option<&'a str>,
    pub expires_at: Option<i64>,
    pub removed: Option<u64>,
    pub replaced: Option<bool>,
    pub generated_password: Option<bool>,
    pub caller: Option<&'a Caller>,
}

impl Event<'_> {
    pub fn emit(&self) {
        tracing::info!(
            target: "registry_rubber::audit",
            action = self.action,
            result = self.result,
            user = self.user,
            expires_at = self.expires_at,
            removed = self.removed,
            replaced = self.replaced,
            generated_password = self.generated_password,
            caller = %self.caller.map_or_else(|| Caller::service().to_string(), ToString::to_string),
            "audit"
        );
    }
}
