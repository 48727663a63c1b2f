//! Starting the real application on port 0 with a fresh database, and
//! talking to it over HTTP.
//!
//! The backend comes from the environment: with `REGISTRY_RUBBER_TEST_MYSQL_URL` set
//! (`mysql://root@127.0.0.1:PORT`, a server, no database) each test gets a
//! database of its own on that MySQL/MariaDB server, dropped afterwards;
//! without it, an SQLite file of its own.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use registry_rubber::clock::ManualClock;
use registry_rubber::config::{DatabaseUrl, Settings};
use registry_rubber::htpasswd::HashType;
use registry_rubber::startup::Application;
use registry_rubber::store::{Create, Store};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use crate::mariadb::TestDatabase;

/// Every log line any application of this test binary wrote, as text: for
/// checks that a secret reached no line at all, whoever wrote it. To look
/// for a line one application wrote, use [`TestApp::logs`].
pub fn captured_logs() -> String {
    let buf = capture().text.lock().unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

/// One event an application logged: its level, target, message and fields,
/// each field as the text the log line shows (strings without quotes).
#[derive(Clone, Debug)]
pub struct LogEvent {
    /// The [`TestApp::log_id`] of the application that logged it; None for
    /// a line logged outside every application.
    pub app: Option<u64>,
    pub target: String,
    pub message: String,
    pub fields: BTreeMap<String, String>,
}

impl LogEvent {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// Every (name, value) is a field of the event with exactly that value.
    pub fn has(&self, fields: &[(&str, &str)]) -> bool {
        fields.iter().all(|(k, v)| self.field(k) == Some(*v))
    }

    /// The message or a field's value holds `text` (a message from the
    /// database, say, whose wording the service does not choose).
    pub fn mentions(&self, text: &str) -> bool {
        self.message.contains(text) || self.fields.values().any(|v| v.contains(text))
    }

    /// An audit event with exactly these fields.
    pub fn is_audit(&self, fields: &[(&str, &str)]) -> bool {
        self.target == "registry_rubber::audit" && self.has(fields)
    }

    /// A request line with exactly these fields.
    pub fn is_request(&self, fields: &[(&str, &str)]) -> bool {
        self.target == "registry_rubber::access" && self.has(fields)
    }
}

/// The name of the span each test application runs in; its `app_id` field
/// says which application logged an event.
const APP_SPAN: &str = "test_app";

struct Capture {
    text: Mutex<Vec<u8>>,
    events: Mutex<Vec<LogEvent>>,
}

fn capture() -> &'static Arc<Capture> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    static CAPTURE: OnceLock<Arc<Capture>> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Arc::new(Capture {
            text: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
        });
        let writer = CaptureWriter(Arc::clone(&capture));
        tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("trace"))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || writer.clone()),
            )
            .with(EventLayer(Arc::clone(&capture)))
            .init();
        capture
    })
}

#[derive(Clone)]
struct CaptureWriter(Arc<Capture>);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.text.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Keeps each event with its fields and the application it belongs to:
/// the `app_id` of the outermost [`APP_SPAN`] around it.
struct EventLayer(Arc<Capture>);

/// The `app_id` of an [`APP_SPAN`], kept in the span's extensions.
struct AppId(u64);

#[derive(Default)]
struct FieldText(BTreeMap<String, String>);

impl tracing::field::Visit for FieldText {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S> tracing_subscriber::Layer<S> for EventLayer
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() != APP_SPAN {
            return;
        }
        let mut fields = FieldText::default();
        attrs.record(&mut fields);
        let app_id = fields.0.get("app_id").and_then(|v| v.parse().ok());
        if let (Some(app_id), Some(span)) = (app_id, ctx.span(id)) {
            span.extensions_mut().insert(AppId(app_id));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let app = ctx.event_scope(event).and_then(|scope| {
            scope
                .from_root()
                .find_map(|span| span.extensions().get::<AppId>().map(|a| a.0))
        });
        let mut fields = FieldText::default();
        event.record(&mut fields);
        let message = fields.0.remove("message").unwrap_or_default();
        let metadata = event.metadata();
        self.0.events.lock().unwrap().push(LogEvent {
            app,
            target: metadata.target().to_owned(),
            message,
            fields: fields.0,
        });
    }
}

/// The events the application `app_id` logged so far, in order.
pub fn events_of(app_id: u64) -> Vec<LogEvent> {
    capture()
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.app == Some(app_id))
        .cloned()
        .collect()
}

