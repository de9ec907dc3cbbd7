//! OAuth error responses: one enum variant per RFC error code, rendered the RFC way.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

/// The error codes of RFC 6749 5.2, RFC 8628 3.5, RFC 6750 3.1 and RFC 7009 2.2.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `invalid_request`: missing, repeated or malformed parameter.
    InvalidRequest,
    /// `invalid_client`: client authentication failed.
    InvalidClient,
    /// `invalid_grant`: the device code or refresh token is unknown, used, or another client's.
    InvalidGrant,
    /// `unauthorized_client`: the client may not use this grant type.
    UnauthorizedClient,
    /// `unsupported_grant_type`.
    UnsupportedGrantType,
    /// `invalid_scope`: unknown scope, or wider than allowed.
    InvalidScope,
    /// `authorization_pending`: the end user has not decided yet (RFC 8628 3.5).
    AuthorizationPending,
    /// `slow_down`: poll less often; the interval grew by 5 seconds (RFC 8628 3.5).
    SlowDown,
    /// `access_denied`: the end user denied the request (RFC 8628 3.5).
    AccessDenied,
    /// `expired_token`: the device code expired (RFC 8628 3.5).
    ExpiredToken,
    /// `unsupported_token_type` (RFC 7009 2.2.1).
    UnsupportedTokenType,
    /// `invalid_token`: the bearer token is unknown, revoked or expired (RFC 6750 3.1).
    InvalidToken,
    /// `insufficient_scope`: the bearer token lacks a required scope (RFC 6750 3.1).
    InsufficientScope,
    /// `server_error`: the server failed (for example the store answered with an error).
    ServerError,
    /// `temporarily_unavailable`: the store is unreachable for now; retry later.
    TemporarilyUnavailable,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::AuthorizationPending => "authorization_pending",
            ErrorCode::SlowDown => "slow_down",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::ExpiredToken => "expired_token",
            ErrorCode::UnsupportedTokenType => "unsupported_token_type",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }

    /// The HTTP status the code is answered with.
    pub const fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidClient | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
            ErrorCode::InsufficientScope => StatusCode::FORBIDDEN,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An OAuth error response: a code, a human-readable description and, rarely, another status.
///
/// Descriptions are written by the crate and never contain a secret, code or token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthError {
    code: ErrorCode,
    description: Cow<'static, str>,
    status: StatusCode,
    retry_after: Option<u64>,
}

impl OAuthError {
    /// An error with the code's usual status.
    pub fn new(code: ErrorCode, description: impl Into<Cow<'static, str>>) -> Self {
        OAuthError {
            code,
            description: description.into(),
            status: code.status(),
            retry_after: None,
        }
    }

    /// `invalid_request` with a description.
    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    /// `invalid_client` with a description.
    pub fn invalid_client(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidClient, description)
    }

    /// `invalid_grant` with a description.
    pub fn invalid_grant(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidGrant, description)
    }

    /// `invalid_scope` with a description.
    pub fn invalid_scope(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidScope, description)
    }

    /// The same error answered with another HTTP status (405, 413, 415, 429...).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Adds a `Retry-After` header of `secs` seconds.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The error code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The JSON body: `{"error": ..., "error_description": ...}`.
    pub fn to_json(&self) -> Bytes {
        // The common case, a crate-written description, needs no escaping: skip serde (this
        // answers every `authorization_pending` poll).
        let plain = |s: &str| !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20);
        if plain(&self.description) {
            let (code, desc) = (self.code.as_str(), &*self.description);
            let mut v = Vec::with_capacity(36 + code.len() + desc.len());
            v.extend_from_slice(b"{\"error\":\"");
            v.extend_from_slice(code.as_bytes());
            v.extend_from_slice(b"\",\"error_description\":\"");
            v.extend_from_slice(desc.as_bytes());
            v.extend_from_slice(b"\"}");
            return Bytes::from(v);
        }
        #[derive(serde::Serialize)]
        struct Body<'a> {
            error: &'static str,
            error_description: &'a str,
        }
        let body = Body {
            error: self.code.as_str(),
            error_description: &self.description,
        };
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// The RFC 6749 5.2 response: JSON body, `Cache-Control: no-store`, `Pragma: no-cache`, and
    /// for `invalid_client` (401) a `WWW-Authenticate: Basic` challenge, as RFC 6749 5.2 and
    /// RFC 9110 require of a 401.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut res = json_response(self.status, self.to_json());
        if self.code == ErrorCode::InvalidClient {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"oauth\", charset=\"UTF-8\""),
            );
        }
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        res
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.description)
    }
}

impl std::error::Error for OAuthError {}

/// Logs a refused request. Only the error code and the crate's own description are logged:
/// neither ever holds a secret, code or token.
pub(crate) fn log_rejection(e: &OAuthError) {
    match e.code() {
        // The normal rhythm of polling: not worth more than a debug line.
        ErrorCode::AuthorizationPending | ErrorCode::SlowDown => {
            tracing::debug!(error = e.code().as_str(), "poll answered")
        }
        ErrorCode::ServerError | ErrorCode::TemporarilyUnavailable => {
            tracing::error!(
                error = e.code().as_str(),
                description = e.description(),
                "request failed"
            )
        }
        _ => tracing::info!(
            error = e.code().as_str(),
            description = e.description(),
            "request rejected"
        ),
    }
}

/// A JSON response with the no-store headers every OAuth response carries, and `nosniff`.
pub(crate) fn json_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_client_is_401_with_basic_challenge() {
        let res = OAuthError::invalid_client("bad secret").into_response();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(res.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Basic"));
        assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(res.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    #[test]
    fn json_body_has_error_and_description() {
        let e = OAuthError::new(ErrorCode::SlowDown, "poll \"less\" often");
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["error"], "slow_down");
        assert_eq!(v["error_description"], "poll \"less\" often");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn fast_and_escaped_json_agree() {
        for desc in ["plain words", "with \"quotes\" and \\ and \n", "caf\u{e9}"] {
            let e = OAuthError::invalid_request(desc);
            let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
            assert_eq!(v["error"], "invalid_request");
            assert_eq!(v["error_description"], desc);
        }
    }
}
