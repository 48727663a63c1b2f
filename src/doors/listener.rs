//! Serving the doors: each door's address bound with its TLS loaded, one
//! accept loop over all of them, the TLS handshake (reading the client
//! certificate's subject once per connection), HTTP/1.1 on every
//! connection, and a graceful stop that lets requests in flight finish.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
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
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use tokio::sync::Semaphore;

use super::{ClientAddr, Door};
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
}

/// A door with its address bound and its TLS loaded.
pub struct BoundDoor {
    name: &'static str,
    section: Section,
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: Option<Arc<TlsState>>,
    router: Router,
    /// One permit per connection the door may hold.
    slots: Arc<Semaphore>,
    max_connections: usize,
    metrics: Arc<DoorMetrics>,
    access: Arc<AccessCell>,
}

impl BoundDoor {
    /// Loads the door's TLS files and binds its address; None when the
    /// door has no address (it is off).
    pub async fn bind(door: Door) -> Result<Option<Self>, DoorError> {
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
        Ok(Some(Self {
            name: door.name,
            section: door.section,
            listener,
            local_addr,
            tls,
            router: door.router,
            slots: Arc::new(Semaphore::new(door.listener.max_connections)),
            max_connections: door.listener.max_connections,
            metrics: door.metrics,
            access: door.access,
        }))
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn section(&self) -> Section {
        self.section
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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
            Ok((stream, peer)) => {
                let Ok(slot) = Arc::clone(&door.slots).try_acquire_owned() else {
                    // Full: closed at once, so that a flood of connections
                    // to one door never takes the descriptors of another.
                    inc(&door.metrics.connections_refused);
                    if let Some(suppressed) = FULL_LINES.admit() {
                        tracing::warn!(door = door.name, client = %peer, suppressed, "connection closed: the door holds max_connections");
                    }
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (tls, router, watcher) =
                    (door.tls.clone(), door.router.clone(), graceful.watcher());
                tokio::spawn(async move {
                    handle_connection(stream, peer, tls, router, watcher).await;
                    drop(slot);
                });
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
        return serve(stream, peer, None, router, watcher).await;
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
            serve(stream, peer, identity, router, watcher).await;
        }
        Ok(Err(e)) => tracing::info!(client = %peer, error = %e, "TLS handshake refused"),
        Err(_) => tracing::info!(client = %peer, "TLS handshake timed out"),
    }
}

async fn serve<I>(
    io: I,
    peer: SocketAddr,
    identity: Option<Arc<ClientIdentity>>,
    router: Router,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ClientAddr(peer));
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
        tracing::debug!(client = %peer, error = %e, "connection ended with an error");
    }
}
