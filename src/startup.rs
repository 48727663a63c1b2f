//! Building the application (store, credential core, doors with their bound
//! listeners) apart from running it, so that tests bind port 0 and read the
//! real ports back.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::config::{Section, Settings};
use crate::credentials::{CredentialError, Credentials};
use crate::doors::token::{SignerError, TokenKeys};
use crate::doors::{self, BoundDoor, DoorError};
use crate::sinks::htpasswd_file::{self, HtpasswdFileError};
use crate::store::{Create, Store, StoreError};
use crate::tls::TlsState;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Door(#[from] DoorError),
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error(transparent)]
    HtpasswdFile(#[from] HtpasswdFileError),
    #[error(transparent)]
    TokenKey(#[from] SignerError),
    #[error(
        "no door is open: set listen (the admin API), auth_request.listen (RUBBER_AUTH_LISTEN) or htpasswd_file.path (RUBBER_HTPASSWD_FILE)"
    )]
    NoDoor,
}

impl StartupError {
    /// Whether the fix is in the configuration or the set-up (bad TLS files,
    /// a missing database, no door) rather than a failure at run time.
    pub fn is_setup(&self) -> bool {
        match self {
            StartupError::Store(e) => e.is_setup(),
            StartupError::Door(DoorError::Tls { .. })
            | StartupError::NoDoor
            | StartupError::HtpasswdFile(_)
            | StartupError::TokenKey(_) => true,
            StartupError::Door(DoorError::Bind { .. }) | StartupError::Credentials(_) => false,
        }
    }
}

pub struct Application {
    doors: Vec<BoundDoor>,
    credentials: Arc<Credentials>,
    /// The token door's signing keys, to reload on SIGHUP.
    token_keys: Option<Arc<TokenKeys>>,
    sweep_interval: Option<Duration>,
    /// The registry's htpasswd file, when it is kept, and its poll interval.
    htpasswd_file: Option<(htpasswd_file::Target, Duration)>,
}

