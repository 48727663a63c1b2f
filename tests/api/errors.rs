//! Every way a request can go wrong answers the JSON envelope with the right
//! status, and changes nothing.

use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, Answer};
use registry_rubber::htpasswd::HashType;

#[tokio::test]
async fn unknown_paths_answer_a_404_envelope() {
    let app = spawn_app().await;
    for path in ["/", "/nope", "/add/extra", "/ADD", "/add%2F", "/v2/"] {
        app.get(path).await.assert_error("unknown", 404);
    }
}

#[tokio::test]
async fn wrong_methods_answer_405_with_allow() {
    let app = spawn_app().await;
    for method in ["PUT", "DELETE", "PATCH", "OPTIONS"] {
        let resp = app
            .client
            .request(method.parse().unwrap(), app.url("/add?user=u&passwd=p"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()["allow"], "GET, POST");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["status_code"], 405);
        assert_eq!(body["response"], "ERROR");
    }
    assert_eq!(app.row_count().await, 0);
    let resp = app.client.post(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
}

#[tokio::test]
async fn head_never_mutates() {
    let app = spawn_app().await;
    app.add("1423382819", "x").await;
    for target in [
        "/remove?user=1423382819",
        "/delete?user=1423382819",
        "/cleanup?older_than=0",
        "/add?user=1423382819&passwd=changed",
        "/add?user=newcomer&passwd=x",
    ] {
        let (status, head, _) = app
            .raw(
                format!("HEAD {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await;
        assert_eq!(status, 405, "{target}: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
    }
    assert_eq!(app.row_count().await, 1);
    assert!(registry_rubber::htpasswd::verify(
        "x",
        &app.stored_hash("1423382819").await.unwrap()
    ));
    let (status, _, _) = app
        .raw(b"HEAD /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn malformed_percent_encoding_and_invalid_utf8_are_refused() {
    let app = spawn_app().await;
    for query in [
        "/add?user=u&passwd=%zz",
        "/add?user=u&passwd=abc%4",
        "/add?user=u%&passwd=x",
        "/add?user=u&passwd=%FF%FE",
        "/remove?user=%C3",
    ] {
        let a = app.get(query).await;
        a.assert_error(
            if query.starts_with("/add") {
                "add"
            } else {
                "remove"
            },
            400,
        );
    }
    // Raw bytes that are not even ASCII in the request line are not HTTP:
    // the HTTP parser refuses them with a bare 400 before any handler runs.
    let (status, _, _) = app
        .raw(b"GET /add?user=u&passwd=\xff\xfe HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(status, 400);
    let a = app
        .post_raw(
            "/add",
            "application/x-www-form-urlencoded",
            b"user=u&passwd=\xc3\x28".to_vec(),
        )
        .await;
    a.assert_error("add", 400);
    assert_eq!(app.row_count().await, 0);
}

#[tokio::test]
async fn malformed_and_unsupported_bodies_are_refused() {
    let app = spawn_app().await;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("application/json", b"{\"user\": \"u\", ".to_vec(), 400),
        ("application/json", b"[\"u\", \"p\"]".to_vec(), 400),
        (
            "application/json",
            br#"{"user": "u", "passwd": 1234}"#.to_vec(),
            400,
        ),
        (
            "application/json",
            br#"{"user": ["u"], "passwd": "p"}"#.to_vec(),
            400,
        ),
        ("text/plain", b"user=u&passwd=p".to_vec(), 415),
        ("application/xml", b"<user>u</user>".to_vec(), 415),
    ];
    for (content_type, body, status) in cases {
        app.post_raw("/add", content_type, body)
            .await
            .assert_error("add", status);
    }
    assert_eq!(app.row_count().await, 0);
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let app = spawn_app().await;
    let big = format!("user=u&passwd={}", "p".repeat(70 * 1024));
    let a = app
        .post_raw(
            "/add",
            "application/x-www-form-urlencoded",
            big.into_bytes(),
        )
        .await;
    a.assert_error("add", 413);
    assert_eq!(app.row_count().await, 0);
}

#[tokio::test]
async fn bad_usernames_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    app.add("keep", "x").await;
    let long = "a".repeat(129);
    for user in [
        "a:b",
        "a b",
        "a\tb",
        "a\nb",
        "a\u{7f}b",
        "a\u{0}b",
        "ünï",
        "日本",
        "a/b",
        "a\\b",
        "a;b",
        "a'b",
        long.as_str(),
    ] {
        for path in ["/add", "/remove", "/delete"] {
            let a = app
                .post_form(path, &[("user", user), ("passwd", "p")])
                .await;
            let action = if path == "/add" { "add" } else { "remove" };
            a.assert_envelope(action, 400, "Invalid action or user defined in request");
        }
    }
    app.get("/add?user=a%3Ab&passwd=p").await.assert_envelope(
        "add",
        400,
        "Invalid action or user defined in request",
    );
    assert_eq!(app.row_count().await, 1);
    // The longest legal name works.
    app.add(&"a".repeat(128), "p")
        .await
        .assert_error("add", 200);
}

#[tokio::test]
async fn passwords_beyond_what_the_hash_honours_are_refused_not_truncated() {
    let app = spawn_app_with(|s| s.hash_type = HashType::Bcrypt).await;
    app.add("u72", &"p".repeat(72))
        .await
        .assert_error("add", 200);
    let a = app.add("u73", &"p".repeat(73)).await;
    a.assert_error("add", 400);
    assert!(
        a.body["msg"].as_str().unwrap().contains("72 bytes"),
        "{a:?}"
    );
    assert_eq!(app.stored_hash("u73").await, None);

    let app = spawn_app().await;
    app.add("big", &"p".repeat(1024))
        .await
        .assert_error("add", 200);
    let a = app.add("bigger", &"p".repeat(1025)).await;
    a.assert_error("add", 400);
    assert_eq!(app.stored_hash("bigger").await, None);
}

#[tokio::test]
async fn a_nul_in_the_password_is_refused() {
    let app = spawn_app().await;
    app.get("/add?user=u&passwd=a%00b")
        .await
        .assert_error("add", 400);
    app.post_json("/add", &json!({"user": "u", "passwd": "a\u{0}b"}))
        .await
        .assert_error("add", 400);
    assert_eq!(app.row_count().await, 0);
}

#[tokio::test]
async fn database_failures_answer_503_generically_and_healthz_says_unhealthy() {
    let app = spawn_app().await;
    app.add("before", "x").await;
    // Take the table away behind the service's back.
    app.db.drop_users_table().await;
    let missing_table = app.db.missing_table_message();
    let checks: Vec<(Answer, &str)> = vec![
        (app.add("u", "p").await, "add"),
        (app.get("/remove?user=u").await, "remove"),
        (app.get("/cleanup").await, "cleanup"),
    ];
    for (a, action) in checks {
        a.assert_envelope(action, 503, "database unavailable; try again shortly");
        assert!(!a.body.to_string().contains(missing_table), "{a:?}");
    }
    let h = app.get("/healthz").await;
    h.assert_error("healthz", 503);
    assert!(!h.body.to_string().contains(missing_table), "{h:?}");
    // The cause went to the log instead.
    app.wait_for_log("the database's own message", |e| e.mentions(missing_table))
        .await;
}
