//! Basic credentials, as the doors that check them read the `Authorization`
//! header: strictly, refusing anything unexpected.

use axum::http::{header, HeaderMap};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

use crate::domain::{Password, Username};

/// Base64 as Basic credentials carry it; padding is accepted but not
/// required.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The user and password of the request's one Basic `Authorization` header,
/// or why there are none. Anything unexpected is a refusal: no header, two
/// headers, another scheme, bad base64, no colon, text that is not UTF-8, a
/// user name no credential can have.
pub fn basic_credentials(headers: &HeaderMap) -> Result<(Username, Password), &'static str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or("no_credentials")?;
    if values.next().is_some() {
        return Err("malformed_authorization");
    }
    let value = value.as_bytes();
    let (scheme, token) = match value.iter().position(|b| *b == b' ') {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => return Err("malformed_authorization"),
    };
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return Err("not_basic");
    }
    let token = token.trim_ascii();
    let decoded = BASE64
        .decode(token)
        .map_err(|_| "malformed_authorization")?;
    let text = String::from_utf8(decoded).map_err(|_| "malformed_authorization")?;
    let (user, password) = text.split_once(':').ok_or("malformed_authorization")?;
    let user = Username::parse(user).map_err(|_| "unusable_user_name")?;
    Ok((user, Password::presented(password.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn basic(user_password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        )
    }

    #[test]
    fn basic_credentials_are_read_strictly() {
        let (u, p) = basic_credentials(&headers(&[&basic("ci-1:pa:ss")])).unwrap();
        assert_eq!((u.as_str(), p.expose()), ("ci-1", "pa:ss"));
        let (_, p) = basic_credentials(&headers(&["bAsIc   Y2ktMTpwYXNz"])).unwrap();
        assert_eq!(
            p.expose(),
            "pass",
            "scheme in any case, spaces before the token"
        );
        let (_, p) = basic_credentials(&headers(&["Basic Y2ktMTpwYXNzMQ"])).unwrap();
        assert_eq!(p.expose(), "pass1", "padding optional");
        for (value, why) in [
            (vec![], "no_credentials"),
            (vec!["Basic"], "malformed_authorization"),
            (vec!["Bearer abc"], "not_basic"),
            (vec!["Basic !!!"], "malformed_authorization"),
            (vec!["Basic Y2ktMQ=="], "malformed_authorization"), // no colon
            (vec!["Basic /w=="], "malformed_authorization"),     // not UTF-8
            (vec!["Basic OnBhc3M="], "unusable_user_name"),      // empty user
        ] {
            assert_eq!(
                basic_credentials(&headers(&value)).err(),
                Some(why),
                "{value:?}"
            );
        }
        let two = headers(&[&basic("a:b"), &basic("c:d")]);
        assert_eq!(
            basic_credentials(&two).err(),
            Some("malformed_authorization"),
            "two headers"
        );
    }
}
