use std::fmt;

use crate::htpasswd::HashType;

/// Longest accepted password, in bytes of UTF-8, for every hash format but
/// bcrypt, which honours only its first 72 bytes and so accepts no more.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Length of a generated password: 24 characters from 62 carry 142 bits.
pub const GENERATED_PASSWORD_LEN: usize = 24;

/// A password on its way to being hashed. It is never printed: `Debug` shows
/// only its length, and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("password is empty")]
    Empty,
    #[error("password is longer than {max} bytes, {}", limit_reason(*hash_type, *max))]
    TooLong { max: usize, hash_type: HashType },
    #[error("password must not contain a NUL character")]
    ContainsNul,
}

fn limit_reason(hash_type: HashType, max: usize) -> String {
    match hash_type.max_password_bytes() {
        Some(m) if m == max => format!("the most that hash type {hash_type} honours"),
        _ => "the most this service accepts".to_owned(),
    }
}

impl Password {
    /// Accepts any non-empty UTF-8 text without NUL (Apache's crypt() would
    /// stop reading at one) that the chosen hash format honours in full.
    pub fn parse(raw: String, hash_type: HashType) -> Result<Self, PasswordError> {
        if raw.is_empty() {
            return Err(PasswordError::Empty);
        }
        let max = hash_type
            .max_password_bytes()
            .map_or(MAX_PASSWORD_BYTES, |m| m.min(MAX_PASSWORD_BYTES));
        if raw.len() > max {
            return Err(PasswordError::TooLong { max, hash_type });
        }
        if raw.contains('\0') {
            return Err(PasswordError::ContainsNul);
        }
        Ok(Self(raw))
    }

    /// A new random password: letters and digits only, so it passes through
    /// `docker login`, basic authentication and shells unquoted; drawn from
    /// the operating system's random source.
    pub fn generate() -> Self {
        use rand::distributions::{Alphanumeric, DistString};
        Self(Alphanumeric.sample_string(&mut rand::rngs::OsRng, GENERATED_PASSWORD_LEN))
    }

    /// A password a caller presented to be checked: it is only compared,
    /// never stored, so it is not validated; held as a `Password` so that it
    /// is never printed.
    pub fn presented(raw: String) -> Self {
        Self(raw)
    }

    /// The clear text, for hashing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Password(<{} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_passwords_are_accepted() {
        let p = Password::parse("pässwörd-日本".into(), HashType::Sha1).unwrap();
        assert_eq!(p.expose(), "pässwörd-日本");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let p = Password::parse("hunter2-secret".into(), HashType::Sha1).unwrap();
        let shown = format!("{p:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(shown, "Password(<14 bytes>)");
    }

    #[test]
    fn limits_follow_the_hash_format() {
        let at = |n: usize, h| Password::parse("p".repeat(n), h);
        assert!(at(72, HashType::Bcrypt).is_ok());
        assert_eq!(
            at(73, HashType::Bcrypt),
            Err(PasswordError::TooLong {
                max: 72,
                hash_type: HashType::Bcrypt
            })
        );
        assert!(at(MAX_PASSWORD_BYTES, HashType::Sha512).is_ok());
        assert!(matches!(
            at(MAX_PASSWORD_BYTES + 1, HashType::Sha1),
            Err(PasswordError::TooLong {
                max: MAX_PASSWORD_BYTES,
                ..
            })
        ));
    }

    #[test]
    fn generated_passwords_are_long_random_and_plain() {
        let a = Password::generate();
        let b = Password::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), GENERATED_PASSWORD_LEN);
        assert!(a.expose().bytes().all(|c| c.is_ascii_alphanumeric()));
        // 62^24 > 2^142.
        assert!((GENERATED_PASSWORD_LEN as f64) * 62f64.log2() >= 128.0);
        assert!(Password::parse(a.expose().to_owned(), HashType::Bcrypt).is_ok());
    }

    #[test]
    fn empty_and_nul_are_refused() {
        assert_eq!(
            Password::parse(String::new(), HashType::Md5),
            Err(PasswordError::Empty)
        );
        assert_eq!(
            Password::parse("a\0b".into(), HashType::Md5),
            Err(PasswordError::ContainsNul)
        );
    }
}
