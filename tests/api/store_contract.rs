//! The store's contract, one suite for both backends (this binary runs once
//! on SQLite and once on MariaDB): what an add, a remove, a renewal, a sweep,
//! a cleanup and a listing do, how writes share commits, and how a batch
//! isolates the one write that fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use registry_rubber::domain::Username;
use registry_rubber::store::{Create, ListQuery, ListedUser, Store, WriteOp, WriteOutcome};

use crate::helpers::{test_settings, TestDb};

fn u(s: &str) -> Username {
    Username::parse(s).unwrap()
}

/// An add that replaces, living 100 s from `now`.
fn add(user: &str, hash: &str, now: i64) -> WriteOp {
    WriteOp::Add {
        user: u(user),
        hash: hash.into(),
        now,
        expires_at: Some(now + 100),
        scopes: None,
        replace: true,
    }
}

async fn fresh() -> (Arc<TestDb>, Store) {
    let db = Arc::new(TestDb::fresh().await);
    let store = Store::open(&test_settings(&db), Create::IfMissing)
        .await
        .expect("open the store");
    assert_eq!(store.backend_name(), db.backend());
    (db, store)
}

#[tokio::test]
async fn add_replaces_or_refuses_and_remove_says_what_it_found() {
    let (_db, store) = fresh().await;
    assert_eq!(
        store.write(add("taken", "h1", 10)).await.unwrap(),
        WriteOutcome::Added { replaced: false }
    );
    let no_replace = WriteOp::Add {
        user: u("taken"),
        hash: "h2".into(),
        now: 20,
        expires_at: None,
        scopes: None,
        replace: false,
    };
    assert_eq!(
        store.write(no_replace).await.unwrap(),
        WriteOutcome::Conflict
    );
    assert_eq!(
        store.get(&u("taken")).await.unwrap().unwrap().password_hash,
        "h1",
        "an add without replace never overwrites"
    );
    assert_eq!(
        store.write(add("taken", "h1", 10)).await.unwrap(),
        WriteOutcome::Added { replaced: true },
        "replacing with the very same values still reports a replacement"
    );
    let remove = || WriteOp::Remove { user: u("taken") };
    assert_eq!(
        store.write(remove()).await.unwrap(),
        WriteOutcome::Removed { found: true }
    );
    assert_eq!(
        store.write(remove()).await.unwrap(),
        WriteOutcome::Removed { found: false }
    );
    assert!(store.get(&u("taken")).await.unwrap().is_none());
}

#[tokio::test]
async fn names_differ_by_case() {
    let (_db, store) = fresh().await;
    store.write(add("Case", "upper", 1000)).await.unwrap();
    store.write(add("case", "lower", 1000)).await.unwrap();
    assert_eq!(
        store.get(&u("Case")).await.unwrap().unwrap().password_hash,
        "upper"
    );
    assert_eq!(
        store.get(&u("case")).await.unwrap().unwrap().password_hash,
        "lower"
    );
}

#[tokio::test]
async fn renew_extends_live_users_only_within_the_lifetime() {
    let (_db, store) = fresh().await;
    store.write(add("live", "h", 1000)).await.unwrap(); // expires 1100
    let renew = |user: &str, now, ttl| WriteOp::Renew {
        user: u(user),
        now,
        ttl,
        max_lifetime: 500,
    };
    assert_eq!(
        store.write(renew("live", 1050, 200)).await.unwrap(),
        WriteOutcome::Renewed {
            expires_at: Some(1250),
            limited: false
        }
    );
    assert_eq!(
        store.write(renew("live", 1200, 1000)).await.unwrap(),
        WriteOutcome::Renewed {
            expires_at: Some(1500),
            limited: true
        },
        "held to created_at + max_lifetime"
    );
    assert_eq!(
        store.write(renew("live", 1210, 1)).await.unwrap(),
        WriteOutcome::Renewed {
            expires_at: Some(1500),
            limited: false
        },
        "a renewal never shortens"
    );
    assert_eq!(
        store.get(&u("live")).await.unwrap().unwrap().expires_at,
        Some(1500),
        "the expiry is stored"
    );
    assert_eq!(
        store.write(renew("live", 1500, 10)).await.unwrap(),
        WriteOutcome::NotLive,
        "expired at its expiry second"
    );
    assert_eq!(
        store.write(renew("nobody", 0, 1)).await.unwrap(),
        WriteOutcome::NotLive
    );
}

