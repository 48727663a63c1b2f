//! Every row of the original tool's contract table, on GET as pipelines call
//! it today, and on POST with a form or JSON body.

use registry_rubber::htpasswd;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with};
use registry_rubber::htpasswd::HashType;

#[tokio::test]
async fn add_with_user_and_password_stores_a_hash_that_verifies() {
    let app = spawn_app().await;
    let a = app.get("/add?user=1423382819&passwd=s3cret").await;
    a.assert_envelope("add", 200, "Added user 1423382819");
    assert_eq!(a.body["user"], "1423382819");
    assert_eq!(a.body["replaced"], false);
    let hash = app.stored_hash("1423382819").await.expect("row written");
    assert!(hash.starts_with("{SHA}"), "{hash}");
    assert!(htpasswd::verify("s3cret", &hash));
    assert!(!htpasswd::verify("other", &hash));
}

#[tokio::test]
async fn sha1_writes_exactly_what_the_original_wrote() {
    let app = spawn_app().await;
    app.get("/add?user=1&passwd=password").await;
    assert_eq!(
        app.stored_hash("1").await.unwrap(),
        "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="
    );
}

#[tokio::test]
async fn add_again_replaces_the_password() {
    let app = spawn_app().await;
    app.get("/add?user=1423382819&passwd=old").await;
    let a = app.get("/add?user=1423382819&passwd=new").await;
    a.assert_envelope("add", 200, "Added user 1423382819");
    assert_eq!(a.body["replaced"], true);
    let hash = app.stored_hash("1423382819").await.unwrap();
    assert!(htpasswd::verify("new", &hash));
    assert!(!htpasswd::verify("old", &hash));
    assert_eq!(app.row_count().await, 1);
}

#[tokio::test]
async fn add_without_password_generates_one_and_returns_it_once() {
    let app = spawn_app().await;
    for (i, query) in ["/add?user=g1", "/add?user=g2&ttl=60"].iter().enumerate() {
        let user = format!("g{}", i + 1);
        let a = app.get(query).await;
        a.assert_envelope("add", 200, &format!("Added user {user}"));
        let passwd = a.body["passwd"].as_str().expect("generated password");
        assert_eq!(passwd.len(), 24);
        assert!(
            passwd.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{passwd}"
        );
        let hash = app.stored_hash(&user).await.unwrap();
        assert!(htpasswd::verify(passwd, &hash));
        assert!(!hash.contains(passwd), "never stored in clear");
    }
    let a = app.post_json("/add", &json!({"user": "g4"})).await;
    assert!(a.body["passwd"].is_string());
    // A password the caller chose is never echoed.
    let a = app.add("g5", "chosen-secret").await;
    assert!(a.body.get("passwd").is_none(), "{a:?}");
}

#[tokio::test]
async fn an_empty_user_or_password_is_refused_as_the_original_did() {
    let app = spawn_app().await;
    for query in ["/add?user=e1&passwd=", "/add?user=e2&passwd"] {
        app.get(query)
            .await
            .assert_envelope("add", 400, "add action requires password");
    }
    app.post_json("/add", &json!({"user": "e3", "passwd": null}))
        .await
        .assert_envelope("add", 400, "add action requires password");
    app.post_form("/add", &[("user", "e4"), ("passwd", "")])
        .await
        .assert_envelope("add", 400, "add action requires password");
    for query in ["/add?user=&passwd=x", "/add?user&passwd=x"] {
        app.get(query).await.assert_envelope(
            "add",
            400,
            "Invalid action or user defined in request",
        );
    }
    assert_eq!(app.row_count().await, 0, "nothing minted");
    // Absent, both are generated.
    let a = app.get("/add").await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.body["user"].is_string() && a.body["passwd"].is_string());
}

#[tokio::test]
async fn missing_or_invalid_user_is_refused_for_every_action() {
    let app = spawn_app().await;
    for (path, action) in [
        ("/add?user=a:b&passwd=x", "add"),
        ("/add?user=%20&passwd=x", "add"),
        ("/remove", "remove"),
        ("/remove?user=a%20b", "remove"),
        ("/delete?user=", "remove"),
        ("/delete?user=a/b", "remove"),
    ] {
        let a = app.get(path).await;
        a.assert_envelope(action, 400, "Invalid action or user defined in request");
        assert!(a.body["detail"].is_string(), "{a:?}");
    }
}

#[tokio::test]
async fn remove_is_idempotent_and_says_whether_the_user_existed() {
    let app = spawn_app().await;
    app.get("/add?user=1423382819&passwd=x").await;
    let a = app.get("/remove?user=1423382819").await;
    a.assert_envelope("remove", 200, "removed user 1423382819");
    assert_eq!(a.body["found"], true);
    assert_eq!(app.stored_hash("1423382819").await, None);
    let a = app.get("/remove?user=1423382819").await;
    a.assert_envelope("remove", 200, "removed user 1423382819");
    assert_eq!(a.body["found"], false);
}

