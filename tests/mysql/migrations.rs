//! Migrations on a real MariaDB: the schema they make, that they run once,
//! that a newer schema is refused, that tables migrate independently, that
//! instances starting together do not trip over each other, and that the
//! original's table is adopted in place.

use registry_rubber::config::TableName;
use registry_rubber::domain::Username;
use registry_rubber::store::migrations::MYSQL;
use registry_rubber::store::{Create, Store, StoreError, WriteOp, WriteOutcome};
use sqlx::Row;

use crate::helpers::{test_settings, TestDb};
use crate::mariadb::MariaDb;
use crate::{database_on, pool};

async fn open(db: &TestDb, table: &str) -> Result<Store, StoreError> {
    let mut settings = test_settings(db);
    settings.table = TableName::parse(table).unwrap();
    Store::open(&settings, Create::Never).await
}

/// (column, column_type, character_set, collation, nullable) of a table.
async fn columns(db: &TestDb, table: &str) -> Vec<(String, String, String, String, String)> {
    sqlx::query(
        "SELECT column_name, column_type, COALESCE(character_set_name, ''),
                COALESCE(collation_name, ''), is_nullable
         FROM information_schema.columns
         WHERE table_schema = DATABASE() AND table_name = ?
         ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(pool(db))
    .await
    .unwrap()
    .into_iter()
    .map(|r| {
        let s = |i: usize| -> String {
            let bytes: Vec<u8> = r.try_get(i).unwrap();
            String::from_utf8(bytes).unwrap()
        };
        (s(0), s(1), s(2), s(3), s(4))
    })
    .collect()
}

async fn table_engine_and_collation(db: &TestDb, table: &str) -> (String, String) {
    let row = sqlx::query(
        "SELECT CAST(engine AS CHAR), CAST(table_collation AS CHAR) FROM information_schema.tables
         WHERE table_schema = DATABASE() AND table_name = ?",
    )
    .bind(table)
    .fetch_one(pool(db))
    .await
    .unwrap();
    (row.get(0), row.get(1))
}

async fn recorded(db: &TestDb, table: &str) -> Vec<(i64, String, i64)> {
    sqlx::query(
        "SELECT version, CAST(name AS CHAR), applied_at FROM rubber_migrations WHERE tbl = ? ORDER BY version",
    )
    .bind(table)
    .fetch_all(pool(db))
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

fn expected_schema() -> Vec<(String, String, String, String, String)> {
    [
        ("username", "varbinary(128)", "", "", "NO"),
        ("password", "varchar(255)", "utf8mb4", "", "NO"),
        ("created_at", "bigint(20)", "", "", "NO"),
        ("expires_at", "bigint(20)", "", "", "YES"),
        ("scopes", "text", "ascii", "ascii_bin", "YES"),
    ]
    .iter()
    .map(|(a, b, c, d, e)| {
        (
            a.to_string(),
            b.to_string(),
            c.to_string(),
            d.to_string(),
            e.to_string(),
        )
    })
    .collect()
}

/// Compares columns, ignoring the password's collation (the server's
/// default for utf8mb4).
fn assert_schema(found: Vec<(String, String, String, String, String)>) {
    let found: Vec<_> = found
        .into_iter()
        .map(|(a, b, c, d, e)| {
            let d = if a == "password" { String::new() } else { d };
            (a, b, c, d, e)
        })
        .collect();
    assert_eq!(found, expected_schema());
}

#[tokio::test]
async fn migrations_make_the_schema_once_and_refuse_a_newer_one() {
    let server = MariaDb::start();

    // A fresh database: every migration, recorded with the SQLite names.
    let db = database_on(&server).await;
    let store = open(&db, "users").await.expect("open migrates");
    assert_schema(columns(&db, "users").await);
    let (engine, collation) = table_engine_and_collation(&db, "users").await;
    assert_eq!(engine, "InnoDB");
    assert!(collation.starts_with("utf8mb4"), "{collation}");
    let first = recorded(&db, "users").await;
    let names: Vec<(i64, String)> = first.iter().map(|(v, n, _)| (*v, n.clone())).collect();
    let listed: Vec<(i64, String)> = MYSQL
        .iter()
        .map(|m| (m.version, m.name.to_owned()))
        .collect();
    assert_eq!(names, listed);
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT CAST(index_name AS CHAR) FROM information_schema.statistics
         WHERE table_schema = DATABASE() AND table_name = 'users' ORDER BY 1",
    )
    .fetch_all(pool(&db))
    .await
    .unwrap();
    assert_eq!(indexes, ["by_created_at", "by_expires_at", "PRIMARY"]);
    drop(store);

    // Again: nothing more runs.
    open(&db, "users").await.expect("open again");
    assert_eq!(recorded(&db, "users").await, first);

    // A table of another name migrates by itself.
    open(&db, "other_users").await.expect("another table");
    assert_eq!(recorded(&db, "other_users").await.len(), MYSQL.len());
    assert_schema(columns(&db, "other_users").await);

    // A schema from a newer build is refused, and left alone.
    sqlx::query("INSERT INTO rubber_migrations VALUES ('users', 999, 'future', 0)")
        .execute(pool(&db))
        .await
        .unwrap();
    let err = open(&db, "users").await.err().expect("refused");
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 999, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn instances_starting_together_migrate_once() {
    let server = MariaDb::start();
    let db = database_on(&server).await;
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let db = std::sync::Arc::clone(&db);
            tokio::spawn(async move { open(&db, "users").await.map(drop) })
        })
        .collect();
    for o in opens {
        o.await.unwrap().expect("every instance opens");
    }
    assert_eq!(recorded(&db, "users").await.len(), MYSQL.len());
    assert_schema(columns(&db, "users").await);
}

