//! The registry's token authentication, with no web server in front:
//! docker-registry started from deploy/registry-token.yml.sample (only its
//! `${RR_*}` placeholders given values), serving HTTPS with the test PKI and
//! running as nobody:nogroup, trusts the tokens the real registry-rubber
//! binary's token door signs with a key and certificate made by the
//! README's openssl commands; skopeo takes its credentials to the door
//! itself (the realm: plain http on loopback, or https).
//!
//! On SQLite and on MariaDB (two instances on one database): a full
//! credential pushes and pulls; a credential scoped to pull one repository
//! pulls it and neither pushes to it nor pulls another; a removed or expired
//! credential gets no token, while a token issued before a removal lives
//! out its exp; a refresh token gets access tokens the registry accepts,
//! until its credential is removed. On SQLite: `skopeo login` and a scoped
//! pull through a door speaking TLS; the ACL (first match wins, the catalog
//! by a rule only) and `delete` only when granted; tokens tampered with,
//! signed by another key, for another issuer or audience, or past the
//! registry's leeway refused by the registry, each for its reason; a door
//! configured for another service gets skopeo nowhere. Also the checks of
//! the sample and of the README's commands that need no running process.
//! The delays are printed (run with `--nocapture` to see them).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::oci;
use crate::support::clients::{run_curl, skopeo, HttpAnswer, Run};
use crate::support::nginx::{
    assert_only_placeholders_differ, documented_envsubst_names, documented_render_commands,
    placeholders, render, run_render_commands,
};
use crate::support::pki::{TokenSigner, TOKEN_SIGNER_COMMANDS};
use crate::support::process::poll;
use crate::support::registry_sample::read_token_sample;
use crate::support::stack::{TOKEN_ISSUER, TOKEN_SERVICE};
use crate::support::{epoch_now, unique, Creds, Front, Stack, StackOptions};

/// Seconds docker-registry 2.8 accepts a token past its `exp` (and before
/// its `nbf`).
const REGISTRY_LEEWAY: i64 = 60;
/// The door's default token lifetime (RUBBER_TOKEN_TTL unset).
const TOKEN_TTL: i64 = 300;
/// Room for a busy, shared test machine on top of every bound.
const SLACK: Duration = Duration::from_secs(5);
/// The repository a full credential pushes and a scoped one may pull, and
/// one it may not.
const TEAM_APP: &str = "team/app";
const OTHER_APP: &str = "other/app";
/// The scope a pull-only credential is added with.
const PULL_TEAM_APP: &str = "repository:team/app:pull";
/// What skopeo prints when the registry refuses a request its token does
/// not grant (the registry's DENIED error).
const DENIED: &str = "denied: requested access to the resource is denied";
/// What skopeo prints when the door refuses its credentials: no token.
const NO_TOKEN: &str = "unable to retrieve auth token: invalid username/password";

/// Where the service keeps its users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Db {
    Sqlite,
    /// A MariaDB server of the stack's own, shared by two instances, each
    /// with its token door (the registry's realm is the first's).
    MariaDb,
}

/// A token stack on `db`, with more environment for the service.
fn token_stack(db: Db, service_env: Vec<(&'static str, &'static str)>) -> Stack {
    Stack::start_with(StackOptions {
        front: Front::Token,
        mysql: db == Db::MariaDb,
        service_env,
        ..StackOptions::default()
    })
}

/// Adds `user` with `password` and scope `scope`; returns the answer.
async fn add_scoped(stack: &Stack, user: &str, password: &str, scope: &str) -> Value {
    let answer = stack
        .ok(
            "/add",
            &[("user", user), ("passwd", password), ("scope", scope)],
        )
        .await;
    assert_eq!(answer["scopes"], scope, "{answer}");
    answer
}

/// Removes `user`: through the second instance on MariaDB (the first, whose
/// door the registry names, learns it from the database alone), through
/// the only one on SQLite.
async fn remove(stack: &Stack, db: Db, user: &str) {
    let answer = match db {
        Db::Sqlite => stack.remove(user).await,
        Db::MariaDb => stack.second_ok("/remove", &[("user", user)]).await,
    };
    assert_eq!(answer["found"], true, "{answer}");
}

/// Mints a full credential (no scope: the default, every repository, pull
/// and push) and pushes a fresh image with it to `repo:v1`; returns the
/// user, its password and the image.
async fn full_user_with_image(stack: &Stack, repo: &str) -> (String, String, oci::Image) {
    let user = unique("token-full");
    let password = unique("pw-");
    let answer = stack.add(&user, &password).await;
    assert!(answer["scopes"].is_null(), "no scope of its own: {answer}");
    let image = oci::write_image(
        &stack.dir().join(unique("layout-")),
        "v1",
        &format!("{repo} pushed by {user}\n"),
    );
    stack
        .push(Creds::new(&user, &password), &image.layout, "v1", repo)
        .expect_success();
    (user, password, image)
}

/// Panics unless skopeo got a token and the registry refused what it
/// asked with it.
fn assert_denied(run: &Run) {
    assert!(
        !run.succeeded() && run.stderr().contains(DENIED),
        "expected the registry's denial ({DENIED}), got: {run}"
    );
}

/// Panics unless skopeo failed because the door refused its credentials.
fn assert_no_token(run: &Run) {
    assert!(
        !run.succeeded() && run.stderr().contains(NO_TOKEN),
        "expected the door's refusal ({NO_TOKEN}), got: {run}"
    );
}

/// How many lines of the registry's log so far contain `reason`.
fn registry_logged(stack: &Stack, reason: &str) -> usize {
    stack
        .registry_log()
        .lines()
        .filter(|l| l.contains(reason))
        .count()
}

