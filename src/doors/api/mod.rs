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
use crate::audit::Caller;
use crate::callers::{CallersCell, Unnamed};
use crate::config::{ApiSettings, Section};
use crate::credentials::Credentials;
use crate::domain::Rights;
use crate::tls::ClientIdentity;
use envelope::{Action, ApiError};

/// Every route of the admin API and the action it answers as: the router,
/// the action a path names, the metrics' route labels and the message for an
/// unknown path all come from this list.
pub const ROUTES: [(&str, Action); 9] = [
    ("/add", Action::Add),
    ("/remove", Action::Remove),
    ("/delete", Action::Remove),
    ("/renew", Action::Renew),
    ("/cleanup", Action::Cleanup),
    ("/list", Action::List),
    ("/healthz", Action::Healthz),
    ("/metrics", Action::Metrics),
    ("/openapi.json", Action::OpenApi),
];

/// The OpenAPI 3.1 description of this API, as docs/openapi.json holds it.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub credentials: Arc<Credentials>,
}

/// The admin API as a door, its callers named by `callers`.
pub fn door(
    credentials: Arc<Credentials>,
    settings: &ApiSettings,
    callers: Arc<CallersCell>,
) -> Door {
    let metrics = credentials
        .metrics()
        .door("api", &ROUTES.map(|(path, _)| path), false);
    Door::new(
        "api",
        Section::Api,
        &settings.listener,
        router(
            AppState { credentials },
            settings.allow_get_mutations,
            HostNames::for_api(settings),
            callers,
        ),
        refuse,
        metrics,
    )
}

/// The API's routes; with `allow_get_mutations` off, mutations over GET are
/// refused before their handler runs. Requests a web browser sends for a
/// page of another site, or under a host name that is not the API's, are
/// refused before anything else.
pub fn router(
    state: AppState,
    allow_get_mutations: bool,
    hosts: HostNames,
    callers: Arc<CallersCell>,
) -> Router {
    let mut router = Router::new();
    for (path, action) in ROUTES {
        router = router.route(path, handler(action));
    }
    let router = router
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(callers, name_caller));
    let router = if allow_get_mutations {
        router
    } else {
        router.layer(middleware::from_fn(post_only))
    };
    router
        .layer(middleware::from_fn_with_state(
            Arc::new(hosts),
            from_browsers,
        ))
        .with_state(state)
}

/// The host names the API answers to.
#[derive(Debug, Clone)]
pub struct HostNames(Vec<String>);

impl HostNames {
    /// `allowed_hosts`, with the listen address itself, and localhost,
    /// 127.0.0.1 and ::1 when it is a loopback or wildcard address;
    /// localhost for a Unix socket.
    pub fn for_api(settings: &ApiSettings) -> Self {
        let mut names = settings.allowed_hosts.clone();
        if let Some(addr) = settings.listener.listen {
            let ip = addr.ip();
            if ip.is_loopback() || ip.is_unspecified() {
                names.extend(["localhost", "127.0.0.1", "::1"].map(str::to_owned));
            }
            if !ip.is_unspecified() {
                names.push(ip.to_string());
            }
        }
        // Clients on the Unix socket (curl --unix-socket) say localhost.
        if settings.unix_socket.is_some() {
            names.push("localhost".to_owned());
        }
        Self(names)
    }

    /// Whether `authority` (`host`, `host:port`, `[v6]:port`) names one of
    /// them.
    fn allows(&self, authority: &str) -> bool {
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => authority.rsplit_once(':').map_or(authority, |(h, p)| {
                if p.bytes().all(|b| b.is_ascii_digit()) {
                    h
                } else {
                    authority
                }
            }),
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.0.contains(&host)
    }
}

/// Refuses what a web page could make a browser send: a Host that is not
/// one of the API's names (a page whose name was rebound to this address),
/// an `Origin` of another site, or `Sec-Fetch-Site` saying cross-site or
/// same-site. Pipelines (curl, scripts) send neither Origin nor
/// Sec-Fetch-Site, and the Host they connect to.
async fn from_browsers(State(hosts): State<Arc<HostNames>>, req: Request, next: Next) -> Response {
    let action = Action::of_path(req.uri().path());
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if !host.is_some_and(|h| hosts.allows(h)) {
        return action.answer(Err(ApiError::Misdirected));
    }
    let fetch_site = headers.get("sec-fetch-site").map(|v| v.as_bytes());
    let cross_site = matches!(fetch_site, Some(b"cross-site" | b"same-site"));
    let foreign_origin = headers.get(header::ORIGIN).is_some_and(|origin| {
        let origin = origin.to_str().unwrap_or_default();
        let authority = origin
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'));
        !authority.is_some_and(|a| hosts.allows(a))
    });
    if cross_site || foreign_origin {
        return action.answer(Err(ApiError::Forbidden(
            "request from a web page of another site",
        )));
    }
    next.run(req).await
}

/// Decides what the caller may do. Without a callers file, everything (the
/// original's rights); with one, what its entry for the caller allows, and
/// a request that names no caller of the file is refused with 401. Health
/// and metrics are answered to every caller the door admits.
async fn name_caller(
    State(callers): State<Arc<CallersCell>>,
    mut req: Request,
    next: Next,
) -> Response {
    let action = Action::of_path(req.uri().path());
    let mut caller = Caller::of(&req);
    match callers.current() {
        None => caller.rights = Some(Arc::new(Rights::all())),
        Some(_) if action.is_open() => {}
        Some(callers) => {
            let identity = req.extensions().get::<Arc<ClientIdentity>>().cloned();
            match callers.identify(req.headers(), identity.as_deref()) {
                Ok(named) => {
                    caller.name = Some(named.name);
                    caller.rights = Some(named.rights);
                }
                Err(Unnamed) => {
                    let mut response = action.answer(Err(ApiError::Unnamed));
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"registry-rubber\""),
                    );
                    return response;
                }
            }
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
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
        Action::OpenApi => any(openapi),
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

/// `GET /openapi.json`: the description of this API.
async fn openapi(method: Method) -> Response {
    if !matches!(method, Method::GET | Method::HEAD) {
        return Action::OpenApi.answer(Err(ApiError::MethodNotAllowed {
            allow: "GET, HEAD",
            hint: "GET",
        }));
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        OPENAPI,
    )
        .into_response()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// docs/openapi.json describes exactly the routes served, each with the
    /// methods it answers: GET and POST for a mutation, GET for the rest.
    #[test]
    fn the_description_names_every_route_and_no_other() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let described: BTreeSet<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let served: BTreeSet<&str> = ROUTES.iter().map(|(path, _)| *path).collect();
        assert_eq!(described, served);
        for (path, action) in ROUTES {
            let methods: BTreeSet<&str> = doc["paths"][path]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let expected: BTreeSet<&str> = if action.mutates() {
                ["get", "post"].into()
            } else {
                ["get"].into()
            };
            assert_eq!(methods, expected, "{path}");
        }
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    }
}
