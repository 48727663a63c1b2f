//! htpasswd-style password hashes, in the exact formats Apache httpd reads.
//!
//! Apache's `mod_authn_dbd` runs the configured `AuthDBDUserPWQuery`, takes
//! the string it returns and hands it, together with the password the client
//! sent, to APR's `apr_password_validate()`. That function chooses the
//! algorithm from the prefix of the stored string, recomputes the hash from
//! the password (re-using the salt and parameters embedded in the stored
//! string) and compares the two strings. The formats produced here are the
//! ones the `htpasswd` tool writes:
//!
//! | [`HashType`]          | Prefix    | Module       | Checked in Apache by                      |
//! |-----------------------|-----------|--------------|-------------------------------------------|
//! | [`HashType::Sha1`]    | `{SHA}`   | [`sha1`]     | APR's SHA-1 code (unsalted)               |
//! | [`HashType::Md5`]     | `$apr1$`  | [`apr1`]     | APR's own salted MD5 scheme               |
//! | [`HashType::Bcrypt`]  | `$2y$`    | [`bcrypt`]   | APR's bundled `crypt_blowfish`            |
//! | [`HashType::Sha256`]  | `$5$`     | [`shacrypt`] | the system `crypt()` (glibc / libxcrypt)  |
//! | [`HashType::Sha512`]  | `$6$`     | [`shacrypt`] | the system `crypt()` (glibc / libxcrypt)  |
//!
//! Apache treats the password as a C string, so a password containing a NUL
//! byte would be silently cut short at that byte. Every hasher here therefore
//! refuses such passwords with [`HashError::ContainsNul`], and [`verify`]
//! never accepts them.
//!
//! No error produced by this module ever includes a password or a hash.

pub mod apr1;
pub mod bcrypt;
pub mod sha1;
pub mod shacrypt;

use std::fmt;
use std::str::FromStr;

use rand::rngs::OsRng;
use rand::RngCore;

/// Default bcrypt cost (log2 of the number of key-expansion rounds).
pub const DEFAULT_BCRYPT_COST: u32 = 10;
/// Smallest bcrypt cost accepted by bcrypt implementations, Apache's included.
pub const MIN_BCRYPT_COST: u32 = 4;
/// Largest bcrypt cost accepted by bcrypt implementations, Apache's included.
pub const MAX_BCRYPT_COST: u32 = 31;

/// The `crypt(3)` base64 alphabet, used for salts and for the `$apr1$`
/// checksum encoding.
pub(crate) const CRYPT_ALPHABET: &[u8; 64] =
    b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A password hash format understood by Apache httpd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashType {
    /// `{SHA}`: unsalted SHA-1 (`htpasswd -s`). Weak; for compatibility only.
    Sha1,
    /// `$apr1$`: Apache's salted, iterated MD5 (`htpasswd -m`).
    Md5,
    /// `$2y$`: bcrypt (`htpasswd -B`).
    Bcrypt,
    /// `$5$`: SHA-256-crypt (`htpasswd -2`).
    Sha256,
    /// `$6$`: SHA-512-crypt (`htpasswd -5`).
    Sha512,
}

impl HashType {
    /// Every supported format.
    pub const ALL: [HashType; 5] = [
        HashType::Sha1,
        HashType::Md5,
        HashType::Bcrypt,
        HashType::Sha256,
        HashType::Sha512,
    ];

    /// Canonical lower-case name of the format, as accepted by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            HashType::Sha1 => "sha1",
            HashType::Md5 => "md5",
            HashType::Bcrypt => "bcrypt",
            HashType::Sha256 => "sha256",
            HashType::Sha512 => "sha512",
        }
    }

    /// The longest password, in bytes, the format can hash without losing
    /// part of it, or `None` when there is no such limit.
    pub fn max_password_bytes(self) -> Option<usize> {
        match self {
            HashType::Bcrypt => Some(self::bcrypt::MAX_PASSWORD_BYTES),
            HashType::Sha1 | HashType::Md5 | HashType::Sha256 | HashType::Sha512 => None,
        }
    }
}

impl fmt::Display for HashType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error returned when parsing an unrecognised [`HashType`] name.
#[derive(Debug, thiserror::Error)]
#[error("unknown hash type `{0}`: use one of sha1, md5, bcrypt, sha256, sha512")]
pub struct UnknownHashType(pub String);

impl FromStr for HashType {
    type Err = UnknownHashType;

