//! Runs the registry-rubber binary the tests built, as a user would from a
//! shell: with only the RUBBER_* variables a test gives, in a directory of
//! the test's own, with text on its standard input when a test gives some.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_registry-rubber");

/// Runs the binary with `args`, only the given RUBBER_* variables set, in
/// `cwd`, with `stdin` as its input (none: an empty one).
pub fn run(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>, cwd: &Path) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("RUBBER_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().expect("the binary starts");
    let mut input = child.stdin.take().expect("a pipe to its input");
    if let Some(text) = stdin {
        // The binary may refuse its arguments and exit before it reads.
        match input.write_all(text.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.expect("write to its input"),
        }
    }
    drop(input);
    child.wait_with_output().expect("the binary runs")
}

/// Output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
