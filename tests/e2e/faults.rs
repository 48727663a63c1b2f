//! Faults the service lives through without losing anything it
//! acknowledged, with real parts only: the registry-rubber binary this
//! package built, SQLite files, and MariaDB servers of the tests' own.
//!
//! Storms of concurrent clients add users (each name once, with a password
//! of its own) and remove some of those whose add was acknowledged, over the
//! API, and keep a ledger of what was acknowledged: a 200 OKAY received.
//! After each fault the database must pass its own integrity check and hold
//! every acknowledged add whose user has no acknowledged remove, with a hash
//! that verifies against its password, and no user whose remove was
//! acknowledged. A request the fault left without an answer, or answered
//! 503, may have gone either way; any other answer (a 500, a body that is
//! not the JSON envelope, no answer while the service runs) fails the test.
//!
//! - the service killed (SIGKILL) 20 times during a storm of 64 clients and
//!   started again on the same database, on SQLite and on MariaDB;
//! - MariaDB killed under load: the service answers 503 meanwhile and
//!   recovers by itself once the server is back on the same data;
//! - a full disk under SQLite (a 2 MiB tmpfs): adds answer 503, and succeed
//!   again once space is freed, without a restart.
//!
//! The hash format is `{SHA}`, the cheapest, so that the writes come as
//! fast as the store commits them and the checks stay quick.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use registry_rubber::store::{CONNECT_TIMEOUT, WRITE_DEADLINE};
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::mariadb::MariaDb;
use crate::support::ledger::{Audit, Ledger, Outcome};
use crate::support::process::{poll, signal, ChildGuard};
use crate::support::stack::{sqlite_database, start_lone_service, tail};
use crate::support::tmpfs::Tmpfs;

/// Concurrent clients of a storm.
const CLIENTS: usize = 64;
/// Kills of the service per backend.
const KILLS: usize = 20;
/// Acknowledged operations a storm reaches before its kill: a number drawn
/// from this range each time, so that the kills fall at other moments of
/// the writer's work.
const ACKS_BEFORE_KILL: std::ops::RangeInclusive<usize> = 100..=400;
/// Share of a client's operations that remove one of its users.
const REMOVE_SHARE: f64 = 0.3;
/// The environment of every service the tests start: the cheapest hash, and
/// no request lines (the audit lines stay, to trace a user in a failure).
const SERVICE_ENV: [(&str, &str); 2] = [
    ("RUBBER_HASH_TYPE", "sha1"),
    ("RUBBER_LOG_LEVEL", "info,registry_rubber::access=warn"),
];
/// How long a test waits for a storm to get somewhere, before it fails.
const PROGRESS_DEADLINE: Duration = Duration::from_secs(90);
/// Longest a request may go unanswered while the service runs: the README's
/// bound for a write during an outage (WRITE_DEADLINE and CONNECT_TIMEOUT,
/// 7 s), with the room tests/mysql/outage.rs gives a busy two-core machine.
/// A request that outlives it hangs, and fails the test.
const REQUEST_TIMEOUT: Duration = {
    let bound = WRITE_DEADLINE.as_secs() + CONNECT_TIMEOUT.as_secs();
    Duration::from_secs(bound * 2 + 5)
};
/// A client's pause after a 503, as a client retrying would make.
const BACKOFF: Duration = Duration::from_millis(50);
/// The database the MariaDB tests keep their users in.
const MARIADB_DATABASE: &str = "registry_rubber";

/// How one request ended.
enum Answer {
    /// 200 and the OKAY envelope.
    Okay(Value),
    /// 503 and the JSON envelope.
    Unavailable,
    /// Anything else the service answered: a broken promise.
    Broken(String),
    /// No answer before REQUEST_TIMEOUT: a hang.
    Hung(String),
    /// No answer: the connection was refused or lost.
    Lost(String),
}

