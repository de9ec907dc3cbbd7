//! Bounded, strict parsing of `application/x-www-form-urlencoded` request bodies.
//!
//! Strict where the RFCs are: a parameter may appear once (RFC 6749 3.1), an empty value counts
//! as absent, a broken percent escape or invalid UTF-8 is `invalid_request` rather than being
//! silently replaced. Bounded everywhere: the body is read through a length limit while it
//! streams in, so a huge body is refused without being buffered.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Method, Request, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};

use crate::error::OAuthError;

/// The default request body limit: 16 KiB, far above any legitimate OAuth request.
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024;

/// A sensible time to allow for receiving a whole request body, for
/// [`DeviceFlowBuilder::body_read_timeout`](crate::DeviceFlowBuilder::body_read_timeout).
pub const RECOMMENDED_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a request body is read, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimits {
    /// Largest accepted body in bytes; larger ones are refused with 413 while streaming.
    pub max_bytes: usize,
    /// Time allowed to receive the whole body (408 past it), so a slow client cannot hold a
    /// request open. Off by default: it runs on the Tokio timer, and a Tokio runtime built
    /// without `enable_time` would panic on it. Turn it on for any `#[tokio::main]` server.
    pub read_timeout: Option<Duration>,
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits {
            max_bytes: DEFAULT_BODY_LIMIT,
            read_timeout: None,
        }
    }
}

/// A parsed form: name/value pairs in arrival order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// Parses a form body strictly.
    pub fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let mut pairs = Vec::new();
        for part in body.split(|&b| b == b'&') {
            if part.is_empty() {
                continue;
            }
            let (name, value) = match part.iter().position(|&b| b == b'=') {
                Some(i) => (&part[..i], &part[i + 1..]),
                None => (part, &b""[..]),
            };
            pairs.push((decode(name)?, decode(value)?));
        }
        Ok(Form { pairs })
    }

    /// The value of `name`; `None` if absent or empty, `invalid_request` if repeated.
    pub fn get(&self, name: &str) -> Result<Option<&str>, OAuthError> {
        let mut found = None;
        for (n, v) in &self.pairs {
            if n == name {
                if found.is_some() {
                    return Err(OAuthError::invalid_request(format!(
                        "parameter `{name}` is repeated"
                    )));
                }
                found = Some(v.as_str());
            }
        }
        Ok(found.filter(|v| !v.is_empty()))
    }

    /// Every non-empty value of `name`, in arrival order (for parameters that may repeat, such
    /// as RFC 8707 `resource`).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, or `invalid_request` if it is absent, empty or repeated.
    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)?
            .ok_or_else(|| OAuthError::invalid_request(format!("missing parameter `{name}`")))
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes one form-urlencoded component: `+` is a space, `%XX` a byte, the result UTF-8.
pub(crate) fn decode(input: &[u8]) -> Result<String, OAuthError> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let byte = input
                    .get(i + 1)
                    .and_then(|&h| hex(h))
                    .zip(input.get(i + 2).and_then(|&l| hex(l)))
                    .map(|(h, l)| h * 16 + l)
                    .ok_or_else(|| OAuthError::invalid_request("malformed percent-encoding"))?;
                out.push(byte);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| OAuthError::invalid_request("parameters must be UTF-8"))
}

/// Checks that the request is a form POST: 405 for another method, 400 for another content type.
pub(crate) fn check_form_post(method: &Method, headers: &HeaderMap) -> Result<(), OAuthError> {
    if method != Method::POST {
        return Err(OAuthError::invalid_request("only POST is allowed")
            .with_status(StatusCode::METHOD_NOT_ALLOWED));
    }
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    Ok(())
}

