//! What one bearer layer checks, and its refusals, prepared once per layer.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

#[cfg(feature = "dpop")]
use super::dpop::DpopCheck;
use super::verifier::VerifyError;
use crate::clock::Timestamp;
use crate::codes::Thumbprint;
use crate::error::{json_response, ErrorCode, OAuthError};
use crate::response::OAuthBody;
use crate::scope::Scope;
use crate::store::TokenInfo;

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
    /// `WWW-Authenticate` values, in order: the scheme that failed first.
    challenges: Vec<HeaderValue>,
    body: Bytes,
    grpc_message: HeaderValue,
    dpop_nonce: Option<HeaderValue>,
}

/// Which authentication scheme a challenge is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Bearer,
    Dpop,
}

/// One challenge (RFC 9110 11.6.1): with no `code` no error attributes (RFC 6750 3.1).
fn challenge(
    scheme: Scheme,
    realm: &str,
    code: Option<ErrorCode>,
    extra: &str,
    algs: &str,
) -> String {
    let mut c = match scheme {
        Scheme::Bearer => format!("Bearer realm=\"{realm}\""),
        Scheme::Dpop => format!("DPoP realm=\"{realm}\""),
    };
    if let Some(code) = code {
        c.push_str(&format!(", error=\"{}\"{extra}", code.as_str()));
    }
    if scheme == Scheme::Dpop {
        // RFC 9449 7.1: the algorithms a proof may use.
        c.push_str(&format!(", algs=\"{algs}\""));
    }
    c
}

impl Refusal {
    fn build(
        code: ErrorCode,
        status: StatusCode,
        description: &str,
        challenges: &[String],
    ) -> Self {
        Refusal {
            status,
            code,
            challenges: challenges
                .iter()
                .filter_map(|c| HeaderValue::try_from(c.as_str()).ok())
                .collect(),
            body: OAuthError::new(code, description.to_owned()).to_json(),
            grpc_message: HeaderValue::try_from(description)
                .unwrap_or(HeaderValue::from_static("unauthenticated")),
            dpop_nonce: None,
        }
    }

    /// A refusal of a `Bearer` request (or of one without credentials, for `extra ==
    /// "missing"`); when the layer takes DPoP too (`algs`), a bare DPoP challenge follows
    /// (RFC 9449 7.2).
    fn new(
        realm: &str,
        code: ErrorCode,
        status: StatusCode,
        description: &str,
        extra: &str,
        algs: Option<&str>,
    ) -> Self {
        let missing = status == StatusCode::UNAUTHORIZED && extra == "missing";
        let mut challenges = vec![challenge(
            Scheme::Bearer,
            realm,
            (!missing).then_some(code),
            extra,
            "",
        )];
        if let Some(algs) = algs {
            challenges.push(challenge(Scheme::Dpop, realm, None, "", algs));
        }
        Self::build(code, status, description, &challenges)
    }

    /// A refusal of a `DPoP` request: the DPoP challenge carries the error.
    pub(super) fn dpop(
        realm: &str,
        algs: &str,
        code: ErrorCode,
        status: StatusCode,
        description: &str,
        extra: &str,
    ) -> Self {
        let c = challenge(Scheme::Dpop, realm, Some(code), extra, algs);
        Self::build(code, status, description, &[c])
    }

    /// The same refusal supplying a nonce for the next proof (RFC 9449 9).
    #[cfg_attr(not(feature = "dpop"), allow(dead_code))]
    pub(super) fn with_dpop_nonce(mut self, nonce: &str) -> Self {
        self.dpop_nonce = HeaderValue::try_from(nonce).ok();
        self
    }

