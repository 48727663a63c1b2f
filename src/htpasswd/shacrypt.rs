//! `$5$` and `$6$`: SHA-256-crypt and SHA-512-crypt, as written by
//! `htpasswd -2` and `htpasswd -5`.
//!
//! The stored string is `$5$[rounds=N$]<salt>$<checksum>` (`$6$` for
//! SHA-512), following Ulrich Drepper's "Unix crypt using SHA-256 and
//! SHA-512" specification: a salt of up to 16 characters, an optional round
//! count (5000 when absent) and a 43-character (SHA-256) or 86-character
//! (SHA-512) checksum in the `crypt(3)` base64 alphabet.
//!
//! Apache has no code of its own for these formats: `apr_password_validate()`
//! passes them to the system `crypt()` (glibc or libxcrypt) and compares the
//! returned string with the stored one. [`verify`] reproduces that: it
//! rebuilds the full string from the stored salt and round count and compares
//! the two in constant time. Like libxcrypt, it refuses round counts outside
//! 1000..=999999999 rather than clamping them as the specification suggests
//! (a clamped result could never equal the stored string anyway).
//!
//! Note that verification cost is proportional to the stored round count, up
//! to 999999999 rounds; stored hashes are trusted to carry sensible values.

use sha_crypt::{sha256_crypt_b64, sha512_crypt_b64, Sha256Params, Sha512Params};
use subtle::ConstantTimeEq;

use super::{reject_nul, HashError};

/// Which SHA-crypt variant to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// SHA-256-crypt, `$5$`.
    Sha256,
    /// SHA-512-crypt, `$6$`.
    Sha512,
}

impl Variant {
    /// Prefix identifying the variant.
    pub fn prefix(self) -> &'static str {
        match self {
            Variant::Sha256 => "$5$",
            Variant::Sha512 => "$6$",
        }
    }
}

/// Number of salt characters generated, also the most that are used.
pub const SALT_LEN: usize = 16;

/// Round count used when a hash does not name one.
pub const DEFAULT_ROUNDS: usize = 5000;

const ROUNDS_PREFIX: &[u8] = b"rounds=";

/// Hashes `password` with a fresh 16-character salt from the OS CSPRNG and
/// the default 5000 rounds (so no `rounds=` field is written).
///
/// Fails only for passwords containing a NUL byte or if the random number
/// generator is unavailable.
pub fn hash(variant: Variant, password: &str) -> Result<String, HashError> {
    let kind = match variant {
        Variant::Sha256 => super::HashType::Sha256,
        Variant::Sha512 => super::HashType::Sha512,
    };
    super::hash(kind, password, 0)
}

/// As [`hash`], with the salt given (characters of the `crypt(3)` alphabet,
/// at most [`SALT_LEN`]).
pub(crate) fn hash_with_salt(
    variant: Variant,
    password: &str,
    salt: &str,
) -> Result<String, HashError> {
    reject_nul(password)?;
    let checksum = checksum(
        variant,
        password.as_bytes(),
        salt.as_bytes(),
        DEFAULT_ROUNDS,
    )
    .ok_or_else(|| HashError::Internal("SHA-crypt hashing failed".to_owned()))?;
    Ok(format!("{}{salt}${checksum}", variant.prefix()))
}

/// Checks `password` against a `$5$` or `$6$` hash, with or without a
/// `rounds=N$` field, comparing in constant time.
///
/// Returns `false` for malformed hashes, out-of-range round counts and
/// passwords containing NUL.
pub fn verify(password: &str, stored: &str) -> bool {
    if password.contains('\0') {
        return false;
    }
    match crypt(password.as_bytes(), stored.as_bytes()) {
        Some(expected) => expected.ct_eq(stored.as_bytes()).into(),
        None => false,
    }
}

/// Computes what `crypt(password, setting)` returns for a SHA-crypt
/// `setting` (a stored hash or just its `$5$[rounds=N$]salt` part), or
/// `None` if the setting is not valid.
fn crypt(password: &[u8], setting: &[u8]) -> Option<Vec<u8>> {
    let (variant, rest) = [Variant::Sha256, Variant::Sha512]
        .into_iter()
        .find_map(|variant| {
            setting
                .strip_prefix(variant.prefix().as_bytes())
                .map(|rest| (variant, rest))
        })?;

    let (rounds, rest) = match rest.strip_prefix(ROUNDS_PREFIX) {
        Some(after) => {
            let digits_len = after.iter().position(|&byte| byte == b'$')?;
            let digits = &after[..digits_len];
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let rounds: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
            (Some(rounds), &after[digits_len + 1..])
        }
        None => (None, rest),
    };

    let salt_len = rest
        .iter()
        .take(SALT_LEN)
        .take_while(|&&byte| byte != b'$')
        .count();
    let salt = &rest[..salt_len];

    let checksum = checksum(variant, password, salt, rounds.unwrap_or(DEFAULT_ROUNDS))?;

    let mut out = Vec::with_capacity(setting.len().max(128));
    out.extend_from_slice(variant.prefix().as_bytes());
    if let Some(rounds) = rounds {
        out.extend_from_slice(format!("rounds={rounds}$").as_bytes());
    }
    out.extend_from_slice(salt);
    out.push(b'$');
    out.extend_from_slice(checksum.as_bytes());
    Some(out)
}

