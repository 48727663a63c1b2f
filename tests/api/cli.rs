//! The command line, run as a user runs it: the real binary, its exit codes,
//! its messages.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use registry_rubber::htpasswd;

use crate::binary::{run, text, BIN};
use crate::helpers::TestDb;

/// A working directory and a database of the test's own, on the backend the
/// environment chose.
struct Env {
    dir: tempfile::TempDir,
    db: TestDb,
    url: String,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::fresh().await;
    let url = db.url_text();
    Env { dir, db, url }
}

impl Env {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run(
            args,
            &[("RUBBER_DATABASE_URL", &self.url)],
            stdin,
            self.dir.path(),
        )
    }

    async fn hash_of(&self, user: &str) -> Option<String> {
        self.db.stored_hash(user).await
    }
}

/// Every subcommand a user may type, as the README lists them.
const SUBCOMMANDS: [&str; 9] = [
    "serve",
    "add",
    "remove",
    "cleanup",
    "hash",
    "migrate",
    "check-config",
    "completions",
    "man",
];

#[test]
fn help_is_there_for_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    for sub in SUBCOMMANDS {
        let out = run(&[sub, "--help"], &[], None, dir.path());
        assert!(out.status.success(), "{sub} --help");
        assert!(text(&out.stdout).contains("Usage"), "{sub}");
    }
    let out = run(&["--help"], &[], None, dir.path());
    assert!(text(&out.stdout).contains("Exit codes"));
}

/// The long flags a help text lists.
fn flags_in(help: &str) -> Vec<String> {
    help.lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .map(|l| l.split([' ', '<']).next().unwrap().to_owned())
        .collect()
}

#[test]
fn each_subcommands_help_lists_the_keys_it_uses_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let help = |sub: &str| {
        let out = run(&[sub, "--help"], &[], None, dir.path());
        assert!(out.status.success(), "{sub} --help");
        text(&out.stdout)
    };
    let all = registry_rubber::config::keys().count();
    for (sub, expected) in [
        ("hash", vec!["hash-type", "bcrypt-cost"]),
        (
            "remove",
            vec![
                "database-url",
                "database-password-file",
                "database-tls",
                "database-tls-ca",
                "table",
                "log-format",
                "log-level",
            ],
        ),
    ] {
        let mut listed = flags_in(&help(sub));
        listed.retain(|f| f != "config" && f != "help");
        listed.sort();
        let mut expected: Vec<String> = expected.iter().map(|f| f.to_string()).collect();
        expected.sort();
        assert_eq!(listed, expected, "{sub}");
    }
    let add = help("add");
    assert!(
        add.contains("--default-ttl") && add.contains("--hash-type"),
        "{add}"
    );
    assert!(
        !add.contains("--listen") && !add.contains("--auth-"),
        "{add}"
    );
    assert!(
        add.contains("<USER>  The user name: 1 to 128"),
        "<USER> is described: {add}"
    );
    let cleanup = help("cleanup");
    assert!(cleanup.contains("--min-older-than"), "{cleanup}");
    assert!(!cleanup.contains("--hash-type"), "{cleanup}");
    // serve and check-config use every key, and each help states the exit codes.
    for sub in ["serve", "check-config"] {
        let mut listed = flags_in(&help(sub));
        listed.retain(|f| f != "config");
        assert_eq!(listed.len(), all, "{sub}: {listed:?}");
    }
    for sub in SUBCOMMANDS {
        assert!(help(sub).contains("Exit codes: 0 success; 1 "), "{sub}");
    }
}

#[test]
fn configuration_flags_work_before_and_after_the_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["hash", "--hash-type", "sha1"],
        vec!["--hash-type", "sha1", "hash"],
        vec!["hash", "--type", "sha1"],
        vec!["--hash-type", "md5", "hash", "--hash-type", "sha1"],
    ] {
        let out = run(&args, &[], Some("pw\n"), dir.path());
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let hash = text(&out.stdout);
        assert!(hash.starts_with("{SHA}"), "{args:?}: {hash}");
    }
    // A key the subcommand does not use is still taken, and checked.
    let out = run(
        &["check-config", "--auth-listen", "127.0.0.1:7999"],
        &[],
        None,
        dir.path(),
    );
    assert!(text(&out.stdout).contains("listen = \"127.0.0.1:7999\""));
    let out = run(&["hash", "--max-ttl", "soon"], &[], Some("pw"), dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("flag --max-ttl") && err.contains("max_ttl"),
        "{err}"
    );
}

