//! The sample's virtual host for the service's own API: reverse-proxied,
//! limited to the address allowlist, and with mutual TLS ready to switch on.

use std::time::Duration;

use serde_json::Value;

use crate::support::clients::{run_curl, try_curl, HttpAnswer};
use crate::support::pki::{Issued, Pki};
use crate::support::process::poll;
use crate::support::stack::{CLIENT_CNS, CLIENT_OU};
use crate::support::{unique, Creds, Stack, StackOptions};

/// An allowed source address, and one in the loopback range that is not.
const ALLOWED: &str = "127.0.0.1";
const NOT_ALLOWED: &str = "127.0.0.2";

/// A GET of `/add?user=..&passwd=..` through Apache's API virtual host, sent
/// from `source`, optionally with a client certificate.
fn add_through_apache(
    stack: &Stack,
    source: &str,
    cert: Option<&Issued>,
    user: &str,
    password: &str,
) -> Result<HttpAnswer, String> {
    let url = format!(
        "https://127.0.0.1:{}/add?user={user}&passwd={password}",
        stack.api_port()
    );
    let mut command = stack.curl();
    command.args(["--interface", source]);
    if let Some(cert) = cert {
        command.arg("--cert").arg(&cert.cert);
        command.arg("--key").arg(&cert.key);
    }
    try_curl(command.arg(url))
}

fn json(answer: &HttpAnswer) -> Value {
    serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("the API answered non-JSON ({e}): {answer:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_vhost_proxies_allowlisted_clients_and_refuses_others() {
    let stack = Stack::start();
    let user = unique("via-apache");
    let password = unique("pw-");

    let answer = add_through_apache(&stack, ALLOWED, None, &user, &password)
        .expect("an add through Apache's API virtual host");
    assert_eq!(answer.status, 200, "{answer:?}");
    let body = json(&answer);
    assert_eq!(body["response"], "OKAY", "{body}");
    assert_eq!(body["msg"], format!("Added user {user}"));
    // The credential minted through Apache works through Apache.
    assert_eq!(
        stack
            .get_registry("/v2/", Some(Creds::new(&user, &password)))
            .status,
        200
    );

    // A POST form body, as the README shows: the password stays out of URLs.
    let posted = unique("posted");
    let posted_password = unique("pw-");
    let answer = run_curl(
        stack
            .curl()
            .args(["--interface", ALLOWED, "--data-urlencode"])
            .arg(format!("user={posted}"))
            .arg("--data-urlencode")
            .arg(format!("passwd={posted_password}"))
            .args(["--data-urlencode", "ttl=1800"])
            .arg(format!("https://127.0.0.1:{}/add", stack.api_port())),
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    let body = json(&answer);
    assert_eq!(body["msg"], format!("Added user {posted}"));
    assert_eq!(body["ttl"], 1800, "{body}");
    assert_eq!(
        stack
            .get_registry("/v2/", Some(Creds::new(&posted, &posted_password)))
            .status,
        200
    );

    let outsider = unique("outsider");
    let refused = add_through_apache(&stack, NOT_ALLOWED, None, &outsider, &password)
        .expect("an HTTP answer to a client outside the allowlist");
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(stack.stored_hash(&outsider), None, "no user was added");

    // The API's access log records the call without its query string.
    let log = stack.dir().join("httpd-logs/api-access.log");
    let text = poll(Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("/add") && t.contains(" 403 "))
    })
    .unwrap_or_else(|| panic!("{} never logged the calls", log.display()));
    assert!(
        !text.contains(&password) && !text.contains(&posted_password) && !text.contains("passwd"),
        "the API access log holds the query string:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_vhost_mutual_tls_switches_on() {
    let stack = Stack::start_with(StackOptions {
        mtls: true,
        ..StackOptions::default()
    });
    let pki = &stack.pki;
    let first = pki.client("client-first", CLIENT_OU, CLIENT_CNS[0]);
    let second = pki.client("client-second", CLIENT_OU, CLIENT_CNS[1]);
    let wrong_ou = pki.client("client-wrong-ou", "someone-else", CLIENT_CNS[0]);
    let wrong_cn = pki.client("client-wrong-cn", CLIENT_OU, "intruder");
    let foreign = Pki::create(&stack.dir().join("foreign-pki")).client(
        "client-foreign",
        CLIENT_OU,
        CLIENT_CNS[0],
    );
    let password = unique("pw-");

    for (what, cert) in [("first CN", &first), ("second CN", &second)] {
        let user = unique("mtls");
        let answer = add_through_apache(&stack, ALLOWED, Some(cert), &user, &password)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(answer.status, 200, "{what}: {answer:?}");
        assert_eq!(json(&answer)["response"], "OKAY", "{what}");
        assert!(stack.stored_hash(&user).is_some(), "{what}: user stored");
    }

    for (what, cert) in [("wrong OU", &wrong_ou), ("wrong CN", &wrong_cn)] {
        let user = unique("mtls-refused");
        let answer = add_through_apache(&stack, ALLOWED, Some(cert), &user, &password)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(answer.status, 403, "{what}: {answer:?}");
        assert_eq!(stack.stored_hash(&user), None, "{what}: no user added");
    }

    // A valid certificate does not lift the address allowlist.
    let user = unique("mtls-outsider");
    let answer = add_through_apache(&stack, NOT_ALLOWED, Some(&first), &user, &password)
        .expect("an HTTP answer to an allowed certificate from outside the allowlist");
    assert_eq!(answer.status, 403, "{answer:?}");

    // No certificate, or one from another CA: the TLS handshake fails.
    for (what, cert) in [("no certificate", None), ("foreign CA", Some(&foreign))] {
        let user = unique("mtls-nocert");
        let result = add_through_apache(&stack, ALLOWED, cert, &user, &password);
        assert!(
            result.is_err(),
            "{what}: expected a TLS failure, got {result:?}"
        );
        assert_eq!(stack.stored_hash(&user), None, "{what}: no user added");
    }
}
