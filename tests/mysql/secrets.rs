//! Accounts as the README sets them up: the service's account with the
//! grants it documents, its password in the URL or in a file, never in a log
//! line or an error; and Apache's read-only account, which can run the
//! documented query and nothing else.

use std::sync::Arc;

use registry_rubber::config::Settings;
use registry_rubber::startup::Application;
use registry_rubber::store::{Create, Store};
use sqlx::mysql::MySqlConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};

use crate::helpers::{captured_logs, spawn_with_settings, test_settings, TestDb};
use crate::mariadb::MariaDb;
use crate::{database_on, pool};

/// The service's password; percent-encoded in a URL.
const SERVICE_PASSWORD: &str = "Svc-Dsn-Secret-3c9e@:/x";
const SERVICE_PASSWORD_ENCODED: &str = "Svc-Dsn-Secret-3c9e%40%3A%2Fx";
const WRONG_PASSWORD: &str = "Wrong-Dsn-Secret-51d0";
const APACHE_PASSWORD: &str = "Apache-Dsn-Secret-0f4b";

/// Runs statements as root on the server. sqlx would log the statements,
/// passwords and all: this connection of the test's own does not.
pub async fn as_root(server: &MariaDb, statements: &[String]) {
    let options: MySqlConnectOptions = server.url().parse().unwrap();
    let mut root = options.disable_statement_logging().connect().await.unwrap();
    for s in statements {
        root.execute(s.as_str()).await.unwrap();
    }
}

fn database_name(db: &TestDb) -> String {
    match db {
        TestDb::Mysql(d) => d.name.clone(),
        TestDb::Sqlite { .. } => unreachable!(),
    }
}

#[tokio::test]
async fn the_documented_accounts_work_and_passwords_never_leak() {
    let server = MariaDb::start();
    let db = database_on(&server).await;
    let name = database_name(&db);
    let port = server.port();
    // The grants the README documents.
    as_root(
        &server,
        &[
            format!("CREATE USER 'rubber'@'127.0.0.1' IDENTIFIED BY '{SERVICE_PASSWORD}'"),
            format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX ON `{name}`.* TO 'rubber'@'127.0.0.1'"
            ),
        ],
    )
    .await;

    // The password in the URL, percent-encoded.
    let url = format!("mysql://rubber:{SERVICE_PASSWORD_ENCODED}@127.0.0.1:{port}/{name}");
    let env = [("RUBBER_DATABASE_URL".to_owned(), url.clone())];
    let mut settings = Settings::load_from(None, &env, &vec![]).unwrap();
    settings.api.listener.listen = Some("127.0.0.1:0".parse().unwrap());
    settings.hash_type = registry_rubber::htpasswd::HashType::Sha1;
    let shown = format!("{settings:?} {}", settings.database);
    assert!(!shown.contains("Svc-Dsn-Secret"), "{shown}");
    let app = spawn_with_settings(settings, Arc::clone(&db)).await;
    app.get("/healthz")
        .await
        .assert_envelope("healthz", 200, "healthy");
    app.add("via-url", "p")
        .await
        .assert_envelope("add", 200, "Added user via-url");

    // The password from a file, with its trailing newline.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("db-password");
    std::fs::write(&file, format!("{SERVICE_PASSWORD}\n")).unwrap();
    // Readable by its owner only, as the README says.
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
    let env = [
        (
            "RUBBER_DATABASE_URL".to_owned(),
            format!("mariadb://rubber@127.0.0.1:{port}/{name}"),
        ),
        (
            "RUBBER_DATABASE_PASSWORD_FILE".to_owned(),
            file.display().to_string(),
        ),
    ];
    let mut settings = Settings::load_from(None, &env, &vec![]).unwrap();
    settings.api.listener.listen = Some("127.0.0.1:0".parse().unwrap());
    settings.hash_type = registry_rubber::htpasswd::HashType::Sha1;
    let second = spawn_with_settings(settings, Arc::clone(&db)).await;
    second
        .add("via-file", "p")
        .await
        .assert_envelope("add", 200, "Added user via-file");
    app.get("/remove?user=via-file")
        .await
        .assert_envelope("remove", 200, "removed user via-file");

    // A wrong password: the error names the account, never a password.
    let mut wrong = test_settings(&db);
    wrong.database = registry_rubber::config::DatabaseUrl::parse(&format!(
        "mysql://rubber:{WRONG_PASSWORD}@127.0.0.1:{port}/{name}"
    ))
    .unwrap();
    let err = Store::open(&wrong, Create::Never)
        .await
        .err()
        .expect("refused");
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("Access denied") && text.contains("rubber"),
        "{text}"
    );
    assert!(!text.contains(WRONG_PASSWORD), "{text}");
    let err = Application::build(&wrong).await.err().expect("refused");
    assert!(!format!("{err} {err:?}").contains(WRONG_PASSWORD));

    // Apache's read-only account runs the documented query, expiry
    // included, and cannot write.
    as_root(
        &server,
        &[
            format!("CREATE USER 'apache'@'127.0.0.1' IDENTIFIED BY '{APACHE_PASSWORD}'"),
            format!("GRANT SELECT ON `{name}`.`users` TO 'apache'@'127.0.0.1'"),
        ],
    )
    .await;
    // (The service's clock is the test's, years back: its users expired
    // long ago by the server's clock, which Apache's query uses.)
    sqlx::query(
        "INSERT INTO users (username, password, created_at, expires_at)
             VALUES ('expired', '{SHA}x', 0, 1), ('forever', '{SHA}y', 0, NULL),
             ('live', '{SHA}z', 0, UNIX_TIMESTAMP() + 3600)",
    )
    .execute(pool(&db))
    .await
    .unwrap();
    let mut apache = sqlx::MySqlConnection::connect(&format!(
        "mysql://apache:{APACHE_PASSWORD}@127.0.0.1:{port}/{name}"
    ))
    .await
    .unwrap();
    let query = "SELECT password FROM users WHERE username = ? AND (expires_at IS NULL OR expires_at > UNIX_TIMESTAMP())";
    for (user, found) in [
        ("live", true),
        // Names compare byte for byte: a trailing space is another name.
        ("live ", false),
        ("LIVE", false),
        ("forever", true),
        ("expired", false),
        ("via-url", false),
        ("via-file", false),
    ] {
        let hash: Option<String> = sqlx::query_scalar(query)
            .bind(user)
            .fetch_optional(&mut apache)
            .await
            .unwrap();
        assert_eq!(hash.is_some(), found, "{user}");
    }
    assert!(sqlx::query("DELETE FROM users")
        .execute(&mut apache)
        .await
        .is_err());

    // Nothing above put a password into the logs.
    let logs = captured_logs();
    assert!(logs.contains("listening"), "the capture works");
    for secret in [
        "Svc-Dsn-Secret",
        SERVICE_PASSWORD_ENCODED,
        WRONG_PASSWORD,
        APACHE_PASSWORD,
    ] {
        assert!(
            !logs.contains(secret),
            "a database password reached the logs"
        );
    }
}

