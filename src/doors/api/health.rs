//! `GET /healthz`: 200 when the database answers, 503 otherwise.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;

use super::envelope::{Action, ApiError, Envelope};
use super::AppState;

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
            tracing::warn!(error = %e, "health check: database does not answer");
            Ok(Envelope::new(
                Action::Healthz,
                StatusCode::SERVICE_UNAVAILABLE,
                "unhealthy: database does not answer",
            )
            .with("database", database))
        }
    }
}
