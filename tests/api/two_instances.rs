//! Two service instances on one database, as behind a load balancer: each
//! with its own writer, both adding and removing the same names at once.
//! Every OKAY is committed and visible to the other instance at once, and the
//! table ends consistent.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use registry_rubber::domain::Username;
use registry_rubber::htpasswd;
use tokio::sync::Mutex;

use crate::helpers::{spawn_app, spawn_second_app};

const CLIENTS: usize = 16;
const ROUNDS: usize = 24;
const SHARED_NAMES: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_database_stay_consistent() {
    let a = Arc::new(spawn_app().await);
    let b = Arc::new(spawn_second_app(&a).await);

    // What one instance writes, the other reads at once.
    a.add("seen-by-b", "x")
        .await
        .assert_envelope("add", 200, "Added user seen-by-b");
    let listed = b.get("/list?prefix=seen-by-").await;
    assert_eq!(listed.body["users"][0]["user"], "seen-by-b", "{listed:?}");
    let r = b.get("/remove?user=seen-by-b").await;
    assert_eq!(r.body["found"], true, "{r:?}");
    assert_eq!(a.stored_hash("seen-by-b").await, None);

    let passwords_sent: Arc<Mutex<HashMap<String, HashSet<String>>>> = Arc::default();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let (a, b) = (Arc::clone(&a), Arc::clone(&b));
        let passwords_sent = Arc::clone(&passwords_sent);
        tasks.push(tokio::spawn(async move {
            // The last acknowledged state of each name of this client's own:
            // its password, or None once removed.
            let mut own: HashMap<String, Option<String>> = HashMap::new();
            for round in 0..ROUNDS {
                // Alternate instances, so that consecutive operations on one
                // name go through different writers.
                let (first, second) = if (client + round) % 2 == 0 {
                    (&a, &b)
                } else {
                    (&b, &a)
                };
                let shared = format!("shared-{}", (client + round) % SHARED_NAMES);
                let password = format!("pw-{client}-{round}");
                passwords_sent
                    .lock()
                    .await
                    .entry(shared.clone())
                    .or_default()
                    .insert(password.clone());
                let answer = if round % 3 == 2 {
                    first.get(&format!("/remove?user={shared}")).await
                } else {
                    first.add(&shared, &password).await
                };
                assert_eq!(answer.status, 200, "{answer:?}");

                let mine = format!("own-{client}-{}", round % 5);
                if round % 4 == 3 {
                    let answer = second.get(&format!("/remove?user={mine}")).await;
                    assert_eq!(answer.status, 200, "{answer:?}");
                    let expected = own.get(&mine).is_some_and(Option::is_some);
                    assert_eq!(
                        answer.body["found"], expected,
                        "remove through one instance sees the add through the other: {answer:?}"
                    );
                    own.insert(mine, None);
                } else {
                    let answer = second.add(&mine, &password).await;
                    assert_eq!(answer.status, 200, "{answer:?}");
                    let expected = own.get(&mine).is_some_and(Option::is_some);
                    assert_eq!(answer.body["replaced"], expected, "{answer:?}");
                    own.insert(mine, Some(password));
                }
            }
            own
        }));
    }
    let mut acknowledged = HashMap::new();
    for t in tasks {
        acknowledged.extend(t.await.expect("client task"));
    }

    // Every acknowledged add that nothing later removed is there, with the
    // password last acknowledged; every acknowledged remove stuck.
    let mut own_present = 0;
    for (user, password) in &acknowledged {
        let hash = a.stored_hash(user).await;
        match password {
            Some(password) => {
                let hash = hash.unwrap_or_else(|| panic!("acknowledged user {user} is missing"));
                assert!(htpasswd::verify(password, &hash), "{user}");
                own_present += 1;
            }
            None => assert_eq!(hash, None, "{user} was removed"),
        }
    }
    let sent = passwords_sent.lock().await;
    let mut shared_present = 0;
    for (name, passwords) in sent.iter() {
        if let Some(hash) = a.stored_hash(name).await {
            shared_present += 1;
            assert!(
                passwords.iter().any(|p| htpasswd::verify(p, &hash)),
                "{name} holds a hash of no password sent for it"
            );
        }
    }
    assert_eq!(
        a.row_count().await as usize,
        own_present + shared_present,
        "no row beyond the acknowledged ones"
    );
    // Both instances answer the same.
    for name in acknowledged.keys().chain(sent.keys()) {
        let (via_a, via_b) = (
            a.store.get(&Username::parse(name).unwrap()).await.unwrap(),
            b.store.get(&Username::parse(name).unwrap()).await.unwrap(),
        );
        assert_eq!(via_a, via_b, "{name}");
    }
}
