//! The verification page's HTML: what the end user is shown at each step, replaceable.

use crate::scope::Scope;

/// What the verification page shows.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum PageView<'a> {
    /// A form asking for the user code.
    EnterCode {
        /// Where the form posts to.
        action: &'a str,
        /// The code to pre-fill (from `?user_code=`), as typed; escape it.
        prefill: &'a str,
        /// Why the previous entry failed, if it did.
        error: Option<&'a str>,
    },
    /// The request behind a valid code, for the end user to approve or deny (RFC 8628 5.4:
    /// show who asks, for what, so a phished code is recognisable).
    Confirm {
        /// Where the form posts to.
        action: &'a str,
        /// The user code, as displayed.
        user_code: &'a str,
        /// The requesting client's identifier.
        client_id: &'a str,
        /// The requesting client's display name, if it has one.
        client_name: Option<&'a str>,
        /// The scope the device asks for.
        scope: &'a Scope,
        /// The signed-in end user.
        end_user: &'a str,
    },
    /// The decision was recorded.
    Done {
        /// True if approved, false if denied.
        approved: bool,
    },
    /// Something the end user must be told (unknown code, too many attempts, sign-in needed).
    Problem {
        /// The message.
        message: &'a str,
    },
}

/// Renders the verification page as HTML. Replace [`DefaultPage`] to use the application's
/// own templates.
pub trait VerificationPage: Send + Sync + 'static {
    /// The HTML for `view`. Escape everything taken from the view.
    fn render(&self, view: &PageView<'_>) -> String;
}

/// A small, dependency-free HTML page.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultPage;

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl VerificationPage for DefaultPage {
    fn render(&self, view: &PageView<'_>) -> String {
        let body = match view {
            PageView::EnterCode {
                action,
                prefill,
                error,
            } => format!(
                "<h1>Connect a device</h1>{}<form method=\"post\" action=\"{}\">\
                 <label for=\"user_code\">Enter the code shown on your device</label>\
                 <input id=\"user_code\" name=\"user_code\" value=\"{}\" autocomplete=\"off\" \
                 autocapitalize=\"characters\" spellcheck=\"false\" autofocus required>\
                 <button type=\"submit\">Continue</button></form>",
                error.map_or(String::new(), |e| format!(
                    "<p class=\"error\" role=\"alert\">{}</p>",
                    escape_html(e)
                )),
                escape_html(action),
                escape_html(prefill),
            ),
            PageView::Confirm {
                action,
                user_code,
                client_id,
                client_name,
                scope,
                end_user,
            } => {
                let scopes: String = scope
                    .iter()
                    .map(|s| format!("<li><code>{}</code></li>", escape_html(s)))
                    .collect();
                let scopes = if scopes.is_empty() {
                    "<li>basic access</li>".to_owned()
                } else {
                    scopes
                };
                format!(
                    "<h1>Allow this device?</h1>\
                     <p><strong>{}</strong> (<code>{}</code>) asks to act as \
                     <strong>{}</strong> with:</p><ul>{}</ul>\
                     <p>Code: <code>{}</code>. Only continue if this matches the code on your \
                     device and you started this sign-in yourself.</p>\
                     <form method=\"post\" action=\"{}\">\
                     <input type=\"hidden\" name=\"user_code\" value=\"{}\">\
                     <button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button> \
                     <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
                    escape_html(client_name.unwrap_or(client_id)),
                    escape_html(client_id),
                    escape_html(end_user),
                    scopes,
                    escape_html(user_code),
                    escape_html(action),
                    escape_html(user_code),
                )
            }
            PageView::Done { approved: true } => {
                "<h1>Device connected</h1><p>You can return to your device.</p>".to_owned()
            }
            PageView::Done { approved: false } => {
                "<h1>Request denied</h1><p>The device was not given access.</p>".to_owned()
            }
            PageView::Problem { message } => {
                format!(
                    "<h1>Connect a device</h1><p class=\"error\" role=\"alert\">{}</p>",
                    escape_html(message)
                )
            }
        };
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>Connect a device</title><style>body{{font-family:system-ui,sans-serif;\
             max-width:32rem;margin:3rem auto;padding:0 1rem}}input{{font:inherit;\
             font-size:1.5rem;letter-spacing:.2em;width:100%;margin:.5rem 0}}\
             button{{font:inherit;padding:.4rem 1rem}}.error{{color:#b00020}}</style></head>\
             <body>{body}</body></html>"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_it_shows() {
        let html = DefaultPage.render(&PageView::EnterCode {
            action: "/device",
            prefill: "\"><script>alert(1)</script>",
            error: Some("<b>"),
        });
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&quot;&gt;&lt;script&gt;"));
        assert!(html.contains("&lt;b&gt;"));
    }

    #[test]
    fn confirm_shows_client_and_scopes() {
        let scope = Scope::parse("email profile").unwrap();
        let html = DefaultPage.render(&PageView::Confirm {
            action: "/device",
            user_code: "WDJB-MJHT",
            client_id: "tv",
            client_name: Some("Living room TV"),
            scope: &scope,
            end_user: "alice",
        });
        for needle in [
            "Living room TV",
            "<code>email</code>",
            "<code>profile</code>",
            "alice",
            "WDJB-MJHT",
            "value=\"approve\"",
            "value=\"deny\"",
        ] {
            assert!(html.contains(needle), "{needle}");
        }
    }
}