#[tokio::test]
async fn sweep_and_cleanup_remove_in_bounded_batches_and_spare_the_live() {
    let (_db, store) = fresh().await;
    for i in 0..25 {
        store.write(add(&format!("old-{i}"), "h", 0)).await.unwrap(); // expires 100
    }
    store.write(add("young", "h", 1000)).await.unwrap(); // expires 1100
    let sweep = |limit| WriteOp::Sweep { now: 100, limit };
    for removed in [10, 10, 5, 0] {
        assert_eq!(
            store.write(sweep(10)).await.unwrap(),
            WriteOutcome::Swept { removed }
        );
    }
    assert_eq!(store.count().await.unwrap(), 1);
    assert_eq!(store.count_live(100).await.unwrap(), 1);
    assert_eq!(
        store.count_live(1100).await.unwrap(),
        0,
        "expired at its expiry second"
    );
    let cleanup = |cutoff| WriteOp::Cleanup {
        cutoff,
        limit: 1000,
    };
    assert_eq!(
        store.write(cleanup(1000)).await.unwrap(),
        WriteOutcome::CleanedUp { removed: 0 },
        "created at the cutoff: kept"
    );
    assert_eq!(
        store.write(cleanup(1001)).await.unwrap(),
        WriteOutcome::CleanedUp { removed: 1 }
    );
}

#[tokio::test]
async fn list_filters_by_prefix_pages_and_hides_the_expired() {
    let (_db, store) = fresh().await;
    for name in ["ci-a", "ci-b", "ci-c", "ci_d", "cj", "other"] {
        store.write(add(name, "h", 1000)).await.unwrap();
    }
    store.write(add("ci-old", "h", 0)).await.unwrap();
    let names = |v: Vec<ListedUser>| v.into_iter().map(|u| u.username).collect::<Vec<_>>();
    let q = |prefix: &str, after: Option<&str>, limit| ListQuery {
        prefix: prefix.into(),
        after: after.map(Into::into),
        limit,
        now: 500,
    };
    assert_eq!(
        names(store.list(q("ci-", None, 10)).await.unwrap()),
        ["ci-a", "ci-b", "ci-c"]
    );
    assert_eq!(
        names(store.list(q("ci", None, 2)).await.unwrap()),
        ["ci-a", "ci-b"]
    );
    assert_eq!(
        names(store.list(q("ci", Some("ci-b"), 10)).await.unwrap()),
        ["ci-c", "ci_d"]
    );
    assert_eq!(store.list(q("", None, 100)).await.unwrap().len(), 6);
    assert_eq!(
        store.list(q("cj", None, 1)).await.unwrap(),
        [ListedUser {
            username: "cj".into(),
            created_at: 1000,
            expires_at: Some(1100),
            scopes: None,
        }]
    );
}

#[tokio::test]
async fn concurrent_writes_share_commits() {
    let (_db, store) = fresh().await;
    let before = store.commit_count();
    let writes: Vec<_> = (0..300)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.write(add(&format!("u{i}"), "h", 1)).await })
        })
        .collect();
    for w in writes {
        assert_eq!(
            w.await.unwrap().unwrap(),
            WriteOutcome::Added { replaced: false }
        );
    }
    assert_eq!(store.count().await.unwrap(), 300);
    let commits = store.commit_count() - before;
    assert!(
        (1..300).contains(&commits),
        "{commits} commits for 300 writes"
    );
}

