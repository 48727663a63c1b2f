//! Building the application (store, credential core, doors with their bound
//! listeners) apart from running it, so that tests bind port 0 and read the
//! real ports back.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use crate::access::AccessCell;
use crate::callers::{Callers, CallersCell, CallersError};
use crate::clock::{Clock, SystemClock};
use crate::config::{ConfigError, Section, Settings, DATABASE_KEYS};
use crate::credentials::{CredentialError, Credentials};
use crate::doors::token::{SignerError, TokenKeys};
use crate::doors::{self, BoundDoor, DoorError, UnixSocket};
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
    #[error(transparent)]
    Callers(#[from] CallersError),
    /// An error about the values of `keys`, and where they came from.
    #[error("{source} ({provenance})")]
    Keyed {
        source: Box<StartupError>,
        provenance: String,
    },
    #[error(
        "no door is open: set listen or unix_socket (the admin API), auth_request.listen (RUBBER_AUTH_LISTEN), token.listen (RUBBER_TOKEN_LISTEN) or htpasswd_file.path (RUBBER_HTPASSWD_FILE)"
    )]
    NoDoor,
}

impl StartupError {
    /// Whether the fix is in the configuration or the set-up (bad TLS files,
    /// a missing database, no door) rather than a failure at run time.
    pub fn is_setup(&self) -> bool {
        match self {
            StartupError::Store(e) => e.is_setup(),
            StartupError::Keyed { source, .. } => source.is_setup(),
            StartupError::Door(DoorError::Tls { .. } | DoorError::Unix { .. })
            | StartupError::NoDoor
            | StartupError::HtpasswdFile(_)
            | StartupError::TokenKey(_)
            | StartupError::Callers(_) => true,
            StartupError::Door(DoorError::Bind { .. }) | StartupError::Credentials(_) => false,
        }
    }
}

/// `error`, with where the values of `keys` came from.
fn keyed(settings: &Settings, keys: &[&str], error: impl Into<StartupError>) -> StartupError {
    let paths: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    StartupError::Keyed {
        source: Box::new(error.into()),
        provenance: settings.provenance(&paths),
    }
}

/// `name`, or `table.name` for a key of a door's table.
fn key_path(section: Section, name: &str) -> String {
    match section.table() {
        Some(table) => format!("{table}.{name}"),
        None => name.to_owned(),
    }
}

/// What start-up reads and loads before it opens the database.
struct Prepared {
    htpasswd_file: Option<(htpasswd_file::Target, Duration)>,
    token_keys: Option<Arc<TokenKeys>>,
    callers: Arc<CallersCell>,
    unix_socket: Option<UnixSocket>,
}

