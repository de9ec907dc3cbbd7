//! The look of the crate's end-user pages: one HTML shell and one stylesheet, for the
//! verification page and any other page an end user sees (such as a list of connected
//! devices), plus the small helpers they share (escaping, placeholders, times).

use crate::clock::Timestamp;

/// The stylesheet of [`layout`]: readable on a phone, high contrast, visible focus, light and
/// dark (`prefers-color-scheme`). Inline it under the response's nonce (as [`layout`] does)
/// or serve it as a file.
///
/// Classes: `card` (the page's box), `eyebrow` (small line above the heading), `lead`,
/// `muted`, `field` (label + input + hint), `code-input`, `text-input`, `button` with `primary` or
/// `secondary`, `actions` (a row of buttons), `alert` (an error), `notice` (a warning),
/// `code` (a user code shown large), `details` (a `<dl>` of facts), `status-icon` with `ok`
/// or `no`, `user` (who is signed in).
pub const STYLESHEET: &str = r#":root{color-scheme:light dark;--bg:#f3f4f6;--card:#fff;--text:#16191d;--muted:#4f5761;--line:#c9ced4;--field:#6b7480;--accent:#1859c9;--accent-hover:#12479f;--on-accent:#fff;--focus:#1859c9;--err-bg:#fdecea;--err-text:#5c1511;--err-line:#b3261e;--warn-bg:#fff6dc;--warn-text:#4a3600;--warn-line:#a77b00;--ok:#137333;--code-bg:#eef1f5}
@media (prefers-color-scheme:dark){:root{--bg:#0f1115;--card:#1a1d23;--text:#eceef1;--muted:#b4bac2;--line:#3a404a;--field:#8d96a1;--accent:#8ab4ff;--accent-hover:#a9c7ff;--on-accent:#0b1a33;--focus:#8ab4ff;--err-bg:#3b1713;--err-text:#ffdad5;--err-line:#ff8a7d;--warn-bg:#352a06;--warn-text:#ffe8a6;--warn-line:#e0b232;--ok:#7fd99a;--code-bg:#252a32}}
*,*::before,*::after{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;min-height:100vh;background:var(--bg);color:var(--text);font:1.0625rem/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;display:flex;align-items:flex-start;justify-content:center;padding:clamp(.75rem,4vh,3rem) 1rem}
.card{width:100%;max-width:30rem;background:var(--card);border:1px solid var(--line);border-radius:1rem;padding:clamp(1.25rem,5vw,2.25rem);box-shadow:0 1px 2px rgba(0,0,0,.06),0 8px 24px rgba(0,0,0,.06)}
.card>:last-child{margin-bottom:0}
form{margin:0 0 1rem}
.eyebrow{margin:0 0 .25rem;color:var(--muted);font-size:.8125rem;font-weight:600;letter-spacing:.06em;text-transform:uppercase}
h1{margin:0 0 .75rem;font-size:1.625rem;line-height:1.25;overflow-wrap:anywhere}
h2{margin:1.5rem 0 .5rem;font-size:1rem}
p{margin:0 0 1rem}
.lead{font-size:1.0625rem}
.muted{color:var(--muted);font-size:.9375rem}
.user{margin:0 0 1.25rem;color:var(--muted);font-size:.9375rem}
a{color:var(--accent);text-underline-offset:.15em}
a:hover{color:var(--accent-hover)}
:focus-visible{outline:3px solid var(--focus);outline-offset:2px}
.field{margin:1.25rem 0}
.field label{display:block;font-weight:600;margin-bottom:.375rem}
.field .muted{margin:.375rem 0 0}
.code-input{display:block;width:100%;font:600 1.75rem/1.2 ui-monospace,"SF Mono",Menlo,Consolas,monospace;letter-spacing:.12em;text-transform:uppercase;text-align:center;padding:.625rem .5rem;color:var(--text);background:var(--card);border:2px solid var(--field);border-radius:.625rem}
.text-input{display:block;width:100%;font:inherit;padding:.625rem .75rem;color:var(--text);background:var(--card);border:2px solid var(--field);border-radius:.625rem}
.text-input:focus-visible{border-color:var(--focus)}
.code-input::placeholder{color:var(--muted);opacity:.55;letter-spacing:.12em}
.code-input:focus-visible{border-color:var(--focus)}
.code-input[aria-invalid=true]{border-color:var(--err-line)}
.button{display:inline-flex;align-items:center;justify-content:center;min-height:3rem;padding:.625rem 1.25rem;font:inherit;font-weight:600;border-radius:.625rem;border:2px solid transparent;cursor:pointer;text-decoration:none;text-align:center}
.primary{background:var(--accent);color:var(--on-accent)}
.primary:hover{background:var(--accent-hover);color:var(--on-accent)}
.secondary{background:transparent;color:var(--text);border-color:var(--field)}
.secondary:hover{border-color:var(--text);color:var(--text)}
form>.button,.wide{width:100%}
.actions{display:flex;gap:.75rem;flex-wrap:wrap;margin-top:1.5rem}
.actions .button{flex:1 1 9rem}
.alert,.notice{border-left:4px solid;border-radius:.5rem;padding:.75rem 1rem;margin:0 0 1.25rem}
.alert{background:var(--err-bg);color:var(--err-text);border-color:var(--err-line)}
.notice{background:var(--warn-bg);color:var(--warn-text);border-color:var(--warn-line)}
.alert strong,.notice strong{display:block}
.alert p,.notice p{margin:.25rem 0 0}
.alert p:first-child,.notice p:first-child{margin-top:0}
.notice p+p{margin-top:.5rem}
.code{display:inline-block;font:600 1.25rem/1.3 ui-monospace,"SF Mono",Menlo,Consolas,monospace;letter-spacing:.1em;background:var(--code-bg);border-radius:.375rem;padding:.125rem .5rem;white-space:nowrap}
ul.scopes{margin:0 0 1.25rem;padding-left:1.25rem}
ul.scopes li{margin:.25rem 0}
ul.scopes .muted{font-size:.8125rem;margin-left:.25rem}
.details{display:grid;grid-template-columns:minmax(5.5rem,max-content) minmax(0,1fr);gap:.375rem 1rem;margin:0 0 1rem;font-size:.9375rem}
.details dt{color:var(--muted)}
.details dd{margin:0;overflow-wrap:break-word}
.details .nowrap{white-space:nowrap}
.status-icon{display:flex;width:3rem;height:3rem;border-radius:50%;align-items:center;justify-content:center;font-size:1.5rem;font-weight:700;margin-bottom:1rem;border:3px solid}
.status-icon.ok{color:var(--ok)}
.status-icon.no{color:var(--muted)}
@media (max-width:26rem){.details{font-size:.875rem;gap:.375rem .75rem}h1{font-size:1.5rem}}
@media (forced-colors:active){.button{border-color:ButtonText}}"#;

/// A whole HTML document in the crate's look: `main_html` (trusted HTML: escape what you put
/// in it) inside a `<main class="card">`, the [`STYLESHEET`] inline under `nonce` (the
/// response's CSP nonce), the viewport set for phones.
///
/// ```
/// use tower_device_flow::verification::{escape_html, layout};
///
/// let html = layout("en", "Your devices", "NONCE", &format!("<h1>{}</h1>", escape_html("Devices")));
/// assert!(html.starts_with("<!doctype html>"));
/// assert!(html.contains("<style nonce=\"NONCE\">"));
/// ```
pub fn layout(lang: &str, title: &str, nonce: &str, main_html: &str) -> String {
    format!(
        "<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\"><title>{title}</title>\
         <style nonce=\"{nonce}\">{STYLESHEET}</style></head>\
         <body><main class=\"card\">{main_html}</main></body></html>",
        lang = escape_html(lang),
        title = escape_html(title),
        nonce = escape_html(nonce),
    )
}

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

/// `template` as HTML: its text escaped, each `{name}` of `values` replaced by the escaped
/// value (in `<strong>` when `bold`). Unknown placeholders stay as written.
pub fn fill(template: &str, values: &[(&str, &str)], bold: bool) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&escape_html(&rest[..open]));
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (close, *v))
        });
        match value {
            Some((close, v)) => {
                if bold {
                    out.push_str("<strong>");
                }
                out.push_str(&escape_html(v));
                if bold {
                    out.push_str("</strong>");
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(&escape_html(rest));
    out
}

/// A time as `2023-11-14 22:13 UTC`.
pub fn format_utc(t: Timestamp) -> String {
    let (y, mo, d, h, mi, _) = civil(t.as_unix_secs());
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02} UTC")
}

/// A time as RFC 3339 (`2023-11-14T22:13:20Z`), for `<time datetime>`.
pub fn format_rfc3339(t: Timestamp) -> String {
    let (y, mo, d, h, mi, s) = civil(t.as_unix_secs());
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Whole minutes in `secs`, rounded up (a wait of 61 s is "2 min").
pub fn minutes_ceil(secs: u64) -> u64 {
    secs.div_ceil(60)
}

/// Year, month, day, hour, minute, second of a Unix time (UTC, proleptic Gregorian).
fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3_600) as u32,
        (rem % 3_600 / 60) as u32,
        (rem % 60) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape_html("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn fills_placeholders_escaped() {
        assert_eq!(
            fill(
                "Allow {client} for {user}?",
                &[("client", "<TV>"), ("user", "a&b")],
                true
            ),
            "Allow <strong>&lt;TV&gt;</strong> for <strong>a&amp;b</strong>?"
        );
        // Texts are escaped too; unknown and unclosed placeholders stay.
        assert_eq!(
            fill("<b>{nope} {client", &[("client", "x")], false),
            "&lt;b&gt;{nope} {client"
        );
        assert_eq!(fill("{a}{a}", &[("a", "1")], false), "11");
    }

    #[test]
    fn times() {
        let t = Timestamp::from_unix_millis(1_700_000_000_000);
        assert_eq!(format_utc(t), "2023-11-14 22:13 UTC");
        assert_eq!(format_rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(format_rfc3339(Timestamp::EPOCH), "1970-01-01T00:00:00Z");
        // A leap day.
        let leap = Timestamp::from_unix_millis(951_782_400_000);
        assert_eq!(format_rfc3339(leap), "2000-02-29T00:00:00Z");
        assert_eq!(minutes_ceil(0), 0);
        assert_eq!(minutes_ceil(1), 1);
        assert_eq!(minutes_ceil(60), 1);
        assert_eq!(minutes_ceil(61), 2);
    }

    #[test]
    fn layout_is_a_whole_escaped_document() {
        let html = layout("en\"", "<T>", "n\"", "<p>x</p>");
        assert!(html.starts_with("<!doctype html><html lang=\"en&quot;\">"));
        assert!(html.contains("<title>&lt;T&gt;</title>"));
        assert!(html.contains("<style nonce=\"n&quot;\">"));
        assert!(html.contains("name=\"viewport\""));
        assert!(html.contains("prefers-color-scheme:dark"));
        assert!(html.ends_with("<main class=\"card\"><p>x</p></main></body></html>"));
    }
}
