//! What a verification page is asked to show ([`PageView`]), what it sees of the request
//! ([`PageRequest`]) and what it answers ([`Page`], with its [`ContentSecurityPolicy`]).

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};
use rand::RngCore as _;

use crate::clock::Timestamp;
use crate::grant::RequestOrigin;
use crate::scope::Scope;

/// What the verification page shows. Every string in it is data: escape it
/// ([`escape_html`](crate::page::escape_html)).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum PageView<'a> {
    /// A form asking for the user code.
    #[non_exhaustive]
    EnterCode {
        /// Where the form posts to.
        action: &'a str,
        /// The code to pre-fill (from `?user_code=`, or what was typed before), as typed.
        prefill: &'a str,
        /// Why the previous entry failed, if it did.
        error: Option<PageError>,
        /// The signed-in end user, when the service knows them already.
        end_user: Option<&'a str>,
    },
    /// The request behind a valid code, for the end user to approve or deny (RFC 8628 5.4:
    /// show who asks, for what, from where, so a phished code is recognisable).
    #[non_exhaustive]
    Confirm {
        /// Where the form posts to.
        action: &'a str,
        /// The user code, as displayed (`WDJB-MJHT`).
        user_code: &'a str,
        /// The requesting client's identifier.
        client_id: &'a str,
        /// The requesting client's display name, if it has one.
        client_name: Option<&'a str>,
        /// The scope the device asks for.
        scope: &'a Scope,
        /// The signed-in end user.
        end_user: &'a str,
        /// When the device asked (device authorization).
        requested_at: Timestamp,
        /// When the code stops being valid.
        expires_at: Timestamp,
        /// The time now, for "3 minutes ago".
        now: Timestamp,
        /// Where the device authorization request came from (network address, user agent),
        /// when it was recorded.
        origin: Option<&'a RequestOrigin>,
    },
    /// The decision was recorded.
    #[non_exhaustive]
    Done {
        /// True if approved, false if denied.
        approved: bool,
        /// Where to enter another code.
        action: &'a str,
    },
    /// The end user must sign in first; a browser is being sent to `login_url` (303), which
    /// brings them back to the code they were entering.
    #[non_exhaustive]
    SignIn {
        /// The application's login page, with the return address.
        login_url: &'a str,
    },
    /// Something the end user must be told instead (too many attempts, sign-in needed, ...).
    #[non_exhaustive]
    Problem {
        /// What went wrong.
        error: PageError,
        /// Where to start again.
        action: &'a str,
        /// Seconds until trying again can work, for a limit.
        retry_after: Option<u64>,
    },
}

/// Renders the verification page. Replace [`DefaultPage`](crate::page::DefaultPage) to use
/// the application's own templates, stylesheet, logo or script.
pub trait VerificationPage: Send + Sync + 'static {
    /// The page for `view`. Escape everything taken from the view; use `request` for the
    /// locale and the CSP nonce.
    fn render(&self, view: &PageView<'_>, request: &PageRequest<'_>) -> Page;
}

/// What went wrong, for the end user: each has its own text in
/// [`Texts`](crate::page::Texts), saying what to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PageError {
    /// No pending request has that code (or it could not be a code at all).
    UnknownCode,
    /// The code expired.
    ExpiredCode,
    /// The code was already approved or denied.
    AlreadyUsed,
    /// Too many wrong codes, failed sign-ins or requests: wait.
    TooManyAttempts,
    /// The form was sent without a code.
    MissingCode,
    /// The end user is not signed in.
    SignInRequired,
    /// The form was posted from another site.
    CrossSite,
    /// The request could not be understood (bad form, wrong method, unknown decision).
    BadRequest,
    /// The service could not answer now.
    Unavailable,
}

impl PageError {
    /// The end user's view of a refusal answered with `status` and the JSON `error` `code`.
    pub(crate) fn classify(status: StatusCode, code: &str) -> PageError {
        match (status, code) {
            (StatusCode::TOO_MANY_REQUESTS, _) => PageError::TooManyAttempts,
            (StatusCode::UNAUTHORIZED, _) => PageError::SignInRequired,
            (StatusCode::FORBIDDEN, _) => PageError::CrossSite,
            (StatusCode::CONFLICT, _) => PageError::AlreadyUsed,
            (_, "expired_token") => PageError::ExpiredCode,
            (_, "invalid_grant") => PageError::UnknownCode,
            (s, _) if s.is_server_error() => PageError::Unavailable,
            _ => PageError::BadRequest,
        }
    }
}

/// What a page sees of the request it answers: headers (for the locale), URI, method, the
/// status the service means to answer with, and this response's CSP nonce.
#[derive(Debug)]
pub struct PageRequest<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) status: StatusCode,
    pub(crate) nonce: &'a str,
}

