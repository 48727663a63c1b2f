//! The API over HTTPS: client certificates, subject and address allowlists,
//! POST-only mode, and certificate rotation without a restart. Certificates
//! are made here; clients are rustls and curl.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{spawn_app_with, Served, TestApp};
use registry_rubber::access::parse_cidrs;

/// A certificate and its key, as PEM and DER.
struct Issued {
    cert_pem: String,
    key_pem: String,
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Issued {
    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }
}

fn ca(name: &str) -> Issued {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert,
        key,
    }
}

fn issue(by: &Issued, sans: &[&str], cn: &str, ou: Option<&str>, expired: bool) -> Issued {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(ou) = ou {
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, ou);
    }
    if expired {
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
        params.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &by.cert, &by.key).unwrap();
    Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert,
        key,
    }
}

/// A CA, a server certificate for 127.0.0.1, and their files.
struct Pki {
    dir: tempfile::TempDir,
    ca: Issued,
    server: Issued,
}

impl Pki {
    fn new() -> Self {
        let ca = ca("registry-rubber test CA");
        let server = issue(&ca, &["127.0.0.1"], "registry-rubber", None, false);
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
            ca,
            server,
        };
        pki.write("ca.pem", &pki.ca.cert_pem);
        pki.write("server.pem", &pki.server.cert_pem);
        pki.write("server.key", &pki.server.key_pem);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn client(&self, name: &str, issued: &Issued) -> (PathBuf, PathBuf) {
        (
            self.write(&format!("{name}.pem"), &issued.cert_pem),
            self.write(&format!("{name}.key"), &issued.key_pem),
        )
    }
}

async fn spawn_tls(
    pki: &Pki,
    mtls: bool,
    configure: impl FnOnce(&mut registry_rubber::config::Settings),
) -> TestApp {
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    spawn_app_with(move |s| {
        s.api.listener.tls_cert = Some(cert);
        s.api.listener.tls_key = Some(key);
        if mtls {
            s.api.listener.tls_client_ca = Some(ca);
        }
        configure(s);
    })
    .await
}

/// The outcome of one HTTPS request: the status and body, or why there was
/// none, and the certificate the server showed.
struct Reply {
    status: Option<u16>,
    body: String,
    error: Option<String>,
    server_cert: Option<CertificateDer<'static>>,
}

/// An HTTPS connection, its handshake done, with the certificate the
/// server showed; or why there is none.
type Connected = Result<
    (
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        Option<CertificateDer<'static>>,
    ),
    String,
>;

/// One HTTPS request with rustls, trusting `ca`, presenting `client` if given.
async fn https(addr: SocketAddr, ca: &Issued, client: Option<&Issued>, request: &str) -> Reply {
    request_on(connect(addr, ca, client).await, request).await
}

