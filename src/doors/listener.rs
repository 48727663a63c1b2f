//! Serving the doors: each door's address bound with its TLS loaded, one
//! accept loop over all of them, the TLS handshake (reading the client
//! certificate's subject once per connection), HTTP/1.1 on every
//! connection, and a graceful stop that lets requests in flight finish.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tower::ServiceExt;
use tracing::Instrument;

use tokio::sync::Semaphore;

use super::{ClientAddr, Door, UnixPeer, UnixSocket};
use crate::access::AccessCell;
use crate::config::Section;
use crate::metrics::{inc, DoorMetrics};
use crate::telemetry::RateLimitedLines;
use crate::tls::{ClientIdentity, TlsError, TlsState};

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Lines about connections closed because a door was full.
static FULL_LINES: RateLimitedLines = RateLimitedLines::new();
/// Connections a door holds at once from addresses it will refuse (neither
/// in allow_from nor trusted proxies), apart from its max_connections: each
/// gets its 403, and a flood of them never takes its callers' slots.
pub const STRANGER_SLOTS: usize = 64;

/// Lines about failed accepts (out of descriptors, usually).
static ACCEPT_LINES: RateLimitedLines = RateLimitedLines::new();

#[derive(Debug, thiserror::Error)]
pub enum DoorError {
    #[error("{door}: cannot listen on {addr}: {source}")]
    Bind {
        door: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{door}: {source}")]
    Tls {
        door: &'static str,
        source: TlsError,
    },
    #[error("{door}: cannot listen on the Unix socket {path}: {why}")]
    Unix {
        door: &'static str,
        path: PathBuf,
        why: String,
    },
}

/// What a door accepts connections on.
enum Listener {
    Tcp(TcpListener, SocketAddr),
    /// The socket, and its file, removed when the door is dropped.
    Unix(UnixListener, SocketFile),
}

/// A connection accepted, and who is at the other end.
enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream, UnixPeer),
}

impl Listener {
    fn poll_accept(&self, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<Accepted>> {
        match self {
            Listener::Tcp(listener, _) => listener
                .poll_accept(cx)
                .map_ok(|(stream, peer)| Accepted::Tcp(stream, peer)),
            Listener::Unix(listener, _) => listener.poll_accept(cx).map_ok(|(stream, _)| {
                // The kernel's word for who connected; unknown (and shown
                // as such) only if the call fails.
                let peer = stream.peer_cred().map_or(
                    UnixPeer {
                        uid: None,
                        pid: None,
                    },
                    |cred| UnixPeer {
                        uid: Some(cred.uid()),
                        pid: cred.pid(),
                    },
                );
                Accepted::Unix(stream, peer)
            }),
        }
    }
}

/// A Unix socket's file, removed when the listener goes.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A door with its address bound and its TLS loaded.
pub struct BoundDoor {
    name: &'static str,
    section: Section,
    listener: Listener,
    tls: Option<Arc<TlsState>>,
    router: Router,
    /// One permit per connection the door may hold.
    slots: Arc<Semaphore>,
    /// One permit per connection from an address the door will refuse (see
    /// [`STRANGER_SLOTS`]).
    stranger_slots: Arc<Semaphore>,
    max_connections: usize,
    metrics: Arc<DoorMetrics>,
    access: Arc<AccessCell>,
}

impl BoundDoor {
    /// Binds what the door listens on: its address, with its TLS loaded,
    /// and its Unix socket; none when it has neither (it is off).
    pub async fn bind(door: Door) -> Result<Vec<Self>, DoorError> {
        let mut bound = Vec::new();
        if let Some(tcp) = Self::bind_tcp(&door).await? {
            bound.push(tcp);
        }
        if let Some(unix) = &door.unix {
            let listener = bind_unix(unix).map_err(|why| DoorError::Unix {
                door: door.name,
                path: unix.path.clone(),
                why,
            })?;
            bound.push(Self::with(
                &door,
                Listener::Unix(listener, SocketFile(unix.path.clone())),
                None,
            ));
        }
        Ok(bound)
    }