/// Runs `future` as the application `app_id`: what it logs, and what every
/// task and thread it starts logs, is that application's.
pub fn as_app<F: std::future::Future>(
    app_id: u64,
    future: F,
) -> tracing::instrument::Instrumented<F> {
    use tracing::Instrument;
    future.instrument(tracing::info_span!("test_app", app_id))
}

/// A number no other application of this test binary has.
pub fn new_app_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Names the MySQL/MariaDB server the suite runs against; unset: SQLite.
/// (Not a RUBBER_ name: every RUBBER_ variable is a configuration key to the
/// binaries the tests start, which would refuse an unknown one.)
pub const MYSQL_URL_ENV: &str = "REGISTRY_RUBBER_TEST_MYSQL_URL";

/// A database of the test's own, on the backend the environment chose.
pub enum TestDb {
    Sqlite {
        /// Holds the file; removed with it.
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Mysql(TestDatabase),
}

impl TestDb {
    pub async fn fresh() -> TestDb {
        match std::env::var(MYSQL_URL_ENV) {
            Ok(server) if !server.is_empty() => TestDb::Mysql(TestDatabase::create(&server).await),
            _ => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let path = dir.path().join("users.sqlite");
                TestDb::Sqlite { _dir: dir, path }
            }
        }
    }

    /// Which backend, as /healthz names it.
    pub fn backend(&self) -> &'static str {
        match self {
            TestDb::Sqlite { .. } => "sqlite",
            TestDb::Mysql(_) => "mysql",
        }
    }

    /// The `database_url` of this database.
    pub fn url_text(&self) -> String {
        match self {
            TestDb::Sqlite { path, .. } => format!("sqlite://{}", path.display()),
            TestDb::Mysql(db) => db.url(),
        }
    }

    pub fn url(&self) -> DatabaseUrl {
        DatabaseUrl::parse(&self.url_text()).expect("a valid database URL")
    }

    /// The stored hash of `user`, read straight from the database on a
    /// connection of the test's own, as Apache reads it.
    pub async fn stored_hash(&self, user: &str) -> Option<String> {
        match self {
            TestDb::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.query_row(
                    "SELECT password FROM users WHERE username = ?1",
                    [user],
                    |r| r.get(0),
                )
                .ok()
            }
            TestDb::Mysql(db) => {
                sqlx::query_scalar("SELECT password FROM users WHERE username = ?")
                    .bind(user)
                    .fetch_optional(&db.pool)
                    .await
                    .expect("read the users table")
            }
        }
    }

    /// The stored expiry of `user`, who must exist.
    pub async fn expires_of(&self, user: &str) -> Option<i64> {
        match self {
            TestDb::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.query_row(
                    "SELECT expires_at FROM users WHERE username = ?1",
                    [user],
                    |r| r.get(0),
                )
                .unwrap()
            }
            TestDb::Mysql(db) => {
                sqlx::query_scalar("SELECT expires_at FROM users WHERE username = ?")
                    .bind(user)
                    .fetch_one(&db.pool)
                    .await
                    .expect("the user exists")
            }
        }
    }

    pub async fn row_count(&self) -> i64 {
        match self {
            TestDb::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))
                    .unwrap()
            }
            TestDb::Mysql(db) => sqlx::query_scalar("SELECT COUNT(*) FROM users")
                .fetch_one(&db.pool)
                .await
                .expect("count the users table"),
        }
    }

    /// Writes a live row (no expiry) behind the service's back, as another
    /// tool might, its name given as bytes: stored as TEXT holding exactly
    /// those bytes, or with `name_as_blob` as an SQLite BLOB (MySQL's
    /// VARBINARY column holds bytes either way).
    #[allow(dead_code)]
    pub async fn insert_raw_user(&self, name: &[u8], hash: &str, name_as_blob: bool) {
        match self {
            TestDb::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).unwrap();
                let sql = if name_as_blob {
                    "INSERT INTO users (username, password, created_at) VALUES (?1, ?2, 0)"
                } else {
                    "INSERT INTO users (username, password, created_at) VALUES (CAST(?1 AS TEXT), ?2, 0)"
                };
                conn.execute(sql, rusqlite::params![name, hash]).unwrap();
            }
            TestDb::Mysql(db) => {
                sqlx::query("INSERT INTO users (username, password, created_at) VALUES (?, ?, 0)")
                    .bind(name)
                    .bind(hash)
                    .execute(&db.pool)
                    .await
                    .expect("insert a raw row");
            }
        }
    }

    /// Runs `sql`, written for both backends, behind the service's back.
    pub async fn execute(&self, sql: &str) {
        match self {
            TestDb::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.execute_batch(sql)
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
            TestDb::Mysql(db) => {
                sqlx::query(sql)
                    .execute(&db.pool)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        }
    }

    /// Takes the users table away behind the service's back.
    pub async fn drop_users_table(&self) {
        self.execute("DROP TABLE users").await;
    }

    /// Makes every insert of the user `poison` fail inside the database, as
    /// a statement's own failure (a trigger raising an error).
    pub async fn install_poison_trigger(&self) {
        match self {
            TestDb::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.execute_batch(
                    "CREATE TRIGGER poison BEFORE INSERT ON users WHEN NEW.username = 'poison'
                     BEGIN SELECT RAISE(ABORT, 'refused'); END;",
                )
                .unwrap();
            }
            TestDb::Mysql(db) => {
                sqlx::query(
                    "CREATE TRIGGER poison BEFORE INSERT ON users FOR EACH ROW
                     BEGIN
                       IF NEW.username = 'poison' THEN
                         SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused';
                       END IF;
                     END",
                )
                .execute(&db.pool)
                .await
                .expect("CREATE TRIGGER poison");
            }
        }
    }

    /// Takes the users table's write lock on a connection of the test's own
    /// and holds it until the returned guard's `release`: the service's
    /// writer waits behind it, and writes queue up meanwhile.
    pub async fn hold_write_lock(&self) -> WriteLock {
        match self {
            TestDb::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                WriteLock::Sqlite(conn)
            }
            TestDb::Mysql(db) => {
                use sqlx::Connection as _;
                let mut conn = sqlx::MySqlConnection::connect(&db.url())
                    .await
                    .expect("connect");
                sqlx::query("LOCK TABLES users WRITE")
                    .execute(&mut conn)
                    .await
                    .expect("LOCK TABLES users WRITE");
                WriteLock::Mysql(conn)
            }
        }
    }

    /// What the database says about a missing table, as it reaches the log.
    pub fn missing_table_message(&self) -> &'static str {
        match self {
            TestDb::Sqlite { .. } => "no such table",
            TestDb::Mysql(_) => "doesn't exist",
        }
    }
}

