//! Short lifetimes: ttl on add, generated names, renew, list, the sweeper,
//! audit events and metrics. The clock is the test's.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{captured_logs, spawn_app, spawn_app_with, T0};
use registry_rubber::domain::TtlPolicy;

async fn expires_of(app: &crate::helpers::TestApp, user: &str) -> Option<i64> {
    app.db.expires_of(user).await
}

#[tokio::test]
async fn add_answers_user_and_expiry_and_takes_the_default_ttl() {
    let app = spawn_app().await;
    let a = app.add("u", "p").await;
    a.assert_envelope("add", 200, "Added user u");
    assert_eq!(a.body["user"], "u");
    assert_eq!(a.body["expires_at"], T0 + 3600);
    assert_eq!(a.body["expires"], "2023-11-14T23:13:20Z");
    assert_eq!(a.body["ttl"], 3600);
    assert_eq!(a.body["ttl_clamped"], false);
    assert_eq!(expires_of(&app, "u").await, Some(T0 + 3600));
}

#[tokio::test]
async fn a_ttl_is_honoured_and_one_above_the_cap_is_clamped_and_says_so() {
    let app = spawn_app_with(|s| {
        s.ttl = TtlPolicy {
            default_ttl: 60,
            max_ttl: 600,
            max_lifetime: 1200,
        }
    })
    .await;
    let a = app.get("/add?user=short&passwd=p&ttl=30").await;
    assert_eq!(
        (a.body["ttl"].as_u64(), a.body["ttl_clamped"].as_bool()),
        (Some(30), Some(false))
    );
    assert_eq!(expires_of(&app, "short").await, Some(T0 + 30));
    let a = app
        .post_json(
            "/add",
            &json!({"user": "long", "passwd": "p", "ttl": 99999}),
        )
        .await;
    a.assert_envelope("add", 200, "Added user long");
    assert_eq!(
        (a.body["ttl"].as_u64(), a.body["ttl_clamped"].as_bool()),
        (Some(600), Some(true))
    );
    assert_eq!(expires_of(&app, "long").await, Some(T0 + 600));
    for bad in ["0", "-5", "soon", "1.5"] {
        let a = app.get(&format!("/add?user=bad&passwd=p&ttl={bad}")).await;
        a.assert_error("add", 400);
        assert!(a.body["msg"].as_str().unwrap().contains("ttl"), "{a:?}");
    }
    assert_eq!(app.stored_hash("bad").await, None);
}

#[tokio::test]
async fn add_without_user_names_one_unique_and_epoch_based() {
    let app = spawn_app().await;
    let mut names = std::collections::HashSet::new();
    for _ in 0..50 {
        let a = app.post_form("/add", &[]).await;
        assert_eq!(a.status, 200, "{a:?}");
        let user = a.body["user"].as_str().unwrap().to_owned();
        assert!(
            user.starts_with(&(T0 / 100).to_string()),
            "epoch-based: {user}"
        );
        let passwd = a.body["passwd"].as_str().unwrap();
        assert!(registry_rubber::htpasswd::verify(
            passwd,
            &app.stored_hash(&user).await.unwrap()
        ));
        names.insert(user);
    }
    assert_eq!(names.len(), 50, "unique within one second");
    assert_eq!(app.row_count().await, 50);
}

#[tokio::test]
async fn an_expired_user_no_longer_counts_as_live() {
    let app = spawn_app().await;
    app.get("/add?user=brief&passwd=p&ttl=10").await;
    app.clock.advance(9);
    let l = app.get("/list").await;
    assert_eq!(l.body["users"].as_array().unwrap().len(), 1);
    app.clock.advance(1);
    let l = app.get("/list").await;
    assert_eq!(l.body["users"], json!([]), "expired at its expiry second");
    app.get("/renew?user=brief").await.assert_envelope(
        "renew",
        404,
        "user brief is not live: it does not exist or has expired",
    );
}

#[tokio::test]
async fn renew_extends_within_the_lifetime_limit() {
    let app = spawn_app_with(|s| {
        s.ttl = TtlPolicy {
            default_ttl: 100,
            max_ttl: 300,
            max_lifetime: 500,
        }
    })
    .await;
    app.add("job", "p").await;
    app.clock.advance(50);
    let a = app.get("/renew?user=job&ttl=200").await;
    a.assert_envelope("renew", 200, "renewed user job");
    assert_eq!(a.body["expires_at"], T0 + 250);
    assert_eq!(a.body["lifetime_limited"], false);
    assert_eq!(expires_of(&app, "job").await, Some(T0 + 250));
    app.clock.advance(190);
    let a = app
        .post_form("/renew", &[("user", "job"), ("ttl", "1000")])
        .await;
    assert_eq!(a.body["ttl_clamped"], true, "{a:?}");
    assert_eq!(a.body["lifetime_limited"], true, "{a:?}");
    assert_eq!(
        a.body["expires_at"],
        T0 + 500,
        "never beyond created_at + max_lifetime"
    );
    app.get("/renew?user=nobody").await.assert_envelope(
        "renew",
        404,
        "user nobody is not live: it does not exist or has expired",
    );
    app.get("/renew").await.assert_error("renew", 400);
    app.get("/renew?user=job&ttl=0")
        .await
        .assert_error("renew", 400);
}