/// Computes the encoded checksum, or `None` if `rounds` is out of range.
fn checksum(variant: Variant, password: &[u8], salt: &[u8], rounds: usize) -> Option<String> {
    match variant {
        Variant::Sha256 => sha256_crypt_b64(password, salt, &Sha256Params::new(rounds).ok()?).ok(),
        Variant::Sha512 => sha512_crypt_b64(password, salt, &Sha512Params::new(rounds).ok()?).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::htpasswd::CRYPT_ALPHABET;

    /// `(setting, password, crypt output)` from Drepper's specification; the
    /// same values are produced by libxcrypt's `crypt()`.
    const SPEC_VECTORS: [(&str, &str, &str); 10] = [
        (
            "$5$saltstring",
            "Hello world!",
            "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5",
        ),
        (
            "$5$rounds=10000$saltstringsaltstring",
            "Hello world!",
            "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA",
        ),
        (
            "$5$rounds=5000$toolongsaltstring",
            "This is just a test",
            "$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5",
        ),
        (
            "$5$rounds=1400$anotherlongsaltstring",
            "a very much longer text to encrypt.  This one even stretches over morethan one line.",
            "$5$rounds=1400$anotherlongsalts$Rx.j8H.h8HjEDGomFU8bDkXm3XIUnzyxf12oP84Bnq1",
        ),
        (
            "$5$rounds=1000$roundstoolow",
            "the minimum number is still observed",
            "$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC",
        ),
        (
            "$6$saltstring",
            "Hello world!",
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
        ),
        (
            "$6$rounds=10000$saltstringsaltstring",
            "Hello world!",
            "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
        ),
        (
            "$6$rounds=5000$toolongsaltstring",
            "This is just a test",
            "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0",
        ),
        (
            "$6$rounds=1000$roundstoolow",
            "the minimum number is still observed",
            "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX.",
        ),
        (
            "$6$rounds=5000$saltstring",
            "Hello world!",
            "$6$rounds=5000$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
        ),
    ];

    /// Vectors computed with `openssl passwd -5` / `-6 -salt SALT PASSWORD`.
    const OPENSSL_VECTORS: [(&str, &str); 2] = [
        (
            "pässwörd-日本",
            "$5$Zx9./AbCdEfGhIjK$6NxMNQHukvj8bstuFUnEYm2MOtqrFyPTcJETPvPzC2A",
        ),
        (
            "pässwörd-日本",
            "$6$Zx9./AbCdEfGhIjK$F/u8JLDbMNXO/Tase.DK0clocMd3z.HsNyArOoINbzTdDj8qWRisLB6GTS/znOy0rLW14xDLZ7HN7CMauh1ox1",
        ),
    ];

    #[test]
    fn specification_vectors() {
        for (setting, password, expected) in SPEC_VECTORS {
            let computed = crypt(password.as_bytes(), setting.as_bytes()).unwrap();
            assert_eq!(String::from_utf8(computed).unwrap(), expected);
            assert!(verify(password, expected), "{expected}");
            assert!(!verify("Hello world?", expected), "{expected}");
        }
    }

    #[test]
    fn openssl_vectors() {
        for (password, expected) in OPENSSL_VECTORS {
            assert!(verify(password, expected), "{expected}");
            assert!(!verify("passwörd-日本", expected), "{expected}");
        }
    }

    #[test]
    fn generated_hashes_have_the_expected_shape() {
        for (variant, checksum_len) in [(Variant::Sha256, 43), (Variant::Sha512, 86)] {
            let stored = hash(variant, "password").unwrap();
            let rest = stored.strip_prefix(variant.prefix()).unwrap();
            assert!(!rest.contains("rounds="), "{stored}");
            let (salt, checksum) = rest.split_once('$').unwrap();
            assert_eq!(salt.len(), SALT_LEN, "{stored}");
            assert_eq!(checksum.len(), checksum_len, "{stored}");
            assert!(salt.bytes().all(|b| CRYPT_ALPHABET.contains(&b)));
            assert!(verify("password", &stored));
        }
    }

    #[test]
    fn out_of_range_rounds_are_refused() {
        // Drepper's specification clamps `rounds=10` to 1000 and reports
        // `rounds=1000`; libxcrypt refuses it. Neither can match the stored
        // string, so verification fails.
        for setting in [
            "$5$rounds=10$roundstoolow",
            "$5$rounds=999$x",
            "$6$rounds=1000000000$x",
        ] {
            assert_eq!(crypt(b"pw", setting.as_bytes()), None, "{setting}");
        }
        assert!(!verify(
            "the minimum number is still observed",
            "$5$rounds=10$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC"
        ));
    }

    #[test]
    fn stored_string_must_match_exactly() {
        let (_, password, expected) = SPEC_VECTORS[0];
        // A salt longer than 16 characters is cut by crypt(), so the
        // recomputed string differs from the stored one.
        assert!(!verify(
            password,
            "$5$saltstringsaltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"
        ));
        // Leading zeros in the round count are not canonical.
        assert!(!verify(
            password,
            "$5$rounds=05000$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"
        ));
        assert!(!verify(password, &format!("{expected}x")));
        assert!(!verify(password, &expected[..expected.len() - 1]));
        assert!(!verify(password, &expected.replacen("$5$", "$6$", 1)));
    }

    #[test]
    fn malformed_checksums_do_not_panic() {
        for stored in [
            "$5$saltstring$!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
            "$5$saltstring$",
            "$5$saltstring",
            "$5$",
            "$5$rounds=$saltstring$x",
            "$5$rounds=5000",
            "$6$rounds=-5000$saltstring$x",
            "$6$日本日本日本日本日本日本$x",
        ] {
            assert!(!verify("Hello world!", stored), "{stored}");
        }
    }

    #[test]
    fn refuses_nul() {
        for variant in [Variant::Sha256, Variant::Sha512] {
            assert!(matches!(
                hash(variant, "Hello\0world!"),
                Err(HashError::ContainsNul)
            ));
        }
        assert!(!verify("Hello world!\0", SPEC_VECTORS[0].2));
    }
}