#[test]
fn a_misspelt_log_level_is_refused_not_silently_logging_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for (args, env) in [
        (vec!["check-config"], vec![("RUBBER_LOG_LEVEL", "inof")]),
        (vec!["check-config", "--log-level", "inof"], vec![]),
        (vec!["--log-level", "inof", "serve"], vec![]),
    ] {
        let out = run(&args, &env, None, dir.path());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("log_level") && err.contains("did you mean `info`?"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn migrate_then_add_remove_cleanup() {
    let e = env().await;
    let out = e.run(&["migrate"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // What it did: the migrations it applied, then, run again, nothing.
    let said = text(&out.stdout);
    assert!(
        said.contains(": applied ")
            && said.contains("0001_original_users.sql")
            && !said.contains("up to date"),
        "{said}"
    );
    let again = text(&e.run(&["migrate"], None).stdout);
    assert!(
        again.contains("was up to date") && again.contains("nothing applied"),
        "{again}"
    );

    let out = e.run(
        &["--hash-type", "md5", "add", "1423382819"],
        Some("cli-pässword\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("Added user 1423382819, expires 20"),
        "{}",
        text(&out.stdout)
    );
    let hash = e.hash_of("1423382819").await.unwrap();
    assert!(hash.starts_with("$apr1$"));
    assert!(
        htpasswd::verify("cli-pässword", &hash),
        "trailing newline is not part of it"
    );

    let out = e.run(&["remove", "1423382819"], None);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), "removed user 1423382819");
    assert_eq!(e.hash_of("1423382819").await, None);
    let out = e.run(&["remove", "1423382819"], None);
    assert!(out.status.success(), "remove is idempotent");
    assert!(text(&out.stdout).contains("not present"));

    e.run(&["add", "a"], Some("x"));
    e.run(&["add", "b"], Some("x"));
    let out = e.run(&["cleanup", "--older-than", "3600"], None);
    assert!(out.status.success());
    assert!(e.hash_of("a").await.is_some(), "young users stay");
    // Below the floor of 60 s: refused as bad usage, nothing removed.
    let refused = e.run(&["cleanup", "--older-than", "0"], None);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("min_older_than"));
    assert!(e.hash_of("a").await.is_some());
    let out2 = e.run(
        &["--min-older-than", "0", "cleanup", "--older-than", "0"],
        None,
    );
    assert!(out2.status.success(), "{}", text(&out2.stderr));
    // Users created within the current second are not older than 0 seconds;
    // the removal count is reported either way.
    assert!(
        text(&out2.stdout).starts_with("removed "),
        "{}",
        text(&out2.stdout)
    );
}

#[tokio::test]
async fn bad_input_exits_2_and_changes_nothing() {
    let e = env().await;
    e.run(&["migrate"], None);
    for (args, stdin) in [
        (vec!["add", "a:b"], Some("x")),
        (vec!["add", "u"], Some("")),
        (vec!["add", "u"], Some("\n")),
        (
            vec!["--hash-type", "bcrypt", "add", "u"],
            Some(&*"p".repeat(73)),
        ),
        (vec!["add", "--scope", "", "u"], Some("x")),
        (
            vec!["add", "--scope", "repository:Team:pull", "u"],
            Some("x"),
        ),
        (vec!["remove", "a b"], None),
        (vec!["hash", "--type", "md4"], Some("x")),
        (vec!["hash", "--hash-type", "md4"], Some("x")),
    ] {
        let out = e.run(&args, stdin);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!text(&out.stderr).is_empty());
    }
    assert_eq!(e.hash_of("u").await, None);
    // Unknown flags are usage errors too.
    assert_eq!(e.run(&["add", "--nope", "u"], None).status.code(), Some(2));
}

#[tokio::test]
async fn a_missing_database_is_not_created_by_a_typo() {
    let e = env().await;
    // A database that is not there: a file never created, or a database the
    // server does not have.
    let (url, fix) = match &e.db {
        TestDb::Sqlite { .. } => (e.url.clone(), "migrate"),
        TestDb::Mysql(db) => (format!("{}_typo", db.url()), "CREATE DATABASE"),
    };
    for args in [vec!["serve"], vec!["remove", "u"]] {
        let out = run(&args, &[("RUBBER_DATABASE_URL", &url)], None, e.dir.path());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("does not exist") && err.contains(fix), "{err}");
    }
    match &e.db {
        TestDb::Sqlite { path, .. } => assert!(!path.exists()),
        TestDb::Mysql(db) => {
            let found: Option<String> = sqlx::query_scalar(
                "SELECT schema_name FROM information_schema.schemata WHERE schema_name = ?",
            )
            .bind(format!("{}_typo", db.name))
            .fetch_optional(&db.pool)
            .await
            .unwrap();
            assert_eq!(found, None);
        }
    }
}

