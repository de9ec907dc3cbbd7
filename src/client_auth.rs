//! Client authentication at the token-facing endpoints (RFC 6749 2.3).
//!
//! Three methods, each switchable per endpoint (as Authlib's `CLIENT_AUTH_METHODS`):
//! `client_secret_basic` (HTTP Basic, with the form-urlencoded id and secret of RFC 6749
//! 2.3.1), `client_secret_post` (`client_id` and `client_secret` in the body) and `none`
//! (a public client names itself with `client_id`). A request that uses two methods at once is
//! `invalid_request`; every authentication failure is `invalid_client` (401).
//!
//! Wrong secrets are counted per (client, source) and per source in the store
//! ([`FailedAuthLimits`](crate::limits::FailedAuthLimits)); once a budget is spent the answer
//! is 429 with `Retry-After`, before the secret is checked.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::header::{self, HeaderMap};

use http::request::Parts;
use http::Request;
use http_body::Body;

use crate::error::{ErrorCode, OAuthError};
use crate::form::{decode, read_form, BodyLimits, Form};
use crate::limits::{reserve_attempt, retry_after_until, too_many, AuthKind, Limiter};
use crate::observe::Limit;
use crate::store::{Client, ClientSource, Clients, Store};

/// A client authentication method (RFC 7591 2 `token_endpoint_auth_method` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientAuthMethod {
    /// `client_secret_basic`: HTTP Basic authentication.
    ClientSecretBasic,
    /// `client_secret_post`: credentials in the form body.
    ClientSecretPost,
    /// `none`: a public client, identified by `client_id` alone.
    None,
}

impl ClientAuthMethod {
    /// The registered name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ClientAuthMethod::ClientSecretBasic => "client_secret_basic",
            ClientAuthMethod::ClientSecretPost => "client_secret_post",
            ClientAuthMethod::None => "none",
        }
    }
}

/// The set of client authentication methods an endpoint accepts.
///
/// ```
/// use tower_device_flow::{ClientAuthMethod, ClientAuthMethods};
///
/// let confidential_only = ClientAuthMethods::all().without(ClientAuthMethod::None);
/// assert!(!confidential_only.allows(ClientAuthMethod::None));
/// assert!(confidential_only.allows(ClientAuthMethod::ClientSecretBasic));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAuthMethods {
    basic: bool,
    post: bool,
    none: bool,
}

impl ClientAuthMethods {
    /// All three methods.
    pub const fn all() -> Self {
        ClientAuthMethods {
            basic: true,
            post: true,
            none: true,
        }
    }

    /// No method at all (build up with [`with`](Self::with)).
    pub const fn empty() -> Self {
        ClientAuthMethods {
            basic: false,
            post: false,
            none: false,
        }
    }

    /// The set plus `method`.
    pub const fn with(mut self, method: ClientAuthMethod) -> Self {
        match method {
            ClientAuthMethod::ClientSecretBasic => self.basic = true,
            ClientAuthMethod::ClientSecretPost => self.post = true,
            ClientAuthMethod::None => self.none = true,
        }
        self
    }

    /// The set without `method`.
    pub const fn without(mut self, method: ClientAuthMethod) -> Self {
        match method {
            ClientAuthMethod::ClientSecretBasic => self.basic = false,
            ClientAuthMethod::ClientSecretPost => self.post = false,
            ClientAuthMethod::None => self.none = false,
        }
        self
    }

    /// True if `method` is accepted.
    pub const fn allows(self, method: ClientAuthMethod) -> bool {
        match method {
            ClientAuthMethod::ClientSecretBasic => self.basic,
            ClientAuthMethod::ClientSecretPost => self.post,
            ClientAuthMethod::None => self.none,
        }
    }

    /// The accepted methods' names, for RFC 8414 metadata.
    pub fn names(self) -> Vec<&'static str> {
        [
            ClientAuthMethod::ClientSecretBasic,
            ClientAuthMethod::ClientSecretPost,
            ClientAuthMethod::None,
        ]
        .into_iter()
        .filter(|m| self.allows(*m))
        .map(ClientAuthMethod::as_str)
        .collect()
    }
}

impl Default for ClientAuthMethods {
    fn default() -> Self {
        Self::all()
    }
}