/// Opens a connection and completes the TLS handshake, trusting `ca`,
/// presenting `client` if given.
async fn connect(addr: SocketAddr, ca: &Issued, client: Option<&Issued>) -> Connected {
    registry_rubber::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match client {
        Some(c) => builder
            .with_client_auth_cert(
                vec![c.der()],
                PrivateKeyDer::try_from(c.key.serialize_der()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let server_cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned());
    Ok((stream, server_cert))
}

/// Sends `request` on a connection `connect` opened and reads the answer.
async fn request_on(connected: Connected, request: &str) -> Reply {
    let mut reply = Reply {
        status: None,
        body: String::new(),
        error: None,
        server_cert: None,
    };
    let mut stream = match connected {
        Ok((stream, server_cert)) => {
            reply.server_cert = server_cert;
            stream
        }
        Err(e) => {
            reply.error = Some(e);
            return reply;
        }
    };
    let mut out = Vec::new();
    let sent = stream.write_all(request.as_bytes()).await;
    let read = stream.read_to_end(&mut out).await;
    if let Err(e) = sent.and(read) {
        reply.error = Some(e.to_string());
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    reply.status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    reply.body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    reply
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
}

fn post_form(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn json(reply: &Reply) -> serde_json::Value {
    serde_json::from_str(&reply.body).unwrap_or_else(|_| panic!("not JSON: {}", reply.body))
}

#[tokio::test]
async fn https_serves_the_api_and_plain_http_gets_nothing() {
    let pki = Pki::new();
    let app = spawn_tls(&pki, false, |_| {}).await;
    let r = https(app.addr, &pki.ca, None, &get("/add?user=tls-user&passwd=p")).await;
    assert_eq!(r.status, Some(200), "{:?} {}", r.error, r.body);
    assert_eq!(json(&r)["msg"], "Added user tls-user");
    assert_eq!(r.server_cert, Some(pki.server.der()));
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let (status, _, _) = app
        .raw(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    assert_ne!(status, 200);
}

#[tokio::test]
async fn mutual_tls_refuses_a_missing_foreign_or_expired_certificate() {
    let pki = Pki::new();
    let app = spawn_tls(&pki, true, |_| {}).await;
    let good = issue(&pki.ca, &[], "ci-runner", Some("pipelines"), false);
    let r = https(
        app.addr,
        &pki.ca,
        Some(&good),
        &get("/add?user=mtls-ok&passwd=p"),
    )
    .await;
    assert_eq!(r.status, Some(200), "{:?}", r.error);

    let stranger_ca = ca("another CA");
    let foreign = issue(&stranger_ca, &[], "ci-runner", Some("pipelines"), false);
    let expired = issue(&pki.ca, &[], "ci-runner", Some("pipelines"), true);
    for (what, client) in [
        ("no certificate", None),
        ("another CA", Some(&foreign)),
        ("expired", Some(&expired)),
    ] {
        let r = https(
            app.addr,
            &pki.ca,
            client,
            &get("/add?user=mtls-refused&passwd=p"),
        )
        .await;
        assert_eq!(
            r.status, None,
            "{what}: a refused client gets no HTTP answer"
        );
        assert!(r.error.is_some(), "{what}: the TLS layer refused it");
    }
    assert!(app.stored_hash("mtls-refused").await.is_none());
    assert!(app.stored_hash("mtls-ok").await.is_some());
}

#[tokio::test]
async fn allowed_subjects_decide_who_may_call_and_the_subject_is_audited() {
    let pki = Pki::new();
    let app = spawn_tls(&pki, true, |s| {
        s.api.listener.allowed_subjects = vec![
            "OU=pipelines".parse().unwrap(),
            "OU=ops+CN=deployer".parse().unwrap(),
        ];
    })
    .await;
    let pipeline = issue(&pki.ca, &[], "ci-runner-7", Some("pipelines"), false);
    let deployer = issue(&pki.ca, &[], "deployer", Some("ops"), false);
    let intern = issue(&pki.ca, &[], "intern", Some("ops"), false);
    let r = https(
        app.addr,
        &pki.ca,
        Some(&pipeline),
        &post_form("/add", "user=subject-ok&passwd=p"),
    )
    .await;
    assert_eq!(r.status, Some(200), "{}", r.body);
    let r = https(
        app.addr,
        &pki.ca,
        Some(&deployer),
        &get("/remove?user=subject-ok"),
    )
    .await;
    assert_eq!(r.status, Some(200), "{}", r.body);
    let r = https(
        app.addr,
        &pki.ca,
        Some(&intern),
        &get("/add?user=subject-no&passwd=p"),
    )
    .await;
    assert_eq!(r.status, Some(403), "{}", r.body);
    let v = json(&r);
    assert_eq!(v["status_code"], 403);
    assert_eq!(v["response"], "ERROR");
    assert!(
        v.get("passwd").is_none(),
        "a refused client never gets a credential"
    );
    assert!(app.stored_hash("subject-no").await.is_none());
    let events = app.logs();
    let subject = |e: &crate::helpers::LogEvent, parts: &[&str]| {
        e.field("subject").is_some_and(|s| {
            let rdns: Vec<&str> = s.split(',').map(str::trim).collect();
            parts.iter().all(|p| rdns.contains(p))
        })
    };
    assert!(
        events.iter().any(|e| e.is_audit(&[("user", "subject-ok")])
            && subject(e, &["CN=ci-runner-7", "OU=pipelines"])),
        "the audit event names the certificate subject: {events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.is_request(&[("status", "403")]) && subject(e, &["CN=intern"])),
        "{events:#?}"
    );
}

#[tokio::test]
async fn an_address_outside_allow_from_gets_403_and_changes_nothing() {
    let app =
        spawn_app_with(|s| s.api.listener.allow_from = parse_cidrs("10.0.0.0/8").unwrap()).await;
    let a = app.get("/add?user=outsider&passwd=p").await;
    a.assert_envelope("add", 403, "forbidden: client address not in allow_from");
    app.get("/healthz").await.assert_error("healthz", 403);
    assert!(app.stored_hash("outsider").await.is_none());
}

/// Addresses the door will refuse get their 403 from connection slots of
/// their own: however many connections they hold, the door's callers still
/// get in. 127.0.0.1 is the stranger here, ::1 the caller.
#[tokio::test]
async fn connections_from_outside_allow_from_never_take_the_callers_slots() {
    use registry_rubber::doors::STRANGER_SLOTS;
    let app = spawn_app_with(|s| {
        s.api.listener.listen = Some("[::]:0".parse().unwrap());
        s.api.listener.allow_from = parse_cidrs("::1/128").unwrap();
        s.api.listener.max_connections = 4;
    })
    .await;
    let port = app.addr.port();
    let client = reqwest::Client::new();
    let stranger = client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 403, "a stranger still hears why");
    // More idle connections from the stranger than the door holds in all.
    let mut held = Vec::new();
    for _ in 0..STRANGER_SLOTS + 8 {
        held.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    // Every one of them accepted (or closed) before the caller comes.
    let mut closed = 0;
    for conn in &mut held {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(std::time::Duration::from_millis(20), conn.read(&mut byte)).await
        {
            closed += 1;
        }
    }
    assert!(
        closed >= 8,
        "strangers beyond their slots are closed: {closed}"
    );
    for _ in 0..3 {
        let caller = client
            .get(format!("http://[::1]:{port}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(caller.status(), 200, "the caller is let in");
    }
    drop(held);
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let app =
        spawn_app_with(|s| s.api.listener.allow_from = parse_cidrs("203.0.113.0/24").unwrap())
            .await;
    let forwarded = |app: &TestApp| {
        app.client
            .get(app.url("/add?user=fwd&passwd=p"))
            .header("x-forwarded-for", "203.0.113.9")
            .send()
    };
    assert_eq!(
        forwarded(&app).await.unwrap().status(),
        403,
        "ignored without trusted_proxies"
    );
    let app = spawn_app_with(|s| {
        s.api.listener.allow_from = parse_cidrs("203.0.113.0/24").unwrap();
        s.api.listener.trusted_proxies = parse_cidrs("127.0.0.1").unwrap();
    })
    .await;
    assert_eq!(
        forwarded(&app).await.unwrap().status(),
        200,
        "believed from a trusted proxy"
    );
    assert!(app
        .logs()
        .iter()
        .any(|e| e.is_audit(&[("user", "fwd"), ("caller", "203.0.113.9")])));
}

/// Behind a trusted proxy on loopback, with the proxy's own address
/// allowed (the documented set-up), an X-Forwarded-For that cannot be read
/// never makes the caller the proxy.
#[tokio::test]
async fn an_unreadable_forwarded_address_is_refused_not_taken_for_the_proxy() {
    let app = spawn_app_with(|s| {
        s.api.listener.trusted_proxies = parse_cidrs("127.0.0.1").unwrap();
    })
    .await;
    let mut n = 0;
    for lines in [
        vec![&b"198.51.100.7"[..]],
        vec![b"\xff"],
        vec![b"10.0.0.1\x80"],
        vec![b"198.51.100.7:4444"],
        vec![b"[2001:db8::1]"],
        vec![b"198.51.100.7, unknown"],
        vec![b"127.0.0.1", b"198.51.100.7"],
    ] {
        n += 1;
        let user = format!("smuggled{n}");
        let mut request =
            format!("GET /add?user={user}&passwd=p HTTP/1.1\r\nHost: localhost\r\n").into_bytes();
        for line in &lines {
            request.extend_from_slice(b"X-Forwarded-For: ");
            request.extend_from_slice(line);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"Connection: close\r\n\r\n");
        let (status, head, _) = app.raw(&request).await;
        assert_eq!(status, 403, "{lines:?}: {head}");
        assert!(app.stored_hash(&user).await.is_none());
    }
    // Loopback itself, and loopback forwarded, still get in.
    app.get("/add?user=local&passwd=p")
        .await
        .assert_error("add", 200);
}

#[tokio::test]
async fn post_only_mode_refuses_mutations_over_get() {
    let app = spawn_app_with(|s| s.api.allow_get_mutations = false).await;
    for path in [
        "/add?user=u&passwd=p",
        "/remove?user=u",
        "/delete?user=u",
        "/renew?user=u",
        "/cleanup",
    ] {
        let action =
            registry_rubber::doors::api::envelope::Action::of_path(path.split('?').next().unwrap())
                .name();
        let a = app.get(path).await;
        a.assert_envelope(
            action,
            405,
            "method not allowed; use POST: this service refuses changes over GET",
        );
    }
    assert!(app.stored_hash("u").await.is_none());
    app.post_form("/add", &[("user", "u"), ("passwd", "p")])
        .await
        .assert_envelope("add", 200, "Added user u");
    app.get("/list").await.assert_error("list", 200);
    app.get("/healthz").await.assert_error("healthz", 200);
}

#[tokio::test]
async fn reload_swaps_the_certificate_and_refuses_a_bad_one() {
    let pki = Pki::new();
    let app = spawn_tls(&pki, false, |_| {}).await;
    let tls = app.tls.clone().unwrap();
    let before = https(app.addr, &pki.ca, None, &get("/healthz")).await;
    assert_eq!(before.server_cert, Some(pki.server.der()));

    let rotated = issue(
        &pki.ca,
        &["127.0.0.1"],
        "registry-rubber-rotated",
        None,
        false,
    );
    pki.write("server.pem", &rotated.cert_pem);
    pki.write("server.key", &rotated.key_pem);
    tls.reload().unwrap();
    let after = https(app.addr, &pki.ca, None, &get("/healthz")).await;
    assert_eq!(after.status, Some(200));
    assert_eq!(after.server_cert, Some(rotated.der()));

    // A key that does not match, or an empty file: refused, the old pair stays.
    let other = issue(&pki.ca, &["127.0.0.1"], "x", None, false);
    pki.write("server.key", &other.key_pem);
    let err = tls.reload().unwrap_err().to_string();
    assert!(err.contains("does not match"), "{err}");
    pki.write("server.pem", "");
    assert!(tls
        .reload()
        .unwrap_err()
        .to_string()
        .contains("no PEM certificate"));
    let still = https(app.addr, &pki.ca, None, &get("/healthz")).await;
    assert_eq!(still.server_cert, Some(rotated.der()));
}

#[test]
fn bad_tls_files_are_refused_at_start_with_the_reason() {
    let pki = Pki::new();
    let other = issue(&pki.ca, &["127.0.0.1"], "x", None, false);
    let mismatched = pki.write("other.key", &other.key_pem);
    let empty = pki.write("empty.pem", "");
    let missing = pki.path("missing.pem");
    let cert = pki.path("server.pem");
    let key = pki.path("server.key");
    let cases: Vec<(&Path, &Path, &str)> = vec![
        (&missing, &key, "cannot read tls_cert"),
        (&empty, &key, "no PEM certificate"),
        (&cert, &empty, "no PEM private key"),
        (&cert, &mismatched, "does not match"),
    ];
    for (cert, key, reason) in cases {
        let files = registry_rubber::tls::TlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            client_ca: None,
            crl: None,
        };
        let err = registry_rubber::tls::TlsState::load(files)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains(reason), "{reason}: {err}");
    }
}

#[tokio::test]
async fn curl_with_a_client_certificate_mints_a_credential() {
    let pki = Pki::new();
    let app = spawn_tls(&pki, true, |s| {
        s.api.listener.allowed_subjects = vec!["OU=pipelines".parse().unwrap()]
    })
    .await;
    let client = issue(&pki.ca, &[], "ci-runner", Some("pipelines"), false);
    let (cert, key) = pki.client("pipeline", &client);
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(pki.path("ca.pem"))
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .args(["-d", "user=curl-user", "-d", "ttl=60"])
        .arg(format!("https://{}/add", app.addr))
        .output()
        .await
        .expect("curl runs (apt-get install curl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["msg"], "Added user curl-user");
    let passwd = v["passwd"].as_str().unwrap();
    assert!(registry_rubber::htpasswd::verify(
        passwd,
        &app.stored_hash("curl-user").await.unwrap()
    ));
    // Without the client certificate curl is refused by the TLS layer.
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(pki.path("ca.pem"))
        .arg(format!("https://{}/healthz", app.addr))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
}

/// The real binary, a real SIGHUP: a new connection sees the new certificate,
/// and a request on a connection opened before the reload still completes.
#[tokio::test]
async fn sighup_reloads_the_certificate_of_the_running_binary() {
    let pki = Pki::new();
    let mut served = Served::start(
        pki.dir.path(),
        &[
            "--tls-cert".as_ref(),
            pki.path("server.pem").as_os_str(),
            "--tls-key".as_ref(),
            pki.path("server.key").as_os_str(),
        ],
    );
    let listening: serde_json::Value =
        serde_json::from_str(&served.wait_for("\"listening\"")).unwrap();
    assert_eq!(listening["scheme"], "https");
    let addr: SocketAddr = listening["address"].as_str().unwrap().parse().unwrap();
    let before = https(addr, &pki.ca, None, &get("/healthz")).await;
    assert_eq!(before.server_cert, Some(pki.server.der()));
    // Opened, its handshake done, before the reload; its request comes after.
    let opened_before = connect(addr, &pki.ca, None).await;

    let rotated = issue(&pki.ca, &["127.0.0.1"], "rotated", None, false);
    pki.write("server.pem", &rotated.cert_pem);
    pki.write("server.key", &rotated.key_pem);
    served.hup();
    served.wait_for("SIGHUP: reloaded");
    let after = https(addr, &pki.ca, None, &get("/healthz")).await;
    assert_eq!(after.status, Some(200));
    assert_eq!(after.server_cert, Some(rotated.der()));
    let on_old = request_on(opened_before, &get("/healthz")).await;
    assert_eq!(
        on_old.status,
        Some(200),
        "{:?} {}",
        on_old.error,
        on_old.body
    );
    assert_eq!(
        on_old.server_cert,
        Some(pki.server.der()),
        "the connection kept the certificate of its handshake"
    );

    // A broken file on the next SIGHUP is refused and the process keeps serving.
    pki.write("server.key", "not a key");
    served.hup();
    served.wait_for("SIGHUP: reload refused");
    let still = https(addr, &pki.ca, None, &get("/healthz")).await;
    assert_eq!(still.status, Some(200));
    assert_eq!(still.server_cert, Some(rotated.der()));
    assert!(served.running(), "still running");
}

/// The real binary reads its configuration file again on SIGHUP: a new
/// allowlist is in force at once, a changed key that needs a restart is
/// named, and a file that no longer parses changes nothing.
#[tokio::test]
async fn sighup_reads_the_configuration_file_again() {
    let pki = Pki::new();
    let config = pki.path("rubber.toml");
    let write_config = |allow_from: &str, sweep_interval: u32| {
        std::fs::write(
            &config,
            format!("allow_from = [{allow_from}]\nsweep_interval = {sweep_interval}\n"),
        )
        .unwrap();
    };
    write_config("\"127.0.0.1\"", 60);
    let mut served = Served::start(pki.dir.path(), &["--config".as_ref(), config.as_os_str()]);
    let listening: serde_json::Value =
        serde_json::from_str(&served.wait_for("\"listening\"")).unwrap();
    let addr: SocketAddr = listening["address"].as_str().unwrap().parse().unwrap();
    let healthz = || async move {
        reqwest::get(format!("http://{addr}/healthz"))
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(healthz().await, 200);

    write_config("\"10.0.0.0/8\"", 30);
    served.hup();
    let waiting = served.wait_for("next restart");
    assert!(waiting.contains("sweep_interval"), "{waiting}");
    assert!(!waiting.contains("allow_from"), "{waiting}");
    served.wait_for("SIGHUP: reloaded");
    assert_eq!(healthz().await, 403, "the new allowlist is in force");

    std::fs::write(&config, "allow_from = [\"127.0.0.1\"\n").unwrap();
    served.hup();
    served.wait_for("does not load");
    assert_eq!(healthz().await, 403, "the allowlist in force stays");

    write_config("\"127.0.0.1\"", 30);
    served.hup();
    served.wait_for("SIGHUP: reloaded");
    assert_eq!(healthz().await, 200);
    assert!(served.running(), "still running");
}

/// A web page cannot use a browser against the API: not by rebinding its
/// own name to this address (the Host is not one of the API's names), nor
/// from its own origin (Origin or Sec-Fetch-Site say another site).
#[tokio::test]
async fn requests_a_web_page_could_make_are_refused() {
    let app = spawn_app_with(|s| s.api.allowed_hosts = vec!["api.example.com".into()]).await;
    let port = app.addr.port();
    let request = |user: &str, extra: &str| {
        format!("GET /add?user={user}&passwd=p HTTP/1.1\r\n{extra}Connection: close\r\n\r\n")
            .into_bytes()
    };
    let cases: &[(&str, &str, u16)] = &[
        ("rebound", "Host: evil.example:5080\r\n", 421),
        ("rebound2", "Host: evil.example\r\n", 421),
        ("nohost", "", 421),
        (
            "page",
            &format!("Host: 127.0.0.1:{port}\r\nOrigin: https://evil.example\r\n"),
            403,
        ),
        (
            "nullorigin",
            &format!("Host: 127.0.0.1:{port}\r\nOrigin: null\r\n"),
            403,
        ),
        (
            "crosssite",
            &format!("Host: 127.0.0.1:{port}\r\nSec-Fetch-Site: cross-site\r\n"),
            403,
        ),
        (
            "samesite",
            &format!("Host: 127.0.0.1:{port}\r\nSec-Fetch-Site: same-site\r\n"),
            403,
        ),
    ];
    for (user, extra, status) in cases {
        let (got, head, body) = app.raw(&request(user, extra)).await;
        assert_eq!(got, *status, "{user}: {head}");
        assert!(body.contains("\"status_code\""), "an envelope: {body}");
        assert!(app.stored_hash(user).await.is_none(), "{user} was written");
    }
    let allowed: &[(&str, String)] = &[
        ("direct", format!("Host: 127.0.0.1:{port}\r\n")),
        ("local", format!("Host: localhost:{port}\r\n")),
        ("v6", format!("Host: [::1]:{port}\r\n")),
        ("named", "Host: API.example.com\r\n".to_owned()),
        ("typed", format!("Host: 127.0.0.1:{port}\r\nSec-Fetch-Site: none\r\n")),
        ("same", format!("Host: localhost:{port}\r\nOrigin: http://localhost:{port}\r\nSec-Fetch-Site: same-origin\r\n")),
    ];
    for (user, extra) in allowed {
        let (got, head, _) = app.raw(&request(user, extra)).await;
        assert_eq!(got, 200, "{user}: {head}");
        assert!(app.stored_hash(user).await.is_some(), "{user}");
    }
}

/// A reload puts in force new allowlists, subjects and revocation lists, as
/// SIGHUP does with the configuration read again.
#[tokio::test]
async fn a_reload_puts_new_allowlists_subjects_and_revocation_lists_in_force() {
    let pki = Pki::new();
    let app = spawn_tls(&pki, true, |s| {
        s.api.listener.allowed_subjects = vec!["OU=pipelines".parse().unwrap()];
    })
    .await;
    let with_serial = |cn: &str, ou: &str, serial: u8| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, ou);
        params.serial_number = Some(rcgen::SerialNumber::from(vec![serial]));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &pki.ca.cert, &pki.ca.key).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert,
            key,
        }
    };
    let revoked = with_serial("ci-old", "pipelines", 7);
    let kept = with_serial("ci-new", "pipelines", 8);
    let ops = with_serial("operator", "ops", 9);
    for (client, expected) in [(&revoked, 200), (&kept, 200), (&ops, 403)] {
        let r = https(app.addr, &pki.ca, Some(client), &get("/healthz")).await;
        assert_eq!(r.status, Some(expected), "{:?}", r.error);
    }
    let crl = rcgen::CertificateRevocationListParams {
        this_update: time::OffsetDateTime::now_utc() - time::Duration::minutes(1),
        next_update: time::OffsetDateTime::now_utc() + time::Duration::days(1),
        crl_number: rcgen::SerialNumber::from(vec![1]),
        issuing_distribution_point: None,
        revoked_certs: vec![rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from(vec![7]),
            revocation_time: time::OffsetDateTime::now_utc() - time::Duration::minutes(1),
            reason_code: Some(rcgen::RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&pki.ca.cert, &pki.ca.key)
    .unwrap();
    let crl_path = pki.write("clients.crl", &crl.pem().unwrap());
    let mut settings = app.settings.clone();
    settings.api.listener.tls_crl = Some(crl_path);
    settings.api.listener.allowed_subjects = vec!["OU=ops".parse().unwrap()];
    for (door, what, result) in app.reloader.apply(Some(&settings)) {
        assert!(result.is_ok(), "{door} {what}: {result:?}");
    }
    let r = https(app.addr, &pki.ca, Some(&revoked), &get("/healthz")).await;
    assert!(
        r.status.is_none(),
        "a revoked certificate fails the handshake"
    );
    let r = https(app.addr, &pki.ca, Some(&kept), &get("/healthz")).await;
    assert_eq!(r.status, Some(403), "no longer an allowed subject");
    let r = https(app.addr, &pki.ca, Some(&ops), &get("/healthz")).await;
    assert_eq!(r.status, Some(200), "{:?}", r.error);
    // The address allowlist too; and a bad file is refused, what is in
    // force staying.
    settings.api.listener.allow_from = parse_cidrs("10.0.0.0/8").unwrap();
    settings.api.listener.tls_cert = Some(pki.write("broken.pem", "not a certificate"));
    let results = app.reloader.apply(Some(&settings));
    assert!(
        results
            .iter()
            .any(|(_, what, r)| what.starts_with("TLS") && r.is_err()),
        "{results:?}"
    );
    let r = https(app.addr, &pki.ca, Some(&ops), &get("/healthz")).await;
    assert_eq!(r.status, Some(403), "the new allowlist is in force");
    assert_eq!(
        r.server_cert,
        Some(pki.server.der()),
        "the old certificate stays"
    );
}

/// A caller named in the callers file by its certificate subject has the
/// rights given there; a certificate the file does not name gets 401.
#[tokio::test]
async fn a_certificate_names_a_caller_of_the_callers_file() {
    let pki = Pki::new();
    let callers = pki.write(
        "callers.toml",
        "[[caller]]\nname = \"deployer\"\nsubject = \"OU=ops+CN=deployer\"\nactions = [\"add\", \"list\"]\nusers = \"deploy-\"\n",
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&callers, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let app = spawn_tls(&pki, true, |s| s.api.callers_file = Some(callers)).await;
    let deployer = issue(&pki.ca, &[], "deployer", Some("ops"), false);
    let runner = issue(&pki.ca, &[], "ci-runner", Some("pipelines"), false);
    let r = https(
        app.addr,
        &pki.ca,
        Some(&deployer),
        &post_form("/add", "user=deploy-1&passwd=p"),
    )
    .await;
    assert_eq!(r.status, Some(200), "{:?} {}", r.error, r.body);
    let r = https(
        app.addr,
        &pki.ca,
        Some(&deployer),
        &post_form("/add", "user=ci-1&passwd=p"),
    )
    .await;
    assert_eq!(r.status, Some(403), "{}", r.body);
    // A user of another name, which the deployer's listing must not show.
    let t0 = crate::helpers::T0;
    app.db
        .execute(&format!(
            "INSERT INTO users (username, password, created_at, expires_at) VALUES ('other-1', 'x', {t0}, {})",
            t0 + 3600
        ))
        .await;
    let r = https(app.addr, &pki.ca, Some(&deployer), &get("/list")).await;
    assert_eq!(r.status, Some(200), "{}", r.body);
    let users: Vec<String> = json(&r)["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(users, ["deploy-1"]);
    let r = https(
        app.addr,
        &pki.ca,
        Some(&runner),
        &post_form("/add", "user=deploy-2&passwd=p"),
    )
    .await;
    assert_eq!(r.status, Some(401), "{}", r.body);
    assert!(app.db.stored_hash("deploy-2").await.is_none());
    assert!(app.db.stored_hash("ci-1").await.is_none());
}
