//! What a caller may do: which actions, on which user names, and whether
//! it may replace a credential that exists. The credential core enforces
//! them, whatever door or command the call came through.

use std::fmt;

use super::{NamePrefix, Username};

/// One thing a caller may be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Right {
    Add,
    Remove,
    Renew,
    Cleanup,
    List,
    /// Add a credential under a name that exists, replacing it (its
    /// password, its creation time and so its lifetime, its scopes).
    Replace,
}

impl Right {
    pub const ALL: [Right; 6] = [
        Right::Add,
        Right::Remove,
        Right::Renew,
        Right::Cleanup,
        Right::List,
        Right::Replace,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Right::Add => "add",
            Right::Remove => "remove",
            Right::Renew => "renew",
            Right::Cleanup => "cleanup",
            Right::List => "list",
            Right::Replace => "replace",
        }
    }

    pub fn parse(name: &str) -> Option<Right> {
        Right::ALL.into_iter().find(|r| r.name() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The rights of one caller: a set of [`Right`]s, and the prefix every
/// user name it acts on must start with (empty: any name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rights {
    granted: u8,
    users: NamePrefix,
}

/// Why a caller may not do what it asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    /// No door decided what the caller may do: it may do nothing.
    #[error("this caller's rights are not known")]
    Unknown,
    #[error("this caller may not {}", .0.name())]
    Action(Right),
    #[error("this caller acts only on users whose names start with {prefix}")]
    User { prefix: String },
    #[error("user {0} exists; replacing it needs the replace right")]
    Exists(Username),
    #[error("a cleanup removes users of every name; this caller acts only on names starting with {prefix}")]
    CleanupOfOthers { prefix: String },
}

impl Rights {
    /// Everything, on every name: the original's rights, which a caller
    /// keeps when no limits are configured, and the command line's.
    pub fn all() -> Self {
        Self {
            granted: Right::ALL.iter().fold(0, |bits, r| bits | r.bit()),
            users: NamePrefix::none(),
        }
    }

    /// `granted` on the names starting with `users` (empty: any name).
    pub fn new(granted: impl IntoIterator<Item = Right>, users: NamePrefix) -> Self {
        Self {
            granted: granted.into_iter().fold(0, |bits, r| bits | r.bit()),
            users,
        }
    }

    pub fn may(&self, right: Right) -> bool {
        self.granted & right.bit() != 0
    }

    /// The prefix of the names this caller acts on; empty for any.
    pub fn user_prefix(&self) -> &NamePrefix {
        &self.users
    }

    fn prefix(&self) -> String {
        self.users.as_str().to_owned()
    }

    /// Ok when the caller may do `right`.
    pub fn check(&self, right: Right) -> Result<(), Forbidden> {
        if self.may(right) {
            Ok(())
        } else {
            Err(Forbidden::Action(right))
        }
    }

    /// Ok when the caller may do `right` to `user`.
    pub fn check_user(&self, right: Right, user: &Username) -> Result<(), Forbidden> {
        self.check(right)?;
        if user.as_str().starts_with(self.users.as_str()) {
            Ok(())
        } else {
            Err(Forbidden::User {
                prefix: self.prefix(),
            })
        }
    }

    /// Ok when the caller may clean up: a cleanup removes old users of
    /// every name, so only a caller limited to no prefix may.
    pub fn check_cleanup(&self) -> Result<(), Forbidden> {
        self.check(Right::Cleanup)?;
        if self.users.as_str().is_empty() {
            Ok(())
        } else {
            Err(Forbidden::CleanupOfOthers {
                prefix: self.prefix(),
            })
        }
    }

    /// The prefix a listing asked for `requested` may show: the longer of
    /// the two when one extends the other; refused when they part.
    pub fn list_prefix(&self, requested: &str) -> Result<String, Forbidden> {
        self.check(Right::List)?;
        let own = self.users.as_str();
        if requested.starts_with(own) {
            Ok(requested.to_owned())
        } else if own.starts_with(requested) {
            Ok(own.to_owned())
        } else {
            Err(Forbidden::User {
                prefix: self.prefix(),
            })
        }
    }
}

impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Right::ALL
            .into_iter()
            .filter(|r| self.may(*r))
            .map(Right::name)
            .collect();
        write!(f, "{}", names.join(","))?;
        if !self.users.as_str().is_empty() {
            write!(f, " on {}*", self.users.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Username {
        Username::parse(s).unwrap()
    }

    fn p(s: &str) -> NamePrefix {
        NamePrefix::parse(s).unwrap()
    }

    #[test]
    fn rights_limit_actions_and_names() {
        let ci = Rights::new([Right::Add, Right::Remove, Right::Renew], p("ci-"));
        assert!(ci.check_user(Right::Add, &u("ci-42")).is_ok());
        assert_eq!(
            ci.check_user(Right::Add, &u("prod-1")),
            Err(Forbidden::User {
                prefix: "ci-".into()
            })
        );
        assert_eq!(ci.check(Right::List), Err(Forbidden::Action(Right::List)));
        assert!(!ci.may(Right::Replace));
        assert_eq!(ci.check_cleanup(), Err(Forbidden::Action(Right::Cleanup)));
        let cron = Rights::new([Right::Cleanup], p(""));
        assert!(cron.check_cleanup().is_ok());
        assert!(cron.check_user(Right::Add, &u("x")).is_err());
        let odd = Rights::new([Right::Cleanup], p("ci-"));
        assert!(matches!(
            odd.check_cleanup(),
            Err(Forbidden::CleanupOfOthers { .. })
        ));
        let all = Rights::all();
        assert!(Right::ALL.iter().all(|r| all.may(*r)));
        assert!(all.check_cleanup().is_ok());
        assert_eq!(all.to_string(), "add,remove,renew,cleanup,list,replace");
        assert_eq!(ci.to_string(), "add,remove,renew on ci-*");
    }

    #[test]
    fn a_listing_is_narrowed_to_the_callers_names() {
        let ci = Rights::new([Right::List], p("ci-"));
        assert_eq!(ci.list_prefix("").unwrap(), "ci-");
        assert_eq!(ci.list_prefix("c").unwrap(), "ci-");
        assert_eq!(ci.list_prefix("ci-4").unwrap(), "ci-4");
        assert!(ci.list_prefix("prod").is_err());
        assert_eq!(Rights::all().list_prefix("x").unwrap(), "x");
        assert!(Rights::new([], p("")).list_prefix("").is_err());
    }

    #[test]
    fn rights_are_read_by_name() {
        for r in Right::ALL {
            assert_eq!(Right::parse(r.name()), Some(r));
        }
        assert_eq!(Right::parse("delete"), None);
    }
}
