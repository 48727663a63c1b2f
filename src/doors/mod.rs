//! The doors: each an adapter over the one credential core, with its own
//! listener (address, TLS, who may call) and its own answer format.
//!
//! - [`api`]: the JSON admin API that writes, in the original's envelope;
//! - [`auth_request`]: nginx's `auth_request` check, a bare 200 or 401;
//! - [`token`]: the registry's token server, in the registry's error shape.
//!
//! What every door shares lives here: the access guard (address allowlist,
//! forwarded addresses from trusted proxies only, client certificate
//! subjects), which refuses in the door's own format before anything else
//! runs; one request log line and one latency observation per request; and
//! the listener that accepts connections, completes TLS, and serves HTTP/1.1.

pub mod api;
pub mod auth_request;
pub mod basic;
pub mod form;
mod listener;
pub mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;

use crate::access::AccessCell;
use crate::audit::Caller;
use crate::config::{ListenerSettings, Section};
use crate::metrics::DoorMetrics;
use crate::tls::ClientIdentity;

pub use listener::{serve_doors, BoundDoor, DoorError, STRANGER_SLOTS};

/// The peer address of the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Who connected to a Unix socket, as the kernel tells: the process's user
/// and process id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixPeer {
    pub uid: Option<u32>,
    pub pid: Option<i32>,
}

/// A Unix socket a door listens on: its path, mode and group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocket {
    pub path: PathBuf,
    pub mode: u32,
    pub gid: Option<u32>,
}

/// Why the access guard turned a caller away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The client's address is not in the door's `allow_from`.
    Address,
    /// The client certificate's subject is not in `allowed_subjects`.
    Subject,
    /// A trusted proxy forwarded an X-Forwarded-For that cannot be read.
    Forwarded,
}

impl Refused {
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Address => "client address not in allow_from",
            Refused::Subject => "client certificate subject not in allowed_subjects",
            Refused::Forwarded => {
                "X-Forwarded-For from a trusted proxy is not a list of IP addresses"
            }
        }
    }
}

/// A door ready to bind: its name, its section of the configuration, its
/// listener settings and its routes, already behind its guard.
pub struct Door {
    pub name: &'static str,
    pub section: Section,
    pub listener: ListenerSettings,
    pub router: Router,
    pub metrics: Arc<DoorMetrics>,
    /// Who may call, swapped on reload.
    pub access: Arc<AccessCell>,
    /// A Unix socket it listens on too: whoever may open it may call.
    pub unix: Option<UnixSocket>,
}

/// How a door answers a caller its guard refused, in its own format; it
/// gets the request to say which action was refused.
pub type Refuse = fn(Refused, &Request) -> Response;

/// How a door sees its calls.
#[derive(Clone)]
struct Guard {
    access: Arc<AccessCell>,
    refuse: Refuse,
}

#[derive(Clone)]
struct Observer {
    door: &'static str,
    metrics: Arc<DoorMetrics>,
}

impl Door {
    /// `routes` behind the door's access guard, which answers a refusal with
    /// `refuse`, and with each request logged and timed into `metrics`.
    pub fn new(
        name: &'static str,
        section: Section,
        listener: &ListenerSettings,
        routes: Router,
        refuse: Refuse,
        metrics: Arc<DoorMetrics>,
    ) -> Self {
        let access = Arc::new(AccessCell::new(listener.access()));
        let guard = Guard {
            access: Arc::clone(&access),
            refuse,
        };
        let observer = Observer {
            door: name,
            metrics: Arc::clone(&metrics),
        };
        let router = routes
            .layer(middleware::from_fn_with_state(guard, guard_calls))
            .layer(middleware::from_fn_with_state(observer, observe));
        Self {
            name,
            section,
            listener: listener.clone(),
            router,
            metrics,
            access,
            unix: None,
        }
    }

    /// The door listening on `unix` too.
    pub fn with_unix_socket(mut self, unix: Option<UnixSocket>) -> Self {
        self.unix = unix;
        self
    }
}

