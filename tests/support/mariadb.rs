//! Real MariaDB for tests: a throwaway server of a test's own (started from a
//! data directory made once with mariadb-install-db, stopped by its PID when
//! the guard drops), and a database of a test's own on any server (created
//! with a unique name, dropped when the guard drops).

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::mysql::{MySqlConnection, MySqlPool, MySqlPoolOptions};
use sqlx::{Connection, Executor};

/// How long a server may take to start or stop.
const SERVER_DEADLINE: Duration = Duration::from_secs(60);

/// Finds a MariaDB program, or fails saying which package to install.
fn program(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found: install the Debian package mariadb-server (apt-get install mariadb-server)")
        })
}

/// A data directory with the system tables, made once and copied for each
/// server: mariadb-install-db takes seconds, a copy milliseconds.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let version = Command::new(program("mariadbd"))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let tag: String = version
            .split_whitespace()
            .nth(2)
            .unwrap_or("unknown")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
            .collect();
        let dir = root.join(format!("mariadb-template-{tag}"));
        if dir.join("mysql").is_dir() {
            return dir;
        }
        let building = root.join(format!("mariadb-template.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&building);
        let out = Command::new(program("mariadb-install-db"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", building.display()))
            .args([
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--innodb-log-file-size=8M",
            ])
            .output()
            .expect("mariadb-install-db runs");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Another test process may have finished first; either copy is good.
        if std::fs::rename(&building, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&building);
        }
        assert!(dir.join("mysql").is_dir(), "template at {}", dir.display());
        dir
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A MariaDB server of the test's own on 127.0.0.1, root without a
/// password. Stopped (by its PID) when dropped.
pub struct MariaDb {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// Options the server starts with besides the tests' usual ones.
    extra: Vec<String>,
}

impl MariaDb {
    pub fn start() -> MariaDb {
        Self::start_with(Vec::new())
    }

    /// A server started with these options too (TLS, say).
    pub fn start_with(extra: Vec<String>) -> MariaDb {
        let dir = tempfile::tempdir().expect("temporary directory");
        let status = Command::new("cp")
            .arg("-a")
            .arg(template())
            .arg(dir.path().join("data"))
            .status()
            .expect("cp runs");
        assert!(status.success(), "copying the MariaDB template failed");
        let mut server = MariaDb {
            dir,
            port: free_port(),
            child: None,
            extra,
        };
        server.launch();
        server
    }

    /// Starts the server again after [`MariaDb::stop`], on the same port and
    /// data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        self.launch();
    }

    fn launch(&mut self) {
        let d = self.dir.path();
        let child = Command::new(program("mariadbd"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", d.join("sock").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--pid-file={}", d.join("pid").display()))
            .arg(format!("--log-error={}", d.join("err.log").display()))
            .args([
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=8M",
            ])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd starts");
        self.child = Some(child);
        let deadline = Instant::now() + SERVER_DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!("mariadbd exited with {status}: {}", self.error_log());
                }
            }
            let ping = Command::new(program("mariadb-admin"))
                .arg("--no-defaults")
                .arg(format!("--socket={}", d.join("sock").display()))
                .args(["-uroot", "ping"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if ping.is_ok_and(|s| s.success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd not ready after {SERVER_DEADLINE:?}: {}",
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server: SIGTERM to its PID (after SIGCONT, should it be
    /// frozen), then waits for it to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on the PID of a child not yet waited for.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGCONT);
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + SERVER_DEADLINE;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }

    /// Kills the server at once (SIGKILL, as a crash or the OOM killer
    /// would): no shutdown, so InnoDB recovers from its redo log when
    /// [`MariaDb::restart`] starts it again on the same data.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open and the kernel
    /// still accepts new ones, but nothing answers: the worst kind of outage.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("the server is running");
        // SAFETY: kill(2) on the PID of a child not yet waited for.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", child.id());
    }

    /// Runs SQL as root through the mariadb client on the server's socket
    /// (the SQL goes in on standard input, never on a command line).
    pub fn sql(&self, sql: &str) {
        self.query(sql);
    }

    /// Runs SQL as [`MariaDb::sql`] does and returns what the client
    /// printed: a line per row, its columns separated by tabs, without the
    /// columns' names.
    pub fn query(&self, sql: &str) -> String {
        use std::io::Write;
        let mut child = Command::new(program("mariadb"))
            .arg("--no-defaults")
            .arg(format!(
                "--socket={}",
                self.dir.path().join("sock").display()
            ))
            .args(["-uroot", "--batch", "--skip-column-names"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the mariadb client starts");
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(sql.as_bytes())
            .expect("write SQL to the mariadb client");
        let out = child.wait_with_output().expect("the mariadb client runs");
        assert!(
            out.status.success(),
            "SQL failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The server's own directory, for files it needs (certificates).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's URL, without a database: `mysql://root@127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("err.log")).unwrap_or_default()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A database of the test's own on a server, dropped with the guard.
pub struct TestDatabase {
    server: String,
    pub name: String,
    /// A pool on the database for the test's own checks.
    pub pool: MySqlPool,
}

impl TestDatabase {
    /// Creates a database with a fresh name on the server at `server_url`
    /// (`mysql://user[:password]@host:port`). Fails loudly when the server
    /// cannot be reached.
    pub async fn create(server_url: &str) -> TestDatabase {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "rr_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = MySqlConnection::connect(server_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach the MySQL/MariaDB test server: {e}"));
        admin
            .execute(&*format!("CREATE DATABASE `{name}`"))
            .await
            .expect("CREATE DATABASE");
        let _ = admin.close().await;
        let pool = MySqlPoolOptions::new()
            .max_connections(4)
            .connect(&format!("{server_url}/{name}"))
            .await
            .expect("connect to the test database");
        TestDatabase {
            server: server_url.to_owned(),
            name,
            pool,
        }
    }

    /// The URL of this database, as `database_url` takes it.
    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let server = self.server.clone();
        let name = self.name.clone();
        // Drop may run inside a runtime: do the async work on a thread of its
        // own with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            // Bounded: the server may be frozen (a test that failed while
            // it was), and a drop must never hang the test binary.
            let dropping = async {
                let mut admin = MySqlConnection::connect(&server)
                    .await
                    .map_err(|e| e.to_string())?;
                admin
                    .execute("SET SESSION lock_wait_timeout = 10")
                    .await
                    .map_err(|e| e.to_string())?;
                admin
                    .execute(&*format!("DROP DATABASE IF EXISTS `{name}`"))
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = admin.close().await;
                Ok::<_, String>(())
            };
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(15), dropping)
                    .await
                    .unwrap_or_else(|_| Err("no answer within 15 s".into()))
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("could not drop test database {}", self.name),
        }
    }
}
