//! Parsed request values. A handler holds a [`Username`] or a [`Password`],
//! never a raw string that might be checked later.

mod password;
pub mod scope;
mod ttl;
mod username;

pub use password::{Password, PasswordError, GENERATED_PASSWORD_LEN, MAX_PASSWORD_BYTES};
pub use scope::{AclRule, RequestedScope, ScopeError, ScopePattern};
pub use ttl::{rfc3339, Granted, TtlError, TtlPolicy};
pub use username::{Username, UsernameError, MAX_USERNAME_LEN};
