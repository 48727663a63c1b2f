//! The command line against a real MariaDB, as an operator meets it: an
//! account refused, a right missing or a database name misspelt exit 2 with
//! the fix, the same for every command; `migrate` says what it applied; the
//! URL prints as written; `check-config` checks the account's rights.

use std::path::Path;
use std::process::Output;

use crate::binary::{run, text};
use crate::mariadb::MariaDb;
use crate::secrets::as_root;
use crate::{database_on, pool};

const PASSWORD: &str = "Cli-Svc-Secret-8e21";

/// The binary, with nothing on its input.
fn run_without_input(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    run(args, env, None, cwd)
}

/// Each command that opens the database, with what it needs to get there.
const COMMANDS: [&[&str]; 5] = [
    &["migrate"],
    &["serve"],
    &["check-config"],
    &["remove", "someone"],
    &["cleanup"],
];

#[tokio::test]
async fn refusals_exit_2_with_the_fix_the_same_for_every_command() {
    let server = MariaDb::start();
    let db = database_on(&server).await;
    let name = match &*db {
        crate::helpers::TestDb::Mysql(d) => d.name.clone(),
        crate::helpers::TestDb::Sqlite { .. } => unreachable!(),
    };
    let port = server.port();
    // An account with an underscore in its name, granted on one database,
    // without DELETE.
    as_root(
        &server,
        &[
            format!("CREATE USER 'rubber_svc'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'"),
            format!(
                "GRANT SELECT, INSERT, UPDATE, CREATE, ALTER, INDEX ON `{name}`.* TO 'rubber_svc'@'127.0.0.1'"
            ),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mysql://rubber_svc:{PASSWORD}@127.0.0.1:{port}/{name}");
    let listen = ("RUBBER_LISTEN", "127.0.0.1:0");

    // Without DELETE, which a migration needs: 2, naming the right.
    let out = run_without_input(&["migrate"], &[("RUBBER_DATABASE_URL", &url)], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("DELETE command denied")
            && err.contains("GRANT SELECT, INSERT, UPDATE, DELETE"),
        "{err}"
    );
    let grant_delete = format!("GRANT DELETE ON `{name}`.* TO 'rubber_svc'@'127.0.0.1'");
    as_root(&server, std::slice::from_ref(&grant_delete)).await;

    // migrate applies the migrations and says so; again, says there were none.
    let out = run_without_input(&["migrate"], &[("RUBBER_DATABASE_URL", &url)], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.starts_with(&format!(
            "database mysql://rubber_svc:***@127.0.0.1:{port}/{name}: applied "
        )) && said.contains("; schema version 7"),
        "the URL prints as written, and what was applied: {said}"
    );
    let out = run_without_input(&["migrate"], &[("RUBBER_DATABASE_URL", &url)], dir.path());
    assert!(
        text(&out.stdout).contains("was up to date: schema version 7, nothing applied"),
        "{}",
        text(&out.stdout)
    );

    // A right taken away after the migrations (serve would start, and fail
    // at the first removal): check-config finds it.
    as_root(
        &server,
        &[format!(
            "REVOKE DELETE ON `{name}`.* FROM 'rubber_svc'@'127.0.0.1'"
        )],
    )
    .await;
    let out = run_without_input(
        &["check-config"],
        &[("RUBBER_DATABASE_URL", &url)],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("DELETE command denied")
            && err.contains("GRANT SELECT, INSERT, UPDATE, DELETE")
            && err.contains("database_url from environment variable RUBBER_DATABASE_URL"),
        "{err}"
    );
    as_root(&server, &[grant_delete]).await;
    let out = run_without_input(
        &["check-config"],
        &[("RUBBER_DATABASE_URL", &url)],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("checked: database_url: the account connects")
            && err.contains("current schema (version 7)")
            && err.contains("SELECT, INSERT, UPDATE and DELETE"),
        "{err}"
    );

    // A wrong password: access denied (1045), exit 2 for every command,
    // with the fix and without the password.
    let wrong = format!("mysql://rubber_svc:Wrong-{PASSWORD}@127.0.0.1:{port}/{name}");
    // A misspelt database, which the account has no rights on (1044).
    let misspelt = format!("mysql://rubber_svc:{PASSWORD}@127.0.0.1:{port}/{name}_typo");
    for (url, expected) in [(&wrong, "refused the account"), (&misspelt, "is misspelt")] {
        for args in COMMANDS {
            let out = run_without_input(args, &[("RUBBER_DATABASE_URL", url), listen], dir.path());
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(
                err.contains(expected)
                    && err.contains("see README, MySQL and MariaDB")
                    && err.contains("database_url from environment variable RUBBER_DATABASE_URL")
                    && !err.contains("database unreachable"),
                "{args:?}: {err}"
            );
            assert!(!err.contains(PASSWORD), "the password leaked: {err}");
        }
    }
    // Nothing was created by the refused commands.
    let typo: Option<String> = sqlx::query_scalar(
        "SELECT schema_name FROM information_schema.schemata WHERE schema_name = ?",
    )
    .bind(format!("{name}_typo"))
    .fetch_optional(pool(&db))
    .await
    .unwrap();
    assert_eq!(typo, None);
}

#[tokio::test]
async fn a_password_file_others_can_read_is_refused() {
    let server = MariaDb::start();
    let db = database_on(&server).await;
    let name = match &*db {
        crate::helpers::TestDb::Mysql(d) => d.name.clone(),
        crate::helpers::TestDb::Sqlite { .. } => unreachable!(),
    };
    let port = server.port();
    as_root(
        &server,
        &[
            format!("CREATE USER 'rubber_file'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'"),
            format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX ON `{name}`.* TO 'rubber_file'@'127.0.0.1'"
            ),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("database-password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let chmod = |mode: u32| {
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap()
    };
    let url = format!("mysql://rubber_file@127.0.0.1:{port}/{name}");
    let env = [
        ("RUBBER_DATABASE_URL", url.as_str()),
        ("RUBBER_DATABASE_PASSWORD_FILE", file.to_str().unwrap()),
    ];
    chmod(0o644);
    for args in COMMANDS {
        let out = run_without_input(args, &env, dir.path());
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("has mode 0644") && err.contains("chmod 0400"),
            "{args:?}: {err}"
        );
    }
    chmod(0o400);
    let out = run_without_input(&["migrate"], &env, dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
}
