//! The JSON admin API: the door that writes. Every answer is the original's
//! envelope. Handlers only parse, call the credential core, and answer.

mod actions;
pub mod envelope;
mod health;
pub mod params;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, MethodRouter};
use axum::Router;

use super::{Door, Refused};
use crate::config::{ApiSettings, Section};
use crate::credentials::Credentials;
use envelope::{Action, ApiError};

/// Every route of the admin API and the action it answers as: the router,
/// the action a path names, the metrics' route labels and the message for an
/// unknown path all come from this list.
pub const ROUTES: [(&str, Action); 8] = [
    ("/add", Action::Add),
    ("/remove", Action::Remove),
    ("/delete", Action::Remove),
    ("/renew", Action::Renew),
    ("/cleanup", Action::Cleanup),
    ("/list", Action::List),
    ("/healthz", Action::Healthz),
    ("/metrics", Action::Metrics),
];

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub credentials: Arc<Credentials>,
}

/// The admin API as a door.
pub fn door(credentials: Arc<Credentials>, settings: &ApiSettings) -> Door {
    let metrics = credentials
        .metrics()
        .door("api", &ROUTES.map(|(path, _)| path), false);
    Door::new(
        "api",
        Section::Api,
        &settings.listener,
        router(AppState { credentials }, settings.allow_get_mutations),
        refuse,
        metrics,
    )
}

/// The API's routes; with `allow_get_mutations` off, mutations over GET are
/// refused before their handler runs.
pub fn router(state: AppState, allow_get_mutations: bool) -> Router {
    let mut router = Router::new();
    for (path, action) in ROUTES {
        router = router.route(path, handler(action));
    }
    let router = router.fallback(not_found);
    let router = if allow_get_mutations {
        router
    } else {
        router.layer(middleware::from_fn(post_only))
    };
    router.with_state(state)
}

fn handler(action: Action) -> MethodRouter<AppState> {
    match action {
        Action::Add => any(actions::add),
        Action::Remove => any(actions::remove),
        Action::Renew => any(actions::renew),
        Action::Cleanup => any(actions::cleanup),
        Action::List => any(actions::list),
        Action::Healthz => any(health::healthz),
        Action::Metrics => any(metrics),
        Action::Unknown => any(not_found),
    }
}

/// The access guard's refusal, in the envelope of the action refused.
fn refuse(refused: Refused, req: &Request) -> Response {
    Action::of_path(req.uri().path()).answer(Err(ApiError::Forbidden(refused.reason())))
}

/// POST-only mode: a mutation over GET is refused.
async fn post_only(req: Request, next: Next) -> Response {
    let action = Action::of_path(req.uri().path());
    if req.method() == Method::GET && action.mutates() {
        return action.answer(Err(ApiError::MethodNotAllowed {
            allow: "POST",
            hint: "POST: this service refuses changes over GET",
        }));
    }
    next.run(req).await
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
    let mut response = app.credentials.render_metrics().await.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