/// Admits a request only from an allowed address with an allowed client
/// certificate subject (when a list is configured), and records the caller
/// for handlers and the log.
async fn guard_calls(State(guard): State<Guard>, mut req: Request, next: Next) -> Response {
    // On a Unix socket, the socket's owner, group and mode have decided
    // who may call: addresses and certificates do not apply.
    if let Some(unix) = req.extensions().get::<UnixPeer>().copied() {
        let caller = Caller {
            local: Some("unix"),
            uid: unix.uid,
            ..Caller::default()
        };
        req.extensions_mut().insert(caller.clone());
        let mut response = next.run(req).await;
        response.extensions_mut().insert(caller);
        return response;
    }
    let peer = req.extensions().get::<ClientAddr>().map(|c| c.0.ip());
    let identity = req.extensions().get::<Arc<ClientIdentity>>().cloned();
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.as_bytes());
    let access = guard.access.current();
    let client = peer.map(|ip| access.client_ip(ip, forwarded));
    let caller = Caller {
        ip: client.and_then(Result::ok),
        subject: identity.as_ref().map(|i| i.subject.clone()),
        ..Caller::default()
    };
    let refusal = if !matches!(client, Some(Ok(ip)) if access.allows_ip(ip)) {
        // No peer address, an unreadable forwarded one, or one outside
        // allow_from: refused.
        Some(if matches!(client, Some(Err(_))) {
            Refused::Forwarded
        } else {
            Refused::Address
        })
    } else if !access.allows_subject(identity.as_deref()) {
        Some(Refused::Subject)
    } else {
        None
    };
    let mut response = match refusal {
        Some(refused) => (guard.refuse)(refused, &req),
        None => {
            req.extensions_mut().insert(caller.clone());
            next.run(req).await
        }
    };
    response.extensions_mut().insert(caller);
    response
}

/// One log line per request: door, method, route (the path when it is one
/// of the door's, `other` for any other path, which may hold anything, a
/// password included; never the query string), status, duration and client
/// address; and the
/// request's latency into the door's histogram. A request abandoned by its
/// client (the connection closed before the answer) is logged with status
/// 499: a write it queued may still have committed.
async fn observe(State(observer): State<Observer>, req: Request, next: Next) -> Response {
    let mut line = RequestLine {
        door: observer.door,
        started: Instant::now(),
        method: req.method().clone(),
        path: observer.metrics.route(req.uri().path()),
        client: req.extensions().get::<ClientAddr>().map(|c| c.0),
        unix: req.extensions().get::<UnixPeer>().copied(),
        done: false,
    };
    let response = next.run(req).await;
    observer
        .metrics
        .observe(line.path, line.started.elapsed().as_secs_f64());
    line.emit(
        response.status().as_u16(),
        response.extensions().get::<Caller>(),
    );
    response
}

struct RequestLine {
    door: &'static str,
    started: Instant,
    method: Method,
    path: &'static str,
    client: Option<SocketAddr>,
    unix: Option<UnixPeer>,
    done: bool,
}

impl RequestLine {
    fn emit(&mut self, status: u16, caller: Option<&Caller>) {
        self.done = true;
        let forwarded_for = caller
            .and_then(|c| c.ip)
            .filter(|ip| self.client.is_some_and(|c| c.ip() != *ip))
            .map(|ip| ip.to_string());
        tracing::info!(
            target: "registry_rubber::access",
            door = self.door,
            method = %self.method,
            path = %self.path,
            status,
            duration_us = self.started.elapsed().as_micros() as u64,
            client = %match (self.client, self.unix) {
                (Some(addr), _) => addr.to_string(),
                (None, Some(unix)) => format!("unix:uid={}", unix.uid.map_or("-".to_owned(), |u| u.to_string())),
                (None, None) => "-".to_owned(),
            },
            forwarded_for = forwarded_for.as_deref(),
            subject = caller.and_then(|c| c.subject.as_deref()),
            "request"
        );
    }
}

impl Drop for RequestLine {
    fn drop(&mut self) {
        if !self.done {
            self.emit(499, None);
        }
    }
}