#[tokio::test]
async fn list_pages_through_live_users_by_prefix_without_secrets() {
    let app = spawn_app().await;
    for i in 0..5 {
        app.add(&format!("ci-{i}"), &format!("list-secret-{i}"))
            .await;
    }
    app.add("other", "list-secret-x").await;
    let page = app.get("/list?prefix=ci-&limit=2").await;
    page.assert_envelope("list", 200, "2 users");
    let users = page.body["users"].as_array().unwrap();
    assert_eq!(users[0]["user"], "ci-0");
    assert_eq!(users[0]["created_at"], T0);
    assert_eq!(users[0]["expires_at"], T0 + 3600);
    assert_eq!(users[0]["expires"], "2023-11-14T23:13:20Z");
    assert_eq!(page.body["next"], "ci-1");
    let page = app.get("/list?prefix=ci-&limit=2&after=ci-1").await;
    assert_eq!(page.body["users"][0]["user"], "ci-2");
    let page = app.get("/list?prefix=ci-&after=ci-3").await;
    assert_eq!(page.body["users"].as_array().unwrap().len(), 1);
    assert_eq!(page.body["next"], serde_json::Value::Null, "last page");
    let all = app.get("/list").await.body.to_string();
    assert!(!all.contains("secret") && !all.contains("$apr1$") && !all.contains("{SHA}"));
    for bad in [
        "/list?limit=0",
        "/list?limit=1001",
        "/list?prefix=a:b",
        "/list?after=%20",
    ] {
        app.get(bad).await.assert_error("list", 400);
    }
    let resp = app.client.post(app.url("/list")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
}

#[tokio::test]
async fn the_sweeper_deletes_expired_users_by_itself() {
    let app = spawn_app_with(|s| s.sweep_interval = 1).await;
    app.get("/add?user=dies&passwd=p&ttl=5").await;
    app.get("/add?user=lives&passwd=p&ttl=500").await;
    app.clock.advance(5);
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.stored_hash("dies").await.is_some() {
        assert!(
            Instant::now() < deadline,
            "the sweeper did not remove the expired user"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(app.stored_hash("lives").await.is_some());
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("rubber_expired_total 1"), "{metrics}");
    app.wait_for_log("the sweep's audit event", |e| {
        e.is_audit(&[("action", "sweep"), ("removed", "1")])
    })
    .await;
}

#[tokio::test]
async fn sweeping_many_expired_users_goes_in_batches_and_spares_the_live() {
    let app = spawn_app().await;
    for i in 0..1200 {
        app.store
            .write(registry_rubber::store::WriteOp::Add {
                user: registry_rubber::domain::Username::parse(&format!("x{i}")).unwrap(),
                hash: "{SHA}x".into(),
                now: T0,
                expires_at: Some(T0 + 1),
                scopes: None,
                replace: true,
            })
            .await
            .unwrap();
    }
    app.add("keeper", "p").await;
    let creds = registry_rubber::credentials::Credentials::new(
        &registry_rubber::config::Settings::default(),
        app.store.clone(),
        app.clock.clone(),
    )
    .unwrap();
    app.clock.advance(1);
    let removed = creds.sweep_expired().await.unwrap();
    assert_eq!(removed, 1200);
    assert_eq!(app.row_count().await, 1);
}

#[tokio::test]
async fn every_mutation_leaves_an_audit_event_without_secrets() {
    let app = spawn_app().await;
    app.add("audited-user", "Audit-Secret-9f2").await;
    app.get("/renew?user=audited-user&ttl=100").await;
    app.get("/remove?user=audited-user").await;
    app.clock.advance(10_000);
    app.get("/cleanup").await;
    let events = app.logs();
    let find = |action: &str| {
        events
            .iter()
            .find(|e| e.is_audit(&[("action", action), ("user", "audited-user")]))
            .unwrap_or_else(|| panic!("no audit event for {action}: {events:#?}"))
    };
    let add = find("add");
    assert!(
        add.has(&[
            ("result", "ok"),
            ("caller", "127.0.0.1"),
            ("generated_password", "false")
        ]),
        "{add:?}"
    );
    let expires_at: i64 = add.field("expires_at").unwrap().parse().unwrap();
    assert!(expires_at > T0, "{add:?}");
    assert!(find("renew").has(&[("result", "ok")]));
    assert!(find("remove").has(&[("result", "ok"), ("removed", "1")]));
    assert!(events
        .iter()
        .any(|e| e.is_audit(&[("action", "cleanup"), ("result", "ok")])));
    assert!(!captured_logs().contains("Audit-Secret-9f2"));
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let app = spawn_app().await;
    app.add("m1", "p").await;
    app.add("m2", "p").await;
    app.get("/renew?user=m1").await;
    app.get("/remove?user=m2").await;
    app.get("/remove?user=never-there").await;
    let resp = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    for line in [
        "rubber_live_users 1",
        "rubber_adds_total 2",
        "rubber_renews_total 1",
        "rubber_removes_total 1",
        "rubber_database_errors_total 0",
        "rubber_request_duration_seconds_count{door=\"api\",route=\"/add\"} 2",
        "rubber_request_duration_seconds_count{door=\"api\",route=\"/remove\"} 2",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
    // A database failure is counted.
    app.db.drop_users_table().await;
    app.add("m3", "p").await.assert_error("add", 503);
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !text.contains("rubber_live_users"),
        "no gauge when the database does not answer"
    );
    assert!(text.contains("rubber_database_errors_total 2"), "{text}");
}