    /// Parses a format name case-insensitively. Besides the canonical names,
    /// `sha` (for `sha1`) and `apr1` (for `md5`) are accepted.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "sha1" | "sha" => Ok(HashType::Sha1),
            "md5" | "apr1" => Ok(HashType::Md5),
            "bcrypt" => Ok(HashType::Bcrypt),
            "sha256" => Ok(HashType::Sha256),
            "sha512" => Ok(HashType::Sha512),
            _ => Err(UnknownHashType(s.to_owned())),
        }
    }
}

/// Why a password could not be hashed.
///
/// The messages never include the password or any hash.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The password is longer than the format can use; hashing it would
    /// silently ignore the excess.
    #[error("password is longer than {max} bytes, the most this hash format can use")]
    PasswordTooLong {
        /// The largest accepted password length, in bytes.
        max: usize,
    },
    /// The password contains a NUL byte, at which Apache would cut it short.
    #[error("password contains a NUL byte, which Apache would treat as the end of the password")]
    ContainsNul,
    /// The requested bcrypt cost is outside the range implementations accept.
    #[error(
        "bcrypt cost {cost} is outside the supported range {min}..={max}",
        min = MIN_BCRYPT_COST,
        max = MAX_BCRYPT_COST
    )]
    InvalidBcryptCost {
        /// The rejected cost.
        cost: u32,
    },
    /// A failure that does not depend on the password, such as the operating
    /// system's random number generator being unavailable.
    #[error("password hashing failed: {0}")]
    Internal(String),
}

/// Hashes `password` in format `kind`.
///
/// A fresh random salt is drawn for every salted format. `bcrypt_cost` is
/// only used for [`HashType::Bcrypt`] and must lie within
/// [`MIN_BCRYPT_COST`]`..=`[`MAX_BCRYPT_COST`].
pub fn hash(kind: HashType, password: &str, bcrypt_cost: u32) -> Result<String, HashError> {
    hash_with_salt(kind, password, bcrypt_cost, random_bytes()?)
}

/// As [`hash`], with the salt drawn by the caller: the 16 bytes themselves
/// for bcrypt, their low six bits as [`CRYPT_ALPHABET`] characters for the
/// other salted formats (as many as the format takes).
pub(crate) fn hash_with_salt(
    kind: HashType,
    password: &str,
    bcrypt_cost: u32,
    salt: [u8; 16],
) -> Result<String, HashError> {
    // The alphabet has exactly 64 symbols, so the low six bits of a uniformly
    // random byte select each symbol with equal probability.
    let chars: String = salt
        .iter()
        .map(|&byte| char::from(CRYPT_ALPHABET[usize::from(byte & 0x3f)]))
        .collect();
    match kind {
        HashType::Sha1 => sha1::hash(password),
        HashType::Md5 => apr1::hash_with_salt(password, &chars[..apr1::SALT_LEN]),
        HashType::Bcrypt => self::bcrypt::hash_with_salt(password, bcrypt_cost, salt),
        HashType::Sha256 => shacrypt::hash_with_salt(shacrypt::Variant::Sha256, password, &chars),
        HashType::Sha512 => shacrypt::hash_with_salt(shacrypt::Variant::Sha512, password, &chars),
    }
}

/// Verifies `password` against a stored htpasswd-style hash.
///
/// The format is detected from the prefix of `stored` (`{SHA}`, `$apr1$`,
/// `$2y$`/`$2b$`/`$2a$`, `$5$`, `$6$`). An unknown or malformed hash, and a
/// password Apache could not have been given intact (one containing a NUL
/// byte), yield `false`. Comparisons of computed and stored values are
/// constant-time.
pub fn verify(password: &str, stored: &str) -> bool {
    match detect(stored) {
        Some(HashType::Sha1) => sha1::verify(password, stored),
        Some(HashType::Md5) => apr1::verify(password, stored),
        Some(HashType::Bcrypt) => self::bcrypt::verify(password, stored),
        Some(HashType::Sha256 | HashType::Sha512) => shacrypt::verify(password, stored),
        None => false,
    }
}

/// Whether checking a password against `a` costs what checking it against
/// `b` costs: the same format, and for bcrypt the same cost and for
/// SHA-crypt the same rounds.
pub fn same_work(a: &str, b: &str) -> bool {
    let parameters = |stored: &str| -> Option<(HashType, String)> {
        let kind = detect(stored)?;
        let params = match kind {
            // $2y$10$...
            HashType::Bcrypt => stored.get(..7)?.get(4..6)?.to_owned(),
            // $5$rounds=N$salt$hash, rounds optional
            HashType::Sha256 | HashType::Sha512 => stored
                .get(3..)?
                .split('$')
                .next()
                .filter(|p| p.starts_with("rounds="))
                .unwrap_or_default()
                .to_owned(),
            HashType::Sha1 | HashType::Md5 => String::new(),
        };
        Some((kind, params))
    };
    parameters(a) == parameters(b)
}

