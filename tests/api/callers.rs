//! Named callers: the callers file names each caller by a bearer token (by
//! its digest) or a client certificate subject, and limits what it may do;
//! the credential core enforces it, and the audit names the caller.

use std::path::Path;

use crate::helpers::{captured_logs, decode, encode_form, spawn_app_with, Answer, TestApp};

pub const CI: &str = "ci-token-6b1f0c2e9a7d4b3c";
const CRON: &str = "cron-token-0e8d7c6b5a493827";

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn write_callers(path: &Path, ci_actions: &str) {
    std::fs::write(
        path,
        format!(
            r#"
[[caller]]
name = "ci"
token_sha256 = "{}"
actions = [{ci_actions}]
users = "ci-"

[[caller]]
name = "cron"
token_sha256 = "{}"
actions = ["cleanup"]
users = "*"
"#,
            sha256_hex(CI),
            sha256_hex(CRON)
        ),
    )
    .unwrap();
    // Writable by its owner only, whatever the umask: the service refuses
    // a callers file others may write.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

async fn call(app: &TestApp, path: &str, token: Option<&str>, form: &[(&str, &str)]) -> Answer {
    let mut request = app
        .client
        .post(app.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode_form(form));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    decode(request.send().await.expect("request sent")).await
}

#[tokio::test]
async fn each_caller_may_do_what_the_callers_file_allows_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("callers.toml");
    write_callers(&file, r#""add", "remove", "renew""#);
    let app = spawn_app_with(|s| s.api.callers_file = Some(file.clone())).await;

    // Unnamed callers get 401 and change nothing; health stays open.
    let anonymous = call(&app, "/add", None, &[("user", "ci-1"), ("passwd", "p")]).await;
    anonymous.assert_error("add", 401);
    let wrong = call(
        &app,
        "/add",
        Some("not-a-token"),
        &[("user", "ci-1"), ("passwd", "p")],
    )
    .await;
    wrong.assert_error("add", 401);
    assert!(app.db.stored_hash("ci-1").await.is_none());
    let challenge = app.client.post(app.url("/add")).send().await.unwrap();
    assert_eq!(
        challenge.headers()["www-authenticate"],
        "Bearer realm=\"registry-rubber\""
    );
    assert_eq!(app.get("/healthz").await.status, 200);

    // ci: add, renew and remove its own names.
    let added = call(
        &app,
        "/add",
        Some(CI),
        &[("user", "ci-1"), ("passwd", "Pass-1")],
    )
    .await;
    added.assert_envelope("add", 200, "Added user ci-1");
    let first_hash = app.db.stored_hash("ci-1").await.unwrap();
    assert_eq!(
        call(&app, "/renew", Some(CI), &[("user", "ci-1")])
            .await
            .status,
        200
    );
    // A generated name is one of its own.
    let generated = call(&app, "/add", Some(CI), &[]).await;
    assert_eq!(generated.status, 200, "{generated:?}");
    let name = generated.body["user"].as_str().unwrap().to_owned();
    assert!(name.starts_with("ci-"), "{name}");
    // Not another's name, not a replacement, not a cleanup, not a list.
    let other = call(
        &app,
        "/add",
        Some(CI),
        &[("user", "prod-1"), ("passwd", "p")],
    )
    .await;
    other.assert_error("add", 403);
    assert!(app.db.stored_hash("prod-1").await.is_none());
    let again = call(
        &app,
        "/add",
        Some(CI),
        &[("user", "ci-1"), ("passwd", "Pass-2")],
    )
    .await;
    again.assert_error("add", 409);
    assert!(
        again.body["msg"].as_str().unwrap().contains("replace"),
        "{again:?}"
    );
    assert_eq!(app.db.stored_hash("ci-1").await.unwrap(), first_hash);
    let cleanup = call(&app, "/cleanup", Some(CI), &[("older_than", "60")]).await;
    cleanup.assert_error("cleanup", 403);
    let list = app
        .client
        .get(app.url("/list"))
        .bearer_auth(CI)
        .send()
        .await
        .unwrap();
    decode(list).await.assert_error("list", 403);
    let removed = call(&app, "/remove", Some(CI), &[("user", "prod-1")]).await;
    removed.assert_error("remove", 403);

    // cron: cleanup only.
    let cron_add = call(
        &app,
        "/add",
        Some(CRON),
        &[("user", "ci-9"), ("passwd", "p")],
    )
    .await;
    cron_add.assert_error("add", 403);
    let swept = call(&app, "/cleanup", Some(CRON), &[("older_than", "3600")]).await;
    assert_eq!(swept.status, 200, "{swept:?}");
    assert_eq!(
        call(&app, "/remove", Some(CI), &[("user", "ci-1")])
            .await
            .status,
        200
    );
    assert!(app.db.stored_hash("ci-1").await.is_none());

    // The audit names the caller, and the refusals are audited too.
    let events = app.logs();
    assert!(
        events.iter().any(|e| e.is_audit(&[
            ("action", "add"),
            ("result", "ok"),
            ("user", "ci-1"),
            ("caller_name", "ci")
        ])),
        "an audit line naming the caller: {events:#?}"
    );
    assert!(
        events.iter().any(|e| e.is_audit(&[
            ("action", "add"),
            ("result", "forbidden"),
            ("caller_name", "ci")
        ]) && e.field("user").is_some_and(|u| u.starts_with("unknown-"))),
        "refusals are audited, the name refused as a pseudonym: {events:#?}"
    );
    let logs = captured_logs();
    assert!(
        !logs.contains("prod-1"),
        "a name refused may be anything a caller typed: never in the log"
    );
    assert!(
        !logs.contains(CI) && !logs.contains(CRON),
        "no token in the log"
    );
}

#[tokio::test]
async fn a_reload_puts_a_new_callers_file_in_force_and_keeps_the_old_on_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("callers.toml");
    write_callers(&file, r#""add""#);
    let app = spawn_app_with(|s| s.api.callers_file = Some(file.clone())).await;
    let add = |user: &'static str| {
        let app = &app;
        async move { call(app, "/add", Some(CI), &[("user", user), ("passwd", "p")]).await }
    };
    assert_eq!(add("ci-a").await.status, 200);
    // ci loses add.
    write_callers(&file, r#""renew""#);
    let done = app.reloader.apply(None);
    assert!(
        done.iter()
            .any(|(door, what, r)| *door == "api" && *what == "callers file" && r.is_ok()),
        "{done:?}"
    );
    add("ci-b").await.assert_error("add", 403);
    // A broken file is refused; the callers in force stay.
    std::fs::write(&file, "[[caller]]\nname = ").unwrap();
    let done = app.reloader.apply(None);
    assert!(
        done.iter()
            .any(|(_, what, r)| *what == "callers file" && r.is_err()),
        "{done:?}"
    );
    add("ci-c").await.assert_error("add", 403);
    assert_eq!(
        call(&app, "/renew", Some(CI), &[("user", "ci-a")])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_bad_callers_file_stops_the_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("callers.toml");
    std::fs::write(
        &file,
        "[[caller]]\nname = \"x\"\ntoken_sha256 = \"00\"\nactions = [\"add\"]\n",
    )
    .unwrap();
    let db = crate::helpers::TestDb::fresh().await;
    let mut settings = crate::helpers::test_settings(&db);
    settings.api.callers_file = Some(file.clone());
    let err = registry_rubber::startup::Application::build(&settings)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("64 hex digits"), "{err}");
    assert!(err.contains(&file.display().to_string()), "{err}");
}
