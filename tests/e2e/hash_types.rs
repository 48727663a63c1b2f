//! Every hash format the service writes is one Apache accepts: a user added
//! with each `hash_type` authenticates through Apache, and a wrong password
//! for it is refused.

use std::process::Command;

use crate::oci;
use crate::support::tools::tools;
use crate::support::{unique, Creds, Stack, StackOptions};

/// Each `hash_type` and the prefix Apache recognises it by.
pub(crate) const HASH_TYPES: [(&str, &str); 5] = [
    ("sha1", "{SHA}"),
    ("md5", "$apr1$"),
    ("bcrypt", "$2y$"),
    ("sha256", "$5$"),
    ("sha512", "$6$"),
];

/// Asserts that `htpasswd -v` (APR's own check, the one Apache runs) accepts
/// `password` and rejects another for the stored `hash`.
fn assert_htpasswd_verifies(dir: &std::path::Path, user: &str, hash: &str, password: &str) {
    let file = dir.join(format!("{user}.htpasswd"));
    std::fs::write(&file, format!("{user}:{hash}\n")).expect("write an htpasswd file");
    let verify = |candidate: &str| {
        Command::new(&tools().htpasswd)
            .arg("-vb")
            .arg(&file)
            .args([user, candidate])
            .output()
            .expect("run htpasswd -v")
    };
    let good = verify(password);
    assert!(
        good.status.success(),
        "htpasswd -v rejects the {hash:.8}... hash: {}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(
        !verify("wrong-password").status.success(),
        "htpasswd -v accepts a wrong password for the {hash:.8}... hash"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hash_type_authenticates_through_apache() {
    let stack = Stack::start();
    // An image to inspect, pushed with a credential the API minted.
    let owner = unique("owner");
    let owner_password = unique("pw-");
    stack.add(&owner, &owner_password).await;
    let image = oci::write_image(&stack.dir().join("layout"), "v1", "hash types\n");
    let repo = format!("e2e/{}", unique("hashes"));
    stack
        .push(
            Creds::new(&owner, &owner_password),
            &image.layout,
            "v1",
            &repo,
        )
        .expect_success();

    for (hash_type, prefix) in HASH_TYPES {
        let user = unique(hash_type);
        let password = unique("pw-");
        // The CLI writes through the same store as the API, into the database
        // the running service and Apache use.
        let added = stack.cli(
            &["--hash-type", hash_type, "add", &user],
            &format!("{password}\n"),
        );
        assert!(
            added.status.success(),
            "registry-rubber --hash-type {hash_type} add failed: {}",
            String::from_utf8_lossy(&added.stderr)
        );
        let hash = stack
            .stored_hash(&user)
            .unwrap_or_else(|| panic!("{hash_type}: the user is not in the database"));
        assert!(
            hash.starts_with(prefix),
            "{hash_type}: the stored hash starts with {prefix}, not {hash:.8}"
        );
        assert_htpasswd_verifies(stack.dir(), &user, &hash, &password);

        let good = Creds::new(&user, &password);
        let bad = Creds::new(&user, "wrong-password");
        stack.inspect(Some(good), &repo, "v1").expect_success();
        stack.inspect(Some(bad), &repo, "v1").expect_refused();
        assert_eq!(
            stack.get_registry("/v2/", Some(good)).status,
            200,
            "{hash_type}"
        );
        assert_eq!(
            stack.get_registry("/v2/", Some(bad)).status,
            401,
            "{hash_type}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_writes_the_configured_hash_type() {
    let stack = Stack::start_with(StackOptions {
        hash_type: Some("bcrypt"),
        ..StackOptions::default()
    });
    let user = unique("bcrypt-api");
    let password = unique("pw-");
    stack.add(&user, &password).await;
    let hash = stack.stored_hash(&user).expect("the user is stored");
    assert!(hash.starts_with("$2y$"), "{hash:.8}");
    assert_eq!(
        stack
            .get_registry("/v2/", Some(Creds::new(&user, &password)))
            .status,
        200
    );
    assert_eq!(
        stack
            .get_registry("/v2/", Some(Creds::new(&user, "wrong-password")))
            .status,
        401
    );
}
