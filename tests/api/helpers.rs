//! Starting the real application on port 0 with a fresh SQLite file, and
//! talking to it over HTTP.

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

/// Every log line the application writes during the test run.
pub fn captured_logs() -> String {
    let buf = log_buffer().lock().unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = CaptureWriter(Arc::clone(&buffer));
        tracing_subscriber::fmt()
            .with_env_filter("trace")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        buffer
    })
}

#[derive(Clone)]
struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A running application with its own database file and clock.
pub struct TestApp {
    pub addr: SocketAddr,
    pub db_path: PathBuf,
    #[allow(dead_code)]
    pub store: Store,
    pub clock: Arc<ManualClock>,
    pub client: reqwest::Client,
    pub tls: Option<Arc<registry_rubber::tls::TlsState>>,
    _dir: tempfile::TempDir,
}

/// The clock's starting point: an epoch time like the names pipelines use.
pub const T0: i64 = 1_700_000_000;

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db_path = dir.path().join("users.sqlite");
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: DatabaseUrl::Sqlite {
            path: db_path.clone(),
            is_default: false,
        },
        hash_type: HashType::Sha1,
        bcrypt_cost: 4,
        ..Settings::default()
    };
    configure(&mut settings);
    spawn_with_settings(settings, dir, db_path).await
}

pub async fn spawn_with_settings(
    settings: Settings,
    dir: tempfile::TempDir,
    db_path: PathBuf,
) -> TestApp {
    log_buffer();
    // As `registry-rubber migrate` does before the first `serve`.
    if !db_path.exists() {
        Store::open(&settings, Create::IfMissing)
            .await
            .expect("create the database");
    }
    let clock = Arc::new(ManualClock::new(T0));
    let app = Application::build_with_clock(&settings, clock.clone())
        .await
        .expect("application builds");
    let addr = app.local_addr();
    let store = app.store().clone();
    let tls = app.tls();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    TestApp {
        addr,
        db_path,
        store,
        clock,
        client: reqwest::Client::new(),
        tls,
        _dir: dir,
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

    pub async fn add(&self, user: &str, passwd: &str) -> Answer {
        self.post_form("/add", &[("user", user), ("passwd", passwd)])
            .await
    }

    /// The stored hash of `user`, read straight from the database file.
    pub fn stored_hash(&self, user: &str) -> Option<String> {
        let conn = rusqlite::Connection::open(&self.db_path).unwrap();
        conn.query_row(
            "SELECT password FROM users WHERE username = ?1",
            [user],
            |r| r.get(0),
        )
        .ok()
    }

    pub fn row_count(&self) -> i64 {
        let conn = rusqlite::Connection::open(&self.db_path).unwrap();
        conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))
            .unwrap()
    }
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

async fn decode(resp: reqwest::Response) -> Answer {
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