#[tokio::test]
async fn delete_is_remove_and_reports_as_remove() {
    let app = spawn_app().await;
    app.get("/add?user=1423382819&passwd=x").await;
    let a = app.get("/delete?user=1423382819").await;
    a.assert_envelope("remove", 200, "removed user 1423382819");
    assert_eq!(a.body["found"], true);
    assert_eq!(app.row_count().await, 0);
}

#[tokio::test]
async fn realm_is_accepted_and_ignored_and_the_first_repeated_value_wins() {
    let app = spawn_app().await;
    app.get("/add?user=first&user=second&passwd=one&passwd=two&realm=Registry")
        .await
        .assert_envelope("add", 200, "Added user first");
    assert!(htpasswd::verify(
        "one",
        &app.stored_hash("first").await.unwrap()
    ));
    assert_eq!(app.stored_hash("second").await, None);
}

#[tokio::test]
async fn post_form_and_json_bodies_work_like_get() {
    let app = spawn_app().await;
    app.post_form("/add", &[("user", "form-user"), ("passwd", "p&ss=wörd")])
        .await
        .assert_envelope("add", 200, "Added user form-user");
    assert!(htpasswd::verify(
        "p&ss=wörd",
        &app.stored_hash("form-user").await.unwrap()
    ));

    app.post_json(
        "/add",
        &json!({"user": "json-user", "passwd": "j$on pässword"}),
    )
    .await
    .assert_envelope("add", 200, "Added user json-user");
    assert!(htpasswd::verify(
        "j$on pässword",
        &app.stored_hash("json-user").await.unwrap()
    ));

    // Epoch names are numbers to many JSON callers.
    app.post_json("/add", &json!({"user": 1423382819123u64, "passwd": "x"}))
        .await
        .assert_envelope("add", 200, "Added user 1423382819123");

    app.post_json("/remove", &json!({"user": "json-user"}))
        .await
        .assert_envelope("remove", 200, "removed user json-user");
    app.post_form("/delete", &[("user", "form-user")])
        .await
        .assert_envelope("remove", 200, "removed user form-user");
    assert_eq!(app.row_count().await, 1);
}

#[tokio::test]
async fn a_post_with_parameters_in_its_url_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    for (path, action) in [
        ("/add?user=mixed", "add"),
        ("/add?passwd=in-url-secret", "add"),
        ("/remove?user=kept", "remove"),
        ("/cleanup?older_than=0", "cleanup"),
    ] {
        app.post_form(path, &[("user", "mixed"), ("passwd", "body-secret")])
            .await
            .assert_envelope(
                action,
                400,
                "POST takes its parameters in the body (a form or JSON), never in the URL, where proxies log them",
            );
        // An empty body is no different.
        let a = app
            .post_raw(path, "application/x-www-form-urlencoded", Vec::new())
            .await;
        assert_eq!(a.status, 400, "{a:?}");
    }
    assert_eq!(app.row_count().await, 0);
}

#[tokio::test]
async fn non_ascii_passwords_work() {
    let app = spawn_app().await;
    app.get("/add?user=u1&passwd=p%C3%A4ss%E6%97%A5%E6%9C%AC")
        .await
        .assert_envelope("add", 200, "Added user u1");
    assert!(htpasswd::verify(
        "päss日本",
        &app.stored_hash("u1").await.unwrap()
    ));
}

#[tokio::test]
async fn every_hash_type_is_written_as_configured() {
    for (kind, prefix) in [
        (HashType::Sha1, "{SHA}"),
        (HashType::Md5, "$apr1$"),
        (HashType::Bcrypt, "$2y$04$"),
        (HashType::Sha256, "$5$"),
        (HashType::Sha512, "$6$"),
    ] {
        let app = spawn_app_with(|s| s.hash_type = kind).await;
        app.add("u", "pässword")
            .await
            .assert_envelope("add", 200, "Added user u");
        let hash = app.stored_hash("u").await.unwrap();
        assert!(hash.starts_with(prefix), "{kind}: {hash}");
        assert!(htpasswd::verify("pässword", &hash), "{kind}");
    }
}

#[tokio::test]
async fn healthz_answers_200_with_json() {
    let app = spawn_app().await;
    let a = app.get("/healthz").await;
    a.assert_envelope("healthz", 200, "healthy");
    assert_eq!(a.body["database"], app.db.backend());
}

#[tokio::test]
async fn the_openapi_description_is_served_as_docs_holds_it() {
    let app = spawn_app().await;
    let a = app.get("/openapi.json").await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.content_type.starts_with("application/json"), "{a:?}");
    let on_disk: Value = serde_json::from_str(include_str!("../../docs/openapi.json")).unwrap();
    assert_eq!(a.body, on_disk);
    // Open to every caller the door admits, as health and metrics are.
    let a = app.post_form("/openapi.json", &[]).await;
    a.assert_envelope("openapi", 405, "method not allowed; use GET");
}