#[tokio::test]
async fn a_broken_database_exits_1() {
    let e = env().await;
    // A file that is no database, or a server that does not answer.
    let url = match &e.db {
        TestDb::Sqlite { path, .. } => {
            std::fs::write(path, b"this is not a database at all, not even close").unwrap();
            e.url.clone()
        }
        TestDb::Mysql(_) => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            format!("mysql://root:Cli-Dsn-Secret-5a1@127.0.0.1:{port}/nowhere")
        }
    };
    for args in [
        vec!["remove", "u"],
        vec!["serve"],
        vec!["migrate"],
        vec!["check-config"],
    ] {
        let out = run(&args, &[("RUBBER_DATABASE_URL", &url)], None, e.dir.path());
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            !all.contains("Cli-Dsn-Secret-5a1"),
            "the password leaked: {all}"
        );
    }
}

#[tokio::test]
async fn hash_prints_a_hash_of_standard_input() {
    let e = env().await;
    for kind in ["sha1", "md5", "sha256", "sha512", "SHA1", "MD5"] {
        let out = e.run(&["hash", "--type", kind], Some("hash-me\n"));
        assert!(out.status.success(), "{kind}");
        let hash = text(&out.stdout).trim().to_owned();
        assert!(htpasswd::verify("hash-me", &hash), "{kind}: {hash}");
        assert!(!hash.contains("hash-me"));
    }
    let out = e.run(
        &["--bcrypt-cost", "4", "hash", "--type", "bcrypt"],
        Some("hash-me"),
    );
    assert!(text(&out.stdout).starts_with("$2y$04$"));
}

#[test]
fn check_config_validates_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["check-config"], &[], None, dir.path());
    assert!(out.status.success());
    let shown = text(&out.stdout);
    for key in registry_rubber::config::keys() {
        let name = key.name;
        assert!(
            format!("\n{shown}").contains(&format!("\n{name} = "))
                || shown.contains(&format!("# {name} is unset")),
            "{name} in {shown}"
        );
    }
    assert!(shown.contains("\n[auth_request]\n"), "{shown}");
    assert!(shown.parse::<toml::Table>().is_ok(), "valid TOML: {shown}");

    let out = run(
        &["check-config"],
        &[("RUBBER_HASH_TYPE", "md4")],
        None,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("RUBBER_HASH_TYPE") && err.contains("hash_type"),
        "{err}"
    );

    let file = dir.path().join("rr.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:9999\"\nhash_typo = \"md5\"\n").unwrap();
    let out = run(
        &["--config", file.to_str().unwrap(), "check-config"],
        &[],
        None,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("did you mean `hash_type`"));

    std::fs::write(&file, "listen = \"127.0.0.1:9999\"\n").unwrap();
    let out = run(
        &["check-config", "--hash-type", "sha512"],
        &[
            ("RUBBER_CONFIG", file.to_str().unwrap()),
            ("RUBBER_HASH_TYPE", "md5"),
        ],
        None,
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("listen = \"127.0.0.1:9999\""), "{shown}");
    assert!(
        shown.contains("hash_type = \"sha512\""),
        "flag beats env: {shown}"
    );
}

