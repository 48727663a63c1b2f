//! The raw durable commit rate of SQLite on a disk: one row per transaction,
//! WAL mode, synchronous=FULL, the same SQLite library and settings as the
//! service. The benchmark compares the service's durable adds/s with it.
//!
//! Usage: sqlite_commit_rate DIR [SECONDS]
//! Prints: `commits_per_second N`.

use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or("usage: sqlite_commit_rate DIR [SECONDS]")?;
    let seconds: f64 = args.next().map_or(Ok(3.0), |s| s.parse())?;
    let path = std::path::Path::new(&dir).join("raw-commit-rate.sqlite");
    let _ = std::fs::remove_file(&path);
    let conn = rusqlite::Connection::open(&path)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         CREATE TABLE users (username TEXT PRIMARY KEY, password TEXT NOT NULL, created_at INTEGER NOT NULL);",
    )?;
    let mut insert =
        conn.prepare("INSERT INTO users (username, password, created_at) VALUES (?1, ?2, ?3)")?;
    let limit = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut n: u64 = 0;
    while started.elapsed() < limit {
        // Each statement outside a transaction is its own durable commit.
        insert.execute(rusqlite::params![
            format!("raw-{n}"),
            "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
            1_700_000_000i64
        ])?;
        n += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    println!("commits_per_second {rate:.0}");
    drop(insert);
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(())
}
