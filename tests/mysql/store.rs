//! The store's semantics on MySQL/MariaDB, the same as on SQLite (see the
//! unit tests beside src/store/sqlite.rs): replace or refuse on add, renew
//! within the lifetime, sweeping in bounded batches, listing by prefix, and
//! one batch committing its jobs in order.

use registry_rubber::domain::Username;
use registry_rubber::store::{Create, ListQuery, ListedUser, Store, WriteOp, WriteOutcome};

use crate::database_on;
use crate::helpers::test_settings;
use crate::mariadb::MariaDb;

fn u(s: &str) -> Username {
    Username::parse(s).unwrap()
}

fn add(user: &str, hash: &str, now: i64) -> WriteOp {
    WriteOp::Add {
        user: u(user),
        hash: hash.into(),
        now,
        expires_at: Some(now + 100),
        replace: true,
    }
}

#[tokio::test]
async fn the_store_behaves_as_on_sqlite() {
    let server = MariaDb::start();
    let db = database_on(&server).await;
    let store = Store::open(&test_settings(&db), Create::Never)
        .await
        .expect("open");
    assert_eq!(store.backend_name(), "mysql");
    store.ping().await.expect("healthy");

    // An add without replace never overwrites; with replace it does.
    assert_eq!(
        store.write(add("taken", "h1", 10)).await.unwrap(),
        WriteOutcome::Added { replaced: false }
    );
    let outcome = store
        .write(WriteOp::Add {
            user: u("taken"),
            hash: "h2".into(),
            now: 20,
            expires_at: None,
            replace: false,
        })
        .await
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Conflict);
    assert_eq!(
        store.get(&u("taken")).await.unwrap().unwrap().password_hash,
        "h1"
    );
    // Replacing with the very same values still reports a replacement.
    assert_eq!(
        store.write(add("taken", "h1", 10)).await.unwrap(),
        WriteOutcome::Added { replaced: true }
    );
    assert_eq!(
        store
            .write(WriteOp::Remove { user: u("taken") })
            .await
            .unwrap(),
        WriteOutcome::Removed { found: true }
    );
    assert_eq!(
        store
            .write(WriteOp::Remove { user: u("taken") })
            .await
            .unwrap(),
        WriteOutcome::Removed { found: false }
    );

    // Renew extends live users only, within the lifetime.
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
        }
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
        store.write(renew("live", 1500, 10)).await.unwrap(),
        WriteOutcome::NotLive
    );
    assert_eq!(
        store.write(renew("nobody", 0, 1)).await.unwrap(),
        WriteOutcome::NotLive
    );

    // Names differ by case.
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
    store
        .write(WriteOp::Remove { user: u("Case") })
        .await
        .unwrap();
    store
        .write(WriteOp::Remove { user: u("case") })
        .await
        .unwrap();
    store
        .write(WriteOp::Remove { user: u("live") })
        .await
        .unwrap();

    // Sweeping goes in bounded batches and spares the live.
    for i in 0..25 {
        store.write(add(&format!("old-{i}"), "h", 0)).await.unwrap(); // expires 100
    }
    store.write(add("young", "h", 1000)).await.unwrap(); // expires 1100
    let sweep = |limit| WriteOp::Sweep { now: 100, limit };
    for removed in [10, 10, 5] {
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
    assert_eq!(
        store
            .write(WriteOp::Cleanup {
                cutoff: 1001,
                limit: 1000,
            })
            .await
            .unwrap(),
        WriteOutcome::CleanedUp { removed: 1 }
    );

    // Listing filters by prefix, pages, and hides the expired.
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
    let listed = store.list(q("cj", None, 1)).await.unwrap();
    assert_eq!(
        listed,
        [ListedUser {
            username: "cj".into(),
            created_at: 1000,
            expires_at: Some(1100)
        }]
    );
}

#[tokio::test]
async fn a_batch_commits_every_job_in_order_and_isolates_a_failing_one() {
    let server = MariaDb::start();
    let db = database_on(&server).await;
    let store = Store::open(&test_settings(&db), Create::Never)
        .await
        .expect("open");
    let (a, b, c) = tokio::join!(
        store.write(add("a", "h1", 10)),
        store.write(add("a", "h2", 20)),
        store.write(WriteOp::Cleanup {
            cutoff: 15,
            limit: 10,
        }),
    );
    assert_eq!(a.unwrap(), WriteOutcome::Added { replaced: false });
    assert_eq!(b.unwrap(), WriteOutcome::Added { replaced: true });
    // created_at was refreshed to 20 by the replacement, so the cleanup
    // queued after it keeps the user.
    assert_eq!(c.unwrap(), WriteOutcome::CleanedUp { removed: 0 });
    let row = store.get(&u("a")).await.unwrap().unwrap();
    assert_eq!((row.password_hash.as_str(), row.created_at), ("h2", 20));

    // A hash too long for its column fails its own job only; the jobs
    // batched with it commit.
    let (good, bad, also_good) = tokio::join!(
        store.write(add("before-bad", "h", 10)),
        store.write(add("bad", &"x".repeat(300), 10)),
        store.write(add("after-bad", "h", 10)),
    );
    assert!(bad.is_err(), "{bad:?}");
    assert_eq!(good.unwrap(), WriteOutcome::Added { replaced: false });
    assert_eq!(also_good.unwrap(), WriteOutcome::Added { replaced: false });
    assert!(store.get(&u("bad")).await.unwrap().is_none());
    assert_eq!(store.count().await.unwrap(), 3);
    assert_eq!(store.error_count(), 1);
}
