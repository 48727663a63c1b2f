//! Checks of deploy/httpd.conf.sample that need no running process. The
//! other tests start Apache from the sample itself.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::accounts::SHARED_ACCOUNTS;
use crate::support::apache::{
    assert_only_defines_differ, define_name, mtls_enabled, read_sample, render,
};

/// Names used as `${NAME}` in `text`.
fn used_variables(text: &str) -> BTreeSet<&str> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
        .collect()
}

/// The lines that are neither blank nor comments.
fn directives(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

#[test]
fn every_variable_is_defined_and_every_define_is_used() {
    let sample = read_sample();
    let defined: BTreeSet<&str> = sample.lines().filter_map(define_name).collect();
    // Directives, and the commented-out mutual-TLS lines as switched on.
    let live: String = directives(&sample)
        .map(str::to_owned)
        .chain(sample.lines().filter_map(mtls_enabled))
        .collect::<Vec<_>>()
        .join("\n");
    let used = used_variables(&live);
    let undefined: Vec<_> = used.difference(&defined).collect();
    let unused: Vec<_> = defined.difference(&used).collect();
    assert!(undefined.is_empty(), "used but not defined: {undefined:?}");
    assert!(unused.is_empty(), "defined but never used: {unused:?}");
}

#[test]
fn rendering_changes_only_define_values() {
    let sample = read_sample();
    assert_eq!(
        render(&sample, &BTreeMap::new(), false),
        sample,
        "rendering with no values is the identity"
    );
    let values = BTreeMap::from([
        ("RR_DB", "/tmp/a b/users.sqlite".to_owned()),
        ("RR_HTTPS_PORT", "8443".to_owned()),
    ]);
    let rendered = render(&sample, &values, false);
    assert!(rendered.contains("\nDefine RR_DB \"/tmp/a b/users.sqlite\"\n"));
    assert!(rendered.contains("\nDefine RR_HTTPS_PORT 8443\n"));
    assert_only_defines_differ(&sample, &rendered, false);
}

#[test]
fn mutual_tls_is_present_but_switched_off() {
    let sample = read_sample();
    let marked: Vec<String> = sample.lines().filter_map(mtls_enabled).collect();
    let has = |directive: &str| marked.iter().any(|l| l.trim_start().starts_with(directive));
    assert!(has("SSLVerifyClient require"), "{marked:?}");
    assert!(
        has("SSLCACertificateFile ${RR_API_CLIENT_CA}"),
        "{marked:?}"
    );
    assert!(
        marked
            .iter()
            .any(|l| l.contains("Require expr") && l.contains("SSL_CLIENT_S_DN_OU")),
        "{marked:?}"
    );
    assert!(
        !directives(&sample).any(|l| l.starts_with("SSLVerifyClient")),
        "client certificates are not required until switched on"
    );
}

#[test]
fn authentication_uses_the_original_columns_with_expiry_and_no_cache() {
    let sample = read_sample();
    let lines: Vec<&str> = directives(&sample).collect();
    let query = lines
        .iter()
        .find_map(|l| l.strip_prefix("AuthDBDUserPWQuery "))
        .expect("an AuthDBDUserPWQuery line");
    assert!(
        query.starts_with("\"SELECT password FROM users WHERE username = %s AND "),
        "the original's table and columns: {query}"
    );
    assert!(
        query.contains("expires_at > ${RR_DBD_NOW})"),
        "expiry is enforced by the query: {query}"
    );
    // Whose current time: SQLite's by default; the MySQL values are written
    // in the comment above them, as the README gives them.
    for define in [
        "Define RR_DBD_DRIVER sqlite3",
        "Define RR_DBD_PARAMS \"${RR_DB}\"",
        "Define RR_DBD_NOW unixepoch()",
    ] {
        assert!(sample.lines().any(|l| l == define), "{define}");
    }
    for commented in [
        "#     Define RR_DBD_DRIVER mysql",
        "#     Define RR_DBD_NOW UNIX_TIMESTAMP()",
    ] {
        assert!(sample.lines().any(|l| l == commented), "{commented}");
    }
    assert!(lines.contains(&"DBDriver ${RR_DBD_DRIVER}"));
    assert!(lines.contains(&"DBDParams \"${RR_DBD_PARAMS}\""));
    assert_eq!(
        query.matches('%').count(),
        1,
        "%s is the only % sequence: {query}"
    );
    assert!(lines.contains(&"AuthBasicProvider dbd"));
    assert!(lines.contains(&"Require valid-user"));
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("authn_socache") || l.starts_with("AuthnCache")),
        "no authentication cache: a removed user would keep working until it expired"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("Require all granted")),
        "nothing is open to everyone"
    );
}

