//! cleanup: removes every user created more than `older_than` seconds ago
//! (default: cleanup_threshold), with no user parameter. Time is the test's.

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn cleanup_removes_only_users_older_than_the_threshold() {
    let app = spawn_app().await;
    app.add("old", "x").await;
    app.clock.advance(601);
    app.add("young", "x").await;
    let a = app.get("/cleanup").await;
    a.assert_envelope("cleanup", 200, "removed 1 users older than 600 seconds");
    assert_eq!(a.body["removed"], 1);
    assert_eq!(app.stored_hash("old").await, None);
    assert!(app.stored_hash("young").await.is_some());
}

#[tokio::test]
async fn a_user_exactly_at_the_threshold_stays() {
    let app = spawn_app().await;
    app.add("edge", "x").await;
    app.clock.advance(600);
    app.get("/cleanup").await.assert_envelope(
        "cleanup",
        200,
        "removed 0 users older than 600 seconds",
    );
    app.clock.advance(1);
    app.get("/cleanup").await.assert_envelope(
        "cleanup",
        200,
        "removed 1 users older than 600 seconds",
    );
}

#[tokio::test]
async fn older_than_overrides_the_threshold_on_get_and_post() {
    let app = spawn_app_with(|s| s.cleanup_threshold = 3600).await;
    app.add("a", "x").await;
    app.clock.advance(30);
    app.add("b", "x").await;
    app.clock.advance(10);
    app.get("/cleanup?older_than=20").await.assert_envelope(
        "cleanup",
        200,
        "removed 1 users older than 20 seconds",
    );
    assert_eq!(app.row_count().await, 1);
    app.post_form("/cleanup", &[("older_than", "5")])
        .await
        .assert_envelope("cleanup", 200, "removed 1 users older than 5 seconds");
    assert_eq!(app.row_count().await, 0);
}

#[tokio::test]
async fn re_adding_a_user_restarts_its_age() {
    let app = spawn_app().await;
    app.add("u", "x").await;
    app.clock.advance(590);
    app.add("u", "y").await;
    app.clock.advance(20);
    app.get("/cleanup").await.assert_envelope(
        "cleanup",
        200,
        "removed 0 users older than 600 seconds",
    );
}

#[tokio::test]
async fn a_cleanup_below_the_floor_is_refused_and_removes_nothing() {
    let app = spawn_app_with(|s| s.min_older_than = 60).await;
    app.add("young", "p").await;
    app.clock.advance(30);
    for a in [
        app.get("/cleanup?older_than=0").await,
        app.get("/cleanup?older_than=59").await,
        app.post_form("/cleanup", &[("older_than", "10")]).await,
    ] {
        a.assert_error("cleanup", 400);
        assert!(
            a.body["msg"].as_str().unwrap().contains("min_older_than"),
            "{a:?}"
        );
    }
    assert_eq!(app.row_count().await, 1);
    app.get("/cleanup?older_than=60").await.assert_envelope(
        "cleanup",
        200,
        "removed 0 users older than 60 seconds",
    );
}

#[tokio::test]
async fn a_bad_older_than_is_refused_and_removes_nothing() {
    let app = spawn_app().await;
    app.add("u", "x").await;
    app.clock.advance(10_000);
    for bad in ["-1", "abc", "1.5", "99999999999999999999", "1e3"] {
        let a = app.get(&format!("/cleanup?older_than={bad}")).await;
        a.assert_error("cleanup", 400);
        assert!(
            a.body["msg"].as_str().unwrap().contains("older_than"),
            "{a:?}"
        );
    }
    assert_eq!(app.row_count().await, 1);
}

#[tokio::test]
async fn cleanup_needs_no_user_and_ignores_one() {
    let app = spawn_app().await;
    app.add("u", "x").await;
    app.clock.advance(601);
    app.get("/cleanup?user=someone-else").await.assert_envelope(
        "cleanup",
        200,
        "removed 1 users older than 600 seconds",
    );
}

#[tokio::test]
async fn a_large_backlog_is_cleaned_up_in_batches_to_the_last_row() {
    let app = spawn_app().await;
    // More than two batches of old users.
    for i in 0..450 {
        app.add(&format!("backlog-{i}"), "x").await;
    }
    app.clock.advance(601);
    app.add("young", "x").await;
    let a = app.get("/cleanup").await;
    a.assert_envelope("cleanup", 200, "removed 450 users older than 600 seconds");
    assert_eq!(app.row_count().await, 1);
}
