//! Parsed request values. A handler holds a [`Username`] or a [`Password`],
//! never a raw string that might be checked later.

mod password;
mod rights;
pub mod scope;
mod ttl;
mod username;

pub use password::{Password, PasswordError, GENERATED_PASSWORD_LEN, MAX_PASSWORD_BYTES};
pub use rights::{Forbidden, Right, Rights};
pub use scope::{AclRule, RequestedScope, ScopeError, ScopePattern};
pub use ttl::{rfc3339, Granted, TtlError, TtlPolicy};
pub use username::{NamePrefix, Username, UsernameError, MAX_NAME_PREFIX_LEN, MAX_USERNAME_LEN};
