//! `$2y$`: bcrypt, as written by `htpasswd -B`.
//!
//! The stored string is `$2y$<cost>$<salt><checksum>`: a two-digit cost
//! (log2 of the number of key-expansion rounds), 22 characters encoding a
//! 16-byte salt and 31 characters encoding the 23-byte checksum, both in
//! bcrypt's own base64 alphabet (`./A-Za-z0-9`), 60 characters in all.
//!
//! APR's `apr_password_validate()` hands `$2y$` and `$2a$` strings to its
//! bundled `crypt_blowfish`; other prefixes, `$2b$` included, go to the
//! system `crypt()`. Hashes are therefore always written with `$2y$`, which
//! every bcrypt implementation treats like `$2b$` (the corrected algorithm);
//! [`verify`] accepts `$2a$`, `$2b$` and `$2y$`.
//!
//! bcrypt uses at most 72 bytes of the password and ignores the rest, so
//! [`hash`] refuses longer passwords instead of truncating them silently.

use ::bcrypt::{BcryptError, Version};

use super::{reject_nul, HashError, CRYPT_ALPHABET, MAX_BCRYPT_COST, MIN_BCRYPT_COST};

/// Prefix written by [`hash`].
pub const PREFIX: &str = "$2y$";

/// Prefixes accepted by [`verify`].
pub const ACCEPTED_PREFIXES: [&str; 3] = ["$2y$", "$2b$", "$2a$"];

/// Longest password bcrypt uses in full, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 72;

/// Length of a complete bcrypt hash string.
const HASH_LEN: usize = 60;

/// Hashes `password` with bcrypt at the given `cost`, with a fresh 16-byte
/// salt from the OS CSPRNG, in `$2y$` form.
///
/// Fails for passwords over [`MAX_PASSWORD_BYTES`] or containing NUL, for a
/// cost outside [`MIN_BCRYPT_COST`]`..=`[`MAX_BCRYPT_COST`], and if the
/// random number generator is unavailable.
pub fn hash(password: &str, cost: u32) -> Result<String, HashError> {
    super::hash(super::HashType::Bcrypt, password, cost)
}

/// As [`hash`], with the salt given.
pub(crate) fn hash_with_salt(
    password: &str,
    cost: u32,
    salt: [u8; 16],
) -> Result<String, HashError> {
    reject_nul(password)?;
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(HashError::PasswordTooLong {
            max: MAX_PASSWORD_BYTES,
        });
    }
    if !(MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
        return Err(HashError::InvalidBcryptCost { cost });
    }
    // The bcrypt crate appends the terminating NUL that bcrypt keys include
    // and cuts the key at 72 bytes, which only drops that NUL for a password
    // of exactly 72 bytes: the same key crypt_blowfish derives.
    ::bcrypt::hash_with_salt(password, cost, salt)
        .map(|parts| parts.format_for_version(Version::TwoY))
        .map_err(|err| match err {
            BcryptError::CostNotAllowed(cost) => HashError::InvalidBcryptCost { cost },
            // Other errors cannot arise from a valid cost and salt; their
            // messages are not forwarded, as some of them quote their input.
            _ => HashError::Internal("bcrypt hashing failed".to_owned()),
        })
}

/// Checks `password` against a `$2a$`, `$2b$` or `$2y$` hash.
///
/// The checksum comparison is constant-time. Returns `false` for malformed
/// hashes, costs outside `4..=31`, passwords containing NUL and passwords
/// over [`MAX_PASSWORD_BYTES`]: [`hash`] never produces a hash for those,
/// and accepting them would mean accepting any password sharing the first
/// 72 bytes.
pub fn verify(password: &str, stored: &str) -> bool {
    if password.contains('\0') || password.len() > MAX_PASSWORD_BYTES || !is_well_formed(stored) {
        return false;
    }
    ::bcrypt::verify(password, stored).unwrap_or(false)
}

/// Whether `stored` is `$2[aby]$NN$` followed by 53 bcrypt base64 characters
/// (so one line, with no `:` or space).
pub fn is_well_formed(stored: &str) -> bool {
    let bytes = stored.as_bytes();
    bytes.len() == HASH_LEN
        && ACCEPTED_PREFIXES
            .iter()
            .any(|prefix| stored.starts_with(prefix))
        && bytes[4].is_ascii_digit()
        && bytes[5].is_ascii_digit()
        && bytes[6] == b'$'
        // bcrypt's base64 alphabet has the same symbols as crypt(3)'s, in a
        // different order.
        && bytes[7..].iter().all(|byte| CRYPT_ALPHABET.contains(byte))
}