/// What the request presented, before the store is asked.
#[derive(PartialEq, Eq)]
pub(crate) struct Presented {
    pub(crate) method: ClientAuthMethod,
    pub(crate) client_id: String,
    pub(crate) secret: Option<String>,
}

/// Decodes `Authorization: Basic` credentials (RFC 7617 with RFC 6749 2.3.1's form-urlencoding).
pub(crate) fn parse_basic(value: &[u8]) -> Result<(String, String), OAuthError> {
    let malformed = || OAuthError::invalid_client("malformed Basic credentials");
    let value = std::str::from_utf8(value).map_err(|_| malformed())?;
    let (scheme, rest) = value.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(
            "unsupported authentication scheme; use Basic",
        ));
    }
    let raw = STANDARD.decode(rest.trim()).map_err(|_| malformed())?;
    let colon = raw.iter().position(|&b| b == b':').ok_or_else(malformed)?;
    let id = decode(&raw[..colon]).map_err(|_| malformed())?;
    let secret = decode(&raw[colon + 1..]).map_err(|_| malformed())?;
    if id.is_empty() {
        return Err(malformed());
    }
    Ok((id, secret))
}

/// Works out which method the request used, refusing mixtures and disabled methods.
pub(crate) fn presented(
    headers: &HeaderMap,
    form: &Form,
    methods: ClientAuthMethods,
) -> Result<Presented, OAuthError> {
    let mut auth = headers.get_all(header::AUTHORIZATION).iter();
    let header = auth.next();
    if auth.next().is_some() {
        return Err(OAuthError::invalid_request("repeated Authorization header"));
    }
    let body_id = form.get("client_id")?;
    let body_secret = form.get("client_secret")?;
    let p = if let Some(value) = header {
        if body_secret.is_some() {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not two",
            ));
        }
        let (id, secret) = parse_basic(value.as_bytes())?;
        if body_id.is_some_and(|b| b != id) {
            return Err(OAuthError::invalid_client(
                "client_id does not match the Basic credentials",
            ));
        }
        Presented {
            method: ClientAuthMethod::ClientSecretBasic,
            client_id: id,
            // An empty password is how some libraries send a public client in Basic.
            secret: Some(secret).filter(|s| !s.is_empty()),
        }
    } else if let Some(secret) = body_secret {
        Presented {
            method: ClientAuthMethod::ClientSecretPost,
            client_id: body_id
                .ok_or_else(|| OAuthError::invalid_request("missing parameter `client_id`"))?
                .to_owned(),
            secret: Some(secret.to_owned()),
        }
    } else {
        Presented {
            method: ClientAuthMethod::None,
            client_id: body_id
                .ok_or_else(|| OAuthError::invalid_request("missing parameter `client_id`"))?
                .to_owned(),
            secret: None,
        }
    };
    // Basic with an empty password is a public client naming itself: judged as `none`.
    let effective = if p.secret.is_none() {
        ClientAuthMethod::None
    } else {
        p.method
    };
    if !methods.allows(effective) {
        return Err(OAuthError::invalid_client(format!(
            "client authentication method {} is not accepted here",
            p.method.as_str()
        )));
    }
    Ok(p)
}

/// Authenticates the client of a form request against `clients`, counting a wrong secret
/// against the failure budgets of its source (kept in `store`).
pub(crate) async fn authenticate<S: Store, C: ClientSource>(
    store: &S,
    clients: Clients<'_, C>,
    parts: &Parts,
    form: &Form,
    methods: ClientAuthMethods,
    limiter: &Limiter,
) -> Result<Client, OAuthError> {
    let p = presented(&parts.headers, form, methods)?;
    if p.secret.is_none() {
        return check(clients, &p, methods).await;
    }
    let now = limiter.now();
    let source = limiter.resolve(&parts.extensions, &parts.headers).source;
    let limits = &limiter.limits.failed_auth;
    let reservation =
        match reserve_attempt(store, limits, AuthKind::Client, &p.client_id, source, now).await? {
            Ok(r) => r,
            Err(spent) => {
                tracing::warn!(client_id = %p.client_id, "client secret failure limit reached");
                // The presented id is the client's to choose: named only if it is registered
                // (looked up only for an audit sink).
                let known = match limiter.observer.is_auditing() {
                    true => store.client(&p.client_id).await.ok().flatten(),
                    false => None,
                };
                let known = known.as_ref().map(Client::id);
                limiter.refused(Limit::ClientSecret, source, known, None);
                return Err(too_many(
                    ErrorCode::TemporarilyUnavailable,
                    "too many failed client authentications; retry later",
                    retry_after_until(spent.until, now),
                ));
            }
        };
    let result = check(clients, &p, methods).await;
    match &result {
        Err(e) if e.code() == ErrorCode::InvalidClient => reservation.failed(store, now).await?,
        _ => reservation.succeeded(store, now).await?,
    }
    result
}

