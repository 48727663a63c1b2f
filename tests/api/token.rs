//! The token door against the real application, on either backend: the
//! token and its signature checked field by field against the
//! specification, grants by credential scopes and the ACL, refresh tokens
//! and their revocation, and the registry's error shape.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::Value;

use crate::helpers::{captured_logs, encode_form, spawn_app_with, TestApp, T0};

/// A P-256 key and a self-signed certificate for it, as PEM files.
pub fn key_and_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["token-signer".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (key_path, cert_path) = (dir.join("token.key"), dir.join("token.crt"));
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    (key_path, cert_path)
}

struct TokenApp {
    app: TestApp,
    cert: PathBuf,
    _dir: tempfile::TempDir,
}

async fn token_app(configure: impl FnOnce(&mut registry_rubber::config::Settings)) -> TokenApp {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = key_and_cert(dir.path());
    let cert_path = cert.clone();
    let app = spawn_app_with(move |s| {
        s.token.listener.listen = Some("127.0.0.1:0".parse().unwrap());
        s.token.key = Some(key);
        s.token.cert = Some(cert);
        configure(s);
    })
    .await;
    TokenApp {
        app,
        cert: cert_path,
        _dir: dir,
    }
}

fn door(app: &TestApp) -> SocketAddr {
    app.door(registry_rubber::config::Section::Token)
        .expect("the token door is open")
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// What the door answered: status, the WWW-Authenticate header, the JSON.
#[derive(Debug)]
struct Answer {
    status: u16,
    challenge: Option<String>,
    body: Value,
}

async fn get(app: &TestApp, query: &str, authorization: Option<&str>) -> Answer {
    let mut request = app
        .client
        .get(format!("http://{}/token?{query}", door(app)));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    answer(request.send().await.unwrap()).await
}

async fn post(app: &TestApp, form: &[(&str, &str)]) -> Answer {
    let request = app
        .client
        .post(format!("http://{}/token", door(app)))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode_form(form));
    answer(request.send().await.unwrap()).await
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        challenge,
        body,
    }
}

fn decode(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// The header and claims of a token, after checking its signature against
/// the public key of the certificate in its x5c.
fn open_token(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let header = decode(parts[0]);
    let der = STANDARD
        .decode(header["x5c"][0].as_str().expect("x5c"))
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        cert.public_key().subject_public_key.data.to_vec(),
    );
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("the signature verifies with the x5c certificate");
    (header, decode(parts[1]))
}

fn assert_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{answer:?}");
    assert_eq!(answer.body["errors"][0]["code"], code, "{answer:?}");
    assert!(
        answer.body["errors"][0]["message"].is_string(),
        "{answer:?}"
    );
}

fn assert_unauthorized(answer: &Answer) {
    assert_error(answer, 401, "UNAUTHORIZED");
    assert_eq!(
        answer.challenge.as_deref(),
        Some("Basic realm=\"registry token\""),
        "{answer:?}"
    );
}

#[tokio::test]
async fn a_token_follows_the_specification_field_by_field() {
    let t = token_app(|_| {}).await;
    let app = &t.app;
    app.add("full", "Full-Pass-1").await;
    let a = get(
        app,
        "service=registry&scope=repository:team/app:pull,push&client_id=tests",
        Some(&basic("full", "Full-Pass-1")),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let token = a.body["token"].as_str().unwrap();
    assert_eq!(
        a.body["access_token"], token,
        "token and access_token agree"
    );
    assert_eq!(a.body["expires_in"], 300);
    assert_eq!(a.body["issued_at"], registry_rubber::domain::rfc3339(T0));
    assert!(a.body.get("refresh_token").is_none(), "only when asked");
    let (header, claims) = open_token(token);
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["alg"], "ES256");
    // The kid is the RFC 7638 thumbprint of the certificate's key.
    let pem = std::fs::read_to_string(&t.cert).unwrap();
    let (_, cert_pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    assert_eq!(
        STANDARD.decode(header["x5c"][0].as_str().unwrap()).unwrap(),
        cert_pem.contents,
        "x5c holds the configured certificate"
    );
    let (_, cert) = x509_parser::parse_x509_certificate(&cert_pem.contents).unwrap();
    let point = cert.public_key().subject_public_key.data.to_vec();
    let thumbprint = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(&point[1..33]),
            URL_SAFE_NO_PAD.encode(&point[33..65])
        )
        .as_bytes(),
    ));
    assert_eq!(header["kid"], thumbprint);
    assert_eq!(claims["iss"], "registry-rubber");
    assert_eq!(claims["sub"], "full");
    assert_eq!(claims["aud"], "registry");
    assert_eq!(claims["iat"], T0);
    assert_eq!(claims["nbf"], T0);
    assert_eq!(claims["exp"], T0 + 300);
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
    assert_eq!(
        claims["access"],
        serde_json::json!([{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}])
    );
    // Each token is its own.
    let again = get(
        app,
        "service=registry&scope=repository:team/app:pull",
        Some(&basic("full", "Full-Pass-1")),
    )
    .await;
    let (_, other) = open_token(again.body["token"].as_str().unwrap());
    assert_ne!(other["jti"], claims["jti"]);
    // The key set publishes the same key.
    let jwks: Value = app
        .client
        .get(format!("http://{}/.well-known/jwks.json", door(app)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], thumbprint);
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert_eq!(jwks["keys"][0]["crv"], "P-256");
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
    // A plain login asks for no scope and gets an empty grant.
    let login = get(app, "service=registry", Some(&basic("full", "Full-Pass-1"))).await;
    let (_, claims) = open_token(login.body["token"].as_str().unwrap());
    assert_eq!(claims["access"], serde_json::json!([]));
}

