//! One complete deployment per test: docker-registry, the registry-rubber
//! binary, and in front of them Apache configured from
//! deploy/httpd.conf.sample or nginx configured from deploy/nginx.conf.sample
//! (asking the service's auth_request door), or no web server at all: the
//! registry configured from deploy/registry-htpasswd.yml.sample, checking
//! credentials itself against the htpasswd file the service keeps, or from
//! deploy/registry-token.yml.sample, trusting the tokens the service's
//! token door signs. Each on its own loopback ports, sharing one temporary
//! directory that is removed when the stack drops (after every process in
//! it has stopped).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::accounts::{apache_account, group_id, user_id};
use super::apache::{assert_only_defines_differ, read_sample, render, Apache, StartError};
use super::nginx::{self, Nginx};
use super::pki::{Pki, TokenSigner};
use super::process::{accepts, free_port, poll, ChildGuard};
use super::registry_sample;
use super::tools::tools;
use crate::mariadb::MariaDb;

/// How long the registry and the service get to start.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts at finding free ports before giving up.
const PORT_ATTEMPTS: usize = 5;

/// The user nginx's worker processes run as (RR_NGINX_USER).
const NGINX_USER: &str = "www-data";

/// The user and group the registry runs as when it reads the service's
/// htpasswd file itself: unprivileged, so that only the file's group bits
/// let it read the file.
const REGISTRY_USER: &str = "nobody";
const REGISTRY_GROUP: &str = "nogroup";
/// The realm the tests give RR_REALM in deploy/registry-htpasswd.yml.sample,
/// with a space to see the quoting hold.
pub const HTPASSWD_REALM: &str = "e2e registry";

/// The service and issuer the tests give RR_TOKEN_SERVICE and
/// RR_TOKEN_ISSUER in deploy/registry-token.yml.sample, and the service's
/// RUBBER_TOKEN_SERVICE and RUBBER_TOKEN_ISSUER (not the defaults, to see
/// that both sides are configured).
pub const TOKEN_SERVICE: &str = "e2e-registry";
pub const TOKEN_ISSUER: &str = "e2e-registry-rubber";

/// The subject a client certificate needs when mutual TLS is on (the values
/// the tests give RR_API_CLIENT_OU and RR_API_CLIENT_CNS).
pub const CLIENT_OU: &str = "e2e-clients";
pub const CLIENT_CNS: [&str; 2] = ["e2e-pipeline", "e2e-release"];

/// The web server in front of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// Apache httpd from deploy/httpd.conf.sample, reading the users table
    /// itself with mod_authn_dbd, and proxying the API on its own port.
    Apache,
    /// nginx from deploy/nginx.conf.sample, asking the service's
    /// auth_request door about every request; no API virtual host.
    Nginx,
    /// No web server: docker-registry from deploy/registry-htpasswd.yml.sample
    /// serves HTTPS itself and checks Basic credentials against the htpasswd
    /// file the (first) service instance keeps, with bcrypt at cost 4. It
    /// runs as an unprivileged user that reads the file through its group.
    Htpasswd,
    /// No web server: docker-registry from deploy/registry-token.yml.sample
    /// serves HTTPS itself, as an unprivileged user, and accepts the tokens
    /// the (first) service instance's token door signs with a key and
    /// certificate made by the README's openssl commands; its realm is that
    /// door, plain http on loopback.
    Token,
}

impl Front {
    pub fn name(self) -> &'static str {
        match self {
            Self::Apache => "Apache",
            Self::Nginx => "nginx",
            Self::Htpasswd => "docker-registry's htpasswd",
            Self::Token => "docker-registry's token",
        }
    }
}

#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Which web server guards the registry.
    pub front: Front,
    /// The service's `hash_type`; `None` keeps its default.
    pub hash_type: Option<&'static str>,
    /// Switch on the sample's mutual-TLS lines for the API virtual host
    /// (Apache only).
    pub mtls: bool,
    /// The API virtual host's address allowlist (RR_API_ALLOW; Apache only).
    pub api_allow: &'static str,
    /// More environment variables for the service, such as RUBBER_SWEEP_INTERVAL.
    pub service_env: Vec<(&'static str, &'static str)>,
    /// Keep the users in a MariaDB server of the stack's own, read by Apache
    /// with DBDriver mysql through a read-only account (or by the door, for
    /// nginx), and run a second service instance on the same database.
    pub mysql: bool,
    /// The token door speaks HTTPS with the test PKI's server certificate,
    /// and the registry's realm is https (token stacks only).
    pub token_tls: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            front: Front::Apache,
            hash_type: None,
            mtls: false,
            api_allow: "127.0.0.1",
            service_env: Vec::new(),
            mysql: false,
            token_tls: false,
        }
    }
}

/// The running web server in front of the registry.
enum FrontServer {
    Apache(Apache),
    Nginx(Nginx),
    /// The registry faces the clients itself.
    None,
}

impl FrontServer {
    fn error_log(&self) -> String {
        match self {
            Self::Apache(apache) => apache.error_log(),
            Self::Nginx(nginx) => nginx.error_log(),
            Self::None => "(no web server: the registry checks requests itself)".to_owned(),
        }
    }
}

/// What a token stack's service instances are given for their token door.
#[derive(Debug, Clone)]
struct TokenDoorFiles {
    /// The signing key and certificate, made by the README's commands.
    signer: TokenSigner,
    /// The door's HTTPS certificate and key (the test PKI's server pair),
    /// when it speaks TLS.
    tls: Option<(PathBuf, PathBuf)>,
}

/// Where a service instance listens, from its `listening` log lines.
#[derive(Debug, Clone, Copy)]
struct ServiceAddrs {
    /// The admin JSON API (`door` "api"), unless the instance runs without
    /// it (RUBBER_LISTEN empty: it only keeps the htpasswd file).
    api: Option<SocketAddr>,
    /// The auth_request door (`door` "auth_request"), when switched on.
    auth: Option<SocketAddr>,
    /// The token door (`door` "token"), when switched on.
    token: Option<SocketAddr>,
}