#[test]
fn check_config_never_shows_the_database_password() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &["check-config"],
        &[(
            "RUBBER_DATABASE_URL",
            "mysql://rubber:Check-Dsn-Secret-77@db.internal:3306/registry",
        )],
        None,
        dir.path(),
    );
    // The values print; the server (a name that does not resolve) cannot
    // be reached, which is a failure at run time.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("database_url = \"mysql://rubber:***@db.internal:3306/registry\""),
        "{shown}"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("database unreachable")
            && err.contains("database_url from environment variable RUBBER_DATABASE_URL"),
        "{err}"
    );
    assert!(!format!("{shown}{err}").contains("Check-Dsn-Secret-77"));

    let file = dir.path().join("db-password");
    std::fs::write(&file, "File-Dsn-Secret-88\n").unwrap();
    // Readable by its owner only, as the README says.
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
    let out = run(
        &[
            "--database-password-file",
            file.to_str().unwrap(),
            "check-config",
        ],
        &[(
            "RUBBER_DATABASE_URL",
            "mariadb://rubber@127.0.0.1:1/registry",
        )],
        None,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("File-Dsn-Secret-88"));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("database_url = \"mariadb://rubber:***@127.0.0.1:1/registry\""),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("database_password_file = \"{}\"", file.display())),
        "{shown}"
    );
    assert!(!shown.contains("File-Dsn-Secret-88"), "{shown}");

    // A bad URL is refused without repeating the password.
    let out = run(
        &["check-config"],
        &[(
            "RUBBER_DATABASE_URL",
            "mysql://rubber:Bad-Dsn-Secret-99@db:notaport/x",
        )],
        None,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("database_url"), "{err}");
    assert!(!err.contains("Bad-Dsn-Secret-99"), "{err}");
}

#[test]
fn the_sample_configuration_lists_every_key_and_is_valid() {
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/registry-rubber.toml.sample"
    );
    let body = std::fs::read_to_string(sample).expect("deploy/registry-rubber.toml.sample");
    for key in registry_rubber::config::keys() {
        let name = key.name;
        assert!(
            body.contains(&format!("{name} = ")),
            "{name} missing from the sample"
        );
        assert!(
            body.contains(key.env),
            "{} missing from the sample",
            key.env
        );
    }
    assert!(body.contains("[auth_request]"), "the door's table");
    // Every key is valid; the database it names is checked, and on this
    // host it does not exist: said, with where database_url was set.
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["--config", sample, "check-config"], &[], None, dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("/var/lib/registry-rubber/users.sqlite does not exist")
            && err.contains(&format!("database_url from config file {sample}")),
        "{err}"
    );
    // With a database that is there, the sample passes.
    let db = dir.path().join("users.sqlite");
    let url = format!("sqlite://{}", db.display());
    let out = run(&["--database-url", &url, "migrate"], &[], None, dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(
        &["--config", sample, "check-config", "--database-url", &url],
        &[],
        None,
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("checked: database_url: database file")
            && err.contains("current schema")
            && err.contains("not checked: whether 127.0.0.1:5080 (listen) is free"),
        "{err}"
    );
}