/// Reads a whole body, refusing it with 413 once it passes the byte limit (while streaming, and
/// at once when `Content-Length` already says so) and with 408 once the read timeout passes.
pub(crate) async fn read_body<B>(
    headers: &HeaderMap,
    body: B,
    limits: &BodyLimits,
) -> Result<Bytes, OAuthError>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let read = read_limited(headers, body, limits.max_bytes);
    match limits.read_timeout {
        Some(t) if tokio::runtime::Handle::try_current().is_ok() => {
            tokio::time::timeout(t, read).await.unwrap_or_else(|_| {
                Err(
                    OAuthError::invalid_request("the request body was not received in time")
                        .with_status(StatusCode::REQUEST_TIMEOUT),
                )
            })
        }
        _ => read.await,
    }
}

async fn read_limited<B>(headers: &HeaderMap, body: B, limit: usize) -> Result<Bytes, OAuthError>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        OAuthError::invalid_request("the request body is too large")
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(OAuthError::invalid_request(
            "the request body could not be read",
        )),
    }
}

/// Checks method and content type, reads the bounded body and parses it.
pub(crate) async fn read_form<B>(
    req: Request<B>,
    limits: &BodyLimits,
) -> Result<(http::request::Parts, Form), OAuthError>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    check_form_post(req.method(), req.headers())?;
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, limits).await?;
    Ok((parts, Form::parse(&bytes)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use http_body_util::Full;

    #[test]
    fn parses_and_decodes() {
        let f = Form::parse(b"a=1&b=x+y%2Bz&c=&d&&e=%C3%A9").unwrap();
        assert_eq!(f.get("a").unwrap(), Some("1"));
        assert_eq!(f.get("b").unwrap(), Some("x y+z"));
        assert_eq!(f.get("c").unwrap(), None);
        assert_eq!(f.get("d").unwrap(), None);
        assert_eq!(f.get("e").unwrap(), Some("\u{e9}"));
        assert_eq!(f.get("zz").unwrap(), None);
        assert_eq!(
            f.require("c").unwrap_err().code(),
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn repeated_parameters_are_invalid_request() {
        let f = Form::parse(b"scope=a&scope=b").unwrap();
        assert_eq!(
            f.get("scope").unwrap_err().code(),
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn malformed_encoding_is_invalid_request() {
        for body in [&b"a=%"[..], b"a=%4", b"a=%zz", b"a=%FF", b"%C3=1"] {
            assert_eq!(
                Form::parse(body).unwrap_err().code(),
                ErrorCode::InvalidRequest,
                "{body:?}"
            );
        }
    }

    #[test]
    fn content_type_and_method() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8"
                .parse()
                .unwrap(),
        );
        assert!(check_form_post(&Method::POST, &h).is_ok());
        let e = check_form_post(&Method::GET, &h).unwrap_err();
        assert_eq!(e.status(), StatusCode::METHOD_NOT_ALLOWED);
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert_eq!(
            check_form_post(&Method::POST, &h).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        assert!(check_form_post(&Method::POST, &HeaderMap::new()).is_err());
    }

    fn limits(max_bytes: usize) -> BodyLimits {
        BodyLimits {
            max_bytes,
            ..BodyLimits::default()
        }
    }

    #[tokio::test]
    async fn body_limit_is_413() {
        let body = Full::new(Bytes::from(vec![b'a'; 100]));
        let e = read_body(&HeaderMap::new(), body, &limits(99))
            .await
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body = Full::new(Bytes::from(vec![b'a'; 99]));
        assert_eq!(
            read_body(&HeaderMap::new(), body, &limits(99))
                .await
                .unwrap()
                .len(),
            99
        );
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, "1000000000".parse().unwrap());
        let e = read_body(&h, Full::new(Bytes::new()), &limits(99))
            .await
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    /// A body that never finishes.
    struct Stalled;

    impl Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slow_body_is_408() {
        // The paused Tokio clock auto-advances to the timeout: no real waiting.
        let limits = BodyLimits {
            read_timeout: Some(RECOMMENDED_BODY_TIMEOUT),
            ..BodyLimits::default()
        };
        let e = read_body(&HeaderMap::new(), Stalled, &limits)
            .await
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(e.code(), ErrorCode::InvalidRequest);
    }
}
