//! Gives memory the allocator keeps after a burst of load back to the
//! system once the service is quiet, so that its resident size after the
//! load is that of what it still holds (caches, connections), not of its
//! busiest moment.
//!
//! glibc's malloc keeps freed memory in its arenas, one per thread that
//! allocated under contention, and returns only the top of each heap on
//! its own. `malloc_trim` releases the free pages of every arena. It is
//! called only after a quiet spell (the process used under 1% of a core
//! for 2 s), on a blocking-pool thread, and at most once per 200 ms of
//! work done since the last one.

use std::time::Duration;

/// How often the service looks whether it has been quiet.
pub const QUIET_CHECK: Duration = Duration::from_secs(2);

/// CPU time in one QUIET_CHECK below which the service counts as quiet:
/// a few idle ticks of its timers, no requests to speak of.
const QUIET_CPU: Duration = Duration::from_millis(20);

/// CPU time since the last trim after which a quiet spell is worth a trim:
/// less work than this freed little.
const WORK_WORTH_A_TRIM: Duration = Duration::from_millis(200);

/// Whether to trim now, given the CPU time of the last QUIET_CHECK and
/// the CPU time since the last trim (both including the last check).
pub fn trim_due(last_interval: Duration, since_trim: Duration) -> bool {
    last_interval < QUIET_CPU && since_trim >= WORK_WORTH_A_TRIM
}

/// Every QUIET_CHECK, trims the allocator's free memory when the process
/// has been quiet since the last check after having worked since the last
/// trim. Runs until the task is dropped.
pub async fn trim_when_quiet() {
    let mut ticker = tokio::time::interval(QUIET_CHECK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last = process_cpu();
    let mut at_trim = last;
    loop {
        ticker.tick().await;
        let now = process_cpu();
        if trim_due(now.saturating_sub(last), now.saturating_sub(at_trim)) {
            if let Ok(released) = tokio::task::spawn_blocking(trim).await {
                tracing::debug!(released, "returned free memory to the system");
            }
            at_trim = process_cpu();
        }
        last = process_cpu();
    }
}

/// The CPU time (user and system) the process has used.
fn process_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: `usage` is writable memory of the size getrusage fills; it is
    // read only when the call succeeded.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return Duration::ZERO;
        }
        usage.assume_init()
    };
    let micros = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    micros(usage.ru_utime) + micros(usage.ru_stime)
}

/// Releases the allocator's free memory; whether any was released.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: malloc_trim only walks and shrinks the allocator's own free
    // lists; it is safe to call from any thread at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators return memory on their own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_only_after_work_and_then_quiet() {
        let ms = Duration::from_millis;
        // Busy: never while the service works.
        assert!(!trim_due(ms(500), ms(5_000)));
        assert!(!trim_due(QUIET_CPU, ms(5_000)));
        // Quiet after work: once.
        assert!(trim_due(ms(3), ms(5_000)));
        // Quiet, and nothing worth it since the last trim.
        assert!(!trim_due(ms(3), ms(10)));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_trim_returns_freed_memory_to_the_system() {
        fn resident_bytes() -> u64 {
            let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
            let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
            // SAFETY: sysconf reads a constant of the system.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            pages * u64::try_from(page).unwrap()
        }
        // Many small blocks below mmap's threshold, then all but the last
        // freed: the heap cannot shrink from its top, so only a trim gives
        // the pages back. 100 MB of them, so that what other tests of this
        // process allocate meanwhile cannot hide the 50 MB asked for.
        let mut blocks: Vec<Vec<u8>> = (0..100_000).map(|_| vec![1u8; 1_000]).collect();
        let last = blocks.pop();
        let before = resident_bytes();
        drop(blocks);
        trim();
        let after = resident_bytes();
        drop(last);
        assert!(
            before.saturating_sub(after) > 50 << 20,
            "resident {before} bytes before the trim, {after} after"
        );
    }
}
