//! Logging: one subscriber for the process, text or JSON, on standard error.
//! Lines are written by a dedicated thread, so a request never waits on the
//! terminal or the journal until [`QUEUED_LINES`] lines wait for it; then
//! loggers wait rather than drop lines.
//!
//! Every task and thread the application starts runs in the span it was
//! started from, so a program that runs several instances in one process
//! (the tests) can tell each one's lines apart by wrapping it in a span.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Lines that may wait for the writing thread before a logger waits: at
/// one audit line per add, five seconds of the service's top rate for a
/// stalled journal. The queue holds only the lines waiting, allocated as
/// they come: none at rest.
const QUEUED_LINES: usize = 128_000;

/// How long a logger that found the queue full sleeps before it looks
/// again.
const FULL_PAUSE: Duration = Duration::from_millis(1);

/// Longest the guard's drop waits for the queued lines to be written.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Installs the process-wide subscriber. `level` was validated with the
/// configuration; a later failure falls back to `info`. Keep the returned
/// guard alive until exit: dropping it writes the lines still queued.
pub fn init(format: LogFormat, level: &str) -> LogGuard {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = queue(std::io::stderr(), QUEUED_LINES);
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

enum Message {
    Line(Vec<u8>),
    /// Write out what is buffered, then answer.
    Flush(mpsc::SyncSender<()>),
}

/// Hands each formatted line to the writing thread. Without that thread
/// (it could not be started), lines go straight to standard error.
#[derive(Clone)]
pub struct QueueWriter {
    tx: Option<mpsc::Sender<Message>>,
    queued: Arc<AtomicUsize>,
    limit: usize,
}

/// Dropping it writes out the lines still queued, waiting at most
/// [`FLUSH_WAIT`] for a stalled terminal or journal.
pub struct LogGuard {
    tx: Option<mpsc::Sender<Message>>,
}

/// A queue of at most about `limit` lines (loggers racing for the last
/// place may pass it by a few) written to `out` by a thread of its own.
fn queue<W: Write + Send + 'static>(out: W, limit: usize) -> (QueueWriter, LogGuard) {
    let (tx, rx) = mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let drained = Arc::clone(&queued);
    let started = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_lines(&rx, &drained, out));
    let tx = match started {
        Ok(_) => Some(tx),
        Err(e) => {
            eprintln!("registry-rubber: cannot start the log writer thread ({e}); writing log lines directly");
            None
        }
    };
    let guard = LogGuard { tx: tx.clone() };
    (QueueWriter { tx, queued, limit }, guard)
}

/// The writing thread: each line in turn, buffered while more wait, until
/// every sender is gone.
fn write_lines(rx: &mpsc::Receiver<Message>, queued: &AtomicUsize, out: impl Write) {
    let mut out = std::io::BufWriter::new(out);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Line(line) => {
                    let _ = out.write_all(&line);
                    queued.fetch_sub(1, Ordering::AcqRel);
                }
                Message::Flush(done) => {
                    let _ = out.flush();
                    let _ = done.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
    }
    let _ = out.flush();
}

impl Write for QueueWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some(tx) = &self.tx else {
            return std::io::stderr().write(buf);
        };
        while self.queued.load(Ordering::Acquire) >= self.limit {
            std::thread::sleep(FULL_PAUSE);
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        if tx.send(Message::Line(buf.to_vec())).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(std::io::Error::other("the log writer thread has stopped"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for QueueWriter {
    type Writer = QueueWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let Some(tx) = &self.tx else { return };
        let (done, written) = mpsc::sync_channel(1);
        if tx.send(Message::Flush(done)).is_ok() {
            let _ = written.recv_timeout(FLUSH_WAIT);
        }
    }
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
    use std::sync::{Condvar, Mutex};

    /// A sink the test reads, and may hold shut: a write waits while it is.
    #[derive(Clone, Default)]
    struct Sink {
        written: Arc<Mutex<Vec<u8>>>,
        shut: Arc<(Mutex<bool>, Condvar)>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (shut, opened) = &*self.shut;
            let mut held = shut.lock().unwrap();
            while *held {
                held = opened.wait(held).unwrap();
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("line {i}\n")).collect()
    }

    #[test]
    fn lines_come_out_whole_and_in_order_and_the_guard_writes_the_rest() {
        let sink = Sink::default();
        let (writer, guard) = queue(sink.clone(), 64);
        let expected = lines(5_000);
        for line in &expected {
            writer.make_writer().write_all(line.as_bytes()).unwrap();
        }
        drop(guard);
        let written = String::from_utf8(sink.written.lock().unwrap().clone()).unwrap();
        assert_eq!(written, expected.concat());
        assert_eq!(writer.queued.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_full_queue_makes_the_logger_wait_and_loses_no_line() {
        let sink = Sink::default();
        *sink.shut.0.lock().unwrap() = true;
        let (writer, guard) = queue(sink.clone(), 4);
        let sent = Arc::new(AtomicUsize::new(0));
        let logger = std::thread::spawn({
            let (writer, sent) = (writer.clone(), Arc::clone(&sent));
            move || {
                for line in lines(20) {
                    writer.make_writer().write_all(line.as_bytes()).unwrap();
                    sent.fetch_add(1, Ordering::AcqRel);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        // The writing thread holds what it took at the shut sink; four more
        // wait in the queue, and the logger waits for room.
        assert_eq!(writer.queued.load(Ordering::Acquire), 4);
        assert!(sent.load(Ordering::Acquire) < 20);
        assert!(!logger.is_finished(), "the logger waits for room");
        *sink.shut.0.lock().unwrap() = false;
        sink.shut.1.notify_all();
        logger.join().unwrap();
        drop(guard);
        let written = String::from_utf8(sink.written.lock().unwrap().clone()).unwrap();
        assert_eq!(written, lines(20).concat());
    }

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
