use std::fmt;

/// Longest accepted user name, in characters (all ASCII, so also bytes).
pub const MAX_USERNAME_LEN: usize = 128;

/// A user name that Apache's basic authentication, the database and a log
/// line can all carry safely: 1 to 128 characters from ASCII letters, digits,
/// `.`, `_`, `-` and `@`. Epoch times such as `1423382819` are the common case.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    #[error("user is empty")]
    Empty,
    #[error("user is longer than {MAX_USERNAME_LEN} characters")]
    TooLong,
    #[error("user may contain only ASCII letters, digits, '.', '_', '-' and '@'")]
    BadCharacter,
}

impl Username {
    pub fn parse(raw: &str) -> Result<Self, UsernameError> {
        if raw.is_empty() {
            return Err(UsernameError::Empty);
        }
        if raw.len() > MAX_USERNAME_LEN {
            return Err(UsernameError::TooLong);
        }
        if !raw.bytes().all(is_username_byte) {
            return Err(UsernameError::BadCharacter);
        }
        Ok(Self(raw.to_owned()))
    }

    /// A new epoch-based name: milliseconds since the epoch, a dash, and six
    /// random lowercase letters or digits, so that many names minted in one
    /// millisecond, by one instance or several, still differ.
    pub fn generate(epoch_millis: i64) -> Self {
        Self::generate_under(&NamePrefix::none(), epoch_millis)
    }

    /// A new epoch-based name that starts with `prefix`.
    pub fn generate_under(prefix: &NamePrefix, epoch_millis: i64) -> Self {
        use rand::Rng;
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::thread_rng();
        let suffix: String = (0..6)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect();
        Self(format!("{}{epoch_millis}-{suffix}", prefix.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The creation time an epoch-style name stands for, in epoch seconds:
    /// ten digits are seconds, thirteen are milliseconds.
    pub fn epoch_seconds(&self) -> Option<i64> {
        let n: i64 = self.0.parse().ok()?;
        match self.0.len() {
            1..=11 => Some(n),
            12..=14 => Some(n / 1000),
            _ => None,
        }
    }
}

fn is_username_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@')
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Username({})", self.0)
    }
}

impl AsRef<str> for Username {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The start of user names, as a caller may be limited to: the characters
/// of a user name, short enough that a generated name still fits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamePrefix(String);

/// Longest prefix, leaving room for a generated name after it.
pub const MAX_NAME_PREFIX_LEN: usize = 64;

impl NamePrefix {
    /// No prefix: any name.
    pub fn none() -> Self {
        Self(String::new())
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() > MAX_NAME_PREFIX_LEN {
            return Err(format!(
                "a user-name prefix is at most {MAX_NAME_PREFIX_LEN} characters"
            ));
        }
        if !raw.bytes().all(is_username_byte) {
            return Err(
                "a user-name prefix may contain only ASCII letters, digits, '.', '_', '-' and '@'"
                    .into(),
            );
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_names_and_friends_are_accepted() {
        for ok in [
            "1423382819",
            "1423382819123",
            "a",
            "build-42.ci_runner@example.org",
            &"x".repeat(MAX_USERNAME_LEN),
        ] {
            assert_eq!(Username::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn everything_else_is_refused_with_the_reason() {
        assert_eq!(Username::parse(""), Err(UsernameError::Empty));
        assert_eq!(
            Username::parse(&"x".repeat(MAX_USERNAME_LEN + 1)),
            Err(UsernameError::TooLong)
        );
        for bad in [
            "a:b", "a b", "a\tb", "a\nb", "a\0b", "a/b", "ünï", "a%20", "a+b", "a;b", "a'b", "\"",
            "日本",
        ] {
            assert_eq!(
                Username::parse(bad),
                Err(UsernameError::BadCharacter),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn generated_names_are_valid_epoch_based_and_distinct() {
        let names: std::collections::HashSet<String> = (0..1000)
            .map(|_| Username::generate(1_795_449_845_123).as_str().to_owned())
            .collect();
        assert_eq!(names.len(), 1000);
        for n in names.iter().take(10) {
            assert!(n.starts_with("1795449845123-"), "{n}");
            assert_eq!(Username::parse(n).unwrap().as_str(), n);
        }
    }

    #[test]
    fn epoch_seconds_reads_seconds_and_milliseconds() {
        let p = |s| Username::parse(s).unwrap().epoch_seconds();
        assert_eq!(p("1423382819"), Some(1_423_382_819));
        assert_eq!(p("1423382819123"), Some(1_423_382_819));
        assert_eq!(p("build-1"), None);
        assert_eq!(p("99999999999999999999"), None);
    }
}