#[tokio::test]
async fn a_batch_commits_every_job_in_order() {
    let (db, store) = fresh().await;
    // The three queue behind the held writers, so that they share one batch.
    let (lock, held) = blocked_writers(&db, &store).await;
    let commits = store.commit_count();
    let release = async {
        until_queued(&store, 3, |n| n == 3).await;
        lock.release().await;
    };
    let (a, b, c, ()) = tokio::join!(
        store.write(add("a", "h1", 10)),
        store.write(add("a", "h2", 20)),
        store.write(WriteOp::Cleanup {
            cutoff: 15,
            limit: 10
        }),
        release,
    );
    let held_writes = held.len();
    held.added().await;
    assert_eq!(
        store.commit_count(),
        commits + held_writes + 1,
        "the held writes, then the three in one batch"
    );
    assert_eq!(a.unwrap(), WriteOutcome::Added { replaced: false });
    assert_eq!(b.unwrap(), WriteOutcome::Added { replaced: true });
    // created_at was refreshed to 20 by the replacement, so the cleanup
    // queued after it keeps the user (run before it, it would remove it).
    assert_eq!(c.unwrap(), WriteOutcome::CleanedUp { removed: 0 });
    let row = store.get(&u("a")).await.unwrap().unwrap();
    assert_eq!((row.password_hash.as_str(), row.created_at), ("h2", 20));
}

