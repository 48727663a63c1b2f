//! The registry's own htpasswd check, with no web server in front:
//! docker-registry started from deploy/registry-htpasswd.yml.sample (only
//! its `${RR_*}` placeholders given values), serving HTTPS with the test PKI
//! and running as nobody:nogroup, reads the file the real registry-rubber
//! binary keeps (bcrypt, cost 4). Credentials minted through the API push
//! and pull; a removed one is refused once the file is rewritten, an expired
//! one within about a second of its expiry with no sweep; a restarted
//! service writes the same file byte for byte; on MariaDB, a change made
//! through the other instance reaches the file within the poll interval;
//! bad credentials get the registry's own Basic challenge. The delays are
//! measured and printed (run with `--nocapture` to see them).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::oci;
use crate::support::clients::{run_curl, HttpAnswer};
use crate::support::nginx::{
    assert_only_placeholders_differ, documented_envsubst_names, documented_render_commands,
    placeholders, render, run_render_commands,
};
use crate::support::process::poll;
use crate::support::registry_sample::read_sample;
use crate::support::stack::HTPASSWD_REALM;
use crate::support::{unique, Creds, Front, Stack, StackOptions};

/// The poll interval the file's keeper is given: changes made through the
/// other instance reach the file within it.
const POLL_INTERVAL_S: u64 = 1;
/// Room for a busy, shared test machine on top of every bound.
const SLACK: Duration = Duration::from_secs(2);

/// Where the service keeps its users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Db {
    Sqlite,
    /// A MariaDB server of the stack's own; the first instance keeps the
    /// file, the second has the API only.
    MariaDb,
}

/// An htpasswd stack on `db`, the keeper polling every POLL_INTERVAL_S,
/// with more environment for the service.
fn htpasswd_stack(db: Db, mut service_env: Vec<(&'static str, &'static str)>) -> Stack {
    service_env.push(("RUBBER_HTPASSWD_POLL_INTERVAL", "1"));
    assert_eq!(POLL_INTERVAL_S, 1, "the environment above says 1");
    Stack::start_with(StackOptions {
        front: Front::Htpasswd,
        mysql: db == Db::MariaDb,
        service_env,
        ..StackOptions::default()
    })
}