/// Waits (briefly) until the registry has logged `reason` once more than
/// `before` times: why it refused the last request.
fn assert_registry_logged(stack: &Stack, reason: &str, before: usize, what: &str) {
    let logged = poll(SLACK, || {
        (registry_logged(stack, reason) > before).then_some(())
    });
    assert!(
        logged.is_some(),
        "{what}: the registry did not log {reason:?}:\n{}",
        stack.registry_log()
    );
}

/// Sends `token` to the registry and asserts its 401 and the reason it logs.
fn assert_token_refused(
    stack: &Stack,
    (method, path): (&str, &str),
    token: &str,
    reason: &str,
    what: &str,
) {
    let before = registry_logged(stack, reason);
    assert_registry_refused(
        stack,
        &with_token(stack, method, path, token),
        "invalid_token",
        what,
    );
    assert_registry_logged(stack, reason, before, what);
}

// --- The token door, over HTTP ----------------------------------------------

/// What a token door answered.
#[derive(Debug)]
struct DoorAnswer {
    status: u16,
    body: Value,
}

impl DoorAnswer {
    /// The access token of a 200; panics otherwise.
    fn token(&self) -> String {
        assert_eq!(self.status, 200, "{self:?}");
        let token = self.body["token"].as_str().expect("a token").to_owned();
        assert_eq!(self.body["access_token"], token.as_str(), "{self:?}");
        token
    }

    /// Panics unless the door refused with the registry's error shape.
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.body["errors"][0]["code"], code, "{self:?}");
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build an HTTP client")
}

async fn door_answer(request: reqwest::RequestBuilder) -> DoorAnswer {
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("the token door did not answer: {e}"));
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    DoorAnswer { status, body }
}

/// `GET /token?service=SERVICE&scope=...` at `door` with Basic `creds`, as
/// registry clients ask.
async fn door_get(
    door: SocketAddr,
    service: &str,
    scopes: &[&str],
    creds: Creds<'_>,
) -> DoorAnswer {
    let mut query = vec![("service", service)];
    query.extend(scopes.iter().map(|s| ("scope", *s)));
    door_answer(
        http()
            .get(format!("http://{door}/token"))
            .query(&query)
            .basic_auth(creds.user, Some(creds.password)),
    )
    .await
}

/// `POST /token` at `door` with `form` (the OAuth2 grants).
async fn door_post(door: SocketAddr, form: &[(&str, &str)]) -> DoorAnswer {
    door_answer(http().post(format!("http://{door}/token")).form(form)).await
}

/// The JSON of one base64url part of a token.
fn decode(part: &str) -> Value {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .unwrap_or_else(|e| panic!("a token part is not base64url: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("a token part is not JSON: {e}"))
}

fn parts(token: &str) -> [&str; 3] {
    let parts: Vec<&str> = token.split('.').collect();
    parts
        .try_into()
        .unwrap_or_else(|_| panic!("not a JWT: {token}"))
}

fn header_of(token: &str) -> Value {
    decode(parts(token)[0])
}

fn claims_of(token: &str) -> Value {
    decode(parts(token)[1])
}

// --- The registry, with a bearer token -------------------------------------

/// `METHOD https://REGISTRY<path>` with `Authorization: Bearer token`.
fn with_token(stack: &Stack, method: &str, path: &str, token: &str) -> HttpAnswer {
    let mut command = stack.curl();
    command.args([
        "--request",
        method,
        "--header",
        &format!("Authorization: Bearer {token}"),
    ]);
    run_curl(command.arg(format!("https://{}{path}", stack.registry_host)))
}

/// The registry's Bearer challenge: the sample's realm (the door), service
/// and, past `/v2/`, the scope the request needs.
fn challenge(stack: &Stack, scope: Option<&str>) -> String {
    let base = format!(
        "Bearer realm=\"{}\",service=\"{TOKEN_SERVICE}\"",
        stack.token_realm()
    );
    match scope {
        Some(scope) => format!("{base},scope=\"{scope}\""),
        None => base,
    }
}

/// Asserts the registry's own 401 for `what`: its Bearer challenge with
/// `error` (`invalid_token`, `insufficient_scope`) naming the door.
fn assert_registry_refused(stack: &Stack, answer: &HttpAnswer, error: &str, what: &str) {
    assert_eq!(answer.status, 401, "{what}: {answer:?}");
    let challenges = answer.header("WWW-Authenticate");
    assert!(
        challenges.len() == 1
            && challenges[0].starts_with(&challenge(stack, None))
            && challenges[0].contains(&format!("error=\"{error}\"")),
        "{what}: one Bearer challenge with error=\"{error}\": {answer:?}"
    );
    assert!(
        answer.body.contains("\"UNAUTHORIZED\""),
        "{what}: the registry's error body: {answer:?}"
    );
}

/// A JWT of `header` and `claims` signed with ES256 by the PKCS#8 `key`,
/// as the door signs.
fn sign(header: &Value, claims: &Value, key: &[u8]) -> String {
    let rng = ring::rand::SystemRandom::new();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        key,
        &rng,
    )
    .expect("an EC P-256 key in PKCS#8");
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = pair.sign(&rng, input.as_bytes()).expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

/// `token` with one text of its claims replaced, byte for byte, its header
/// and signature kept.
fn tampered(token: &str, from: &str, to: &str) -> String {
    let [header, claims, signature] = parts(token);
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(claims).expect("base64url"))
        .expect("the claims are UTF-8");
    assert_eq!(text.matches(from).count(), 1, "{from} once in {text}");
    let changed = text.replacen(from, to, 1);
    format!(
        "{header}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(changed.as_bytes())
    )
}

/// The certificate of a PEM file as an x5c entry: standard base64 of its DER.
fn x5c_entry(cert: &Path) -> String {
    let pem = std::fs::read(cert).unwrap_or_else(|e| panic!("read {}: {e}", cert.display()));
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)
        .unwrap_or_else(|e| panic!("{} is not PEM: {e}", cert.display()));
    STANDARD.encode(pem.contents)
}