/// Reads and loads every file the configuration names (the htpasswd file's
/// directory, the token key, the callers file, each door's TLS files), as a
/// start does before it opens the database; each error says where the
/// values it is about came from.
fn prepare(settings: &Settings) -> Result<Prepared, StartupError> {
    let htpasswd_file = htpasswd_file::Target::check(&settings.htpasswd_file)
        .map_err(|e| keyed(settings, &["htpasswd_file.path", "htpasswd_file.group"], e))?
        .map(|target| {
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
        (Some(_), Some(key), Some(cert)) => {
            Some(Arc::new(TokenKeys::load(key, cert).map_err(|e| {
                keyed(settings, &["token.key", "token.cert"], e)
            })?))
        }
        _ => None,
    };
    let callers = Arc::new(CallersCell::new(
        settings
            .api
            .callers_file
            .as_deref()
            .map(Callers::load)
            .transpose()
            .map_err(|e| keyed(settings, &["callers_file"], e))?,
    ));
    let unix_socket = match &settings.api.unix_socket {
        None => None,
        Some(path) => Some(UnixSocket {
            path: path.clone(),
            mode: settings.api.unix_socket_mode.0,
            gid: match &settings.api.unix_socket_group {
                None => None,
                Some(group) => Some(crate::host::group_id(group).ok_or_else(|| {
                    keyed(
                        settings,
                        &["unix_socket_group", "unix_socket"],
                        DoorError::Unix {
                            door: "api",
                            path: path.clone(),
                            why: format!("no group {group} (unix_socket_group)"),
                        },
                    )
                })?),
            },
        }),
    };
    let no_listener =
        settings.listeners().iter().all(|(_, l)| l.listen.is_none()) && unix_socket.is_none();
    if no_listener && htpasswd_file.is_none() {
        return Err(StartupError::NoDoor);
    }
    // Each open door's TLS files, loaded as its listener will load them.
    for (section, listener) in settings.listeners() {
        let (Some(_), Some(files)) = (listener.listen, listener.tls_files()) else {
            continue;
        };
        crate::tls::install_crypto_provider();
        if let Err(source) = crate::tls::server_config(&files) {
            let keys: Vec<String> = ["tls_cert", "tls_key", "tls_client_ca", "tls_crl"]
                .iter()
                .map(|k| key_path(section, k))
                .collect();
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            return Err(keyed(
                settings,
                &keys,
                DoorError::Tls {
                    door: section.door_name(),
                    source,
                },
            ));
        }
    }
    Ok(Prepared {
        htpasswd_file,
        token_keys,
        callers,
        unix_socket,
    })
}

/// What `check-config` checks: everything a start checks before it binds a
/// port, the database included (it must answer, let the service's account do
/// what a start and the writes do, and have a schema this build knows),
/// changing nothing. Returns a line for each thing checked.
pub async fn check(settings: &Settings) -> Result<Vec<String>, StartupError> {
    let prepared = prepare(settings)?;
    let mut checked = Vec::new();
    if let Some((target, _)) = &prepared.htpasswd_file {
        checked.push(format!(
            "htpasswd_file.path: the service may create files in the directory of {}",
            target.path().display()
        ));
    }
    if prepared.token_keys.is_some() {
        checked.push("token.key and token.cert load and match".to_owned());
    }
    if settings.api.callers_file.is_some() {
        checked.push("callers_file loads".to_owned());
    }
    for (section, listener) in settings.listeners() {
        if let (Some(addr), Some(_)) = (listener.listen, listener.tls_files()) {
            checked.push(format!(
                "{}: the TLS files of {addr} load",
                key_path(section, "tls_cert")
            ));
        }
    }
    let database = Store::check(settings)
        .await
        .map_err(|e| keyed(settings, &DATABASE_KEYS, e))?;
    checked.push(format!("database_url: {database}"));
    Ok(checked)
}

pub struct Application {
    doors: Vec<BoundDoor>,
    credentials: Arc<Credentials>,
    /// What SIGHUP reloads, and where the configuration is read again from.
    reloader: Arc<Reloader>,
    settings_source: Option<SettingsSource>,
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
        let Prepared {
            htpasswd_file,
            token_keys,
            callers,
            unix_socket,
        } = prepare(settings)?;
        let store = Store::open(settings, Create::DefaultOnly)
            .await
            .map_err(|e| keyed(settings, &DATABASE_KEYS, e))?;
        let credentials = match Credentials::new(settings, store.clone(), clock) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                store.close().await;
                return Err(e.into());
            }
        };
        let mut bound = Vec::new();
        let mut all = vec![
            doors::api::door(
                Arc::clone(&credentials),
                &settings.api,
                Arc::clone(&callers),
            )
            .with_unix_socket(unix_socket),
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
                Ok(doors) => bound.extend(doors),
                Err(e) => {
                    store.close().await;
                    return Err(e.into());
                }
            }
        }
        let reloader = Arc::new(Reloader {
            doors: bound
                .iter()
                .map(|d| ReloadableDoor {
                    name: d.name(),
                    section: d.section(),
                    access: d.access(),
                    tls: d.tls(),
                })
                .collect(),
            token_keys,
            callers,
            started_with: settings.clone(),
        });
        Ok(Self {
            doors: bound,
            credentials,
            reloader,
            settings_source: None,
            sweep_interval: (settings.sweep_interval > 0)
                .then(|| Duration::from_secs(settings.sweep_interval)),
            htpasswd_file,
        })
    }

    /// Where a SIGHUP reads the configuration again from; without one, a
    /// SIGHUP reads the files in force again and changes nothing else.
    pub fn reload_settings_from(mut self, source: SettingsSource) -> Self {
        self.settings_source = Some(source);
        self
    }

    /// What a reload changes, to apply it as SIGHUP does.
    pub fn reloader(&self) -> Arc<Reloader> {
        Arc::clone(&self.reloader)
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
            .filter(|d| d.section() == section)
            .find_map(BoundDoor::local_addr)
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
            reloader,
            settings_source,
            sweep_interval,
            htpasswd_file,
        } = self;
        let mut background = Vec::new();
        if let Some(interval) = sweep_interval {
            background.push(tokio::spawn(
                crate::sweeper::run(Arc::clone(&credentials), interval).in_current_span(),
            ));
        }
        if let Some((target, poll)) = htpasswd_file {
            tracing::info!(path = %target.path().display(), poll_interval_s = poll.as_secs(), "keeping the registry's htpasswd file");
            background.push(tokio::spawn(
                htpasswd_file::run(Arc::clone(&credentials), target, poll).in_current_span(),
            ));
        }
        background.push(tokio::spawn(
            reload_on_sighup(reloader, settings_source).in_current_span(),
        ));
        background.push(tokio::spawn(
            crate::allocator::trim_when_quiet().in_current_span(),
        ));
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
                address = %door.location(),
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

/// Reads the configuration again from where it came from (the file, the
/// environment, the flags), for a reload.
pub type SettingsSource = Arc<dyn Fn() -> Result<Settings, ConfigError> + Send + Sync>;

/// The keys a reload puts in force; any other that changed waits for a
/// restart, and the log says so.
const RELOADABLE: [&str; 10] = [
    "allow_from",
    "trusted_proxies",
    "allowed_subjects",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "tls_crl",
    "key",
    "cert",
    "callers_file",
];

