//! The nginx auth_request door against the real application, on either
//! backend: what it answers for live, removed, expired, replaced, unknown and
//! malformed credentials, that its cache never outlives a row, that an
//! unknown user costs a hashing as a wrong password does, and who may ask.

use std::net::SocketAddr;

use base64::Engine;
use registry_rubber::htpasswd::HashType;

use crate::helpers::{
    captured_logs, parse_cidrs_for_tests, spawn_app_with, spawn_second_app_with, TestApp,
};

/// What the door answered.
#[derive(Debug)]
struct Check {
    status: u16,
    user: Option<String>,
    challenge: Option<String>,
    body: Vec<u8>,
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

async fn ask(app: &TestApp, authorization: Option<&str>) -> Check {
    ask_at(app, door(app), "GET", authorization).await
}

fn door(app: &TestApp) -> SocketAddr {
    app.auth.expect("the auth_request door is open")
}

async fn ask_at(
    app: &TestApp,
    addr: SocketAddr,
    method: &str,
    authorization: Option<&str>,
) -> Check {
    let mut request = app
        .client
        .request(method.parse().unwrap(), format!("http://{addr}/auth"))
        .header(
            "x-original-uri",
            "/v2/team/app/manifests/latest?token=Not-Logged-7",
        )
        .header("x-original-method", "GET");
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.expect("the door answers");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    Check {
        status: response.status().as_u16(),
        user: header("x-rubber-user"),
        challenge: header("www-authenticate"),
        body: response.bytes().await.unwrap().to_vec(),
    }
}

fn assert_allowed(check: &Check, user: &str) {
    assert_eq!(check.status, 200, "{check:?}");
    assert_eq!(check.user.as_deref(), Some(user), "{check:?}");
    assert!(check.body.is_empty(), "{check:?}");
}

fn assert_refused(check: &Check) {
    assert_eq!(check.status, 401, "{check:?}");
    assert_eq!(
        check.challenge.as_deref(),
        Some("Basic realm=\"registry\""),
        "{check:?}"
    );
    assert_eq!(check.user, None, "{check:?}");
    assert!(check.body.is_empty(), "{check:?}");
}

async fn app_with_door(hash_type: HashType) -> TestApp {
    spawn_app_with(|s| {
        s.hash_type = hash_type;
        s.auth_request.listener.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

async fn metric(app: &TestApp, series: &str) -> u64 {
    crate::helpers::metric_value(app, series).await
}

#[tokio::test]
async fn a_live_credential_is_allowed_and_everything_else_refused() {
    let app = app_with_door(HashType::Md5).await;
    app.add("ci-17", "Right-Pass-1").await;
    assert_allowed(
        &ask(&app, Some(&basic("ci-17", "Right-Pass-1"))).await,
        "ci-17",
    );
    let head = ask_at(
        &app,
        door(&app),
        "HEAD",
        Some(&basic("ci-17", "Right-Pass-1")),
    )
    .await;
    assert_allowed(&head, "ci-17");
    for authorization in [
        Some(basic("ci-17", "Wrong-Pass-1")),
        Some(basic("ci-17", "")),
        Some(basic("nobody", "Right-Pass-1")),
        Some(basic("bad user", "Right-Pass-1")),
        None,
        Some("Basic !!!".to_owned()),
        Some("Bearer abc".to_owned()),
        Some("Basic".to_owned()),
        Some(format!("{} extra", basic("ci-17", "Right-Pass-1"))),
    ] {
        let check = ask(&app, authorization.as_deref()).await;
        assert_refused(&check);
    }
    assert_eq!(
        metric(
            &app,
            "rubber_door_checks_total{door=\"auth_request\",result=\"allowed\"}"
        )
        .await,
        2
    );
    assert_eq!(
        metric(
            &app,
            "rubber_door_checks_total{door=\"auth_request\",result=\"refused\"}"
        )
        .await,
        9
    );
}

#[tokio::test]
async fn a_removed_credential_is_refused_on_the_next_check_though_cached() {
    let app = app_with_door(HashType::Bcrypt).await;
    app.add("gone-soon", "Cached-Pass-2").await;
    for _ in 0..3 {
        assert_allowed(
            &ask(&app, Some(&basic("gone-soon", "Cached-Pass-2"))).await,
            "gone-soon",
        );
    }
    assert_eq!(
        metric(&app, "rubber_verifications_total{how=\"hashed\"}").await,
        1,
        "bcrypt ran once"
    );
    assert_eq!(
        metric(&app, "rubber_verifications_total{how=\"cached\"}").await,
        2
    );
    app.post_form("/remove", &[("user", "gone-soon")]).await;
    assert_refused(&ask(&app, Some(&basic("gone-soon", "Cached-Pass-2"))).await);
}

#[tokio::test]
async fn an_expired_credential_is_refused_from_its_expiry_second_without_a_sweep() {
    let app = app_with_door(HashType::Sha1).await;
    app.post_form(
        "/add",
        &[("user", "short"), ("passwd", "Short-Pass-3"), ("ttl", "5")],
    )
    .await;
    assert_allowed(
        &ask(&app, Some(&basic("short", "Short-Pass-3"))).await,
        "short",
    );
    app.clock.advance(4);
    assert_allowed(
        &ask(&app, Some(&basic("short", "Short-Pass-3"))).await,
        "short",
    );
    app.clock.advance(1);
    assert_refused(&ask(&app, Some(&basic("short", "Short-Pass-3"))).await);
    assert_eq!(app.row_count().await, 1, "no sweep ran: the row is there");
}

#[tokio::test]
async fn a_replaced_password_refuses_the_old_one_at_once() {
    let app = app_with_door(HashType::Md5).await;
    app.add("rotated", "Old-Pass-4").await;
    assert_allowed(
        &ask(&app, Some(&basic("rotated", "Old-Pass-4"))).await,
        "rotated",
    );
    app.add("rotated", "New-Pass-4").await;
    assert_refused(&ask(&app, Some(&basic("rotated", "Old-Pass-4"))).await);
    assert_allowed(
        &ask(&app, Some(&basic("rotated", "New-Pass-4"))).await,
        "rotated",
    );
}

#[tokio::test]
async fn every_hash_type_is_checked() {
    for kind in HashType::ALL {
        let app = app_with_door(kind).await;
        app.add("typed", "Typed-Pass-5").await;
        assert_allowed(
            &ask(&app, Some(&basic("typed", "Typed-Pass-5"))).await,
            "typed",
        );
        assert_refused(&ask(&app, Some(&basic("typed", "Typed-Pass-6"))).await);
    }
}

#[tokio::test]
async fn an_unknown_or_expired_user_costs_a_hashing_as_a_wrong_password_does() {
    let app = app_with_door(HashType::Bcrypt).await;
    app.post_form(
        "/add",
        &[("user", "known"), ("passwd", "Known-Pass-7"), ("ttl", "10")],
    )
    .await;
    ask(&app, Some(&basic("known", "Wrong-Pass-7"))).await;
    assert_eq!(
        metric(&app, "rubber_verifications_total{how=\"hashed\"}").await,
        1
    );
    ask(&app, Some(&basic("unknown", "Known-Pass-7"))).await;
    assert_eq!(
        metric(&app, "rubber_verifications_total{how=\"dummy\"}").await,
        1
    );
    app.clock.advance(10);
    assert_refused(&ask(&app, Some(&basic("known", "Known-Pass-7"))).await);
    assert_eq!(
        metric(&app, "rubber_verifications_total{how=\"dummy\"}").await,
        2,
        "an expired user is checked against the dummy hash"
    );
}

#[tokio::test]
async fn a_removal_by_another_instance_is_refused_at_once() {
    let writer = spawn_app_with(|_| {}).await;
    let checker = spawn_second_app_with(&writer, |s| {
        s.auth_request.listener.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    writer.add("shared", "Shared-Pass-8").await;
    assert_allowed(
        &ask(&checker, Some(&basic("shared", "Shared-Pass-8"))).await,
        "shared",
    );
    writer.post_form("/remove", &[("user", "shared")]).await;
    assert_refused(&ask(&checker, Some(&basic("shared", "Shared-Pass-8"))).await);
}

#[tokio::test]
async fn refusals_are_logged_with_the_user_and_never_the_password() {
    let app = app_with_door(HashType::Sha1).await;
    app.add("logged-user", "Logged-Pass-9").await;
    ask(&app, Some(&basic("logged-user", "Leaked-Pass-9"))).await;
    ask(&app, Some(&basic("never-added-9", "Leaked-Pass-10"))).await;
    let refusals: Vec<_> = app
        .logs()
        .into_iter()
        .filter(|e| e.has(&[("door", "auth_request"), ("result", "refused")]))
        .collect();
    assert!(
        refusals.iter().any(|e| e.has(&[
            ("user", "logged-user"),
            ("reason", "wrong_password"),
            ("uri", "/v2/team/app/manifests/latest")
        ])),
        "{refusals:#?}"
    );
    // A name no credential has may be a password in the wrong field: only
    // a pseudonym of it is logged.
    assert!(
        refusals.iter().any(|e| e.has(&[("reason", "unknown_user")])
            && e.field("user").is_some_and(|u| u.starts_with("unknown-"))),
        "{refusals:#?}"
    );
    let logs = captured_logs();
    for secret in [
        "Leaked-Pass",
        "Logged-Pass-9",
        "Not-Logged-7",
        "never-added-9",
    ] {
        assert!(!logs.contains(secret), "{secret} reached the log");
    }
}

#[tokio::test]
async fn the_door_has_its_own_allowlist_methods_and_paths() {
    let app = spawn_app_with(|s| {
        s.auth_request.listener.listen = Some("127.0.0.1:0".parse().unwrap());
        s.auth_request.listener.allow_from = parse_cidrs_for_tests("10.0.0.0/8");
    })
    .await;
    app.add("fenced", "Fenced-Pass-1").await;
    let check = ask(&app, Some(&basic("fenced", "Fenced-Pass-1"))).await;
    assert_eq!(check.status, 403, "{check:?}");
    assert!(check.body.is_empty(), "{check:?}");
    // The admin API keeps its own allowlist (loopback).
    app.get("/list").await.assert_error("list", 200);

    let open = app_with_door(HashType::Sha1).await;
    let post = ask_at(&open, door(&open), "POST", None).await;
    assert_eq!(post.status, 405, "{post:?}");
    let other = open
        .client
        .get(format!("http://{}/add?user=x&passwd=y", door(&open)))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 404, "the door serves /auth only");
    assert_eq!(open.row_count().await, 0);
}

#[tokio::test]
async fn a_database_failure_answers_503_never_200() {
    let app = app_with_door(HashType::Sha1).await;
    app.add("doomed", "Doomed-Pass-2").await;
    app.db.drop_users_table().await;
    let check = ask(&app, Some(&basic("doomed", "Doomed-Pass-2"))).await;
    assert_eq!(check.status, 503, "{check:?}");
    assert!(check.body.is_empty(), "{check:?}");
}

#[tokio::test]
async fn a_password_no_credential_can_have_costs_no_hashing() {
    let app = app_with_door(HashType::Sha512).await;
    app.add("long-target", "Long-Pass-1").await;
    for user in ["long-target", "nobody"] {
        let check = ask(&app, Some(&basic(user, &"x".repeat(60_000)))).await;
        assert_refused(&check);
    }
    assert_eq!(
        metric(&app, "rubber_verifications_total{how=\"hashed\"}").await,
        0
    );
    assert_eq!(
        metric(&app, "rubber_verifications_total{how=\"dummy\"}").await,
        0
    );
}

#[tokio::test]
async fn a_full_hashing_queue_answers_503_at_once() {
    let app = spawn_app_with(|s| {
        s.hash_type = HashType::Bcrypt;
        s.bcrypt_cost = 8;
        s.verify_cache_entries = 0;
        s.auth_request.listener.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    app.add("queued", "Queued-Pass-1").await;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let flood = cores * 32 + cores + 24;
    let checks: Vec<_> = (0..flood)
        .map(|_| {
            let client = app.client.clone();
            let url = format!("http://{}/auth", door(&app));
            tokio::spawn(async move {
                client
                    .get(url)
                    .header("authorization", basic("queued", "Wrong-Pass-1"))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for c in checks {
        statuses.push(c.await.unwrap().expect("answered"));
    }
    let busy = statuses.iter().filter(|s| **s == 503).count();
    assert!(busy > 0, "some answered 503: {statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 503 || *s == 401),
        "{statuses:?}"
    );
    assert_eq!(
        metric(&app, "rubber_hashing_refused_total").await,
        busy as u64
    );
}

#[tokio::test]
async fn a_full_door_closes_new_connections_and_the_other_door_still_answers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|s| {
        s.auth_request.listener.listen = Some("127.0.0.1:0".parse().unwrap());
        s.auth_request.listener.max_connections = 2;
    })
    .await;
    let held: Vec<_> = futures_connect(door(&app), 2).await;
    // The third is closed at once: the read sees the end of the stream.
    let mut third = tokio::net::TcpStream::connect(door(&app)).await.unwrap();
    let _ = third
        .write_all(b"GET /auth HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        third.read_to_end(&mut buf),
    )
    .await
    .expect("closed, not left hanging");
    assert!(read.is_err() || buf.is_empty(), "no answer on a full door");
    assert_eq!(
        metric(
            &app,
            "rubber_connections_refused_total{door=\"auth_request\"}"
        )
        .await,
        1
    );
    app.get("/healthz").await.assert_error("healthz", 200);
    drop(held);
    // Room again once the held connections go.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let check = ask(&app, None).await;
        if check.status == 401 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{check:?}");
    }
}

/// `n` connections to `addr`, each answered once and held open (kept
/// alive), so that each surely holds one of the door's slots.
async fn futures_connect(addr: SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut held = Vec::new();
    for _ in 0..n {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /auth HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(conn.read(&mut byte).await.unwrap(), 1, "answered");
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 401"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        held.push(conn);
    }
    held
}
