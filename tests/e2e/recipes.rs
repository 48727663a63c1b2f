//! The README's procedures as they are written: every file under
//! docs/recipes/ is a block of README.md, byte for byte, and the tests below
//! run the files themselves, in order, as a root shell on a fresh host
//! would, then use what they built as its users would.
//!
//! Each run gets a throwaway root (tests/e2e/recipes/root.sh): a mount, PID
//! and network namespace of its own where /etc, /var, /run, /usr/local and
//! /root are overlays on a temporary directory, so that the recipes' users,
//! hosts entries, configuration and default ports (80, 443, 8443, 5000,
//! 5080, 3306) never touch the host's, and every process they start dies
//! with the namespace. Steps that need the network or systemd (installing
//! packages, building with rustup, `systemctl`) are not run: the packages
//! are checked installed, and the binary under test is installed in their
//! place. A host without docker pushes through skopeo
//! (tests/e2e/recipes/docker).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::mariadb::MariaDb;
use crate::oci;
use crate::support::clients::{try_curl, HttpAnswer};
use crate::support::host_lock::{self, HostLock};
use crate::support::process::{poll, ChildGuard};
use crate::support::tools::{find_in_path, tools};

/// How long one recipe step may take (key generation and start-ups
/// included, on a loaded machine).
const STEP_TIMEOUT: Duration = Duration::from_secs(180);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn recipe(name: &str) -> PathBuf {
    let path = repo().join("docs/recipes").join(name);
    assert!(path.is_file(), "no recipe {}", path.display());
    path
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// --- The README shows the files ----------------------------------------------

/// Marks the README block that shows a recipe file: the next fenced block is
/// the file's text.
const MARKER: &str = "<!-- recipe: ";

/// Every `(file, block)` pair the README marks, in order.
fn readme_recipe_blocks(readme: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix(MARKER) else {
            continue;
        };
        let file = rest
            .strip_suffix(" -->")
            .unwrap_or_else(|| panic!("malformed recipe marker {line:?}"))
            .to_owned();
        let fence = lines
            .next()
            .unwrap_or_else(|| panic!("the README ends after the marker of {file}"));
        assert!(
            fence.starts_with("```"),
            "the marker of {file} must be followed by a fenced block, not {fence:?}"
        );
        let mut block = String::new();
        for line in lines.by_ref() {
            if line == "```" {
                break;
            }
            block.push_str(line);
            block.push('\n');
        }
        blocks.push((file, block));
    }
    blocks
}

/// Every file under docs/recipes/, relative to it.
fn recipe_files() -> Vec<String> {
    let root = repo().join("docs/recipes");
    let mut files = Vec::new();
    for dir in std::fs::read_dir(&root).expect("read docs/recipes") {
        let dir = dir.expect("a directory entry").path();
        for file in std::fs::read_dir(&dir).expect("read a recipe directory") {
            let file = file.expect("a directory entry").path();
            let relative = file.strip_prefix(&root).expect("below docs/recipes");
            files.push(relative.display().to_string());
        }
    }
    files.sort();
    files
}

#[test]
fn the_readme_shows_every_recipe_file_as_it_is() {
    let readme = read(&repo().join("README.md"));
    let blocks = readme_recipe_blocks(&readme);
    let mut shown: Vec<String> = blocks.iter().map(|(file, _)| file.clone()).collect();
    for (file, block) in &blocks {
        let text = read(&repo().join("docs/recipes").join(file));
        assert_eq!(
            block, &text,
            "README.md's block for docs/recipes/{file} differs from the file"
        );
    }
    shown.sort();
    let before = shown.len();
    shown.dedup();
    assert_eq!(before, shown.len(), "a recipe file is shown twice");
    assert_eq!(
        shown,
        recipe_files(),
        "every file under docs/recipes/ is shown in README.md once, and nothing else is marked"
    );
}

#[test]
fn the_packages_recipe_names_what_the_tests_install() {
    let packages = read(&recipe("apache/packages.sh"));
    let install = packages
        .lines()
        .find_map(|l| l.strip_prefix("apt-get install -y "))
        .expect("an apt-get install line");
    let test_script = read(&repo().join("scripts/test.sh"));
    for package in install.split_whitespace() {
        assert!(
            test_script.contains(&format!(" {package} "))
                || test_script.contains(&format!("({package} ")),
            "scripts/test.sh installs {package}, which the recipe installs"
        );
        let status = Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", package])
            .output()
            .expect("run dpkg-query");
        assert!(
            String::from_utf8_lossy(&status.stdout).contains("install ok installed"),
            "the recipe's package {package} is not installed here"
        );
    }
}