impl Application {
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(
        settings: &Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        let htpasswd_file = htpasswd_file::Target::check(&settings.htpasswd_file)?.map(|target| {
            (
                target,
                Duration::from_secs(settings.htpasswd_file.poll_interval),
            )
        });
        let token_keys = match (
            &settings.token.listener.listen,
            &settings.token.key,
            &settings.token.cert,
        ) {
            (Some(_), Some(key), Some(cert)) => Some(Arc::new(TokenKeys::load(key, cert)?)),
            _ => None,
        };
        let no_listener = settings.listeners().iter().all(|(_, l)| l.listen.is_none());
        if no_listener && htpasswd_file.is_none() {
            return Err(StartupError::NoDoor);
        }
        let store = Store::open(settings, Create::DefaultOnly).await?;
        let credentials = match Credentials::new(settings, store.clone(), clock) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                store.close().await;
                return Err(e.into());
            }
        };
        let mut bound = Vec::new();
        let mut all = vec![
            doors::api::door(Arc::clone(&credentials), &settings.api),
            doors::auth_request::door(Arc::clone(&credentials), &settings.auth_request),
        ];
        if let Some(keys) = &token_keys {
            all.push(doors::token::door(
                Arc::clone(&credentials),
                &settings.token,
                Arc::clone(keys),
            ));
        }
        for door in all {
            match BoundDoor::bind(door).await {
                Ok(Some(door)) => bound.push(door),
                Ok(None) => {}
                Err(e) => {
                    store.close().await;
                    return Err(e.into());
                }
            }
        }
        Ok(Self {
            doors: bound,
            credentials,
            token_keys,
            sweep_interval: (settings.sweep_interval > 0)
                .then(|| Duration::from_secs(settings.sweep_interval)),
            htpasswd_file,
        })
    }

    /// The address the admin API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.door_addr(Section::Api)
            .expect("the admin API is open: ask door_addr for the doors that may be off")
    }

    /// The address of the door of `section`, when it is open.
    pub fn door_addr(&self, section: Section) -> Option<SocketAddr> {
        self.doors
            .iter()
            .find(|d| d.section() == section)
            .map(BoundDoor::local_addr)
    }

    pub fn credentials(&self) -> &Arc<Credentials> {
        &self.credentials
    }

    /// The admin API's TLS state, to reload it as SIGHUP does.
    pub fn tls(&self) -> Option<Arc<TlsState>> {
        self.doors
            .iter()
            .find(|d| d.section() == Section::Api)
            .and_then(BoundDoor::tls)
    }

    /// Serves until `shutdown` completes, then stops accepting and lets the
    /// requests in flight finish (each waits for its commit) before closing
    /// the database.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        let Self {
            doors,
            credentials,
            token_keys,
            sweep_interval,
            htpasswd_file,
        } = self;
        let mut background = Vec::new();
        if let Some(interval) = sweep_interval {
            background.push(tokio::spawn(crate::sweeper::run(
                Arc::clone(&credentials),
                interval,
            )));
        }
        if let Some((target, poll)) = htpasswd_file {
            tracing::info!(path = %target.path().display(), poll_interval_s = poll.as_secs(), "keeping the registry's htpasswd file");
            background.push(tokio::spawn(htpasswd_file::run(
                Arc::clone(&credentials),
                target,
                poll,
            )));
        }
        let mut reloadable: Vec<Reloadable> = doors
            .iter()
            .filter_map(|d| d.tls().map(|t| Reloadable::Tls(d.name(), t)))
            .collect();
        reloadable.extend(token_keys.map(Reloadable::TokenKeys));
        background.push(tokio::spawn(reload_on_sighup(reloadable)));
        let open_files = raise_open_files_limit();
        let connections: usize = doors.iter().map(BoundDoor::max_connections).sum();
        if open_files.is_some_and(|l| (l as usize) < connections + 64) {
            tracing::warn!(
                open_files,
                connections,
                "the limit on open files is below the doors' max_connections: raise LimitNOFILE or lower max_connections"
            );
        }
        for door in &doors {
            let tls = door.tls();
            tracing::info!(
                door = door.name(),
                address = %door.local_addr(),
                scheme = if tls.is_some() { "https" } else { "http" },
                client_certificates = tls.as_ref().is_some_and(|t| t.requires_client_certificate()),
                database = credentials.backend_name(),
                "listening"
            );
        }
        doors::serve_doors(doors, shutdown).await;
        for task in background {
            task.abort();
        }
        credentials.close().await;
        tracing::info!("stopped");
    }
}

/// Raises the soft limit on open files to the hard one, so that the doors'
/// max_connections, not a low default, bound the connections. Returns the
/// limit in force.
pub fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

/// What SIGHUP reloads.
enum Reloadable {
    /// A door's TLS certificate, key and client CA.
    Tls(&'static str, Arc<TlsState>),
    /// The token door's signing key and certificate.
    TokenKeys(Arc<TokenKeys>),
}

impl Reloadable {
    fn reload(&self) -> (&'static str, &'static str, Result<(), String>) {
        match self {
            Reloadable::Tls(door, tls) => (
                door,
                "TLS certificate, key and client CA",
                tls.reload().map_err(|e| e.to_string()),
            ),
            Reloadable::TokenKeys(keys) => (
                "token",
                "token signing key and certificate",
                keys.reload().map_err(|e| e.to_string()),
            ),
        }
    }
}

/// Reloads every door's certificate, key and client CA, and the token
/// door's signing key, on every SIGHUP. A bad new file is refused with a log
/// line, and the files in force stay in use. With nothing to reload, SIGHUP
/// is still caught (and logged), so that a reload never stops the service.
async fn reload_on_sighup(tls: Vec<Reloadable>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; TLS files will not reload");
            return;
        }
    };
    while hup.recv().await.is_some() {
        if tls.is_empty() {
            tracing::info!("SIGHUP: nothing to reload (no door speaks TLS or signs tokens)");
        }
        for item in &tls {
            match item.reload() {
                (door, what, Ok(())) => tracing::info!(door, what, "SIGHUP: reloaded"),
                (door, what, Err(e)) => {
                    tracing::error!(door, what, error = %e, "SIGHUP: reload refused; the files in force stay")
                }
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