// --- The sample and the README, without processes ----------------------------

/// Values for every placeholder, none of them the sample's examples.
fn test_values() -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("RR_STORAGE_DIR", "/tmp/rr-test/storage".to_owned()),
        ("RR_REGISTRY_ADDR", "127.0.0.1:15443".to_owned()),
        ("RR_HTTP_SECRET", "0123456789abcdef".to_owned()),
        ("RR_TLS_CERT", "/tmp/rr-test/server.crt".to_owned()),
        ("RR_TLS_KEY", "/tmp/rr-test/server.key".to_owned()),
        (
            "RR_TOKEN_REALM",
            "https://registry.test:15082/token".to_owned(),
        ),
        ("RR_TOKEN_SERVICE", "test-registry".to_owned()),
        ("RR_TOKEN_ISSUER", "test-issuer".to_owned()),
        (
            "RR_TOKEN_ROOTCERTBUNDLE",
            "/tmp/rr-test/signing.crt".to_owned(),
        ),
    ])
}

#[test]
fn token_sample_placeholders_are_all_documented_and_rendered_alone() {
    let sample = read_token_sample();
    let used = placeholders(&sample);
    assert_eq!(
        used,
        documented_envsubst_names(&sample),
        "the envsubst list in the header names exactly the placeholders"
    );
    for name in &used {
        assert!(
            sample
                .lines()
                .any(|l| l.starts_with(&format!("#   {name} "))),
            "the header describes {name} with an example value"
        );
    }
    let values = test_values();
    let rendered = render(&sample, &values);
    assert_only_placeholders_differ(&sample, &rendered);

    // The header's commands render exactly what the tests render, and name
    // an unset variable.
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let out = dir.path().join("config.yml");
    let target = "/etc/docker/registry/config.yml";
    let commands =
        documented_render_commands(&sample, target).replace(target, &out.display().to_string());
    let output = run_render_commands(&commands, &values);
    assert!(
        output.status.success() && output.stdout.is_empty(),
        "the documented commands failed or complained: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let written = std::fs::read_to_string(&out).expect("envsubst wrote the configuration");
    assert_eq!(written, rendered, "envsubst and the tests render alike");
    let mut partial = values.clone();
    partial.remove("RR_TOKEN_ROOTCERTBUNDLE");
    let output = run_render_commands(&commands, &partial);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("not set: RR_TOKEN_ROOTCERTBUNDLE"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn token_sample_trusts_the_door_over_tls_with_delete_on() {
    let sample = read_token_sample();
    let config: Vec<&str> = sample
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect();
    let block = |start: &str| -> Vec<&str> {
        let at = config
            .iter()
            .position(|l| *l == start)
            .unwrap_or_else(|| panic!("the sample has a `{start}` block"));
        let indent = start.len() - start.trim_start().len();
        config[at + 1..]
            .iter()
            .take_while(|l| l.len() - l.trim_start().len() > indent)
            .copied()
            .collect()
    };
    assert_eq!(
        block("auth:"),
        [
            "  token:",
            "    realm: \"${RR_TOKEN_REALM}\"",
            "    service: \"${RR_TOKEN_SERVICE}\"",
            "    issuer: \"${RR_TOKEN_ISSUER}\"",
            "    rootcertbundle: ${RR_TOKEN_ROOTCERTBUNDLE}",
        ],
        "the registry's token check and nothing else"
    );
    assert_eq!(
        block("  tls:"),
        ["    certificate: ${RR_TLS_CERT}", "    key: ${RR_TLS_KEY}"]
    );
    assert_eq!(block("  delete:"), ["    enabled: true"]);
    assert!(block("http:").contains(&"  addr: ${RR_REGISTRY_ADDR}"));
    assert!(
        !config.iter().any(|l| {
            let l = l.trim_start();
            l.starts_with("proxy:") || l.starts_with("htpasswd:") || l.starts_with("silly:")
        }),
        "no proxy, no other auth"
    );
    // The comments give the revocation bound, and say where the realm must
    // be reachable from and that the door wants TLS for remote clients.
    for words in [
        "TTL + 60 seconds",
        "every client can reach",
        "give the door TLS",
    ] {
        assert!(
            sample.contains(words),
            "the sample's comments say {words:?}"
        );
    }
}

#[test]
fn token_readme_gives_the_openssl_commands_the_tests_run() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let section = readme
        .split("\n## Token authentication\n")
        .nth(1)
        .expect("README.md has a section ## Token authentication")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    for command in TOKEN_SIGNER_COMMANDS {
        assert!(
            section.contains(command),
            "the README's token section gives `{command}`, which the tests run"
        );
    }
    assert!(section.contains("deploy/registry-token.yml.sample"));
    assert!(
        readme.contains("(#token-authentication)"),
        "the README links the section"
    );
}

// --- The registry trusting the door's tokens ----------------------------------

async fn full_credential_pushes_and_pulls(db: Db) {
    let stack = token_stack(db, Vec::new());
    // Without a token, the registry sends clients to the door.
    let anonymous = stack.get_registry("/v2/", None);
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    assert_eq!(
        anonymous.header("WWW-Authenticate"),
        [challenge(&stack, None)],
        "{anonymous:?}"
    );
    let tags = stack.get_registry(&format!("/v2/{TEAM_APP}/tags/list"), None);
    assert_eq!(
        tags.header("WWW-Authenticate"),
        [challenge(
            &stack,
            Some(&format!("repository:{TEAM_APP}:pull"))
        )],
        "{tags:?}"
    );

    let (user, password, image) = full_user_with_image(&stack, TEAM_APP).await;
    let creds = Creds::new(&user, &password);
    let pulled = stack.dir().join("pulled");
    stack.pull(creds, TEAM_APP, "v1", &pulled).expect_success();
    let (layer_digest, content) = oci::read_image(&pulled, "v1");
    assert_eq!(layer_digest, image.layer_digest, "the pushed layer");
    assert_eq!(content, image.content, "the pushed content");
    let inspect: Value =
        serde_json::from_str(stack.inspect(Some(creds), TEAM_APP, "v1").expect_success())
            .expect("skopeo inspect prints JSON");
    assert_eq!(inspect["Layers"][0], image.layer_digest, "{inspect}");

    // What the door signs: ES256 with the openssl certificate in x5c, the
    // configured issuer and audience, pull and push granted.
    let answer = door_get(
        stack.token_door(),
        TOKEN_SERVICE,
        &[&format!("repository:{TEAM_APP}:pull,push")],
        creds,
    )
    .await;
    let token = answer.token();
    assert_eq!(answer.body["expires_in"], TOKEN_TTL, "{answer:?}");
    let header = header_of(&token);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(
        header["x5c"],
        json!([x5c_entry(&stack.token_signer().cert)]),
        "x5c holds the certificate made by openssl, the rootcertbundle"
    );
    let claims = claims_of(&token);
    assert_eq!(claims["iss"], TOKEN_ISSUER);
    assert_eq!(claims["aud"], TOKEN_SERVICE);
    assert_eq!(claims["sub"], user.as_str());
    assert_eq!(
        claims["access"],
        json!([{"type": "repository", "name": TEAM_APP, "actions": ["pull", "push"]}])
    );

    if db == Db::MariaDb {
        // Minted through the other instance: the first's door knows it from
        // the shared database, and the registry takes its tokens.
        let other = unique("token-by-b");
        let other_password = unique("pw-");
        stack
            .second_ok("/add", &[("user", &other), ("passwd", &other_password)])
            .await;
        let other_creds = Creds::new(&other, &other_password);
        let pulled = stack.dir().join("pulled-by-b");
        stack
            .pull(other_creds, TEAM_APP, "v1", &pulled)
            .expect_success();
        assert_eq!(oci::read_image(&pulled, "v1").1, image.content);
        let image = oci::write_image(&stack.dir().join("layout-b"), "v2", "pushed by B\n");
        stack
            .push(other_creds, &image.layout, "v2", TEAM_APP)
            .expect_success();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_full_credential_pushes_and_pulls_on_sqlite() {
    full_credential_pushes_and_pulls(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_full_credential_pushes_and_pulls_on_mariadb() {
    full_credential_pushes_and_pulls(Db::MariaDb).await;
}

/// `skopeo login` to the registry as `creds`, keeping the login in
/// `authfile`, as `docker login` does; the password on standard input.
fn login(stack: &Stack, creds: Creds<'_>, authfile: &Path) -> Run {
    let mut command = skopeo();
    command
        .args(["login", "--authfile"])
        .arg(authfile)
        .arg("--cert-dir")
        .arg(&stack.pki.skopeo_cert_dir)
        .args(["--username", creds.user, "--password-stdin"])
        .arg(&stack.registry_host)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("start skopeo login");
    child
        .stdin
        .take()
        .expect("skopeo's standard input is piped")
        .write_all(creds.password.as_bytes())
        .expect("write the password to skopeo");
    let output = child.wait_with_output().expect("wait for skopeo login");
    Run::from_output(format!("login as {}", creds.user), output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_door_over_tls_logs_in_and_pulls_by_scope() {
    // As the README deploys it for clients on other hosts: the door speaks
    // HTTPS, and the realm is https.
    let stack = Stack::start_with(StackOptions {
        front: Front::Token,
        token_tls: true,
        ..StackOptions::default()
    });
    assert!(stack.token_realm().starts_with("https://"));
    let anonymous = stack.get_registry("/v2/", None);
    assert_eq!(
        anonymous.header("WWW-Authenticate"),
        [challenge(&stack, None)],
        "{anonymous:?}"
    );
    let (_, _, image) = full_user_with_image(&stack, TEAM_APP).await;
    let user = unique("token-login");
    let password = unique("pw-");
    add_scoped(&stack, &user, &password, PULL_TEAM_APP).await;
    let creds = Creds::new(&user, &password);

    // A login asks the door for a token with no scope, and gets one.
    let authfile = stack.dir().join("auth.json");
    let logged_in = login(&stack, creds, &authfile);
    assert!(
        logged_in.expect_success().contains("Login Succeeded"),
        "{logged_in}"
    );
    let wrong = login(
        &stack,
        Creds::new(&user, "not-the-password"),
        &stack.dir().join("no.json"),
    );
    assert!(
        !wrong.succeeded() && wrong.stderr().contains("invalid username/password"),
        "{wrong}"
    );

    // Then pulls with the stored login, as `docker pull` does.
    let reference =
        |repo: &str, tag: &str| format!("docker://{}/{repo}:{tag}", stack.registry_host);
    let pulled = stack.dir().join("pulled");
    let mut pull = skopeo();
    pull.args(["copy", "--authfile"])
        .arg(&authfile)
        .arg("--src-cert-dir")
        .arg(&stack.pki.skopeo_cert_dir)
        .arg(reference(TEAM_APP, "v1"))
        .arg(format!("oci:{}:v1", pulled.display()));
    Run::of("pull with the login".to_owned(), &mut pull).expect_success();
    assert_eq!(oci::read_image(&pulled, "v1").1, image.content);
    let refused = oci::write_image(&stack.dir().join("refused"), "v2", "never pushed\n");
    let mut push = skopeo();
    push.args(["copy", "--authfile"])
        .arg(&authfile)
        .arg("--dest-cert-dir")
        .arg(&stack.pki.skopeo_cert_dir)
        .arg(format!("oci:{}:v2", refused.layout.display()))
        .arg(reference(TEAM_APP, "v2"));
    assert_denied(&Run::of("push with the login".to_owned(), &mut push));
}

async fn scoped_credential_pulls_its_repository_only(db: Db) {
    let stack = token_stack(db, Vec::new());
    let (_, _, image) = full_user_with_image(&stack, TEAM_APP).await;
    full_user_with_image(&stack, OTHER_APP).await;

    let user = unique("token-puller");
    let password = unique("pw-");
    add_scoped(&stack, &user, &password, PULL_TEAM_APP).await;
    let creds = Creds::new(&user, &password);

    let pulled = stack.dir().join("pulled");
    stack.pull(creds, TEAM_APP, "v1", &pulled).expect_success();
    let (layer_digest, content) = oci::read_image(&pulled, "v1");
    assert_eq!(layer_digest, image.layer_digest);
    assert_eq!(content, image.content);

    // A push asks for pull and push, gets pull only, and the registry
    // refuses the upload.
    let refused = oci::write_image(&stack.dir().join("refused"), "v2", "never pushed\n");
    let push = stack.push(creds, &refused.layout, "v2", TEAM_APP);
    assert_denied(&push);
    assert!(
        push.stderr().contains("initiating layer upload"),
        "refused at the first upload: {push}"
    );
    // Nor may it pull, or even look at, another repository.
    let other = stack.pull(creds, OTHER_APP, "v1", &stack.dir().join("never"));
    assert_denied(&other);
    assert_denied(&stack.inspect(Some(creds), OTHER_APP, "v1"));

    // What the door granted, and what the registry made of it.
    let answer = door_get(
        stack.token_door(),
        TOKEN_SERVICE,
        &[
            &format!("repository:{TEAM_APP}:pull,push"),
            &format!("repository:{OTHER_APP}:pull"),
        ],
        creds,
    )
    .await;
    let token = answer.token();
    assert_eq!(
        claims_of(&token)["access"],
        json!([{"type": "repository", "name": TEAM_APP, "actions": ["pull"]}]),
        "pull on team/app only"
    );
    let tags = with_token(&stack, "GET", &format!("/v2/{TEAM_APP}/tags/list"), &token);
    assert_eq!(tags.status, 200, "{tags:?}");
    let tags: Value = serde_json::from_str(&tags.body).expect("tags/list answers JSON");
    assert_eq!(tags["tags"], json!(["v1"]), "no refused push landed");
    let upload = with_token(
        &stack,
        "POST",
        &format!("/v2/{TEAM_APP}/blobs/uploads/"),
        &token,
    );
    assert_registry_refused(
        &stack,
        &upload,
        "insufficient_scope",
        "an upload with a pull token",
    );
    let other = with_token(&stack, "GET", &format!("/v2/{OTHER_APP}/tags/list"), &token);
    assert_registry_refused(&stack, &other, "insufficient_scope", "another repository");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_scoped_credential_pulls_its_repository_only_on_sqlite() {
    scoped_credential_pulls_its_repository_only(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_scoped_credential_pulls_its_repository_only_on_mariadb() {
    scoped_credential_pulls_its_repository_only(Db::MariaDb).await;
}

/// Asks the door for a token with `creds` until it refuses, for at most
/// `limit`; returns the epoch second the refusal was received in.
async fn until_refused(stack: &Stack, creds: Creds<'_>, limit: Duration) -> i64 {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let answer = door_get(stack.token_door(), TOKEN_SERVICE, &[PULL_TEAM_APP], creds).await;
        let received = epoch_now();
        if answer.status == 401 {
            answer.assert_error(401, "UNAUTHORIZED");
            return received;
        }
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} still got tokens {limit:?} later",
            creds.user
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn removed_and_expired_credentials_get_no_token(db: Db) {
    // No sweeper: an expired row stays stored, and only its expiry refuses it.
    let stack = token_stack(db, vec![("RUBBER_SWEEP_INTERVAL", "0")]);
    full_user_with_image(&stack, TEAM_APP).await;
    let door = stack.token_door();

    // Expired: one second to live; past it, still stored, and refused.
    let expired = unique("token-expired");
    let expired_password = unique("pw-");
    let answer = stack
        .ok(
            "/add",
            &[
                ("user", &expired),
                ("passwd", &expired_password),
                ("ttl", "1"),
            ],
        )
        .await;
    let expired_at = answer["expires_at"].as_i64().expect("expires_at");

    // Expiring: 65 s to live. Its tokens' exp ends the registry's leeway
    // before its expiry, so it gets tokens for 5 s, then none.
    let brief = unique("token-brief");
    let brief_password = unique("pw-");
    let answer = stack
        .ok(
            "/add",
            &[("user", &brief), ("passwd", &brief_password), ("ttl", "65")],
        )
        .await;
    let brief_expires_at = answer["expires_at"].as_i64().expect("expires_at");
    let brief_creds = Creds::new(&brief, &brief_password);
    let first = door_get(door, TOKEN_SERVICE, &[PULL_TEAM_APP], brief_creds).await;
    let exp = claims_of(&first.token())["exp"]
        .as_i64()
        .expect("exp is a number");
    assert!(
        exp + REGISTRY_LEEWAY <= brief_expires_at,
        "the token's exp {exp} plus the leeway ends by the expiry {brief_expires_at}"
    );
    stack
        .inspect(Some(brief_creds), TEAM_APP, "v1")
        .expect_success();
    let cutoff = brief_expires_at - REGISTRY_LEEWAY;
    let limit = Duration::from_secs(u64::try_from(cutoff - epoch_now()).unwrap_or(0)) + SLACK;
    let refused_at = until_refused(&stack, brief_creds, limit).await;
    println!(
        "token: a credential expiring at {brief_expires_at} got its last token before {cutoff} (expiry less the leeway); first refusal received at {refused_at}"
    );
    assert!(
        refused_at >= cutoff,
        "refused at {refused_at}, before {cutoff}"
    );
    assert_no_token(&stack.inspect(Some(brief_creds), TEAM_APP, "v1"));

    let expired_creds = Creds::new(&expired, &expired_password);
    assert!(epoch_now() > expired_at, "{expired} has expired by now");
    door_get(door, TOKEN_SERVICE, &[PULL_TEAM_APP], expired_creds)
        .await
        .assert_error(401, "UNAUTHORIZED");
    assert_no_token(&stack.inspect(Some(expired_creds), TEAM_APP, "v1"));
    assert_no_token(&stack.pull(
        expired_creds,
        TEAM_APP,
        "v1",
        &stack.dir().join("never-expired"),
    ));
    if db == Db::Sqlite {
        assert!(
            stack.stored_hash(&expired).is_some(),
            "the expired row is still stored: its expiry refused it, not a sweep"
        );
    }

    // Removed: no token from the next request on; a token issued before
    // the removal lives out its exp (the documented bound).
    let user = unique("token-removed");
    let password = unique("pw-");
    stack.add(&user, &password).await;
    let creds = Creds::new(&user, &password);
    stack.inspect(Some(creds), TEAM_APP, "v1").expect_success();
    let early = door_get(door, TOKEN_SERVICE, &[PULL_TEAM_APP], creds)
        .await
        .token();
    remove(&stack, db, &user).await;
    let removed_at = epoch_now();
    door_get(door, TOKEN_SERVICE, &[PULL_TEAM_APP], creds)
        .await
        .assert_error(401, "UNAUTHORIZED");
    assert_no_token(&stack.inspect(Some(creds), TEAM_APP, "v1"));
    assert_no_token(&stack.pull(creds, TEAM_APP, "v1", &stack.dir().join("never")));
    let tags = with_token(&stack, "GET", &format!("/v2/{TEAM_APP}/tags/list"), &early);
    assert_eq!(
        tags.status, 200,
        "a token issued before the removal still works until its exp: {tags:?}"
    );
    let exp = claims_of(&early)["exp"].as_i64().expect("exp");
    println!(
        "token: a token issued before the removal is still accepted after it; it lives {} s more (exp {exp} + {REGISTRY_LEEWAY} s leeway)",
        exp + REGISTRY_LEEWAY - removed_at
    );
    assert!(exp + REGISTRY_LEEWAY - removed_at <= TOKEN_TTL + REGISTRY_LEEWAY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_removed_and_expired_credentials_get_no_token_on_sqlite() {
    removed_and_expired_credentials_get_no_token(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_removed_and_expired_credentials_get_no_token_on_mariadb() {
    removed_and_expired_credentials_get_no_token(Db::MariaDb).await;
}

async fn refresh_token_gets_access_tokens_until_its_credential_is_removed(db: Db) {
    let stack = token_stack(db, Vec::new());
    full_user_with_image(&stack, TEAM_APP).await;
    let door = stack.token_door();
    let user = unique("token-offline");
    let password = unique("pw-");
    add_scoped(&stack, &user, &password, PULL_TEAM_APP).await;

    let login = door_post(
        door,
        &[
            ("grant_type", "password"),
            ("service", TOKEN_SERVICE),
            ("client_id", "registry-rubber-e2e"),
            ("access_type", "offline"),
            ("username", &user),
            ("password", &password),
            ("scope", PULL_TEAM_APP),
        ],
    )
    .await;
    let first = login.token();
    let refresh = login.body["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("a refresh token: {login:?}"))
        .to_owned();
    let redeem = |door: SocketAddr| {
        let refresh = refresh.clone();
        async move {
            door_post(
                door,
                &[
                    ("grant_type", "refresh_token"),
                    ("service", TOKEN_SERVICE),
                    ("client_id", "registry-rubber-e2e"),
                    ("refresh_token", &refresh),
                    ("scope", PULL_TEAM_APP),
                ],
            )
            .await
        }
    };
    let mut doors = vec![door];
    if db == Db::MariaDb {
        // The refresh token lives in the shared database: the other
        // instance's door redeems it too.
        doors.push(stack.second_token_door());
    }
    for at in &doors {
        let renewed = redeem(*at).await;
        let token = renewed.token();
        assert_ne!(token, first, "a new access token");
        assert_eq!(renewed.body["scope"], PULL_TEAM_APP, "{renewed:?}");
        let claims = claims_of(&token);
        assert_eq!(claims["sub"], user.as_str());
        assert_eq!(
            claims["access"],
            json!([{"type": "repository", "name": TEAM_APP, "actions": ["pull"]}])
        );
        let tags = with_token(&stack, "GET", &format!("/v2/{TEAM_APP}/tags/list"), &token);
        assert_eq!(tags.status, 200, "the registry takes it: {tags:?}");
        let tags: Value = serde_json::from_str(&tags.body).expect("tags/list answers JSON");
        assert_eq!(tags["tags"], json!(["v1"]));
    }

    remove(&stack, db, &user).await;
    for at in &doors {
        redeem(*at).await.assert_error(401, "UNAUTHORIZED");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_refresh_token_gets_access_tokens_until_its_credential_is_removed_on_sqlite() {
    refresh_token_gets_access_tokens_until_its_credential_is_removed(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_refresh_token_gets_access_tokens_until_its_credential_is_removed_on_mariadb() {
    refresh_token_gets_access_tokens_until_its_credential_is_removed(Db::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_tampered_or_foreign_tokens_are_refused_by_the_registry() {
    let stack = token_stack(Db::Sqlite, Vec::new());
    full_user_with_image(&stack, TEAM_APP).await;
    full_user_with_image(&stack, OTHER_APP).await;
    let user = unique("token-puller");
    let password = unique("pw-");
    add_scoped(&stack, &user, &password, PULL_TEAM_APP).await;
    let token = door_get(
        stack.token_door(),
        TOKEN_SERVICE,
        &[PULL_TEAM_APP],
        Creds::new(&user, &password),
    )
    .await
    .token();
    let team_tags = format!("/v2/{TEAM_APP}/tags/list");
    let other_tags = format!("/v2/{OTHER_APP}/tags/list");
    let upload = format!("/v2/{TEAM_APP}/blobs/uploads/");
    let read_team = ("GET", team_tags.as_str());
    let accepted = with_token(&stack, "GET", &team_tags, &token);
    assert_eq!(accepted.status, 200, "the token as issued: {accepted:?}");

    // One claim changed, byte for byte, the signature kept.
    let exp = claims_of(&token)["exp"].clone();
    let cases = [
        (
            "sub",
            format!("\"sub\":\"{user}\""),
            "\"sub\":\"admin\"".to_owned(),
            read_team,
        ),
        (
            "exp",
            format!("\"exp\":{exp}"),
            format!("\"exp\":{}", epoch_now() + 86_400),
            read_team,
        ),
        (
            "actions",
            "\"actions\":[\"pull\"]".to_owned(),
            "\"actions\":[\"pull\",\"push\"]".to_owned(),
            ("POST", upload.as_str()),
        ),
        (
            "name",
            format!("\"name\":\"{TEAM_APP}\""),
            format!("\"name\":\"{OTHER_APP}\""),
            ("GET", other_tags.as_str()),
        ),
    ];
    for (claim, from, to, request) in &cases {
        assert_token_refused(
            &stack,
            *request,
            &tampered(&token, from, to),
            "unable to verify token signature",
            &format!("{claim} changed, signature kept"),
        );
    }

    // The same changes signed with the real key are accepted: the refusals
    // above were the signature's.
    let key = stack.token_signer().pkcs8_der();
    let header = header_of(&token);
    let mut claims = claims_of(&token);
    let resigned = sign(&header, &claims, &key);
    assert_eq!(with_token(&stack, "GET", &team_tags, &resigned).status, 200);
    claims["access"] =
        json!([{"type": "repository", "name": TEAM_APP, "actions": ["pull", "push"]}]);
    let answer = with_token(&stack, "POST", &upload, &sign(&header, &claims, &key));
    assert_eq!(
        answer.status, 202,
        "an upload with push granted: {answer:?}"
    );
    claims["access"] = json!([{"type": "repository", "name": OTHER_APP, "actions": ["pull"]}]);
    let answer = with_token(&stack, "GET", &other_tags, &sign(&header, &claims, &key));
    assert_eq!(answer.status, 200, "{answer:?}");
    claims["access"] = claims_of(&token)["access"].clone();

    // Signed by another key, made the same way: with its own certificate
    // in x5c (not in the rootcertbundle), or claiming the trusted one.
    let other = TokenSigner::create(&stack.dir().join("other-signer"));
    let other_key = other.pkcs8_der();
    let mut own_cert = header.clone();
    own_cert["x5c"] = json!([x5c_entry(&other.cert)]);
    own_cert
        .as_object_mut()
        .expect("the header is an object")
        .remove("kid");
    assert_token_refused(
        &stack,
        read_team,
        &sign(&own_cert, &claims, &other_key),
        "unable to verify certificate chain",
        "another key with its own certificate",
    );
    assert_token_refused(
        &stack,
        read_team,
        &sign(&header, &claims, &other_key),
        "unable to verify token signature",
        "another key claiming the trusted certificate",
    );

    // Signed with the real key, but by another issuer, or for another
    // audience.
    for (claim, value, reason) in [
        ("iss", "someone-else", "token from untrusted issuer"),
        (
            "aud",
            "another-registry",
            "token intended for another audience",
        ),
    ] {
        let mut foreign = claims.clone();
        foreign[claim] = json!(value);
        assert_token_refused(
            &stack,
            read_team,
            &sign(&header, &foreign, &key),
            reason,
            &format!("{claim} {value}"),
        );
    }

    // The registry's leeway, which bounds how long a removed credential's
    // token lives: 30 s past exp accepted, 90 s refused.
    let now = epoch_now();
    let late = |past: i64| {
        let mut late = claims.clone();
        late["exp"] = json!(now - past);
        late["nbf"] = json!(now - past - TOKEN_TTL);
        late["iat"] = json!(now - past - TOKEN_TTL);
        sign(&header, &late, &key)
    };
    let answer = with_token(&stack, "GET", &team_tags, &late(30));
    assert_eq!(answer.status, 200, "30 s past exp: {answer:?}");
    assert_token_refused(
        &stack,
        read_team,
        &late(90),
        "token not to be used after",
        "90 s past exp",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_door_for_another_service_gets_nothing_the_registry_accepts() {
    // The door serves another service than the registry's RR_TOKEN_SERVICE.
    let stack = token_stack(
        Db::Sqlite,
        vec![("RUBBER_TOKEN_SERVICE", "another-registry")],
    );
    let user = unique("token-misconfigured");
    let password = unique("pw-");
    stack.add(&user, &password).await;
    let creds = Creds::new(&user, &password);
    let image = oci::write_image(&stack.dir().join("layout"), "v1", "never pushed\n");

    // skopeo asks for the registry's service, which the door refuses with
    // 400 (skopeo shows the status, not the door's message).
    for run in [
        stack.push(creds, &image.layout, "v1", TEAM_APP),
        stack.inspect(Some(creds), TEAM_APP, "v1"),
    ] {
        assert!(
            !run.succeeded()
                && run
                    .stderr()
                    .contains("Requesting bearer token: invalid status code from registry 400"),
            "expected the door's refusal of the service, got: {run}"
        );
    }
    let refused = door_get(stack.token_door(), TOKEN_SERVICE, &[PULL_TEAM_APP], creds).await;
    refused.assert_error(400, "UNSUPPORTED");
    assert!(
        refused.body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown service") && m.contains("another-registry")),
        "{refused:?}"
    );

    // A token for the door's own service is one for another audience.
    let token = door_get(
        stack.token_door(),
        "another-registry",
        &[&format!("repository:{TEAM_APP}:pull,push")],
        creds,
    )
    .await
    .token();
    assert_eq!(claims_of(&token)["aud"], "another-registry");
    let tags = format!("/v2/{TEAM_APP}/tags/list");
    let upload = format!("/v2/{TEAM_APP}/blobs/uploads/");
    for request in [("GET", tags.as_str()), ("POST", upload.as_str())] {
        assert_token_refused(
            &stack,
            request,
            &token,
            "token intended for another audience",
            &format!("{request:?} with a token for another audience"),
        );
    }
    // The same claims for the registry's audience pass its check (the
    // repository does not exist yet).
    let mut claims = claims_of(&token);
    claims["aud"] = json!(TOKEN_SERVICE);
    let key = stack.token_signer().pkcs8_der();
    let answer = with_token(
        &stack,
        "GET",
        &tags,
        &sign(&header_of(&token), &claims, &key),
    );
    assert_eq!(answer.status, 404, "{answer:?}");
    assert!(answer.body.contains("NAME_UNKNOWN"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_acl_limits_grants_first_match_wins_and_alone_grants_the_catalog() {
    let stack = token_stack(
        Db::Sqlite,
        vec![(
            "RUBBER_TOKEN_ACL",
            "account=ci-* name=team/* actions=pull; \
             account=admin-* scope=registry:catalog:*; \
             account=* scope=repository:*:*",
        )],
    );
    let (owner, owner_password, _) = full_user_with_image(&stack, TEAM_APP).await;
    let owner_creds = Creds::new(&owner, &owner_password);
    let second = oci::write_image(&stack.dir().join("second"), "v2", "team/app v2\n");
    stack
        .push(owner_creds, &second.layout, "v2", TEAM_APP)
        .expect_success();

    // A full credential whose name matches ci-*: the first rule holds it to
    // pulling team/*; the last lets it push elsewhere.
    let ci = unique("ci-");
    let ci_password = unique("pw-");
    stack.add(&ci, &ci_password).await;
    let ci_creds = Creds::new(&ci, &ci_password);
    stack
        .pull(ci_creds, TEAM_APP, "v1", &stack.dir().join("ci-pulled"))
        .expect_success();
    let image = oci::write_image(&stack.dir().join("ci-image"), "v1", "pushed by ci\n");
    assert_denied(&stack.push(ci_creds, &image.layout, "v1", TEAM_APP));
    stack
        .push(ci_creds, &image.layout, "v1", OTHER_APP)
        .expect_success();

    // The catalog: by a rule only, never by a credential's own scopes.
    let admin = unique("admin-");
    let admin_password = unique("pw-");
    stack.add(&admin, &admin_password).await;
    let catalog = "registry:catalog:*";
    let token = door_get(
        stack.token_door(),
        TOKEN_SERVICE,
        &[catalog],
        Creds::new(&admin, &admin_password),
    )
    .await
    .token();
    let listed = with_token(&stack, "GET", "/v2/_catalog", &token);
    assert_eq!(listed.status, 200, "{listed:?}");
    let listed: Value = serde_json::from_str(&listed.body).expect("the catalog is JSON");
    assert_eq!(listed["repositories"], json!([OTHER_APP, TEAM_APP]));
    let wants_catalog = unique("wants-catalog");
    add_scoped(&stack, &wants_catalog, &owner_password, catalog).await;
    for creds in [owner_creds, Creds::new(&wants_catalog, &owner_password)] {
        let token = door_get(stack.token_door(), TOKEN_SERVICE, &[catalog], creds)
            .await
            .token();
        assert_eq!(claims_of(&token)["access"], json!([]), "{}", creds.user);
        assert_registry_refused(
            &stack,
            &with_token(&stack, "GET", "/v2/_catalog", &token),
            "insufficient_scope",
            &format!("the catalog for {}", creds.user),
        );
    }

    // Deleting takes the delete action, which the default scopes leave out.
    let reference = format!("docker://{}/{TEAM_APP}:v2", stack.registry_host);
    let delete = |creds: Creds<'_>| {
        let mut command = skopeo();
        command
            .args([
                "delete",
                "--creds",
                &format!("{}:{}", creds.user, creds.password),
            ])
            .arg("--cert-dir")
            .arg(&stack.pki.skopeo_cert_dir)
            .arg(&reference);
        Run::of(
            format!("delete of {TEAM_APP}:v2 as {}", creds.user),
            &mut command,
        )
    };
    let refused = delete(owner_creds);
    assert!(
        !refused.succeeded()
            && refused.stderr().contains("(401 Unauthorized)")
            && refused.stderr().contains(r#"\"Action\":\"delete\""#),
        "the registry wants the delete action: {refused}"
    );
    let deleter = unique("deleter");
    let deleter_password = unique("pw-");
    add_scoped(
        &stack,
        &deleter,
        &deleter_password,
        "repository:team/app:delete,pull",
    )
    .await;
    delete(Creds::new(&deleter, &deleter_password)).expect_success();
    let token = door_get(
        stack.token_door(),
        TOKEN_SERVICE,
        &[PULL_TEAM_APP],
        owner_creds,
    )
    .await
    .token();
    let tags = with_token(&stack, "GET", &format!("/v2/{TEAM_APP}/tags/list"), &token);
    let tags: Value = serde_json::from_str(&tags.body).expect("tags/list answers JSON");
    assert_eq!(tags["tags"], json!(["v1"]), "v2 deleted");
}
