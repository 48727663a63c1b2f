//! A client-side ledger of the adds and removes sent to the API, each with
//! how it ended, in the order they were sent, and its audit against the
//! users a database holds.
//!
//! A user's operations must come from one client, one request at a time,
//! so that their order is the order the service saw them in. An
//! acknowledged operation (a 200 OKAY received) decides the user's state;
//! one in doubt (no answer, a 503) may or may not have taken effect. The
//! audit fails on an acknowledged add missing, an acknowledged remove
//! undone, a hash that verifies no password the user could have (an older
//! add come back over a newer one), and a user no client added.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 200 OKAY answer was received.
    Acknowledged,
    /// No answer, or a 503: committed or not.
    InDoubt,
}

impl Outcome {
    pub fn of(acknowledged: bool) -> Self {
        if acknowledged {
            Self::Acknowledged
        } else {
            Self::InDoubt
        }
    }
}

/// What a user may be in the database: absent, or present with the hash
/// of this password.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Absent,
    Present(String),
}

/// Every user's operations, in the order its client sent them.
#[derive(Default)]
pub struct Ledger {
    users: BTreeMap<String, Vec<(State, Outcome)>>,
}

impl Ledger {
    pub fn add(&mut self, user: &str, password: &str, outcome: Outcome) {
        self.record(user, State::Present(password.to_owned()), outcome);
    }

    pub fn remove(&mut self, user: &str, outcome: Outcome) {
        self.record(user, State::Absent, outcome);
    }

    fn record(&mut self, user: &str, state: State, outcome: Outcome) {
        self.users
            .entry(user.to_owned())
            .or_default()
            .push((state, outcome));
    }

    /// Appends `later`, whose operations were all sent after this ledger's.
    pub fn extend(&mut self, later: Ledger) {
        for (user, operations) in later.users {
            self.users.entry(user).or_default().extend(operations);
        }
    }

    pub fn acknowledged_adds(&self) -> usize {
        self.users
            .values()
            .flatten()
            .filter(|(state, outcome)| {
                *outcome == Outcome::Acknowledged && matches!(state, State::Present(_))
            })
            .count()
    }

    /// The states each user may be in after its operations: the last
    /// acknowledged one's, or any in doubt after it.
    fn possible(operations: &[(State, Outcome)]) -> Vec<&State> {
        let mut states = vec![&State::Absent];
        for (state, outcome) in operations {
            if *outcome == Outcome::Acknowledged {
                states.clear();
            }
            states.push(state);
        }
        states
    }

    /// Checks the ledger against `stored`, every user with its hash.
    pub fn audit(&self, stored: &BTreeMap<String, String>) -> Audit {
        let mut audit = Audit::default();
        for (user, operations) in &self.users {
            let possible = Self::possible(operations);
            let decided = possible.len() == 1;
            match (stored.get(user), decided) {
                (None, _) if possible.contains(&&State::Absent) => {
                    if decided {
                        audit.absent += 1;
                    } else {
                        audit.in_doubt += 1;
                    }
                }
                (None, _) => audit
                    .lost
                    .push(format!("{user}: the acknowledged add is missing")),
                (Some(hash), _) => {
                    let verified = possible.iter().any(|state| match state {
                        State::Present(password) => {
                            registry_rubber::htpasswd::verify(password, hash)
                        }
                        State::Absent => false,
                    });
                    if verified && decided {
                        audit.present += 1;
                    } else if verified {
                        audit.in_doubt += 1;
                    } else if possible.iter().any(|s| matches!(s, State::Present(_))) {
                        audit.lost.push(format!(
                            "{user}: the stored hash verifies no password it may have (an older add came back over a newer one?)"
                        ));
                    } else {
                        audit.lost.push(format!(
                            "{user}: the acknowledged remove is undone, the user is there"
                        ));
                    }
                }
            }
        }
        audit.lost.extend(
            stored
                .keys()
                .filter(|user| !self.users.contains_key(*user))
                .map(|user| format!("{user}: stored, though no client added it")),
        );
        audit
    }
}

/// The ledger checked against the users a database holds.
#[derive(Default)]
pub struct Audit {
    /// Users whose last acknowledged add is there, with a hash that
    /// verifies its password.
    pub present: usize,
    /// Users whose last acknowledged remove holds.
    pub absent: usize,
    /// Users whose state an operation in doubt leaves open, found in one
    /// of the states it allows.
    pub in_doubt: usize,
    /// Acknowledged operations whose effect is not there, hashes that
    /// verify no password the user may have, users nobody added.
    pub lost: Vec<String>,
}

impl Audit {
    /// Users whose state acknowledged operations decided, found in it.
    pub fn checked(&self) -> usize {
        self.present + self.absent
    }

    pub fn assert_nothing_lost(&self, context: &str) {
        assert!(
            self.lost.is_empty(),
            "{} findings (an acknowledged operation lost or undone, a hash that verifies no \
             password the user may have, a user nobody added) against {} acknowledged states \
             found in place; the first:\n{}\n{context}",
            self.lost.len(),
            self.checked(),
            self.lost[..self.lost.len().min(20)].join("\n")
        );
    }
}

/// The audit itself: what it must find.
#[cfg(test)]
mod tests {
    use super::*;

    fn stored(rows: &[(&str, &str)]) -> BTreeMap<String, String> {
        let sha = registry_rubber::htpasswd::HashType::Sha1;
        rows.iter()
            .map(|(user, password)| {
                let hash = registry_rubber::htpasswd::hash(sha, password, 4).unwrap();
                ((*user).to_owned(), hash)
            })
            .collect()
    }

    fn ledger() -> Ledger {
        let mut ledger = Ledger::default();
        ledger.add("u", "first", Outcome::Acknowledged);
        ledger.remove("u", Outcome::Acknowledged);
        ledger.add("u", "second", Outcome::Acknowledged);
        ledger.add("v", "only", Outcome::Acknowledged);
        ledger.remove("v", Outcome::Acknowledged);
        ledger
    }

    #[test]
    fn the_last_acknowledged_state_holds() {
        let audit = ledger().audit(&stored(&[("u", "second")]));
        assert!(audit.lost.is_empty(), "{:?}", audit.lost);
        assert_eq!((audit.present, audit.absent, audit.in_doubt), (1, 1, 0));
    }

    #[test]
    fn an_older_add_come_back_a_remove_undone_or_an_add_lost_is_found() {
        for rows in [
            vec![("u", "first")],
            vec![("u", "second"), ("v", "only")],
            vec![],
            vec![("u", "second"), ("w", "nobody")],
        ] {
            let audit = ledger().audit(&stored(&rows));
            assert_eq!(audit.lost.len(), 1, "{rows:?}: {:?}", audit.lost);
        }
    }

    #[test]
    fn an_operation_in_doubt_allows_both_states() {
        let mut ledger = Ledger::default();
        ledger.add("u", "first", Outcome::Acknowledged);
        ledger.remove("u", Outcome::InDoubt);
        ledger.add("v", "new", Outcome::InDoubt);
        for rows in [
            vec![("u", "first")],
            vec![("u", "first"), ("v", "new")],
            vec![],
        ] {
            let audit = ledger.audit(&stored(&rows));
            assert!(audit.lost.is_empty(), "{rows:?}: {:?}", audit.lost);
            assert_eq!(audit.in_doubt, 2);
        }
        let audit = ledger.audit(&stored(&[("v", "other")]));
        assert_eq!(audit.lost.len(), 1, "{:?}", audit.lost);
    }
}
