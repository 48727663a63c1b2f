//! `$apr1$`: Apache's salted, iterated MD5, as written by `htpasswd -m`.
//!
//! The stored string is `$apr1$<salt>$<checksum>`: up to 8 salt characters
//! from `./0-9A-Za-z` and a 22-character checksum. The algorithm is
//! Poul-Henning Kamp's FreeBSD MD5-crypt with the magic string `$1$` replaced
//! by `$apr1$`:
//!
//! 1. `A = MD5(password + salt + password)`.
//! 2. Start a context with `password + "$apr1$" + salt`, then add `A`
//!    repeated to cover the password length (`len` bytes of `A, A, ...`).
//! 3. For each bit of the password length, lowest first, add a zero byte if
//!    the bit is set and the password's first byte otherwise. The digest of
//!    this context is the initial value `F`.
//! 4. 1000 times, for round `i`: hash (`password` if `i` is odd else `F`),
//!    then `salt` unless `i % 3 == 0`, then `password` unless `i % 7 == 0`,
//!    then (`F` if `i` is odd else `password`); the digest becomes `F`.
//! 5. Encode `F` with the `crypt(3)` base64 alphabet, least significant six
//!    bits first, in the byte groups (0,6,12) (1,7,13) (2,8,14) (3,9,15)
//!    (4,10,5) of four characters each and finally byte 11 as two characters.
//!
//! APR's `apr_password_validate()` recognises the prefix, recomputes the
//! whole string with the stored salt and compares it with the stored one.
//! MD5 is fast and the salt short, so this format is weak by current
//! standards; prefer bcrypt or SHA-512-crypt.

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use super::{reject_nul, HashError, CRYPT_ALPHABET};

/// Prefix identifying this format.
pub const PREFIX: &str = "$apr1$";

/// Number of salt characters generated, also the most that are used.
pub(crate) const SALT_LEN: usize = 8;

/// Number of strengthening rounds, fixed by the format.
const ROUNDS: usize = 1000;

/// Byte triples of the final digest, in output order.
const ENCODING_GROUPS: [[usize; 3]; 5] =
    [[0, 6, 12], [1, 7, 13], [2, 8, 14], [3, 9, 15], [4, 10, 5]];

/// Hashes `password` with a fresh 8-character salt from the OS CSPRNG.
///
/// Fails only for passwords containing a NUL byte or if the random number
/// generator is unavailable.
pub fn hash(password: &str) -> Result<String, HashError> {
    super::hash(super::HashType::Md5, password, 0)
}

/// As [`hash`], with the salt given (characters of the `crypt(3)` alphabet,
/// at most [`SALT_LEN`]).
pub(crate) fn hash_with_salt(password: &str, salt: &str) -> Result<String, HashError> {
    reject_nul(password)?;
    let checksum = checksum(password.as_bytes(), salt.as_bytes());
    Ok(format!("{PREFIX}{salt}${checksum}"))
}

/// Checks `password` against a `$apr1$` hash, comparing in constant time.
///
/// As in APR, the salt is whatever follows the prefix up to the next `$`
/// (at most 8 bytes), and the recomputed string must equal the stored one.
/// Returns `false` for anything else and for passwords containing NUL.
pub fn verify(password: &str, stored: &str) -> bool {
    if password.contains('\0') {
        return false;
    }
    let Some(rest) = stored.as_bytes().strip_prefix(PREFIX.as_bytes()) else {
        return false;
    };
    let salt_len = rest
        .iter()
        .take(SALT_LEN)
        .take_while(|&&byte| byte != b'$')
        .count();
    let salt = &rest[..salt_len];

    let checksum = checksum(password.as_bytes(), salt);
    let mut expected = Vec::with_capacity(PREFIX.len() + salt.len() + 1 + checksum.len());
    expected.extend_from_slice(PREFIX.as_bytes());
    expected.extend_from_slice(salt);
    expected.push(b'$');
    expected.extend_from_slice(checksum.as_bytes());
    expected.ct_eq(stored.as_bytes()).into()
}

