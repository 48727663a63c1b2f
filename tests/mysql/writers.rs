//! The writers on a real MariaDB: a batch that loses a lock wait is run
//! again in a transaction of its own, never inside what is left of the
//! failed attempt's, connections the server dropped are opened again
//! without failing a health check, and instances replacing and renewing the
//! same names at once all get their answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use registry_rubber::domain::Username;
use registry_rubber::store::{Create, Store, WriteOp, WriteOutcome};

use crate::helpers::{test_settings, TestDb};
use crate::mariadb::MariaDb;
use crate::{database_on, pool};

/// A server of the test's own, a fresh database on it, and the store.
async fn started() -> (MariaDb, Arc<TestDb>, Store) {
    let server = MariaDb::start();
    let db = database_on(&server).await;
    let store = Store::open(&test_settings(&db), Create::Never)
        .await
        .expect("open the store");
    (server, db, store)
}

#[tokio::test]
async fn a_batch_that_lost_a_lock_wait_runs_again_from_a_clean_transaction() {
    let (_server, db, store) = started().await;
    // A refresh token of a user "b" that is gone, its row locked by the
    // test: adding "b" inserts the user, then waits on that row to delete
    // it, until the writer's lock wait (2 s) fails the statement. A lock
    // wait timeout undoes that statement only: the insert stays in the
    // failed attempt's transaction unless the writer rolls it back.
    let digest = "0".repeat(64);
    sqlx::query(
        "INSERT INTO users_refresh (digest, username, service, issued_at, credential)
         VALUES (?, 'b', 'registry', 1, ?)",
    )
    .bind(&digest)
    .bind("c".repeat(64))
    .execute(pool(&db))
    .await
    .unwrap();
    let mut lock = pool(&db).begin().await.unwrap();
    sqlx::query("SELECT digest FROM users_refresh WHERE username = 'b' FOR UPDATE")
        .fetch_all(&mut *lock)
        .await
        .unwrap();
    let started = Instant::now();
    let add = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .write(WriteOp::Add {
                    user: Username::parse("b").unwrap(),
                    hash: "h".into(),
                    now: 1,
                    expires_at: None,
                    scopes: None,
                    replace: false,
                })
                .await
        }
    });
    // Past the first attempt's lock wait; the second waits in turn.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!add.is_finished(), "the add waits for the locked row");
    lock.rollback().await.unwrap();
    let outcome = add
        .await
        .unwrap()
        .expect("the add commits once the row is free");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(
        outcome,
        WriteOutcome::Added { replaced: false },
        "run again from scratch, the add finds the name free"
    );
    assert_eq!(store.count().await.unwrap(), 1);
    assert!(store.refresh(&digest).await.unwrap().is_none());
    // Nothing of an attempt is left open on the writers: a write after it
    // commits alone.
    store
        .write(WriteOp::Remove {
            user: Username::parse("b").unwrap(),
        })
        .await
        .unwrap();
    assert_eq!(store.count().await.unwrap(), 0);
}

#[tokio::test]
async fn the_health_check_opens_again_the_connections_the_server_dropped() {
    let (_server, db, store) = started().await;
    store.ping().await.expect("healthy");
    // What wait_timeout or a server restart does to idle connections.
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM information_schema.processlist
         WHERE db = DATABASE() AND id <> CONNECTION_ID()",
    )
    .fetch_all(pool(&db))
    .await
    .unwrap();
    assert!(ids.len() >= 2, "the writers' connections are open: {ids:?}");
    for id in ids {
        sqlx::query(&format!("KILL {id}"))
            .execute(pool(&db))
            .await
            .unwrap();
    }
    // Each writer finds its connection gone with a batch of its own: one
    // health check each, and then some.
    for _ in 0..4 {
        store
            .ping()
            .await
            .expect("a dropped connection is opened again, not reported");
    }
}

#[tokio::test]
async fn instances_replacing_and_renewing_the_same_names_at_once_all_get_an_answer() {
    // Two instances, each with its writers, replace and renew the same
    // names at once, many times. A batch's first INSERT finds the names
    // taken and leaves shared locks, which its SELECT ... FOR UPDATE then
    // makes exclusive, while renewals and the other replacements ask for
    // the same rows: the transactions InnoDB picks as a deadlock's victim
    // run again, locking first. Every write is acknowledged; each row holds
    // a replacement.
    let (_server, db, first) = started().await;
    let second = Store::open(&test_settings(&db), Create::Never)
        .await
        .expect("open the second instance");
    let names: Vec<Username> = (0..8)
        .map(|n| Username::parse(&format!("shared-{n}")).unwrap())
        .collect();
    let add = |user: &Username, hash: String| WriteOp::Add {
        user: user.clone(),
        hash,
        now: 1,
        expires_at: None,
        scopes: None,
        replace: true,
    };
    let renew = |user: &Username| WriteOp::Renew {
        user: user.clone(),
        now: 2,
        ttl: 60,
        max_lifetime: 0,
    };
    for user in &names {
        first.write(add(user, "first".into())).await.unwrap();
    }
    let mut writes = Vec::new();
    for round in 0..40 {
        for (instance, store) in [&first, &second].into_iter().enumerate() {
            for user in &names {
                let op = if round % 4 == 3 && instance == 1 {
                    renew(user)
                } else {
                    add(user, format!("{instance}-{round}"))
                };
                let store = store.clone();
                writes.push(tokio::spawn(async move { store.write(op).await }));
            }
        }
    }
    for write in writes {
        let outcome = write.await.unwrap().expect("every write is acknowledged");
        assert!(
            matches!(
                outcome,
                WriteOutcome::Added { replaced: true }
                    | WriteOutcome::Renewed {
                        expires_at: None,
                        limited: false
                    }
            ),
            "{outcome:?}"
        );
    }
    for user in &names {
        let row = first.get(user).await.unwrap().expect("the row is there");
        assert!(
            row.password_hash.contains('-'),
            "{}: one of the replacements, not {}",
            user.as_str(),
            row.password_hash
        );
    }
    assert_eq!(first.count().await.unwrap(), names.len() as u64);
}
