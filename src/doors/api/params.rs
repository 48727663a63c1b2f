//! Request parameters, from the query string (GET, as pipelines call the
//! original) or from a POST body (form or JSON). Strict: malformed
//! percent-encoding, invalid UTF-8, a malformed or oversized body are refused,
//! and no error message repeats what the client sent.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method};
use serde_json::Value;

use super::envelope::ApiError;
use crate::doors::form::{self, media_type, BodyError, FormError};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The parameters this API reads. Others (the original's `realm`) are ignored.
pub(crate) const KNOWN: &[&str] = &[
    "user",
    "scope",
    "passwd",
    "older_than",
    "ttl",
    "prefix",
    "after",
    "limit",
];

/// Parameters by name. With a repeated name the first occurrence wins, and an
/// empty value counts as missing, as in the original.
#[derive(Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.pairs.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Params").field("names", &names).finish()
    }
}

impl Params {
    /// Reads the parameters of a mutation. GET takes the query string, as
    /// the original's callers send them; POST takes the body only: a POST
    /// with a query string is refused, so that a password never rides in a
    /// URL that proxies log. Any other method, HEAD included, is refused
    /// before anything runs.
    pub async fn from_mutation(req: Request) -> Result<Params, ApiError> {
        let (parts, body) = req.into_parts();
        let mut params = Params::default();
        match parts.method {
            Method::GET => {}
            Method::POST => {
                if parts.uri.query().is_some_and(|q| !q.is_empty()) {
                    return Err(ApiError::QueryOnPost);
                }
                let content_type = parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(media_type);
                let bytes = read_body(body).await?;
                match content_type.as_deref() {
                    _ if bytes.is_empty() => {}
                    Some("application/x-www-form-urlencoded") => {
                        params.extend_form(&bytes, "request body")?
                    }
                    Some("application/json") => params.extend_json(&bytes)?,
                    _ => return Err(ApiError::UnsupportedMediaType),
                }
            }
            _ => {
                return Err(ApiError::MethodNotAllowed {
                    allow: "GET, POST",
                    hint: "GET with a query string or POST with a form or JSON body",
                })
            }
        }
        if let Some(query) = parts.uri.query() {
            params.extend_form(query.as_bytes(), "query string")?;
        }
        Ok(params)
    }

    /// Reads the parameters of a read-only request (GET or HEAD) from the
    /// query string.
    pub fn from_read(req: Request) -> Result<Params, ApiError> {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return Err(ApiError::MethodNotAllowed {
                allow: "GET, HEAD",
                hint: "GET",
            });
        }
        let mut params = Params::default();
        if let Some(query) = req.uri().query() {
            params.extend_form(query.as_bytes(), "query string")?;
        }
        Ok(params)
    }

    /// The first value given for `name`, unless it is empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Every value given for `name`, in order, empty ones included.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value given for `name`, empty or not: None only when the
    /// name is absent. For parameters where absence means "generate one"
    /// while an empty value (an unset variable in the caller's script) must
    /// be refused.
    pub fn given(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// As [`Params::given`], moving the value out (for secrets, so that no
    /// copy lingers here).
    pub fn take_given(&mut self, name: &str) -> Option<String> {
        let i = self.pairs.iter().position(|(k, _)| k == name)?;
        Some(std::mem::take(&mut self.pairs[i].1))
    }

    fn extend_form(&mut self, input: &[u8], what: &str) -> Result<(), ApiError> {
        let pairs = form::pairs(input).map_err(|e| match e {
            FormError::PercentEncoding => {
                ApiError::Malformed(format!("malformed percent-encoding in the {what}"))
            }
            FormError::NotUtf8 => ApiError::Malformed(format!("the {what} is not valid UTF-8")),
        })?;
        self.pairs.extend(
            pairs
                .into_iter()
                .filter(|(k, _)| KNOWN.contains(&k.as_str())),
        );
        Ok(())
    }

    /// A JSON object, read with the same rules as a form: the first of a
    /// repeated key wins and `null` counts as empty. Values are strings;
    /// fields other than the password may also be whole numbers.
    fn extend_json(&mut self, input: &[u8]) -> Result<(), ApiError> {
        let JsonPairs(pairs) = serde_json::from_slice(input)
            .map_err(|_| ApiError::Malformed("request body is not a JSON object".into()))?;
        for (key, value) in pairs {
            let Some(&name) = KNOWN.iter().find(|k| **k == key) else {
                continue;
            };
            // A list of scopes is several values of `scope`.
            if let (Value::Array(items), "scope") = (&value, name) {
                if items.is_empty() {
                    // Given, but empty: refused as `scope=` is.
                    self.pairs.push((name.to_owned(), String::new()));
                }
                for item in items {
                    let Value::String(s) = item else {
                        return Err(ApiError::BadParameter {
                            name,
                            detail: "must be a JSON string or a list of strings".into(),
                        });
                    };
                    self.pairs.push((name.to_owned(), s.clone()));
                }
                continue;
            }
            let text = match value {
                Value::Null => String::new(),
                Value::String(s) => s,
                Value::Number(n) if name != "passwd" && whole_number(&n).is_some() => {
                    whole_number(&n).unwrap_or_default().to_string()
                }
                _ if name == "user" => {
                    return Err(ApiError::InvalidUser {
                        detail: "user must be a JSON string or a whole number".into(),
                    })
                }
                _ if name == "passwd" => {
                    return Err(ApiError::BadParameter {
                        name,
                        detail: "must be a JSON string".into(),
                    })
                }
                _ => {
                    return Err(ApiError::BadParameter {
                        name,
                        detail: "must be a JSON string or a whole number".into(),
                    })
                }
            };
            self.pairs.push((name.to_owned(), text));
        }
        Ok(())
    }
}