/// The real binary at debug level, in text and in JSON, on MariaDB with its
/// password in the URL: migrated, started, an add served, stopped; and
/// refused at start with a wrong password. Its output holds neither
/// database password, nor the user's password or hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_at_debug_level_prints_no_database_password() {
    use crate::helpers::Served;
    let server = MariaDb::start();
    let db = database_on(&server).await;
    let name = database_name(&db);
    let port = server.port();
    as_root(
        &server,
        &[
            format!("CREATE USER 'rubber'@'127.0.0.1' IDENTIFIED BY '{SERVICE_PASSWORD}'"),
            format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX ON `{name}`.* TO 'rubber'@'127.0.0.1'"
            ),
        ],
    )
    .await;
    let url = format!("mysql://rubber:{SERVICE_PASSWORD_ENCODED}@127.0.0.1:{port}/{name}");
    let wrong = format!("mysql://rubber:{WRONG_PASSWORD}@127.0.0.1:{port}/{name}");
    let debug = ["--log-level".as_ref(), "debug".as_ref()];
    for log_format in ["text", "json"] {
        let user = format!("binary-{log_format}");
        let password = format!("Binary-Pass-{log_format}-7e21");
        let mut served = Served::start_on(&url, log_format, &debug);
        let api = served.doors(log_format, 1)["api"];
        let answer = reqwest::Client::new()
            .post(format!("http://{api}/add"))
            .form(&[("user", user.as_str()), ("passwd", password.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let (stopped, output) = served.stop_and_read();
        assert!(stopped, "{output}");
        assert!(output.contains(&user), "the capture works: {output}");
        assert!(
            output.contains("sqlx::query"),
            "the driver's statements are logged at debug level: {output}"
        );
        let hash = sqlx::query_scalar::<_, String>("SELECT password FROM users WHERE username = ?")
            .bind(&user)
            .fetch_one(pool(&db))
            .await
            .unwrap();

        let refused = std::process::Command::new(env!("CARGO_BIN_EXE_registry-rubber"))
            .args(["--database-url", &wrong, "--listen", "127.0.0.1:0"])
            .args(["--log-format", log_format, "--log-level", "debug", "serve"])
            .output()
            .unwrap();
        // An account the server refuses is a configuration to fix: exit 2.
        assert_eq!(refused.status.code(), Some(2));
        let refused = format!(
            "{}{}",
            String::from_utf8_lossy(&refused.stdout),
            String::from_utf8_lossy(&refused.stderr)
        );
        assert!(refused.contains("Access denied"), "{refused}");

        for text in [&output, &refused] {
            for secret in [
                "Svc-Dsn-Secret",
                SERVICE_PASSWORD_ENCODED,
                WRONG_PASSWORD,
                &password,
                &hash,
            ] {
                assert!(
                    !text.contains(secret),
                    "a secret reached the {log_format} output"
                );
            }
        }
    }
}