#[cfg(test)]
mod tests {
    use super::*;

    use base64::alphabet::BCRYPT;
    use base64::engine::general_purpose::{GeneralPurpose, NO_PAD};
    use base64::Engine as _;

    /// Known hashes: the first three are from the crypt_blowfish test suite,
    /// the last was written by `htpasswd -nbB -C 5 u password`.
    const VECTORS: [(&str, &str); 4] = [
        (
            "U*U",
            "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
        ),
        (
            "U*U*",
            "$2a$05$CCCCCCCCCCCCCCCCCCCCC.VGOzA784oUp/Z0DY336zx7pLYAy0lwK",
        ),
        (
            "U*U*U",
            "$2a$05$XXXXXXXXXXXXXXXXXXXXXOAcXxm9kjPGEMsLznoKqmqw7tc8WCx4a",
        ),
        (
            "password",
            "$2y$05$sPzYIj.9DmxnnCXAoYq9WegbSCqdc67uxuVOz4Kj8uthdC9aWf69a",
        ),
    ];

    fn salt_of(stored: &str) -> [u8; 16] {
        let engine = GeneralPurpose::new(&BCRYPT, NO_PAD.with_decode_allow_trailing_bits(true));
        engine.decode(&stored[7..29]).unwrap().try_into().unwrap()
    }

    #[test]
    fn known_vectors_both_ways() {
        for (password, stored) in VECTORS {
            assert!(verify(password, stored), "{stored}");
            assert!(!verify("U*U*U*", stored), "{stored}");
            let cost = stored[4..6].parse().unwrap();
            let ours = hash_with_salt(password, cost, salt_of(stored)).unwrap();
            assert_eq!(&ours[4..], &stored[4..]);
            assert!(ours.starts_with(PREFIX));
        }
    }

    #[test]
    fn accepts_2a_2b_2y_but_not_2x() {
        let (password, stored) = VECTORS[0];
        let body = &stored[4..];
        for prefix in ACCEPTED_PREFIXES {
            assert!(verify(password, &format!("{prefix}{body}")), "{prefix}");
        }
        assert!(!verify(password, &format!("$2x${body}")));
        assert!(!verify(password, &format!("$2${body}")));
    }

    #[test]
    fn writes_2y_with_the_requested_cost() {
        let stored = hash("password", 5).unwrap();
        assert!(stored.starts_with("$2y$05$"), "{stored}");
        assert_eq!(stored.len(), HASH_LEN);
        assert!(verify("password", &stored));
        assert!(hash("password", 4).unwrap().starts_with("$2y$04$"));
    }

    #[test]
    fn rejects_costs_outside_the_range() {
        for cost in [0, MIN_BCRYPT_COST - 1, MAX_BCRYPT_COST + 1] {
            assert!(matches!(
                hash("password", cost),
                Err(HashError::InvalidBcryptCost { cost: c }) if c == cost
            ));
        }
        let (password, stored) = VECTORS[0];
        assert!(!verify(password, &stored.replacen("$05$", "$03$", 1)));
        assert!(!verify(password, &stored.replacen("$05$", "$32$", 1)));
    }

    #[test]
    fn refuses_passwords_longer_than_72_bytes() {
        let at_limit = "p".repeat(72);
        let stored = hash(&at_limit, 4).unwrap();
        assert!(verify(&at_limit, &stored));
        assert!(!verify(&"p".repeat(71), &stored));

        let over = "p".repeat(73);
        assert!(matches!(
            hash(&over, 4),
            Err(HashError::PasswordTooLong { max: 72 })
        ));
        // bcrypt itself would accept the longer password for this hash;
        // verify does not.
        assert!(::bcrypt::verify(&over, &stored).unwrap());
        assert!(!verify(&over, &stored));
    }

    #[test]
    fn refuses_nul() {
        assert!(matches!(hash("pass\0", 4), Err(HashError::ContainsNul)));
        assert!(!verify("U*U\0", VECTORS[0].1));
    }

    #[test]
    fn rejects_malformed_hashes() {
        let (password, stored) = VECTORS[0];
        for bad in [
            &stored[..59],
            &format!("{stored}x"),
            &stored.replacen("$05$", "$5$$", 1),
            &stored.replacen("$05$", "$a5$", 1),
            &stored.replacen('E', "!", 1),
            &stored.replacen("$2a$", "$2a!", 1),
        ] {
            assert!(!verify(password, bad), "{bad}");
        }
    }
}