/// The value of a JSON number that is a whole number from 0 to 2^64 - 1,
/// however it is written (`1000`, `1000.0`, `1e3`): JSON gives a number a
/// value, not a form.
fn whole_number(n: &serde_json::Number) -> Option<u64> {
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 18_446_744_073_709_551_616.0)
            // Exact: every whole f64 below 2^64 is a u64.
            .map(|f| f as u64)
    })
}

/// A JSON object's members in the order they were written, repeated keys
/// included (a map would keep only the last).
struct JsonPairs(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for JsonPairs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = JsonPairs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<JsonPairs, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, Value>()? {
                    pairs.push(pair);
                }
                Ok(JsonPairs(pairs))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    form::read_body(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => ApiError::TooLarge {
                limit: MAX_BODY_BYTES,
            },
            BodyError::Broken => ApiError::Malformed("request body could not be read".into()),
            BodyError::TimedOut => ApiError::BodyTimedOut,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(s: &str) -> Result<Params, ApiError> {
        let mut p = Params::default();
        p.extend_form(s.as_bytes(), "query string")?;
        Ok(p)
    }

    #[test]
    fn first_value_wins_and_empty_is_missing() {
        let p = form("user=a&user=b&passwd=&realm=x").unwrap();
        assert_eq!(p.get("user"), Some("a"));
        assert_eq!(p.get("passwd"), None);
        assert_eq!(p.get("realm"), None, "unknown names are dropped");
    }

    #[test]
    fn percent_and_plus_decode() {
        let p = form("passwd=p%C3%A4ss+w%2Bord%26").unwrap();
        assert_eq!(p.get("passwd"), Some("päss w+ord&"));
    }

    #[test]
    fn malformed_encoding_and_bad_utf8_are_refused_without_echo() {
        for bad in [
            "passwd=sec%zzret",
            "passwd=secret%4",
            "passwd=secret%",
            "passwd=sec%ff%feret",
        ] {
            let err = form(bad).err().unwrap().to_string();
            assert!(!err.contains("sec"), "{err}");
            assert!(err.contains("query string"), "{err}");
        }
    }

    #[test]
    fn json_takes_strings_and_numeric_names() {
        let mut p = Params::default();
        p.extend_json(
            br#"{"user": 1423382819, "passwd": "x", "realm": {"a": 1}, "older_than": null}"#,
        )
        .unwrap();
        assert_eq!(p.get("user"), Some("1423382819"));
        assert_eq!(p.take_given("passwd").as_deref(), Some("x"));
        assert_eq!(p.get("older_than"), None);
        assert_eq!(p.given("older_than"), Some(""), "null is given, and empty");
        assert_eq!(p.given("ttl"), None, "absent");
        let mut p = Params::default();
        p.extend_json(br#"{"user": "first", "user": "second", "ttl": null}"#)
            .unwrap();
        assert_eq!(p.get("user"), Some("first"), "first wins, as in forms");
        assert_eq!(p.get("ttl"), None, "null is empty");
        let mut p = Params::default();
        assert!(matches!(
            p.extend_json(br#"{"user": true}"#),
            Err(ApiError::InvalidUser { .. })
        ));
        assert!(p.extend_json(br#"{"user": 1.5}"#).is_err(), "not whole");
        assert!(p.extend_json(br#"{"user": -1}"#).is_err(), "negative");
        assert!(p.extend_json(br#"{"ttl": 18446744073709551616}"#).is_err());
        for (written, value) in [
            ("1e3", "1000"),
            ("1000.0", "1000"),
            ("18446744073709551615", "18446744073709551615"),
            ("9.223372036854775808e18", "9223372036854775808"),
        ] {
            let mut p = Params::default();
            p.extend_json(format!(r#"{{"ttl": {written}}}"#).as_bytes())
                .unwrap_or_else(|e| panic!("{written}: {e}"));
            assert_eq!(p.get("ttl"), Some(value), "{written}: its value");
        }
        assert!(p.extend_json(br#"{"ttl": -5}"#).is_err());
        assert!(p.extend_json(br#"{"passwd": 12345}"#).is_err());
        assert!(p.extend_json(b"[1,2]").is_err());
        assert!(p.extend_json(b"{").is_err());
    }

    #[test]
    fn debug_shows_names_only() {
        let p = form("user=u&passwd=hunter2").unwrap();
        let shown = format!("{p:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
