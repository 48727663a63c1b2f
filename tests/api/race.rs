//! Many clients adding and removing the same names at once: no 5xx, every
//! acknowledged add of a name of a client's own is present with its
//! password, and every shared name ends as an operation on it left it that
//! no later operation superseded: one acknowledged before the next was sent
//! comes before it, so a remove acknowledged with nothing sent after it
//! leaves the name absent, and an add acknowledged likewise leaves its own
//! password (not an older add's).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use registry_rubber::htpasswd;
use tokio::sync::Mutex;

use crate::helpers::{spawn_app, spawn_app_with};
use registry_rubber::htpasswd::HashType;

const CLIENTS: usize = 32;
const ROUNDS: usize = 30;
const SHARED_NAMES: usize = 6;

/// One acknowledged operation on a shared name: an add with its password,
/// or a remove (None), and when it was sent and acknowledged.
struct Timed {
    password: Option<String>,
    sent: Instant,
    acknowledged: Instant,
}

/// The operations on one name that may have left it as it is: those after
/// whose acknowledgement no operation on the name was sent.
fn unsuperseded(operations: &[Timed]) -> impl Iterator<Item = &Timed> {
    let last_sent = operations.iter().map(|o| o.sent).max();
    operations
        .iter()
        .filter(move |o| last_sent.is_none_or(|last| last <= o.acknowledged))
}

async fn storm(hash_type: HashType) {
    let app = Arc::new(spawn_app_with(|s| s.hash_type = hash_type).await);
    let ledger: Arc<Mutex<HashMap<String, Vec<Timed>>>> = Arc::default();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let app = Arc::clone(&app);
        let ledger = Arc::clone(&ledger);
        tasks.push(tokio::spawn(async move {
            let mut own = Vec::new();
            for round in 0..ROUNDS {
                let shared = format!("shared-{}", (client + round) % SHARED_NAMES);
                let password = format!("pw-{client}-{round}");
                let sent = Instant::now();
                let (a, password_sent) = if round % 3 == 2 {
                    (app.get(&format!("/remove?user={shared}")).await, None)
                } else {
                    (app.add(&shared, &password).await, Some(password.clone()))
                };
                assert_eq!(a.status, 200, "{a:?}");
                ledger.lock().await.entry(shared).or_default().push(Timed {
                    password: password_sent,
                    sent,
                    acknowledged: Instant::now(),
                });
                // A name of this client's own, never removed.
                let mine = format!("own-{client}-{round}");
                let a = app.add(&mine, &password).await;
                assert_eq!(a.status, 200, "{a:?}");
                own.push((mine, password));
            }
            own
        }));
    }
    let mut acknowledged = Vec::new();
    for t in tasks {
        acknowledged.extend(t.await.expect("client task"));
    }
    for (user, password) in &acknowledged {
        let hash = app
            .stored_hash(user)
            .await
            .unwrap_or_else(|| panic!("acknowledged user {user} is missing"));
        assert!(htpasswd::verify(password, &hash), "{user}");
    }
    let ledger = ledger.lock().await;
    let mut shared_present = 0;
    for (name, operations) in ledger.iter() {
        let mut candidates = unsuperseded(operations);
        match app.stored_hash(name).await {
            Some(hash) => {
                shared_present += 1;
                assert!(
                    candidates.any(|o| o
                        .password
                        .as_deref()
                        .is_some_and(|p| htpasswd::verify(p, &hash))),
                    "{name} holds a hash of no add that may have been its last"
                );
            }
            None => assert!(
                candidates.any(|o| o.password.is_none()),
                "{name} is absent, though no remove may have been its last"
            ),
        }
    }
    assert_eq!(
        app.row_count().await as usize,
        acknowledged.len() + shared_present,
        "no row beyond the acknowledged ones"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_adds_and_removes_leave_a_consistent_table() {
    storm(HashType::Sha1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_race_holds_with_a_salted_hash_too() {
    storm(HashType::Md5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_share_commits_and_all_land() {
    let app = Arc::new(spawn_app().await);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let app = Arc::clone(&app);
            tokio::spawn(async move { app.add(&format!("burst-{i}"), "x").await.status })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(app.row_count().await, 200);
}
