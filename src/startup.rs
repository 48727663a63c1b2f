//! Building the application (store, TLS, router, bound listener) apart from
//! running it, so that tests bind port 0 and read the real port back.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
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

use crate::api::{self, AppState, ClientAddr};
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::credentials::Credentials;
use crate::store::{Create, Store, StoreError};
use crate::tls::{ClientIdentity, TlsError, TlsState};

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
    store: Store,
    tls: Option<Arc<TlsState>>,
    sweeper: Option<Sweeper>,
}

/// The background sweeper's work and period.
struct Sweeper {
    credentials: Arc<Credentials>,
    interval: Duration,
}

impl Application {
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(
        settings: &Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        let tls = match settings.tls_files() {
            Some(files) => {
                crate::tls::install_crypto_provider();
                Some(Arc::new(TlsState::load(files)?))
            }
            None => None,
        };
        let store = Store::open(settings, Create::DefaultOnly).await?;
        let bind_error = |source| StartupError::Bind {
            addr: settings.listen,
            source,
        };
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let credentials = Arc::new(Credentials::new(settings, store.clone(), clock));
        let sweeper = (settings.sweep_interval > 0).then(|| Sweeper {
            credentials: Arc::clone(&credentials),
            interval: Duration::from_secs(settings.sweep_interval),
        });
        let router = api::router(AppState {
            credentials,
            access: Arc::new(settings.access.clone()),
        });
        Ok(Self {
            listener,
            local_addr,
            router,
            store,
            tls,
            sweeper,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The TLS state, to reload it as SIGHUP does.
    pub fn tls(&self) -> Option<Arc<TlsState>> {
        self.tls.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting and lets the
    /// requests in flight finish (each waits for its commit) before returning.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        let Self {
            listener,
            local_addr,
            router,
            store,
            tls,
            sweeper,
        } = self;
        let mut background = Vec::new();
        if let Some(s) = sweeper {
            background.push(tokio::spawn(crate::sweeper::run(s.credentials, s.interval)));
        }
        if let Some(tls) = &tls {
            background.push(tokio::spawn(reload_on_sighup(Arc::clone(tls))));
        }
        tracing::info!(
            address = %local_addr,
            scheme = if tls.is_some() { "https" } else { "http" },
            client_certificates = tls.as_ref().is_some_and(|t| t.requires_client_certificate()),
            database = store.backend_name(),
            "listening"
        );
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors, usually: back off briefly.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(handle_connection(
                stream,
                peer,
                tls.clone(),
                router.clone(),
                graceful.watcher(),
            ));
        }
        drop(listener);
        for task in background {
            task.abort();
        }
        tracing::info!("shutting down: finishing requests in flight");
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}; stopping anyway");
        }
        store.close().await;
        tracing::info!("stopped");
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
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(client = %peer, error = %e, "connection ended with an error");
    }
}

/// Reloads certificate, key and client CA on every SIGHUP. A bad new file is
/// refused with a log line, and the files in force stay in use.
async fn reload_on_sighup(tls: Arc<TlsState>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; TLS files will not reload");
            return;
        }
    };
    while hup.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: TLS certificate, key and client CA reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: TLS reload refused; the files in force stay")
            }
        }
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
