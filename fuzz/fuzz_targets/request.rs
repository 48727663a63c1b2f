//! Request parsing of the admin API: the query string, form bodies and JSON
//! bodies, through `Params::from_mutation` and `Params::from_read` as the
//! handlers call them.
//!
//! Input, by its first byte:
//! - `q`, `f`, `j`: lines `name\tvalue` (any text) that the target encodes
//!   itself, as a GET query string, a POST form body or a POST JSON object,
//!   then checks that what is read back is exactly what was sent: the names
//!   the API knows, in order, repeats included (the first wins), an empty
//!   value or a JSON `null` given but empty, whole numbers as their digits;
//! - anything else: `METHOD\ncontent-type\nquery\nbody` as they come. Checked:
//!   a method other than GET or POST is refused before anything is read, a
//!   POST with a query string is refused, GET takes the query string and
//!   POST the body only; form text is read as a strict decoder reads it
//!   (and refused exactly when one refuses it); only known names are kept;
//!   and no error message repeats a password that was sent.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::Request;
use libfuzzer_sys::fuzz_target;
use percent_encoding::{percent_decode, utf8_percent_encode, NON_ALPHANUMERIC};
use registry_rubber::doors::api::envelope::ApiError;
use registry_rubber::doors::api::params::Params;
use registry_rubber::fuzzing::known_params;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        b'q' | b'f' | b'j' => round_trip(mode, &String::from_utf8_lossy(rest)),
        _ => raw(rest),
    }
});

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
    })
}

fn mutation(req: Request) -> Result<Params, ApiError> {
    runtime().block_on(Params::from_mutation(req))
}

fn round_trip(mode: u8, text: &str) {
    let sent: Vec<(&str, &str)> = text
        .lines()
        .map(|l| l.split_once('\t').unwrap_or((l, "")))
        .collect();
    let model: Vec<(String, String)> = sent
        .iter()
        .filter(|(k, _)| known_params().contains(k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let encode = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let form = sent
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v).replace("%20", "+")))
        .collect::<Vec<_>>()
        .join("&");
    let req = match mode {
        b'q' => Request::get(format!("/add?{form}")).body(Body::empty()),
        b'f' => Request::post("/add")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(form)),
        _ => {
            // Whole numbers go as JSON numbers (never the password, which
            // must be a string), the empty string half the time as null.
            let members: Vec<String> = sent
                .iter()
                .enumerate()
                .map(|(i, (k, v))| {
                    let value = match v.parse::<u64>() {
                        Ok(n) if *k != "passwd" && n.to_string() == *v => n.to_string(),
                        _ if v.is_empty() && i % 2 == 0 => "null".to_owned(),
                        _ => serde_json::to_string(v).expect("a string"),
                    };
                    format!("{}:{value}", serde_json::to_string(k).expect("a string"))
                })
                .collect();
            Request::post("/add")
                .header("content-type", "application/json")
                .body(Body::from(format!("{{{}}}", members.join(","))))
        }
    };
    match mutation(req.expect("a request")) {
        Ok(params) => check_against(&params, &model),
        Err(e) => panic!("well-formed parameters refused: {e}"),
    }
}

/// Every known name reads back as the model says: all its values in order,
/// the first as `given`, and as `get` unless it is empty.
fn check_against(params: &Params, model: &[(String, String)]) {
    for name in known_params() {
        let values: Vec<&str> = model
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(params.all(name), values, "{name}");
        assert_eq!(params.given(name), values.first().copied(), "{name}");
        assert_eq!(
            params.get(name),
            values.first().copied().filter(|v| !v.is_empty()),
            "{name}"
        );
    }
}