/// The check itself, once the attempt may be made.
async fn check<C: ClientSource>(
    clients: Clients<'_, C>,
    p: &Presented,
    methods: ClientAuthMethods,
) -> Result<Client, OAuthError> {
    let client = clients
        .client(&p.client_id)
        .await?
        .ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
    match (&p.secret, client.is_confidential()) {
        (Some(secret), true) if client.verify_secret(secret) => Ok(client),
        (Some(_), true) => Err(OAuthError::invalid_client("client authentication failed")),
        (None, true) => Err(OAuthError::invalid_client(
            "this client must authenticate with its secret",
        )),
        (Some(_), false) => Err(OAuthError::invalid_client(
            "a public client has no secret to present",
        )),
        (None, false) if methods.allows(ClientAuthMethod::None) => Ok(client),
        (None, false) => Err(OAuthError::invalid_client(
            "public clients are not accepted here",
        )),
    }
}

/// Reads a client's form request and authenticates the client: how every client-facing
/// endpoint but the token endpoint (which checks `grant_type` first) begins.
pub(crate) async fn authenticated_form<S, C, B>(
    store: &S,
    clients: Clients<'_, C>,
    limits: &BodyLimits,
    req: Request<B>,
    methods: ClientAuthMethods,
    limiter: &Limiter,
) -> Result<(Parts, Form, Client), OAuthError>
where
    S: Store,
    C: ClientSource,
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, form) = read_form(req, limits).await?;
    let client = authenticate(store, clients, &parts, &form, methods, limiter).await?;
    Ok((parts, form, client))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let (id, secret) = parse_basic(basic("my%20app", "p%3Ass+word").as_bytes()).unwrap();
        assert_eq!(id, "my app");
        assert_eq!(secret, "p:ss word");
    }

    #[test]
    fn malformed_basic_is_invalid_client() {
        for v in [
            "Basic",
            "Basic !!!",
            "Bearer abc",
            "Basic Zm9v",
            "Basic OnNlY3JldA==",
        ] {
            assert_eq!(
                parse_basic(v.as_bytes()).unwrap_err().code(),
                ErrorCode::InvalidClient,
                "{v}"
            );
        }
    }

    #[test]
    fn two_methods_at_once_is_invalid_request() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, basic("a", "b").parse().unwrap());
        let form = Form::parse(b"client_id=a&client_secret=b").unwrap();
        let e = presented(&h, &form, ClientAuthMethods::all())
            .err()
            .unwrap();
        assert_eq!(e.code(), ErrorCode::InvalidRequest);
    }

    #[test]
    fn disabled_method_is_refused() {
        let form = Form::parse(b"client_id=a&client_secret=b").unwrap();
        let methods = ClientAuthMethods::all().without(ClientAuthMethod::ClientSecretPost);
        let e = presented(&HeaderMap::new(), &form, methods).err().unwrap();
        assert_eq!(e.code(), ErrorCode::InvalidClient);
        let form = Form::parse(b"client_id=a").unwrap();
        let p = presented(&HeaderMap::new(), &form, methods).ok().unwrap();
        assert!(p.method == ClientAuthMethod::None && p.client_id == "a");
    }

    #[test]
    fn mismatched_client_id_is_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, basic("a", "b").parse().unwrap());
        let form = Form::parse(b"client_id=other").unwrap();
        let e = presented(&h, &form, ClientAuthMethods::all())
            .err()
            .unwrap();
        assert_eq!(e.code(), ErrorCode::InvalidClient);
    }
}