/// Fields drop in order: the web server first, the temporary directory last.
pub struct Stack {
    front_server: FrontServer,
    /// Which web server is in front.
    pub front: Front,
    service: ChildGuard,
    /// The second service instance, on the same database (MySQL only).
    second: Option<ChildGuard>,
    registry: ChildGuard,
    /// The database server (MySQL only), stopped after the services.
    mariadb: Option<MariaDb>,
    pub pki: Pki,
    /// The SQLite database file, and the URL the service and CLI are given.
    pub db: PathBuf,
    pub database_url: String,
    /// Environment the service and the CLI need besides the URL (the
    /// database password file).
    database_env: Vec<(&'static str, String)>,
    /// The service's own address (not through the web server); none while
    /// it runs without its API.
    service_url: Option<String>,
    /// The service's auth_request door (nginx stacks only).
    auth_addr: Option<SocketAddr>,
    /// The htpasswd file the first instance keeps (htpasswd stacks only).
    htpasswd_file: Option<PathBuf>,
    /// The token doors of the first and the second instance, and the key
    /// and certificate they sign with (token stacks only).
    token_addr: Option<SocketAddr>,
    second_token_addr: Option<SocketAddr>,
    token_door: Option<TokenDoorFiles>,
    /// How the stack was started, to start the service again the same way.
    options: StackOptions,
    /// How many times the first instance was started (names its log).
    service_starts: u32,
    /// The second instance's own address.
    second_url: Option<String>,
    /// `127.0.0.1:PORT` of the web server's HTTPS registry server.
    pub registry_host: String,
    /// The web server's plain HTTP port (redirects).
    pub http_port: u16,
    /// Apache's API virtual host's port (Apache stacks only).
    api_port: Option<u16>,
    http: reqwest::Client,
    /// Every secret the stack handled: the passwords it sent to the API
    /// and the CLI, the ones the API answered with, the database
    /// passwords. No log any process of the stack wrote may hold one.
    secrets: std::sync::Mutex<BTreeSet<String>>,
    dir: tempfile::TempDir,
}

impl Stack {
    pub fn start() -> Self {
        Self::start_with(StackOptions::default())
    }