/// The file's `user:hash` lines.
fn file_lines(stack: &Stack) -> Vec<String> {
    std::fs::read_to_string(stack.htpasswd_file())
        .unwrap_or_else(|e| panic!("read {}: {e}", stack.htpasswd_file().display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

fn file_users(stack: &Stack) -> Vec<String> {
    file_lines(stack)
        .iter()
        .map(|l| l.split(':').next().unwrap_or_default().to_owned())
        .collect()
}

/// Milliseconds since the Unix epoch.
fn epoch_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The registry's answer to `GET /v2/` with `creds`: 200 or 401, nothing else.
fn check(stack: &Stack, creds: Creds<'_>) -> u16 {
    let answer = stack.get_registry("/v2/", Some(creds));
    assert!(
        answer.status == 200 || answer.status == 401,
        "GET /v2/ as {}: {answer:?}",
        creds.user
    );
    answer.status
}

/// Asks `GET /v2/` with `creds` until the registry answers `wanted`, for at
/// most `limit`; returns the time from `since` to that answer and how many
/// answers were the other one before it.
fn until_answer(
    stack: &Stack,
    creds: Creds<'_>,
    wanted: u16,
    since: Instant,
    limit: Duration,
) -> (Duration, u32) {
    let mut others = 0;
    poll(limit, || {
        if check(stack, creds) == wanted {
            Some((since.elapsed(), others))
        } else {
            others += 1;
            None
        }
    })
    .unwrap_or_else(|| {
        panic!(
            "{} was not answered {wanted} within {limit:?} ({others} other answers); the file holds {:?}",
            creds.user,
            file_users(stack)
        )
    })
}

/// Mints a user through the first instance's API, waits until the registry
/// takes it, and pushes a fresh image with it; returns the user, its
/// password and the repository (tag `v1`).
async fn user_with_image(stack: &Stack, prefix: &str) -> (String, String, String) {
    let user = unique(prefix);
    let password = unique("pw-");
    stack.add(&user, &password).await;
    let creds = Creds::new(&user, &password);
    until_answer(stack, creds, 200, Instant::now(), SLACK);
    let image = oci::write_image(
        &stack.dir().join(unique("layout-")),
        "v1",
        &format!("image pushed by {user}\n"),
    );
    let repo = format!("e2e/{}", unique("repo"));
    stack
        .push(creds, &image.layout, &image.tag, &repo)
        .expect_success();
    (user, password, repo)
}

/// A request to the registry with `headers` as given (no credentials of
/// curl's own).
fn request(stack: &Stack, path: &str, headers: &[&str]) -> HttpAnswer {
    let mut command = stack.curl();
    for header in headers {
        command.args(["--header", header]);
    }
    run_curl(command.arg(format!("https://{}{path}", stack.registry_host)))
}

/// Asserts a 401 from the registry itself: its Basic challenge for the
/// sample's realm, once, its API version header and its JSON error.
fn assert_challenged(answer: &HttpAnswer, what: &str) {
    assert_eq!(answer.status, 401, "{what}: {answer:?}");
    assert_eq!(
        answer.header("WWW-Authenticate"),
        [format!("Basic realm=\"{HTPASSWD_REALM}\"")],
        "{what}: one Basic challenge, the registry's: {answer:?}"
    );
    assert_eq!(
        answer.header("Docker-Distribution-Api-Version"),
        ["registry/2.0"],
        "{what}: {answer:?}"
    );
    assert!(
        answer.body.contains("\"UNAUTHORIZED\""),
        "{what}: the registry's error body: {answer:?}"
    );
}

// --- The sample, without processes ------------------------------------------

/// Values for every placeholder, none of them the sample's examples.
fn test_values() -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("RR_STORAGE_DIR", "/tmp/rr-test/storage".to_owned()),
        ("RR_REGISTRY_ADDR", "127.0.0.1:15443".to_owned()),
        ("RR_HTTP_SECRET", "0123456789abcdef".to_owned()),
        ("RR_TLS_CERT", "/tmp/rr-test/server.crt".to_owned()),
        ("RR_TLS_KEY", "/tmp/rr-test/server.key".to_owned()),
        ("RR_REALM", "test realm".to_owned()),
        ("RR_HTPASSWD_FILE", "/tmp/rr-test/htpasswd".to_owned()),
    ])
}

#[test]
fn htpasswd_sample_placeholders_are_all_documented_and_rendered_alone() {
    let sample = read_sample();
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
    partial.remove("RR_HTPASSWD_FILE");
    let output = run_render_commands(&commands, &partial);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("not set: RR_HTPASSWD_FILE"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn htpasswd_sample_checks_credentials_itself_over_tls_with_delete_on() {
    let sample = read_sample();
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
            "  htpasswd:",
            "    realm: \"${RR_REALM}\"",
            "    path: ${RR_HTPASSWD_FILE}"
        ],
        "the registry's own htpasswd check and nothing else"
    );
    assert_eq!(
        block("  tls:"),
        ["    certificate: ${RR_TLS_CERT}", "    key: ${RR_TLS_KEY}"]
    );
    assert_eq!(block("  delete:"), ["    enabled: true"]);
    assert!(block("http:").contains(&"  addr: ${RR_REGISTRY_ADDR}"));
    assert!(
        !config
            .iter()
            .any(|l| l.trim_start().starts_with("proxy:") || l.trim_start().starts_with("token:")),
        "no proxy, no token"
    );
}