#[tokio::test]
async fn a_scoped_credential_gets_only_what_its_scopes_allow() {
    let t = token_app(|_| {}).await;
    let app = &t.app;
    let added = app
        .post_form(
            "/add",
            &[
                ("user", "puller"),
                ("passwd", "Pull-Pass-1"),
                ("scope", "repository:team/app:pull"),
            ],
        )
        .await;
    assert_eq!(
        added.body["scopes"], "repository:team/app:pull",
        "{added:?}"
    );
    let listed = app.get("/list?prefix=puller").await;
    assert_eq!(
        listed.body["users"][0]["scopes"],
        "repository:team/app:pull"
    );
    let a = get(
        app,
        "service=registry&scope=repository:team/app:pull,push&scope=repository:other/app:pull",
        Some(&basic("puller", "Pull-Pass-1")),
    )
    .await;
    assert_eq!(a.status, 200, "a partial grant is not an error: {a:?}");
    let (_, claims) = open_token(a.body["token"].as_str().unwrap());
    assert_eq!(
        claims["access"],
        serde_json::json!([{"type": "repository", "name": "team/app", "actions": ["pull"]}])
    );
    // A plugin pull (a class on the type) is granted as the repository is,
    // the class answered back.
    let plugin = get(
        app,
        "service=registry&scope=repository(plugin):team/app:pull,push&scope=repository(plugin):other/app:pull",
        Some(&basic("puller", "Pull-Pass-1")),
    )
    .await;
    assert_eq!(plugin.status, 200, "{plugin:?}");
    let (_, claims) = open_token(plugin.body["token"].as_str().unwrap());
    assert_eq!(
        claims["access"],
        serde_json::json!([{"type": "repository", "class": "plugin", "name": "team/app", "actions": ["pull"]}])
    );
    // A bad scope pattern on add is refused, and nothing is written.
    let bad = app
        .post_form(
            "/add",
            &[
                ("user", "bad-scope"),
                ("passwd", "p"),
                ("scope", "repository:Team/*:pull"),
            ],
        )
        .await;
    bad.assert_error("add", 400);
    assert!(app.stored_hash("bad-scope").await.is_none());
    // So is a scope given but empty, in any form: it never means the
    // default, which may allow far more.
    let empties: [serde_json::Value; 4] = [
        serde_json::json!({"user": "empty-scope", "passwd": "p", "scope": []}),
        serde_json::json!({"user": "empty-scope", "passwd": "p", "scope": [""]}),
        serde_json::json!({"user": "empty-scope", "passwd": "p", "scope": " "}),
        serde_json::json!({"user": "empty-scope", "passwd": "p", "scope": null}),
    ];
    for body in &empties {
        let refused = app.post_json("/add", body).await;
        refused.assert_error("add", 400);
        assert!(
            refused.body["msg"].as_str().unwrap().contains("empty"),
            "{body}: {refused:?}"
        );
    }
    let form = app
        .post_form(
            "/add",
            &[("user", "empty-scope"), ("passwd", "p"), ("scope", "")],
        )
        .await;
    form.assert_error("add", 400);
    assert!(app.stored_hash("empty-scope").await.is_none());
    // JSON lists work too.
    let listed = app
        .post_json(
            "/add",
            &serde_json::json!({"user": "two", "passwd": "p", "scope": ["repository:a/*:pull", "repository:b:push"]}),
        )
        .await;
    assert_eq!(
        listed.body["scopes"],
        "repository:a/*:pull repository:b:push"
    );
}

