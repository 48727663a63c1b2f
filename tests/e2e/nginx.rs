//! nginx in front of the registry, configured from deploy/nginx.conf.sample
//! (only its `${RR_*}` placeholders given values) and asking the service's
//! auth_request door about every request: credentials the service minted
//! push and pull through it, on SQLite and on MariaDB (two service instances
//! on one database); a removed credential is refused on the next request,
//! an expired one once it expires, with no cleanup; every refusal is a 401
//! with the door's Basic challenge. Also the checks of the sample that need
//! no running process.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::concurrency::reads_never_fail_while_the_api_is_hammered;
use crate::hash_types::HASH_TYPES;
use crate::oci;
use crate::support::clients::{run_curl, HttpAnswer};
use crate::support::nginx::{
    assert_only_placeholders_differ, documented_envsubst_names, documented_render_commands,
    placeholders, read_sample, render, run_render_commands,
};
use crate::support::process::poll;
use crate::support::{epoch_now, unique, Creds, Front, Stack, StackOptions};

/// The realm the door names when RUBBER_AUTH_REALM is not set.
const DEFAULT_REALM: &str = "registry";

/// Where the service keeps its users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Db {
    Sqlite,
    /// A MariaDB server of the stack's own, shared by two service instances.
    MariaDb,
}

/// An nginx stack on `db`, with more environment for the service.
fn nginx_stack(db: Db, service_env: Vec<(&'static str, &'static str)>) -> Stack {
    Stack::start_with(StackOptions {
        front: Front::Nginx,
        mysql: db == Db::MariaDb,
        service_env,
        ..StackOptions::default()
    })
}

/// Mints a user through the API and pushes a fresh image with it through
/// nginx; returns the user, its password and the repository (tag `v1`).
async fn user_with_image(stack: &Stack, prefix: &str) -> (String, String, String) {
    let user = unique(prefix);
    let password = unique("pw-");
    stack.add(&user, &password).await;
    let image = oci::write_image(
        &stack.dir().join(unique("layout-")),
        "v1",
        &format!("image pushed by {user}\n"),
    );
    let repo = format!("e2e/{}", unique("repo"));
    stack
        .push(
            Creds::new(&user, &password),
            &image.layout,
            &image.tag,
            &repo,
        )
        .expect_success();
    (user, password, repo)
}

/// A request to nginx's registry server with `headers` as given (no
/// credentials of curl's own), as GET or HEAD.
fn request(stack: &Stack, method: &str, path: &str, headers: &[&str]) -> HttpAnswer {
    let mut command = stack.curl();
    if method == "HEAD" {
        command.arg("--head");
    } else {
        command.args(["--request", method]);
    }
    for header in headers {
        command.args(["--header", header]);
    }
    run_curl(command.arg(format!("https://{}{path}", stack.registry_host)))
}

/// `Authorization: Basic base64(user:password)`.
fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Asserts a 401 carrying the door's Basic challenge for `realm`, once, and
/// the registry API version header.
fn assert_challenged(answer: &HttpAnswer, what: &str, realm: &str) {
    assert_eq!(answer.status, 401, "{what}: {answer:?}");
    assert_eq!(
        answer.header("WWW-Authenticate"),
        [format!("Basic realm=\"{realm}\"")],
        "{what}: one Basic challenge, the door's: {answer:?}"
    );
    assert_eq!(
        answer.header("Docker-Distribution-Api-Version"),
        ["registry/2.0"],
        "{what}: {answer:?}"
    );
}