#[test]
fn registry_proxy_settings_the_small_test_images_cannot_prove() {
    let sample = read_sample();
    let lines: Vec<&str> = directives(&sample).collect();
    for directive in [
        // Layers above Apache's 1 GiB default body limit.
        "LimitRequestBody 0",
        "ProxyPreserveHost On",
        "RequestHeader set X-Forwarded-Proto \"https\"",
        "ProxyRequests Off",
    ] {
        assert!(lines.contains(&directive), "the sample lacks `{directive}`");
    }
}

/// The value of directive `name`, among the sample's directives.
fn directive<'a>(lines: &[&'a str], name: &str) -> Option<&'a str> {
    lines.iter().find_map(|l| {
        let (directive, value) = l.split_once(char::is_whitespace)?;
        (directive == name).then(|| value.trim())
    })
}

#[test]
fn apache_serves_as_a_user_of_its_own() {
    let sample = read_sample();
    let lines: Vec<&str> = directives(&sample).collect();
    let user = directive(&lines, "User").expect("a User line");
    let group = directive(&lines, "Group").expect("a Group line");
    // Users and groups other software on a Debian host runs as: whoever
    // else runs as one of them could write the credentials database through
    // the group Apache needs for it.
    for shared in SHARED_ACCOUNTS {
        assert_ne!(user, shared, "Apache must not serve as {shared}");
        assert_ne!(group, shared, "Apache's primary group must not be {shared}");
    }
    assert_eq!(user, "registry-apache");
    assert!(
        sample.contains("#     adduser registry-apache registry-rubber"),
        "the sample tells how its user joins the database's group"
    );
    assert!(
        !sample.contains("adduser www-data"),
        "www-data never joins the database's group"
    );
}

#[test]
fn slow_clients_are_cut_off_but_long_uploads_are_not() {
    let sample = read_sample();
    let lines: Vec<&str> = directives(&sample).collect();
    let module = lines
        .iter()
        .position(|l| {
            *l == "LoadModule reqtimeout_module /usr/lib/apache2/modules/mod_reqtimeout.so"
        })
        .expect("the sample loads mod_reqtimeout");
    let limits = lines
        .iter()
        .position(|l| l.starts_with("RequestReadTimeout "))
        .expect("a RequestReadTimeout line");
    assert!(
        module < limits,
        "the module is loaded before its directive is used"
    );
    let stages: BTreeMap<&str, &str> = lines[limits]
        .split_whitespace()
        .skip(1)
        .filter_map(|stage| stage.split_once('='))
        .collect();
    for stage in ["handshake", "header", "body"] {
        assert!(stages.contains_key(stage), "no {stage}= limit: {stages:?}");
    }
    // The header stage has a ceiling, so that a byte now and then cannot
    // keep a request open.
    assert!(
        stages["header"]
            .split(',')
            .next()
            .is_some_and(|t| t.contains('-')),
        "header= needs a maximum: {}",
        stages["header"]
    );
    // The body stage has a minimum rate and no ceiling: a large layer may
    // take as long as it needs while it keeps coming.
    let body = stages["body"];
    assert!(body.contains(",MinRate="), "body= needs a MinRate: {body}");
    assert!(
        !body.split(',').next().is_some_and(|t| t.contains('-')),
        "body= must have no maximum, or long uploads are cut: {body}"
    );
    let timeout: u32 = directive(&lines, "Timeout")
        .expect("a Timeout line")
        .parse()
        .expect("Timeout in seconds");
    assert!(
        (30..=120).contains(&timeout),
        "Timeout bounds every single wait on a client: {timeout}"
    );
}
