//! The Debian package scripts/deb.sh builds (scripts/test.sh builds it before
//! the tests), installed with dpkg on this host: its files, owners and modes;
//! the service started as the installed unit starts it (its ExecStartPre and
//! ExecStart lines, as its User and Group, with its UMask and Environment:
//! there is no systemd here), with Apache from the packaged sample in front
//! of it, reading the packaged database as Apache's own user; a credential
//! minted through Apache's API host and used for a push through its registry
//! host; then `dpkg -r` keeps the data and `dpkg -P` removes the
//! configuration and the data. The package is purged when the test ends,
//! however it ends.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::oci::write_image;
use crate::support::accounts::{apache_account, group_id, user_id, DATABASE_GROUP};
use crate::support::clients::{run_curl, skopeo, Run};
use crate::support::host_lock::{self, HostLock};
use crate::support::process::{free_port, poll, spawn_listening};
use crate::support::stack::apache_in_front_of;
use crate::support::tmpfs::Tmpfs;
use crate::support::tools::tools;
use crate::support::unique;

const PACKAGE: &str = "registry-rubber";
const SERVICE_USER: &str = "registry-rubber";
const BINARY: &str = "/usr/bin/registry-rubber";
const CONFIG_DIR: &str = "/etc/registry-rubber";
const CONFIG: &str = "/etc/registry-rubber/registry-rubber.toml";
const UNIT: &str = "/usr/lib/systemd/system/registry-rubber.service";
const STATE_DIR: &str = "/var/lib/registry-rubber";
/// The database the packaged configuration names.
const DATABASE: &str = "/var/lib/registry-rubber/users.sqlite";
const DOC_DIR: &str = "/usr/share/doc/registry-rubber";
const MAN_DIR: &str = "/usr/share/man/man1";
/// Present while a run of this test has the package installed; /run is
/// emptied at boot. A package found installed without it is someone's
/// install, which the test will not purge.
const MARKER: &str = "/run/registry-rubber-package-test";
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long dpkg may wait for another process's dpkg run to end.
const DPKG_LOCK_WAIT: Duration = Duration::from_secs(300);

/// The .deb to install: $REGISTRY_RUBBER_DEB, or the one scripts/deb.sh
/// writes for this version and this host's architecture.
fn deb_path() -> PathBuf {
    if let Some(path) = std::env::var_os("REGISTRY_RUBBER_DEB") {
        return path.into();
    }
    let arch = output_of(Command::new("dpkg").arg("--print-architecture"));
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "target/debian/registry-rubber_{}-1_{}.deb",
        env!("CARGO_PKG_VERSION"),
        arch.trim()
    ))
}

fn output_of(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// dpkg with `args`, never asking anything; run again while another
/// process (apt on this shared host) holds dpkg's lock, for up to
/// [`DPKG_LOCK_WAIT`].
fn dpkg(args: &[&str]) -> Output {
    let run = || {
        Command::new("dpkg")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .unwrap_or_else(|e| panic!("cannot run dpkg {args:?}: {e}"))
    };
    let locked = |out: &Output| {
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("lock was locked")
    };
    let mut out = run();
    if locked(&out) {
        if let Some(done) = poll(DPKG_LOCK_WAIT, || {
            std::thread::sleep(Duration::from_millis(500));
            let again = run();
            (!locked(&again)).then_some(again)
        }) {
            out = done;
        }
    }
    out
}

fn expect_dpkg(args: &[&str]) -> String {
    let out = dpkg(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "dpkg {args:?} failed: {text}");
    text
}

/// The package's dpkg status ("install ok installed", "deinstall ok
/// config-files"), or None when dpkg knows nothing of it.
fn package_status() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", PACKAGE])
        .output()
        .expect("run dpkg-query");
    let status = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !status.ends_with("not-installed")).then_some(status)
}

/// The package installed for the test's length; purged when dropped.
struct Installed {
    _lock: HostLock,
}

