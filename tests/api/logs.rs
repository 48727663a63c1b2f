//! No password reaches the logs, whichever way it came and whatever the
//! request's fate.

use serde_json::json;

use crate::helpers::{captured_logs, percent, spawn_app, spawn_app_with};
use registry_rubber::htpasswd::HashType;

#[tokio::test]
async fn no_password_or_hash_reaches_the_logs() {
    let app = spawn_app().await;
    let secrets = [
        "Query-Secret-4f1c",
        "Form-Secret-8a2d",
        "Json-Secret-77e0",
        "Replaced-Secret-19bb",
        "Mixed-Secret-c3d1",
    ];
    app.get(&format!("/add?user=log-1&passwd={}", secrets[0]))
        .await
        .assert_error("add", 200);
    app.post_form("/add", &[("user", "log-2"), ("passwd", secrets[1])])
        .await
        .assert_error("add", 200);
    app.post_json("/add", &json!({"user": "log-3", "passwd": secrets[2]}))
        .await
        .assert_error("add", 200);
    app.add("log-1", secrets[3]).await.assert_error("add", 200);
    app.post_form("/add", &[("passwd", secrets[4]), ("user", "log-4")])
        .await
        .assert_error("add", 200);
    let mut hashes = Vec::new();
    for user in ["log-1", "log-2", "log-3", "log-4"] {
        hashes.push(app.stored_hash(user).await.unwrap());
    }

    // Refused requests that carry a password.
    let refused = [
        "Bad-User-Secret-0a0a",
        "Malformed-Secret-0b0b",
        "Nul-Secret-0c0c",
        "Unknown-Path-Secret-0d0d",
        "Bad-Json-Secret-0e0e",
    ];
    app.get(&format!("/add?user=a:b&passwd={}", refused[0]))
        .await
        .assert_error("add", 400);
    app.get(&format!("/add?user=u&passwd={}%zz", refused[1]))
        .await
        .assert_error("add", 400);
    app.get(&format!("/add?user=u&passwd={}%00", refused[2]))
        .await
        .assert_error("add", 400);
    app.get(&format!("/nothing?user=u&passwd={}", refused[3]))
        .await
        .assert_error("unknown", 404);
    app.post_raw(
        "/add",
        "application/json",
        format!("{{\"passwd\": \"{}\"", refused[4]).into_bytes(),
    )
    .await
    .assert_error("add", 400);
    let long = format!("Too-Long-Secret-{}", "x".repeat(80));
    let bcrypt = spawn_app_with(|s| s.hash_type = HashType::Bcrypt).await;
    bcrypt
        .get(&format!("/add?user=u&passwd={}", percent(&long)))
        .await
        .assert_error("add", 400);

    // The capture works: the requests above are in it.
    let lines = app.logs();
    assert!(lines.iter().any(|e| e.is_request(&[("path", "/add")])));
    assert!(
        lines.iter().any(|e| e.is_request(&[("path", "other")])),
        "a path that is no route is logged as other"
    );
    assert!(bcrypt
        .logs()
        .iter()
        .any(|e| e.is_request(&[("path", "/add"), ("status", "400")])));
    // And no line of any application holds a secret.
    let logs = captured_logs();
    for secret in secrets.iter().chain(&refused).chain([&long.as_str()]) {
        assert!(!logs.contains(secret), "a password reached the logs");
    }
    for hash in &hashes {
        assert!(!logs.contains(hash.as_str()), "a hash reached the logs");
    }
    assert!(!logs.contains("passwd="), "a query string reached the logs");
}

#[tokio::test]
async fn each_request_is_logged_with_method_route_status_duration_and_client() {
    let app = spawn_app().await;
    // A path that is no route may hold anything a client put there: it is
    // logged as `other`, never as sent.
    app.get("/add;passwd=log-line-check-5e1a?passwd=x").await;
    let line = app
        .wait_for_log("the request line", |e| e.is_request(&[("path", "other")]))
        .await;
    assert!(
        !captured_logs().contains("log-line-check-5e1a"),
        "the path reached the log"
    );
    assert!(
        line.has(&[("method", "GET"), ("status", "404"), ("door", "api")]),
        "{line:?}"
    );
    let duration: u64 = line.field("duration_us").unwrap().parse().unwrap();
    assert!(duration > 0, "{line:?}");
    let client: std::net::SocketAddr = line.field("client").unwrap().parse().unwrap();
    assert_eq!(client.ip().to_string(), "127.0.0.1", "{line:?}");
    let listening = app
        .wait_for_log("the start-up line", |e| e.message == "listening")
        .await;
    assert_eq!(
        listening.field("address"),
        Some(app.addr.to_string().as_str()),
        "start-up line with the bound address: {listening:?}"
    );
}

#[tokio::test]
async fn a_request_abandoned_by_its_client_is_still_logged() {
    use tokio::io::AsyncWriteExt;
    // The request is in flight, its write taken by the writer and held
    // behind a write lock of the test's own, when the client goes away.
    let app = spawn_app().await;
    let lock = app.db.hold_write_lock().await;
    let taken = app.store.taken_count();
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let port = stream.local_addr().unwrap().port();
    stream
        .write_all(b"GET /add?user=hung-up&passwd=p HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while app.store.taken_count() == taken {
        assert!(
            std::time::Instant::now() < deadline,
            "the add never reached the writer"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    drop(stream);
    let client = format!("127.0.0.1:{port}");
    let line = app
        .wait_for_log("the abandoned request's line", |e| {
            e.is_request(&[("client", &client)])
        })
        .await;
    assert!(line.has(&[("status", "499"), ("path", "/add")]), "{line:?}");
    lock.release().await;
}
