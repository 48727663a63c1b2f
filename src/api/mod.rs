//! The JSON admin API. Handlers only parse, call the store, and answer.

mod actions;
pub mod envelope;
mod health;
pub mod params;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::any;
use axum::Router;

use crate::clock::Clock;
use crate::htpasswd::HashType;
use crate::store::Store;
use envelope::{Action, ApiError};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub hash_type: HashType,
    pub bcrypt_cost: u32,
    pub cleanup_threshold: u64,
    pub clock: Arc<dyn Clock>,
    /// Admits as many concurrent password hashings as there are cores.
    pub hashing: Arc<tokio::sync::Semaphore>,
}

/// The peer address of the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/add", any(actions::add))
        .route("/remove", any(actions::remove))
        .route("/delete", any(actions::remove))
        .route("/cleanup", any(actions::cleanup))
        .route("/healthz", any(health::healthz))
        .fallback(not_found)
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

async fn not_found() -> Response {
    Action::Unknown.answer(Err(ApiError::NotFound))
}

/// Longest path written to the log; the rest is cut.
const MAX_LOGGED_PATH: usize = 100;

/// One line per request: method, path (never the query string, which may
/// hold a password), status, duration and client address.
async fn log_request(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path: String = req.uri().path().chars().take(MAX_LOGGED_PATH).collect();
    let client = req.extensions().get::<ClientAddr>().map(|c| c.0);
    let response = next.run(req).await;
    tracing::info!(
        target: "registry_rubber::access",
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        duration_us = started.elapsed().as_micros() as u64,
        client = %client.map_or_else(|| "-".to_owned(), |a| a.to_string()),
        "request"
    );
    response
}