/// A write lock on the users table, held by the test.
pub enum WriteLock {
    Sqlite(rusqlite::Connection),
    Mysql(sqlx::MySqlConnection),
}

impl WriteLock {
    pub async fn release(self) {
        match self {
            WriteLock::Sqlite(conn) => conn.execute_batch("ROLLBACK").unwrap(),
            WriteLock::Mysql(mut conn) => {
                sqlx::query("UNLOCK TABLES")
                    .execute(&mut conn)
                    .await
                    .expect("UNLOCK TABLES");
            }
        }
    }
}

/// A running application with its own database and clock.
pub struct TestApp {
    pub addr: SocketAddr,
    pub db: Arc<TestDb>,
    #[allow(dead_code)]
    pub store: Store,
    pub clock: Arc<ManualClock>,
    pub client: reqwest::Client,
    pub tls: Option<Arc<registry_rubber::tls::TlsState>>,
    /// The auth_request door's address, when the settings open it.
    pub auth: Option<SocketAddr>,
    /// The token door's address, when the settings open it.
    pub token: Option<SocketAddr>,
    /// Names this application's lines among the captured events.
    pub log_id: u64,
    /// What a SIGHUP would reload, and the settings the app started with.
    #[allow(dead_code)]
    pub reloader: Arc<registry_rubber::startup::Reloader>,
    #[allow(dead_code)]
    pub settings: Settings,
}

/// The clock's starting point: an epoch time like the names pipelines use.
pub const T0: i64 = 1_700_000_000;

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The settings a test application starts from: port 0, `db`, the cheapest
/// hash.
pub fn test_settings(db: &TestDb) -> Settings {
    let mut settings = Settings::default();
    settings.api.listener.listen = Some("127.0.0.1:0".parse().unwrap());
    settings.database = db.url();
    settings.hash_type = HashType::Sha1;
    settings.bcrypt_cost = 4;
    // The suites clean up young credentials on purpose; the floor has a
    // test of its own.
    settings.min_older_than = 0;
    settings
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let db = Arc::new(TestDb::fresh().await);
    let mut settings = test_settings(&db);
    configure(&mut settings);
    spawn_with_settings(settings, db).await
}

/// Another application on the same database as `first`, with its own
/// writer, clock and port: a second service instance.
#[allow(dead_code)]
pub async fn spawn_second_app(first: &TestApp) -> TestApp {
    spawn_second_app_with(first, |_| {}).await
}

/// As [`spawn_second_app`], with the settings changed by `configure`.
#[allow(dead_code)]
pub async fn spawn_second_app_with(
    first: &TestApp,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let mut settings = test_settings(&first.db);
    configure(&mut settings);
    spawn_with_settings(settings, Arc::clone(&first.db)).await
}