/// Polls the clock until it reaches `epoch` (a few seconds at most).
async fn wait_until(epoch: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while epoch_now() < epoch {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the clock did not reach {epoch}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// --- The sample, without processes ------------------------------------------

/// Values for every placeholder, none of them the sample's examples.
fn test_values() -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("RR_NGINX_USER", "www-data".to_owned()),
        ("RR_RUN_DIR", "/tmp/rr-test/run".to_owned()),
        ("RR_LOG_DIR", "/tmp/rr-test/logs".to_owned()),
        ("RR_TEMP_DIR", "/tmp/rr-test/temp".to_owned()),
        ("RR_SERVER_NAME", "registry.test".to_owned()),
        ("RR_LISTEN_ADDR", "127.0.0.1".to_owned()),
        ("RR_HTTP_PORT", "18080".to_owned()),
        ("RR_HTTPS_PORT", "18443".to_owned()),
        ("RR_PUBLIC_URL", "https://registry.test:18443".to_owned()),
        ("RR_TLS_CERT", "/tmp/rr-test/server.crt".to_owned()),
        ("RR_TLS_KEY", "/tmp/rr-test/server.key".to_owned()),
        ("RR_REGISTRY_BACKEND", "127.0.0.1:15000".to_owned()),
        ("RR_AUTH_BACKEND", "127.0.0.1:15081".to_owned()),
    ])
}

