//! The life of a credential as a registry client sees it through Apache:
//! minted, used to push and pull, refused once removed, expired, cleaned up
//! or replaced, and refused when wrong or absent.

use std::time::Duration;

use serde_json::Value;

use crate::oci;
use crate::support::{epoch_now, unique, Creds, Stack, StackOptions};

/// Mints a user through the API and pushes a fresh image with it; returns the
/// user, its password and the repository pushed to (tag `v1`).
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_credential_pushes_and_pulls_an_image_with_its_content_intact() {
    let stack = Stack::start();
    let user = unique("pusher");
    let password = unique("pw-");
    let answer = stack.add(&user, &password).await;
    assert_eq!(answer["msg"], format!("Added user {user}"));
    let creds = Creds::new(&user, &password);

    let content = format!("unique layer content for {user}\n");
    let image = oci::write_image(&stack.dir().join("source"), "v1", &content);
    let repo = format!("e2e/{}", unique("roundtrip"));
    stack
        .push(creds, &image.layout, &image.tag, &repo)
        .expect_success();

    let pulled = stack.dir().join("pulled");
    stack
        .pull(creds, &repo, &image.tag, &pulled)
        .expect_success();
    let (layer_digest, pulled_content) = oci::read_image(&pulled, &image.tag);
    assert_eq!(
        layer_digest, image.layer_digest,
        "the pulled layer is the pushed one"
    );
    assert_eq!(
        pulled_content, content,
        "the file in the pulled layer has the pushed content"
    );

    let inspect: Value = serde_json::from_str(
        stack
            .inspect(Some(creds), &repo, &image.tag)
            .expect_success(),
    )
    .expect("skopeo inspect prints JSON");
    assert_eq!(
        inspect["Layers"][0], image.layer_digest,
        "the registry behind Apache holds the layer: {inspect}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_credential_is_refused_on_the_very_next_request() {
    let stack = Stack::start();
    let (user, password, repo) = user_with_image(&stack, "removed").await;
    let (other, other_password, _) = user_with_image(&stack, "bystander").await;
    let creds = Creds::new(&user, &password);
    assert_eq!(stack.get_registry("/v2/", Some(creds)).status, 200);
    stack.inspect(Some(creds), &repo, "v1").expect_success();

    let answer = stack.remove(&user).await;
    assert_eq!(answer["msg"], format!("removed user {user}"));
    assert_eq!(answer["found"], true, "{answer}");

    // No pause: the first request after the acknowledgement is refused.
    let next = stack.get_registry("/v2/", Some(creds));
    assert_eq!(next.status, 401, "the removed user is refused: {next:?}");
    stack.inspect(Some(creds), &repo, "v1").expect_refused();
    stack
        .pull(creds, &repo, "v1", &stack.dir().join("never"))
        .expect_refused();

    let bystander = Creds::new(&other, &other_password);
    stack.inspect(Some(bystander), &repo, "v1").expect_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_refuses_old_credentials_and_keeps_young_ones() {
    /// Cleanup removes users created more than this many seconds ago. Two
    /// seconds leave the young user a margin of at least one second between
    /// its creation and the cleanup.
    const OLDER_THAN: u64 = 2;
    let stack = Stack::start_with(StackOptions {
        // Below the default floor of 60 s, which this test lowers.
        service_env: vec![("RUBBER_MIN_OLDER_THAN", "0")],
        ..StackOptions::default()
    });
    let (old, old_password, repo) = user_with_image(&stack, "old").await;
    let old_created = stack
        .stored_created_at(&old)
        .expect("the old user is stored");

    // Wait, polling the clock, until the old user is older than OLDER_THAN.
    let wait_until = old_created + i64::try_from(OLDER_THAN).expect("small") + 1;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(OLDER_THAN + 5);
    while epoch_now() < wait_until {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the clock did not reach {wait_until}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let young = unique("young");
    let young_password = unique("pw-");
    let added = stack.add(&young, &young_password).await;
    assert!(
        added["created_at"]
            .as_i64()
            .expect("created_at is a number")
            >= wait_until,
        "{added}"
    );

    // Both work until the cleanup (and are fresh in any cache there might be).
    let old_creds = Creds::new(&old, &old_password);
    let young_creds = Creds::new(&young, &young_password);
    stack.inspect(Some(old_creds), &repo, "v1").expect_success();
    stack
        .inspect(Some(young_creds), &repo, "v1")
        .expect_success();

    let answer = stack.cleanup(OLDER_THAN).await;
    assert_eq!(answer["removed"], 1, "only the old user goes: {answer}");

    assert_eq!(stack.get_registry("/v2/", Some(old_creds)).status, 401);
    stack.inspect(Some(old_creds), &repo, "v1").expect_refused();
    stack
        .inspect(Some(young_creds), &repo, "v1")
        .expect_success();
    let users = stack.stored_users();
    assert!(!users.contains(&old) && users.contains(&young), "{users:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_unknown_user_and_no_credentials_are_refused() {
    let stack = Stack::start();
    let (user, password, repo) = user_with_image(&stack, "known").await;
    let good = Creds::new(&user, &password);
    let wrong_password = Creds::new(&user, "not-the-password");
    let unknown_user = Creds::new("nobody-here", &password);
    stack.inspect(Some(good), &repo, "v1").expect_success();

    for creds in [wrong_password, unknown_user] {
        stack.inspect(Some(creds), &repo, "v1").expect_refused();
        stack
            .pull(creds, &repo, "v1", &stack.dir().join("never"))
            .expect_refused();
        let image = oci::write_image(&stack.dir().join(unique("layout-")), "v2", "refused\n");
        stack
            .push(creds, &image.layout, "v2", &repo)
            .expect_refused();
        assert_eq!(stack.get_registry("/v2/", Some(creds)).status, 401);
    }
    stack.inspect(None, &repo, "v1").expect_refused();
    // The refused push left no tag behind.
    let tags = stack.get_registry(&format!("/v2/{repo}/tags/list"), Some(good));
    assert_eq!(tags.status, 200, "{tags:?}");
    assert!(!tags.body.contains("v2"), "{}", tags.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_answers_401_with_a_basic_challenge_without_credentials() {
    let stack = Stack::start();
    let user = unique("challenged");
    let password = unique("pw-");
    stack.add(&user, &password).await;

    for path in [
        "/v2/",
        "/v2/_catalog",
        "/v2/any/repo/tags/list",
        "/",
        "/v1/",
    ] {
        let answer = stack.get_registry(path, None);
        assert_eq!(answer.status, 401, "{path}: {answer:?}");
        let challenge = answer.header("WWW-Authenticate");
        assert!(
            challenge.len() == 1 && challenge[0].starts_with("Basic realm="),
            "{path}: a Basic challenge: {challenge:?}"
        );
        assert_eq!(
            answer.header("Docker-Distribution-Api-Version"),
            ["registry/2.0"],
            "{path}"
        );
    }
    let authenticated = stack.get_registry("/v2/", Some(Creds::new(&user, &password)));
    assert_eq!(authenticated.status, 200, "{authenticated:?}");
    assert_eq!(
        authenticated.header("Docker-Distribution-Api-Version"),
        ["registry/2.0"],
        "the header appears once"
    );

    // Plain http only redirects, before any authentication is asked for.
    let url = format!("http://127.0.0.1:{}/v2/_catalog?n=1", stack.http_port);
    let redirect = crate::support::clients::run_curl(stack.curl().arg(&url));
    assert_eq!(redirect.status, 301, "{redirect:?}");
    assert_eq!(
        redirect.header("Location"),
        [format!("https://{}/v2/_catalog?n=1", stack.registry_host)]
    );
    assert!(redirect.header("WWW-Authenticate").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_adding_a_user_replaces_the_password_at_once() {
    let stack = Stack::start();
    let (user, old_password, repo) = user_with_image(&stack, "rotated").await;
    let new_password = unique("new-pw-");

    let answer = stack.add(&user, &new_password).await;
    assert_eq!(answer["msg"], format!("Added user {user}"));
    assert_eq!(answer["replaced"], true, "{answer}");

    let old = Creds::new(&user, &old_password);
    let new = Creds::new(&user, &new_password);
    assert_eq!(
        stack.get_registry("/v2/", Some(old)).status,
        401,
        "the old password is refused on the next request"
    );
    assert_eq!(stack.get_registry("/v2/", Some(new)).status, 200);
    stack.inspect(Some(old), &repo, "v1").expect_refused();
    stack.inspect(Some(new), &repo, "v1").expect_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_credential_is_refused_before_any_sweep() {
    /// Long enough for one check before expiry, short enough to wait out.
    const TTL: i64 = 3;
    // With the sweeper off, only Apache's query can refuse the expired row.
    let stack = Stack::start_with(StackOptions {
        service_env: vec![("RUBBER_SWEEP_INTERVAL", "0")],
        ..StackOptions::default()
    });
    let (lasting, lasting_password, repo) = user_with_image(&stack, "lasting").await;
    let user = unique("expiring");
    let password = unique("pw-");
    let ttl = TTL.to_string();
    let answer = stack
        .ok(
            "/add",
            &[("user", &user), ("passwd", &password), ("ttl", &ttl)],
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

    let deadline = tokio::time::Instant::now() + Duration::from_secs(TTL as u64 + 5);
    while epoch_now() < expires_at {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the clock did not reach {expires_at}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        stack.get_registry("/v2/", Some(creds)).status,
        401,
        "refused once expired"
    );
    stack.inspect(Some(creds), &repo, "v1").expect_refused();
    assert!(
        stack.stored_hash(&user).is_some(),
        "the expired row is still stored: the query refused it, not a sweep"
    );
    stack
        .inspect(Some(Creds::new(&lasting, &lasting_password)), &repo, "v1")
        .expect_success();
}