    fn with(door: &Door, listener: Listener, tls: Option<Arc<TlsState>>) -> Self {
        Self {
            name: door.name,
            section: door.section,
            listener,
            tls,
            router: door.router.clone(),
            slots: Arc::new(Semaphore::new(door.listener.max_connections)),
            stranger_slots: Arc::new(Semaphore::new(
                STRANGER_SLOTS.min(door.listener.max_connections),
            )),
            max_connections: door.listener.max_connections,
            metrics: Arc::clone(&door.metrics),
            access: Arc::clone(&door.access),
        }
    }

    async fn bind_tcp(door: &Door) -> Result<Option<Self>, DoorError> {
        let Some(addr) = door.listener.listen else {
            return Ok(None);
        };
        let tls = match door.listener.tls_files() {
            Some(files) => {
                crate::tls::install_crypto_provider();
                let state = TlsState::load(files).map_err(|source| DoorError::Tls {
                    door: door.name,
                    source,
                })?;
                Some(Arc::new(state))
            }
            None => None,
        };
        let bind_error = |source| DoorError::Bind {
            door: door.name,
            addr,
            source,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        Ok(Some(Self::with(
            door,
            Listener::Tcp(listener, local_addr),
            tls,
        )))
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn section(&self) -> Section {
        self.section
    }

    /// The address it listens on; None for a Unix socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.listener {
            Listener::Tcp(_, addr) => Some(*addr),
            Listener::Unix(..) => None,
        }
    }

    /// Where it listens, for the log.
    pub fn location(&self) -> String {
        match &self.listener {
            Listener::Tcp(_, addr) => addr.to_string(),
            Listener::Unix(_, file) => format!("unix:{}", file.0.display()),
        }
    }