/// check-config checks what serve checks before it binds a port, and exits
/// as serve would for the same fault.
#[tokio::test]
async fn check_config_checks_what_serve_checks_before_binding() {
    let e = env().await;
    let sub = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec![("RUBBER_DATABASE_URL", e.url.as_str())];
        all.extend_from_slice(env);
        run(args, &all, None, e.dir.path())
    };
    // A database that does not exist (not the default): 2 for both.
    let missing_db = match &e.db {
        TestDb::Sqlite { .. } => e.url.clone(),
        TestDb::Mysql(db) => format!("{}_typo", db.url()),
    };
    for args in [["check-config"], ["serve"]] {
        let out = run(
            &args,
            &[
                ("RUBBER_DATABASE_URL", &missing_db),
                ("RUBBER_LISTEN", "127.0.0.1:0"),
            ],
            None,
            e.dir.path(),
        );
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(
            err.contains("does not exist")
                && err.contains("database_url from environment variable RUBBER_DATABASE_URL"),
            "{err}"
        );
    }
    // A database file in a directory that is not there: 2, as a missing
    // database is.
    let nowhere = format!("sqlite://{}/nowhere/db.sqlite", e.dir.path().display());
    let out = run(
        &["--database-url", &nowhere, "migrate"],
        &[],
        None,
        e.dir.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot create database file")
            && text(&out.stderr).contains("database_url from flag --database-url"),
        "{}",
        text(&out.stderr)
    );
    assert!(e.run(&["migrate"], None).status.success());
    let out = sub(&["check-config"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("checked: database_url: ")
            && text(&out.stderr).contains("current schema"),
        "{}",
        text(&out.stderr)
    );
    // TLS files that are not there: 2 for both, naming the key and where
    // it was set; serve refuses before it opens the database.
    let missing = e.dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let tls = [
        ("RUBBER_LISTEN", "127.0.0.1:0"),
        ("RUBBER_TLS_CERT", missing),
        ("RUBBER_TLS_KEY", missing),
    ];
    for args in [["check-config"], ["serve"]] {
        let out = sub(&args, &tls);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(
            err.contains("cannot read tls_cert")
                && err.contains("tls_cert from environment variable RUBBER_TLS_CERT"),
            "{err}"
        );
    }
    // A key file that is no key.
    let junk = e.dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let junk = junk.to_str().unwrap();
    let out = run(
        &["check-config", "--auth-listen", "127.0.0.1:0"],
        &[
            ("RUBBER_DATABASE_URL", &e.url),
            ("RUBBER_AUTH_TLS_CERT", junk),
            ("RUBBER_AUTH_TLS_KEY", junk),
        ],
        None,
        e.dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("auth_request")
            && err.contains("holds no PEM certificate")
            && err.contains("auth_request.tls_cert from environment variable RUBBER_AUTH_TLS_CERT"),
        "{err}"
    );
    // A callers file that is not there.
    let out = sub(&["check-config", "--callers-file", missing], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot read callers_file")
            && err.contains("callers_file from flag --callers-file"),
        "{err}"
    );
}

#[test]
fn the_readme_documents_every_key() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for key in registry_rubber::config::keys() {
        let name = key.name;
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} missing from README"
        );
        assert!(readme.contains(key.env), "{} missing from README", key.env);
    }
}

/// The binary as deployed: JSON logs carry no password, and SIGTERM lets the
/// requests in flight finish with OKAY, then closes the database cleanly.
#[tokio::test]
async fn serve_logs_json_without_secrets_and_stops_gracefully() {
    use std::io::{BufRead, Read, Write as _};
    let e = env().await;
    assert!(e.run(&["migrate"], None).status.success());
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--hash-type",
            "bcrypt",
        ])
        .args(["--bcrypt-cost", "12", "serve"])
        .env("RUBBER_DATABASE_URL", &e.url)
        .current_dir(e.dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    let listening: serde_json::Value = serde_json::from_str(&first).expect("a JSON log line");
    assert_eq!(listening["message"], "listening");
    let addr = listening["address"].as_str().unwrap().to_owned();

    // A slow add (bcrypt cost 12 in a debug build) is in flight when SIGTERM comes.
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    let body = "user=graceful&passwd=Json-Log-Secret-77";
    write!(
        stream,
        "POST /add HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"response\":\"OKAY\""), "{answer}");

    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status:?}");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    for line in rest.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(v["level"].is_string());
    }
    assert!(
        rest.contains("\"action\":\"add\""),
        "the audit event is there: {rest}"
    );
    assert!(
        !rest.contains("Json-Log-Secret-77"),
        "a password reached the logs"
    );
    assert!(!rest.contains("$2y$"), "a hash reached the logs");
    assert!(
        e.hash_of("graceful").await.is_some(),
        "the acknowledged add is stored"
    );
    if let TestDb::Sqlite { path, .. } = &e.db {
        let wal = format!("{}-wal", path.display());
        assert!(!Path::new(&wal).exists(), "closed cleanly: {wal}");
    }
}

#[test]
fn doors_on_one_address_and_a_doors_key_without_its_prefix_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &["check-config"],
        &[
            ("RUBBER_LISTEN", "127.0.0.1:15999"),
            ("RUBBER_AUTH_LISTEN", "127.0.0.1:15999"),
        ],
        None,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("auth_request.listen")
            && err.contains("RUBBER_AUTH_LISTEN")
            && err.contains("an address of its own"),
        "{err}"
    );
    let out = run(
        &["check-config"],
        &[("RUBBER_REALM", "x")],
        None,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("did you mean `RUBBER_AUTH_REALM`"), "{err}");
}

