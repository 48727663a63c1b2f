//! deploy/httpd.conf.sample as the tests use it: read at run time, written
//! with only its `Define` values replaced, and started with
//! `apache2 -f FILE -k start`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::{accepts, alive, poll, stop_pid};
use super::tools::tools;

/// How long Apache gets to write its PID file and open its ports.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Prefix of the sample's commented-out mutual-TLS lines.
pub const MTLS_MARKER: &str = "#MTLS ";

pub fn sample_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/httpd.conf.sample")
}

pub fn read_sample() -> String {
    let path = sample_path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The name a `Define NAME value` line defines.
pub fn define_name(line: &str) -> Option<&str> {
    line.strip_prefix("Define ")?.split_whitespace().next()
}

/// The value of the first directive `name` in `text` (outside comments), as
/// written: `User` gives `registry-apache`.
pub fn sample_directive<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (directive, value) = line.trim().split_once(char::is_whitespace)?;
        (directive == name).then(|| value.trim())
    })
}

/// A commented-out mutual-TLS line with its marker removed, indentation kept.
pub fn mtls_enabled(line: &str) -> Option<String> {
    let body = line.trim_start();
    let indent = &line[..line.len() - body.len()];
    body.strip_prefix(MTLS_MARKER)
        .map(|rest| format!("{indent}{rest}"))
}

/// The sample with each `Define` named in `values` given its new value, and,
/// if `mtls`, the mutual-TLS lines switched on. Every other byte is kept.
/// Panics if the sample lacks a `Define` the tests set.
pub fn render(sample: &str, values: &BTreeMap<&str, String>, mtls: bool) -> String {
    let mut replaced = BTreeSet::new();
    let mut out = String::with_capacity(sample.len() + 1024);
    for line in sample.split_inclusive('\n') {
        let (body, eol) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        if let Some((name, value)) = define_name(body).and_then(|n| values.get_key_value(n)) {
            replaced.insert(*name);
            out.push_str(&format!("Define {name} {}{eol}", quote(value)));
        } else if let Some(enabled) = mtls.then(|| mtls_enabled(body)).flatten() {
            out.push_str(&enabled);
            out.push_str(eol);
        } else {
            out.push_str(line);
        }
    }
    let absent: Vec<&&str> = values.keys().filter(|k| !replaced.contains(*k)).collect();
    assert!(
        absent.is_empty(),
        "{} has no `Define` line for {absent:?}; the tests substitute these values",
        sample_path().display()
    );
    out
}

/// Asserts that `written` is `sample` byte for byte except for the values of
/// `Define` lines (and, if `mtls`, the mutual-TLS markers).
pub fn assert_only_defines_differ(sample: &str, written: &str, mtls: bool) {
    let ours: Vec<&str> = sample.split_inclusive('\n').collect();
    let theirs: Vec<&str> = written.split_inclusive('\n').collect();
    assert_eq!(
        ours.len(),
        theirs.len(),
        "the written configuration has {} lines, the sample {}",
        theirs.len(),
        ours.len()
    );
    for (number, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        if a == b {
            continue;
        }
        let same_define = define_name(a).is_some() && define_name(a) == define_name(b);
        let switched_on = mtls
            && mtls_enabled(a.trim_end_matches('\n')).as_deref() == Some(b.trim_end_matches('\n'))
            && a.ends_with('\n') == b.ends_with('\n');
        assert!(
            same_define || switched_on,
            "line {} differs from the sample beyond a Define value:\n  sample:  {a:?}\n  written: {b:?}",
            number + 1
        );
    }
}

fn quote(value: &str) -> String {
    if value.contains(char::is_whitespace) || value.is_empty() {
        format!("\"{value}\"")
    } else {
        value.to_owned()
    }
}

/// A running Apache, stopped by the PID in its PID file when dropped.
pub struct Apache {
    pid: i32,
    error_log: PathBuf,
}

/// Why Apache did not start.
#[derive(Debug)]
pub enum StartError {
    /// Another process took one of the ports first; retry with others.
    PortTaken(String),
    Failed(String),
}

impl Apache {
    /// Runs `apache2 -f conf -k start` and waits until every port accepts
    /// connections.
    pub fn start(
        conf: &Path,
        pid_file: &Path,
        error_log: &Path,
        ports: &[u16],
    ) -> Result<Self, StartError> {
        let output = Command::new(&tools().apache2)
            .arg("-f")
            .arg(conf)
            .args(["-k", "start"])
            .output()
            .map_err(|e| StartError::Failed(format!("cannot run apache2: {e}")))?;
        let read_log = || std::fs::read_to_string(error_log).unwrap_or_default();
        if !output.status.success() {
            let message = format!(
                "apache2 -f {} -k start exited with {}:\n{}{}\nerror log:\n{}",
                conf.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                read_log()
            );
            return Err(if message.contains("Address already in use") {
                StartError::PortTaken(message)
            } else {
                StartError::Failed(message)
            });
        }
        let pid = poll(START_TIMEOUT, || {
            std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
        })
        .ok_or_else(|| {
            StartError::Failed(format!(
                "Apache wrote no PID file {} within {START_TIMEOUT:?}; error log:\n{}",
                pid_file.display(),
                read_log()
            ))
        })?;
        let apache = Self {
            pid,
            error_log: error_log.to_owned(),
        };
        let ready = poll(START_TIMEOUT, || {
            if !alive(pid) {
                return Some(false);
            }
            ports.iter().all(|p| accepts(*p)).then_some(true)
        });
        match ready {
            Some(true) => Ok(apache),
            Some(false) => Err(StartError::Failed(format!(
                "Apache (PID {pid}) exited after start; error log:\n{}",
                apache.error_log()
            ))),
            None => Err(StartError::Failed(format!(
                "Apache (PID {pid}) did not open ports {ports:?} within {START_TIMEOUT:?}; error log:\n{}",
                apache.error_log()
            ))),
        }
    }

    /// The PID of Apache's parent process, which runs as root.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(&self.error_log)
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.error_log.display()))
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        stop_pid(self.pid);
    }
}
