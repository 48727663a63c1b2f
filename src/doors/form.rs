//! What the doors that read forms share: `application/x-www-form-urlencoded`
//! text (a query string or a POST body) read strictly, a Content-Type's
//! media type, and a request body read with a size limit.

use axum::body::{to_bytes, Body};

/// Why form text could not be read; never repeats what was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("malformed percent-encoding")]
    PercentEncoding,
    #[error("text that is not valid UTF-8")]
    NotUtf8,
}

/// The name=value pairs of form text, in order, repeats included: `+` is a
/// space, `%XX` a byte; anything else after `%` is an error, and so is a
/// result that is not UTF-8. A pair without `=` has an empty value.
pub fn pairs(input: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    input
        .split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (key, value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            Ok((decode(key)?, decode(value)?))
        })
        .collect()
}

fn decode(input: &[u8]) -> Result<String, FormError> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = input.get(i + 1..i + 3).ok_or(FormError::PercentEncoding)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(FormError::PercentEncoding);
                }
                let text = std::str::from_utf8(hex).map_err(|_| FormError::PercentEncoding)?;
                out.push(u8::from_str_radix(text, 16).map_err(|_| FormError::PercentEncoding)?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| FormError::NotUtf8)
}

/// The media type of a Content-Type header, lower case, without parameters.
pub fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Longer than the limit.
    TooLarge,
    /// The upload broke off or was malformed.
    Broken,
}

/// The whole body, at most `limit` bytes.
pub async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, BodyError> {
    to_bytes(body, limit).await.map_err(|e| {
        // The limit shows as a length-limit error somewhere in the chain;
        // anything else is a broken upload.
        let mut source: Option<&dyn std::error::Error> = Some(&e);
        while let Some(err) = source {
            if err.is::<http_body_util::LengthLimitError>() {
                return BodyError::TooLarge;
            }
            source = err.source();
        }
        BodyError::Broken
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_text_is_read_strictly() {
        assert_eq!(
            pairs(b"a=1&b=x+y&c=%41%2b&d&&e=").unwrap(),
            [
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "A+".into()),
                ("d".into(), String::new()),
                ("e".into(), String::new())
            ]
        );
        assert_eq!(pairs(b"a=%4"), Err(FormError::PercentEncoding));
        assert_eq!(pairs(b"a=%zz"), Err(FormError::PercentEncoding));
        assert_eq!(pairs(b"a=%+1"), Err(FormError::PercentEncoding));
        assert_eq!(pairs(b"a=%ff"), Err(FormError::NotUtf8));
        assert_eq!(
            media_type("Application/X-WWW-Form-Urlencoded; charset=utf-8"),
            "application/x-www-form-urlencoded"
        );
    }
}
