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

    let logs = captured_logs();
    // The capture works: the requests above are in it.
    assert!(logs.contains("path=/add"), "request lines are captured");
    assert!(
        logs.contains("path=other"),
        "another path is logged as other"
    );
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    // A path that is no route may hold anything a client put there: it is
    // logged as `other`, never as sent.
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let port = stream.local_addr().unwrap().port();
    stream
        .write_all(b"GET /add;passwd=log-line-check-5e1a?passwd=x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 404"));
    let logs = captured_logs();
    assert!(
        !logs.contains("log-line-check-5e1a"),
        "the path reached the log"
    );
    let needle = format!("client=127.0.0.1:{port}");
    let line = logs
        .lines()
        .find(|l| l.contains(&needle))
        .expect("a request line for the request");
    for field in ["method=GET", "path=other", "status=404", "duration_us="] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
    assert!(
        logs.contains("listening"),
        "start-up line with the bound address"
    );
}

#[tokio::test]
async fn a_request_abandoned_by_its_client_is_still_logged() {
    use tokio::io::AsyncWriteExt;
    // A slow hash keeps the request in flight while the client goes away.
    let app = spawn_app_with(|s| {
        s.hash_type = HashType::Bcrypt;
        s.bcrypt_cost = 14;
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let port = stream.local_addr().unwrap().port();
    stream
        .write_all(b"GET /add?user=hung-up&passwd=p HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    drop(stream);
    let needle = format!("client=127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let logs = captured_logs();
        if let Some(line) = logs.lines().find(|l| l.contains(&needle)) {
            assert!(line.contains("status=499"), "{line}");
            assert!(line.contains("path=/add"), "{line}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no line for the abandoned request"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