    pub fn tls(&self) -> Option<Arc<TlsState>> {
        self.tls.clone()
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    pub fn access(&self) -> Arc<AccessCell> {
        Arc::clone(&self.access)
    }
}

/// Accepts on every door until `shutdown` completes, then stops accepting and
/// lets the requests in flight finish, for at most SHUTDOWN_GRACE.
pub async fn serve_doors(doors: Vec<BoundDoor>, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    // Each round starts polling at the next door, so that a flood of
    // connections on one never starves another.
    let mut first = 0;
    loop {
        let accepted = poll_fn(|cx| {
            for i in 0..doors.len() {
                let i = (first + i) % doors.len();
                if let Poll::Ready(result) = doors[i].listener.poll_accept(cx) {
                    return Poll::Ready((i, result));
                }
            }
            Poll::Pending
        });
        let (i, result) = tokio::select! {
            accepted = accepted => accepted,
            () = &mut shutdown => break,
        };
        first = (i + 1) % doors.len().max(1);
        let door = &doors[i];
        match result {
            Ok(accepted) => {
                // A connection from an address the door will refuse still
                // gets its 403, but from slots of its own: strangers can
                // fill only those, never lock the door's callers out.
                let stranger = match &accepted {
                    Accepted::Tcp(_, peer) => !door.access.current().expects_peer(peer.ip()),
                    Accepted::Unix(..) => false,
                };
                let slots = if stranger {
                    &door.stranger_slots
                } else {
                    &door.slots
                };
                let Ok(slot) = Arc::clone(slots).try_acquire_owned() else {
                    // Full: closed at once, so that a flood of connections
                    // to one door never takes the descriptors of another.
                    inc(&door.metrics.connections_refused);
                    if let Some(suppressed) = FULL_LINES.admit() {
                        if stranger {
                            tracing::warn!(door = door.name, location = %door.location(), suppressed, "connection closed: the door holds as many connections from addresses outside allow_from as it takes");
                        } else {
                            tracing::warn!(door = door.name, location = %door.location(), suppressed, "connection closed: the door holds max_connections");
                        }
                    }
                    drop(accepted);
                    continue;
                };
                let (tls, router, watcher) =
                    (door.tls.clone(), door.router.clone(), graceful.watcher());
                tokio::spawn(
                    async move {
                        match accepted {
                            Accepted::Tcp(stream, peer) => {
                                let _ = stream.set_nodelay(true);
                                handle_connection(stream, peer, tls, router, watcher).await;
                            }
                            Accepted::Unix(stream, peer) => {
                                serve(stream, Peer::Unix(peer), None, router, watcher).await;
                            }
                        }
                        drop(slot);
                    }
                    .in_current_span(),
                );
            }
            Err(e) => {
                // Out of file descriptors, usually: back off briefly.
                if let Some(suppressed) = ACCEPT_LINES.admit() {
                    tracing::warn!(door = door.name, error = %e, suppressed, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(doors);
    tracing::info!("shutting down: finishing requests in flight");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}; stopping anyway");
    }
}

/// Completes the TLS handshake when TLS is on (reading the client's
/// certificate subject), then serves HTTP/1.1 on the connection.
async fn handle_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<TlsState>>,
    router: Router,
    watcher: Watcher,
) {
    let Some(tls) = tls else {
        return serve(stream, Peer::Tcp(peer), None, router, watcher).await;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => {
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(ClientIdentity::from_certificate)
                .map(Arc::new);
            serve(stream, Peer::Tcp(peer), identity, router, watcher).await;
        }
        Ok(Err(e)) => tracing::info!(client = %peer, error = %e, "TLS handshake refused"),
        Err(_) => tracing::info!(client = %peer, "TLS handshake timed out"),
    }
}

/// Who is at the other end of a connection.
#[derive(Clone, Copy)]
enum Peer {
    Tcp(SocketAddr),
    Unix(UnixPeer),
}

async fn serve<I>(
    io: I,
    peer: Peer,
    identity: Option<Arc<ClientIdentity>>,
    router: Router,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        match peer {
            Peer::Tcp(addr) => {
                req.extensions_mut().insert(ClientAddr(addr));
            }
            Peer::Unix(unix) => {
                req.extensions_mut().insert(unix);
            }
        }
        if let Some(id) = &identity {
            req.extensions_mut().insert(Arc::clone(id));
        }
        router.clone().oneshot(req.map(Body::new))
    });
    // half_close(false), hyper's default, said here because the request log
    // relies on it: a client that closes its side has gone, and its request
    // future is dropped (logged as 499) rather than answered into the void.
    let conn = http1::Builder::new()
        .half_close(false)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Binds the Unix socket: a socket file left by a process that is gone is
/// replaced; one another process listens on, or a file that is not a
/// socket, is refused. The socket gets its mode and group before the door
/// accepts anything on it.
fn bind_unix(unix: &UnixSocket) -> Result<UnixListener, String> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    let path = &unix.path;
    if !path.is_absolute() {
        return Err("give an absolute path".into());
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err("another process listens on it".into());
            }
            std::fs::remove_file(path)
                .map_err(|e| format!("cannot remove the stale socket: {e}"))?;
        }
        Ok(_) => return Err("a file that is not a socket is in the way".into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.to_string()),
    }
    // Another account that may write in the directory could take the
    // socket's name whenever the service is not running, and hear callers'
    // tokens and passwords.
    let dir = path.parent().unwrap_or(Path::new("/"));
    let dir_mode = std::fs::metadata(dir)
        .map_err(|e| format!("cannot read its directory {}: {e}", dir.display()))?
        .permissions()
        .mode();
    if dir_mode & 0o002 != 0 {
        return Err(format!(
            "its directory {} is writable by every account (mode {:04o}), which could take the socket's name; use a directory of the service's own, such as /run/registry-rubber",
            dir.display(),
            dir_mode & 0o7777
        ));
    }
    // Bound in a directory only this process may enter, given its mode and
    // group there, then renamed into place: nobody connects before the mode
    // is set, and no path is followed while setting it.
    let name = path
        .file_name()
        .ok_or_else(|| "give a path that names a file".to_owned())?;
    let private = dir.join(format!(
        ".{}.{}.bind",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|e| format!("cannot make {}: {e}", private.display()))?;
    let staged = private.join(name);
    let bound = (|| {
        let listener = UnixListener::bind(&staged).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(unix.mode))
            .map_err(|e| format!("cannot set its mode: {e}"))?;
        if let Some(gid) = unix.gid {
            std::os::unix::fs::lchown(&staged, None, Some(gid))
                .map_err(|e| format!("cannot give it group {gid}: {e}"))?;
        }
        std::fs::rename(&staged, path).map_err(|e| format!("cannot put it in place: {e}"))?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    // Bound and set up: the file stays until the listener goes.
    bound
}