    pub fn start_with(options: StackOptions) -> Self {
        // Fail first, naming the missing packages.
        tools();
        let dir = tempfile::Builder::new()
            .prefix("registry-rubber-e2e-")
            .tempdir()
            .expect("create a temporary directory");
        // Apache's registry-apache processes must be able to reach the
        // database below this directory, and nginx's www-data processes its
        // temporary directories.
        set_mode(dir.path(), 0o711);
        let pki = Pki::create(&dir.path().join("pki"));

        let (db, database_url, database_env, mariadb, dbd) = if options.mysql {
            mysql_database(dir.path(), options.front)
        } else {
            (sqlite_database(dir.path()), None, Vec::new(), None, None)
        };
        let database_url = database_url.unwrap_or_else(|| format!("sqlite://{}", db.display()));

        // The registry reading the service's file starts after the service
        // has written it; the others first, as they always have.
        let htpasswd_file =
            (options.front == Front::Htpasswd).then(|| htpasswd_file_in(dir.path()));
        // The token door's key and certificate, made as the README says.
        let token_door = (options.front == Front::Token).then(|| TokenDoorFiles {
            signer: TokenSigner::create(&dir.path().join("token-signer")),
            tls: options
                .token_tls
                .then(|| (pki.server_cert.clone(), pki.server_key.clone())),
        });
        let mut registry = matches!(options.front, Front::Apache | Front::Nginx)
            .then(|| start_registry(dir.path()));
        let (mut service, service_addrs) = start_service(
            dir.path(),
            "service",
            &database_url,
            &database_env,
            &options,
            htpasswd_file.as_deref(),
            token_door.as_ref(),
        );
        let (second, second_url, second_token_addr) = if options.mysql {
            let (second, addr) = start_service(
                dir.path(),
                "second",
                &database_url,
                &database_env,
                &options,
                None,
                token_door.as_ref(),
            );
            (
                Some(second),
                addr.api.map(|api| format!("http://{api}")),
                addr.token,
            )
        } else {
            (None, None, None)
        };
        let registry_port = registry.as_ref().map_or(0, |(_, port)| *port);
        let (front_server, ports) = match options.front {
            Front::Apache => {
                let (apache, ports) = start_apache(
                    dir.path(),
                    &pki,
                    &db,
                    dbd,
                    registry_port,
                    service_addrs
                        .api
                        .expect("the service of an Apache stack has its API"),
                    &options,
                );
                (FrontServer::Apache(apache), ports)
            }
            Front::Nginx => {
                let door = service_addrs
                    .auth
                    .expect("the service of an nginx stack runs its auth_request door");
                let (nginx, ports) = start_nginx(dir.path(), &pki, registry_port, door);
                (FrontServer::Nginx(nginx), ports)
            }
            Front::Htpasswd => {
                let file = htpasswd_file
                    .as_deref()
                    .expect("an htpasswd stack names its file");
                wait_for_file(file, &mut service);
                let (started, port) = start_registry_from_sample(
                    dir.path(),
                    &pki,
                    &registry_sample::read_sample(),
                    BTreeMap::from([
                        ("RR_REALM", HTPASSWD_REALM.to_owned()),
                        ("RR_HTPASSWD_FILE", file.display().to_string()),
                    ]),
                    &[],
                );
                registry = Some((started, port));
                let ports = FrontPorts {
                    http: 0,
                    https: port,
                    api: 0,
                };
                (FrontServer::None, ports)
            }
            Front::Token => {
                let door = service_addrs
                    .token
                    .expect("the service of a token stack runs its token door");
                let files = token_door
                    .as_ref()
                    .expect("a token stack has a signing key");
                let scheme = if files.tls.is_some() { "https" } else { "http" };
                let (started, port) = start_registry_from_sample(
                    dir.path(),
                    &pki,
                    &registry_sample::read_token_sample(),
                    BTreeMap::from([
                        ("RR_TOKEN_REALM", format!("{scheme}://{door}/token")),
                        ("RR_TOKEN_SERVICE", TOKEN_SERVICE.to_owned()),
                        ("RR_TOKEN_ISSUER", TOKEN_ISSUER.to_owned()),
                    ]),
                    &[(
                        "RR_TOKEN_ROOTCERTBUNDLE",
                        &files.signer.cert,
                        "token-signing.crt",
                    )],
                );
                registry = Some((started, port));
                let ports = FrontPorts {
                    http: 0,
                    https: port,
                    api: 0,
                };
                (FrontServer::None, ports)
            }
        };
        let (registry, _) = registry.expect("the registry was started");
        let api_port = (options.front == Front::Apache).then_some(ports.api);
        let options_mysql = options.mysql;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("build an HTTP client");
        Self {
            front_server,
            front: options.front,
            service,
            second,
            registry,
            mariadb,
            pki,
            db,
            database_url,
            database_env,
            service_url: service_addrs.api.map(|api| format!("http://{api}")),
            auth_addr: service_addrs.auth,
            htpasswd_file,
            token_addr: service_addrs.token,
            second_token_addr,
            token_door,
            options,
            service_starts: 1,
            second_url,
            registry_host: format!("127.0.0.1:{}", ports.https),
            http_port: ports.http,
            api_port,
            http,
            secrets: std::sync::Mutex::new(if options_mysql {
                BTreeSet::from([SERVICE_PASSWORD.to_owned(), APACHE_PASSWORD.to_owned()])
            } else {
                BTreeSet::new()
            }),
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The port of Apache's API virtual host; panics on an nginx stack,
    /// whose sample has none.
    pub fn api_port(&self) -> u16 {
        self.api_port
            .expect("only Apache stacks proxy the API on a port of their own")
    }

    /// The PID of Apache's parent process; panics unless this is an Apache
    /// stack.
    pub fn apache_pid(&self) -> i32 {
        match &self.front_server {
            FrontServer::Apache(apache) => apache.pid(),
            _ => panic!("only Apache stacks run Apache"),
        }
    }

    /// The web server's access log of the registry server (the registry's
    /// own log when no web server is in front).
    pub fn registry_access_log(&self) -> PathBuf {
        match self.front {
            Front::Apache => self.dir().join("httpd-logs/registry-access.log"),
            Front::Nginx => self.dir().join("nginx/logs/registry-access.log"),
            Front::Htpasswd | Front::Token => self.registry.log_path().to_owned(),
        }
    }

    /// The first service instance's token door; panics unless this is a
    /// token stack.
    pub fn token_door(&self) -> SocketAddr {
        self.token_addr
            .expect("only token stacks run the token door")
    }

    /// The second instance's token door (token stacks on MySQL only).
    pub fn second_token_door(&self) -> SocketAddr {
        self.second_token_addr
            .expect("a second instance runs on MySQL stacks only")
    }

    /// The key and certificate the token doors sign with, the registry's
    /// rootcertbundle (token stacks only).
    pub fn token_signer(&self) -> &TokenSigner {
        &self
            .token_door
            .as_ref()
            .expect("only token stacks have a signing key")
            .signer
    }

    /// The realm the registry names: the first instance's token door, over
    /// https when the stack's `token_tls` says so (token stacks only).
    pub fn token_realm(&self) -> String {
        let scheme = match &self.token_door {
            Some(TokenDoorFiles { tls: Some(_), .. }) => "https",
            _ => "http",
        };
        format!("{scheme}://{}/token", self.token_door())
    }

    /// The htpasswd file the first service instance keeps and the registry
    /// reads; panics unless this is an htpasswd stack.
    pub fn htpasswd_file(&self) -> &Path {
        self.htpasswd_file
            .as_deref()
            .expect("only htpasswd stacks keep a file")
    }

    /// What the registry has logged so far.
    pub fn registry_log(&self) -> String {
        self.registry.log()
    }

    /// What the first service instance has logged so far.
    pub fn service_log(&self) -> String {
        self.service.log()
    }

    /// Stops the first service instance by its PID (SIGTERM, which lets it
    /// finish and close the database), leaving everything else running.
    pub fn stop_service(&mut self) {
        self.service.stop();
    }

    /// Starts the first service instance again, as the stack first started
    /// it, on the same database (and file), after [`Stack::stop_service`].
    pub fn start_service_again(&mut self) {
        self.start_again_with(Vec::new());
    }

    /// Starts the first service instance again with no listener at all
    /// (RUBBER_LISTEN empty): it only keeps the htpasswd file. The API
    /// calls of this stack then panic; the CLI still works.
    pub fn start_service_again_without_api(&mut self) {
        self.start_again_with(vec![("RUBBER_LISTEN", "")]);
    }

    fn start_again_with(&mut self, env: Vec<(&'static str, &'static str)>) {
        assert!(
            self.service.exited().is_some(),
            "stop the service before starting it again"
        );
        self.service_starts += 1;
        let mut options = self.options.clone();
        options.service_env.extend(env);
        let (service, addrs) = start_service(
            self.dir.path(),
            &format!("service-{}", self.service_starts),
            &self.database_url,
            &self.database_env,
            &options,
            self.htpasswd_file.as_deref(),
            self.token_door.as_ref(),
        );
        self.service = service;
        self.service_url = addrs.api.map(|api| format!("http://{api}"));
        self.auth_addr = addrs.auth;
        self.token_addr = addrs.token;
    }

    /// The logs of every process, for failure messages.
    pub fn logs(&mut self) -> String {
        let mut service_state = match self.service.exited() {
            Some(status) => format!(" (exited: {status})"),
            None => String::new(),
        };
        if let Some(door) = self.auth_addr {
            service_state.push_str(&format!(" (auth_request door at {door})"));
        }
        if let Some(door) = self.token_addr {
            service_state.push_str(&format!(" (token door at {door})"));
        }
        let second = match &self.second {
            Some(second) => format!("\n--- second instance ---\n{}", tail(&second.log(), 40)),
            None => String::new(),
        };
        let mariadb = match &self.mariadb {
            Some(server) => format!(
                "\n--- MariaDB error log ---\n{}",
                tail(&server.error_log(), 40)
            ),
            None => String::new(),
        };
        format!(
            "--- {} error log ---\n{}\n--- {}{service_state} ---\n{}\n--- {} ---\n{}{second}{mariadb}",
            self.front.name(),
            self.front_server.error_log(),
            self.service.name(),
            tail(&self.service.log(), 40),
            self.registry.name(),
            tail(&self.registry.log(), 40),
        )
    }

    /// A call to the service's API directly; returns the status and the JSON answer.
    pub async fn api(&self, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let base = self
            .service_url
            .as_deref()
            .expect("the service runs without its API (RUBBER_LISTEN empty)");
        self.api_at(base, path, query).await
    }

    /// A call to the second instance's API (MySQL stacks only); panics
    /// unless it answers OKAY.
    pub async fn second_ok(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let base = self
            .second_url
            .as_deref()
            .expect("a second instance runs on MySQL stacks only");
        let (status, answer) = self.api_at(base, path, query).await;
        assert!(
            status == 200 && answer["response"] == "OKAY",
            "{path} on the second instance answered {status}: {answer}"
        );
        answer
    }

    async fn api_at(&self, base: &str, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
        for (key, value) in query {
            if *key == "passwd" {
                self.handled_secret(value);
            }
        }
        let url = format!("{base}{path}");
        let response = self
            .http
            .get(&url)
            .query(query)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status().as_u16();
        let body = response
            .json::<Value>()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: the answer is not JSON: {e}"));
        if let Some(passwd) = body["passwd"].as_str() {
            self.handled_secret(passwd);
        }
        (status, body)
    }

    /// Remembers `secret` (a password the test sent or was given) for the
    /// scan of the logs when the stack stops. Secrets shorter than 8
    /// characters are too likely to occur by chance to be looked for.
    pub fn handled_secret(&self, secret: &str) {
        let secret = secret.trim();
        if secret.len() >= 8 {
            self.secrets.lock().unwrap().insert(secret.to_owned());
        }
    }

    /// Every log a process of the stack wrote: the files named `*.log`
    /// below its directory (the service instances', the registry's, the
    /// web server's error and access logs) and MariaDB's error log.
    fn written_logs(&self) -> Vec<(String, String)> {
        let mut logs = Vec::new();
        let mut dirs = vec![self.dir().to_owned()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    dirs.push(path);
                } else if kind.is_file() && path.extension().is_some_and(|e| e == "log") {
                    let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default())
                        .into_owned();
                    logs.push((path.display().to_string(), text));
                }
            }
        }
        if let Some(server) = &self.mariadb {
            logs.push(("MariaDB's error log".to_owned(), server.error_log()));
        }
        logs
    }