/// A reload asked for while the service starts (a slow dummy hash, a
/// database still opening) never stops it.
#[test]
fn sighup_during_start_up_does_not_stop_the_service() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("RUBBER_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .arg("serve")
        .current_dir(dir.path())
        .envs([
            ("RUBBER_LISTEN", "127.0.0.1:0"),
            ("RUBBER_HASH_TYPE", "bcrypt"),
            ("RUBBER_BCRYPT_COST", "14"),
            ("RUBBER_LOG_FORMAT", "json"),
        ])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Once the process has said what it does with SIGHUP (between exec and
    // that, the kernel's default applies to any program), send it, again and
    // again, until it listens.
    let hangup_handled = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status.lines().any(|l| {
            (l.starts_with("SigIgn:") || l.starts_with("SigCgt:"))
                && u64::from_str_radix(l.split_whitespace().nth(1).unwrap_or("0"), 16)
                    .is_ok_and(|mask| mask & 1 == 1)
        })
    };
    while !hangup_handled() {
        assert!(Instant::now() < deadline, "SIGHUP never handled");
        std::thread::sleep(Duration::from_millis(1));
    }
    loop {
        // SAFETY: signals our own child.
        unsafe { libc::kill(pid, libc::SIGHUP) };
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the service stopped on SIGHUP: {status}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("\"listening\"")
        {
            break;
        }
        assert!(Instant::now() < deadline, "never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    // At run time: the reload is logged, and the process lives on.
    let handled = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("\"message\":\"SIGHUP: ")
            .count()
    };
    let before = handled();
    unsafe { libc::kill(pid, libc::SIGHUP) };
    while handled() == before {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the service stopped on a SIGHUP at run time"
        );
        assert!(Instant::now() < deadline, "the SIGHUP was never handled");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "alive after a SIGHUP at run time"
    );
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

/// What bash offers after typing `words` (the last one being completed),
/// with the script `completions bash` printed sourced as bash-completion
/// would source it.
fn bash_completes(script: &Path, words: &[&str]) -> Vec<String> {
    let driver = r#"
source "$1"; shift
spec=$(complete -p registry-rubber) || { echo "no completion registered" >&2; exit 3; }
f=${spec#*-F }; f=${f%% *}
COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
"$f" registry-rubber "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", driver, "bash"])
        .arg(script)
        .arg("registry-rubber")
        .args(words)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "bash could not complete {words:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completion_completes_subcommands_their_flags_and_key_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["completions", "bash"], &[], None, dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let script = dir.path().join("registry-rubber.bash");
    std::fs::write(&script, &out.stdout).unwrap();

    let top = bash_completes(&script, &[""]);
    for sub in SUBCOMMANDS {
        assert!(top.iter().any(|w| w == sub), "{sub} is offered: {top:?}");
    }
    assert_eq!(bash_completes(&script, &["check-c"]), ["check-config"]);
    // A key's flag, at the top and after a subcommand that uses it; a
    // subcommand's own flag.
    assert!(
        bash_completes(&script, &["--database-u"]).contains(&"--database-url".to_owned()),
        "top-level key flag"
    );
    assert_eq!(
        bash_completes(&script, &["hash", "--hash-t"]),
        ["--hash-type"]
    );
    assert_eq!(
        bash_completes(&script, &["cleanup", "--older"]),
        ["--older-than"]
    );
    assert!(
        bash_completes(&script, &["add", "--t"]).contains(&"--ttl".to_owned()),
        "add's own --ttl"
    );
    let shells = bash_completes(&script, &["completions", ""]);
    for shell in ["bash", "zsh", "fish"] {
        assert!(shells.iter().any(|w| w == shell), "{shell}: {shells:?}");
    }
}

