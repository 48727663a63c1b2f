//! Logging: one subscriber for the process, text or JSON, on standard error.
//! Lines are written by a dedicated thread, so a request does not wait on
//! the terminal or the journal until that thread falls behind by
//! [`QUEUED_LINES`]; then loggers wait rather than drop lines.
//!
//! Every task and thread the application starts runs in the span it was
//! started from, so a program that runs several instances in one process
//! (the tests) can tell each one's lines apart by wrapping it in a span.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Lines waiting for the writing thread before loggers wait (the runtime's
/// threads with them): at one audit line per add, about three seconds of
/// the service's top rate for a stalled journal, longer at any other. The
/// queue's slots are allocated and written at start, 32 bytes each (2 MB);
/// the library's default of 128,000 lines would hold 4 MB resident.
const QUEUED_LINES: usize = 65_536;

/// Installs the process-wide subscriber. `level` was validated with the
/// configuration; a later failure falls back to `info`. Keep the returned
/// guard alive until exit: dropping it flushes the lines still queued.
pub fn init(format: LogFormat, level: &str) -> WorkerGuard {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    guard
}

/// At most one line a second for something that may repeat on every
/// request (a failing database): [`RateLimitedLines::admit`] says whether
/// to write this one, and how many were left out since the last.
pub struct RateLimitedLines {
    second: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimitedLines {
    pub const fn new() -> Self {
        Self {
            second: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Some(lines left out since the last one written) when this line may
    /// be written; None when it is to be left out.
    pub fn admit(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.second.load(Ordering::Relaxed);
        if now > last
            && self
                .second
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

impl Default for RateLimitedLines {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_and_a_count_of_the_rest() {
        let lines = RateLimitedLines::new();
        assert_eq!(lines.admit(), Some(0));
        assert_eq!(lines.admit(), None);
        assert_eq!(lines.admit(), None);
        lines.second.store(0, Ordering::Relaxed);
        assert_eq!(lines.admit(), Some(2));
    }
}