    pub(super) fn unavailable(e: &VerifyError) -> Self {
        let e = match e {
            VerifyError::Unavailable(_) => OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "the token cannot be verified right now; retry later",
            ),
            VerifyError::Failed(_) => {
                OAuthError::new(ErrorCode::ServerError, "the token could not be verified")
            }
        };
        Refusal {
            status: e.status(),
            code: e.code(),
            challenges: Vec::new(),
            body: e.to_json(),
            grpc_message: HeaderValue::from_static("the token cannot be verified right now"),
            dpop_nonce: None,
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
            res
        } else {
            json_response(self.status, self.body.clone())
        };
        for c in &self.challenges {
            res.headers_mut()
                .append(header::WWW_AUTHENTICATE, c.clone());
        }
        if let Some(nonce) = &self.dpop_nonce {
            res.headers_mut().insert("dpop-nonce", nonce.clone());
        }
        if self.code == ErrorCode::TemporarilyUnavailable {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}

/// The refusals of one scheme.
#[derive(Clone)]
pub(super) struct Refusals {
    pub(super) invalid: Refusal,
    pub(super) expired: Refusal,
    pub(super) insufficient: Refusal,
    /// A token meant for another resource, or for none in particular (RFC 8707).
    pub(super) wrong_audience: Refusal,
}

impl Refusals {
    fn new(scheme: Scheme, realm: &str, scope: &str, algs: Option<&str>) -> Self {
        let make = |code, status, description: &str, extra: &str| match (scheme, algs) {
            (Scheme::Dpop, Some(algs)) => {
                Refusal::dpop(realm, algs, code, status, description, extra)
            }
            _ => Refusal::new(realm, code, status, description, extra, algs),
        };
        Refusals {
            invalid: make(
                ErrorCode::InvalidToken,
                StatusCode::UNAUTHORIZED,
                "the access token is invalid or revoked",
                "",
            ),
            expired: make(
                ErrorCode::InvalidToken,
                StatusCode::UNAUTHORIZED,
                "the access token expired",
                "",
            ),
            insufficient: make(
                ErrorCode::InsufficientScope,
                StatusCode::FORBIDDEN,
                "the access token lacks a required scope",
                scope,
            ),
            wrong_audience: make(
                ErrorCode::InvalidToken,
                StatusCode::UNAUTHORIZED,
                "the access token is not meant for this resource",
                "",
            ),
        }
    }
}

/// The refusals only a layer taking DPoP-bound tokens gives.
#[derive(Clone)]
pub(super) struct DpopRefusals {
    /// How proofs are checked.
    #[cfg(feature = "dpop")]
    pub(super) check: DpopCheck,
    /// The accepted algorithms, space-separated (`algs`).
    #[cfg_attr(not(feature = "dpop"), allow(dead_code))]
    pub(super) algs: String,
    /// Refusals of requests made with the DPoP scheme.
    pub(super) scheme: Refusals,
    /// A bound token sent as a bearer token (RFC 9449 7.2).
    pub(super) bound_as_bearer: Refusal,
    /// A token without binding sent with the DPoP scheme: no key to confirm.
    pub(super) unbound: Refusal,
    /// A proof of another key than the token's (RFC 9449 figure 16).
    pub(super) key_mismatch: Refusal,
}

/// What one layer checks and how it refuses.
#[derive(Clone)]
pub(super) struct Guard {
    pub(super) requirement: ScopeRequirement,
    /// The resource this layer guards (RFC 8707): tokens must name it in their audience.
    pub(super) audience: Option<Box<str>>,
    #[cfg_attr(not(feature = "dpop"), allow(dead_code))]
    pub(super) realm: String,
    pub(super) missing: Refusal,
    pub(super) malformed: Refusal,
    pub(super) bearer: Refusals,
    pub(super) dpop: Option<DpopRefusals>,
}

impl Guard {
    /// The checks of `requirement`, challenging with `realm`, taking DPoP-bound tokens too
    /// when `dpop` is given.
    pub(super) fn new(
        realm: &str,
        requirement: ScopeRequirement,
        #[cfg(feature = "dpop")] dpop: Option<DpopCheck>,
    ) -> Self {
        let realm = realm.replace(['"', '\\'], "");
        let scope = format!(", scope=\"{}\"", requirement.scope());
        #[cfg(feature = "dpop")]
        let (algs, dpop) = match dpop {
            Some(check) => (Some(check.config().algs_param()), Some(check)),
            None => (None, None),
        };
        #[cfg(not(feature = "dpop"))]
        let (algs, dpop) = (None::<String>, Some(()));
        let algs = algs.as_deref();
        let dpop = algs.zip(dpop).map(|(algs, _check)| DpopRefusals {
            #[cfg(feature = "dpop")]
            check: _check,
            algs: algs.to_owned(),
            scheme: Refusals::new(Scheme::Dpop, &realm, &scope, Some(algs)),
            bound_as_bearer: Refusal::new(
                &realm,
                ErrorCode::InvalidToken,
                StatusCode::UNAUTHORIZED,
                "the access token is DPoP-bound: send it with the DPoP scheme and a DPoP proof",
                "",
                Some(algs),
            ),
            unbound: Refusal::dpop(
                &realm,
                algs,
                ErrorCode::InvalidToken,
                StatusCode::UNAUTHORIZED,
                "the access token is not DPoP-bound: send it with the Bearer scheme",
                "",
            ),
            key_mismatch: Refusal::dpop(
                &realm,
                algs,
                ErrorCode::InvalidToken,
                StatusCode::UNAUTHORIZED,
                "invalid DPoP key binding: the proof is not signed with the token's key",
                "",
            ),
        });
        Guard {
            missing: Refusal::new(
                &realm,
                ErrorCode::InvalidToken,
                StatusCode::UNAUTHORIZED,
                "a bearer token is required",
                "missing",
                algs,
            ),
            malformed: Refusal::new(
                &realm,
                ErrorCode::InvalidRequest,
                StatusCode::BAD_REQUEST,
                "malformed Authorization header",
                "",
                algs,
            ),
            bearer: Refusals::new(Scheme::Bearer, &realm, &scope, algs),
            dpop,
            realm,
            requirement,
            audience: None,
        }
    }