    /// Fails unless every log the stack wrote is free of every secret it
    /// handled and of every stored hash (SQLite stacks).
    fn assert_logs_hold_no_secret(&self) {
        let mut secrets: Vec<String> = self.secrets.lock().unwrap().iter().cloned().collect();
        if self.mariadb.is_none() && self.db.exists() {
            let conn = self.read_db();
            let mut stmt = conn
                .prepare("SELECT password FROM users")
                .expect("prepare a SELECT on users");
            let hashes: Vec<String> = stmt
                .query_map([], |row| row.get::<_, String>(0))
                .expect("query users")
                .filter_map(Result::ok)
                .collect();
            secrets.extend(hashes);
        }
        let logs = self.written_logs();
        assert!(
            logs.iter().any(|(name, _)| name.ends_with("/service.log")),
            "the service's log is among the logs scanned: {:?}",
            logs.iter().map(|(name, _)| name).collect::<Vec<_>>()
        );
        for (name, text) in &logs {
            for secret in &secrets {
                assert!(
                    !text.contains(secret.as_str()),
                    "a secret ({} chars, starting {:?}) is in {name}",
                    secret.len(),
                    &secret[..3]
                );
            }
        }
    }

    /// Adds a user through the API and returns the answer; panics unless OKAY.
    pub async fn add(&self, user: &str, password: &str) -> Value {
        let answer = self
            .ok("/add", &[("user", user), ("passwd", password)])
            .await;
        assert_eq!(answer["user"], user, "{answer}");
        answer
    }

    pub async fn remove(&self, user: &str) -> Value {
        self.ok("/remove", &[("user", user)]).await
    }

    pub async fn cleanup(&self, older_than: u64) -> Value {
        self.ok("/cleanup", &[("older_than", &older_than.to_string())])
            .await
    }

    /// A call to the service's API directly; panics unless it answers OKAY.
    pub async fn ok(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let (status, answer) = self.api(path, query).await;
        assert!(
            status == 200 && answer["response"] == "OKAY",
            "{path} answered {status}: {answer}"
        );
        answer
    }

    /// Runs the registry-rubber CLI against this stack's database, with
    /// `stdin` as standard input.
    pub fn cli(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = rubber_command()
            .args(["--database-url", &self.database_url])
            .envs(self.database_env.iter().map(|(k, v)| (*k, v.as_str())))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the registry-rubber CLI");
        self.handled_secret(stdin);
        child
            .stdin
            .take()
            .expect("the CLI's standard input is piped")
            .write_all(stdin.as_bytes())
            .expect("write the password to the CLI");
        child.wait_with_output().expect("wait for the CLI")
    }

    /// The stored password hash of `user`, read from the database file.
    pub fn stored_hash(&self, user: &str) -> Option<String> {
        let conn = self.read_db();
        let mut stmt = conn
            .prepare("SELECT password FROM users WHERE username = ?1")
            .expect("prepare a SELECT on users");
        let mut rows = stmt.query([user]).expect("query users");
        rows.next()
            .expect("read users")
            .map(|row| row.get(0).expect("password is text"))
    }

    /// The stored `created_at` of `user`, in epoch seconds.
    pub fn stored_created_at(&self, user: &str) -> Option<i64> {
        let conn = self.read_db();
        let mut stmt = conn
            .prepare("SELECT created_at FROM users WHERE username = ?1")
            .expect("prepare a SELECT on users");
        let mut rows = stmt.query([user]).expect("query users");
        rows.next()
            .expect("read users")
            .map(|row| row.get(0).expect("created_at is an integer"))
    }

    /// Every user in the database file, with its stored hash.
    pub fn stored_users_with_hashes(&self) -> BTreeMap<String, String> {
        let conn = self.read_db();
        let mut stmt = conn
            .prepare("SELECT username, password FROM users")
            .expect("prepare a SELECT on users");
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .expect("query users")
            .collect::<Result<_, _>>()
            .expect("read users");
        rows
    }

