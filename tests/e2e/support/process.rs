//! Helper processes that are stopped by their own PID when their guard drops,
//! and polling with a deadline (never a fixed sleep) to wait for them.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a stopped process gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Interval between two polls.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Calls `probe` until it returns `Some`, or `timeout` passes (then `None`).
pub fn poll<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A loopback port that was free a moment ago. Whoever binds it next may
/// still lose a race with another process; callers retry on "address in use".
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0 to find a free port")
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn accepts(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Sends `signal` to `pid`; false if there is no such process.
pub fn signal(pid: i32, signal: libc::c_int) -> bool {
    // SAFETY: kill has no memory-safety preconditions; a stale PID at worst
    // gets ESRCH.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Whether `pid` names a live process (a zombie counts as gone: the process
/// is not our child, so its reaping is up to its parent).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Stops a process that is not our child: SIGTERM, wait, then SIGKILL.
pub fn stop_pid(pid: i32) {
    if !signal(pid, libc::SIGTERM) {
        return;
    }
    if poll(STOP_GRACE, || (!alive(pid)).then_some(())).is_none() {
        signal(pid, libc::SIGKILL);
        poll(STOP_GRACE, || (!alive(pid)).then_some(()));
    }
}

/// A child process with its standard output and error in a log file, stopped
/// (SIGTERM, then SIGKILL) and reaped when dropped.
pub struct ChildGuard {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    /// Spawns `command` with stdin closed and stdout and stderr appended to `log`.
    pub fn spawn(name: &str, command: &mut Command, log: &Path) -> Self {
        let out = File::create(log)
            .unwrap_or_else(|e| panic!("create log file {} for {name}: {e}", log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("duplicate log file handle for {name}: {e}"));
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({command:?}): {e}"));
        Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        }
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// What the process has written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log)
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log.display()))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process's ID.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("a PID fits in pid_t")
    }

    /// The file its standard output and error go to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Stops the process by its PID: SIGTERM, then SIGKILL if it has not
    /// exited within the grace period; reaps it. Does nothing if it has
    /// exited already.
    pub fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            signal(pid, libc::SIGTERM);
        }
        if poll(STOP_GRACE, || self.exited()).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Spawns `command` as [`ChildGuard::spawn`] does and waits up to `timeout`
/// for it to accept connections on 127.0.0.1:`port`; panics with its log if
/// it exits first or never does.
pub fn spawn_listening(
    name: &str,
    command: &mut Command,
    log: &Path,
    port: u16,
    timeout: Duration,
) -> ChildGuard {
    let mut child = ChildGuard::spawn(name, command, log);
    let up = poll(timeout, || {
        if child.exited().is_some() {
            return Some(false);
        }
        accepts(port).then_some(true)
    });
    assert_eq!(
        up,
        Some(true),
        "{name} did not listen on 127.0.0.1:{port}:\n{}",
        child.log()
    );
    child
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}