pub async fn spawn_with_settings(settings: Settings, db: Arc<TestDb>) -> TestApp {
    let started_with = settings.clone();
    capture();
    let log_id = new_app_id();
    // As `registry-rubber migrate` does before the first `serve`.
    if let TestDb::Sqlite { path, .. } = &*db {
        if !path.exists() {
            Store::open(&settings, Create::IfMissing)
                .await
                .expect("create the database");
        }
    }
    let clock = Arc::new(ManualClock::new(T0));
    let app = as_app(
        log_id,
        Application::build_with_clock(&settings, clock.clone()),
    )
    .await
    .expect("application builds");
    let addr = app.local_addr();
    let auth = app.door_addr(registry_rubber::config::Section::AuthRequest);
    let token = app.door_addr(registry_rubber::config::Section::Token);
    let reloader = app.reloader();
    let store = app.credentials().store().clone();
    let tls = app.tls();
    tokio::spawn(as_app(
        log_id,
        app.run_until_stopped(std::future::pending()),
    ));
    TestApp {
        log_id,
        addr,
        db,
        store,
        clock,
        // Every request bounded: a service that stops answering fails the
        // test instead of hanging the suite.
        client: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(90))
            .build()
            .expect("an HTTP client"),
        tls,
        auth,
        token,
        reloader,
        settings: started_with,
    }
}

/// A decoded answer: HTTP status, content type and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
}

impl Answer {
    /// Checks the envelope: the four contract keys, status_code equal to the
    /// HTTP status, and OKAY exactly for 2xx.
    pub fn assert_envelope(&self, action: &str, status: u16, msg: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert!(
            self.content_type.starts_with("application/json"),
            "{self:?}"
        );
        assert_eq!(self.body["action"], action, "{self:?}");
        assert_eq!(self.body["msg"], msg, "{self:?}");
        assert_eq!(self.body["status_code"], status, "{self:?}");
        let expected = if (200..300).contains(&status) {
            "OKAY"
        } else {
            "ERROR"
        };
        assert_eq!(self.body["response"], expected, "{self:?}");
    }

    /// As [`Answer::assert_envelope`], for errors whose message is free text.
    pub fn assert_error(&self, action: &str, status: u16) {
        let msg = self.body["msg"].as_str().unwrap_or_default().to_owned();
        assert!(!msg.is_empty(), "{self:?}");
        self.assert_envelope(action, status, &msg);
    }
}

impl TestApp {
    /// The events this application logged so far, in order; no other
    /// application's.
    pub fn logs(&self) -> Vec<LogEvent> {
        events_of(self.log_id)
    }

