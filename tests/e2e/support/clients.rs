//! The real clients the tests go through Apache with: skopeo for registry
//! operations, curl for single HTTP requests. Both trust the test CA only.

use std::fmt;
use std::path::Path;
use std::process::{Command, ExitStatus, Output};

use super::stack::Stack;
use super::tools::tools;

/// Bounds every skopeo run, so that a hung registry fails a test instead of
/// hanging it.
const SKOPEO_TIMEOUT: &str = "90s";
/// Bounds every curl run, in seconds.
const CURL_MAX_TIME: &str = "30";

/// A user name and password.
#[derive(Debug, Clone, Copy)]
pub struct Creds<'a> {
    pub user: &'a str,
    pub password: &'a str,
}

impl<'a> Creds<'a> {
    pub fn new(user: &'a str, password: &'a str) -> Self {
        Self { user, password }
    }

    fn joined(&self) -> String {
        format!("{}:{}", self.user, self.password)
    }
}

/// The outcome of one skopeo run.
pub struct Run {
    what: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Runs `command` (a [`skopeo`] command) to its end; `what` names it in
    /// failure messages.
    pub fn of(what: String, command: &mut Command) -> Self {
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("{what}: cannot run skopeo: {e}"));
        Self::from_output(what, output)
    }

    /// The outcome of a skopeo run the caller drove itself (one fed on its
    /// standard input).
    pub fn from_output(what: String, output: Output) -> Self {
        Self {
            what,
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn succeeded(&self) -> bool {
        self.status.success()
    }

    /// What skopeo wrote on standard error (why it failed).
    pub fn stderr(&self) -> &str {
        &self.stderr
    }

    /// Whether skopeo failed because the registry (Apache) refused the
    /// credentials: skopeo reports a 401 as "unauthorized: authentication required".
    pub fn refused(&self) -> bool {
        !self.status.success()
            && self
                .stderr
                .contains("unauthorized: authentication required")
    }

    /// Panics unless the run succeeded; returns its standard output.
    pub fn expect_success(&self) -> &str {
        assert!(self.succeeded(), "{self}");
        &self.stdout
    }

    /// Panics unless the run failed with a refusal of its credentials.
    pub fn expect_refused(&self) {
        assert!(
            self.refused(),
            "expected a refusal (401 unauthorized), got: {self}"
        );
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} exited with {}\nstdout: {}\nstderr: {}",
            self.what,
            self.status,
            self.stdout.trim(),
            self.stderr.trim()
        )
    }
}

/// An HTTP answer as curl saw it.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    /// The header block as received, status line included.
    pub head: String,
    pub body: String,
}

impl HttpAnswer {
    /// The values of every header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .collect()
    }
}

/// skopeo with the options every run takes.
pub fn skopeo() -> Command {
    let mut command = Command::new(&tools().skopeo);
    // The signature policy is not under test; the host's policy.json may be
    // absent or strict.
    command.args(["--insecure-policy", "--command-timeout", SKOPEO_TIMEOUT]);
    command
}

impl Stack {
    fn image_ref(&self, repo: &str, tag: &str) -> String {
        format!("docker://{}/{repo}:{tag}", self.registry_host)
    }

    /// `skopeo copy oci:LAYOUT:TAG docker://APACHE/REPO:TAG`.
    pub fn push(&self, creds: Creds<'_>, layout: &Path, tag: &str, repo: &str) -> Run {
        let what = format!("push of {repo}:{tag} as {}", creds.user);
        Run::of(
            what,
            skopeo()
                .args(["copy", "--dest-creds", &creds.joined(), "--dest-cert-dir"])
                .arg(&self.pki.skopeo_cert_dir)
                .arg(format!("oci:{}:{tag}", layout.display()))
                .arg(self.image_ref(repo, tag)),
        )
    }

    /// `skopeo copy docker://APACHE/REPO:TAG oci:DEST:TAG`.
    pub fn pull(&self, creds: Creds<'_>, repo: &str, tag: &str, dest: &Path) -> Run {
        let what = format!("pull of {repo}:{tag} as {}", creds.user);
        Run::of(
            what,
            skopeo()
                .args(["copy", "--src-creds", &creds.joined(), "--src-cert-dir"])
                .arg(&self.pki.skopeo_cert_dir)
                .arg(self.image_ref(repo, tag))
                .arg(format!("oci:{}:{tag}", dest.display())),
        )
    }

    /// `skopeo inspect docker://APACHE/REPO:TAG`, with the credentials or
    /// anonymously.
    pub fn inspect(&self, creds: Option<Creds<'_>>, repo: &str, tag: &str) -> Run {
        let mut command = skopeo();
        command.arg("inspect");
        let what = match creds {
            Some(c) => {
                command.args(["--creds", &c.joined()]);
                format!("inspect of {repo}:{tag} as {}", c.user)
            }
            None => {
                command.arg("--no-creds");
                format!("anonymous inspect of {repo}:{tag}")
            }
        };
        Run::of(
            what,
            command
                .arg("--cert-dir")
                .arg(&self.pki.skopeo_cert_dir)
                .arg(self.image_ref(repo, tag)),
        )
    }

    /// GET `https://APACHE<path>` on the registry virtual host.
    pub fn get_registry(&self, path: &str, creds: Option<Creds<'_>>) -> HttpAnswer {
        let url = format!("https://{}{path}", self.registry_host);
        let mut command = self.curl();
        if let Some(c) = creds {
            command.args(["--user", &c.joined()]);
        }
        run_curl(command.arg(url))
    }

    /// Status codes of `count` authenticated GETs of `https://APACHE<path>`,
    /// sent by one curl process over kept-alive connections.
    pub fn get_registry_repeatedly(&self, path: &str, creds: Creds<'_>, count: usize) -> Vec<u16> {
        let url = format!("https://{}{path}", self.registry_host);
        let mut command = self.curl();
        command.args(["--user", &creds.joined(), "--write-out", "%{http_code}\\n"]);
        for _ in 0..count {
            command.args([url.as_str(), "--output", "/dev/null"]);
        }
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("cannot run curl: {e}"));
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|code| {
                code.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("curl wrote a status code {code:?}"))
            })
            .collect()
    }

    /// A curl command trusting the test CA, bounded in time.
    pub fn curl(&self) -> Command {
        let mut command = Command::new(&tools().curl);
        command
            .args([
                "--silent",
                "--show-error",
                "--max-time",
                CURL_MAX_TIME,
                "--cacert",
            ])
            .arg(&self.pki.ca_cert);
        command
    }
}

/// Runs curl with `--include`; panics if curl fails (no HTTP answer).
pub fn run_curl(command: &mut Command) -> HttpAnswer {
    try_curl(command).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs curl with `--include` and splits the answer into status, head and
/// body; `Err` if curl got no HTTP answer (connection or TLS failure).
pub fn try_curl(command: &mut Command) -> Result<HttpAnswer, String> {
    let output = command
        .arg("--include")
        .output()
        .map_err(|e| format!("cannot run curl: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{command:?}: no header block in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{command:?}: no status in {head:?}"))?;
    Ok(HttpAnswer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}