    /// The same checks, also requiring `audience` in the token's `aud`.
    pub(super) fn with_audience(mut self, audience: Option<&str>) -> Self {
        self.audience = audience.map(Box::from);
        self
    }

    /// The refusal of a request whose DPoP proof failed with `e`, 401 with a DPoP challenge
    /// (RFC 9449 7.1) and, when nonces are on, a fresh `DPoP-Nonce` (RFC 9449 9).
    #[cfg(feature = "dpop")]
    pub(super) fn proof_refusal(&self, e: crate::dpop::ProofError, now: Timestamp) -> Refusal {
        let Some(d) = &self.dpop else {
            return self.bearer.invalid.clone();
        };
        let r = Refusal::dpop(
            &self.realm,
            &d.algs,
            e.code(),
            StatusCode::UNAUTHORIZED,
            e.description(),
            "",
        );
        match d.check.config().nonce_issuer() {
            Some(nonces) => r.with_dpop_nonce(&nonces.issue(now)),
            None => r,
        }
    }

    /// The verdict on a looked-up token, presented with a proof of the key `jkt` (the DPoP
    /// scheme) or without one (the Bearer scheme).
    pub(super) fn check(
        &self,
        token: Option<TokenInfo>,
        now: Timestamp,
        jkt: Option<&Thumbprint>,
    ) -> Result<TokenInfo, &Refusal> {
        let refusals = match (&self.dpop, jkt) {
            (Some(d), Some(_)) => &d.scheme,
            _ => &self.bearer,
        };
        let token = match token {
            None => return Err(&refusals.invalid),
            Some(t) if t.is_expired(now) => return Err(&refusals.expired),
            Some(t) => t,
        };
        // A token without an audience is not meant for any resource in particular: a layer
        // that names its resource refuses it.
        if let Some(resource) = self.audience.as_deref() {
            if !token
                .audience
                .as_ref()
                .is_some_and(|aud| aud.contains(resource))
            {
                return Err(&refusals.wrong_audience);
            }
        }
        match (&token.cnf, jkt, &self.dpop) {
            // RFC 9449 7.2: a bound token is never accepted as a bearer token.
            (Some(_), None, Some(d)) => return Err(&d.bound_as_bearer),
            (Some(_), None, None) => return Err(&self.bearer.invalid),
            (None, Some(_), Some(d)) => return Err(&d.unbound),
            (Some(bound), Some(jkt), Some(d)) if !bound.ct_eq(jkt) => return Err(&d.key_mismatch),
            _ => {}
        }
        if !self.requirement.is_met_by(&token.scope) {
            return Err(&refusals.insufficient);
        }
        Ok(token)
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
            #[cfg(feature = "dpop")]
            None,
        );
        let r = g.bearer.insufficient.response(false);
        assert_eq!(r.status(), 403);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"email\""
        );
        let r = g.bearer.invalid.response(true);
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