#[test]
fn the_build_recipe_asks_for_the_rust_the_crate_needs() {
    let manifest = read(&repo().join("Cargo.toml"));
    let version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("Cargo.toml names its rust-version");
    let build = read(&recipe("apache/build.sh"));
    assert!(
        build.contains(&format!("older than the {version} registry-rubber needs")),
        "docs/recipes/apache/build.sh names the rust-version {version}:\n{build}"
    );
}

// --- A throwaway root --------------------------------------------------------

/// The namespace the recipes run in, and the shell that runs them.
struct Root {
    /// `unshare`; its child is the shell, PID 1 of the namespace.
    shell: ChildGuard,
    /// The shell's PID as the host sees it, for `nsenter`.
    init: i32,
    /// Commands sent so far.
    sent: usize,
    scratch: tempfile::TempDir,
    /// Keeps the host's packages as they are while the overlays are laid
    /// on its directories.
    _host: HostLock,
}

impl Root {
    /// A root whose recipes run in `cwd` (the checkout, for the files under
    /// deploy/; a directory of their own for recipes that write files where
    /// they run).
    fn start(cwd: &Path) -> Self {
        tools();
        let host = host_lock::shared();
        let unshare = find_in_path("unshare").expect("unshare (Debian package util-linux)");
        for (program, package) in [
            ("nsenter", "util-linux"),
            ("ip", "iproute2"),
            ("adduser", "adduser"),
            ("start-stop-daemon", "dpkg"),
            ("envsubst", "gettext-base"),
        ] {
            assert!(
                find_in_path(program).is_some(),
                "the recipe tests need {program}: apt-get install -y {package}"
            );
        }
        let scratch = tempfile::Builder::new()
            .prefix("registry-rubber-recipe-")
            .tempdir()
            .expect("create a temporary directory");
        let fifo = scratch.path().join("commands");
        let made = Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(made.success(), "mkfifo {}", fifo.display());
        let image = scratch.path().join("image");
        oci::write_image(&image, "latest", "pushed by the README's recipe\n");
        let shim = repo().join("tests/e2e/recipes");
        let path = format!(
            "{}:{}",
            shim.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = Command::new(unshare);
        // The recipes configure the service by its files; the caller's
        // RUBBER_* variables would override them.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("RUBBER_") {
                command.env_remove(name);
            }
        }
        let mut shell = ChildGuard::spawn(
            "recipe root",
            command
                .args([
                    "--mount",
                    "--net",
                    "--pid",
                    "--fork",
                    "--kill-child",
                    "--mount-proc",
                    "bash",
                ])
                .arg(shim.join("root.sh"))
                .arg(scratch.path())
                .current_dir(cwd)
                .env("PATH", path)
                .env("HOME", "/root")
                .env("RECIPE_AUTHFILE", scratch.path().join("auth.json"))
                .env("RECIPE_IMAGE_LAYOUT", &image),
            &scratch.path().join("log"),
        );
        let unshare_pid = shell.pid();
        let init = poll(Duration::from_secs(20), || {
            if shell.exited().is_some() {
                return Some(None);
            }
            if !shell.log().contains("root ready") {
                return None;
            }
            let children =
                std::fs::read_to_string(format!("/proc/{unshare_pid}/task/{unshare_pid}/children"))
                    .ok()?;
            children
                .split_whitespace()
                .next()
                .and_then(|pid| pid.parse().ok())
                .map(Some)
        })
        .flatten()
        .unwrap_or_else(|| panic!("the recipe root did not start:\n{}", shell.log()));
        Self {
            shell,
            init,
            sent: 0,
            scratch,
            _host: host,
        }
    }

    /// Sends one command to the shell and waits for it to finish; panics
    /// with the shell's output if it fails.
    fn send(&mut self, command: &str) {
        let fifo = self.scratch.path().join("commands");
        let mut writer = poll(STEP_TIMEOUT, || {
            if self.shell.exited().is_some() {
                return Some(None);
            }
            // Without a reader yet, a non-blocking open fails (ENXIO).
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
                .ok()
                .map(Some)
        })
        .flatten()
        .unwrap_or_else(|| {
            panic!(
                "the recipe shell is gone ({:?}) before `{command}`:\n{}",
                self.shell.exited(),
                self.log()
            )
        });
        writeln!(writer, "{command}").expect("write to the recipe shell");
        drop(writer);
        self.sent += 1;
        let done = format!("{} ok", self.sent);
        let results = self.scratch.path().join("results");
        let finished = poll(STEP_TIMEOUT, || {
            if std::fs::read_to_string(&results).is_ok_and(|r| r.lines().any(|l| l == done)) {
                return Some(true);
            }
            self.shell.exited().map(|_| false)
        });
        assert_eq!(
            finished,
            Some(true),
            "`{command}` failed or did not finish within {STEP_TIMEOUT:?}:\n{}",
            self.log()
        );
    }

    /// Runs a recipe file in the shell, as pasted into it.
    fn run(&mut self, name: &str) {
        let path = recipe(name);
        self.send(&format!("run {}", path.display()));
    }

    /// Runs a file of the test's own (what a recipe leaves to the reader).
    fn run_own(&mut self, name: &str, text: &str) {
        let path = self.scratch.path().join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        self.send(&format!("run {}", path.display()));
    }

    /// Runs a recipe that serves in the foreground, in the background, and
    /// waits for its port.
    fn serve(&mut self, name: &str, port: u16) {
        let path = recipe(name);
        self.send(&format!("bg {}", path.display()));
        self.send(&format!("wait {port}"));
    }

    /// Installs the binary under test where the build recipe installs its own.
    fn install_binary(&mut self) {
        let binary = env!("CARGO_BIN_EXE_registry-rubber");
        self.run_own(
            "install-binary.sh",
            &format!("install -m 0755 {binary} /usr/local/bin/registry-rubber\n"),
        );
    }

    /// `program` run inside the namespace: its files, hosts and loopback.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new("nsenter");
        command
            .args(["--target", &self.init.to_string(), "--mount", "--net", "--"])
            .arg(program);
        command
    }

    /// curl inside the namespace, bounded in time.
    fn curl(&self) -> Command {
        let mut command = self.command(&tools().curl);
        command.args(["--silent", "--show-error", "--max-time", "30"]);
        command
    }

    /// A file inside the namespace, read through its overlay.
    fn read(&self, path: &str) -> String {
        let output = self
            .command(Path::new("/bin/cat"))
            .arg(path)
            .output()
            .expect("run cat in the recipe root");
        assert!(
            output.status.success(),
            "cat {path}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// What the shell wrote, and the logs of the processes the recipes
    /// started, for failure messages.
    fn log(&self) -> String {
        let mut text = self.shell.log();
        // The overlay of /var keeps what the recipes wrote there.
        let var = self.scratch.path().join("upper/_var");
        for log in [
            "log/registry-rubber.log",
            "log/docker-registry.log",
            "log/registry-rubber-httpd/error.log",
            "log/registry-rubber-nginx/error.log",
        ] {
            if let Ok(content) = std::fs::read_to_string(var.join(log)) {
                text.push_str(&format!("\n--- /var/{log}:\n{content}"));
            }
        }
        text
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        // unshare ignores SIGTERM while it waits for its child; SIGKILL to
        // the namespace's first process ends every process in it, then
        // unshare exits.
        crate::support::process::signal(self.init, libc::SIGKILL);
        self.shell.stop();
    }
}

/// The JSON body of an answer.
fn json(answer: &HttpAnswer) -> Value {
    serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", answer.body))
}

fn output_text(output: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

// --- Deploy behind Apache ----------------------------------------------------

/// The steps of "Deploy behind Apache" a trial on one host runs, without
/// systemd, up to Apache's configuration.
fn deploy_behind_apache_until_apache(root: &mut Root) {
    root.run("apache/settings.sh");
    root.install_binary();
    root.run("apache/accounts.sh");
    root.run("apache/config.sh");
    root.run("apache/registry.sh");
    root.run("apache/certificates-trial.sh");
    root.run("apache/apache.sh");
}

/// The last steps: start everything without systemd, check it, mint, log
/// in and push.
fn start_and_use(root: &mut Root) {
    root.run("apache/start-service.sh");
    root.run("apache/start-registry.sh");
    root.run("apache/start-apache.sh");
    root.run("apache/check.sh");
    root.run("apache/use.sh");
}

/// What a pipeline and a docker client see of a deployment the recipes
/// built: run inside the root, with the name the trial's hosts entry gives
/// and the trial's certificate; the API at `api` (through Apache, or the
/// service's own loopback address).
fn assert_deployment_works(root: &Root, api: &str) {
    const CA: &str = "/etc/registry-rubber/tls/server.crt";
    const REGISTRY: &str = "https://registry.example.com";
    let log = root.log();

    // The registry needs a user.
    let anonymous = try_curl(
        root.curl()
            .args(["--cacert", CA])
            .arg(format!("{REGISTRY}/v2/")),
    )
    .unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    assert!(
        anonymous
            .header("WWW-Authenticate")
            .iter()
            .any(|h| h.starts_with("Basic ")),
        "{anonymous:?}"
    );

    // The sample takes changes over POST only.
    let get = try_curl(
        root.curl()
            .args(["--cacert", CA])
            .arg(format!("{api}/add?user=by-get&passwd=by-get-secret")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(get.status, 405, "{get:?}");

    // The service believes Apache's X-Forwarded-For: a pipeline's address
    // in `pipelines` may mint, another is refused by the service itself.
    let user = crate::support::unique("recipe");
    let password = "recipe-password-8c1f";
    let add = |forwarded: &str| {
        try_curl(
            root.curl()
                .args(["--cacert", CA, "-H"])
                .arg(format!("X-Forwarded-For: {forwarded}"))
                .args(["--data-urlencode", &format!("user={user}")])
                .args(["--data-urlencode", &format!("passwd={password}")])
                .arg(format!("{api}/add")),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let outsider = add("192.0.2.7");
    assert_eq!(outsider.status, 403, "{outsider:?}");
    let pipeline = add("10.1.2.3");
    assert_eq!(pipeline.status, 200, "{pipeline:?}");
    assert_eq!(json(&pipeline)["response"], "OKAY", "{pipeline:?}");

    // The image the recipe pushed is there, for this credential too.
    let creds = format!("{user}:{password}");
    let tags = try_curl(
        root.curl()
            .args(["--cacert", CA, "--user", &creds])
            .arg(format!("{REGISTRY}/v2/team/alpine/tags/list")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tags.status, 200, "{tags:?}");
    assert_eq!(json(&tags)["tags"], serde_json::json!(["3"]), "{tags:?}");

    // skopeo finds the registry's CA where the recipe put it for Docker.
    let inspected = inspect(root, &creds, "team/alpine:3");
    assert!(inspected.status.success(), "{}", output_text(&inspected));

    // Removed, it is refused on the next request.
    let removed = try_curl(
        root.curl()
            .args(["--cacert", CA])
            .args(["--data-urlencode", &format!("user={user}")])
            .arg(format!("{api}/remove")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(removed.status, 200, "{removed:?}");
    let refused = try_curl(
        root.curl()
            .args(["--cacert", CA, "--user", &creds])
            .arg(format!("{REGISTRY}/v2/")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(refused.status, 401, "{refused:?}");
}

/// After the stop recipes (the web server's, then the others'), nothing
/// answers on the service's, the registry's or the web server's ports.
fn assert_stopped(root: &mut Root, front_stop: &str) {
    root.run(front_stop);
    root.run("apache/stop.sh");
    for url in [
        "http://127.0.0.1:5080/healthz",
        "http://127.0.0.1:5000/v2/",
        "http://127.0.0.1:80/",
    ] {
        let answer = try_curl(root.curl().arg(url));
        assert!(answer.is_err(), "{url} still answers: {answer:?}");
    }
}

/// The API as pipelines reach it through Apache.
const APACHE_API: &str = "https://registry.example.com:8443";

#[test]
fn deploy_behind_apache_as_a_trial_on_one_host() {
    let mut root = Root::start(repo());
    deploy_behind_apache_until_apache(&mut root);
    start_and_use(&mut root);
    assert_deployment_works(&root, APACHE_API);
    // The configuration the recipe wrote is the sample with its two changes.
    let config = root.read("/etc/registry-rubber/registry-rubber.toml");
    assert!(
        config.contains("\nallow_from = [\"127.0.0.0/8\", \"::1/128\", \"10.0.0.0/8\"]\n"),
        "{config}"
    );
    assert!(
        config.contains("\ntrusted_proxies = [\"127.0.0.1/32\"]\n"),
        "{config}"
    );
    assert_stopped(&mut root, "apache/stop-apache.sh");
}

// --- Deploy behind nginx ------------------------------------------------------

#[test]
fn deploy_behind_nginx_as_a_trial_on_one_host() {
    let mut root = Root::start(repo());
    root.run("apache/settings.sh");
    root.install_binary();
    root.run("apache/accounts.sh");
    root.run("apache/config.sh");
    root.run("nginx/door.sh");
    root.run("apache/registry.sh");
    root.run("apache/certificates-trial.sh");
    root.run("nginx/render.sh");
    root.run("apache/start-service.sh");
    root.run("apache/start-registry.sh");
    root.run("nginx/start-nginx.sh");
    root.run("apache/check.sh");
    root.run("nginx/use.sh");
    // The sample has no API host: pipelines on this host call the service.
    assert_deployment_works(&root, "http://127.0.0.1:5080");
    let config = root.read("/etc/registry-rubber/nginx.conf");
    assert!(
        !config.contains("${RR_"),
        "a placeholder is left:\n{config}"
    );
    assert!(
        config.contains("$request_uri"),
        "nginx's own variables stay"
    );
    assert_stopped(&mut root, "nginx/stop-nginx.sh");
}

// --- The registry's own htpasswd file ---------------------------------------

#[test]
fn the_registrys_own_htpasswd_file_as_a_trial_on_one_host() {
    let mut root = Root::start(repo());
    root.run("apache/settings.sh");
    root.install_binary();
    root.run("apache/accounts.sh");
    root.run("apache/config.sh");
    root.run("htpasswd/service.sh");
    root.run("apache/certificates-trial.sh");
    root.run("htpasswd/certificates-trial.sh");
    root.run("htpasswd/render.sh");
    root.run("apache/start-service.sh");
    root.run("htpasswd/start-registry.sh");
    root.run("htpasswd/check.sh");
    root.run("nginx/use.sh");
    assert_deployment_works(&root, "http://127.0.0.1:5080");
    // The registry runs as its user, reading the file through its group.
    assert_eq!(
        root.read_mode("/var/lib/registry-rubber-htpasswd/htpasswd"),
        "640 registry-rubber"
    );
    let registry = root.read("/run/docker-registry.pid");
    let status = root.read(&format!("/proc/{}/status", registry.trim()));
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .expect("a Uid line");
    assert_ne!(uid, "0", "the registry runs as docker-registry, not root");
    root.run("apache/stop.sh");
    let answer = try_curl(root.curl().arg("http://127.0.0.1:5080/healthz"));
    assert!(answer.is_err(), "the service still answers: {answer:?}");
}

// --- Token authentication ---------------------------------------------------

/// `skopeo inspect` of `repo` inside the root with `creds`.
fn inspect(root: &Root, creds: &str, repo: &str) -> Output {
    root.command(&tools().skopeo)
        .args(["--insecure-policy", "--command-timeout", "60s", "inspect"])
        .args(["--creds", creds])
        .arg(format!("docker://registry.example.com/{repo}"))
        .output()
        .expect("run skopeo")
}

/// Adds `user` with `scope` on the service's loopback address.
fn add_scoped(root: &Root, user: &str, password: &str, scope: &str) {
    let added = try_curl(
        root.curl()
            .args(["--data-urlencode", &format!("user={user}")])
            .args(["--data-urlencode", &format!("passwd={password}")])
            .args(["--data-urlencode", &format!("scope={scope}")])
            .arg("http://127.0.0.1:5080/add"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(added.status, 200, "{added:?}");
}

#[test]
fn token_authentication_as_a_trial_on_one_host() {
    let mut root = Root::start(repo());
    root.run("apache/settings.sh");
    root.install_binary();
    root.run("apache/accounts.sh");
    root.run("apache/config.sh");
    root.run("apache/certificates-trial.sh");
    root.run("token/signing-key.sh");
    root.run("token/door.sh");
    root.run("htpasswd/certificates-trial.sh");
    root.run("token/render.sh");
    root.run("apache/start-service.sh");
    root.run("htpasswd/start-registry.sh");
    root.run("token/check.sh");
    root.run("token/use.sh");
    let log = root.log();
    assert!(
        log.contains("refused: no grant on other/app"),
        "the push outside the credential's scope was refused:\n{log}"
    );

    // What the recipe pushed is there, for a credential that may pull it;
    // one scoped to another repository gets nothing of it.
    let password = "recipe-token-password-51ae";
    let reader = crate::support::unique("reader");
    add_scoped(&root, &reader, password, "repository:team/app:pull");
    let creds = format!("{reader}:{password}");
    let pulled = inspect(&root, &creds, "team/app:1.0");
    assert!(pulled.status.success(), "{}", output_text(&pulled));
    let other = inspect(&root, &creds, "other/app:1.0");
    assert!(!other.status.success(), "{}", output_text(&other));
    let elsewhere = crate::support::unique("elsewhere");
    add_scoped(&root, &elsewhere, password, "repository:other/app:pull");
    let refused = inspect(&root, &format!("{elsewhere}:{password}"), "team/app:1.0");
    assert!(!refused.status.success(), "{}", output_text(&refused));
    // Removed, the credential gets no more tokens.
    let removed = try_curl(
        root.curl()
            .args(["--data-urlencode", &format!("user={reader}")])
            .arg("http://127.0.0.1:5080/remove"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(removed.status, 200, "{removed:?}");
    let gone = inspect(&root, &creds, "team/app:1.0");
    assert!(!gone.status.success(), "{}", output_text(&gone));
    root.run("apache/stop.sh");
}

// --- MySQL and MariaDB: grants on one host ----------------------------------

/// Enters the network namespace of `pid` on this thread until dropped, so
/// that the processes this thread starts (a MariaDB server) listen there.
struct InNetns {
    own: std::fs::File,
}

impl InNetns {
    fn enter(pid: i32) -> Self {
        let own =
            std::fs::File::open("/proc/thread-self/ns/net").expect("open this thread's netns");
        let theirs =
            std::fs::File::open(format!("/proc/{pid}/ns/net")).expect("open the root's netns");
        // SAFETY: setns on a valid namespace descriptor affects only this thread.
        let entered = unsafe { libc::setns(theirs.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
        Self { own }
    }
}

impl Drop for InNetns {
    fn drop(&mut self) {
        // SAFETY: as above, back to the thread's own namespace.
        let back = unsafe { libc::setns(self.own.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(back, 0, "setns back: {}", std::io::Error::last_os_error());
    }
}

/// Runs `sql` in the root as a MariaDB account, by TCP to 127.0.0.1 or by
/// the socket (host `localhost`).
fn mariadb_as(root: &Root, account: &str, password: &str, tcp: bool, sql: &str) -> Output {
    let client = find_in_path("mariadb").expect("mariadb (Debian package mariadb-client)");
    let mut command = root.command(&client);
    command.args(["--batch", "--skip-column-names", "-u", account]);
    command.arg(format!("-p{password}"));
    if tcp {
        command.args(["-h", "127.0.0.1", "-P", "3306"]);
    }
    command
        .args(["-e", sql])
        .stdin(Stdio::null())
        .output()
        .expect("run mariadb")
}

#[test]
fn deploy_behind_apache_on_mariadb_with_the_one_host_grants() {
    let mut root = Root::start(repo());
    // A server as Debian's package runs it: on 127.0.0.1:3306 and the
    // socket /run/mysqld/mysqld.sock, root by the socket without a password.
    let server = {
        let _inside = InNetns::enter(root.init);
        MariaDb::start_with(vec!["--port=3306".to_owned()])
    };
    let socket = server.dir().join("sock");
    root.run_own(
        "mariadb-socket.sh",
        &format!(
            "install -d /run/mysqld\nln -s {} /run/mysqld/mysqld.sock\n",
            socket.display()
        ),
    );
    deploy_behind_apache_until_apache(&mut root);
    root.run("mariadb/accounts.sh");
    root.run("mariadb/service.sh");
    root.run("mariadb/apache.sh");
    start_and_use(&mut root);
    assert_deployment_works(&root, APACHE_API);

    // Both accounts work by TCP and by the socket; Apache's only reads.
    let service_password = root.read("/etc/registry-rubber/database-password");
    let service_password = service_password.trim_end();
    let httpd = root.read("/etc/registry-rubber/httpd.conf");
    let apache_password = httpd
        .lines()
        .find(|l| l.starts_with("Define RR_DBD_PARAMS "))
        .and_then(|l| l.split("pass=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the Apache Define holds its password");
    for tcp in [true, false] {
        let read = mariadb_as(
            &root,
            "registry_apache",
            apache_password,
            tcp,
            "SELECT COUNT(*) FROM registry_rubber.users",
        );
        assert!(read.status.success(), "{}", output_text(&read));
        let write = mariadb_as(
            &root,
            "registry_apache",
            apache_password,
            tcp,
            "INSERT INTO registry_rubber.users (username, password, created_at) VALUES ('x', 'y', 0)",
        );
        assert!(!write.status.success(), "Apache's account wrote a row");
        assert!(
            String::from_utf8_lossy(&write.stderr).contains("command denied"),
            "{}",
            output_text(&write)
        );
        let service = mariadb_as(
            &root,
            "registry_rubber",
            service_password,
            tcp,
            "SELECT COUNT(*) FROM registry_rubber.rubber_migrations",
        );
        assert!(service.status.success(), "{}", output_text(&service));
    }
    let mode = root.read_mode("/etc/registry-rubber/database-password");
    assert_eq!(
        mode, "400 registry-rubber",
        "the password file's mode and owner"
    );
    assert_stopped(&mut root, "apache/stop-apache.sh");
    drop(root);
    drop(server);
}

impl Root {
    /// `stat -c '%a %U'` of a file inside the namespace.
    fn read_mode(&self, path: &str) -> String {
        let output = self
            .command(Path::new("/usr/bin/stat"))
            .args(["-c", "%a %U", path])
            .output()
            .expect("run stat");
        assert!(output.status.success(), "{}", output_text(&output));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

// --- Mutual TLS --------------------------------------------------------------

#[test]
fn mutual_tls_step_by_step() {
    let work = tempfile::tempdir().expect("a working directory");
    let mut root = Root::start(work.path());
    root.install_binary();
    root.run("mtls/certificates.sh");
    root.serve("mtls/serve.sh", 5443);
    root.run("mtls/pipeline.sh");
    let log = root.log();
    assert!(
        log.contains("\"response\":\"OKAY\""),
        "the pipeline's add answered OKAY:\n{log}"
    );

    let dir = work.path();
    // A list through the API, with a client certificate of `dir` or none.
    fn list(root: &Root, dir: &Path, cert: Option<(&str, &str)>) -> Result<HttpAnswer, String> {
        let mut command = root.curl();
        command.arg("--cacert").arg(dir.join("api-ca.crt"));
        if let Some((cert, key)) = cert {
            command.arg("--cert").arg(dir.join(cert));
            command.arg("--key").arg(dir.join(key));
        }
        try_curl(command.arg("https://rubber.example.com:5443/list"))
    }
    let with_cert = |cert| list(&root, dir, cert);
    let listed = with_cert(Some(("ci.crt", "ci.key"))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed.status, 200, "{listed:?}");
    // No certificate: the handshake fails.
    assert!(with_cert(None).is_err(), "no client certificate was let in");
    // A certificate of the same CA with another OU: 403.
    let made = Command::new(&tools().openssl)
        .current_dir(dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/OU=others/CN=intruder",
            "-CA",
            "clients-ca.crt",
            "-CAkey",
            "clients-ca.key",
            "-addext",
            "basicConstraints=CA:FALSE",
            "-addext",
            "extendedKeyUsage=clientAuth",
            "-keyout",
            "other.key",
            "-out",
            "other.crt",
        ])
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "{}", output_text(&made));
    let refused = with_cert(Some(("other.crt", "other.key"))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(refused.status, 403, "{refused:?}");

    // Revoked and reloaded: the pipeline's certificate fails the handshake.
    root.run("mtls/revoke.sh");
    let revoked = poll(Duration::from_secs(10), || {
        list(&root, dir, Some(("ci.crt", "ci.key")))
            .is_err()
            .then_some(())
    });
    assert!(
        revoked.is_some(),
        "the revoked certificate still gets in:\n{}",
        root.log()
    );
}
