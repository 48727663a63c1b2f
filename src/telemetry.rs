//! Logging: one subscriber for the process, text or JSON, on standard error.
//! Lines are written by a dedicated thread, so a request never waits on the
//! terminal or the journal; when that thread falls behind, loggers wait
//! rather than drop lines.

use std::io::IsTerminal;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the process-wide subscriber. `level` was validated with the
/// configuration; a later failure falls back to `info`. Keep the returned
/// guard alive until exit: dropping it flushes the lines still queued.
pub fn init(format: LogFormat, level: &str) -> WorkerGuard {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
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
