//! What every page the crate serves to an end user's browser (the verification page, the
//! connected-devices page) carries: one place, so the pages cannot drift apart.
//!
//! Not cached (the pages show who is signed in and their devices), not framed (their buttons
//! must not be clickjacked), not sniffed, and no referrer sent to another site. The
//! Content-Security-Policy is each response's own, under a fresh nonce
//! ([`ContentSecurityPolicy::strict`](crate::page::ContentSecurityPolicy::strict), which always
//! keeps `frame-ancestors 'none'`). The POSTs these pages make are checked by
//! [`cross_site`](crate::cross_site).

use http::header::{self, HeaderMap, HeaderValue};

/// Sets the protective headers of a page for people (all but its CSP).
pub(crate) fn protect(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: under it browsers send `Origin: null` with the page's own form
    // POSTs, and the cross-site check could not tell them from a sandboxed attacker's.
    // `same-origin` still never sends the URL (and a code in it) to another site.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}