impl<'a> PageRequest<'a> {
    /// A request description, for testing a page outside the service.
    pub fn new(
        method: &'a Method,
        uri: &'a Uri,
        headers: &'a HeaderMap,
        status: StatusCode,
        nonce: &'a str,
    ) -> Self {
        PageRequest {
            method,
            uri,
            headers,
            status,
            nonce,
        }
    }

    /// The request's method.
    pub fn method(&self) -> &Method {
        self.method
    }

    /// The request's URI.
    pub fn uri(&self) -> &Uri {
        self.uri
    }

    /// The request's headers.
    pub fn headers(&self) -> &HeaderMap {
        self.headers
    }

    /// The status the service answers with unless the page says otherwise.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// This response's CSP nonce (fresh random bytes, base64): put it on every inline
    /// `<style>` and `<script>` as `nonce="..."`.
    pub fn nonce(&self) -> &str {
        self.nonce
    }

    /// The languages of `Accept-Language`, most preferred first (q=0 left out).
    pub fn languages(&self) -> Vec<&str> {
        accept_language(self.headers)
    }

    /// The first of the end user's languages that `supported` has (by primary tag when
    /// no exact match, so `fr-CA` finds `fr`), or `None`.
    pub fn preferred_language<'s>(&self, supported: &[&'s str]) -> Option<&'s str> {
        for wanted in self.languages() {
            if let Some(s) = supported.iter().find(|s| s.eq_ignore_ascii_case(wanted)) {
                return Some(s);
            }
            let primary = wanted.split('-').next().unwrap_or(wanted);
            if let Some(s) = supported.iter().find(|s| s.eq_ignore_ascii_case(primary)) {
                return Some(s);
            }
        }
        None
    }
}

/// `Accept-Language` tags by preference (RFC 9110 12.5.4), bounded so hostile headers cost
/// little.
fn accept_language(headers: &HeaderMap) -> Vec<&str> {
    let mut tags: Vec<(u16, usize, &str)> = Vec::new();
    for value in headers.get_all(header::ACCEPT_LANGUAGE) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',').take(16) {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or("").trim();
            if tag.is_empty() || tag == "*" || tag.len() > 35 {
                continue;
            }
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .map_or(1000, parse_q);
            if q > 0 {
                tags.push((q, tags.len(), tag));
            }
        }
    }
    tags.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    tags.into_iter().map(|(_, _, t)| t).collect()
}

/// A quality value in thousandths; unreadable values count as 0.
fn parse_q(q: &str) -> u16 {
    let q = q.trim();
    if let Some(frac) = q
        .strip_prefix("0.")
        .or(if q == "0" { Some("") } else { None })
    {
        let digits: String = frac.chars().take(3).collect();
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return 0;
        }
        return format!("{digits:0<3}").parse().unwrap_or(0);
    }
    if q == "1" || q.starts_with("1.") {
        return 1000;
    }
    0
}

/// A fresh CSP nonce: 16 bytes from the thread's CSPRNG (`rand`'s `ThreadRng`), base64. The
/// verification service makes one per response; other pages in the same look make their own.
pub fn new_nonce() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}

/// A rendered page: the HTML body, and optionally its own status, headers and CSP.
///
/// The service always adds `Content-Type`, `Cache-Control: no-store`, `X-Frame-Options: DENY`,
/// `X-Content-Type-Options: nosniff` and its `Referrer-Policy`, over any the page set, and the
/// CSP always keeps `frame-ancestors 'none'`: the approve button must not be framed.
#[derive(Clone, Debug)]
pub struct Page {
    pub(crate) body: String,
    pub(crate) status: Option<StatusCode>,
    pub(crate) headers: HeaderMap,
    pub(crate) csp: ContentSecurityPolicy,
}

impl Page {
    /// An HTML page under the strict default policy for this response's nonce
    /// ([`ContentSecurityPolicy::strict`]), answered with the service's status.
    pub fn html(body: impl Into<String>, request: &PageRequest<'_>) -> Self {
        Page {
            body: body.into(),
            status: None,
            headers: HeaderMap::new(),
            csp: ContentSecurityPolicy::strict(request.nonce()),
        }
    }

    /// Answers with `status` instead of the service's.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// Adds a response header (for example `Content-Language` or `Link`).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Replaces the Content-Security-Policy (for a page's own stylesheet, logo or script).
    pub fn with_csp(mut self, csp: ContentSecurityPolicy) -> Self {
        self.csp = csp;
        self
    }

    /// The body.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// The status the page chose, if it chose one.
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }

    /// The headers the page added.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The page's Content-Security-Policy.
    pub fn csp(&self) -> &ContentSecurityPolicy {
        &self.csp
    }
}

