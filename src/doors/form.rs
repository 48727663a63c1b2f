//! What the doors that read forms share: `application/x-www-form-urlencoded`
//! text (a query string or a POST body) read strictly, a Content-Type's
//! media type, and a request body read with a size limit.

use std::time::Duration;

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
    /// The client stopped sending before the whole body came.
    TimedOut,
}

/// How long a client may take to send a request body. Without a bound, a
/// client that announces a body and sends half of it would hold its
/// connection, and the door's slot, for ever.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The whole body, at most `limit` bytes, within [`BODY_READ_TIMEOUT`].
pub async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, BodyError> {
    read_body_within(body, limit, BODY_READ_TIMEOUT).await
}

async fn read_body_within(
    body: Body,
    limit: usize,
    within: Duration,
) -> Result<bytes::Bytes, BodyError> {
    let read = tokio::time::timeout(within, to_bytes(body, limit))
        .await
        .map_err(|_| BodyError::TimedOut)?;
    read.map_err(|e| {
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

    /// A body that sends its first bytes, then nothing more.
    struct Stalls(bool);

    impl hyper::body::Body for Stalls {
        type Data = bytes::Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>>
        {
            if self.0 {
                return std::task::Poll::Pending;
            }
            self.0 = true;
            let first = hyper::body::Frame::data(bytes::Bytes::from_static(b"a=1&"));
            std::task::Poll::Ready(Some(Ok(first)))
        }
    }

    #[tokio::test]
    async fn a_body_that_stops_coming_times_out() {
        let within = Duration::from_millis(50);
        let stalled = read_body_within(Body::new(Stalls(false)), 100, within).await;
        assert_eq!(stalled, Err(BodyError::TimedOut));
        let whole = read_body_within(Body::from("a=1"), 100, within).await;
        assert_eq!(whole, Ok(bytes::Bytes::from_static(b"a=1")));
    }

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