#[tokio::test]
async fn the_originals_table_is_adopted_in_place() {
    let server = MariaDb::start();
    let db = database_on(&server).await;
    // The original's table, as its documentation had it created by hand.
    for statement in [
        "CREATE TABLE users (username int(10) unsigned PRIMARY KEY, password varchar(64))
         ENGINE = MyISAM DEFAULT CHARSET = latin1",
        "INSERT INTO users VALUES (1423382819, '{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=')",
        "INSERT INTO users VALUES (4294967295, '{SHA}x')",
        "INSERT INTO users VALUES (1423382000, NULL)",
    ] {
        sqlx::query(statement).execute(pool(&db)).await.unwrap();
    }
    // Its int(10) unsigned key cannot hold a millisecond name.
    assert!(
        sqlx::query("INSERT INTO users VALUES (1423382819123, '{SHA}y')")
            .execute(pool(&db))
            .await
            .is_err()
    );

    let store = open(&db, "users").await.expect("adopted");
    assert_schema(columns(&db, "users").await);
    assert_eq!(table_engine_and_collation(&db, "users").await.0, "InnoDB");
    let u = |s: &str| Username::parse(s).unwrap();
    let row = store.get(&u("1423382819")).await.unwrap().expect("kept");
    assert_eq!(row.password_hash, "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=");
    assert_eq!(row.created_at, 1_423_382_819, "from its epoch name");
    assert_eq!(row.expires_at, None, "the original's users never expire");
    // What a non-strict server stored for a millisecond name: a time in the
    // year 2106. Its age is taken as now, so that cleanup can reach it.
    let clipped = store
        .get(&u("4294967295"))
        .await
        .unwrap()
        .unwrap()
        .created_at;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - 60..=now).contains(&clipped), "{clipped}");

    // Millisecond and text names fit now, and names are case-sensitive.
    for name in ["1423382819123", "build-7", "Build-7", &"n".repeat(128)] {
        let outcome = store
            .write(WriteOp::Add {
                user: u(name),
                hash: "$apr1$x".repeat(30),
                now: 5,
                expires_at: Some(10),
                scopes: None,
                replace: true,
            })
            .await
            .unwrap();
        assert_eq!(outcome, WriteOutcome::Added { replaced: false }, "{name}");
    }
    assert_eq!(store.count().await.unwrap(), 6);
    assert_eq!(
        store.get(&u("build-7")).await.unwrap().unwrap().username,
        "build-7"
    );

    // Apache's query of the original still finds the adopted users.
    let hash: String =
        sqlx::query_scalar("SELECT password FROM users WHERE username = '1423382819'")
            .fetch_one(pool(&db))
            .await
            .unwrap();
    assert!(hash.starts_with("{SHA}"));
    assert_eq!(recorded(&db, "users").await.len(), MYSQL.len());
}