/// Computes the 22-character checksum for `password` and `salt`.
fn checksum(password: &[u8], salt: &[u8]) -> String {
    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();

    let mut context = Md5::new()
        .chain_update(password)
        .chain_update(PREFIX)
        .chain_update(salt);
    let mut remaining = password.len();
    while remaining > 0 {
        let take = remaining.min(alternate.len());
        context.update(&alternate[..take]);
        remaining -= take;
    }
    let mut bits = password.len();
    while bits != 0 {
        if bits & 1 == 1 {
            context.update([0u8]);
        } else {
            // `bits` is non-zero, so the password is not empty.
            context.update(&password[..1]);
        }
        bits >>= 1;
    }
    let mut digest = context.finalize();

    for round in 0..ROUNDS {
        let mut context = Md5::new();
        if round % 2 == 1 {
            context.update(password);
        } else {
            context.update(digest);
        }
        if round % 3 != 0 {
            context.update(salt);
        }
        if round % 7 != 0 {
            context.update(password);
        }
        if round % 2 == 1 {
            context.update(digest);
        } else {
            context.update(password);
        }
        digest = context.finalize();
    }

    let mut encoded = String::with_capacity(22);
    for [high, middle, low] in ENCODING_GROUPS {
        let value =
            u32::from(digest[high]) << 16 | u32::from(digest[middle]) << 8 | u32::from(digest[low]);
        push_crypt_base64(&mut encoded, value, 4);
    }
    push_crypt_base64(&mut encoded, u32::from(digest[11]), 2);
    encoded
}

/// Appends the `count` least significant six-bit groups of `value`, lowest
/// first, as characters of the `crypt(3)` base64 alphabet.
fn push_crypt_base64(out: &mut String, mut value: u32, count: usize) {
    for _ in 0..count {
        out.push(char::from(CRYPT_ALPHABET[(value & 0x3f) as usize]));
        value >>= 6;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors computed with `openssl passwd -apr1 -salt SALT PASSWORD`.
    const VECTORS: [(&str, &str); 5] = [
        ("password", "$apr1$saltsalt$yAAkm4libquA.ZWLHbSBq/"),
        ("a", "$apr1$x$16j9.5e7KiXmuYFAYpPJM/"),
        ("pässwörd-日本", "$apr1$Zx9./AbC$JSDNm6/cjx/R21q3hsMlp."),
        (
            "correct horse battery staple, a rather long passphrase of over sixteen bytes",
            "$apr1$rubber12$5izclea9u/BaqS1944Wtg.",
        ),
        ("", "$apr1$abcdefgh$L.PT565ESX4Tp2bqNs7Ie."),
    ];

    #[test]
    fn openssl_vectors() {
        for (password, expected) in VECTORS {
            let salt_and_checksum = &expected[PREFIX.len()..];
            let (salt, stored_checksum) = salt_and_checksum.split_once('$').unwrap();
            assert_eq!(
                checksum(password.as_bytes(), salt.as_bytes()),
                stored_checksum
            );
            assert!(verify(password, expected), "{expected}");
            assert!(!verify("not the password", expected), "{expected}");
        }
    }

    #[test]
    fn generated_hash_has_the_expected_shape() {
        let stored = hash("password").unwrap();
        assert_eq!(stored.len(), PREFIX.len() + 8 + 1 + 22, "{stored}");
        let rest = stored.strip_prefix(PREFIX).unwrap();
        let (salt, checksum) = rest.split_once('$').unwrap();
        assert_eq!(salt.len(), 8);
        assert_eq!(checksum.len(), 22);
        assert!(rest
            .bytes()
            .filter(|&b| b != b'$')
            .all(|b| CRYPT_ALPHABET.contains(&b)));
        assert!(verify("password", &stored));
    }

    #[test]
    fn salt_is_read_as_apr_reads_it() {
        // Only the first 8 salt bytes count, so a longer stored salt can never
        // equal the recomputed string.
        assert!(!verify(
            "password",
            "$apr1$saltsaltX$yAAkm4libquA.ZWLHbSBq/"
        ));
        // Trailing data after the checksum is not ignored.
        assert!(!verify(
            "password",
            "$apr1$saltsalt$yAAkm4libquA.ZWLHbSBq/x"
        ));
        assert!(!verify("password", "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/"));
    }

    #[test]
    fn refuses_nul() {
        assert!(matches!(hash("a\0b"), Err(HashError::ContainsNul)));
        assert!(!verify("password\0", VECTORS[0].1));
    }
}