#[test]
fn zsh_and_fish_completions_name_every_subcommand_and_key_flag() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, first_line, registers, flag) in [
        (
            "zsh",
            "#compdef registry-rubber",
            "compdef _registry-rubber registry-rubber",
            "'--database-url=[",
        ),
        (
            "fish",
            "# Print an optspec",
            "complete -c registry-rubber ",
            "-l database-url",
        ),
    ] {
        let out = run(&["completions", shell], &[], None, dir.path());
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(script.starts_with(first_line), "{shell}: {script:.200}");
        assert!(script.contains(registers), "{shell}: {registers}");
        assert!(script.contains(flag), "{shell} completes {flag}");
        for sub in SUBCOMMANDS {
            let named = match shell {
                "zsh" => format!("'{sub}:"),
                _ => format!("-a \"{sub}\""),
            };
            assert!(script.contains(&named), "{shell} names {sub} ({named})");
        }
    }
}

#[test]
fn an_unknown_shell_is_refused_with_exit_2_naming_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["completions", "tcsh"], &[], None, dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "no script: {}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("invalid value 'tcsh'") && err.contains("bash, elvish, fish, powershell, zsh"),
        "{err}"
    );
    let out = run(&["man", "nosuch"], &[], None, dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("invalid value 'nosuch'"));
}

#[test]
fn completions_and_man_read_no_configuration() {
    // What a package build runs: no configuration file, whatever the
    // environment says.
    let dir = tempfile::tempdir().unwrap();
    let bad = [
        ("RUBBER_LOG_LEVEL", "inof"),
        ("RUBBER_CONFIG", "/nonexistent/registry-rubber.toml"),
    ];
    for args in [vec!["completions", "bash"], vec!["man"]] {
        let out = run(&args, &bad, None, dir.path());
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(!out.stdout.is_empty(), "{args:?}");
    }
}

/// `man` output rendered by groff, as man(1) renders it; fails on any
/// warning groff gives about the page.
fn groff_renders(page: &[u8]) -> String {
    let mut child = Command::new("groff")
        // One long line per paragraph, no hyphenation, no justification.
        .args(["-man", "-Tutf8", "-ww", "-rLL=2000n", "-rHY=0", "-dAD=l"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("groff runs (Debian package groff-base)");
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(page).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "groff: {}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "groff warns: {}", text(&out.stderr));
    // Bold and underline are drawn with backspaces in -Tutf8.
    let mut rendered = String::new();
    for c in text(&out.stdout).chars() {
        if c == '\u{8}' {
            rendered.pop();
        } else {
            rendered.push(c);
        }
    }
    rendered
}

#[test]
fn man_prints_roff_pages_of_the_program_and_each_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["man"], &[], None, dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = text(&out.stdout);
    assert!(
        page.lines()
            .any(|l| l.starts_with(".TH registry-rubber 1 ")),
        "{page:.300}"
    );
    assert!(page.contains("\n.SH NAME\n"), "{page:.300}");
    let rendered = groff_renders(&out.stdout);
    for expected in [
        "NAME",
        "registry-rubber - Short-lived Docker registry credentials",
        "SYNOPSIS",
        "--database-url <URL>",
        "[env: RUBBER_DATABASE_URL]",
        "--token-default-scopes",
        "Exit codes",
    ] {
        assert!(rendered.contains(expected), "{expected}:\n{rendered}");
    }
    // The main page names a page for each subcommand; each exists.
    for sub in SUBCOMMANDS {
        assert!(
            rendered.contains(&format!("registry-rubber-{sub}(1)")),
            "registry-rubber-{sub}(1) in:\n{rendered}"
        );
        let out = run(&["man", sub], &[], None, dir.path());
        assert!(out.status.success(), "man {sub}: {}", text(&out.stderr));
        let page = text(&out.stdout);
        assert!(
            page.contains(&format!(".TH registry-rubber-{sub} 1 ")),
            "{page:.300}"
        );
        let rendered = groff_renders(&out.stdout);
        assert!(
            rendered.contains(&format!("registry-rubber {sub}")),
            "the synopsis of {sub}:\n{rendered}"
        );
    }
    let add = groff_renders(&run(&["man", "add"], &[], None, dir.path()).stdout);
    assert!(
        add.contains("--ttl <SECONDS>") && add.contains("--hash-type"),
        "{add}"
    );
    assert!(
        !add.contains("--listen"),
        "add's page lists only its keys: {add}"
    );
}