impl Installed {
    fn install(deb: &Path) -> Self {
        // Two runs of this test take turns, and the recipe tests' roots,
        // laid over this host's /etc and /var, wait meanwhile.
        let lock = host_lock::exclusive();
        if let Some(status) = package_status() {
            assert!(
                Path::new(MARKER).exists(),
                "{PACKAGE} is installed on this host ({status}) and not by this test: the test \
                 installs and purges the package, deleting {STATE_DIR}; remove it first \
                 (dpkg -P {PACKAGE}) if it is a leftover"
            );
            // A run that was killed left it.
            expect_dpkg(&["-P", PACKAGE]);
        }
        fs::write(MARKER, "").unwrap_or_else(|e| panic!("write {MARKER}: {e}"));
        let guard = Self { _lock: lock };
        expect_dpkg(&["-i", &deb.display().to_string()]);
        guard
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let out = dpkg(&["-P", PACKAGE]);
        if !out.status.success() {
            eprintln!(
                "dpkg -P {PACKAGE} failed while cleaning up: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = fs::remove_file(MARKER);
    }
}

/// What the test takes from the installed unit's [Service] section.
#[derive(Debug, Default)]
struct Unit {
    user: String,
    group: String,
    umask: u32,
    environment: Vec<(String, String)>,
    exec_start_pre: Vec<Vec<String>>,
    exec_start: Vec<String>,
    state_directory_mode: u32,
}

/// A command line of the unit, split at spaces; the unit's lines use no
/// quoting and no prefix, which the test checks rather than half-implements.
fn command_line(value: &str) -> Vec<String> {
    assert!(
        !value.contains(['"', '\'', '\\', '$', '%']) && !value.starts_with(['-', '+', '!', '@']),
        "the test runs plain command lines only: {value}"
    );
    value.split_whitespace().map(str::to_owned).collect()
}

fn parse_unit(text: &str) -> Unit {
    let mut unit = Unit::default();
    let mut section = "";
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section != "[Service]" || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "User" => unit.user = value.to_owned(),
            "Group" => unit.group = value.to_owned(),
            "UMask" => unit.umask = u32::from_str_radix(value, 8).expect("UMask is octal"),
            "StateDirectoryMode" => {
                unit.state_directory_mode =
                    u32::from_str_radix(value, 8).expect("StateDirectoryMode is octal");
            }
            "Environment" => {
                for assignment in command_line(value) {
                    let (k, v) = assignment
                        .split_once('=')
                        .unwrap_or_else(|| panic!("Environment={value}"));
                    unit.environment.push((k.to_owned(), v.to_owned()));
                }
            }
            "ExecStartPre" => unit.exec_start_pre.push(command_line(value)),
            "ExecStart" => unit.exec_start = command_line(value),
            _ => {}
        }
    }
    assert!(
        !unit.user.is_empty() && !unit.exec_start.is_empty(),
        "User and ExecStart in {UNIT}: {unit:?}"
    );
    unit
}

impl Unit {
    /// `argv` as systemd would run it for this unit: as its user and group
    /// with no supplementary group, with its umask, its environment (and
    /// `extra`, as a drop-in's Environment= would add), from `/`.
    fn command(&self, argv: &[String], extra: &[(&str, String)]) -> Command {
        let mut command = Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin")
            .envs(self.environment.iter().map(|(k, v)| (k, v)))
            .envs(extra.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .uid(user_id(&self.user))
            .gid(group_id(&self.group));
        let umask = self.umask;
        // SAFETY: umask is async-signal-safe and touches no memory.
        unsafe {
            command.pre_exec(move || {
                libc::umask(umask);
                Ok(())
            });
        }
        command
    }
}

/// Owner name, group name and permission bits (with setgid) of `path`.
fn owner_group_mode(path: &str) -> (u32, u32, u32) {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("stat {path}: {e}"));
    (meta.uid(), meta.gid(), meta.permissions().mode() & 0o7777)
}

