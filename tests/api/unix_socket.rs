//! The API on a Unix socket: whoever may open the socket may call, its mode
//! and group deciding; addresses do not apply; the audit names the caller's
//! user; the socket file is replaced when stale, refused when another
//! process listens on it, and removed when the service stops.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{spawn_app_with, Served};
use registry_rubber::access::parse_cidrs;

/// Sends a form POST over the socket; the status and the body.
async fn post(socket: &Path, path: &str, form: &str) -> (u16, serde_json::Value) {
    let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or_default())
}

#[tokio::test]
async fn callers_on_the_socket_are_admitted_by_its_permissions_not_their_address() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let app = spawn_app_with(|s| {
        s.api.unix_socket = Some(socket.clone());
        // No address may call over TCP.
        s.api.listener.allow_from = parse_cidrs("192.0.2.0/24").unwrap();
    })
    .await;
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(
        app.post_form("/add", &[("user", "tcp-1"), ("passwd", "p")])
            .await
            .status,
        403,
        "over TCP, allow_from still holds"
    );
    let (status, body) = post(&socket, "/add", "user=unix-1&passwd=Unix-Pass-1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], "unix-1");
    assert!(app.db.stored_hash("unix-1").await.is_some());
    // The audit names the caller by the user of its process.
    let uid = unsafe { libc::getuid() };
    let caller = format!("unix:uid={uid}");
    assert!(
        app.logs().iter().any(|e| e.is_audit(&[
            ("user", "unix-1"),
            ("result", "ok"),
            ("caller", &caller)
        ])),
        "an audit line naming the socket's caller: {:#?}",
        app.logs()
    );
}

#[test]
fn the_socket_is_replaced_when_stale_refused_when_in_use_and_removed_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    // A socket file left behind by a process that is gone.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let arg = |s: &'static str| std::ffi::OsStr::new(s);
    let mut first = Served::start(
        dir.path(),
        &[
            arg("--unix-socket"),
            socket.as_os_str(),
            arg("--unix-socket-mode"),
            arg("0600"),
        ],
    );
    first.wait_for("\"listening\"");
    let line = first.wait_for("unix:");
    assert!(line.contains("listening"), "{line}");
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // A second service on the same socket is refused, and leaves it alone.
    let second_dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", second_dir.path().join("u.sqlite").display());
    let bin = env!("CARGO_BIN_EXE_registry-rubber");
    assert!(std::process::Command::new(bin)
        .args(["--database-url", &url, "migrate"])
        .output()
        .unwrap()
        .status
        .success());
    let refused = std::process::Command::new(bin)
        .args(["--database-url", &url, "--listen", "", "--unix-socket"])
        .arg(&socket)
        .arg("serve")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("another process listens on it"), "{stderr}");
    assert!(first.running(), "the first goes on");
    assert!(std::fs::metadata(&socket).unwrap().file_type().is_socket());
    // A file that is not a socket is never taken for one.
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "keep me").unwrap();
    let refused = std::process::Command::new(bin)
        .args(["--database-url", &url, "--listen", "", "--unix-socket"])
        .arg(&plain)
        .arg("serve")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert_eq!(std::fs::read_to_string(&plain).unwrap(), "keep me");
    // A directory every account may write in is refused: another could
    // take the socket's name while the service is down.
    let open_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open_dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let refused = std::process::Command::new(bin)
        .args(["--database-url", &url, "--listen", "", "--unix-socket"])
        .arg(open_dir.path().join("api.sock"))
        .arg("serve")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("writable by every account"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(open_dir.path()).unwrap().count(),
        0,
        "nothing left in it"
    );
    // Stopped, the service takes its socket away, and left nothing else.
    assert!(first.stop(), "a clean stop");
    assert!(!socket.exists(), "the socket file is removed");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains(".bind"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