// --- The registry reading the service's file ----------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_minted_credential_pushes_and_pulls() {
    let stack = htpasswd_stack(Db::Sqlite, Vec::new());
    assert_eq!(
        std::fs::read(stack.htpasswd_file()).expect("read the file"),
        b"",
        "no users yet: an empty file, written before the registry started"
    );
    let user = unique("htpasswd-pusher");
    let password = unique("pw-");
    stack.add(&user, &password).await;
    let creds = Creds::new(&user, &password);
    let (usable, refusals) = until_answer(&stack, creds, 200, Instant::now(), SLACK);
    println!("htpasswd: add answered -> first acceptance: {usable:?} ({refusals} refusals before)");

    let hash = stack.stored_hash(&user).expect("the user is stored");
    assert!(hash.starts_with("$2y$04$"), "bcrypt at cost 4: {hash:.7}");
    assert_eq!(file_lines(&stack), [format!("{user}:{hash}")]);
    let meta = std::fs::metadata(stack.htpasswd_file()).expect("stat the file");
    assert_eq!(meta.mode() & 0o7777, 0o640, "the default mode");
    assert_eq!(meta.uid(), 0, "owned by the service's user");
    let dir_gid = std::fs::metadata(stack.htpasswd_file().parent().expect("a directory"))
        .expect("stat the directory")
        .gid();
    assert_eq!(
        meta.gid(),
        dir_gid,
        "the group of the setgid directory, the registry's"
    );

    let content = format!("layer pushed to the htpasswd registry by {user}\n");
    let image = oci::write_image(&stack.dir().join("source"), "v1", &content);
    let repo = format!("e2e/{}", unique("htpasswd"));
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

    // The registry, running as nobody, read the file through its group, and
    // never made one of its own.
    let log = stack.registry_log();
    assert!(
        !log.contains("provisioning with default user"),
        "the registry made its own file:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_removed_credential_is_refused_once_the_file_is_rewritten() {
    let stack = htpasswd_stack(Db::Sqlite, Vec::new());
    let (user, password, repo) = user_with_image(&stack, "htpasswd-removed").await;
    let (other, other_password, _) = user_with_image(&stack, "htpasswd-bystander").await;
    let creds = Creds::new(&user, &password);
    stack.inspect(Some(creds), &repo, "v1").expect_success();

    let answer = stack.remove(&user).await;
    let answered = Instant::now();
    assert_eq!(answer["found"], true, "{answer}");
    let (delay, accepted) = until_answer(&stack, creds, 401, answered, SLACK);
    println!(
        "htpasswd: remove answered -> first refusal: {delay:?} ({accepted} requests accepted after the answer)"
    );
    assert!(!file_users(&stack).contains(&user));
    stack.inspect(Some(creds), &repo, "v1").expect_refused();
    stack
        .pull(creds, &repo, "v1", &stack.dir().join("never"))
        .expect_refused();
    stack
        .inspect(Some(Creds::new(&other, &other_password)), &repo, "v1")
        .expect_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_expired_credential_is_refused_within_a_second_without_sweep() {
    // With the sweeper off and no cleanup, only the rewrite at the expiry
    // second removes the line.
    let stack = htpasswd_stack(Db::Sqlite, vec![("RUBBER_SWEEP_INTERVAL", "0")]);
    let (lasting, lasting_password, repo) = user_with_image(&stack, "htpasswd-lasting").await;
    let user = unique("htpasswd-expiring");
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
    until_answer(&stack, creds, 200, Instant::now(), SLACK);

    // Every answer until the first refusal, each with the wall-clock
    // milliseconds at which it was sent and received.
    let expiry_ms = expires_at * 1000;
    let limit = Duration::from_millis(u64::try_from(expiry_ms - epoch_millis()).unwrap_or(0))
        + Duration::from_secs(1)
        + SLACK;
    let mut last_accepted = None;
    let (sent, refused) = poll(limit, || {
        let sent = epoch_millis();
        let status = check(&stack, creds);
        let received = epoch_millis();
        if status == 401 {
            return Some((sent, received));
        }
        last_accepted = Some(received);
        None
    })
    .unwrap_or_else(|| panic!("{user} was still accepted {limit:?} later"));
    assert!(
        refused >= expiry_ms,
        "refused {} ms before its expiry",
        expiry_ms - refused
    );
    let last_accepted = last_accepted.expect("accepted before its expiry");
    // The file's modification time: when the service wrote the new content
    // (before its fsync and rename).
    let meta = std::fs::metadata(stack.htpasswd_file()).expect("stat the file");
    let written = meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000;
    println!(
        "htpasswd: expires_at -> first refusal: {} ms (that request sent at {} ms; last acceptance answered at {} ms; file content written at {} ms)",
        refused - expiry_ms,
        sent - expiry_ms,
        last_accepted - expiry_ms,
        written - expiry_ms
    );
    assert!(
        refused - expiry_ms < 2000,
        "refused {} ms after expires_at, not within a second or two",
        refused - expiry_ms
    );
    stack.inspect(Some(creds), &repo, "v1").expect_refused();
    assert!(
        stack.stored_hash(&user).is_some(),
        "the expired row is still stored: the rewrite at expiry refused it, not a sweep"
    );
    assert_eq!(file_users(&stack), [lasting.as_str()]);
    stack
        .inspect(Some(Creds::new(&lasting, &lasting_password)), &repo, "v1")
        .expect_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_restarted_service_writes_the_same_file_byte_for_byte() {
    let mut stack = htpasswd_stack(Db::Sqlite, Vec::new());
    let (first, first_password, repo) = user_with_image(&stack, "htpasswd-a").await;
    let (second, second_password, _) = user_with_image(&stack, "htpasswd-b").await;
    let before = std::fs::read(stack.htpasswd_file()).expect("read the file");
    let inode = std::fs::metadata(stack.htpasswd_file())
        .expect("stat the file")
        .ino();
    assert_eq!(file_users(&stack).len(), 2, "{:?}", file_users(&stack));

    // Stopped: the registry keeps reading the file as it was.
    stack.stop_service();
    let creds = Creds::new(&first, &first_password);
    stack.inspect(Some(creds), &repo, "v1").expect_success();

    stack.start_service_again();
    // The restarted instance rewrites the file at start: a new inode.
    poll(SLACK + Duration::from_secs(3), || {
        let now = std::fs::metadata(stack.htpasswd_file()).ok()?.ino();
        (now != inode).then_some(())
    })
    .expect("the restarted service rewrote the file");
    assert_eq!(
        std::fs::read(stack.htpasswd_file()).expect("read the file"),
        before,
        "byte for byte the same after a restart"
    );
    stack.inspect(Some(creds), &repo, "v1").expect_success();

    // And it keeps the file: a removal through it is refused.
    stack.remove(&second).await;
    until_answer(
        &stack,
        Creds::new(&second, &second_password),
        401,
        Instant::now(),
        SLACK,
    );
    assert_eq!(file_users(&stack), [first]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_mariadb_change_through_the_other_instance_reaches_the_file_within_the_poll_interval(
) {
    let stack = htpasswd_stack(Db::MariaDb, vec![("RUBBER_SWEEP_INTERVAL", "0")]);
    let bound = Duration::from_secs(POLL_INTERVAL_S) + SLACK;
    let (owner, owner_password, repo) = user_with_image(&stack, "htpasswd-owner").await;

    // Minted by the keeper, removed by the other instance.
    let first = unique("htpasswd-by-a");
    let first_password = unique("pw-");
    stack.add(&first, &first_password).await;
    let first_creds = Creds::new(&first, &first_password);
    until_answer(&stack, first_creds, 200, Instant::now(), SLACK);
    let removed = stack.second_ok("/remove", &[("user", &first)]).await;
    let answered = Instant::now();
    assert_eq!(removed["found"], true, "{removed}");
    let (delay, accepted) = until_answer(&stack, first_creds, 401, answered, bound);
    println!(
        "htpasswd: remove through the other instance -> first refusal: {delay:?} ({accepted} requests accepted after the answer; poll interval {POLL_INTERVAL_S} s)"
    );
    stack
        .inspect(Some(first_creds), &repo, "v1")
        .expect_refused();

    // Minted by the other instance: usable within the poll interval; removed
    // by the keeper: refused at once.
    let second = unique("htpasswd-by-b");
    let second_password = unique("pw-");
    stack
        .second_ok("/add", &[("user", &second), ("passwd", &second_password)])
        .await;
    let added = Instant::now();
    let second_creds = Creds::new(&second, &second_password);
    let (delay, refused) = until_answer(&stack, second_creds, 200, added, bound);
    println!(
        "htpasswd: add through the other instance -> first acceptance: {delay:?} ({refused} refusals before)"
    );
    stack
        .inspect(Some(second_creds), &repo, "v1")
        .expect_success();
    stack.remove(&second).await;
    let (delay, _) = until_answer(&stack, second_creds, 401, Instant::now(), SLACK);
    println!("htpasswd: remove through the keeper on MariaDB -> first refusal: {delay:?}");

    assert_eq!(file_users(&stack), [owner.as_str()]);
    stack
        .inspect(Some(Creds::new(&owner, &owner_password)), &repo, "v1")
        .expect_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_wrong_password_and_unknown_user_get_the_registrys_basic_challenge() {
    let stack = htpasswd_stack(Db::Sqlite, Vec::new());
    let (user, password, repo) = user_with_image(&stack, "htpasswd-known").await;
    let good = Creds::new(&user, &password);

    let basic = |user: &str, password: &str| {
        use base64::Engine as _;
        format!(
            "Authorization: Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };
    let wrong_password = basic(&user, "not-the-password");
    let unknown_user = basic("nobody-here", &password);
    let cases: [(&str, Option<&str>); 4] = [
        ("wrong password", Some(&wrong_password)),
        ("unknown user", Some(&unknown_user)),
        ("no Authorization header", None),
        ("Bearer token", Some("Authorization: Bearer x")),
    ];
    for (what, header) in cases {
        let headers: Vec<&str> = header.into_iter().collect();
        for path in ["/v2/", "/v2/_catalog", &format!("/v2/{repo}/tags/list")] {
            assert_challenged(
                &request(&stack, path, &headers),
                &format!("{what}, GET {path}"),
            );
        }
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_instance_without_a_listener_keeps_the_file_from_the_database() {
    let mut stack = htpasswd_stack(Db::Sqlite, Vec::new());
    let (owner, owner_password, repo) = user_with_image(&stack, "htpasswd-owner").await;

    // The same service, started with no listener: it only keeps the file,
    // and sees the command line's writes by polling the database.
    stack.stop_service();
    stack.start_service_again_without_api();
    let user = unique("htpasswd-cli");
    let password = unique("pw-");
    let added = stack.cli(
        &["--hash-type", "bcrypt", "--bcrypt-cost", "4", "add", &user],
        &format!("{password}\n"),
    );
    assert!(
        added.status.success(),
        "registry-rubber add: {}",
        String::from_utf8_lossy(&added.stderr)
    );
    let creds = Creds::new(&user, &password);
    let bound = Duration::from_secs(POLL_INTERVAL_S) + SLACK;
    let (delay, _) = until_answer(&stack, creds, 200, Instant::now(), bound);
    println!("htpasswd: CLI add with no listener -> first acceptance: {delay:?}");
    stack.inspect(Some(creds), &repo, "v1").expect_success();

    let removed = stack.cli(&["remove", &user], "");
    assert!(
        removed.status.success(),
        "registry-rubber remove: {}",
        String::from_utf8_lossy(&removed.stderr)
    );
    let (delay, _) = until_answer(&stack, creds, 401, Instant::now(), bound);
    println!("htpasswd: CLI remove with no listener -> first refusal: {delay:?}");
    assert_eq!(file_users(&stack), [owner.as_str()]);
    stack
        .inspect(Some(Creds::new(&owner, &owner_password)), &repo, "v1")
        .expect_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_rows_another_tool_wrote_leave_the_registry_serving_the_others() {
    let stack = htpasswd_stack(Db::Sqlite, vec![("RUBBER_SWEEP_INTERVAL", "0")]);
    let (owner, owner_password, repo) = user_with_image(&stack, "htpasswd-owner").await;
    let (leaving, leaving_password, _) = user_with_image(&stack, "htpasswd-leaving").await;
    let hash = stack.stored_hash(&owner).expect("the owner is stored");

    // Rows written behind the service's back: a name with a newline (in
    // the file, a line without `:`, which makes the registry answer 400 to
    // everyone), a name with `:` and a leading space, a name that is not
    // UTF-8, a BLOB name (which made every read of the users fail), and a
    // hash on two lines.
    let smuggled = unique("smuggled-");
    stack.insert_raw_user(format!("{smuggled}\nx").as_bytes(), &hash, false);
    stack.insert_raw_user(format!(" {smuggled}:x").as_bytes(), &hash, false);
    stack.insert_raw_user(&[b's', 0xff, 0xfe], &hash, false);
    stack.insert_raw_user(format!("{smuggled}-blob").as_bytes(), &hash, true);
    stack.insert_raw_user(
        format!("{smuggled}-hash").as_bytes(),
        &format!("{hash}\n{smuggled}-line:{hash}"),
        false,
    );

    // A removal through the API still reaches the file, and the registry
    // keeps answering the others.
    stack.remove(&leaving).await;
    let (delay, _) = until_answer(
        &stack,
        Creds::new(&leaving, &leaving_password),
        401,
        Instant::now(),
        SLACK,
    );
    println!("htpasswd: remove with odd rows in the table -> first refusal: {delay:?}");
    assert_eq!(file_users(&stack), [owner.as_str()]);
    let owner_creds = Creds::new(&owner, &owner_password);
    assert_eq!(check(&stack, owner_creds), 200);
    stack
        .inspect(Some(owner_creds), &repo, "v1")
        .expect_success();
    let file = std::fs::read_to_string(stack.htpasswd_file()).expect("read the file");
    assert!(!file.contains(&smuggled), "{file}");
    // Counted in the service's log, never named, nor their hashes shown.
    let log = stack.service_log();
    assert!(
        log.contains("live users are left out of the htpasswd file"),
        "{log}"
    );
    assert!(!log.contains(&smuggled), "a smuggled name reached the log");
    assert!(!log.contains(&hash[7..]), "a hash reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_a_line_added_by_hand_is_refused_and_a_removed_file_back_within_the_poll_interval()
{
    let stack = htpasswd_stack(Db::Sqlite, vec![("RUBBER_SWEEP_INTERVAL", "0")]);
    let bound = Duration::from_secs(POLL_INTERVAL_S) + SLACK;
    let (owner, owner_password, repo) = user_with_image(&stack, "htpasswd-owner").await;
    let written = std::fs::read(stack.htpasswd_file()).expect("read the file");

    // A line appended in place, as `htpasswd -B FILE user` would: the
    // registry reads it (the file's time changed), and the service takes it
    // out at its next poll, with a time the registry notices again.
    let intruder = unique("htpasswd-by-hand");
    let password = unique("pw-");
    let hash =
        registry_rubber::htpasswd::hash(registry_rubber::htpasswd::HashType::Bcrypt, &password, 4)
            .expect("hash a password");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(stack.htpasswd_file())
        .expect("open the file");
    std::io::Write::write_all(&mut file, format!("{intruder}:{hash}\n").as_bytes())
        .expect("append a line");
    drop(file);
    let appended = Instant::now();
    let creds = Creds::new(&intruder, &password);
    let first = check(&stack, creds);
    let (delay, accepted) = until_answer(&stack, creds, 401, appended, bound);
    println!(
        "htpasswd: line appended by hand -> first refusal: {delay:?} (first answer {first}, {accepted} acceptances)"
    );
    assert_eq!(std::fs::read(stack.htpasswd_file()).expect("read"), written);
    for _ in 0..3 {
        assert_eq!(check(&stack, creds), 401, "refused for good");
    }

    // The file removed: the registry answers 400 to every request while it
    // is missing, and the service writes it again at its next poll.
    std::fs::remove_file(stack.htpasswd_file()).expect("remove the file");
    let removed = Instant::now();
    let owner_creds = Creds::new(&owner, &owner_password);
    let mut statuses = Vec::new();
    let back = poll(bound, || {
        let status = stack.get_registry("/v2/", Some(owner_creds)).status;
        statuses.push(status);
        (status == 200).then(|| removed.elapsed())
    })
    .unwrap_or_else(|| panic!("the owner was not accepted again within {bound:?}: {statuses:?}"));
    println!(
        "htpasswd: file removed -> owner accepted again: {back:?} (answers before: {statuses:?})"
    );
    assert_eq!(std::fs::read(stack.htpasswd_file()).expect("read"), written);
    stack
        .inspect(Some(owner_creds), &repo, "v1")
        .expect_success();
}