/// Waits until the writes queued behind the writer, `n` in the end, meet
/// `done`.
async fn until_queued(store: &Store, n: usize, done: impl Fn(usize) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(store.queued()) {
        assert!(
            Instant::now() < deadline,
            "{} of {n} writes queued",
            store.queued()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every writer holding one write (`first0`, `first1`, ..., created at 1000),
/// blocked behind a write lock of the test's own: what is queued meanwhile
/// waits, and the first writer free takes it all as one batch once the lock
/// is released.
async fn blocked_writers(db: &TestDb, store: &Store) -> (crate::helpers::WriteLock, Held) {
    let lock = db.hold_write_lock().await;
    let mut held = Vec::new();
    for i in 0..store.writers() {
        let taken = store.taken_count();
        held.push(tokio::spawn({
            let store = store.clone();
            async move { store.write(add(&format!("first{i}"), "h", 1_000)).await }
        }));
        // Taken alone: the writers before it are blocked.
        let deadline = Instant::now() + Duration::from_secs(20);
        while store.taken_count() == taken {
            assert!(Instant::now() < deadline, "no writer took the write");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(store.taken_count(), taken + 1);
    }
    (lock, Held(held))
}

/// The writes [`blocked_writers`] holds.
struct Held(Vec<tokio::task::JoinHandle<Result<WriteOutcome, registry_rubber::store::StoreError>>>);

impl Held {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    /// Waits for each; every one must have been added.
    async fn added(self) {
        for write in self.0 {
            assert_eq!(
                write.await.unwrap().unwrap(),
                WriteOutcome::Added { replaced: false }
            );
        }
    }
}

#[tokio::test]
async fn one_failing_write_does_not_fail_the_batch_it_shares() {
    let (db, store) = fresh().await;
    db.install_poison_trigger().await;
    // The writers block on their first writes while the lock is held, and
    // the next five queue up behind them: they are committed as one batch.
    let (lock, held) = blocked_writers(&db, &store).await;
    let names = ["a", "b", "poison", "c", "d"];
    let writes: Vec<_> = names
        .into_iter()
        .map(|name| {
            let store = store.clone();
            tokio::spawn(async move { (name, store.write(add(name, "h", 1)).await) })
        })
        .collect();
    until_queued(&store, names.len(), |n| n == names.len()).await;
    let (splits, commits) = (store.split_count(), store.commit_count());
    lock.release().await;
    let held_writes = held.len();
    held.added().await;
    for w in writes {
        let (name, result) = w.await.unwrap();
        assert_eq!(result.is_err(), name == "poison", "{name}: {result:?}");
    }
    assert_eq!(
        store.split_count(),
        splits + 1,
        "the five shared one batch, which was split once"
    );
    assert_eq!(
        store.commit_count(),
        commits + held_writes + 4,
        "the held writes, then each of the four good writes of the split batch"
    );
    assert_eq!(store.count().await.unwrap(), held_writes + 4);
    assert!(store.get(&u("poison")).await.unwrap().is_none());
    // The writer is not left inside a transaction.
    store.write(add("after", "h", 1)).await.unwrap();
    store.ping().await.unwrap();
}

/// An add that never replaces, living 100 s from `now`.
fn add_new(user: &str, hash: &str, now: i64) -> WriteOp {
    WriteOp::Add {
        user: u(user),
        hash: hash.into(),
        now,
        expires_at: Some(now + 100),
        scopes: None,
        replace: false,
    }
}

#[tokio::test]
async fn adds_sharing_a_batch_get_the_answers_they_would_get_alone() {
    adds_sharing_a_batch(false).await;
}

#[tokio::test]
async fn replacing_adds_sharing_a_batch_get_the_answers_they_would_get_alone() {
    adds_sharing_a_batch(true).await;
}

/// Forty-five adds that all `replace` or all do not queue behind a held
/// writer and commit in one transaction: new names, a name taken, a name
/// freed by a deletion that left its refresh token behind, and one name
/// twice. Each gets the answer it would get alone.
async fn adds_sharing_a_batch(replace: bool) {
    let (db, store) = fresh().await;
    let write = |name: &str, hash: &str, now: i64| {
        let mut op = add_new(name, hash, now);
        if let WriteOp::Add { replace: r, .. } = &mut op {
            *r = replace;
        }
        op
    };
    store.write(add_new("taken", "old", 1)).await.unwrap();
    store.write(add_new("reused", "old", 1)).await.unwrap();
    for (n, user) in [(7, "reused"), (8, "taken")] {
        store
            .write(WriteOp::IssueRefresh {
                digest: format!("{n:064x}"),
                user: u(user),
                service: "registry".into(),
                issued_at: 1,
                credential: "c".repeat(64),
            })
            .await
            .unwrap();
    }
    db.execute("DELETE FROM users WHERE username = 'reused'")
        .await;
    let (lock, held) = blocked_writers(&db, &store).await;
    let mut names: Vec<String> = (0..40).map(|i| format!("n{i:02}")).collect();
    names.extend(["taken", "reused", "twice", "twice", "n40"].map(String::from));
    let writes: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (store, name, op) = (
                store.clone(),
                name.clone(),
                write(name, &format!("h{i}"), 5),
            );
            tokio::spawn(async move { (name, format!("h{i}"), store.write(op).await) })
        })
        .collect();
    until_queued(&store, names.len(), |n| n == names.len()).await;
    let (splits, commits) = (store.split_count(), store.commit_count());
    lock.release().await;
    let held_writes = held.len();
    held.added().await;
    let (added, kept) = (
        WriteOutcome::Added { replaced: false },
        WriteOutcome::Conflict,
    );
    let mut twice = Vec::new();
    for w in writes {
        let (name, hash, result) = w.await.unwrap();
        let outcome = result.unwrap();
        match name.as_str() {
            "taken" if replace => {
                assert_eq!(outcome, WriteOutcome::Added { replaced: true }, "{name}");
            }
            "taken" => assert_eq!(outcome, kept, "{name}"),
            "twice" => twice.push((outcome, hash)),
            _ => {
                assert_eq!(outcome, added, "{name}");
                let row = store.get(&u(&name)).await.unwrap().unwrap();
                assert_eq!((row.password_hash, row.created_at), (hash, 5), "{name}");
            }
        }
    }
    assert_eq!(
        (store.commit_count(), store.split_count()),
        (commits + held_writes + 1, splits),
        "the held writes, then the forty-five in one transaction"
    );
    // The second add of one name: a replacement, or refused.
    twice.sort_by_key(|(outcome, _)| *outcome != added);
    let second = if replace {
        WriteOutcome::Added { replaced: true }
    } else {
        kept
    };
    assert_eq!(
        (twice[0].0, twice[1].0),
        (added, second),
        "the two adds of one name"
    );
    let last = if replace { &twice[1].1 } else { &twice[0].1 };
    assert_eq!(
        &store.get(&u("twice")).await.unwrap().unwrap().password_hash,
        last
    );
    let taken = store.get(&u("taken")).await.unwrap().unwrap();
    assert_eq!(
        taken.password_hash == "old",
        !replace,
        "a taken name is replaced only when asked: {}",
        taken.password_hash
    );
    // A credential written anew starts with no refresh token; one kept
    // keeps its own.
    assert!(store
        .refresh(&format!("{:064x}", 7))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store
            .refresh(&format!("{:064x}", 8))
            .await
            .unwrap()
            .is_none(),
        replace
    );
    assert_eq!(store.count().await.unwrap(), 1 + 1 + 41 + 1 + held_writes);
}

#[tokio::test]
async fn close_commits_what_was_queued_and_refuses_what_follows() {
    use registry_rubber::store::StoreError;
    let (db, store) = fresh().await;
    // Fifty writes queued while the writers are held, then the close, then
    // ten more: the fifty are committed, the ten refused.
    let (lock, held) = blocked_writers(&db, &store).await;
    let spawn_writes = |prefix: &'static str| -> Vec<_> {
        (0..if prefix == "q" { 50 } else { 10 })
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.write(add(&format!("{prefix}{i}"), "h", 1)).await })
            })
            .collect()
    };
    let queued = spawn_writes("q");
    until_queued(&store, 50, |n| n == 50).await;
    let close = tokio::spawn({
        let store = store.clone();
        async move { store.close().await }
    });
    until_queued(&store, 51, |n| n == 51).await;
    let late = spawn_writes("late");
    until_queued(&store, 61, |n| n == 61).await;
    lock.release().await;
    close.await.unwrap();
    let held_writes = held.len();
    held.added().await;
    for w in queued {
        assert_eq!(
            w.await.unwrap().unwrap(),
            WriteOutcome::Added { replaced: false },
            "a write queued before the close is committed"
        );
    }
    for w in late {
        let result = w.await.unwrap();
        assert!(
            matches!(result, Err(StoreError::WriterGone)),
            "a write queued after the close is refused: {result:?}"
        );
    }
    assert_eq!(
        db.row_count().await,
        50 + held_writes as i64,
        "every acknowledged write, and only those"
    );
    assert!(matches!(
        store.write(WriteOp::Ping).await,
        Err(StoreError::WriterGone)
    ));
}

