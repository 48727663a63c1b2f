//! `GET /healthz`: 200 when the database answers and writes commit, 503
//! otherwise.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;

use super::envelope::{Action, ApiError, Envelope};
use super::AppState;
use crate::credentials::Unhealthy;

pub async fn healthz(State(app): State<AppState>, method: Method) -> Response {
    let result = match method {
        Method::GET | Method::HEAD => check(&app).await,
        _ => Err(ApiError::MethodNotAllowed {
            allow: "GET, HEAD",
            hint: "GET",
        }),
    };
    Action::Healthz.answer(result)
}

async fn check(app: &AppState) -> Result<Envelope, ApiError> {
    let database = app.credentials.backend_name();
    match app.credentials.health().await {
        Ok(()) => Ok(Envelope::ok(Action::Healthz, "healthy").with("database", database)),
        Err(e) => {
            tracing::warn!(error = %e, "health check: unhealthy");
            // The database's own words stay in the log.
            let msg = match e {
                Unhealthy::Database(_) => "unhealthy: database does not answer",
                Unhealthy::WritesFailing => "unhealthy: writes are failing",
            };
            Ok(
                Envelope::new(Action::Healthz, StatusCode::SERVICE_UNAVAILABLE, msg)
                    .with("database", database),
            )
        }
    }
}