/// A Content-Security-Policy, directive by directive. It always ends with
/// `frame-ancestors 'none'`, whatever is set.
///
/// ```
/// use tower_device_flow::verification::ContentSecurityPolicy;
///
/// let csp = ContentSecurityPolicy::strict("abc123")
///     .allow("style-src", "https://cdn.example.com")
///     .allow("img-src", "https://cdn.example.com");
/// assert!(csp.to_string().contains("style-src 'nonce-abc123' https://cdn.example.com"));
/// assert!(csp.to_string().ends_with("frame-ancestors 'none'"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentSecurityPolicy {
    directives: Vec<(Cow<'static, str>, String)>,
}

impl ContentSecurityPolicy {
    /// Nothing but this origin's forms, images and the inline styles and scripts carrying
    /// `nonce`: `default-src 'none'; style-src 'nonce-N'; script-src 'nonce-N'; img-src 'self'
    /// data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'`.
    pub fn strict(nonce: &str) -> Self {
        let nonce = format!("'nonce-{nonce}'");
        ContentSecurityPolicy {
            directives: vec![
                ("default-src".into(), "'none'".into()),
                ("style-src".into(), nonce.clone()),
                ("script-src".into(), nonce),
                ("img-src".into(), "'self' data:".into()),
                ("form-action".into(), "'self'".into()),
                ("base-uri".into(), "'none'".into()),
            ],
        }
    }

    /// Sets `name` to `value`, replacing what it had.
    pub fn directive(mut self, name: impl Into<Cow<'static, str>>, value: &str) -> Self {
        let name = name.into();
        let value = clean(value);
        match self.directives.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = value,
            None => self.directives.push((name, value)),
        }
        self
    }

    /// Adds `source` to directive `name` (created if missing).
    pub fn allow(mut self, name: impl Into<Cow<'static, str>>, source: &str) -> Self {
        let name = name.into();
        let source = clean(source);
        match self.directives.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) if v == "'none'" => *v = source,
            Some((_, v)) => {
                v.push(' ');
                v.push_str(&source);
            }
            None => self.directives.push((name, source)),
        }
        self
    }

    /// The header value.
    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::try_from(self.to_string()).unwrap_or(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'",
        ))
    }
}

/// Keeps a directive value from closing its directive or the header.
fn clean(value: &str) -> String {
    value
        .chars()
        .filter(|c| *c != ';' && *c != ',' && !c.is_control())
        .collect()
}

impl fmt::Display for ContentSecurityPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, value) in &self.directives {
            if name != "frame-ancestors" && !name.contains([';', ',', ' ']) {
                write!(f, "{name} {value}; ")?;
            }
        }
        f.write_str("frame-ancestors 'none'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn languages_by_quality_then_order() {
        let h = headers(&[("accept-language", "de;q=0.5, fr-CA, en;q=0.8, xx;q=0, *")]);
        assert_eq!(accept_language(&h), ["fr-CA", "en", "de"]);
        let (m, u) = (Method::GET, Uri::from_static("/device"));
        let req = PageRequest::new(&m, &u, &h, StatusCode::OK, "n");
        assert_eq!(req.preferred_language(&["en", "fr"]), Some("fr"));
        assert_eq!(req.preferred_language(&["de"]), Some("de"));
        assert_eq!(req.preferred_language(&["es"]), None);
        assert_eq!(parse_q("0.25"), 250);
        assert_eq!(parse_q("1.0"), 1000);
        assert_eq!(parse_q("0"), 0);
        assert_eq!(parse_q("abc"), 0);
    }

    #[test]
    fn csp_keeps_frame_ancestors_and_cannot_be_split() {
        let csp = ContentSecurityPolicy::strict("n1")
            .directive("frame-ancestors", "*")
            .allow("img-src", "https://x; script-src *")
            .allow("connect-src", "'self'")
            .directive("default-src", "'self'");
        let s = csp.to_string();
        assert_eq!(
            s,
            "default-src 'self'; style-src 'nonce-n1'; script-src 'nonce-n1'; \
             img-src 'self' data: https://x script-src *; form-action 'self'; \
             base-uri 'none'; connect-src 'self'; frame-ancestors 'none'"
        );
        assert_eq!(s.matches("frame-ancestors").count(), 1);
    }

    #[test]
    fn nonces_differ() {
        let (a, b) = (new_nonce(), new_nonce());
        assert_ne!(a, b);
        assert_eq!(STANDARD.decode(&a).unwrap().len(), 16);
    }

    #[test]
    fn refusals_map_to_what_the_user_is_told() {
        use PageError::*;
        for (status, code, want) in [
            (429, "slow_down", TooManyAttempts),
            (401, "login_required", SignInRequired),
            (403, "access_denied", CrossSite),
            (409, "invalid_grant", AlreadyUsed),
            (400, "expired_token", ExpiredCode),
            (400, "invalid_grant", UnknownCode),
            (503, "temporarily_unavailable", Unavailable),
            (400, "invalid_request", BadRequest),
            (405, "invalid_request", BadRequest),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(PageError::classify(status, code), want, "{status} {code}");
        }
    }
}