#[tokio::test]
async fn live_credentials_are_the_live_users_with_the_next_expiry() {
    let (_db, store) = fresh().await;
    store.write(add("b-live", "hb", 1000)).await.unwrap(); // expires 1100
    store.write(add("a-live", "ha", 1050)).await.unwrap(); // expires 1150
    store.write(add("gone", "hg", 0)).await.unwrap(); // expires 100
    let view = store.live_credentials(500).await.unwrap();
    assert_eq!(
        view.users,
        [
            ("a-live".to_owned(), "ha".to_owned()),
            ("b-live".to_owned(), "hb".to_owned())
        ]
    );
    assert_eq!(view.next_expiry, Some(1100));
    let later = store.live_credentials(1100).await.unwrap();
    assert_eq!(later.users.len(), 1, "expired at its expiry second");
    assert_eq!(later.next_expiry, Some(1150));
    assert_eq!(
        store.live_credentials(1150).await.unwrap().next_expiry,
        None
    );
}

#[tokio::test]
async fn scopes_are_stored_and_refresh_tokens_die_with_their_credential() {
    let (_db, store) = fresh().await;
    let with_scopes = |user: &str, hash: &str, scopes: Option<&str>| WriteOp::Add {
        user: u(user),
        hash: hash.into(),
        now: 1000,
        expires_at: Some(2000),
        scopes: scopes.map(Into::into),
        replace: true,
    };
    store
        .write(with_scopes(
            "scoped",
            "h1",
            Some("repository:team/app:pull"),
        ))
        .await
        .unwrap();
    let row = store.get(&u("scoped")).await.unwrap().unwrap();
    assert_eq!(row.scopes.as_deref(), Some("repository:team/app:pull"));
    let listed = store
        .list(ListQuery {
            prefix: "scoped".into(),
            after: None,
            limit: 10,
            now: 1000,
        })
        .await
        .unwrap();
    assert_eq!(
        listed[0].scopes.as_deref(),
        Some("repository:team/app:pull")
    );
    let issue = |digest: &str, user: &str| WriteOp::IssueRefresh {
        digest: digest.into(),
        user: u(user),
        service: "registry".into(),
        issued_at: 1001,
        credential: "c".repeat(64),
    };
    assert_eq!(
        store.write(issue(&"a".repeat(64), "scoped")).await.unwrap(),
        WriteOutcome::RefreshIssued
    );
    let found = store.refresh(&"a".repeat(64)).await.unwrap().unwrap();
    assert_eq!(
        (
            found.username.as_str(),
            found.service.as_str(),
            found.issued_at
        ),
        ("scoped", "registry", 1001)
    );
    assert_eq!(found.credential, "c".repeat(64));
    // A replacement revokes the refresh tokens of the old password.
    store
        .write(with_scopes("scoped", "h2", None))
        .await
        .unwrap();
    assert!(store.refresh(&"a".repeat(64)).await.unwrap().is_none());
    assert_eq!(store.get(&u("scoped")).await.unwrap().unwrap().scopes, None);
    // So does a removal.
    store.write(issue(&"b".repeat(64), "scoped")).await.unwrap();
    store
        .write(WriteOp::Remove { user: u("scoped") })
        .await
        .unwrap();
    assert!(store.refresh(&"b".repeat(64)).await.unwrap().is_none());
    // And a sweep or a cleanup takes those of the users it deletes.
    store.write(with_scopes("swept", "h", None)).await.unwrap();
    store.write(issue(&"d".repeat(64), "swept")).await.unwrap();
    store
        .write(WriteOp::Sweep {
            now: 2000,
            limit: 10,
        })
        .await
        .unwrap();
    assert!(store.refresh(&"d".repeat(64)).await.unwrap().is_none());
}