fn raw(input: &[u8]) {
    let mut parts = input.splitn(4, |b| *b == b'\n');
    let method = parts.next().unwrap_or_default();
    let content_type = parts.next().unwrap_or_default();
    let query = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default().to_vec();
    let Ok(method) = axum::http::Method::from_bytes(method) else {
        return;
    };
    let uri = if query.is_empty() {
        "/add".to_owned()
    } else {
        format!("/add?{}", String::from_utf8_lossy(query))
    };
    let mut builder = Request::builder().method(method.clone()).uri(uri);
    if !content_type.is_empty() {
        builder = builder.header("content-type", content_type);
    }
    // Only what hyper could deliver: a valid URI and header.
    let Ok(req) = builder.body(Body::from(body.clone())) else {
        return;
    };
    let query = req.uri().query().unwrap_or_default().as_bytes().to_vec();
    let media = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(registry_rubber::doors::form::media_type);
    let read_req = Request::builder()
        .method(method.clone())
        .uri(req.uri().clone())
        .body(Body::empty())
        .expect("a request");

    let result = mutation(req);
    let is_form = |m: &Option<String>| m.as_deref() == Some("application/x-www-form-urlencoded");
    match method {
        axum::http::Method::GET => check_form(&result, &query),
        axum::http::Method::POST if !query.is_empty() => {
            assert!(matches!(result, Err(ApiError::QueryOnPost)), "{result:?}")
        }
        axum::http::Method::POST if body.is_empty() => check_form(&result, b""),
        axum::http::Method::POST if is_form(&media) => check_form(&result, &body),
        axum::http::Method::POST if media.as_deref() == Some("application/json") => {
            let object =
                serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v.is_object());
            if !object {
                assert!(result.is_err(), "not a JSON object, yet read");
            }
            if let Ok(params) = &result {
                check_known_only(params);
            }
            check_no_echo(&result, &body);
        }
        axum::http::Method::POST => assert!(
            matches!(result, Err(ApiError::UnsupportedMediaType)),
            "{result:?}"
        ),
        _ => assert!(
            matches!(result, Err(ApiError::MethodNotAllowed { .. })),
            "{result:?}"
        ),
    }

    let read = Params::from_read(read_req);
    match method {
        axum::http::Method::GET | axum::http::Method::HEAD => check_form(&read, &query),
        _ => assert!(
            matches!(read, Err(ApiError::MethodNotAllowed { .. })),
            "{read:?}"
        ),
    }
}

/// Form text read as an independent strict decoder reads it: refused when
/// a `%` is not followed by two hex digits or a name or value is not UTF-8;
/// otherwise the known names with their values, in order.
fn check_form(result: &Result<Params, ApiError>, text: &[u8]) {
    let strict = |part: &[u8]| -> Option<String> {
        let mut i = 0;
        while i < part.len() {
            if part[i] == b'%' {
                let hex = part.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
            }
            i += 1;
        }
        let plus: Vec<u8> = part
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        percent_decode(&plus)
            .decode_utf8()
            .ok()
            .map(|s| s.into_owned())
    };
    let decoded: Option<Vec<(String, String)>> = text
        .split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            Some((strict(k)?, strict(v)?))
        })
        .collect();
    match (decoded, result) {
        (Some(pairs), Ok(params)) => {
            let model: Vec<(String, String)> = pairs
                .into_iter()
                .filter(|(k, _)| known_params().contains(&k.as_str()))
                .collect();
            check_against(params, &model);
        }
        (None, Err(ApiError::Malformed(_))) => {}
        (decoded, result) => panic!("decoder says {decoded:?}, the API {result:?}"),
    }
    check_no_echo(result, text);
}

fn check_known_only(params: &Params) {
    for name in ["realm", "password", "User", "user ", ""] {
        assert!(params.all(name).is_empty(), "{name:?} kept");
    }
}

/// No error message holds a password that was sent (one long enough not to
/// turn up in a message by chance).
fn check_no_echo(result: &Result<Params, ApiError>, sent: &[u8]) {
    let Err(e) = result else {
        return;
    };
    let message = e.to_string();
    let text = String::from_utf8_lossy(sent);
    for part in text.split(['&', '"', ',', '{', '}', ':', '=']) {
        let part = part.trim();
        if part.len() >= 12 && part.chars().all(|c| c.is_ascii_alphanumeric()) {
            assert!(!message.contains(part), "error repeats {part:?}: {message}");
        }
    }
}
