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
    fn epoch_seconds_reads_seconds_and_milliseconds() {
        let p = |s| Username::parse(s).unwrap().epoch_seconds();
        assert_eq!(p("1423382819"), Some(1_423_382_819));
        assert_eq!(p("1423382819123"), Some(1_423_382_819));
        assert_eq!(p("build-1"), None);
        assert_eq!(p("99999999999999999999"), None);
    }
}
