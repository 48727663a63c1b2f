//! `{SHA}`: unsalted SHA-1, as written by `htpasswd -s`.
//!
//! The stored string is `{SHA}` followed by the standard (RFC 4648, padded)
//! base64 encoding of the 20-byte SHA-1 digest of the password's bytes, e.g.
//! `{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=` for `password`. APR's
//! `apr_password_validate()` recognises the `{SHA}` prefix, recomputes the
//! string and compares it with the stored one.
//!
//! There is no salt and only a single hash iteration, so equal passwords give
//! equal hashes and guessing is cheap. The format exists for compatibility;
//! prefer bcrypt or SHA-512-crypt.

use ::sha1::{Digest, Sha1};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use subtle::ConstantTimeEq;

use super::{reject_nul, HashError};

/// Prefix identifying this format.
pub const PREFIX: &str = "{SHA}";

/// Hashes `password` as `{SHA}<base64(SHA-1(password))>`.
///
/// Fails only for passwords containing a NUL byte.
pub fn hash(password: &str) -> Result<String, HashError> {
    reject_nul(password)?;
    Ok(encode(password.as_bytes()))
}

/// Checks `password` against a `{SHA}` hash, comparing in constant time.
///
/// Returns `false` for anything that is not a `{SHA}` hash and for passwords
/// containing a NUL byte.
pub fn verify(password: &str, stored: &str) -> bool {
    if !stored.starts_with(PREFIX) || password.contains('\0') {
        return false;
    }
    encode(password.as_bytes())
        .as_bytes()
        .ct_eq(stored.as_bytes())
        .into()
}

fn encode(password: &[u8]) -> String {
    format!("{PREFIX}{}", STANDARD.encode(Sha1::digest(password)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors computed with `printf %s PASSWORD | openssl sha1 -binary | base64`.
    const VECTORS: [(&str, &str); 3] = [
        ("password", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="),
        ("", "{SHA}2jmj7l5rSw0yVb/vlWAYkK/YBwk="),
        ("pässwörd-日本", "{SHA}K2i4kw0eoJx1FFRzMGy0tL9YMTE="),
    ];

    #[test]
    fn known_vectors() {
        for (password, expected) in VECTORS {
            assert_eq!(hash(password).unwrap(), expected);
            assert!(verify(password, expected));
            assert!(!verify("Password", expected));
        }
    }

    #[test]
    fn rejects_other_formats_and_corruption() {
        assert!(!verify("password", "W6ph5Mm5Pz8GgiULbPgzG37mj9g="));
        assert!(!verify("password", "{sha}W6ph5Mm5Pz8GgiULbPgzG37mj9g="));
        assert!(!verify("password", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g"));
        assert!(!verify("password", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n"));
        assert!(!verify("password", "{SHA}X6ph5Mm5Pz8GgiULbPgzG37mj9g="));
    }

    #[test]
    fn refuses_nul() {
        assert!(matches!(hash("pass\0word"), Err(HashError::ContainsNul)));
        assert!(!verify("password\0", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="));
    }
}