    /// The first event of this application that `matches`, waiting up to
    /// 20 s for it (lines written by background work come later).
    pub async fn wait_for_log(&self, what: &str, matches: impl Fn(&LogEvent) -> bool) -> LogEvent {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(event) = self.logs().into_iter().find(&matches) {
                return event;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log event: {what}; the application logged {:#?}",
                self.logs()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The address of a door the settings opened.
    #[allow(dead_code)]
    pub fn door(&self, section: registry_rubber::config::Section) -> Option<SocketAddr> {
        match section {
            registry_rubber::config::Section::AuthRequest => self.auth,
            registry_rubber::config::Section::Token => self.token,
            _ => Some(self.addr),
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    pub async fn get(&self, path_and_query: &str) -> Answer {
        let resp = self
            .client
            .get(self.url(path_and_query))
            .send()
            .await
            .expect("request sent");
        decode(resp).await
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        let resp = self
            .client
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode_form(form))
            .send()
            .await
            .expect("request sent");
        decode(resp).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Answer {
        let resp = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent");
        decode(resp).await
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Answer {
        let resp = self
            .client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent");
        decode(resp).await
    }

    /// Sends `request` byte for byte on a new connection and returns the
    /// status and the body (empty for HEAD).
    pub async fn raw(&self, request: &[u8]) -> (u16, String, String) {
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, head.to_owned(), body.to_owned())
    }

    /// Writes a row with this hash straight into the store, living an hour.
    #[allow(dead_code)]
    pub async fn store_row(&self, user: &str, hash: &str) {
        use registry_rubber::clock::Clock;
        let now = self.clock.now();
        self.store
            .write(registry_rubber::store::WriteOp::Add {
                user: registry_rubber::domain::Username::parse(user).unwrap(),
                hash: hash.to_owned(),
                now,
                expires_at: Some(now + 3600),
                scopes: None,
                replace: true,
            })
            .await
            .expect("write the row");
    }

    pub async fn add(&self, user: &str, passwd: &str) -> Answer {
        self.post_form("/add", &[("user", user), ("passwd", passwd)])
            .await
    }

    /// The stored hash of `user`, read straight from the database.
    pub async fn stored_hash(&self, user: &str) -> Option<String> {
        self.db.stored_hash(user).await
    }

    pub async fn row_count(&self) -> i64 {
        self.db.row_count().await
    }
}

/// The value of one series of /metrics, such as
/// `rubber_verifications_total{how="dummy"}`.
#[allow(dead_code)]
pub async fn metric_value(app: &TestApp, series: &str) -> u64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
}

/// A CIDR list as the configuration parses it.
#[allow(dead_code)]
pub fn parse_cidrs_for_tests(list: &str) -> Vec<ipnet::IpNet> {
    registry_rubber::access::parse_cidrs(list).expect("CIDRs")
}

pub fn encode_form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent(k), percent(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub async fn decode(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = resp.bytes().await.expect("body read");
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        panic!(
            "status {status}: body is not JSON: {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    Answer {
        status,
        content_type,
        body,
    }
}

/// The service binary running on a fresh SQLite database in `dir`, on a free loopback port, logging JSON; killed when dropped.
pub struct Served {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every line the binary wrote so far, standard output and error.
    output: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Served {
    pub fn start(dir: &std::path::Path, args: &[&std::ffi::OsStr]) -> Served {
        Served::start_logging(dir, "json", args)
    }

    /// As [`Served::start`], logging in `log_format` (`text` or `json`).
    pub fn start_logging(
        dir: &std::path::Path,
        log_format: &str,
        args: &[&std::ffi::OsStr],
    ) -> Served {
        let url = format!("sqlite://{}", dir.join("users.sqlite").display());
        Served::start_on(&url, log_format, args)
    }

    /// The binary on the database `url`, migrated first, logging in
    /// `log_format`.
    pub fn start_on(url: &str, log_format: &str, args: &[&std::ffi::OsStr]) -> Served {
        let bin = env!("CARGO_BIN_EXE_registry-rubber");
        let url = url.to_owned();
        let status = std::process::Command::new(bin)
            .args(["--database-url", &url, "migrate"])
            .output()
            .unwrap()
            .status;
        assert!(status.success());
        let mut child = std::process::Command::new(bin)
            .args(["--database-url", &url, "--listen", "127.0.0.1:0"])
            .args(["--log-format", log_format])
            .args(args)
            .arg("serve")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        let output = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let readers = vec![
            read_lines(stdout, None, Arc::clone(&output)),
            read_lines(stderr, Some(tx), Arc::clone(&output)),
        ];
        Served {
            child,
            lines,
            output,
            readers,
        }
    }

    /// Stops the binary with SIGTERM and returns whether it exited 0, and
    /// every line it wrote, on either stream.
    pub fn stop_and_read(&mut self) -> (bool, String) {
        let stopped = self.stop();
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        (stopped, self.output.lock().unwrap().join("\n"))
    }

    /// The address of each door, from the next `count` `listening` lines
    /// (logged in `log_format`).
    pub fn doors(
        &self,
        log_format: &str,
        count: usize,
    ) -> std::collections::HashMap<String, SocketAddr> {
        (0..count)
            .map(|_| {
                let line = self.wait_for("listening");
                let (door, address) = if log_format == "json" {
                    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                    (
                        v["door"].as_str().unwrap().to_owned(),
                        v["address"].as_str().unwrap().to_owned(),
                    )
                } else {
                    let field = |name: &str| {
                        let rest = line.split(&format!(" {name}=")).nth(1).unwrap();
                        rest.split(' ').next().unwrap().trim_matches('"').to_owned()
                    };
                    (field("door"), field("address"))
                };
                (door, address.parse().unwrap())
            })
            .collect()
    }

    /// The next log line containing `needle`; panics after 10 s without one.
    pub fn wait_for(&self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(std::time::Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no log line containing {needle}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    pub fn hup(&self) {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends SIGTERM and waits for the exit; true when it exited 0.
    pub fn stop(&mut self) -> bool {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap().success()
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// Reads `stream` line by line on a thread of its own into `output`, and
/// to `tx` when given.
fn read_lines(
    stream: impl std::io::Read + Send + 'static,
    tx: Option<std::sync::mpsc::Sender<String>>,
    output: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    use std::io::BufRead;
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
        {
            output.lock().unwrap().push(line.clone());
            if let Some(tx) = &tx {
                let _ = tx.send(line);
            }
        }
    })
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