/// The lines of `text` that are neither blank nor comments, trimmed.
fn directives(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

#[test]
fn nginx_sample_placeholders_are_all_documented_and_rendered_alone() {
    let sample = read_sample();
    let used = placeholders(&sample);
    let documented = documented_envsubst_names(&sample);
    assert_eq!(
        used, documented,
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
    for value in values.values() {
        assert!(rendered.contains(value.as_str()), "{value} is written");
    }
    // nginx's own variables are kept as they are.
    for variable in [
        "$request_uri",
        "$request_method",
        "$http_host",
        "$upstream_http_x_rubber_user",
        "$proxy_add_x_forwarded_for",
    ] {
        assert!(rendered.contains(variable), "{variable} is kept");
    }
    // A change outside a placeholder is caught.
    let tampered = rendered.replacen("client_max_body_size 0", "client_max_body_size 1m", 1);
    assert!(
        std::panic::catch_unwind(|| assert_only_placeholders_differ(&sample, &tampered)).is_err(),
        "a changed directive is reported"
    );
}

#[test]
fn nginx_sample_documented_envsubst_command_renders_what_the_tests_render() {
    let sample = read_sample();
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let out = dir.path().join("nginx.conf");
    let commands = documented_render_commands(&sample, "/etc/registry-rubber/nginx.conf").replace(
        "/etc/registry-rubber/nginx.conf",
        &out.display().to_string(),
    );
    assert!(
        commands.contains("envsubst"),
        "the header renders with envsubst: {commands}"
    );
    let run = |values: &BTreeMap<&str, String>| run_render_commands(&commands, values);

    let values = test_values();
    let output = run(&values);
    assert!(
        output.status.success() && output.stdout.is_empty(),
        "the documented commands failed or complained: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let written = std::fs::read_to_string(&out).expect("envsubst wrote the configuration");
    assert_eq!(
        written,
        render(&sample, &values),
        "envsubst and the tests render the sample alike"
    );

    // An unset variable is named before envsubst blanks it.
    let mut partial = values.clone();
    partial.remove("RR_AUTH_BACKEND");
    let output = run(&partial);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("not set: RR_AUTH_BACKEND"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn nginx_sample_guards_every_path_with_the_door_and_streams_layers() {
    let sample = read_sample();
    let lines = directives(&sample);
    for directive in [
        "client_max_body_size 0;",
        "chunked_transfer_encoding on;",
        "proxy_http_version 1.1;",
        "proxy_request_buffering off;",
        "proxy_buffering off;",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        "proxy_set_header Host $http_host;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Real-IP $remote_addr;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "add_header Docker-Distribution-Api-Version registry/2.0 always;",
        "auth_request_set $rubber_user $upstream_http_x_rubber_user;",
        "internal;",
        "proxy_pass_request_body off;",
        "proxy_set_header Content-Length \"\";",
        "proxy_set_header X-Original-URI $request_uri;",
        "proxy_set_header X-Original-Method $request_method;",
    ] {
        assert!(lines.contains(&directive), "the sample lacks `{directive}`");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("log_format registry") && l.contains("$rubber_user")),
        "the access log names the user the door accepted"
    );

    // `auth_request /_auth` at the registry server's level, so that every
    // location inherits it, and switched off only in /_auth itself.
    let https = sample
        .split("listen ${RR_LISTEN_ADDR}:${RR_HTTPS_PORT} ssl;")
        .nth(1)
        .expect("an HTTPS server");
    let https_directives = directives(https);
    let first_location = https_directives
        .iter()
        .position(|l| l.starts_with("location "))
        .expect("the HTTPS server has locations");
    let (server_level, locations) = https_directives.split_at(first_location);
    assert!(
        server_level.contains(&"auth_request /_auth;"),
        "auth_request is set for the whole server"
    );
    let auth_location = https
        .split("location = /_auth {")
        .nth(1)
        .expect("a location = /_auth");
    let auth_location = &auth_location[..auth_location.find('}').expect("closed")];
    for line in locations {
        if line.starts_with("auth_request ") {
            assert_eq!(*line, "auth_request off;", "no location asks elsewhere");
        }
    }
    assert!(directives(auth_location).contains(&"auth_request off;"));
    assert!(directives(auth_location).contains(&"internal;"));
    assert!(
        directives(auth_location)
            .iter()
            .any(|l| l.starts_with("proxy_pass http://") && l.ends_with("/auth;")),
        "/_auth asks the door's /auth"
    );

    for line in &lines {
        for forbidden in [
            "proxy_cache",
            "auth_basic",
            "error_page",
            "satisfy",
            "proxy_intercept_errors",
        ] {
            // No cached answers (a revoked credential would live on), no
            // challenge but the door's, no 401 rewritten.
            assert!(!line.starts_with(forbidden), "the sample has `{line}`");
        }
    }
}

// --- Through nginx, with the real service -------------------------------------

async fn minted_credential_pushes_and_pulls(db: Db) {
    let stack = nginx_stack(db, Vec::new());
    let user = unique("nginx-pusher");
    let password = unique("pw-");
    // On MariaDB, minted through the second instance; nginx asks the first.
    let answer = match db {
        Db::Sqlite => stack.add(&user, &password).await,
        Db::MariaDb => {
            stack
                .second_ok("/add", &[("user", &user), ("passwd", &password)])
                .await
        }
    };
    assert_eq!(answer["msg"], format!("Added user {user}"), "{answer}");
    let creds = Creds::new(&user, &password);

    let content = format!("layer pushed through nginx by {user}\n");
    let image = oci::write_image(&stack.dir().join("source"), "v1", &content);
    let repo = format!("e2e/{}", unique("nginx"));
    stack
        .push(creds, &image.layout, &image.tag, &repo)
        .expect_success();
    let pulled = stack.dir().join("pulled");
    stack
        .pull(creds, &repo, &image.tag, &pulled)
        .expect_success();
    let (layer_digest, pulled_content) = oci::read_image(&pulled, &image.tag);
    assert_eq!(layer_digest, image.layer_digest, "the pushed layer");
    assert_eq!(pulled_content, content, "the pushed content");
    let inspect: Value = serde_json::from_str(
        stack
            .inspect(Some(creds), &repo, &image.tag)
            .expect_success(),
    )
    .expect("skopeo inspect prints JSON");
    assert_eq!(inspect["Layers"][0], image.layer_digest, "{inspect}");

    // The registry answers through nginx, the version header once; HEAD too.
    let authorization = basic(&user, &password);
    let root = request(&stack, "GET", "/v2/", &[&authorization]);
    assert_eq!(root.status, 200, "{root:?}");
    assert_eq!(
        root.header("Docker-Distribution-Api-Version"),
        ["registry/2.0"]
    );
    let manifest_path = format!("/v2/{repo}/manifests/v1");
    assert_eq!(
        request(&stack, "HEAD", "/v2/", &[&authorization]).status,
        200
    );
    let head = request(
        &stack,
        "HEAD",
        &manifest_path,
        &[
            &authorization,
            "Accept: application/vnd.oci.image.manifest.v1+json",
        ],
    );
    assert_eq!(head.status, 200, "{head:?}");
    assert_challenged(
        &request(&stack, "GET", "/v2/", &[]),
        "no credentials",
        DEFAULT_REALM,
    );

    // The access log names the user the door accepted, and no password.
    let log = stack.registry_access_log();
    let text = poll(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).ok().filter(|t| {
            t.contains(&format!(" - {user} [")) && t.contains(" - - [") && t.contains("\" 401 ")
        })
    })
    .unwrap_or_else(|| panic!("{} never named {user}", log.display()));
    assert!(
        text.lines()
            .any(|l| l.contains(&format!(" - {user} [")) && l.contains("\"PUT /v2/")),
        "the push is logged with its user:\n{text}"
    );
    assert!(!text.contains(&password), "a password in the access log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_minted_credential_pushes_and_pulls_through_nginx() {
    minted_credential_pushes_and_pulls(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_minted_credential_pushes_and_pulls_through_nginx() {
    minted_credential_pushes_and_pulls(Db::MariaDb).await;
}

async fn removed_credential_is_refused_on_the_next_request(db: Db) {
    let stack = nginx_stack(db, Vec::new());
    let (user, password, repo) = user_with_image(&stack, "nginx-removed").await;
    let (other, other_password, _) = user_with_image(&stack, "nginx-bystander").await;
    let creds = Creds::new(&user, &password);
    assert_eq!(stack.get_registry("/v2/", Some(creds)).status, 200);
    stack.inspect(Some(creds), &repo, "v1").expect_success();

    let answer = stack.remove(&user).await;
    assert_eq!(answer["found"], true, "{answer}");

    // No pause: the first request after the acknowledgement is refused,
    // though nginx keeps its connections to the door open.
    let next = request(&stack, "GET", "/v2/", &[&basic(&user, &password)]);
    assert_challenged(&next, "the removed user", DEFAULT_REALM);
    stack.inspect(Some(creds), &repo, "v1").expect_refused();
    stack
        .pull(creds, &repo, "v1", &stack.dir().join("never"))
        .expect_refused();

    let bystander = Creds::new(&other, &other_password);
    stack.inspect(Some(bystander), &repo, "v1").expect_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_removed_credential_is_refused_by_nginx_on_the_next_request() {
    removed_credential_is_refused_on_the_next_request(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_removed_credential_is_refused_by_nginx_on_the_next_request() {
    removed_credential_is_refused_on_the_next_request(Db::MariaDb).await;
}

async fn expired_credential_is_refused_without_cleanup(db: Db) {
    // With the sweeper off and no cleanup call, only the door's reading of
    // expires_at can refuse the expired credential.
    let stack = nginx_stack(db, vec![("RUBBER_SWEEP_INTERVAL", "0")]);
    let (lasting, lasting_password, repo) = user_with_image(&stack, "nginx-lasting").await;
    let user = unique("nginx-expiring");
    let password = unique("pw-");
    let answer = stack
        .ok(
            "/add",
            &[("user", &user), ("passwd", &password), ("ttl", "2")],
        )
        .await;
    let expires_at = answer["expires_at"]
        .as_i64()
        .unwrap_or_else(|| panic!("the add answer has expires_at: {answer}"));
    let creds = Creds::new(&user, &password);
    assert_eq!(
        stack.get_registry("/v2/", Some(creds)).status,
        200,
        "the credential works until it expires"
    );

    wait_until(expires_at).await;
    let refused = request(&stack, "GET", "/v2/", &[&basic(&user, &password)]);
    assert_challenged(&refused, "expired", DEFAULT_REALM);
    stack.inspect(Some(creds), &repo, "v1").expect_refused();
    if db == Db::Sqlite {
        assert!(
            stack.stored_hash(&user).is_some(),
            "the expired row is still stored: the door refused it, not a sweep"
        );
    }
    stack
        .inspect(Some(Creds::new(&lasting, &lasting_password)), &repo, "v1")
        .expect_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_expired_credential_is_refused_by_nginx_without_cleanup() {
    expired_credential_is_refused_without_cleanup(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_expired_credential_is_refused_by_nginx_without_cleanup() {
    expired_credential_is_refused_without_cleanup(Db::MariaDb).await;
}

async fn bad_credentials_get_the_door_challenge(db: Db) {
    /// A realm of the test's own, with a space, to see the door's header
    /// reach the client as the door wrote it.
    const REALM: &str = "e2e registry";
    let stack = nginx_stack(db, vec![("RUBBER_AUTH_REALM", REALM)]);
    let (user, password, repo) = user_with_image(&stack, "nginx-known").await;
    let good = Creds::new(&user, &password);
    stack.inspect(Some(good), &repo, "v1").expect_success();

    let wrong_password = basic(&user, "not-the-password");
    let unknown_user = basic("nobody-here", &password);
    let no_colon = {
        use base64::Engine as _;
        format!(
            "Authorization: Basic {}",
            base64::engine::general_purpose::STANDARD.encode(&user)
        )
    };
    let cases: [(&str, Option<&str>); 6] = [
        ("wrong password", Some(&wrong_password)),
        ("unknown user", Some(&unknown_user)),
        ("no Authorization header", None),
        ("Basic with bad base64", Some("Authorization: Basic !!!")),
        ("Basic without a colon", Some(&no_colon)),
        ("Bearer token", Some("Authorization: Bearer x")),
    ];
    for (what, header) in cases {
        let headers: Vec<&str> = header.into_iter().collect();
        for path in [
            "/v2/",
            "/v2/_catalog",
            &format!("/v2/{repo}/tags/list"),
            "/",
        ] {
            let answer = request(&stack, "GET", path, &headers);
            assert_challenged(&answer, &format!("{what}, GET {path}"), REALM);
        }
        let head = request(&stack, "HEAD", "/v2/", &headers);
        assert_challenged(&head, &format!("{what}, HEAD /v2/"), REALM);
    }

    for creds in [
        Creds::new(&user, "not-the-password"),
        Creds::new("nobody-here", &password),
    ] {
        stack.inspect(Some(creds), &repo, "v1").expect_refused();
        stack
            .pull(creds, &repo, "v1", &stack.dir().join("never"))
            .expect_refused();
        let image = oci::write_image(&stack.dir().join(unique("layout-")), "v2", "refused\n");
        stack
            .push(creds, &image.layout, "v2", &repo)
            .expect_refused();
    }
    stack.inspect(None, &repo, "v1").expect_refused();
    let tags = stack.get_registry(&format!("/v2/{repo}/tags/list"), Some(good));
    assert_eq!(tags.status, 200, "{tags:?}");
    assert!(
        !tags.body.contains("v2"),
        "no refused push landed: {}",
        tags.body
    );

    // The door's location cannot be asked from outside.
    let inside = request(&stack, "GET", "/_auth", &[&basic(&user, &password)]);
    assert_eq!(inside.status, 404, "{inside:?}");

    // Plain http only redirects, before any authentication is asked for.
    let url = format!("http://127.0.0.1:{}/v2/_catalog?n=1", stack.http_port);
    let redirect = run_curl(stack.curl().arg(&url));
    assert_eq!(redirect.status, 301, "{redirect:?}");
    assert_eq!(
        redirect.header("Location"),
        [format!("https://{}/v2/_catalog?n=1", stack.registry_host)]
    );
    assert!(redirect.header("WWW-Authenticate").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_bad_credentials_get_the_door_challenge_from_nginx() {
    bad_credentials_get_the_door_challenge(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_bad_credentials_get_the_door_challenge_from_nginx() {
    bad_credentials_get_the_door_challenge(Db::MariaDb).await;
}

async fn every_hash_type_authenticates(db: Db) {
    let stack = nginx_stack(db, Vec::new());
    let (_, _, repo) = user_with_image(&stack, "nginx-owner").await;
    for (hash_type, prefix) in HASH_TYPES {
        let user = unique(hash_type);
        let password = unique("pw-");
        // The CLI writes through the same store as the API, into the
        // database the running service's door reads.
        let added = stack.cli(
            &["--hash-type", hash_type, "add", &user],
            &format!("{password}\n"),
        );
        assert!(
            added.status.success(),
            "registry-rubber --hash-type {hash_type} add failed: {}",
            String::from_utf8_lossy(&added.stderr)
        );
        if db == Db::Sqlite {
            let hash = stack
                .stored_hash(&user)
                .unwrap_or_else(|| panic!("{hash_type}: the user is not in the database"));
            assert!(
                hash.starts_with(prefix),
                "{hash_type}: the stored hash starts with {prefix}, not {hash:.8}"
            );
        }
        let good = Creds::new(&user, &password);
        let bad = Creds::new(&user, "wrong-password");
        stack.inspect(Some(good), &repo, "v1").expect_success();
        stack.inspect(Some(bad), &repo, "v1").expect_refused();
        assert_eq!(
            stack.get_registry("/v2/", Some(good)).status,
            200,
            "{hash_type}"
        );
        assert_challenged(
            &request(&stack, "GET", "/v2/", &[&basic(&user, "wrong-password")]),
            hash_type,
            DEFAULT_REALM,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_every_hash_type_authenticates_through_nginx() {
    every_hash_type_authenticates(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_every_hash_type_authenticates_through_nginx() {
    every_hash_type_authenticates(Db::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nginx_never_fails_while_the_api_is_hammered() {
    reads_never_fail_while_the_api_is_hammered(Front::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_credential_removed_by_the_other_instance_is_refused_at_once() {
    let stack = nginx_stack(Db::MariaDb, vec![("RUBBER_SWEEP_INTERVAL", "0")]);
    // nginx asks the first instance's door.
    let (owner, owner_password, repo) = user_with_image(&stack, "nginx-a").await;
    let owner_creds = Creds::new(&owner, &owner_password);

    // Minted by the first instance, removed by the second.
    let first = unique("nginx-by-a");
    let first_password = unique("pw-");
    stack.add(&first, &first_password).await;
    stack
        .inspect(Some(Creds::new(&first, &first_password)), &repo, "v1")
        .expect_success();
    let removed = stack.second_ok("/remove", &[("user", &first)]).await;
    assert_eq!(removed["found"], true, "{removed}");
    assert_challenged(
        &request(&stack, "GET", "/v2/", &[&basic(&first, &first_password)]),
        "minted by A, removed by B",
        DEFAULT_REALM,
    );

    // Minted by the second instance, removed by the first.
    let second = unique("nginx-by-b");
    let second_password = unique("pw-");
    stack
        .second_ok("/add", &[("user", &second), ("passwd", &second_password)])
        .await;
    stack
        .inspect(Some(Creds::new(&second, &second_password)), &repo, "v1")
        .expect_success();
    let removed = stack.remove(&second).await;
    assert_eq!(removed["found"], true, "{removed}");
    assert_challenged(
        &request(&stack, "GET", "/v2/", &[&basic(&second, &second_password)]),
        "minted by B, removed by A",
        DEFAULT_REALM,
    );
    stack
        .inspect(Some(Creds::new(&second, &second_password)), &repo, "v1")
        .expect_refused();

    stack
        .inspect(Some(owner_creds), &repo, "v1")
        .expect_success();
}
