//! What the verification page does with a signed-out visitor, and the return address that
//! brings them back to the code they were entering.
//!
//! The return address is always built here, from the configured verification path and the
//! user code, never from a URL the request supplied: a same-origin path such as
//! `/device?user_code=WDJB-MJHT`, so the login page cannot be turned into an open redirect.
//! An application whose login takes a `return_to` parameter should still check it before
//! redirecting there: [`local_path`] does.

use http::HeaderValue;

use crate::codes::UserCodeGenerator;

/// The query parameter [`SignIn::redirect`] gives the login page the return address in.
pub const RETURN_TO: &str = "return_to";

/// The longest typed code kept in a return address when it cannot be normalized.
const MAX_TYPED: usize = 64;

/// What a signed-out visitor of the verification page gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignIn {
    /// 401, with the [`EndUserResolver`](crate::verification::EndUserResolver)'s challenge if
    /// it has one (HTTP Basic's prompts for credentials). The default.
    #[default]
    Challenge,
    /// A browser (a request accepting `text/html`) is sent with 303 See Other to the
    /// application's login page, with the return address in the query parameter
    /// `return_param`: `{login_url}?{return_param}=%2Fdevice%3Fuser_code%3DWDJB-MJHT`. Other
    /// clients (JSON, command-line tools) still get the 401.
    Redirect {
        /// The login page: a path (`/login`) or an absolute URL; may have a query already.
        login_url: String,
        /// The query parameter for the return address (see [`RETURN_TO`]).
        return_param: String,
    },
}

impl SignIn {
    /// Redirect to `login_url` with the return address in `return_to`.
    pub fn redirect(login_url: impl Into<String>) -> Self {
        SignIn::Redirect {
            login_url: login_url.into(),
            return_param: RETURN_TO.into(),
        }
    }
}

/// `value` if it is a path on this origin: it starts with one `/`, and has no backslash,
/// control character or whitespace (which browsers may turn into `//other.site`). Anything
/// else, such as `https://evil.example`, `//evil.example` or `/\evil.example`, is `None`.
///
/// ```
/// use tower_device_flow::verification::local_path;
///
/// assert_eq!(local_path("/device?user_code=WDJB-MJHT"), Some("/device?user_code=WDJB-MJHT"));
/// assert_eq!(local_path("//evil.example/device"), None);
/// assert_eq!(local_path("https://evil.example/"), None);
/// ```
pub fn local_path(value: &str) -> Option<&str> {
    let rest = value.strip_prefix('/')?;
    if rest.starts_with('/') || rest.starts_with('\\') {
        return None;
    }
    if value
        .chars()
        .any(|c| c == '\\' || c.is_control() || c.is_whitespace())
    {
        return None;
    }
    Some(value)
}

/// The return address for a visitor entering `code` on the page at `path`: `path` (when it
/// is a [`local_path`], else `/`) with `?user_code=` and the code, normalized and displayed
/// when it can be a code, else as typed, cut to 64 bytes; percent-encoded.
pub fn return_address(path: &str, code: Option<&str>, codes: &dyn UserCodeGenerator) -> String {
    let path = local_path(path)
        .map(|p| p.split(['?', '#']).next().unwrap_or("/"))
        .unwrap_or("/");
    let code = code.map(str::trim).filter(|c| !c.is_empty());
    let Some(code) = code else {
        return path.to_owned();
    };
    let code = match codes.normalize(code) {
        Some(c) => codes.display(&c),
        None => {
            let mut end = code.len().min(MAX_TYPED);
            while !code.is_char_boundary(end) {
                end -= 1;
            }
            code[..end].to_owned()
        }
    };
    format!("{path}?user_code={}", percent_encode(&code))
}

/// Where to send a signed-out browser: `login_url` with `return_to` in `param`.
pub(crate) fn login_location(login_url: &str, param: &str, return_to: &str) -> Option<HeaderValue> {
    let sep = if login_url.contains('?') { '&' } else { '?' };
    let url = format!(
        "{login_url}{sep}{}={}",
        percent_encode(param),
        percent_encode(return_to)
    );
    HeaderValue::try_from(url).ok()
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::UserCodeFormat;

    #[test]
    fn only_local_paths() {
        for ok in [
            "/",
            "/device",
            "/device?user_code=WDJB-MJHT",
            "/a/b?c=%2F%2F",
        ] {
            assert_eq!(local_path(ok), Some(ok));
        }
        for bad in [
            "",
            "device",
            "//evil.example",
            "/\\evil.example",
            "/\\/evil.example",
            "https://evil.example/device",
            "javascript:alert(1)",
            "/\t/evil.example",
            "/device\r\nLocation: x",
            "/ /evil",
            " /device",
        ] {
            assert_eq!(local_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_return_address_keeps_the_code_and_nothing_else() {
        let codes = UserCodeFormat::default();
        assert_eq!(
            return_address("/device", Some("wdjb mjht"), &codes),
            "/device?user_code=WDJB-MJHT"
        );
        assert_eq!(return_address("/device", None, &codes), "/device");
        assert_eq!(return_address("/device", Some("  "), &codes), "/device");
        // Not a code: kept as typed, bounded and encoded.
        let hostile = format!("\"><script>{}", "x".repeat(100));
        let addr = return_address("/device", Some(&hostile), &codes);
        assert!(
            addr.starts_with("/device?user_code=%22%3E%3Cscript%3Exxx"),
            "{addr}"
        );
        assert!(
            addr.len() < "/device?user_code=".len() + 3 * 64 + 1,
            "{addr}"
        );
        assert!(local_path(&addr).is_some());
        // A misconfigured path cannot make it leave the origin.
        assert_eq!(
            return_address("//evil.example", Some("WDJB-MJHT"), &codes),
            "/?user_code=WDJB-MJHT"
        );
        assert_eq!(
            return_address("/device?x=1#f", Some("WDJB-MJHT"), &codes),
            "/device?user_code=WDJB-MJHT"
        );
        // A multi-byte character is not cut in half.
        let long = "é".repeat(40);
        assert!(return_address("/device", Some(&long), &codes).ends_with("%C3%A9"));
    }

    #[test]
    fn the_login_location_carries_the_return_address() {
        let loc = login_location("/login", RETURN_TO, "/device?user_code=WDJB-MJHT").unwrap();
        assert_eq!(loc, "/login?return_to=%2Fdevice%3Fuser_code%3DWDJB-MJHT");
        let loc = login_location("https://id.example/login?app=tv", "next", "/device").unwrap();
        assert_eq!(loc, "https://id.example/login?app=tv&next=%2Fdevice");
    }
}
