//! The real binary, at debug level, in both log formats, driven through
//! every path that carries a secret, accepted or refused: no password, no
//! hash, no token and no database password appears on its standard output
//! or error. The same for the command line's `add` and `hash` errors.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::callers::{write_callers, CI};
use crate::helpers::{encode_form, Served};
use crate::token::key_and_cert;

const BIN: &str = env!("CARGO_BIN_EXE_registry-rubber");

/// Passwords that are stored (their hashes are secrets too).
const STORED: [(&str, &str); 4] = [
    ("ci-query", "Query-Pass-5d0e1"),
    ("ci-form", "Form-Pass-72ac4"),
    ("ci-json", "Json-Pass-0b9f3"),
    ("ci-door", "Door-Pass-e61d2"),
];

/// Secrets sent on requests that are refused, or that must be refused.
const REFUSED: [&str; 12] = [
    "Wrong-Door-Pass-11aa",
    "Unknown-Name-22bb",
    "Wrong-Token-Door-Pass-33cc",
    "Wrong-Token-Form-Pass-44dd",
    "Post-Query-Pass-55ee",
    "Bad-Json-Pass-66ff",
    "Bad-Form-Pass-7707",
    "Wrong-Bearer-8818",
    "Forbidden-User-Pass-9929",
    "Bad-Name-Pass-aa3a",
    "Unknown-Door-Name-bb4b",
    "Too-Long-Pass-cc5c-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];

const DB_PASSWORD: &str = "Dsn-Pass-dd6d";

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// Every secret the matrix sent, and every one the service made.
struct Secrets(Vec<String>);

impl Secrets {
    fn assert_absent_from(&self, what: &str, output: &str) {
        for secret in &self.0 {
            assert!(
                !output.contains(secret.as_str()),
                "a secret ({} chars) reached {what}",
                secret.len()
            );
        }
    }
}

async fn matrix(log_format: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = key_and_cert(dir.path());
    let callers = dir.path().join("callers.toml");
    write_callers(&callers, r#""add", "remove", "renew", "replace""#);
    let arg = |s: &'static str| -> &'static OsStr { s.as_ref() };
    let mut served = Served::start_logging(
        dir.path(),
        log_format,
        &[
            arg("--log-level"),
            arg("debug"),
            arg("--sweep-interval"),
            arg("1"),
            arg("--hash-type"),
            arg("bcrypt"),
            arg("--bcrypt-cost"),
            arg("4"),
            arg("--callers-file"),
            callers.as_os_str(),
            arg("--auth-listen"),
            arg("127.0.0.1:0"),
            arg("--token-listen"),
            arg("127.0.0.1:0"),
            arg("--token-key"),
            key.as_os_str(),
            arg("--token-cert"),
            cert.as_os_str(),
        ],
    );
    let doors = served.doors(log_format, 3);
    let (api, auth, token) = (doors["api"], doors["auth_request"], doors["token"]);
    let client = reqwest::Client::new();
    let call = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    };
    let form = "application/x-www-form-urlencoded";

    // Adds that succeed, by query, form and JSON, with the callers' token.
    let (user, passwd) = STORED[0];
    let (status, body) = call(
        client
            .get(format!("http://{api}/add?user={user}&passwd={passwd}"))
            .bearer_auth(CI),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (user, passwd) = STORED[1];
    let (status, body) = call(
        client
            .post(format!("http://{api}/add"))
            .bearer_auth(CI)
            .header("content-type", form)
            .body(encode_form(&[("user", user), ("passwd", passwd)])),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for (user, passwd) in &STORED[2..] {
        let (status, body) = call(
            client
                .post(format!("http://{api}/add"))
                .bearer_auth(CI)
                .json(&serde_json::json!({"user": user, "passwd": passwd})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    // A generated password: the answer carries it.
    let (status, body) = call(
        client
            .post(format!("http://{api}/add"))
            .bearer_auth(CI)
            .json(&serde_json::json!({"user": "ci-generated"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let generated: serde_json::Value = serde_json::from_str(&body).unwrap();
    let generated = generated["passwd"].as_str().unwrap().to_owned();

    // The auth_request door: right, wrong, and a name no credential has.
    let ask = |authorization: String| {
        client
            .get(format!("http://{auth}/auth"))
            .header("x-original-uri", "/v2/team/app/manifests/latest")
            .header("authorization", authorization)
    };
    let (door_user, door_pass) = STORED[3];
    assert_eq!(call(ask(basic(door_user, door_pass))).await.0, 200);
    assert_eq!(call(ask(basic(door_user, REFUSED[0]))).await.0, 401);
    assert_eq!(call(ask(basic(REFUSED[1], door_pass))).await.0, 401);

    // The token door: a token with a refresh token, then refusals.
    let (status, body) = call(
        client
            .get(format!(
                "http://{token}/token?service=registry&offline_token=true&scope=repository:team/app:pull"
            ))
            .header("authorization", basic(door_user, door_pass)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let issued: serde_json::Value = serde_json::from_str(&body).unwrap();
    let jwt = issued["token"].as_str().unwrap().to_owned();
    let refresh = issued["refresh_token"].as_str().unwrap().to_owned();
    let (status, body) = call(
        client
            .post(format!("http://{token}/token"))
            .header("content-type", form)
            .body(encode_form(&[
                ("grant_type", "refresh_token"),
                ("service", "registry"),
                ("client_id", "matrix"),
                ("refresh_token", &refresh),
            ])),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let renewed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let renewed_jwt = renewed["access_token"].as_str().unwrap().to_owned();
    let (status, _) = call(
        client
            .get(format!("http://{token}/token?service=registry"))
            .header("authorization", basic(door_user, REFUSED[2])),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = call(
        client
            .post(format!("http://{token}/token"))
            .header("content-type", form)
            .body(encode_form(&[
                ("grant_type", "password"),
                ("service", "registry"),
                ("client_id", "matrix"),
                ("username", REFUSED[10]),
                ("password", REFUSED[3]),
            ])),
    )
    .await;
    assert_eq!(status, 401);

    // Refused at the API: a POST with its secret in the query string, a
    // malformed JSON body, a form with a bad escape, a wrong bearer token,
    // a user outside the caller's prefix, a bad name, a password too long
    // for bcrypt.
    let (status, body) = call(
        client
            .post(format!("http://{api}/add?passwd={}", REFUSED[4]))
            .bearer_auth(CI)
            .header("content-type", form)
            .body("user=ci-post-query"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = call(
        client
            .post(format!("http://{api}/add"))
            .bearer_auth(CI)
            .header("content-type", "application/json")
            .body(format!(
                "{{\"user\": \"ci-x\", \"passwd\": \"{}\"",
                REFUSED[5]
            )),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = call(
        client
            .post(format!("http://{api}/add"))
            .bearer_auth(CI)
            .header("content-type", form)
            .body(format!("user=ci-x&passwd={}%zz", REFUSED[6])),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = call(
        client
            .post(format!("http://{api}/add"))
            .bearer_auth(REFUSED[7])
            .header("content-type", form)
            .body("user=ci-x&passwd=p"),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    for (user, passwd, expected) in [
        ("prod-x", REFUSED[8], 403),
        ("ci-a:b", REFUSED[9], 400),
        ("ci-long", REFUSED[11], 400),
    ] {
        let (status, body) = call(
            client
                .post(format!("http://{api}/add"))
                .bearer_auth(CI)
                .header("content-type", form)
                .body(encode_form(&[("user", user), ("passwd", passwd)])),
        )
        .await;
        assert_eq!(status, expected, "{user}: {body}");
    }

    // Debug lines are written (the sweeper's, each second).
    served.wait_for("sweep: nothing expired");
    let (stopped, output) = served.stop_and_read();
    assert!(stopped, "{output}");
    // The capture works: the requests above reached it.
    assert!(output.contains("ci-form"), "{output}");

    let conn = rusqlite::Connection::open(dir.path().join("users.sqlite")).unwrap();
    let mut hashes: Vec<String> = conn
        .prepare("SELECT password FROM users")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(hashes.len(), STORED.len() + 1);
    // A hash without its prefix, and its salt and digest apart.
    hashes.extend(hashes.clone().iter().map(|h| h[7..].to_owned()));
    let mut secrets: Vec<String> = STORED.iter().map(|(_, p)| p.to_string()).collect();
    secrets.extend(REFUSED.iter().map(|s| s.to_string()));
    secrets.extend([
        CI.to_owned(),
        generated,
        refresh,
        jwt.rsplit('.').next().unwrap().to_owned(),
        renewed_jwt.rsplit('.').next().unwrap().to_owned(),
    ]);
    secrets.extend(hashes);
    Secrets(secrets).assert_absent_from(&format!("the {log_format} output"), &output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_binarys_text_output() {
    matrix("text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_binarys_json_output() {
    matrix("json").await;
}

/// Runs the binary's `args` with `stdin`, logging in `log_format` at debug
/// level; its exit code and both streams.
fn run(dir: &Path, log_format: &str, args: &[&str], stdin: &str) -> (Option<i32>, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(["--log-format", log_format, "--log-level", "debug"])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    match input.write_all(stdin.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn the_command_lines_errors_carry_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("users.sqlite").display());
    let (code, out) = run(
        dir.path(),
        "text",
        &["--database-url", &sqlite, "migrate"],
        "",
    );
    assert_eq!(code, Some(0), "{out}");
    // A port nothing listens on: the database does not answer.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mysql = format!("mysql://rubber:{DB_PASSWORD}@127.0.0.1:{port}/nowhere");
    let long = format!("Cli-Long-Pass-{}", "x".repeat(80));
    for log_format in ["text", "json"] {
        let cases: [(Vec<&str>, &str, i32); 7] = [
            (
                vec!["--database-url", &sqlite, "add", "bad:name"],
                "Cli-Bad-Name-Pass-1e",
                2,
            ),
            (
                vec!["--database-url", &sqlite, "add", "u", "--ttl", "soon"],
                "Cli-Bad-Ttl-Pass-2f",
                2,
            ),
            (
                vec![
                    "--database-url",
                    &sqlite,
                    "--hash-type",
                    "bcrypt",
                    "add",
                    "u",
                ],
                &long,
                2,
            ),
            (
                vec!["--database-url", &mysql, "add", "u"],
                "Cli-No-Db-Pass-3a",
                1,
            ),
            (vec!["--database-url", &mysql, "serve"], "", 1),
            (
                vec!["hash", "--type", "nonsense"],
                "Cli-Hash-Type-Pass-4b",
                2,
            ),
            (vec!["hash", "--type", "bcrypt"], &long, 2),
        ];
        for (args, stdin, expected) in cases {
            let (code, out) = run(dir.path(), log_format, &args, stdin);
            assert_eq!(code, Some(expected), "{args:?}: {out}");
            assert!(!out.trim().is_empty(), "{args:?} says why");
            if !stdin.is_empty() {
                assert!(
                    !out.contains(stdin),
                    "{args:?}: the password reached the output"
                );
            }
            assert!(
                !out.contains(DB_PASSWORD),
                "{args:?}: the database password reached the output"
            );
        }
    }
}
