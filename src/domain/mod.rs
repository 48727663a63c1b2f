//! Parsed request values. A handler holds a [`Username`] or a [`Password`],
//! never a raw string that might be checked later.

mod password;
mod username;

pub use password::{Password, PasswordError, MAX_PASSWORD_BYTES};
pub use username::{Username, UsernameError, MAX_USERNAME_LEN};
