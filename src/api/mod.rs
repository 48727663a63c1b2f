//! The JSON admin API. Handlers only parse, call the store, and answer.

mod actions;
pub mod envelope;
mod health;
pub mod params;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;

use crate::access::AccessPolicy;
use crate::audit::Caller;
use crate::credentials::Credentials;
use crate::tls::ClientIdentity;
use envelope::{Action, ApiError};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub credentials: Arc<Credentials>,
    pub access: Arc<AccessPolicy>,
}

/// The peer address of the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/add", any(actions::add))
        .route("/remove", any(actions::remove))
        .route("/delete", any(actions::remove))
        .route("/renew", any(actions::renew))
        .route("/cleanup", any(actions::cleanup))
        .route("/list", any(actions::list))
        .route("/healthz", any(health::healthz))
        .route("/metrics", any(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn not_found() -> Response {
    Action::Unknown.answer(Err(ApiError::NotFound))
}

/// `GET /metrics`: the Prometheus text format.
async fn metrics(State(app): State<AppState>, method: Method) -> Response {
    if !matches!(method, Method::GET | Method::HEAD) {
        return Action::Metrics.answer(Err(ApiError::MethodNotAllowed {
            allow: "GET, HEAD",
            hint: "GET",
        }));
    }
    let creds = &app.credentials;
    let live = creds.store.count_live(creds.clock.now()).await.ok();
    let body = creds.metrics.render(live, creds.store.error_count());
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Admits a request only from an allowed address, with an allowed client
/// certificate subject (when a list is configured), and, in POST-only mode,
/// refuses mutations over GET. Records the caller for handlers and the log.
async fn guard(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ClientAddr>().map(|c| c.0.ip());
    let identity = req.extensions().get::<Arc<ClientIdentity>>().cloned();
    let forwarded = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    let caller = Caller {
        ip: peer.map(|ip| app.access.client_ip(ip, forwarded)),
        subject: identity.as_ref().map(|i| i.subject.clone()),
        local: None,
    };
    let action = Action::of_path(req.uri().path());
    let refusal = if caller.ip.is_some_and(|ip| !app.access.allows_ip(ip)) {
        Some(ApiError::Forbidden("client address not in allow_from"))
    } else if !app.access.allows_subject(identity.as_deref()) {
        Some(ApiError::Forbidden(
            "client certificate subject not in allowed_subjects",
        ))
    } else if !app.access.allow_get_mutations && req.method() == Method::GET && action.mutates() {
        Some(ApiError::MethodNotAllowed {
            allow: "POST",
            hint: "POST: this service refuses changes over GET",
        })
    } else {
        None
    };
    let mut response = match refusal {
        Some(error) => action.answer(Err(error)),
        None => {
            req.extensions_mut().insert(caller.clone());
            next.run(req).await
        }
    };
    response.extensions_mut().insert(caller);
    response
}

/// Longest path written to the log; the rest is cut.
const MAX_LOGGED_PATH: usize = 100;

/// One log line per request: method, path (never the query string, which
/// may hold a password), status, duration and client address; and the
/// request's latency into the histogram. A request abandoned by its client
/// (the connection closed before the answer) is logged with status 499: its
/// write may still have committed.
async fn observe(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let mut line = RequestLine {
        started: Instant::now(),
        method: req.method().clone(),
        path: req.uri().path().chars().take(MAX_LOGGED_PATH).collect(),
        client: req.extensions().get::<ClientAddr>().map(|c| c.0),
        done: false,
    };
    let response = next.run(req).await;
    app.credentials
        .metrics
        .observe(&line.path, line.started.elapsed().as_secs_f64());
    line.emit(
        response.status().as_u16(),
        response.extensions().get::<Caller>(),
    );
    response
}

struct RequestLine {
    started: Instant,
    method: Method,
    path: String,
    client: Option<SocketAddr>,
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
            method = %self.method,
            path = %self.path,
            status,
            duration_us = self.started.elapsed().as_micros() as u64,
            client = %self.client.map_or_else(|| "-".to_owned(), |a| a.to_string()),
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
