//! Slow clients (slowloris) against the Apache sample: mod_reqtimeout
//! disconnects them, while a slow but steady upload goes through.
//!
//! The sample gives the TLS handshake 10 s, the request headers 20 s (40 s at
//! most) and a request body 20 s plus 1 s per 500 bytes received; without
//! mod_reqtimeout a stalled read would wait Timeout (60 s), and a trickling
//! client for ever. The tests wait up to [`CUT_OFF_LIMIT`] for a connection
//! to be closed: far above what the sample allows, below Timeout.

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::support::pki::Pki;
use crate::support::{unique, Creds, Stack};

/// How long a stalled connection may stay open before the test fails.
const CUT_OFF_LIMIT: Duration = Duration::from_secs(45);
/// Less than the shortest limit the sample sets (the handshake's 10 s): a
/// connection closed sooner was closed for another reason.
const NOT_BEFORE: Duration = Duration::from_secs(5);
/// How often a trickling client sends one more byte.
const TRICKLE_EVERY: Duration = Duration::from_secs(2);
/// How long one read waits before the client looks at the clock again.
const READ_SLICE: Duration = Duration::from_millis(500);

/// A TLS record header announcing a 512-byte handshake message, and the
/// first bytes of that message, a ClientHello.
const PARTIAL_CLIENT_HELLO: [u8; 11] = [
    0x16, 0x03, 0x01, 0x02, 0x00, // handshake record, 512 bytes
    0x01, 0x00, 0x01, 0xfc, // ClientHello, 508 bytes
    0x03, 0x03, // TLS 1.2
];

/// What became of a connection whose client stalled.
#[derive(Debug)]
struct Stalled {
    what: &'static str,
    /// When the server closed the connection, if it did within the limit.
    closed_after: Option<Duration>,
    /// What the server sent before closing.
    received: String,
}

impl Stalled {
    fn assert_cut_off(&self) {
        let after = self.closed_after.unwrap_or_else(|| {
            panic!(
                "{}: Apache still held the connection after {CUT_OFF_LIMIT:?}; received {:?}",
                self.what, self.received
            )
        });
        assert!(
            after >= NOT_BEFORE,
            "{}: closed after only {after:?}, before any read timeout could expire; received {:?}",
            self.what,
            self.received
        );
        // Apache answers 408 when it gives up on a request it has started
        // to read, or closes without a word.
        assert!(
            self.received.is_empty() || status_of(&self.received) == Some(408),
            "{}: closed after {after:?} with {:?}, not 408 Request Timeout",
            self.what,
            self.received
        );
    }
}