#[tokio::test]
async fn the_acl_limits_every_grant_and_alone_grants_the_catalog() {
    let t = token_app(|s| {
        s.token.acl = registry_rubber::domain::AclRule::parse_list(
            "account=ci-* name=team/* actions=pull; account=admin scope=registry:catalog:*; account=* scope=repository:*:*",
        )
        .unwrap();
    })
    .await;
    let app = &t.app;
    app.add("ci-1", "Ci-Pass-1").await;
    app.add("admin", "Admin-Pass-1").await;
    let access = |a: Answer| open_token(a.body["token"].as_str().unwrap()).1["access"].clone();
    let a = get(
        app,
        "service=registry&scope=repository:team/app:pull,push&scope=registry:catalog:*",
        Some(&basic("ci-1", "Ci-Pass-1")),
    )
    .await;
    assert_eq!(
        access(a),
        serde_json::json!([{"type": "repository", "name": "team/app", "actions": ["pull"]}])
    );
    let a = get(
        app,
        "service=registry&scope=registry:catalog:*",
        Some(&basic("admin", "Admin-Pass-1")),
    )
    .await;
    assert_eq!(
        access(a),
        serde_json::json!([{"type": "registry", "name": "catalog", "actions": ["*"]}])
    );
}

#[tokio::test]
async fn refused_requests_get_the_registrys_error_shape() {
    let t = token_app(|_| {}).await;
    let app = &t.app;
    app.add("user-1", "User-Pass-1").await;
    let right = basic("user-1", "User-Pass-1");
    assert_unauthorized(&get(app, "service=registry", None).await);
    assert_unauthorized(&get(app, "service=registry", Some(&basic("user-1", "wrong"))).await);
    assert_unauthorized(
        &get(
            app,
            "service=registry",
            Some(&basic("nobody-tok", "User-Pass-1")),
        )
        .await,
    );
    assert_unauthorized(&get(app, "service=registry", Some("Bearer abc")).await);
    assert_error(
        &get(app, "service=other", Some(&right)).await,
        400,
        "UNSUPPORTED",
    );
    assert_error(
        &get(app, "scope=repository:a:pull", Some(&right)).await,
        400,
        "UNSUPPORTED",
    );
    for bad in [
        "repository:Team/app:pull",
        "repository",
        "repository:a:pull;x",
        "x:y",
    ] {
        let a = get(app, &format!("service=registry&scope={bad}"), Some(&right)).await;
        assert_error(&a, 400, "UNSUPPORTED");
    }
    assert_error(
        &get(app, "service=registry&scope=%zz", Some(&right)).await,
        400,
        "UNSUPPORTED",
    );
    // POST: a form in the body only, and a known grant.
    assert_error(
        &post(app, &[("grant_type", "magic"), ("service", "registry")]).await,
        400,
        "UNSUPPORTED",
    );
    let in_url = app
        .client
        .post(format!(
            "http://{}/token?grant_type=password&service=registry&username=user-1&password=User-Pass-1",
            door(app)
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(
        in_url.status().as_u16(),
        400,
        "secrets never ride in the URL of a POST"
    );
    assert_unauthorized(
        &post(
            app,
            &[
                ("grant_type", "password"),
                ("service", "registry"),
                ("username", "user-1"),
                ("password", "wrong"),
            ],
        )
        .await,
    );
    let unknown = app
        .client
        .get(format!("http://{}/nothing", door(app)))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    // HEAD would sign a token nobody sees (and store a refresh token): 405.
    let issued_before =
        crate::helpers::metric_value(app, "rubber_tokens_issued_total{kind=\"access\"}").await;
    let head = app
        .client
        .head(format!(
            "http://{}/token?service=registry&offline_token=true",
            door(app)
        ))
        .header("authorization", &right)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status().as_u16(), 405);
    assert_eq!(head.headers()["allow"], "GET, POST");
    assert_eq!(
        crate::helpers::metric_value(app, "rubber_tokens_issued_total{kind=\"access\"}").await,
        issued_before,
        "no token signed for a HEAD"
    );
    let jwks = app
        .client
        .post(format!("http://{}/.well-known/jwks.json", door(app)))
        .send()
        .await
        .unwrap();
    assert_eq!(jwks.status().as_u16(), 405);
    assert_eq!(jwks.headers()["allow"], "GET, HEAD");
    let big = "a".repeat(20_000);
    assert_error(
        &post(app, &[("grant_type", "password"), ("pad", &big)]).await,
        413,
        "UNSUPPORTED",
    );
    let logs = captured_logs();
    assert!(!logs.contains("User-Pass-1"), "no password in the log");
    // Refusals are audited with the user, a pseudonym for a name no
    // credential has (it may be a password typed in the wrong field).
    let refused: Vec<_> = app
        .logs()
        .into_iter()
        .filter(|e| e.is_audit(&[("action", "token"), ("result", "refused")]))
        .collect();
    assert!(
        refused
            .iter()
            .any(|e| e.has(&[("reason", "wrong_password"), ("user", "user-1")])),
        "{refused:#?}"
    );
    assert!(
        refused.iter().any(|e| e.has(&[("reason", "unknown_user")])
            && e.field("user").is_some_and(|u| u.starts_with("unknown-"))),
        "{refused:#?}"
    );
    assert!(
        !logs.contains("nobody-tok"),
        "an unknown name is not logged"
    );
}

#[tokio::test]
async fn removed_and_expired_credentials_get_no_token_and_none_outlives_its_credential() {
    let t = token_app(|_| {}).await;
    let app = &t.app;
    app.add("gone", "Gone-Pass-1").await;
    app.post_form("/remove", &[("user", "gone")]).await;
    assert_unauthorized(&get(app, "service=registry", Some(&basic("gone", "Gone-Pass-1"))).await);
    app.post_form(
        "/add",
        &[
            ("user", "brief"),
            ("passwd", "Brief-Pass-1"),
            ("ttl", "200"),
        ],
    )
    .await;
    // 200 s to live, less the registry's 60 s leeway: 140 s, not 300.
    let a = get(
        app,
        "service=registry",
        Some(&basic("brief", "Brief-Pass-1")),
    )
    .await;
    assert_eq!(a.body["expires_in"], 140, "{a:?}");
    let (_, claims) = open_token(a.body["token"].as_str().unwrap());
    assert_eq!(claims["exp"], T0 + 140);
    // Within the leeway, no token at all: it would outlive the credential.
    app.clock.advance(141);
    let late = get(
        app,
        "service=registry",
        Some(&basic("brief", "Brief-Pass-1")),
    )
    .await;
    assert_unauthorized(&late);
    assert!(
        late.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("leeway"),
        "says why: {late:?}"
    );
    app.clock.advance(100);
    assert_unauthorized(
        &get(
            app,
            "service=registry",
            Some(&basic("brief", "Brief-Pass-1")),
        )
        .await,
    );
}

#[tokio::test]
async fn refresh_tokens_get_new_tokens_until_their_credential_is_removed_or_replaced() {
    let t = token_app(|_| {}).await;
    let app = &t.app;
    app.add("offline", "Offline-Pass-1").await;
    let a = get(
        app,
        "service=registry&offline_token=true",
        Some(&basic("offline", "Offline-Pass-1")),
    )
    .await;
    let refresh = a.body["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_owned();
    assert!(refresh.len() >= 40, "{refresh}");
    let renewed = |refresh: String| async move {
        post(
            app,
            &[
                ("grant_type", "refresh_token"),
                ("service", "registry"),
                ("client_id", "tests"),
                ("refresh_token", &refresh),
                ("scope", "repository:team/app:pull"),
            ],
        )
        .await
    };
    let b = renewed(refresh.clone()).await;
    assert_eq!(b.status, 200, "{b:?}");
    assert_eq!(
        b.body["refresh_token"],
        refresh.as_str(),
        "the same refresh token back"
    );
    assert_eq!(b.body["scope"], "repository:team/app:pull");
    let (_, claims) = open_token(b.body["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "offline");
    // Another service is not this token's.
    let other = post(
        app,
        &[
            ("grant_type", "refresh_token"),
            ("service", "other"),
            ("refresh_token", &refresh),
        ],
    )
    .await;
    assert_eq!(other.status, 400);
    // A replaced password kills it, at once.
    app.add("offline", "Offline-Pass-2").await;
    assert_unauthorized(&renewed(refresh.clone()).await);
    // The OAuth2 password grant issues one too; a removal kills it.
    let c = post(
        app,
        &[
            ("grant_type", "password"),
            ("service", "registry"),
            ("client_id", "tests"),
            ("access_type", "offline"),
            ("username", "offline"),
            ("password", "Offline-Pass-2"),
        ],
    )
    .await;
    assert_eq!(c.status, 200, "{c:?}");
    let refresh = c.body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(renewed(refresh.clone()).await.status, 200);
    app.post_form("/remove", &[("user", "offline")]).await;
    assert_unauthorized(&renewed(refresh.clone()).await);
    assert_unauthorized(&renewed("made-up-token".to_owned()).await);
    // Tokens are audited, never written out.
    let events = app.logs();
    for grant in ["password", "refresh_token"] {
        assert!(
            events.iter().any(|e| e.is_audit(&[
                ("action", "token"),
                ("result", "ok"),
                ("user", "offline"),
                ("grant", grant)
            ])),
            "an audit line per token, saying how it was asked for: {grant}: {events:#?}"
        );
    }
    let logs = captured_logs();
    assert!(!logs.contains(&refresh), "no refresh token in the log");
    assert!(
        crate::helpers::metric_value(app, "rubber_tokens_issued_total{kind=\"refresh\"}").await
            >= 2
    );
}