/// What a reload can change without a restart: each door's allowlist,
/// trusted proxies and subjects, each door's TLS files (certificate, key,
/// client CA, revocation lists), and the token door's signing key.
pub struct Reloader {
    doors: Vec<ReloadableDoor>,
    token_keys: Option<Arc<TokenKeys>>,
    callers: Arc<CallersCell>,
    started_with: Settings,
}

/// What of one door a reload reaches.
struct ReloadableDoor {
    name: &'static str,
    section: Section,
    access: Arc<AccessCell>,
    tls: Option<Arc<TlsState>>,
}

/// One thing a reload did or refused: the door, what, and how it went.
pub type Reloaded = (&'static str, &'static str, Result<(), String>);

impl Reloader {
    /// With `settings` (the configuration read again), puts in force what
    /// it says for the reloadable keys; without, reads the files in force
    /// again. A file that is bad is refused and the one in force stays.
    pub fn apply(&self, settings: Option<&Settings>) -> Vec<Reloaded> {
        let mut done = Vec::new();
        for ReloadableDoor {
            name: door,
            section,
            access,
            tls,
        } in &self.doors
        {
            let listener = settings.and_then(|s| {
                s.listeners()
                    .into_iter()
                    .find(|(sec, _)| sec == section)
                    .map(|(_, l)| l)
            });
            if let Some(listener) = listener {
                access.set(listener.access());
                done.push((*door, "allowlist, trusted proxies and subjects", Ok(())));
            }
            let tls_result = match (tls, listener.map(|l| l.tls_files())) {
                (Some(state), Some(Some(files))) => {
                    Some(state.reload_from(files).map_err(|e| e.to_string()))
                }
                (Some(state), None) => Some(state.reload().map_err(|e| e.to_string())),
                (Some(_), Some(None)) | (None, Some(Some(_))) => Some(Err(
                    "turning TLS on or off needs a restart; the TLS in force stays".to_owned(),
                )),
                (None, _) => None,
            };
            if let Some(result) = tls_result {
                done.push((
                    *door,
                    "TLS certificate, key, client CA and revocation lists",
                    result,
                ));
            }
        }
        if let Some(keys) = &self.token_keys {
            let result = match settings.map(|s| (&s.token.key, &s.token.cert)) {
                Some((Some(key), Some(cert))) => keys.reload_from(key, cert),
                _ => keys.reload(),
            };
            done.push((
                "token",
                "signing key and certificate",
                result.map_err(|e| e.to_string()),
            ));
        }
        // The callers file: read again (the one in force, or the one the
        // configuration now names); a bad one is refused and the callers in
        // force stay. Turning it on or off waits for a restart, as TLS does.
        let file = match settings {
            Some(s) => s.api.callers_file.clone(),
            None => self.started_with.api.callers_file.clone(),
        };
        match (self.callers.current().is_some(), file) {
            (true, Some(path)) => {
                let result = Callers::load(&path).map(|c| self.callers.set(Some(c)));
                done.push(("api", "callers file", result.map_err(|e| e.to_string())));
            }
            (false, None) => {}
            _ => done.push((
                "api",
                "callers file",
                Err(
                    "turning the callers file on or off needs a restart; the callers in force stay"
                        .to_owned(),
                ),
            )),
        }
        done
    }

    /// The keys whose new value waits for a restart.
    pub fn needing_restart(&self, settings: &Settings) -> Vec<String> {
        crate::config::keys()
            .filter(|k| !RELOADABLE.contains(&k.name))
            .filter(|k| k.show(&self.started_with) != k.show(settings))
            .map(|k| k.path())
            .collect()
    }
}

/// On every SIGHUP: reads the configuration again (when it has a source)
/// and puts in force what can change without a restart. A configuration
/// that no longer loads, or a bad file, is refused with a log line and what
/// is in force stays. SIGHUP never stops the service.
async fn reload_on_sighup(reloader: Arc<Reloader>, source: Option<SettingsSource>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; nothing will reload");
            return;
        }
    };
    while hup.recv().await.is_some() {
        let settings = match source.as_ref().map(|load| load()) {
            Some(Ok(settings)) => Some(settings),
            Some(Err(e)) => {
                tracing::error!(error = %e, "SIGHUP: the configuration does not load; nothing reloaded, what is in force stays");
                continue;
            }
            None => None,
        };
        if let Some(settings) = &settings {
            let waiting = reloader.needing_restart(settings);
            if !waiting.is_empty() {
                tracing::warn!(keys = %waiting.join(", "), "SIGHUP: these changed keys take effect at the next restart");
            }
        }
        let done = reloader.apply(settings.as_ref());
        if done.is_empty() {
            tracing::info!("SIGHUP: nothing to reload");
        }
        for (door, what, result) in done {
            match result {
                Ok(()) => tracing::info!(door, what, "SIGHUP: reloaded"),
                Err(e) => {
                    tracing::error!(door, what, error = %e, "SIGHUP: reload refused; what is in force stays")
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