/// Keeps `stream` open without sending anything more (or, with `trickle`,
/// one byte every [`TRICKLE_EVERY`]), until the server closes it or
/// [`CUT_OFF_LIMIT`] passes. The underlying socket must have a read timeout
/// of [`READ_SLICE`].
fn stall(what: &'static str, stream: &mut impl ReadWrite, trickle: bool) -> Stalled {
    let start = Instant::now();
    let mut next_byte = start + TRICKLE_EVERY;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let closed_after = loop {
        if start.elapsed() > CUT_OFF_LIMIT {
            break None;
        }
        match stream.read(&mut buf) {
            Ok(0) => break Some(start.elapsed()),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break Some(start.elapsed()),
        }
        if trickle && Instant::now() >= next_byte {
            if stream
                .write_all(b"x")
                .and_then(|()| stream.flush())
                .is_err()
            {
                break Some(start.elapsed());
            }
            next_byte += TRICKLE_EVERY;
        }
    };
    Stalled {
        what,
        closed_after,
        received: String::from_utf8_lossy(&received).into_owned(),
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The status code of an HTTP/1.1 answer.
fn status_of(answer: &str) -> Option<u16> {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

fn tcp(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    stream
        .set_read_timeout(Some(READ_SLICE))
        .expect("set a read timeout");
    stream
}

/// A TLS client connection to 127.0.0.1:`port`, trusting the test CA, with
/// the handshake done.
fn tls(pki: &Pki, port: u16) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::File::open(&pki.ca_cert).expect("open the test CA");
    for cert in rustls_pemfile::certs(&mut BufReader::new(pem)) {
        roots
            .add(cert.expect("read the test CA"))
            .expect("trust the test CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("an IP address name");
    let connection =
        rustls::ClientConnection::new(Arc::new(config), name).expect("a TLS client connection");
    let mut stream = rustls::StreamOwned::new(connection, tcp(port));
    let start = Instant::now();
    while stream.conn.is_handshaking() {
        match stream.conn.complete_io(&mut stream.sock) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                assert!(
                    start.elapsed() < CUT_OFF_LIMIT,
                    "no TLS handshake with 127.0.0.1:{port}"
                );
            }
            Err(e) => panic!("TLS handshake with 127.0.0.1:{port}: {e}"),
        }
    }
    stream
}

/// The credentials of an `Authorization: Basic` header.
fn basic(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// Reads a whole answer (the server closes the connection after it).
fn read_answer(stream: &mut impl Read, what: &str) -> String {
    let start = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                assert!(
                    start.elapsed() < CUT_OFF_LIMIT,
                    "{what}: no complete answer within {CUT_OFF_LIMIT:?}; so far {:?}",
                    String::from_utf8_lossy(&received)
                );
            }
            // Apache closes TLS without close_notify after `Connection: close`.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof && !received.is_empty() => break,
            Err(e) => panic!(
                "{what}: {e}; received {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_disconnected() {
    let stack = Stack::start();
    let user = unique("slow");
    let password = unique("pw-");
    stack.add(&user, &password).await;
    let https = stack
        .registry_host
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .expect("the registry host has a port");
    let http = stack.http_port;
    let authorization = basic(&user, &password);

    let outcomes = tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let probes = [
                // A TLS handshake stopped half way: the start of a
                // ClientHello, then silence. (A connection that sends nothing
                // at all is not even handed to Apache for 30 s: its
                // AcceptFilter waits for data.)
                scope.spawn(|| {
                    let mut stream = tcp(https);
                    stream
                        .write_all(&PARTIAL_CLIENT_HELLO)
                        .expect("send the start of a ClientHello");
                    stall("TLS handshake stopped half way", &mut stream, false)
                }),
                // The request line and half a header, then silence.
                scope.spawn(|| {
                    let mut stream = tcp(http);
                    stream
                        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                        .expect("send part of the headers");
                    stall("headers stopped half way", &mut stream, false)
                }),
                // Slowloris: the same, then one more byte every 2 s, as a
                // client that keeps the connection alive for ever.
                scope.spawn(|| {
                    let mut stream = tcp(http);
                    stream
                        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                        .expect("send part of the headers");
                    stall("headers trickling in", &mut stream, true)
                }),
                // An authenticated upload whose body trickles in: it reaches
                // the registry, and is cut off all the same.
                scope.spawn(|| {
                    let mut stream = tls(&stack.pki, https);
                    let request = format!(
                        "PUT /v2/{user}/slow/manifests/latest HTTP/1.1\r\n\
                         Host: {}\r\n\
                         Authorization: Basic {authorization}\r\n\
                         Content-Type: application/vnd.oci.image.manifest.v1+json\r\n\
                         Content-Length: 1000000\r\n\r\n",
                        stack.registry_host
                    );
                    stream
                        .write_all(request.as_bytes())
                        .and_then(|()| stream.write_all(&[b' '; 1000]))
                        .and_then(|()| stream.flush())
                        .expect("send the headers and the start of the body");
                    stall("authenticated body trickling in", &mut stream, true)
                }),
            ];
            probes.map(|probe| probe.join().expect("a probe thread panicked"))
        })
    });
    for outcome in &outcomes {
        eprintln!("{outcome:?}");
    }
    for outcome in &outcomes {
        outcome.assert_cut_off();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_steady_upload_goes_through() {
    // 64 KiB at 2 KiB/s: four times the sample's minimum rate, for 32 s,
    // well past the body's first 20 s.
    const PIECE: usize = 1024;
    const PIECES: usize = 64;
    const EVERY: Duration = Duration::from_millis(500);

    let stack = Stack::start();
    let user = unique("steady");
    let password = unique("pw-");
    stack.add(&user, &password).await;
    let https = stack
        .registry_host
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .expect("the registry host has a port");
    let authorization = basic(&user, &password);
    let repo = format!("{user}/steady");
    let blob: Vec<u8> = (0..PIECE * PIECES).map(|i| (i % 251) as u8).collect();
    let digest = format!("sha256:{:x}", Sha256::digest(&blob));

    let (answer, took) = tokio::task::block_in_place(|| {
        let mut stream = tls(&stack.pki, https);
        let start = format!(
            "POST /v2/{repo}/blobs/uploads/ HTTP/1.1\r\nHost: {}\r\n\
             Authorization: Basic {authorization}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            stack.registry_host
        );
        stream
            .write_all(start.as_bytes())
            .expect("start a blob upload");
        let started = read_answer(&mut stream, "POST blobs/uploads/");
        assert_eq!(status_of(&started), Some(202), "{started}");
        let location = header(&started, "Location").expect("the upload's Location");
        // The registry names the upload by an absolute URL back at Apache.
        let path = location
            .strip_prefix(&format!("https://{}", stack.registry_host))
            .unwrap_or(location);
        let separator = if path.contains('?') { '&' } else { '?' };

        let mut stream = tls(&stack.pki, https);
        let head = format!(
            "PUT {path}{separator}digest={digest} HTTP/1.1\r\nHost: {}\r\n\
             Authorization: Basic {authorization}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            stack.registry_host,
            blob.len()
        );
        stream.write_all(head.as_bytes()).expect("send the headers");
        stream.flush().expect("send the headers");
        let began = Instant::now();
        for (i, piece) in blob.chunks(PIECE).enumerate() {
            let due = began + EVERY * u32::try_from(i).expect("few pieces");
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            stream
                .write_all(piece)
                .and_then(|()| stream.flush())
                .unwrap_or_else(|e| {
                    panic!(
                        "Apache stopped taking the upload after {} bytes, {:?}: {e}",
                        i * PIECE,
                        began.elapsed()
                    )
                });
        }
        let took = began.elapsed();
        (read_answer(&mut stream, "PUT of the blob"), took)
    });
    eprintln!("the blob took {took:?} to send");
    assert_eq!(status_of(&answer), Some(201), "after {took:?}: {answer}");
    assert!(
        took > Duration::from_secs(20),
        "the upload lasted {took:?}, not beyond the body's first 20 s"
    );
    let stored = stack.get_registry(
        &format!("/v2/{repo}/blobs/{digest}"),
        Some(Creds::new(&user, &password)),
    );
    assert_eq!(stored.status, 200, "{stored:?}");
    assert_eq!(
        stored.header("Docker-Content-Digest"),
        vec![digest.as_str()],
        "{stored:?}"
    );
}