fn gunzip(path: &str) -> String {
    output_of(Command::new("gzip").args(["-dc", path]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_installs_serves_through_apache_and_purges() {
    tools();
    let deb = deb_path();
    assert!(
        deb.is_file(),
        "{} is missing: build it with scripts/deb.sh (scripts/test.sh does, before the tests)",
        deb.display()
    );
    // Apache's own user, in the group the package's database is in.
    let apache = apache_account();
    let installed = Installed::install(&deb);
    assert_eq!(
        package_status().as_deref(),
        Some("install ok installed"),
        "after dpkg -i"
    );

    // The system user and group, and what belongs to them.
    let uid = user_id(SERVICE_USER);
    let gid = group_id(DATABASE_GROUP);
    assert!(uid < 1000, "{SERVICE_USER} is a system user: uid {uid}");
    let passwd = fs::read_to_string("/etc/passwd").unwrap();
    let entry = passwd
        .lines()
        .find(|l| l.starts_with(&format!("{SERVICE_USER}:")))
        .unwrap();
    let fields: Vec<&str> = entry.split(':').collect();
    assert_eq!(fields[3], gid.to_string(), "primary group: {entry}");
    assert_eq!(fields[5], STATE_DIR, "home: {entry}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "no shell: {entry}");
    assert_eq!(owner_group_mode(BINARY), (0, 0, 0o755), "{BINARY}");
    assert_eq!(
        owner_group_mode(STATE_DIR),
        (uid, gid, 0o2770),
        "{STATE_DIR}: the service's, its group may write (Apache's -shm), others nothing, setgid"
    );
    assert_eq!(
        owner_group_mode(CONFIG),
        (0, gid, 0o640),
        "{CONFIG}: root's, read by the service's group only"
    );
    let sample = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/registry-rubber.toml.sample"),
    )
    .unwrap();
    assert_eq!(
        fs::read_to_string(CONFIG).unwrap(),
        sample,
        "the configuration is the sample"
    );
    let conffiles = output_of(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]));
    assert!(
        conffiles.contains(CONFIG),
        "{CONFIG} is a conffile: {conffiles}"
    );
    let version = output_of(Command::new(BINARY).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("registry-rubber {}", env!("CARGO_PKG_VERSION"))
    );

    // Man pages: registry-rubber(1) and every page it names.
    let main_page = gunzip(&format!("{MAN_DIR}/registry-rubber.1.gz"));
    assert!(main_page.contains(".SH NAME"), "{main_page:.300}");
    let named: Vec<&str> = main_page
        .lines()
        .filter_map(|l| l.strip_prefix("registry\\-rubber\\-")?.strip_suffix("(1)"))
        .collect();
    assert!(named.contains(&"add"), "{named:?}");
    for sub in named {
        let sub = sub.replace("\\-", "-");
        let page = gunzip(&format!("{MAN_DIR}/registry-rubber-{sub}.1.gz"));
        assert!(
            page.contains(&format!(".TH registry-rubber-{sub} 1")),
            "{sub}'s page"
        );
    }
    // Completions, as the installed binary prints them.
    for (shell, path) in [
        (
            "bash",
            "/usr/share/bash-completion/completions/registry-rubber",
        ),
        ("zsh", "/usr/share/zsh/vendor-completions/_registry-rubber"),
        (
            "fish",
            "/usr/share/fish/vendor_completions.d/registry-rubber.fish",
        ),
    ] {
        assert_eq!(
            fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}")),
            output_of(Command::new(BINARY).args(["completions", shell])),
            "{path}"
        );
    }
    // Documentation and samples.
    for sample in [
        "httpd.conf.sample",
        "nginx.conf.sample",
        "registry-rubber.toml.sample",
        "callers.toml.sample",
        "registry-htpasswd.yml.sample",
        "registry-token.yml.sample",
    ] {
        let packaged = format!("{DOC_DIR}/examples/{sample}");
        assert_eq!(
            fs::read(&packaged).unwrap_or_else(|e| panic!("read {packaged}: {e}")),
            fs::read(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("deploy")
                    .join(sample)
            )
            .unwrap(),
            "{packaged}"
        );
    }
    for doc in ["README.md", "openapi.json", "copyright"] {
        assert!(Path::new(DOC_DIR).join(doc).is_file(), "{DOC_DIR}/{doc}");
    }

    // The unit, run as systemd would run it.
    let unit_text = fs::read_to_string(UNIT).unwrap_or_else(|e| panic!("read {UNIT}: {e}"));
    let unit = parse_unit(&unit_text);
    assert!(
        !unit_text.contains("/usr/local"),
        "{UNIT} names the packaged binary"
    );
    assert_eq!(unit.exec_start[0], BINARY, "{unit:?}");
    assert_eq!(
        unit.state_directory_mode, 0o2770,
        "systemd makes {STATE_DIR} as the package does"
    );
    assert_eq!(
        (unit.user.as_str(), unit.group.as_str()),
        (SERVICE_USER, DATABASE_GROUP)
    );
    let dir = tempfile::Builder::new()
        .prefix("registry-rubber-package-")
        .tempdir()
        .expect("create a temporary directory");
    let port = free_port();
    // The port of this run's own, as a drop-in would set it.
    let extra = [("RUBBER_LISTEN", format!("127.0.0.1:{port}"))];
    assert!(!unit.exec_start_pre.is_empty(), "{unit:?}");
    for pre in &unit.exec_start_pre {
        let out = unit
            .command(pre, &extra)
            .output()
            .expect("run ExecStartPre");
        assert!(
            out.status.success(),
            "ExecStartPre {pre:?} as {}: {}",
            unit.user,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        owner_group_mode(DATABASE),
        (uid, gid, 0o660),
        "ExecStartPre (migrate) created {DATABASE}"
    );
    let mut service = spawn_listening(
        "registry-rubber (packaged)",
        &mut unit.command(&unit.exec_start, &extra),
        &dir.path().join("service.log"),
        port,
        START_TIMEOUT,
    );

    // Apache in front, reading the package's database as its own user.
    let front = apache_in_front_of(
        dir.path(),
        Path::new(DATABASE),
        ([127, 0, 0, 1], port).into(),
    );
    let curl = || {
        let mut command = Command::new(&tools().curl);
        command
            .args(["--silent", "--show-error", "--max-time", "30", "--cacert"])
            .arg(&front.pki.ca_cert);
        command
    };
    let user = unique("pkg");
    let password = unique("pw-secret-");
    // The packaged configuration takes changes over POST only.
    let add = run_curl(
        curl()
            .args(["--data-urlencode", &format!("user={user}")])
            .args(["--data-urlencode", &format!("passwd={password}")])
            .arg(format!("https://127.0.0.1:{}/add", front.api_port)),
    );
    assert_eq!(
        add.status,
        200,
        "add through Apache: {}\n{}\n{}",
        add.body,
        front.logs(),
        service.log()
    );
    assert!(add.body.contains("\"response\":\"OKAY\""), "{}", add.body);
    let get_add = run_curl(curl().arg(format!(
        "https://127.0.0.1:{}/add?user={user}x&passwd={password}",
        front.api_port
    )));
    assert_eq!(get_add.status, 405, "GET add is refused: {}", get_add.body);

    let v2 = |creds: &str| {
        run_curl(
            curl()
                .args(["--user", creds])
                .arg(format!("https://{}/v2/", front.registry_host)),
        )
        .status
    };
    assert_eq!(
        v2(&format!("{user}:{password}")),
        200,
        "the minted credential"
    );
    assert_eq!(
        v2(&format!("{user}:wrong-{password}")),
        401,
        "a wrong password"
    );
    let image = write_image(&dir.path().join("layout"), "v1", &unique("package proof "));
    let push = Run::of(
        format!("push as {user}"),
        skopeo()
            .args([
                "copy",
                "--dest-creds",
                &format!("{user}:{password}"),
                "--dest-cert-dir",
            ])
            .arg(&front.pki.skopeo_cert_dir)
            .arg(format!("oci:{}:v1", image.layout.display()))
            .arg(format!("docker://{}/package/proof:v1", front.registry_host)),
    );
    assert!(push.succeeded(), "{push}\n{}", front.logs());

    // What the service and Apache left beside the database: the service's
    // group, nobody else.
    for entry in fs::read_dir(STATE_DIR).unwrap().flatten() {
        let path = entry.path().display().to_string();
        let (_, file_gid, mode) = owner_group_mode(&path);
        assert_eq!(file_gid, gid, "{path} keeps the group (setgid directory)");
        assert_eq!(mode & 0o007, 0, "{path}: nothing for others ({mode:o})");
        assert_eq!(
            mode & 0o060,
            0o060,
            "{path}: the group (Apache) reads and writes ({mode:o})"
        );
    }
    assert!(
        Path::new(&format!("{DATABASE}-shm")).exists(),
        "SQLite runs in WAL mode: {DATABASE}-shm"
    );
    assert_eq!(
        apache.database_gid, gid,
        "Apache's account is in the database's group"
    );
    drop(front);
    service.stop();
    assert!(
        service.exited().is_some_and(|s| s.success()),
        "the service stops cleanly on SIGTERM:\n{}",
        service.log()
    );
    let log = service.log();
    assert!(
        !log.contains(&password),
        "the password is in the service's log"
    );

    // The data directory's mode is the administrator's once made: a
    // reinstall (as an upgrade) keeps a narrower one.
    fs::set_permissions(STATE_DIR, fs::Permissions::from_mode(0o2750)).expect("chmod");
    expect_dpkg(&["-i", &deb.to_string_lossy()]);
    assert_eq!(
        owner_group_mode(STATE_DIR).2,
        0o2750,
        "{STATE_DIR}'s mode after a reinstall"
    );
    fs::set_permissions(STATE_DIR, fs::Permissions::from_mode(0o2770)).expect("chmod");

    // Remove: the program goes, the configuration and the data stay.
    expect_dpkg(&["-r", PACKAGE]);
    assert_eq!(
        package_status().as_deref(),
        Some("deinstall ok config-files"),
        "after dpkg -r"
    );
    for gone in [BINARY, UNIT, "/usr/share/man/man1/registry-rubber.1.gz"] {
        assert!(!Path::new(gone).exists(), "{gone} after dpkg -r");
    }
    assert!(Path::new(CONFIG).is_file(), "{CONFIG} stays after dpkg -r");
    let conn =
        rusqlite::Connection::open_with_flags(DATABASE, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("{DATABASE} stays after dpkg -r: {e}"));
    let kept: i64 = conn
        .query_row(
            "SELECT count(*) FROM users WHERE username = ?1",
            [&user],
            |r| r.get(0),
        )
        .expect("read users");
    drop(conn);
    assert_eq!(
        kept, 1,
        "the user minted before dpkg -r is still in {DATABASE}"
    );

    // Purge: the configuration and the data go, never what another
    // filesystem mounted inside the data directory holds; the account stays.
    let mounted = Tmpfs::mount(Path::new(STATE_DIR).join("mounted"), "1m");
    let theirs = mounted.path().join("theirs");
    fs::write(&theirs, "kept").expect("write on the mounted filesystem");
    expect_dpkg(&["-P", PACKAGE]);
    assert_eq!(package_status(), None, "after dpkg -P");
    assert_eq!(
        fs::read_to_string(&theirs).ok().as_deref(),
        Some("kept"),
        "a file on a filesystem mounted inside {STATE_DIR} after dpkg -P"
    );
    drop(mounted);
    fs::remove_dir(Path::new(STATE_DIR).join("mounted")).expect("remove the mount point");
    fs::remove_dir(STATE_DIR)
        .unwrap_or_else(|e| panic!("{STATE_DIR} holds nothing but the mount point: {e}"));
    for gone in [STATE_DIR, CONFIG, CONFIG_DIR] {
        assert!(!Path::new(gone).exists(), "{gone} after dpkg -P");
    }
    assert_eq!(
        user_id(SERVICE_USER),
        uid,
        "the system account stays after dpkg -P"
    );
    drop(installed);
}
