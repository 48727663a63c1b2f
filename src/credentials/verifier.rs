//! What a door needs to check a password cheaply and without telling who
//! exists: a dummy hash in the configured format, checked whenever there is
//! no live user to check against, and a bounded cache of successful checks.
//!
//! The cache is keyed by the stored hash and a keyed digest (HMAC-SHA-256
//! under a key drawn at start and never stored) of the password: it holds no
//! password and nothing a stolen memory image could test guesses against
//! offline without the key. Because the stored hash is part of the key, a
//! replaced password, a removed user re-added, or any other change of the row
//! misses the cache; and because the row itself is read on every check, a
//! removal or an expiry takes effect on the very next request.

use std::collections::HashSet;
use std::sync::Mutex;

use ring::hmac;
use ring::rand::SystemRandom;

type Digest = [u8; 32];

/// Successful verifications, at most `capacity`, in two generations: when
/// the newer fills half the capacity it becomes the older and the old older
/// is dropped. An entry found in the older is moved to the newer, so that
/// what is in use stays and what is not ages out (an approximate LRU at the
/// cost of one hash-set lookup or two).
pub struct VerifyCache {
    key: hmac::Key,
    generation: usize,
    sets: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    newer: HashSet<Digest>,
    older: HashSet<Digest>,
}

impl VerifyCache {
    /// A cache of at most `capacity` entries, or None for 0.
    pub fn new(capacity: usize) -> Option<Self> {
        if capacity == 0 {
            return None;
        }
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new()).ok()?;
        Some(Self {
            key,
            generation: (capacity / 2).max(1),
            sets: Mutex::new(Generations::default()),
        })
    }

    /// The cache key of `password` checked against `stored`.
    pub fn digest(&self, stored: &str, password: &str) -> Digest {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&(stored.len() as u64).to_be_bytes());
        ctx.update(stored.as_bytes());
        ctx.update(password.as_bytes());
        let mut out = [0; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Whether `digest` was remembered as a success.
    pub fn contains(&self, digest: &Digest) -> bool {
        let Ok(mut sets) = self.sets.lock() else {
            return false;
        };
        if sets.newer.contains(digest) {
            return true;
        }
        if sets.older.remove(digest) {
            self.insert_locked(&mut sets, *digest);
            return true;
        }
        false
    }

    /// Remembers a success.
    pub fn insert(&self, digest: Digest) {
        if let Ok(mut sets) = self.sets.lock() {
            self.insert_locked(&mut sets, digest);
        }
    }

    fn insert_locked(&self, sets: &mut Generations, digest: Digest) {
        sets.newer.insert(digest);
        if sets.newer.len() >= self.generation {
            sets.older = std::mem::take(&mut sets.newer);
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.sets
            .lock()
            .map_or(0, |s| s.newer.len() + s.older.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_depend_on_hash_and_password_and_the_process_key() {
        let cache = VerifyCache::new(10).unwrap();
        let d = cache.digest("$apr1$a$b", "pw");
        assert_eq!(d, cache.digest("$apr1$a$b", "pw"));
        assert_ne!(d, cache.digest("$apr1$a$c", "pw"), "another stored hash");
        assert_ne!(d, cache.digest("$apr1$a$b", "pw2"), "another password");
        // The length prefix keeps hash and password apart.
        assert_ne!(cache.digest("ab", "c"), cache.digest("a", "bc"));
        let other = VerifyCache::new(10).unwrap();
        assert_ne!(d, other.digest("$apr1$a$b", "pw"), "a key of its own");
    }

    #[test]
    fn the_cache_is_bounded_and_keeps_what_is_used() {
        let cache = VerifyCache::new(4).unwrap();
        let d = |i: u8| [i; 32];
        cache.insert(d(1));
        for i in 2..50 {
            assert!(cache.contains(&d(1)), "in use, kept (round {i})");
            cache.insert(d(i));
            assert!(cache.len() <= 4, "{} entries", cache.len());
        }
        assert!(!cache.contains(&d(2)), "unused, aged out");
        assert!(VerifyCache::new(0).is_none(), "0 turns it off");
    }
}