    /// Every user name in the database file.
    pub fn stored_users(&self) -> BTreeSet<String> {
        let conn = self.read_db();
        let mut stmt = conn
            .prepare("SELECT username FROM users")
            .expect("prepare a SELECT on users");
        let names = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .expect("query users")
            .collect::<Result<_, _>>()
            .expect("read users");
        names
    }

    /// Writes a live row (no expiry) into the database file behind the
    /// service's back, as another tool might: its name as TEXT holding
    /// exactly these bytes, or with `name_as_blob` as a BLOB.
    pub fn insert_raw_user(&self, name: &[u8], hash: &str, name_as_blob: bool) {
        assert!(
            self.mariadb.is_none(),
            "this stack keeps its users in MariaDB"
        );
        let conn = rusqlite::Connection::open(&self.db)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.db.display()));
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .expect("set a busy timeout");
        let sql = if name_as_blob {
            "INSERT INTO users (username, password, created_at) VALUES (?1, ?2, 0)"
        } else {
            "INSERT INTO users (username, password, created_at) VALUES (CAST(?1 AS TEXT), ?2, 0)"
        };
        conn.execute(sql, rusqlite::params![name, hash])
            .expect("insert a row into users");
    }

    fn read_db(&self) -> rusqlite::Connection {
        assert!(
            self.mariadb.is_none(),
            "this stack keeps its users in MariaDB: read them through the API"
        );
        rusqlite::Connection::open_with_flags(&self.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("open {} read-only: {e}", self.db.display()))
    }
}

impl Drop for Stack {
    /// A failing test gets every process's log with its panic message; the
    /// fields then stop the processes and remove the directory.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        } else {
            self.assert_logs_hold_no_secret();
        }
    }
}

/// docker-registry, and Apache from the sample in front of it and of a
/// service this module did not start (the Debian package's, run by its
/// unit's lines), reading that service's SQLite database `db` as the
/// sample's user: for tests of an installed service. Fields drop in order:
/// Apache first.
pub struct FrontFor {
    apache: Apache,
    registry: ChildGuard,
    pub pki: Pki,
    /// `127.0.0.1:PORT` of Apache's HTTPS registry server.
    pub registry_host: String,
    /// Apache's API virtual host's port, in front of `service`.
    pub api_port: u16,
}

impl FrontFor {
    /// Apache's error log and the registry's, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- Apache error log ---\n{}\n--- {} ---\n{}",
            self.apache.error_log(),
            self.registry.name(),
            tail(&self.registry.log(), 40)
        )
    }
}

/// Starts a [`FrontFor`] with every file under `dir`.
pub fn apache_in_front_of(dir: &Path, db: &Path, service: SocketAddr) -> FrontFor {
    tools();
    set_mode(dir, 0o711);
    let pki = Pki::create(&dir.join("pki"));
    let (registry, registry_port) = start_registry(dir);
    let (apache, ports) = start_apache(
        dir,
        &pki,
        db,
        None,
        registry_port,
        service,
        &StackOptions::default(),
    );
    FrontFor {
        apache,
        registry,
        pki,
        registry_host: format!("127.0.0.1:{}", ports.https),
        api_port: ports.api,
    }
}

/// The registry-rubber binary this package built, with no RUBBER_* variable
/// inherited from the environment running the tests.
pub fn rubber_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_registry-rubber"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("RUBBER_") {
            command.env_remove(name);
        }
    }
    command
}