#[tokio::test]
async fn a_new_credential_inherits_no_refresh_token_and_one_holds_a_bounded_number() {
    let (db, store) = fresh().await;
    let add = |replace: bool| WriteOp::Add {
        user: u("builder"),
        hash: "{SHA}same".into(),
        now: 1000,
        expires_at: Some(2000),
        scopes: None,
        replace,
    };
    let issue = |n: usize| WriteOp::IssueRefresh {
        digest: format!("{n:064x}"),
        user: u("builder"),
        service: "registry".into(),
        issued_at: 1000 + n as i64,
        credential: "c".repeat(64),
    };
    store.write(add(false)).await.unwrap();
    let limit = registry_rubber::store::MAX_REFRESH_TOKENS as usize;
    for n in 0..limit + 3 {
        store.write(issue(n)).await.unwrap();
    }
    // The oldest beyond the limit are gone, the newest kept.
    for n in 0..3 {
        assert!(
            store.refresh(&format!("{n:064x}")).await.unwrap().is_none(),
            "{n}"
        );
    }
    for n in 3..limit + 3 {
        assert!(
            store.refresh(&format!("{n:064x}")).await.unwrap().is_some(),
            "{n}"
        );
    }
    // Rows left behind by a deletion that did not take them (another
    // writer, a cleanup cut short) do not count for a credential added
    // again under the same name, with the same hash and creation time.
    store.write(issue(100)).await.unwrap();
    db.execute("DELETE FROM users WHERE username = 'builder'")
        .await;
    assert!(store
        .refresh(&format!("{:064x}", 100))
        .await
        .unwrap()
        .is_some());
    store.write(add(false)).await.unwrap();
    assert!(store
        .refresh(&format!("{:064x}", 100))
        .await
        .unwrap()
        .is_none());
    store.write(issue(101)).await.unwrap();
    store.write(add(true)).await.unwrap();
    assert!(store
        .refresh(&format!("{:064x}", 101))
        .await
        .unwrap()
        .is_none());
}
