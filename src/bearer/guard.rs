//! What one bearer layer checks, and its refusals, prepared once per layer.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::clock::Timestamp;
use crate::error::{json_response, ErrorCode, OAuthError};
use crate::response::OAuthBody;
use crate::scope::Scope;
use crate::store::{StoreError, TokenInfo};

/// Which scopes a route requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScopeRequirement {
    /// Every one of these scopes.
    AllOf(Scope),
    /// At least one of these scopes.
    AnyOf(Scope),
}

impl ScopeRequirement {
    /// True if a token with `granted` scope meets the requirement.
    pub fn is_met_by(&self, granted: &Scope) -> bool {
        match self {
            ScopeRequirement::AllOf(s) => granted.contains_all(s),
            ScopeRequirement::AnyOf(s) => granted.contains_any(s),
        }
    }

    /// The scopes named in the requirement.
    pub fn scope(&self) -> &Scope {
        match self {
            ScopeRequirement::AllOf(s) | ScopeRequirement::AnyOf(s) => s,
        }
    }
}

/// A refusal prepared once per layer, so refusing a request costs no formatting.
#[derive(Clone)]
pub(super) struct Refusal {
    status: StatusCode,
    pub(super) code: ErrorCode,
    challenge: Option<HeaderValue>,
    body: Bytes,
    grpc_message: HeaderValue,
}

impl Refusal {
    fn new(
        realm: &str,
        code: ErrorCode,
        status: StatusCode,
        description: &str,
        extra: &str,
    ) -> Self {
        let challenge = match code {
            // RFC 6750 3.1: with no authentication information, no error attributes.
            _ if status == StatusCode::UNAUTHORIZED && extra == "missing" => {
                format!("Bearer realm=\"{realm}\"")
            }
            _ => format!(
                "Bearer realm=\"{realm}\", error=\"{}\"{extra}",
                code.as_str()
            ),
        };
        Refusal {
            status,
            code,
            challenge: HeaderValue::try_from(challenge).ok(),
            body: OAuthError::new(code, description.to_owned()).to_json(),
            grpc_message: HeaderValue::try_from(description)
                .unwrap_or(HeaderValue::from_static("unauthenticated")),
        }
    }

    pub(super) fn store(e: &StoreError) -> Self {
        let e = OAuthError::from(e.clone());
        Refusal {
            status: e.status(),
            code: e.code(),
            challenge: None,
            body: e.to_json(),
            grpc_message: HeaderValue::from_static("credential store unavailable"),
        }
    }

    pub(super) fn response(&self, grpc: bool) -> Response<OAuthBody> {
        let mut res = if grpc {
            let mut res = Response::new(OAuthBody::default());
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            let status = match self.status {
                StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST => "16",
                StatusCode::FORBIDDEN => "7",
                StatusCode::SERVICE_UNAVAILABLE => "14",
                _ => "13",
            };
            h.insert("grpc-status", HeaderValue::from_static(status));
            h.insert("grpc-message", self.grpc_message.clone());
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            res
        } else {
            json_response(self.status, self.body.clone())
        };
        if let Some(c) = &self.challenge {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, c.clone());
        }
        if self.code == ErrorCode::TemporarilyUnavailable {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}

/// What one layer checks and how it refuses.
pub(super) struct Guard {
    pub(super) requirement: ScopeRequirement,
    pub(super) missing: Refusal,
    pub(super) malformed: Refusal,
    pub(super) invalid: Refusal,
    pub(super) expired: Refusal,
    pub(super) insufficient: Refusal,
}

impl Guard {
    pub(super) fn new(realm: &str, requirement: ScopeRequirement) -> Self {
        let realm = realm.replace(['"', '\\'], "");
        let scope = format!(", scope=\"{}\"", requirement.scope());
        Guard {
            missing: Refusal::new(
                &realm,
                ErrorCode::InvalidToken,
                StatusCode::UNAUTHORIZED,
                "a bearer token is required",
                "missing",
            ),
            malformed: Refusal::new(
                &realm,
                ErrorCode::InvalidRequest,
                StatusCode::BAD_REQUEST,
                "malformed Authorization header",
                "",
            ),
            invalid: Refusal::new(
                &realm,
                ErrorCode::InvalidToken,
                StatusCode::UNAUTHORIZED,
                "the access token is invalid or revoked",
                "",
            ),
            expired: Refusal::new(
                &realm,
                ErrorCode::InvalidToken,
                StatusCode::UNAUTHORIZED,
                "the access token expired",
                "",
            ),
            insufficient: Refusal::new(
                &realm,
                ErrorCode::InsufficientScope,
                StatusCode::FORBIDDEN,
                "the access token lacks a required scope",
                &scope,
            ),
            requirement,
        }
    }

    /// The verdict on a looked-up token.
    pub(super) fn check(
        &self,
        token: Option<TokenInfo>,
        now: Timestamp,
    ) -> Result<TokenInfo, &Refusal> {
        match token {
            None => Err(&self.invalid),
            Some(t) if t.is_expired(now) => Err(&self.expired),
            Some(t) if !self.requirement.is_met_by(&t.scope) => Err(&self.insufficient),
            Some(t) => Ok(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements() {
        let granted = Scope::parse("email profile").unwrap();
        let all = ScopeRequirement::AllOf(Scope::parse("email admin").unwrap());
        let any = ScopeRequirement::AnyOf(Scope::parse("email admin").unwrap());
        assert!(!all.is_met_by(&granted));
        assert!(any.is_met_by(&granted));
    }

    #[test]
    fn challenges() {
        let g = Guard::new(
            "api",
            ScopeRequirement::AllOf(Scope::parse("email").unwrap()),
        );
        let r = g.insufficient.response(false);
        assert_eq!(r.status(), 403);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"email\""
        );
        let r = g.invalid.response(true);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "16");
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"api\", error=\"invalid_token\""
        );
        assert_eq!(
            g.missing.response(false).headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"api\""
        );
    }
}
