//! deploy/nginx.conf.sample as the tests use it: read at run time, its
//! `${RR_*}` placeholders (and nothing else) given values, as the envsubst
//! command in its header does, and a private nginx started from the result
//! and stopped by its PID. The placeholder functions serve every sample
//! written that way (deploy/registry-htpasswd.yml.sample too).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::apache::StartError;
use super::process::{accepts, alive, poll, stop_pid};
use super::tools::tools;

/// How long nginx gets to write its PID file and open its ports.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// What every placeholder starts with: `${RR_NAME}`.
const OPEN: &str = "${RR_";

pub fn sample_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx.conf.sample")
}

pub fn read_sample() -> String {
    let path = sample_path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// One piece of a line: literal text, or a placeholder's name (`RR_...`).
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

/// `text` cut into literal text and `${RR_NAME}` placeholders. Panics on a
/// `${RR_` that is not closed by `}` around a name of capitals, digits and
/// `_`: envsubst would leave it alone, and nginx would choke on it.
fn pieces(text: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        if start > 0 {
            out.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .unwrap_or_else(|| panic!("an unclosed placeholder in {text:?}"));
        let name = &after[..end];
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
            "a malformed placeholder ${{{name}}} in {text:?}"
        );
        out.push(Piece::Placeholder(name));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    out
}

/// The names of every `${RR_*}` placeholder in `text`.
pub fn placeholders(text: &str) -> BTreeSet<&str> {
    pieces(text)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Placeholder(name) => Some(name),
            Piece::Text(_) => None,
        })
        .collect()
}

/// The sample with every `${RR_NAME}` replaced by `values[NAME]`; every
/// other byte, nginx's own `$variables` included, is kept. Panics if the
/// sample holds a placeholder `values` does not give, or `values` gives a
/// name the sample does not hold, or a value that is empty or spans lines.
pub fn render(sample: &str, values: &BTreeMap<&str, String>) -> String {
    let used = placeholders(sample);
    let missing: Vec<&&str> = used.iter().filter(|n| !values.contains_key(*n)).collect();
    assert!(
        missing.is_empty(),
        "the sample holds placeholders the tests give no value: {missing:?}"
    );
    let unused: Vec<&&str> = values.keys().filter(|n| !used.contains(*n)).collect();
    assert!(
        unused.is_empty(),
        "the sample has no placeholder for {unused:?}; the tests substitute these values"
    );
    for (name, value) in values {
        assert!(
            !value.is_empty() && !value.contains('\n') && !value.contains(OPEN),
            "{name}: a value must be one non-empty line without a placeholder: {value:?}"
        );
    }
    pieces(sample)
        .into_iter()
        .map(|p| match p {
            Piece::Text(text) => text,
            Piece::Placeholder(name) => values[name].as_str(),
        })
        .collect()
}

/// Asserts that `written` is `sample` with each placeholder replaced by some
/// non-empty text on the same line, and nothing else changed: the same lines,
/// every line without a placeholder identical, and in a line with
/// placeholders the literal text around them kept in order.
pub fn assert_only_placeholders_differ(sample: &str, written: &str) {
    assert!(
        !written.contains(OPEN),
        "the written configuration still holds a placeholder"
    );
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
        assert!(
            line_matches(a, b),
            "line {} differs from the sample beyond its placeholders:\n  sample:  {a:?}\n  written: {b:?}",
            number + 1
        );
    }
}

/// Whether `written` is `sample` with its placeholders replaced by non-empty
/// text: each literal piece found in order, each placeholder standing for at
/// least one byte.
fn line_matches(sample: &str, written: &str) -> bool {
    let mut rest = written;
    // Whether the last piece consumed was a placeholder, which must cover at
    // least one byte before the next literal.
    let mut pending = false;
    let parts = pieces(sample);
    for (index, piece) in parts.iter().enumerate() {
        match piece {
            Piece::Placeholder(_) => pending = true,
            Piece::Text(text) => {
                let last = index + 1 == parts.len();
                let found = if !pending {
                    rest.starts_with(text).then_some(0)
                } else if last {
                    rest.ends_with(text)
                        .then(|| rest.len() - text.len())
                        .filter(|at| *at > 0)
                } else {
                    rest.get(1..)
                        .and_then(|tail| tail.find(text))
                        .map(|at| at + 1)
                };
                let Some(at) = found else {
                    return false;
                };
                rest = &rest[at + text.len()..];
                pending = false;
            }
        }
    }
    if pending {
        !rest.is_empty()
    } else {
        rest.is_empty()
    }
}