/// Returns the format of a stored hash, judged by its prefix alone, or
/// `None` if the prefix is not one of the supported formats.
pub fn detect(stored: &str) -> Option<HashType> {
    if stored.starts_with(sha1::PREFIX) {
        Some(HashType::Sha1)
    } else if stored.starts_with(apr1::PREFIX) {
        Some(HashType::Md5)
    } else if self::bcrypt::ACCEPTED_PREFIXES
        .iter()
        .any(|prefix| stored.starts_with(prefix))
    {
        Some(HashType::Bcrypt)
    } else if stored.starts_with(shacrypt::Variant::Sha256.prefix()) {
        Some(HashType::Sha256)
    } else if stored.starts_with(shacrypt::Variant::Sha512.prefix()) {
        Some(HashType::Sha512)
    } else {
        None
    }
}

/// Refuses passwords containing a NUL byte (see [`HashError::ContainsNul`]).
pub(crate) fn reject_nul(password: &str) -> Result<(), HashError> {
    if password.contains('\0') {
        Err(HashError::ContainsNul)
    } else {
        Ok(())
    }
}

/// Fills an array from the operating system's CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], HashError> {
    let mut bytes = [0u8; N];
    OsRng.try_fill_bytes(&mut bytes).map_err(|err| {
        HashError::Internal(format!("random number generator unavailable: {err}"))
    })?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::ErrorKind;
    use std::process::{Command, Output};

    /// Low bcrypt cost keeping the tests fast.
    const TEST_COST: u32 = 4;
    const NON_ASCII: &str = "pässwörd-日本";

    fn salted(kind: HashType) -> bool {
        kind != HashType::Sha1
    }

    #[test]
    fn names_and_display_agree() {
        let names: Vec<_> = HashType::ALL.iter().map(|kind| kind.name()).collect();
        assert_eq!(names, ["sha1", "md5", "bcrypt", "sha256", "sha512"]);
        for kind in HashType::ALL {
            assert_eq!(kind.to_string(), kind.name());
            assert_eq!(kind.name().parse::<HashType>().unwrap(), kind);
        }
    }

    #[test]
    fn max_password_bytes_only_for_bcrypt() {
        for kind in HashType::ALL {
            let expected = (kind == HashType::Bcrypt).then_some(72);
            assert_eq!(kind.max_password_bytes(), expected, "{kind}");
        }
    }

    #[test]
    fn from_str_accepts_aliases_case_insensitively() {
        let cases = [
            ("SHA1", HashType::Sha1),
            ("sha", HashType::Sha1),
            ("Sha", HashType::Sha1),
            ("MD5", HashType::Md5),
            ("apr1", HashType::Md5),
            ("APR1", HashType::Md5),
            ("BCRYPT", HashType::Bcrypt),
            ("bcrypt", HashType::Bcrypt),
            ("SHA256", HashType::Sha256),
            ("sha512", HashType::Sha512),
        ];
        for (input, expected) in cases {
            assert_eq!(input.parse::<HashType>().unwrap(), expected, "{input}");
        }
    }

    #[test]
    fn from_str_rejects_unknown_names_listing_valid_ones() {
        for input in ["md4", "", "sha-1", "crypt", "plain"] {
            let err = input.parse::<HashType>().unwrap_err();
            assert_eq!(err.0, input);
            let message = err.to_string();
            assert!(message.contains(&format!("`{input}`")), "{message}");
            for kind in HashType::ALL {
                assert!(message.contains(kind.name()), "{message}");
            }
        }
    }

    #[test]
    fn round_trip_every_format() {
        for kind in HashType::ALL {
            for password in ["correct horse", NON_ASCII, ""] {
                let stored = hash(kind, password, TEST_COST).unwrap();
                assert_eq!(detect(&stored), Some(kind), "{stored}");
                assert!(verify(password, &stored), "{kind} {password:?}");
                assert!(!verify("wrong password", &stored), "{kind}");
                assert!(!verify(&format!("{password}x"), &stored), "{kind}");
            }
        }
    }

    #[test]
    fn salts_differ_between_hashes_of_the_same_password() {
        for kind in HashType::ALL.into_iter().filter(|&kind| salted(kind)) {
            let first = hash(kind, "same password", TEST_COST).unwrap();
            let second = hash(kind, "same password", TEST_COST).unwrap();
            assert_ne!(first, second, "{kind}");
            assert!(verify("same password", &first));
            assert!(verify("same password", &second));
        }
        let first = hash(HashType::Sha1, "same password", TEST_COST).unwrap();
        let second = hash(HashType::Sha1, "same password", TEST_COST).unwrap();
        assert_eq!(first, second, "{{SHA}} is unsalted");
    }

    #[test]
    fn nul_is_refused_for_every_format() {
        for kind in HashType::ALL {
            for password in ["\0", "abc\0", "\0abc", "ab\0cd"] {
                assert!(
                    matches!(hash(kind, password, TEST_COST), Err(HashError::ContainsNul)),
                    "{kind}"
                );
            }
            // A hash of the part before the NUL must not accept the full
            // password either: Apache would never see the same bytes.
            let stored = hash(kind, "abc", TEST_COST).unwrap();
            assert!(!verify("abc\0def", &stored), "{kind}");
        }
    }

    #[test]
    fn bcrypt_length_limit_through_dispatcher() {
        let at_limit = "a".repeat(72);
        let stored = hash(HashType::Bcrypt, &at_limit, TEST_COST).unwrap();
        assert!(verify(&at_limit, &stored));
        let over = "a".repeat(73);
        assert!(matches!(
            hash(HashType::Bcrypt, &over, TEST_COST),
            Err(HashError::PasswordTooLong { max: 72 })
        ));
        // The limit is in bytes, not characters.
        let multibyte = "é".repeat(37);
        assert_eq!(multibyte.len(), 74);
        assert!(matches!(
            hash(HashType::Bcrypt, &multibyte, TEST_COST),
            Err(HashError::PasswordTooLong { max: 72 })
        ));
        // Other formats have no such limit.
        for kind in HashType::ALL.into_iter().filter(|&k| k != HashType::Bcrypt) {
            let long = "x".repeat(1000);
            assert!(verify(&long, &hash(kind, &long, TEST_COST).unwrap()));
        }
    }

    #[test]
    fn bcrypt_cost_is_respected_and_validated() {
        let stored = hash(HashType::Bcrypt, "pw", 5).unwrap();
        assert!(stored.starts_with("$2y$05$"), "{stored}");
        for cost in [0, 3, 32, u32::MAX] {
            assert!(matches!(
                hash(HashType::Bcrypt, "pw", cost),
                Err(HashError::InvalidBcryptCost { cost: c }) if c == cost
            ));
        }
        // The cost argument is ignored by the other formats.
        for kind in HashType::ALL.into_iter().filter(|&k| k != HashType::Bcrypt) {
            assert!(hash(kind, "pw", 0).is_ok(), "{kind}");
        }
    }

    #[test]
    fn error_messages_never_contain_the_password() {
        let secret = "s3cr3t-Passw0rd";
        let too_long = format!("{secret}{}", "x".repeat(80));
        let with_nul = format!("{secret}\0");
        let errors = [
            hash(HashType::Bcrypt, &too_long, TEST_COST).unwrap_err(),
            hash(HashType::Sha512, &with_nul, TEST_COST).unwrap_err(),
            hash(HashType::Bcrypt, secret, 99).unwrap_err(),
        ];
        for err in errors {
            for rendered in [err.to_string(), format!("{err:?}")] {
                assert!(!rendered.contains(secret), "{rendered}");
            }
        }
    }

    #[test]
    fn detect_recognises_prefixes() {
        let cases = [
            ("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", Some(HashType::Sha1)),
            ("$apr1$saltsalt$yAAkm4libquA.ZWLHbSBq/", Some(HashType::Md5)),
            ("$2y$05$abc", Some(HashType::Bcrypt)),
            ("$2b$05$abc", Some(HashType::Bcrypt)),
            ("$2a$05$abc", Some(HashType::Bcrypt)),
            ("$5$saltstring$abc", Some(HashType::Sha256)),
            ("$6$saltstring$abc", Some(HashType::Sha512)),
            ("$2x$05$abc", None),
            ("$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/", None),
            ("{sha}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", None),
            ("{SSHA}abc", None),
            ("plaintext", None),
            ("", None),
        ];
        for (stored, expected) in cases {
            assert_eq!(detect(stored), expected, "{stored}");
        }
    }

    #[test]
    fn verify_rejects_garbled_hashes_without_panicking() {
        let garbled = [
            "",
            "$",
            "$$$$",
            "{SHA}",
            "{SHA}not base64 at all",
            "$apr1$",
            "$apr1$saltsalt",
            "$apr1$saltsalt$",
            "$apr1$ä日本ä日本$x",
            "$2y$",
            "$2y$05$",
            "$2y$99$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            "$2y$xx$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            "$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOe!",
            "$2y$05$日本日本日本日本日本日本日本日本日本日本日本日本日本日本日本日本日本日",
            "$5$",
            "$5$rounds=$salt$hash",
            "$5$rounds=abc$salt$hash",
            "$5$rounds=99999999999999999999999$salt$hash",
            "$5$saltstring$!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
            "$6$saltstring$!!!",
            "$6$日本日本日本日本日本日本$x",
        ];
        for stored in garbled {
            assert!(!verify("password", stored), "{stored}");
            assert!(!verify("", stored), "{stored}");
        }
    }

    // --- Interoperability with Apache's own `htpasswd` tool. ---

    /// Runs `htpasswd`, failing loudly when apache2-utils is missing so that
    /// the interoperability tests can never pass by being skipped.
    fn htpasswd(args: &[&str]) -> Output {
        match Command::new("htpasswd").args(args).output() {
            Ok(output) => output,
            Err(err) if err.kind() == ErrorKind::NotFound => panic!(
                "the `htpasswd` binary was not found on PATH; install apache2-utils \
                 (e.g. `apt-get install apache2-utils`) to run the Apache interoperability tests"
            ),
            Err(err) => panic!("could not run htpasswd: {err}"),
        }
    }

    /// Asks `htpasswd -v` whether Apache accepts `password` for `stored`.
    fn apache_accepts(stored: &str, password: &str) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("htpasswd");
        std::fs::write(&file, format!("user:{stored}\n")).unwrap();
        let output = htpasswd(&["-vb", file.to_str().unwrap(), "user", password]);
        match output.status.code() {
            Some(0) => true,
            // htpasswd's exit status for "password verification failed".
            Some(3) => false,
            other => panic!(
                "htpasswd -v exited with {other:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }

    /// Hashes `password` with `htpasswd -nb<flags>` and returns the hash.
    fn apache_hash(flags: &[&str], password: &str) -> String {
        let mut args = vec!["-nb"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["user", password]);
        let output = htpasswd(&args);
        assert!(
            output.status.success(),
            "htpasswd {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8(output.stdout).unwrap();
        stdout
            .trim_end()
            .strip_prefix("user:")
            .unwrap_or_else(|| panic!("unexpected htpasswd output {stdout:?}"))
            .to_owned()
    }

    fn htpasswd_flags(kind: HashType) -> &'static [&'static str] {
        match kind {
            HashType::Sha1 => &["-s"],
            HashType::Md5 => &["-m"],
            HashType::Bcrypt => &["-B", "-C", "5"],
            HashType::Sha256 => &["-2"],
            HashType::Sha512 => &["-5"],
        }
    }

    #[test]
    fn apache_htpasswd_accepts_our_hashes() {
        for kind in HashType::ALL {
            for password in ["correct horse battery staple", NON_ASCII] {
                let stored = hash(kind, password, TEST_COST).unwrap();
                assert!(apache_accepts(&stored, password), "{kind}: {stored}");
                assert!(!apache_accepts(&stored, "wrong password"), "{kind}");
            }
        }
        let at_limit = "b".repeat(72);
        let stored = hash(HashType::Bcrypt, &at_limit, TEST_COST).unwrap();
        assert!(apache_accepts(&stored, &at_limit));
        assert!(!apache_accepts(&stored, &"b".repeat(71)));
    }

    #[test]
    fn our_verify_accepts_apache_hashes() {
        for kind in HashType::ALL {
            for password in ["correct horse battery staple", NON_ASCII] {
                let stored = apache_hash(htpasswd_flags(kind), password);
                assert_eq!(detect(&stored), Some(kind), "{stored}");
                assert!(verify(password, &stored), "{kind}: {stored}");
                assert!(!verify("wrong password", &stored), "{kind}: {stored}");
            }
        }
        // Non-default SHA-crypt rounds written by Apache carry `rounds=N$`.
        for (flag, kind) in [("-2", HashType::Sha256), ("-5", HashType::Sha512)] {
            let stored = apache_hash(&[flag, "-r", "10000"], "pw");
            assert!(stored.contains("$rounds=10000$"), "{stored}");
            assert_eq!(detect(&stored), Some(kind));
            assert!(verify("pw", &stored), "{stored}");
            assert!(!verify("pW", &stored), "{stored}");
        }
    }
}
