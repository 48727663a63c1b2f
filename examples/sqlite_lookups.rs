//! A reader of the users table from another process, as Apache's
//! mod_authn_dbd reads it: its own connection, a 1 s busy timeout, one point
//! lookup by user name after another. The soak benchmark runs it while the
//! service adds users, to show that no lookup is refused or held up.
//!
//! Usage: sqlite_lookups DATABASE SECONDS
//! Prints: `RESULT lookups=N errors=N p99_ms=X max_ms=X`, and each error on
//! standard error.

use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: sqlite_lookups DATABASE SECONDS";
    let path = args.next().ok_or(usage)?;
    let seconds: f64 = args.next().ok_or(usage)?.parse()?;
    let conn = rusqlite::Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(1))?;
    let mut lookup = conn.prepare("SELECT password FROM users WHERE username = ?1")?;
    let limit = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let (mut lookups, mut errors) = (0u64, 0u64);
    let mut micros = Vec::new();
    while started.elapsed() < limit {
        let name = format!("lookup-{}", lookups % 1000);
        let one = Instant::now();
        let found = lookup.query_row([&name], |r| r.get::<_, String>(0));
        micros.push(one.elapsed().as_micros() as u64);
        match found {
            Ok(_) | Err(rusqlite::Error::QueryReturnedNoRows) => {}
            Err(e) => {
                errors += 1;
                eprintln!("lookup failed: {e}");
            }
        }
        lookups += 1;
        // About a thousand lookups a second, each a fresh read transaction.
        std::thread::sleep(Duration::from_millis(1));
    }
    micros.sort_unstable();
    let at = |q: f64| {
        micros.get(((micros.len() as f64 * q) as usize).min(micros.len().saturating_sub(1)))
    };
    println!(
        "RESULT lookups={lookups} errors={errors} p99_ms={:.3} max_ms={:.3}",
        at(0.99).copied().unwrap_or(0) as f64 / 1e3,
        micros.last().copied().unwrap_or(0) as f64 / 1e3
    );
    Ok(())
}