/// The names in the header's `vars='...'` list, which the documented
/// envsubst command substitutes.
pub fn documented_envsubst_names(sample: &str) -> BTreeSet<&str> {
    let start = sample
        .find("#     vars='")
        .expect("the sample's header sets vars='...' for envsubst");
    let list = &sample[start + "#     vars='".len()..];
    let end = list.find('\'').expect("the vars list is closed");
    list[..end]
        .split_whitespace()
        .filter(|word| *word != "#")
        .collect()
}

/// The shell commands of the sample's header that render it, from `vars=`
/// to the envsubst line that writes `output`, with the comment marks
/// removed.
pub fn documented_render_commands(sample: &str, output: &str) -> String {
    let lines: Vec<&str> = sample.lines().collect();
    let first = lines
        .iter()
        .position(|l| l.starts_with("#     vars='"))
        .expect("the sample's header sets vars='...'");
    let last = first
        + lines[first..]
            .iter()
            .position(|l| l.contains(&format!("> {output}")))
            .unwrap_or_else(|| panic!("the sample's header writes {output}"));
    lines[first..=last]
        .iter()
        .map(|l| {
            l.strip_prefix("#     ")
                .unwrap_or_else(|| panic!("not a command line of the header: {l:?}"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs a sample's documented render `commands` with bash in the project's
/// directory, with exactly `values` as the `RR_*` environment and envsubst
/// on the PATH.
pub fn run_render_commands(
    commands: &str,
    values: &BTreeMap<&str, String>,
) -> std::process::Output {
    let mut command = Command::new("bash");
    command
        .args(["-euc", commands])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env(
            "PATH",
            tools()
                .envsubst
                .parent()
                .map_or_else(Default::default, |p| {
                    format!("{}:/usr/bin:/bin", p.display())
                }),
        );
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("RR_") {
            command.env_remove(name);
        }
    }
    command.envs(values.iter().map(|(k, v)| (*k, v.as_str())));
    command.output().expect("run bash")
}

/// A running nginx, stopped by the PID in its PID file when dropped.
pub struct Nginx {
    pid: i32,
    error_log: PathBuf,
}

impl Nginx {
    /// Runs `nginx -p prefix -c conf -e error_log` (nginx puts its master in
    /// the background and returns) and waits until every port accepts
    /// connections. `pid_file` is the configuration's `pid`.
    pub fn start(
        prefix: &Path,
        conf: &Path,
        pid_file: &Path,
        error_log: &Path,
        ports: &[u16],
    ) -> Result<Self, StartError> {
        let output = Command::new(&tools().nginx)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(conf)
            .arg("-e")
            .arg(error_log)
            .output()
            .map_err(|e| StartError::Failed(format!("cannot run nginx: {e}")))?;
        let read_log = || std::fs::read_to_string(error_log).unwrap_or_default();
        if !output.status.success() {
            let message = format!(
                "nginx -p {} -c {} exited with {}:\n{}{}\nerror log:\n{}",
                prefix.display(),
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
                "nginx wrote no PID file {} within {START_TIMEOUT:?}; error log:\n{}",
                pid_file.display(),
                read_log()
            ))
        })?;
        let nginx = Self {
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
            Some(true) => Ok(nginx),
            Some(false) => Err(StartError::Failed(format!(
                "nginx (PID {pid}) exited after start; error log:\n{}",
                nginx.error_log()
            ))),
            None => Err(StartError::Failed(format!(
                "nginx (PID {pid}) did not open ports {ports:?} within {START_TIMEOUT:?}; error log:\n{}",
                nginx.error_log()
            ))),
        }
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(&self.error_log)
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.error_log.display()))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop_pid(self.pid);
    }
}

#[test]
fn placeholders_are_cut_out_and_everything_else_is_kept() {
    let line = "listen ${RR_A}:${RR_B} ssl; return 301 ${RR_C}$request_uri;\n";
    assert_eq!(placeholders(line), BTreeSet::from(["RR_A", "RR_B", "RR_C"]));
    let values = BTreeMap::from([
        ("RR_A", "127.0.0.1".to_owned()),
        ("RR_B", "8443".to_owned()),
        ("RR_C", "https://h".to_owned()),
    ]);
    let written = render(line, &values);
    assert_eq!(
        written,
        "listen 127.0.0.1:8443 ssl; return 301 https://h$request_uri;\n"
    );
    assert!(line_matches(line, &written));
    assert!(!line_matches(
        line,
        "listen 127.0.0.1:8443 ssl; return 302 https://h$request_uri;\n"
    ));
    assert!(
        !line_matches(
            line,
            "listen :8443 ssl; return 301 https://h$request_uri;\n"
        ),
        "a placeholder stands for at least one byte"
    );
    assert!(line_matches("$host\n", "$host\n"));
    assert!(!line_matches("$host\n", "$hostx\n"));
    assert!(line_matches("a ${RR_X}", "a b"));
    assert!(!line_matches("a ${RR_X}", "a "));
}
