//! A probe of the disk's durable write latency: every 10 ms it rewrites 4 KiB
//! at the start of FILE and waits for fdatasync, as a commit does, and prints
//! one line per write: `EPOCH_SECONDS MS` (when it started, how long it
//! took). Run beside the service, it tells a stall of the disk (a write of
//! the probe slow at the same moment) from a stall of the service.
//!
//! Usage: fsync_probe FILE SECONDS

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: fsync_probe FILE SECONDS";
    let path = args.next().ok_or(usage)?;
    let seconds: f64 = args.next().ok_or(usage)?.parse()?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    let block = [0x5au8; 4096];
    let limit = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut out = Vec::new();
    while started.elapsed() < limit {
        let at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
        let one = Instant::now();
        file.write_all_at(&block, 0)?;
        file.sync_data()?;
        out.push((at, one.elapsed().as_secs_f64() * 1e3));
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut stdout = std::io::stdout().lock();
    for (at, ms) in out {
        writeln!(stdout, "{at:.3} {ms:.2}")?;
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(())
}