/// Sends `request` and reads its answer.
async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) if e.is_timeout() => return Answer::Hung(e.to_string()),
        Err(e) => return Answer::Lost(e.to_string()),
    };
    let status = response.status().as_u16();
    let what = format!("{} {status}", response.url().path());
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(e) if e.is_timeout() => return Answer::Hung(format!("{what}: {e}")),
        Err(e) => return Answer::Lost(format!("{what}: {e}")),
    };
    let Ok(json) = serde_json::from_slice::<Value>(&body) else {
        return Answer::Broken(format!(
            "{what}, with a body that is not JSON: {}",
            String::from_utf8_lossy(&body)
        ));
    };
    match (
        status,
        json["status_code"].as_u64(),
        json["response"].as_str(),
    ) {
        (200, Some(200), Some("OKAY")) => Answer::Okay(json),
        (503, Some(503), Some("ERROR")) => Answer::Unavailable,
        _ => Answer::Broken(format!("{what}: {json}")),
    }
}

/// A kill a storm's clients make: SIGKILL to the service the moment its
/// `after`th acknowledgement is received, when a writer that answered
/// before its commit would lose the most.
#[derive(Debug, Clone, Copy)]
struct Kill {
    pid: i32,
    after: usize,
}

/// What the clients of a storm share with the test.
#[derive(Default)]
struct Shared {
    /// Set to end the storm.
    stop: AtomicBool,
    kill: Option<Kill>,
    /// Set just before the service is killed: from then on a request
    /// without an answer ends its client instead of failing the test.
    dying: AtomicBool,
    acknowledged: AtomicUsize,
    /// Adds answered 503.
    refused_adds: AtomicUsize,
}

/// What one client, or a whole storm, saw.
#[derive(Default)]
struct Report {
    /// What was sent, and how each request ended.
    ledger: Ledger,
    /// Answers that break the service's promises.
    failures: Vec<String>,
    acknowledged: usize,
    /// 503 answers.
    unavailable: usize,
    /// Adds answered 503.
    refused_adds: usize,
    /// Requests left without an answer by the service's death.
    unanswered: usize,
    /// Acknowledged operations read back at once through /list.
    read_back: usize,
}

impl Report {
    fn merge(&mut self, other: Report) {
        self.ledger.extend(other.ledger);
        self.failures.extend(other.failures);
        self.acknowledged += other.acknowledged;
        self.unavailable += other.unavailable;
        self.refused_adds += other.refused_adds;
        self.unanswered += other.unanswered;
        self.read_back += other.read_back;
    }

    fn acknowledged_adds(&self) -> usize {
        self.ledger.acknowledged_adds()
    }

    /// Panics, with `context`, if any answer broke a promise.
    fn assert_no_failures(&self, context: &str) {
        assert!(
            self.failures.is_empty(),
            "{} of {} requests broke the service's promises; the first:\n{}\n{context}",
            self.failures.len(),
            self.acknowledged + self.unavailable + self.unanswered + self.failures.len(),
            self.failures[..self.failures.len().min(20)].join("\n")
        );
    }
}

/// Concurrent clients adding and removing users until told to stop.
struct Storm {
    shared: Arc<Shared>,
    clients: Vec<JoinHandle<Report>>,
}

impl Storm {
    /// `clients` clients on the API at `api`, their user names starting
    /// with `prefix` (unique to the storm within its test), killing the
    /// service as `kill` says.
    fn start(api: SocketAddr, clients: usize, prefix: &str, kill: Option<Kill>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(clients)
            .build()
            .expect("build an HTTP client");
        let shared = Arc::new(Shared {
            kill,
            ..Shared::default()
        });
        let clients = (0..clients)
            .map(|n| {
                let client = Client {
                    http: http.clone(),
                    base: format!("http://{api}"),
                    prefix: format!("{prefix}-c{n}"),
                    shared: Arc::clone(&shared),
                    report: Report::default(),
                };
                tokio::spawn(client.run())
            })
            .collect();
        Self { shared, clients }
    }

    fn acknowledged(&self) -> usize {
        self.shared.acknowledged.load(Ordering::SeqCst)
    }

    fn refused_adds(&self) -> usize {
        self.shared.refused_adds.load(Ordering::SeqCst)
    }

    /// Stops the clients and gathers what they saw.
    async fn finish(self) -> Report {
        self.shared.stop.store(true, Ordering::SeqCst);
        let mut report = Report::default();
        for client in self.clients {
            report.merge(client.await.expect("a storm client panicked"));
        }
        report
    }
}

