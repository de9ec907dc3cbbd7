//! The connected-devices page's HTML, in the look every end-user page of the crate shares
//! ([`layout`](crate::page::layout)), every field escaped.

use std::fmt::Write as _;

use super::ConnectedDevice;
use crate::clock::Timestamp;
use crate::page::{escape_html, format_rfc3339, format_utc, layout};

const TITLE: &str = "Connected devices";

/// What the page shows.
pub(super) enum Page<'a> {
    /// The signed-in end user's devices, each with a button that signs it out.
    Devices {
        /// Where the buttons post to.
        action: &'a str,
        end_user: &'a str,
        devices: &'a [ConnectedDevice],
        notice: Option<Notice>,
    },
    /// A signed-out browser, being sent to the application's login page.
    SignIn { login_url: &'a str },
    /// Something the end user must be told (sign-in needed, unknown device...).
    Problem { message: &'a str },
}

/// What the previous action did.
pub(super) enum Notice {
    /// This many devices were signed out.
    SignedOut(usize),
}

impl Page<'_> {
    /// The whole document, its inline style under `nonce` (the response's CSP nonce).
    pub(super) fn render(&self, nonce: &str) -> String {
        let mut main = String::with_capacity(1024);
        let _ = write!(main, "<h1>{TITLE}</h1>");
        match self {
            Page::Problem { message } => {
                let _ = write!(
                    main,
                    "<div class=\"alert\" role=\"alert\"><p>{}</p></div>",
                    escape_html(message)
                );
            }
            Page::SignIn { login_url } => {
                let _ = write!(
                    main,
                    "<p>Sign in to see the devices connected to your account.</p>\
                     <p><a class=\"button primary wide\" href=\"{}\">Sign in</a></p>",
                    escape_html(login_url)
                );
            }
            Page::Devices {
                action,
                end_user,
                devices,
                notice,
            } => {
                let _ = write!(
                    main,
                    "<p class=\"user\">Signed in as <strong>{}</strong></p>",
                    escape_html(end_user)
                );
                if let Some(Notice::SignedOut(n)) = notice {
                    let what = match n {
                        1 => "The device is signed out".to_owned(),
                        n => format!("{n} devices are signed out"),
                    };
                    let _ = write!(
                        main,
                        "<div class=\"notice\" role=\"status\"><p>{what}: their tokens no \
                         longer work.</p></div>"
                    );
                }
                main.push_str(if devices.is_empty() {
                    "<p class=\"lead\">No device is signed in to your account.</p>"
                } else {
                    "<p class=\"lead\">These devices can use your account. Sign out any you do \
                     not recognise or no longer use.</p>"
                });
                for d in devices.iter() {
                    device(&mut main, action, d);
                }
                if devices.len() > 1 {
                    let _ = write!(
                        main,
                        "<form method=\"post\" action=\"{}\" class=\"actions\">\
                         <input type=\"hidden\" name=\"all\" value=\"true\">\
                         <button class=\"button primary\" type=\"submit\">Sign out every \
                         device</button></form>",
                        escape_html(action)
                    );
                }
            }
        }
        layout("en", TITLE, nonce, &main)
    }
}

/// One device: who it is, what it may do, when it was approved and last used, and its button.
fn device(out: &mut String, action: &str, d: &ConnectedDevice) {
    let id = d.client_id.as_str();
    let name = d.client_name.as_deref().unwrap_or(id);
    let scopes: Vec<String> = d
        .scope
        .iter()
        .map(|s| format!("<code>{}</code>", escape_html(s)))
        .collect();
    let scopes = if scopes.is_empty() {
        "basic access".to_owned()
    } else {
        scopes.join(" ")
    };
    let _ = write!(
        out,
        "<section><h2>{name}</h2><dl class=\"details\">\
         <dt>Client</dt><dd>{name} <span class=\"muted\">(<code>{id}</code>)</span></dd>\
         <dt>Access</dt><dd>{scopes}</dd>\
         <dt>Approved</dt><dd>{approved}</dd>\
         <dt>Last used</dt><dd>{used}</dd></dl>\
         <form method=\"post\" action=\"{action}\">\
         <input type=\"hidden\" name=\"grant_id\" value=\"{grant}\">\
         <button class=\"button secondary wide\" type=\"submit\">Sign out</button></form>\
         </section>",
        name = escape_html(name),
        id = escape_html(id),
        approved = time(d.approved_at),
        used = time(d.last_used_at),
        action = escape_html(action),
        grant = escape_html(&d.grant_id.to_string()),
    );
}

/// A `<time>` element for `t`, shown in UTC to the minute.
fn time(t: Timestamp) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        format_rfc3339(t),
        format_utc(t)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ClientId, GrantId};
    use crate::scope::Scope;

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_unix_millis(secs * 1000)
    }

    #[test]
    fn times_are_utc_with_a_machine_readable_twin() {
        assert_eq!(
            time(at(1_700_000_000)),
            "<time datetime=\"2023-11-14T22:13:20Z\">2023-11-14 22:13 UTC</time>"
        );
    }

    #[test]
    fn every_field_is_escaped() {
        let hostile = "<script>alert(\"x\")</script>'&";
        let device = ConnectedDevice {
            grant_id: GrantId::from_bytes([0xab; 16]),
            client_id: ClientId::new(hostile),
            client_name: Some(hostile.to_owned()),
            scope: Scope::parse("<b>&'x").unwrap(),
            approved_at: at(1_700_000_000),
            last_used_at: at(1_700_000_600),
        };
        let html = Page::Devices {
            action: "/a\"><script>",
            end_user: hostile,
            devices: &[device.clone(), device],
            notice: Some(Notice::SignedOut(2)),
        }
        .render("NONCE");
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(!html.contains("'&"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#39;&amp;"));
        assert!(html.contains("&lt;b&gt;&amp;&#39;x"));
        assert!(html.contains("value=\"abababababababababababababababab\""));
        assert!(html.contains("Sign out every device"));
        let problem = Page::Problem { message: hostile }.render("NONCE");
        let sign_in = Page::SignIn {
            login_url: "/login?return_to=%2Fa\"><script>",
        }
        .render("NONCE");
        assert!(!sign_in.contains("<script"), "{sign_in}");
        assert!(!problem.contains("<script"), "{problem}");
    }

    #[test]
    fn a_nameless_client_shows_its_id_and_no_devices_says_so() {
        let device = ConnectedDevice {
            grant_id: GrantId::from_bytes([1; 16]),
            client_id: ClientId::new("tv"),
            client_name: None,
            scope: Scope::default(),
            approved_at: at(0),
            last_used_at: at(0),
        };
        let one = Page::Devices {
            action: "/account/devices/revoke",
            end_user: "alice",
            devices: &[device],
            notice: None,
        }
        .render("NONCE");
        assert!(one.contains("<h2>tv</h2>") && one.contains("basic access"));
        assert!(one.contains("<style nonce=\"NONCE\">"), "{one}");
        assert!(!one.contains("Sign out every device"));
        let none = Page::Devices {
            action: "/account/devices/revoke",
            end_user: "alice",
            devices: &[],
            notice: None,
        }
        .render("NONCE");
        assert!(none.contains("No device is signed in"));
        assert!(!none.contains("<form"));
    }
}
