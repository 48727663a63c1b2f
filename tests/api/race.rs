//! Many clients adding and removing the same names at once: no 5xx, every
//! acknowledged add that nothing removed afterwards is present, and every
//! stored hash belongs to a password that was sent for that name.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use registry_rubber::htpasswd;
use tokio::sync::Mutex;

use crate::helpers::{spawn_app, spawn_app_with};
use registry_rubber::htpasswd::HashType;

const CLIENTS: usize = 32;
const ROUNDS: usize = 30;
const SHARED_NAMES: usize = 6;

async fn storm(hash_type: HashType) {
    let app = Arc::new(spawn_app_with(|s| s.hash_type = hash_type).await);
    let passwords_sent: Arc<Mutex<HashMap<String, HashSet<String>>>> = Arc::default();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let app = Arc::clone(&app);
        let passwords_sent = Arc::clone(&passwords_sent);
        tasks.push(tokio::spawn(async move {
            let mut own = Vec::new();
            for round in 0..ROUNDS {
                let shared = format!("shared-{}", (client + round) % SHARED_NAMES);
                let password = format!("pw-{client}-{round}");
                passwords_sent
                    .lock()
                    .await
                    .entry(shared.clone())
                    .or_default()
                    .insert(password.clone());
                let a = if round % 3 == 2 {
                    app.get(&format!("/remove?user={shared}")).await
                } else {
                    app.add(&shared, &password).await
                };
                assert_eq!(a.status, 200, "{a:?}");
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
    let sent = passwords_sent.lock().await;
    let mut shared_present = 0;
    for (name, passwords) in sent.iter() {
        if let Some(hash) = app.stored_hash(name).await {
            shared_present += 1;
            assert!(
                passwords.iter().any(|p| htpasswd::verify(p, &hash)),
                "{name} holds a hash of no password sent for it"
            );
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
