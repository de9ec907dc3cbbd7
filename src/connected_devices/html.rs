//! The connected-devices page's HTML: plain, dependency-free, in the verification page's look,
//! every field escaped.

use std::fmt::Write as _;

use super::ConnectedDevice;
use crate::clock::Timestamp;
use crate::page::escape_html;

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
    /// Something the end user must be told (sign-in needed, unknown device...).
    Problem { message: &'a str },
}

/// What the previous action did.
pub(super) enum Notice {
    /// This many devices were signed out.
    SignedOut(usize),
}

impl Page<'_> {
    pub(super) fn render(&self) -> String {
        let mut body = String::with_capacity(1024);
        body.push_str("<h1>Connected devices</h1>");
        match self {
            Page::Problem { message } => {
                let _ = write!(
                    body,
                    "<p class=\"error\" role=\"alert\">{}</p>",
                    escape_html(message)
                );
            }
            Page::Devices {
                action,
                end_user,
                devices,
                notice,
            } => {
                let _ = write!(
                    body,
                    "<p>Signed in as <strong>{}</strong>.</p>",
                    escape_html(end_user)
                );
                if let Some(Notice::SignedOut(n)) = notice {
                    let what = if *n == 1 {
                        "The device is".to_owned()
                    } else {
                        format!("{n} devices are")
                    };
                    let _ = write!(
                        body,
                        "<p class=\"notice\" role=\"status\">{what} signed out: \
                         its tokens no longer work.</p>"
                    );
                }
                if devices.is_empty() {
                    body.push_str("<p>No device is signed in to your account.</p>");
                }
                for d in devices.iter() {
                    device(&mut body, action, d);
                }
                if devices.len() > 1 {
                    let _ = write!(
                        body,
                        "<form method=\"post\" action=\"{}\">\
                         <input type=\"hidden\" name=\"all\" value=\"true\">\
                         <button type=\"submit\">Sign out every device</button></form>",
                        escape_html(action)
                    );
                }
            }
        }
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>Connected devices</title><style>body{{font-family:system-ui,sans-serif;\
             max-width:32rem;margin:3rem auto;padding:0 1rem}}\
             section{{border-top:1px solid #ccc;padding:.5rem 0}}\
             button{{font:inherit;padding:.4rem 1rem}}.error{{color:#b00020}}\
             .notice{{color:#1b5e20}}</style></head><body>{body}</body></html>"
        )
    }
}

/// One device: who it is, what it may do, when it was approved and last used, and its button.
fn device(out: &mut String, action: &str, d: &ConnectedDevice) {
    let id = d.client_id.as_str();
    let name = d.client_name.as_deref().unwrap_or(id);
    let scopes: String = d
        .scope
        .iter()
        .map(|s| format!("<code>{}</code> ", escape_html(s)))
        .collect();
    let scopes = if scopes.is_empty() {
        "basic access".to_owned()
    } else {
        scopes
    };
    let _ = write!(
        out,
        "<section><h2>{}</h2><p>(<code>{}</code>) may use: {}</p>\
         <p>Approved {}; last used {}.</p>\
         <form method=\"post\" action=\"{}\">\
         <input type=\"hidden\" name=\"grant_id\" value=\"{}\">\
         <button type=\"submit\">Sign out</button></form></section>",
        escape_html(name),
        escape_html(id),
        scopes.trim_end(),
        time(d.approved_at),
        time(d.last_used_at),
        escape_html(action),
        escape_html(&d.grant_id.to_string()),
    );
}

/// A `<time>` element for `t`, shown in UTC to the minute.
fn time(t: Timestamp) -> String {
    let (y, mo, d, h, mi, s) = utc(t);
    format!(
        "<time datetime=\"{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z\">\
         {y:04}-{mo:02}-{d:02} {h:02}:{mi:02} UTC</time>"
    )
}

/// The UTC calendar date and time of `t`: year, month, day, hour, minute, second (the
/// proleptic Gregorian calendar, by the days-from-civil algorithm inverted).
fn utc(t: Timestamp) -> (u64, u64, u64, u64, u64, u64) {
    let secs = t.as_unix_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 0000-03-01, in 400-year eras of 146 097 days.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day, rest / 3600, rest / 60 % 60, rest % 60)
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
    fn utc_dates() {
        assert_eq!(utc(at(0)), (1970, 1, 1, 0, 0, 0));
        assert_eq!(utc(at(1_700_000_000)), (2023, 11, 14, 22, 13, 20));
        assert_eq!(utc(at(951_782_400)), (2000, 2, 29, 0, 0, 0));
        assert_eq!(utc(at(951_868_799)), (2000, 2, 29, 23, 59, 59));
        assert_eq!(utc(at(4_107_542_400)), (2100, 3, 1, 0, 0, 0));
        assert_eq!(utc(at(1_735_689_599)), (2024, 12, 31, 23, 59, 59));
        assert!(time(at(1_700_000_000)).contains("2023-11-14T22:13:20Z"));
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
        .render();
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(!html.contains("'&"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#39;&amp;"));
        assert!(html.contains("&lt;b&gt;&amp;&#39;x"));
        assert!(html.contains("value=\"abababababababababababababababab\""));
        assert!(html.contains("Sign out every device"));
        let problem = Page::Problem { message: hostile }.render();
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
        .render();
        assert!(one.contains("<h2>tv</h2>") && one.contains("basic access"));
        assert!(!one.contains("Sign out every device"));
        let none = Page::Devices {
            action: "/account/devices/revoke",
            end_user: "alice",
            devices: &[],
            notice: None,
        }
        .render();
        assert!(none.contains("No device is signed in"));
        assert!(!none.contains("<form"));
    }
}
