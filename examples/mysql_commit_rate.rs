//! The raw durable commit rate of a MySQL/MariaDB server: one row per
//! transaction (autocommit), from CONNECTIONS connections at once, each
//! inserting one row after another into a table shaped like the service's
//! users table. The MySQL benchmark compares the service's durable adds/s
//! with it; the server's own settings (innodb_flush_log_at_trx_commit=1)
//! decide whether a commit is durable.
//!
//! Usage: mysql_commit_rate URL [SECONDS] [CONNECTIONS]
//! Prints: `commits_per_second N connections C`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, MySqlConnection};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: mysql_commit_rate URL [SECONDS] [CONNECTIONS]";
    let url = args.next().ok_or(usage)?;
    let seconds: f64 = args.next().map_or(Ok(3.0), |s| s.parse())?;
    let connections: usize = args.next().map_or(Ok(1), |s| s.parse())?;

    let mut admin = MySqlConnection::connect(&url).await?;
    admin
        .execute("DROP TABLE IF EXISTS raw_commit_rate")
        .await?;
    admin
        .execute(
            "CREATE TABLE raw_commit_rate (
                 username VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
                 password VARCHAR(255) NOT NULL,
                 created_at BIGINT NOT NULL
             ) ENGINE = InnoDB DEFAULT CHARACTER SET utf8mb4",
        )
        .await?;

    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(MySqlConnection::connect(&url).await?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, mut conn) in conns.into_iter().enumerate() {
        let (stop, commits) = (stop.clone(), commits.clone());
        tasks.push(tokio::spawn(async move {
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                // Autocommit: each statement is its own durable commit.
                sqlx::query(
                    "INSERT INTO raw_commit_rate (username, password, created_at) VALUES (?, ?, ?)",
                )
                .bind(format!("raw-{c}-{n}"))
                .bind("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=")
                .bind(1_700_000_000i64)
                .execute(&mut conn)
                .await?;
                n += 1;
                commits.fetch_add(1, Ordering::Relaxed);
            }
            conn.close().await?;
            Ok::<_, sqlx::Error>(())
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let done = commits.load(Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    println!(
        "commits_per_second {:.0} connections {connections}",
        done as f64 / elapsed
    );
    admin.execute("DROP TABLE raw_commit_rate").await?;
    admin.close().await?;
    Ok(())
}
