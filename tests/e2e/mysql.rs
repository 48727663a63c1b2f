//! Two service instances on one MariaDB database, and Apache reading it with
//! DBDriver mysql through a read-only account, configured from
//! deploy/httpd.conf.sample with its MySQL Define values: a credential minted
//! through one instance pushes and pulls through Apache, is refused the
//! moment the other removes it, and cleanup and expiry work from either.

use std::time::Duration;

use crate::oci;
use crate::support::{epoch_now, unique, Creds, Stack, StackOptions};

/// Polls the clock until it is past `epoch` (a few seconds at most).
async fn wait_past(epoch: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while epoch_now() <= epoch {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the clock did not pass {epoch}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_and_apache_share_one_mariadb() {
    let stack = Stack::start_with(StackOptions {
        mysql: true,
        // No sweeper: expiry must come from Apache's query alone; and a
        // cleanup of everything, below the default floor.
        service_env: vec![
            ("RUBBER_SWEEP_INTERVAL", "0"),
            ("RUBBER_MIN_OLDER_THAN", "0"),
        ],
        ..StackOptions::default()
    });

    // Minted through the first instance: pushes and pulls through Apache.
    let user = unique("mysql-a");
    let password = unique("pw-");
    stack.add(&user, &password).await;
    let creds = Creds::new(&user, &password);
    let content = format!("layer pushed by {user}\n");
    let image = oci::write_image(&stack.dir().join("source"), "v1", &content);
    let repo = format!("e2e/{}", unique("mysql"));
    stack
        .push(creds, &image.layout, &image.tag, &repo)
        .expect_success();
    let pulled = stack.dir().join("pulled");
    stack
        .pull(creds, &repo, &image.tag, &pulled)
        .expect_success();
    let (layer, pulled_content) = oci::read_image(&pulled, &image.tag);
    assert_eq!(layer, image.layer_digest);
    assert_eq!(pulled_content, content);

    // The second instance sees it at once, and removing it there refuses it
    // on Apache's very next request.
    let listed = stack.second_ok("/list", &[("prefix", &user)]).await;
    assert_eq!(listed["users"][0]["user"], user.as_str(), "{listed}");
    let removed = stack.second_ok("/remove", &[("user", &user)]).await;
    assert_eq!(removed["found"], true, "{removed}");
    let next = stack.get_registry("/v2/", Some(creds));
    assert_eq!(next.status, 401, "removed through B, refused: {next:?}");
    stack.inspect(Some(creds), &repo, "v1").expect_refused();

    // Expiry, from the second instance: works, then refused by the query
    // alone (no sweeper, no cleanup).
    let brief = unique("mysql-brief");
    let brief_password = unique("pw-");
    let added = stack
        .second_ok(
            "/add",
            &[("user", &brief), ("passwd", &brief_password), ("ttl", "2")],
        )
        .await;
    let expires_at = added["expires_at"].as_i64().expect("expires_at");
    let brief_creds = Creds::new(&brief, &brief_password);
    stack
        .inspect(Some(brief_creds), &repo, "v1")
        .expect_success();
    wait_past(expires_at).await;
    stack
        .inspect(Some(brief_creds), &repo, "v1")
        .expect_refused();
    let (_, still) = stack.api("/list", &[("prefix", &brief)]).await;
    assert_eq!(still["users"], serde_json::json!([]), "expired: {still}");

    // Cleanup from either instance: minted through B, cleaned up through A.
    let old = unique("mysql-old");
    let old_password = unique("pw-");
    let added = stack
        .second_ok("/add", &[("user", &old), ("passwd", &old_password)])
        .await;
    let old_creds = Creds::new(&old, &old_password);
    stack.inspect(Some(old_creds), &repo, "v1").expect_success();
    wait_past(added["created_at"].as_i64().expect("created_at")).await;
    let cleaned = stack.cleanup(0).await;
    assert!(cleaned["removed"].as_u64() >= Some(1), "{cleaned}");
    stack.inspect(Some(old_creds), &repo, "v1").expect_refused();
    // And the other way round: minted through A, cleaned up through B.
    let other = unique("mysql-other");
    let other_password = unique("pw-");
    let added = stack.add(&other, &other_password).await;
    let other_creds = Creds::new(&other, &other_password);
    stack
        .inspect(Some(other_creds), &repo, "v1")
        .expect_success();
    wait_past(added["created_at"].as_i64().expect("created_at")).await;
    let cleaned = stack.second_ok("/cleanup", &[("older_than", "0")]).await;
    assert!(cleaned["removed"].as_u64() >= Some(1), "{cleaned}");
    stack
        .inspect(Some(other_creds), &repo, "v1")
        .expect_refused();

    // The CLI works on the same database, with the same password file.
    let cli_user = unique("mysql-cli");
    let out = stack.cli(&["add", &cli_user], "cli-password\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stack
        .inspect(Some(Creds::new(&cli_user, "cli-password")), &repo, "v1")
        .expect_success();
}
