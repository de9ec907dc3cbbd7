//! `htu` comparison (RFC 9449 4.3): an HTTP URI without query and fragment, after RFC 3986
//! syntax-based (6.2.2) and scheme-based (6.2.3) normalization.

use std::fmt;

/// An `http` or `https` URI without query and fragment, normalized: scheme and host in lower
/// case, the default port and an empty port dropped, percent-encodings in upper case and
/// decoded where they stand for unreserved characters, dot segments removed, and an empty
/// path made `/`. Two URIs that normalize to the same `Htu` name the same resource.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Htu(String);

impl Htu {
    /// Normalizes `uri`; `None` if it is not an absolute `http` or `https` URI (with no
    /// user information).
    pub fn parse(uri: &str) -> Option<Self> {
        let uri = uri.split(['#', '?']).next().unwrap_or("");
        if !uri.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let (scheme, rest) = uri.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return None;
        }
        let (host, port) = if authority.starts_with('[') {
            let end = authority.find(']')?;
            let (host, after) = authority.split_at(end + 1);
            match after {
                "" => (host, None),
                after => (host, Some(after.strip_prefix(':')?)),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() || (host.contains(':') && !host.starts_with('[')) {
            return None;
        }
        let port = match port {
            None | Some("") => None,
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => {
                let p: u16 = p.parse().ok()?;
                (p != default_port).then_some(p)
            }
            Some(_) => return None,
        };
        let mut out = String::with_capacity(uri.len() + 1);
        out.push_str(&scheme);
        out.push_str("://");
        out.push_str(&percent_normalize(&host.to_ascii_lowercase())?);
        if let Some(p) = port {
            out.push(':');
            out.push_str(&p.to_string());
        }
        let path = percent_normalize(path)?;
        out.push_str(&remove_dot_segments(&path));
        Some(Htu(out))
    }

    /// The normalized URI.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Htu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Htu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Htu({})", self.0)
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Upper-case hex digits in percent-encodings, and decode those of unreserved characters
/// (RFC 3986 6.2.2.1, 6.2.2.2). `None` for a `%` not followed by two hex digits.
fn percent_normalize(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            let value = u8::from_str_radix(hex, 16).ok()?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            if is_unreserved(value) {
                out.push(char::from(value));
            } else {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
            i += 3;
        } else {
            out.push(char::from(bytes[i]));
            i += 1;
        }
    }
    Some(out)
}

/// RFC 3986 5.2.4, on an absolute path (or an empty one, which becomes `/`).
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = path.is_empty();
    for (i, seg) in path.split('/').enumerate() {
        if i == 0 {
            continue; // before the leading '/'
        }
        trailing_slash = false;
        match seg {
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Option<String> {
        Htu::parse(s).map(|h| h.0)
    }

    #[test]
    fn normalizes_case_ports_and_empty_paths() {
        let want = Some("https://server.example.com/token".to_owned());
        for same in [
            "https://server.example.com/token",
            "HTTPS://Server.EXAMPLE.com/token",
            "https://server.example.com:443/token",
            "https://server.example.com:/token",
            "https://server.example.com/token?grant=1#frag",
            "https://server.example.com/./token",
            "https://server.example.com/a/../token",
            "https://server.example.com/%74oken",
        ] {
            assert_eq!(n(same), want, "{same}");
        }
        assert_eq!(n("http://a.example"), Some("http://a.example/".into()));
        assert_eq!(
            n("http://a.example:8080/x"),
            Some("http://a.example:8080/x".into())
        );
        assert_eq!(
            n("http://a.example:80/x"),
            Some("http://a.example/x".into())
        );
        assert_eq!(
            n("http://127.0.0.1:0080/x"),
            Some("http://127.0.0.1/x".into())
        );
        assert_eq!(n("http://[::1]:8080/a"), Some("http://[::1]:8080/a".into()));
        assert_eq!(n("http://[::1]/a"), Some("http://[::1]/a".into()));
        assert_eq!(
            n("http://a.example/%2f%7e"),
            Some("http://a.example/%2F~".into())
        );
        assert_eq!(
            n("http://a.example/a/b/"),
            Some("http://a.example/a/b/".into())
        );
    }

    #[test]
    fn differences_that_matter_stay() {
        assert_ne!(n("https://a.example/token"), n("http://a.example/token"));
        assert_ne!(
            n("https://a.example/token"),
            n("https://a.example:8443/token")
        );
        assert_ne!(n("https://a.example/token"), n("https://b.example/token"));
        assert_ne!(n("https://a.example/token"), n("https://a.example/Token"));
        assert_ne!(n("https://a.example/token"), n("https://a.example/token/"));
    }

    #[test]
    fn refuses_what_is_not_an_http_uri() {
        for bad in [
            "",
            "/token",
            "ftp://a.example/x",
            "https://user@a.example/x",
            "https:///x",
            "https://a.example:99999/x",
            "https://a.example:8a/x",
            "https://a.example/%zz",
            "https://a.example/%4",
            "https://a.example/ä",
            "https://a.example/a b",
            "https://[::1/x",
            "https://[::1]x/y",
        ] {
            assert_eq!(n(bad), None, "{bad}");
        }
    }
}