/// One client of a storm: adds a new user, or (three times in ten, when it
/// has one) removes one of its users whose add was acknowledged, one
/// request at a time. After each acknowledgement it reads the user back
/// through /list: an acknowledged change is committed, so a read of the
/// database sees it at once.
struct Client {
    http: reqwest::Client,
    /// `http://` and the API's address.
    base: String,
    /// What the client's user names start with.
    prefix: String,
    shared: Arc<Shared>,
    report: Report,
}

/// What a client makes of an answer.
enum Heard {
    Okay(Value),
    /// A 503: in doubt.
    Unavailable,
    /// An answer that broke a promise (recorded): in doubt.
    Broken,
    /// No answer: the service is gone, and the client ends.
    Gone,
}

impl Client {
    /// Sends `request`, counts its answer and records a broken promise.
    async fn ask(&mut self, request: reqwest::RequestBuilder) -> Heard {
        match send(request).await {
            Answer::Okay(json) => Heard::Okay(json),
            Answer::Unavailable => {
                self.report.unavailable += 1;
                tokio::time::sleep(BACKOFF).await;
                Heard::Unavailable
            }
            Answer::Broken(why) | Answer::Hung(why) => {
                self.report.failures.push(why);
                Heard::Broken
            }
            Answer::Lost(why) => {
                if self.shared.dying.load(Ordering::SeqCst) {
                    self.report.unanswered += 1;
                } else {
                    self.report
                        .failures
                        .push(format!("no answer while the service was up: {why}"));
                }
                Heard::Gone
            }
        }
    }

    /// Counts an acknowledgement, and kills the service if it is the one
    /// the storm's kill waits for.
    fn acknowledged(&mut self) {
        self.report.acknowledged += 1;
        let count = self.shared.acknowledged.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(kill) = self.shared.kill.filter(|k| k.after == count) {
            self.shared.dying.store(true, Ordering::SeqCst);
            assert!(
                signal(kill.pid, libc::SIGKILL),
                "SIGKILL to the service (PID {})",
                kill.pid
            );
        }
    }

    /// Adds or removes until the storm stops or the service is gone.
    async fn run(mut self) -> Report {
        let mut rng = StdRng::from_entropy();
        // Users whose add was acknowledged and that were not removed.
        let mut removable: Vec<String> = Vec::new();
        let mut sequence = 0;
        while !self.shared.stop.load(Ordering::SeqCst) {
            let removing = !removable.is_empty() && rng.gen_bool(REMOVE_SHARE);
            let (user, password, request) = if removing {
                let user = removable.swap_remove(rng.gen_range(0..removable.len()));
                let request = self.http.post(format!("{}/remove", self.base));
                let request = request.form(&[("user", &user)]);
                (user, None, request)
            } else {
                sequence += 1;
                let user = format!("{}-{sequence}", self.prefix);
                let password = format!("pw-{:016x}", rng.gen::<u64>());
                let request = self.http.post(format!("{}/add", self.base));
                let request = request.form(&[("user", &user), ("passwd", &password)]);
                (user, Some(password), request)
            };
            let heard = self.ask(request).await;
            let outcome = match &heard {
                Heard::Okay(json) => {
                    if json["user"] != user.as_str() {
                        (self.report.failures)
                            .push(format!("{user}: answered for another: {json}"));
                    } else if removing && json["found"] != true {
                        self.report.failures.push(format!(
                            "{user}: its remove found no user: the acknowledged add is lost: {json}"
                        ));
                    }
                    self.acknowledged();
                    Outcome::Acknowledged
                }
                Heard::Unavailable if !removing => {
                    self.report.refused_adds += 1;
                    self.shared.refused_adds.fetch_add(1, Ordering::SeqCst);
                    Outcome::InDoubt
                }
                Heard::Unavailable | Heard::Broken | Heard::Gone => Outcome::InDoubt,
            };
            match &password {
                None => self.report.ledger.remove(&user, outcome),
                Some(password) => {
                    self.report.ledger.add(&user, password, outcome);
                    if outcome == Outcome::Acknowledged {
                        removable.push(user.clone());
                    }
                }
            }
            let gone = match heard {
                Heard::Okay(_) => self.read_back(&user, !removing).await,
                Heard::Unavailable | Heard::Broken => false,
                Heard::Gone => true,
            };
            if gone {
                break;
            }
        }
        self.report
    }

