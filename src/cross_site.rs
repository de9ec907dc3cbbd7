//! Cross-site request checks for the state-changing POSTs an end user's browser makes (the
//! verification page's decision, and any page like it).
//!
//! A POST is accepted only when the browser says it comes from this origin: `Sec-Fetch-Site:
//! same-origin` (or `none`, a request the user started themselves), or, from a browser without
//! Fetch Metadata, an `Origin` equal to the server's own origin: the scheme, host and port of
//! the configured verification URI, never the request's `Host` header (which the attacker's
//! request sets as it likes). `same-site` is refused: a sibling subdomain is another
//! application. Any `Origin` that is present must match, whatever `Sec-Fetch-Site` says,
//! except `null`, which browsers send for same-origin POSTs from a page with a strict
//! referrer policy.
//!
//! A request with neither header does not come from a browser that could be tricked into
//! sending it (every browser in use sends `Origin` on a cross-origin POST): devices and
//! command-line clients send neither, and are accepted.

use http::header::{self, HeaderMap};
use http::Uri;

/// A web origin: scheme, host and port (RFC 6454), lowercased, with the default port filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// The origin of an absolute URI or of a serialized `Origin` header value.
    pub(crate) fn of(uri: &str) -> Option<Origin> {
        let uri: Uri = uri.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let authority = uri.authority()?;
        if authority.as_str().contains('@') {
            return None;
        }
        let port = match (authority.port_u16(), scheme.as_str()) {
            (Some(p), _) => p,
            (None, "https") => 443,
            (None, "http") => 80,
            _ => return None,
        };
        Some(Origin {
            scheme,
            host: authority.host().to_ascii_lowercase(),
            port,
        })
    }
}

/// Why a POST was refused as cross-site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CrossSite {
    /// `Sec-Fetch-Site` said `cross-site` or `same-site`.
    FetchMetadata,
    /// `Origin` named another origin (or could not be read).
    Origin,
}

/// Accepts a state-changing POST only from `own` origin (see the module documentation).
pub(crate) fn check(headers: &HeaderMap, own: Option<&Origin>) -> Result<(), CrossSite> {
    let mut sites = headers.get_all("sec-fetch-site").iter();
    let site = sites.next();
    if sites.next().is_some() {
        return Err(CrossSite::FetchMetadata);
    }
    if let Some(site) = site {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return Err(CrossSite::FetchMetadata);
        }
    }
    let mut origins = headers.get_all(header::ORIGIN).iter();
    let origin = origins.next();
    if origins.next().is_some() {
        return Err(CrossSite::Origin);
    }
    match origin {
        None => Ok(()),
        // An opaque origin is only believable where the browser vouched for the request.
        Some(o) if o.as_bytes() == b"null" && site.is_some() => Ok(()),
        Some(o) => {
            let presented = o.to_str().ok().and_then(Origin::of);
            match (presented, own) {
                (Some(p), Some(own)) if &p == own => Ok(()),
                _ => Err(CrossSite::Origin),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn origins_normalise() {
        let a = Origin::of("https://Auth.Example.com/device").unwrap();
        assert_eq!(a, Origin::of("https://auth.example.com:443").unwrap());
        assert_ne!(a, Origin::of("http://auth.example.com").unwrap());
        assert_ne!(a, Origin::of("https://auth.example.com:8443").unwrap());
        assert_ne!(a, Origin::of("https://evil.auth.example.com").unwrap());
        assert_eq!(Origin::of("null"), None);
        assert_eq!(Origin::of("/device"), None);
        assert_eq!(Origin::of("https://user@auth.example.com"), None);
    }

    #[test]
    fn only_same_origin_posts_pass() {
        let own = Origin::of("https://auth.example.com/device");
        let own = own.as_ref();
        let ok: &[&[(&str, &str)]] = &[
            &[],
            &[("sec-fetch-site", "same-origin")],
            &[("sec-fetch-site", "none")],
            &[
                ("sec-fetch-site", "same-origin"),
                ("origin", "https://auth.example.com"),
            ],
            &[("sec-fetch-site", "same-origin"), ("origin", "null")],
            &[("origin", "https://auth.example.com")],
            &[("origin", "https://AUTH.example.com:443")],
        ];
        for headers in ok {
            assert_eq!(check(&h(headers), own), Ok(()), "{headers:?}");
        }
        let refused: &[&[(&str, &str)]] = &[
            &[("sec-fetch-site", "cross-site")],
            &[("sec-fetch-site", "same-site")],
            &[
                ("sec-fetch-site", "same-site"),
                ("origin", "https://sub.example.com"),
            ],
            &[
                ("sec-fetch-site", "same-origin"),
                ("origin", "https://evil.example"),
            ],
            &[
                ("sec-fetch-site", "same-origin"),
                ("sec-fetch-site", "same-origin"),
            ],
            &[("origin", "https://evil.example")],
            &[("origin", "http://auth.example.com")],
            &[("origin", "https://auth.example.com:8443")],
            &[("origin", "null")],
            &[("origin", "garbage")],
            &[
                ("origin", "https://auth.example.com"),
                ("origin", "https://auth.example.com"),
            ],
        ];
        for headers in refused {
            assert!(check(&h(headers), own).is_err(), "{headers:?}");
        }
        // Host is never the reference: a foreign Origin matching a forged Host is refused.
        let forged = h(&[("host", "evil.example"), ("origin", "https://evil.example")]);
        assert!(check(&forged, own).is_err());
    }
}