fn start_registry(dir: &Path) -> (ChildGuard, u16) {
    let storage = dir.join("registry-storage");
    std::fs::create_dir_all(&storage).expect("create the registry's storage directory");
    let conf = dir.join("registry.yml");
    for attempt in 1..=PORT_ATTEMPTS {
        let port = free_port();
        let yaml = format!(
            "version: 0.1\n\
             log:\n  level: warn\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: registry-rubber-e2e\n",
            storage.display()
        );
        std::fs::write(&conf, yaml).expect("write the registry configuration");
        let mut registry = ChildGuard::spawn(
            "docker-registry",
            Command::new(&tools().docker_registry)
                .arg("serve")
                .arg(&conf),
            &dir.join(format!("registry-{attempt}.log")),
        );
        let up = poll(START_TIMEOUT, || {
            if registry.exited().is_some() {
                return Some(false);
            }
            accepts(port).then_some(true)
        });
        match up {
            Some(true) if registry.exited().is_none() => return (registry, port),
            _ if attempt < PORT_ATTEMPTS && registry.log().contains("address already in use") => {}
            _ => panic!(
                "docker-registry did not start on port {port}:\n{}",
                registry.log()
            ),
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// Starts `registry-rubber serve` alone, with no web server or registry:
/// its API on a free port, on `database_url`, with `service_env` besides;
/// its log is `dir/NAME.log`. Returns it and its API's address. For tests
/// that stop, kill and start the service themselves.
pub fn start_lone_service(
    dir: &Path,
    name: &str,
    database_url: &str,
    service_env: Vec<(&'static str, &'static str)>,
) -> (ChildGuard, SocketAddr) {
    let options = StackOptions {
        service_env,
        ..StackOptions::default()
    };
    let (service, addrs) = start_service(dir, name, database_url, &[], &options, None, None);
    let api = addrs.api.expect("a lone service listens on its API");
    (service, api)
}

/// Starts `registry-rubber serve` with its API on a free port; with
/// `htpasswd_file`, the instance keeps that file. On an htpasswd stack every
/// instance hashes with bcrypt at cost 4 (the registry checks every request)
/// unless the options say otherwise.
fn start_service(
    dir: &Path,
    name: &str,
    database_url: &str,
    database_env: &[(&'static str, String)],
    options: &StackOptions,
    htpasswd_file: Option<&Path>,
    token_door: Option<&TokenDoorFiles>,
) -> (ChildGuard, ServiceAddrs) {
    let door = options.front == Front::Nginx;
    let mut command = rubber_command();
    command
        .arg("serve")
        .env("RUBBER_LISTEN", "127.0.0.1:0")
        .env("RUBBER_LOG_FORMAT", "json")
        .env("RUBBER_DATABASE_URL", database_url)
        .envs(database_env.iter().map(|(k, v)| (*k, v.as_str())));
    if door {
        command.env("RUBBER_AUTH_LISTEN", "127.0.0.1:0");
    }
    if options.front == Front::Htpasswd {
        command
            .env("RUBBER_HASH_TYPE", "bcrypt")
            .env("RUBBER_BCRYPT_COST", "4");
    }
    if let Some(file) = htpasswd_file {
        command.env("RUBBER_HTPASSWD_FILE", file);
    }
    if let Some(files) = token_door {
        command
            .env("RUBBER_TOKEN_LISTEN", "127.0.0.1:0")
            .env("RUBBER_TOKEN_KEY", &files.signer.key)
            .env("RUBBER_TOKEN_CERT", &files.signer.cert)
            .env("RUBBER_TOKEN_SERVICE", TOKEN_SERVICE)
            .env("RUBBER_TOKEN_ISSUER", TOKEN_ISSUER);
        if let Some((cert, key)) = &files.tls {
            command
                .env("RUBBER_TOKEN_TLS_CERT", cert)
                .env("RUBBER_TOKEN_TLS_KEY", key);
        }
    }
    if let Some(hash_type) = options.hash_type {
        command.env("RUBBER_HASH_TYPE", hash_type);
    }
    command.envs(options.service_env.iter().copied());
    let mut service = ChildGuard::spawn(
        "registry-rubber",
        &mut command,
        &dir.join(format!("{name}.log")),
    );
    // An empty RUBBER_LISTEN leaves the instance without its API.
    let has_api = !options
        .service_env
        .iter()
        .any(|(name, value)| *name == "RUBBER_LISTEN" && value.is_empty());
    let addrs = poll(START_TIMEOUT, || {
        if service.exited().is_some() {
            return Some(None);
        }
        let log = service.log();
        let api = if has_api {
            Some(listening_address(&log, "api")?)
        } else {
            // No listener: the line that says it keeps the file.
            log.contains("keeping the registry's htpasswd file")
                .then_some(None)?
        };
        let auth = if door {
            Some(listening_address(&log, "auth_request")?)
        } else {
            None
        };
        let token = if token_door.is_some() {
            Some(listening_address(&log, "token")?)
        } else {
            None
        };
        Some(Some(ServiceAddrs { api, auth, token }))
    });
    match addrs {
        Some(Some(addrs)) => (service, addrs),
        _ => panic!(
            "registry-rubber serve did not report {}:\n{}",
            if door {
                "the address of its API and its auth_request door"
            } else if token_door.is_some() {
                "the address of its API and its token door"
            } else if has_api {
                "the address of its API"
            } else {
                "that it keeps the htpasswd file"
            },
            service.log()
        ),
    }
}

/// The address in the service's JSON `listening` log line of `door`
/// ("api" for the admin API, "auth_request" for the door nginx asks,
/// "token" for the token door): the service writes one such line per
/// listener.
fn listening_address(log: &str, door: &str) -> Option<SocketAddr> {
    log.lines().find_map(|line| {
        let event: Value = serde_json::from_str(line).ok()?;
        let fields = if event.get("message").is_some() {
            &event
        } else {
            event.get("fields")?
        };
        if fields["message"] != "listening" || fields["door"] != door {
            return None;
        }
        fields["address"].as_str()?.parse().ok()
    })
}

/// The directory the service keeps the registry's htpasswd file in, made as
/// the README says: owned by the service's user (root here), group the
/// registry's, mode 2750, so that the file the service renames into it
/// takes the registry's group and only the service writes there. Returns
/// the file's path; the service creates the file.
fn htpasswd_file_in(dir: &Path) -> PathBuf {
    let file_dir = dir.join("htpasswd");
    std::fs::create_dir(&file_dir).expect("create the htpasswd file's directory");
    chgrp(&file_dir, group_id(REGISTRY_GROUP));
    set_mode(&file_dir, 0o2750);
    file_dir.join("htpasswd")
}

/// Waits until the service has written the file (it does at start, even
/// with no users): a registry 2.8 that finds no file makes one of its own
/// with a default user.
fn wait_for_file(file: &Path, service: &mut ChildGuard) {
    let written = poll(START_TIMEOUT, || {
        if service.exited().is_some() {
            return Some(false);
        }
        file.is_file().then_some(true)
    });
    assert!(
        written == Some(true),
        "registry-rubber did not write {} within {START_TIMEOUT:?}:\n{}",
        file.display(),
        service.log()
    );
}

/// docker-registry from one of its samples (deploy/registry-htpasswd.yml.sample
/// or deploy/registry-token.yml.sample) with every placeholder given a
/// value (and nothing else changed): HTTPS with the test PKI's server
/// certificate, running as nobody:nogroup with its storage and a copy of
/// the TLS key of its own. `auth` gives the placeholders of its `auth:`
/// block; `copies` names files the registry's user must own a copy of
/// (placeholder, source, file name), such as the token rootcertbundle.
fn start_registry_from_sample(
    dir: &Path,
    pki: &Pki,
    sample: &str,
    auth: BTreeMap<&'static str, String>,
    copies: &[(&'static str, &Path, &str)],
) -> (ChildGuard, u16) {
    let (uid, gid) = (user_id(REGISTRY_USER), group_id(REGISTRY_GROUP));
    let storage = dir.join("registry-storage");
    let tls = dir.join("registry-tls");
    for d in [&storage, &tls] {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
    }
    let (cert, key) = (tls.join("server.crt"), tls.join("server.key"));
    let mut files = vec![
        (&pki.server_cert as &Path, cert.clone()),
        (&pki.server_key, key.clone()),
    ];
    let mut auth = auth;
    for (placeholder, from, name) in copies {
        let to = tls.join(name);
        auth.insert(placeholder, to.display().to_string());
        files.push((from, to));
    }
    for (from, to) in &files {
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
    for path in [&storage, &tls]
        .into_iter()
        .chain(files.iter().map(|(_, to)| to))
    {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {uid}:{gid} {}: {e}", path.display()));
    }
    set_mode(&key, 0o600);
    let conf = dir.join("registry.yml");
    let path = |p: &Path| p.display().to_string();
    for attempt in 1..=PORT_ATTEMPTS {
        let port = free_port();
        let mut values: BTreeMap<&str, String> = BTreeMap::from([
            ("RR_STORAGE_DIR", path(&storage)),
            ("RR_REGISTRY_ADDR", format!("127.0.0.1:{port}")),
            ("RR_HTTP_SECRET", "registry-rubber-e2e".to_owned()),
            ("RR_TLS_CERT", path(&cert)),
            ("RR_TLS_KEY", path(&key)),
        ]);
        values.extend(auth.iter().map(|(k, v)| (*k, v.clone())));
        std::fs::write(&conf, nginx::render(sample, &values))
            .expect("write the registry configuration");
        let written = std::fs::read_to_string(&conf).expect("read registry.yml back");
        nginx::assert_only_placeholders_differ(sample, &written);
        let mut registry = ChildGuard::spawn(
            "docker-registry",
            Command::new(&tools().docker_registry)
                .arg("serve")
                .arg(&conf)
                .uid(uid)
                .gid(gid),
            &dir.join(format!("registry-{attempt}.log")),
        );
        let up = poll(START_TIMEOUT, || {
            if registry.exited().is_some() {
                return Some(false);
            }
            accepts(port).then_some(true)
        });
        match up {
            Some(true) if registry.exited().is_none() => return (registry, port),
            _ if attempt < PORT_ATTEMPTS && registry.log().contains("address already in use") => {}
            _ => panic!(
                "docker-registry did not start from {} on port {port}:\n{}",
                conf.display(),
                registry.log()
            ),
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// The web server's ports; nginx uses no API port.
struct FrontPorts {
    http: u16,
    https: u16,
    api: u16,
}

/// DBDriver, DBDParams and the current-time SQL Apache uses, when they are
/// not the sample's SQLite defaults.
type Dbd = Option<(&'static str, String, &'static str)>;

fn start_apache(
    dir: &Path,
    pki: &Pki,
    db: &Path,
    dbd: Dbd,
    registry_port: u16,
    service: SocketAddr,
    options: &StackOptions,
) -> (Apache, FrontPorts) {
    // The sample's User, as the README creates it.
    apache_account();
    let sample = read_sample();
    let run_dir = dir.join("httpd-run");
    let log_dir = dir.join("httpd-logs");
    for d in [&run_dir, &log_dir] {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
    }
    let conf = dir.join("httpd.conf");
    let path = |p: &Path| p.display().to_string();
    for attempt in 1..=PORT_ATTEMPTS {
        let ports = distinct_free_ports();
        let mut values: BTreeMap<&str, String> = BTreeMap::from([
            ("RR_SERVER_ROOT", path(dir)),
            ("RR_RUN_DIR", path(&run_dir)),
            ("RR_LOG_DIR", path(&log_dir)),
            ("RR_SERVER_NAME", "127.0.0.1".to_owned()),
            ("RR_LISTEN_ADDR", "127.0.0.1".to_owned()),
            ("RR_HTTP_PORT", ports.http.to_string()),
            ("RR_HTTPS_PORT", ports.https.to_string()),
            ("RR_API_PORT", ports.api.to_string()),
            (
                "RR_PUBLIC_URL",
                format!("https://127.0.0.1:{}", ports.https),
            ),
            ("RR_TLS_CERT", path(&pki.server_cert)),
            ("RR_TLS_KEY", path(&pki.server_key)),
            ("RR_REGISTRY_BACKEND", format!("127.0.0.1:{registry_port}")),
            ("RR_API_BACKEND", service.to_string()),
            ("RR_DB", path(db)),
            ("RR_API_ALLOW", options.api_allow.to_owned()),
            ("RR_API_CLIENT_CA", path(&pki.ca_cert)),
            ("RR_API_CLIENT_OU", CLIENT_OU.to_owned()),
            (
                "RR_API_CLIENT_CNS",
                CLIENT_CNS.map(|cn| format!("'{cn}'")).join(", "),
            ),
        ]);
        if let Some((driver, params, now)) = &dbd {
            values.insert("RR_DBD_DRIVER", (*driver).to_owned());
            values.insert("RR_DBD_PARAMS", params.clone());
            values.insert("RR_DBD_NOW", (*now).to_owned());
        }
        std::fs::write(&conf, render(&sample, &values, options.mtls)).expect("write httpd.conf");
        let written = std::fs::read_to_string(&conf).expect("read httpd.conf back");
        assert_only_defines_differ(&sample, &written, options.mtls);
        match Apache::start(
            &conf,
            &run_dir.join("httpd.pid"),
            &log_dir.join("error.log"),
            &[ports.http, ports.https, ports.api],
        ) {
            Ok(apache) => return (apache, ports),
            Err(StartError::PortTaken(_)) if attempt < PORT_ATTEMPTS => {}
            Err(StartError::PortTaken(message) | StartError::Failed(message)) => {
                panic!("Apache did not start from {}:\n{message}", conf.display())
            }
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// nginx from deploy/nginx.conf.sample with every placeholder given a value
/// (and nothing else changed), all its files under `dir/nginx`: the PID
/// file, the logs, and the temporary directories its www-data workers write
/// to (nginx creates them and hands them to that user).
fn start_nginx(dir: &Path, pki: &Pki, registry_port: u16, door: SocketAddr) -> (Nginx, FrontPorts) {
    let sample = nginx::read_sample();
    let prefix = dir.join("nginx");
    let run_dir = prefix.join("run");
    let log_dir = prefix.join("logs");
    let temp_dir = prefix.join("temp");
    for d in [&prefix, &run_dir, &log_dir, &temp_dir] {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
        set_mode(d, 0o755);
    }
    let conf = prefix.join("nginx.conf");
    let path = |p: &Path| p.display().to_string();
    for attempt in 1..=PORT_ATTEMPTS {
        let ports = distinct_free_ports();
        let values: BTreeMap<&str, String> = BTreeMap::from([
            ("RR_NGINX_USER", NGINX_USER.to_owned()),
            ("RR_RUN_DIR", path(&run_dir)),
            ("RR_LOG_DIR", path(&log_dir)),
            ("RR_TEMP_DIR", path(&temp_dir)),
            ("RR_SERVER_NAME", "127.0.0.1".to_owned()),
            ("RR_LISTEN_ADDR", "127.0.0.1".to_owned()),
            ("RR_HTTP_PORT", ports.http.to_string()),
            ("RR_HTTPS_PORT", ports.https.to_string()),
            (
                "RR_PUBLIC_URL",
                format!("https://127.0.0.1:{}", ports.https),
            ),
            ("RR_TLS_CERT", path(&pki.server_cert)),
            ("RR_TLS_KEY", path(&pki.server_key)),
            ("RR_REGISTRY_BACKEND", format!("127.0.0.1:{registry_port}")),
            ("RR_AUTH_BACKEND", door.to_string()),
        ]);
        std::fs::write(&conf, nginx::render(&sample, &values)).expect("write nginx.conf");
        let written = std::fs::read_to_string(&conf).expect("read nginx.conf back");
        nginx::assert_only_placeholders_differ(&sample, &written);
        match Nginx::start(
            &prefix,
            &conf,
            &run_dir.join("nginx.pid"),
            &log_dir.join("error.log"),
            &[ports.http, ports.https],
        ) {
            Ok(nginx) => return (nginx, ports),
            Err(StartError::PortTaken(_)) if attempt < PORT_ATTEMPTS => {}
            Err(StartError::PortTaken(message) | StartError::Failed(message)) => {
                panic!("nginx did not start from {}:\n{message}", conf.display())
            }
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// The SQLite database as the sample's WAL permission rule wants it: the
/// directory setgid and writable by the group registry-rubber, which Apache's
/// user joins, as the systemd unit creates it; then the database in it, 0660
/// and in that group.
pub fn sqlite_database(dir: &Path) -> PathBuf {
    let db_dir = dir.join("state");
    std::fs::create_dir(&db_dir).expect("create the database directory");
    let gid = apache_account().database_gid;
    chgrp(&db_dir, gid);
    set_mode(&db_dir, 0o2770);
    let db = db_dir.join("users.sqlite");
    let database_url = format!("sqlite://{}", db.display());
    let migrate = rubber_command()
        .args(["--database-url", &database_url, "migrate"])
        .output()
        .expect("run registry-rubber migrate");
    assert!(
        migrate.status.success(),
        "registry-rubber migrate failed: {}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let created = std::fs::metadata(&db).expect("migrate created the database");
    assert_eq!(
        created.permissions().mode() & 0o7777,
        0o660,
        "registry-rubber migrate creates the database 0660"
    );
    chgrp(&db, gid);
    set_mode(&db, 0o660);
    db
}

/// What a MySQL stack's database is: no file, a URL, the password file's
/// variable, the server, and Apache's DBD values.
type MysqlDatabase = (
    PathBuf,
    Option<String>,
    Vec<(&'static str, String)>,
    Option<MariaDb>,
    Dbd,
);

/// The MySQL stacks' database passwords: the service's and Apache's.
const SERVICE_PASSWORD: &str = "e2e-service-pw-4c1d";
const APACHE_PASSWORD: &str = "e2e-apache-pw-9b7e";

/// A MariaDB server of the stack's own with the README's set-up: a database,
/// the service's account (password in a file) with the grants it documents,
/// the schema made by `registry-rubber migrate`, and Apache's read-only
/// account on the users table (unused behind nginx, where the service's door
/// reads the table).
fn mysql_database(dir: &Path, front: Front) -> MysqlDatabase {
    assert!(
        front != Front::Apache || tools_has_apr_mysql_driver(),
        "the APR MySQL driver apr_dbd_mysql is missing (Debian package libaprutil1-dbd-mysql)"
    );
    let server = MariaDb::start();
    server.sql(&format!(
        "CREATE DATABASE registry_rubber;
         CREATE USER 'registry_rubber'@'127.0.0.1' IDENTIFIED BY '{SERVICE_PASSWORD}';
         GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX ON registry_rubber.* TO 'registry_rubber'@'127.0.0.1';
         CREATE USER 'registry_apache'@'127.0.0.1' IDENTIFIED BY '{APACHE_PASSWORD}';"
    ));
    let password_file = dir.join("database-password");
    std::fs::write(&password_file, format!("{SERVICE_PASSWORD}\n"))
        .expect("write the database password file");
    set_mode(&password_file, 0o400);
    let url = format!(
        "mysql://registry_rubber@127.0.0.1:{}/registry_rubber",
        server.port()
    );
    let env = vec![(
        "RUBBER_DATABASE_PASSWORD_FILE",
        password_file.display().to_string(),
    )];
    let migrate = rubber_command()
        .args(["--database-url", &url, "migrate"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run registry-rubber migrate");
    assert!(
        migrate.status.success(),
        "registry-rubber migrate failed: {}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    // A table grant needs the table: after migrate.
    server.sql("GRANT SELECT ON registry_rubber.users TO 'registry_apache'@'127.0.0.1';");
    let dbd = (
        "mysql",
        format!(
            "host=127.0.0.1 port={} user=registry_apache pass={APACHE_PASSWORD} dbname=registry_rubber",
            server.port()
        ),
        "UNIX_TIMESTAMP()",
    );
    (
        dir.join("no-sqlite-file"),
        Some(url),
        env,
        Some(server),
        Some(dbd),
    )
}

/// Whether `/usr/lib/<triplet>/apr-util-1/apr_dbd_mysql*.so` exists.
fn tools_has_apr_mysql_driver() -> bool {
    let Ok(entries) = std::fs::read_dir("/usr/lib") else {
        return false;
    };
    entries.flatten().any(|entry| {
        std::fs::read_dir(entry.path().join("apr-util-1")).is_ok_and(|files| {
            files
                .flatten()
                .any(|f| f.file_name().to_string_lossy().starts_with("apr_dbd_mysql"))
        })
    })
}

fn distinct_free_ports() -> FrontPorts {
    loop {
        let (http, https, api) = (free_port(), free_port(), free_port());
        if http != https && https != api && http != api {
            return FrontPorts { http, https, api };
        }
    }
}

fn chgrp(path: &Path, gid: u32) {
    std::os::unix::fs::chown(path, None, Some(gid))
        .unwrap_or_else(|e| panic!("chgrp {gid} {}: {e}", path.display()));
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