    /// Reads `user` back through /list right after an acknowledgement:
    /// listed if `added`, not listed if removed. Returns whether the
    /// service is gone.
    async fn read_back(&mut self, user: &str, added: bool) -> bool {
        let request = self.http.get(format!("{}/list", self.base));
        let request = request.query(&[("prefix", user), ("limit", "1")]);
        match self.ask(request).await {
            Heard::Okay(json) => {
                self.report.read_back += 1;
                if (json["users"][0]["user"] == user) != added {
                    self.report.failures.push(format!(
                        "{user}: acknowledged as {}, yet a read right after says otherwise (the answer came before the commit): {json}",
                        if added { "added" } else { "removed" }
                    ));
                }
                false
            }
            Heard::Unavailable | Heard::Broken => false,
            Heard::Gone => true,
        }
    }
}

/// Where the users live.
enum Database {
    Sqlite(PathBuf),
    MariaDb(MariaDb),
}

impl Database {
    /// A MariaDB server of the test's own with an empty database, whose
    /// tables the service creates at its first start.
    fn mariadb() -> Self {
        let server = MariaDb::start();
        server.sql(&format!("CREATE DATABASE {MARIADB_DATABASE}"));
        Self::MariaDb(server)
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "SQLite",
            Self::MariaDb(_) => "MariaDB",
        }
    }

    fn url(&self) -> String {
        match self {
            Self::Sqlite(db) => format!("sqlite://{}", db.display()),
            Self::MariaDb(server) => format!("{}/{MARIADB_DATABASE}", server.url()),
        }
    }

    /// Every user with its stored hash.
    fn users(&self) -> BTreeMap<String, String> {
        match self {
            Self::Sqlite(db) => sqlite_query(db, "SELECT username, password FROM users", |row| {
                Ok((row.get(0)?, row.get(1)?))
            }),
            Self::MariaDb(server) => server
                .query(&format!(
                    "SELECT CONVERT(username USING utf8mb4), password FROM {MARIADB_DATABASE}.users"
                ))
                .lines()
                .map(|line| {
                    let (user, hash) = line
                        .split_once('\t')
                        .unwrap_or_else(|| panic!("a row of users: {line:?}"));
                    (user.to_owned(), hash.to_owned())
                })
                .collect(),
        }
    }

    /// Panics unless the database passes its own integrity check:
    /// `PRAGMA integrity_check` on SQLite, `CHECK TABLE` on MariaDB.
    fn assert_intact(&self, context: &str) {
        match self {
            Self::Sqlite(db) => {
                let found: Vec<String> =
                    sqlite_query(db, "PRAGMA integrity_check", |row| row.get(0));
                assert_eq!(found, ["ok"], "PRAGMA integrity_check\n{context}");
            }
            Self::MariaDb(server) => {
                let found = server.query(&format!(
                    "CHECK TABLE {MARIADB_DATABASE}.users, {MARIADB_DATABASE}.users_refresh EXTENDED"
                ));
                let statuses: Vec<&str> = found.lines().collect();
                assert_eq!(
                    statuses,
                    [
                        format!("{MARIADB_DATABASE}.users\tcheck\tstatus\tOK"),
                        format!("{MARIADB_DATABASE}.users_refresh\tcheck\tstatus\tOK"),
                    ],
                    "CHECK TABLE\n{context}"
                );
            }
        }
    }

    /// Audits `ledger` against what the database holds, after its integrity
    /// check; panics on anything lost.
    fn assert_holds(&self, ledger: &Ledger, context: &str) -> Audit {
        self.assert_intact(context);
        let audit = ledger.audit(&self.users());
        audit.assert_nothing_lost(context);
        audit
    }
}

/// The rows `sql` reads from the SQLite file `db`, each made by `row`, on a
/// read-only connection of the test's own.
fn sqlite_query<T, C: FromIterator<T>>(
    db: &Path,
    sql: &str,
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> C {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("open {} read-only: {e}", db.display()));
    let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let rows = stmt
        .query_map([], row)
        .and_then(|rows| rows.collect())
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows
}

/// Starts the service on `db`, its log `dir/NAME.log`.
fn serve(dir: &Path, name: &str, db: &Database) -> (ChildGuard, SocketAddr) {
    start_lone_service(dir, name, &db.url(), SERVICE_ENV.to_vec())
}

/// Polls `reached` until it holds, within PROGRESS_DEADLINE; panics with
/// `what` and the service's log if it does not, or if the service exits.
fn wait_until(what: &str, service: &mut ChildGuard, mut reached: impl FnMut() -> bool) {
    let outcome = poll(PROGRESS_DEADLINE, || {
        if service.exited().is_some() {
            return Some(false);
        }
        reached().then_some(true)
    });
    assert!(
        outcome == Some(true),
        "{what}: not within {PROGRESS_DEADLINE:?}{}\n{}",
        match service.exited() {
            Some(status) => format!(" (the service exited: {status})"),
            None => String::new(),
        },
        log_tail(service)
    );
}

/// The end of the service's log, for failure messages.
fn log_tail(service: &ChildGuard) -> String {
    let log = service.log_path().display();
    format!("--- {log}, last lines ---\n{}", tail(&service.log(), 40))
}

/// GET /healthz: its status and answer.
async fn health(api: SocketAddr) -> (u16, Value) {
    let answer = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("build an HTTP client")
        .get(format!("http://{api}/healthz"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /healthz: {e}"));
    let status = answer.status().as_u16();
    let body = answer.json().await.expect("/healthz answers JSON");
    (status, body)
}

/// Kills the service KILLS times, each time during a storm of CLIENTS
/// clients the moment a drawn number of their operations were
/// acknowledged, starts it again on the same database, and audits the
/// whole ledger.
async fn kills_lose_nothing(db: Database) {
    let dir = tempfile::Builder::new()
        .prefix("registry-rubber-faults-")
        .tempdir()
        .expect("create a temporary directory");
    let mut rng = StdRng::from_entropy();
    // Every storm's report, with its ledger.
    let mut total = Report::default();
    let mut checks = 0;
    let mut last = Audit::default();
    let (mut service, mut api) = serve(dir.path(), "service-0", &db);
    for kill in 1..=KILLS {
        let target = rng.gen_range(ACKS_BEFORE_KILL);
        let storm = Storm::start(
            api,
            CLIENTS,
            &format!("k{kill}"),
            Some(Kill {
                pid: service.pid(),
                after: target,
            }),
        );
        let died = poll(PROGRESS_DEADLINE, || service.exited());
        assert!(
            died.is_some_and(|status| status.signal() == Some(libc::SIGKILL)),
            "kill {kill} after {target} acknowledged operations: {} acknowledged, the \
             service {}\n{}",
            storm.acknowledged(),
            died.map_or("still runs".to_owned(), |s| format!("ended: {s}")),
            log_tail(&service)
        );
        let report = storm.finish().await;
        let context = format!("{} kill {kill}\n{}", db.name(), log_tail(&service));
        report.assert_no_failures(&context);
        total.merge(report);

        (service, api) = serve(dir.path(), &format!("service-{kill}"), &db);
        let context = format!("after restart {kill} of {}", db.name());
        last = db.assert_holds(&total.ledger, &context);
        checks += last.checked();
    }
    eprintln!(
        "{}: {KILLS} kills (SIGKILL) and restarts during storms of {CLIENTS} clients; \
         {} operations acknowledged ({} read back at once), {} left without an answer by \
         the kills, {} answered 503; after the last restart {} acknowledged adds present \
         and verified, {} acknowledged removes absent, {} users in doubt; \
         {checks} acknowledged operations checked over the {KILLS} restarts; 0 lost; \
         integrity check ok after every restart",
        db.name(),
        total.acknowledged,
        total.read_back,
        total.unanswered,
        total.unavailable,
        last.present,
        last.absent,
        last.in_doubt,
    );
    assert!(
        last.present > 0 && last.absent > 0,
        "the storms must add and remove"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_loses_nothing_acknowledged_when_the_service_is_killed() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    kills_lose_nothing(Database::Sqlite(sqlite_database(dir.path()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_loses_nothing_acknowledged_when_the_service_is_killed() {
    kills_lose_nothing(Database::mariadb()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_mariadb_costs_503s_and_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let mut db = Database::mariadb();
    let (mut service, api) = serve(dir.path(), "service", &db);
    let storm = Storm::start(api, CLIENTS, "m", None);
    wait_until("300 acknowledged operations", &mut service, || {
        storm.acknowledged() >= 300
    });

    let Database::MariaDb(server) = &mut db else {
        unreachable!("a MariaDB database")
    };
    server.kill();
    let before = (storm.acknowledged(), storm.refused_adds());
    // The clients meet the outage: their adds answer 503.
    wait_until("503 answers while MariaDB is down", &mut service, || {
        storm.refused_adds() >= before.1 + 2 * CLIENTS
    });
    let (status, answer) = health(api).await;
    assert_eq!(status, 503, "/healthz while MariaDB is down: {answer}");
    assert_eq!(answer["msg"], "unhealthy: database does not answer");
    let during = storm.acknowledged() - before.0;

    server.restart();
    let back = storm.acknowledged();
    wait_until(
        "300 acknowledged operations once MariaDB is back",
        &mut service,
        || storm.acknowledged() >= back + 300,
    );
    assert!(
        service.exited().is_none(),
        "the service recovered by itself, without a restart"
    );
    let report = storm.finish().await;
    let context = log_tail(&service);
    report.assert_no_failures(&context);
    // A write that failed while the storm ended may still be the latest
    // the health check knows of: the next that commits clears it.
    let mut healthy = health(api).await;
    for _ in 0..50 {
        if healthy.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        healthy = health(api).await;
    }
    let (status, answer) = healthy;
    assert_eq!(status, 200, "healthy again: {answer}\n{context}");
    let audit = db.assert_holds(&report.ledger, &context);
    eprintln!(
        "MariaDB killed (SIGKILL) under {CLIENTS} clients and started again on its data: \
         {} operations acknowledged ({} before the kill, {during} answered after it, \
         {} after; {} read back at once), {} answers 503 ({} of them adds; none 500, none \
         unanswered, none beyond {REQUEST_TIMEOUT:?}); \
         {} acknowledged adds present and verified, {} acknowledged removes absent, \
         {} users in doubt; 0 lost; CHECK TABLE ok; the service never restarted",
        report.acknowledged,
        before.0,
        report.acknowledged - back,
        report.read_back,
        report.unavailable,
        report.refused_adds,
        audit.present,
        audit.absent,
        audit.in_doubt,
    );
}

/// Size of the file system the full-disk test fills.
const SMALL_DISK: &str = "2m";
/// Space the filler leaves for the adds to fill.
const HEADROOM: u64 = 256 * 1024;
/// Clients adding while the disk fills.
const DISK_CLIENTS: usize = 8;
/// Adds answered 503 that show the disk is full.
const FULL_DISK_503S: usize = 100;
/// Acknowledged operations far beyond what HEADROOM holds (about 200 adds
/// fill it).
const MORE_THAN_FITS: usize = 5000;

/// Fills the file system of `path` with a file there, then gives back
/// `headroom` bytes of it. Returns the file's size.
fn fill(path: &Path, headroom: u64) -> u64 {
    let mut file =
        std::fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let chunk = vec![0x5a_u8; 64 * 1024];
    let mut written = 0_u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("write {}: {e}", path.display()),
        }
    }
    let size = written.saturating_sub(headroom);
    file.set_len(size)
        .unwrap_or_else(|e| panic!("truncate {}: {e}", path.display()));
    size
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_costs_503s_and_nothing_acknowledged() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the full-disk test must run as root: it mounts a tmpfs of {SMALL_DISK} to fill"
    );
    let dir = tempfile::Builder::new()
        .prefix("registry-rubber-faults-")
        .tempdir()
        .expect("create a temporary directory");
    let disk = Tmpfs::mount(dir.path().join("small-disk"), SMALL_DISK);
    let db = Database::Sqlite(sqlite_database(disk.path()));
    let Database::Sqlite(file) = &db else {
        unreachable!("an SQLite database")
    };
    let wal = PathBuf::from(format!("{}-wal", file.display()));
    // The service's log stays off the small disk.
    let (mut service, api) = serve(dir.path(), "service", &db);

    let filler = disk.path().join("filler");
    let filled = fill(&filler, HEADROOM);
    let storm = Storm::start(api, DISK_CLIENTS, "d", None);
    // Far more acknowledgements than the headroom holds end the storm too,
    // so that a service acknowledging what it could not write is caught by
    // the audit.
    wait_until("adds answering 503 on the full disk", &mut service, || {
        storm.refused_adds() >= FULL_DISK_503S || storm.acknowledged() >= MORE_THAN_FITS
    });
    let full = storm.finish().await;
    let context = log_tail(&service);
    full.assert_no_failures(&context);
    assert!(
        service.exited().is_none(),
        "the service lives on a full disk"
    );
    let (db_size, wal_size) = (file_size(file), file_size(&wal));
    let mut ledger = full.ledger;
    let on_full = db.assert_holds(&ledger, &format!("on the full disk\n{context}"));
    assert!(
        full.acknowledged > 0 && full.refused_adds >= FULL_DISK_503S,
        "adds fill the headroom, then answer 503: {} acknowledged, {} adds answered 503\n{context}",
        full.acknowledged,
        full.refused_adds
    );

    // While adds fail for want of space, the health check says so: an add
    // answered 503 (adds alternate with 200s while checkpoints free a little
    // space) is followed by an unhealthy /healthz.
    let client = reqwest::Client::new();
    let mut unhealthy = None;
    for i in 0..200 {
        let (user, password) = (format!("probe-{i}"), format!("Probe-Pass-{i}"));
        let add = client
            .post(format!("http://{api}/add"))
            .form(&[("user", &user), ("passwd", &password)])
            .send()
            .await
            .expect("POST /add");
        let status = add.status().as_u16();
        // Into the ledger, as any add: acknowledged, or in doubt.
        ledger.add(&user, &password, Outcome::of(status == 200));
        if status == 503 {
            unhealthy = Some(health(api).await);
            break;
        }
    }
    let (status, answer) = unhealthy.expect("an add answers 503 on the full disk");
    assert_eq!(status, 503, "/healthz after a failed add: {answer}");
    assert_eq!(answer["msg"], "unhealthy: writes are failing", "{answer}");

    // Space comes back: adds succeed again, the service never restarted.
    std::fs::remove_file(&filler).expect("remove the filler");
    let storm = Storm::start(api, DISK_CLIENTS, "r", None);
    wait_until(
        "200 adds acknowledged once space is back",
        &mut service,
        || storm.acknowledged() >= 200,
    );
    let freed = storm.finish().await;
    let context = log_tail(&service);
    freed.assert_no_failures(&context);
    let added = freed.acknowledged_adds();
    assert!(
        added > 0,
        "adds succeed again once space is back\n{context}"
    );
    assert!(service.exited().is_none(), "the service never restarted");
    // A write that failed while the storm ended may still be the latest
    // the health check knows of: the next that commits clears it.
    let mut healthy = health(api).await;
    for _ in 0..50 {
        if healthy.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        healthy = health(api).await;
    }
    let (status, answer) = healthy;
    assert_eq!(status, 200, "healthy again: {answer}\n{context}");
    ledger.extend(freed.ledger);
    let after = db.assert_holds(&ledger, &format!("once space is back\n{context}"));
    eprintln!(
        "full disk ({SMALL_DISK} tmpfs, a filler of {filled} bytes, the database {db_size} bytes \
         and its WAL {wal_size}): {} operations acknowledged, then {} answers 503 ({} of them \
         adds; none 500); integrity check ok, {} acknowledged adds present and verified, {} \
         removes absent, 0 lost; filler removed: {} more acknowledged ({added} adds) without a \
         restart ({} answers 503); {} acknowledged operations checked in the end, 0 lost",
        full.acknowledged,
        full.unavailable,
        full.refused_adds,
        on_full.present,
        on_full.absent,
        freed.acknowledged,
        freed.unavailable,
        after.checked(),
    );
    drop(service);
}
