//! [`DefaultPage`]: the crate's own verification page, every string from [`Texts`].

use std::sync::Arc;

use crate::clock::Timestamp;
use crate::grant::RequestOrigin;
use crate::page::layout::{escape_html, fill, format_rfc3339, format_utc, layout, minutes_ceil};
use crate::page::texts::Texts;
use crate::page::view::{Page, PageError, PageRequest, PageView, VerificationPage};
use crate::scope::Scope;

/// A product-grade page with no script: semantic HTML, labelled fields, visible focus, high
/// contrast, light and dark, readable on a phone; the code field accepts lower case, spaces
/// and a missing dash (the service normalizes the code). Reword or translate it with
/// [`Texts`]; choose texts by the request's language with your own [`VerificationPage`]
/// wrapping several `DefaultPage`s.
#[derive(Clone, Debug, Default)]
pub struct DefaultPage {
    texts: Arc<Texts>,
}

impl DefaultPage {
    /// The page with `texts`.
    pub fn with_texts(texts: Texts) -> Self {
        DefaultPage {
            texts: Arc::new(texts),
        }
    }

    /// Its texts.
    pub fn texts(&self) -> &Texts {
        &self.texts
    }

    /// The page's HTML for `view`, under `nonce` (the body of what
    /// [`render`](VerificationPage::render) answers).
    pub fn html(&self, view: &PageView<'_>, nonce: &str) -> String {
        let t = &*self.texts;
        let main = match view {
            PageView::EnterCode {
                action,
                prefill,
                error,
                end_user,
            } => self.enter_code(action, prefill, *error, *end_user),
            PageView::Confirm {
                action,
                user_code,
                client_id,
                client_name,
                scope,
                end_user,
                requested_at,
                expires_at,
                now,
                origin,
            } => self.confirm(&Confirm {
                action,
                user_code,
                client_id,
                client_name: *client_name,
                scope,
                end_user,
                requested_at: *requested_at,
                expires_at: *expires_at,
                now: *now,
                origin: *origin,
            }),
            PageView::Done { approved, action } => {
                let (icon, class, m) = if *approved {
                    ("\u{2713}", "ok", &t.approved)
                } else {
                    ("\u{2715}", "no", &t.denied)
                };
                format!(
                    "<div class=\"status-icon {class}\" aria-hidden=\"true\">{icon}</div>{eyebrow}\
                     <h1>{title}</h1><p class=\"lead\" role=\"status\">{detail}</p>\
                     <p><a href=\"{action}\">{another}</a></p>",
                    eyebrow = self.eyebrow(),
                    title = escape_html(&m.title),
                    detail = escape_html(&m.detail),
                    action = escape_html(action),
                    another = escape_html(&t.enter_another),
                )
            }
            PageView::SignIn { login_url } => {
                let m = &t.sign_in_required;
                format!(
                    "{eyebrow}<h1>{title}</h1><p>{detail}</p>\
                     <p><a class=\"button primary wide\" href=\"{url}\">{link}</a></p>",
                    eyebrow = self.eyebrow(),
                    title = escape_html(&m.title),
                    detail = escape_html(&m.detail),
                    url = escape_html(login_url),
                    link = escape_html(&t.sign_in_link),
                )
            }
            PageView::Problem {
                error,
                action,
                retry_after,
            } => {
                let m = t.error(*error);
                let minutes = minutes_ceil(retry_after.unwrap_or(60)).max(1).to_string();
                format!(
                    "{eyebrow}<h1>{title}</h1><div class=\"alert\" role=\"alert\"><p>{detail}</p></div>\
                     <p><a class=\"button secondary wide\" href=\"{action}\">{again}</a></p>",
                    eyebrow = self.eyebrow(),
                    title = escape_html(&m.title),
                    detail = fill(&m.detail, &[("minutes", &minutes)], true),
                    action = escape_html(action),
                    again = escape_html(&t.try_again),
                )
            }
        };
        layout(&t.lang, &t.title, nonce, &main)
    }

    fn eyebrow(&self) -> String {
        if self.texts.eyebrow.is_empty() {
            return String::new();
        }
        format!(
            "<p class=\"eyebrow\">{}</p>",
            escape_html(&self.texts.eyebrow)
        )
    }

    fn signed_in(&self, user: &str) -> String {
        format!(
            "<p class=\"user\">{}</p>",
            fill(&self.texts.signed_in_as, &[("user", user)], true)
        )
    }

    fn enter_code(
        &self,
        action: &str,
        prefill: &str,
        error: Option<PageError>,
        end_user: Option<&str>,
    ) -> String {
        let t = &*self.texts;
        let alert = error.map_or(String::new(), |e| {
            let m = t.error(e);
            format!(
                "<div class=\"alert\" role=\"alert\" id=\"code-error\"><strong>{}</strong>\
                 <p>{}</p></div>",
                escape_html(&m.title),
                fill(&m.detail, &[("minutes", "1")], true),
            )
        });
        let described = if error.is_some() {
            "code-error code-hint"
        } else {
            "code-hint"
        };
        format!(
            "{eyebrow}<h1>{title}</h1><p class=\"lead\">{intro}</p>{user}{alert}\
             <form method=\"post\" action=\"{action}\">\
             <div class=\"field\"><label for=\"user_code\">{label}</label>\
             <input class=\"code-input\" id=\"user_code\" name=\"user_code\" type=\"text\" \
             value=\"{prefill}\" placeholder=\"{placeholder}\" inputmode=\"text\" \
             autocomplete=\"one-time-code\" autocapitalize=\"characters\" autocorrect=\"off\" \
             spellcheck=\"false\" maxlength=\"64\" pattern=\"[A-Za-z0-9\\s\\-]+\" \
             aria-describedby=\"{described}\"{invalid} autofocus required>\
             <p class=\"muted\" id=\"code-hint\">{hint}</p></div>\
             <button class=\"button primary\" type=\"submit\">{button}</button></form>",
            eyebrow = self.eyebrow(),
            title = escape_html(&t.enter_title),
            intro = escape_html(&t.enter_intro),
            user = end_user.map_or(String::new(), |u| self.signed_in(u)),
            action = escape_html(action),
            label = escape_html(&t.code_label),
            prefill = escape_html(prefill),
            placeholder = escape_html(&t.code_placeholder),
            invalid = if error.is_some() {
                " aria-invalid=\"true\""
            } else {
                ""
            },
            hint = escape_html(&t.code_hint),
            button = escape_html(&t.continue_button),
        )
    }

    fn confirm(&self, c: &Confirm<'_>) -> String {
        let t = &*self.texts;
        let client = c.client_name.unwrap_or(c.client_id);
        let scopes: String = if c.scope.is_empty() {
            format!("<li>{}</li>", escape_html(&t.no_scope))
        } else {
            c.scope
                .iter()
                .map(|s| {
                    let words = t.scope(s);
                    if words == s {
                        format!("<li><code>{}</code></li>", escape_html(s))
                    } else {
                        format!(
                            "<li>{} <span class=\"muted\">(<code>{}</code>)</span></li>",
                            escape_html(words),
                            escape_html(s)
                        )
                    }
                })
                .collect()
        };
        let ago = c.now.saturating_duration_since(c.requested_at).as_secs();
        let ago = if ago < 60 {
            escape_html(&t.just_now)
        } else {
            fill(
                &t.minutes_ago,
                &[("minutes", &(ago / 60).to_string())],
                false,
            )
        };
        let left = minutes_ceil(c.expires_at.saturating_duration_since(c.now).as_secs());
        let unknown = || format!("<span class=\"muted\">{}</span>", escape_html(&t.unknown));
        let address = c
            .origin
            .and_then(|o| o.address)
            .map_or_else(unknown, |a| escape_html(&a.to_string()));
        let agent = c
            .origin
            .and_then(|o| o.user_agent.as_deref())
            .map_or_else(unknown, escape_html);
        let code = format!("<span class=\"code\">{}</span>", escape_html(c.user_code));
        format!(
            "{eyebrow}<h1>{title}</h1>\
             <p>{intro}</p><ul class=\"scopes\">{scopes}</ul>\
             <div class=\"notice\" role=\"note\"><p>{compare}</p><p>{not_you}</p></div>\
             <h2>{details}</h2><dl class=\"details\">\
             <dt>{client_label}</dt><dd>{client} <span class=\"muted nowrap\">(<code>{client_id}</code>)</span></dd>\
             <dt>{requested_label}</dt><dd><time datetime=\"{iso}\">{when}</time> \
             <span class=\"muted\">({ago})</span></dd>\
             <dt>{address_label}</dt><dd>{address}</dd>\
             <dt>{agent_label}</dt><dd>{agent}</dd></dl>\
             <form method=\"post\" action=\"{action}\">\
             <input type=\"hidden\" name=\"user_code\" value=\"{user_code}\">\
             <div class=\"actions\">\
             <button class=\"button secondary\" type=\"submit\" name=\"decision\" value=\"deny\">{deny}</button>\
             <button class=\"button primary\" type=\"submit\" name=\"decision\" value=\"approve\">{approve}</button>\
             </div></form><p class=\"muted\">{expires}</p>",
            eyebrow = self.eyebrow(),
            title = fill(&t.confirm_title, &[("client", client)], false),
            intro = fill(
                &t.confirm_intro,
                &[("client", client), ("user", c.end_user)],
                true
            ),
            compare = fill(&t.compare_codes, &[], false).replace("{code}", &code),
            details = escape_html(&t.request_details),
            client_label = escape_html(&t.client_id_label),
            client = escape_html(client),
            client_id = escape_html(c.client_id),
            requested_label = escape_html(&t.requested_at_label),
            iso = format_rfc3339(c.requested_at),
            when = format_utc(c.requested_at),
            address_label = escape_html(&t.address_label),
            agent_label = escape_html(&t.user_agent_label),
            expires = fill(&t.expires_in, &[("minutes", &left.to_string())], false),
            not_you = escape_html(&t.not_you),
            action = escape_html(c.action),
            user_code = escape_html(c.user_code),
            deny = escape_html(&t.deny),
            approve = escape_html(&t.approve),
        )
    }
}

/// The confirmation's data, gathered.
struct Confirm<'a> {
    action: &'a str,
    user_code: &'a str,
    client_id: &'a str,
    client_name: Option<&'a str>,
    scope: &'a Scope,
    end_user: &'a str,
    requested_at: Timestamp,
    expires_at: Timestamp,
    now: Timestamp,
    origin: Option<&'a RequestOrigin>,
}

impl VerificationPage for DefaultPage {
    fn render(&self, view: &PageView<'_>, request: &PageRequest<'_>) -> Page {
        Page::html(self.html(view, request.nonce()), request)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use http::{HeaderMap, Method, StatusCode, Uri};

    use super::*;

    fn render(page: &DefaultPage, view: &PageView<'_>) -> String {
        page.html(view, "NONCE")
    }

    fn confirm_view<'a>(scope: &'a Scope, origin: Option<&'a RequestOrigin>) -> PageView<'a> {
        let t0 = Timestamp::from_unix_millis(1_700_000_000_000);
        PageView::Confirm {
            action: "/device",
            user_code: "WDJB-MJHT",
            client_id: "tv",
            client_name: Some("Living room <TV>"),
            scope,
            end_user: "alice",
            requested_at: t0,
            expires_at: t0.saturating_add(std::time::Duration::from_secs(900)),
            now: t0.saturating_add(std::time::Duration::from_secs(180)),
            origin,
        }
    }

    #[test]
    fn escapes_everything_it_shows() {
        let html = render(
            &DefaultPage::default(),
            &PageView::EnterCode {
                action: "/device\"",
                prefill: "\"><script>alert(1)</script>",
                error: Some(PageError::UnknownCode),
                end_user: Some("<b>eve</b>"),
            },
        );
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("value=\"&quot;&gt;&lt;script&gt;"));
        assert!(html.contains("action=\"/device&quot;\""));
        assert!(html.contains("&lt;b&gt;eve&lt;/b&gt;"));
        assert!(!html.contains("<b>eve"));
    }

    #[test]
    fn the_code_form_is_accessible_and_tolerant() {
        let html = render(
            &DefaultPage::default(),
            &PageView::EnterCode {
                action: "/device",
                prefill: "wdjb mjht",
                error: Some(PageError::UnknownCode),
                end_user: None,
            },
        );
        for needle in [
            "<label for=\"user_code\">",
            "id=\"user_code\"",
            "autocomplete=\"one-time-code\"",
            "autocapitalize=\"characters\"",
            "inputmode=\"text\"",
            "spellcheck=\"false\"",
            "aria-invalid=\"true\"",
            "aria-describedby=\"code-error code-hint\"",
            "role=\"alert\"",
            "That code didn&#39;t work",
            "value=\"wdjb mjht\"",
        ] {
            assert!(html.contains(needle), "{needle} in {html}");
        }
        // Lower case, spaces and a missing dash pass the field's own check (the browser test
        // types such a code); the service normalizes it.
        assert!(html.contains("pattern=\"[A-Za-z0-9\\s\\-]+\""), "{html}");
        // No script at all in the default page.
        assert!(!html.contains("<script"));
        assert!(html.contains("<style nonce=\"NONCE\">"));
    }

    #[test]
    fn confirm_shows_client_scopes_in_words_and_where_the_request_came_from() {
        let mut texts = Texts::default();
        texts
            .scopes
            .insert("profile".into(), "See your name & picture".into());
        let page = DefaultPage::with_texts(texts);
        let scope = Scope::parse("email profile").unwrap();
        let origin = RequestOrigin::new(
            Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))),
            Some("SmartTV/1.0 <x>"),
        );
        let html = render(&page, &confirm_view(&scope, Some(&origin)));
        for needle in [
            "Allow Living room &lt;TV&gt;?",
            "<strong>Living room &lt;TV&gt;</strong> is asking",
            "See your name &amp; picture <span class=\"muted\">(<code>profile</code>)",
            "<li><code>email</code></li>",
            "<span class=\"code\">WDJB-MJHT</span>",
            "<time datetime=\"2023-11-14T22:13:20Z\">2023-11-14 22:13 UTC</time>",
            "3 min ago",
            "203.0.113.7",
            "SmartTV/1.0 &lt;x&gt;",
            "The code expires in 12 min.",
            "account (<strong>alice</strong>)",
            "If it does not, if the details below look wrong",
            "name=\"user_code\" value=\"WDJB-MJHT\"",
            "value=\"approve\"",
            "value=\"deny\"",
        ] {
            assert!(html.contains(needle), "{needle} in {html}");
        }
        assert!(!html.contains("<TV>"));
        assert!(!html.contains("<x>"));

        // Without a recorded origin the page says so rather than showing nothing.
        let html = render(&page, &confirm_view(&scope, None));
        assert_eq!(html.matches("Not recorded").count(), 2, "{html}");
    }

    #[test]
    fn every_text_comes_from_texts() {
        let mut t = Texts {
            lang: "fr".into(),
            approve: "Autoriser".into(),
            deny: "Refuser".into(),
            confirm_title: "Autoriser {client} ?".into(),
            ..Texts::default()
        };
        t.approved.title = "Appareil connecté".into();
        t.too_many_attempts.detail = "Réessayez dans {minutes} min.".into();
        let page = DefaultPage::with_texts(t);
        let scope = Scope::parse("profile").unwrap();
        let html = render(&page, &confirm_view(&scope, None));
        assert!(html.contains("<html lang=\"fr\">"));
        assert!(html.contains(">Autoriser</button>"));
        assert!(html.contains(">Refuser</button>"));
        assert!(html.contains("Autoriser Living room &lt;TV&gt; ?"));
        let html = render(
            &page,
            &PageView::Done {
                approved: true,
                action: "/device",
            },
        );
        assert!(html.contains("Appareil connecté"));
        let html = render(
            &page,
            &PageView::Problem {
                error: PageError::TooManyAttempts,
                action: "/device",
                retry_after: Some(125),
            },
        );
        assert!(
            html.contains("Réessayez dans <strong>3</strong> min."),
            "{html}"
        );
    }

    #[test]
    fn every_problem_says_what_to_do_next() {
        let page = DefaultPage::default();
        for error in [
            PageError::UnknownCode,
            PageError::ExpiredCode,
            PageError::AlreadyUsed,
            PageError::TooManyAttempts,
            PageError::MissingCode,
            PageError::SignInRequired,
            PageError::CrossSite,
            PageError::BadRequest,
            PageError::Unavailable,
        ] {
            let m = page.texts().error(error);
            let html = render(
                &page,
                &PageView::Problem {
                    error,
                    action: "/device",
                    retry_after: None,
                },
            );
            assert!(html.contains(&escape_html(&m.title)), "{error:?}");
            assert!(m.detail.len() > 20, "{error:?} says what to do");
            assert!(html.contains("href=\"/device\""), "{error:?}: a way back");
        }
        let html = render(
            &page,
            &PageView::Done {
                approved: false,
                action: "/device",
            },
        );
        assert!(html.contains("Request denied"));
        let html = render(
            &page,
            &PageView::SignIn {
                login_url: "/login?return_to=%2Fdevice",
            },
        );
        assert!(html.contains("href=\"/login?return_to=%2Fdevice\""));
    }

    #[test]
    fn render_answers_under_the_request_nonce() {
        let (m, u, h) = (Method::GET, Uri::from_static("/device"), HeaderMap::new());
        let req = PageRequest::new(&m, &u, &h, StatusCode::OK, "abc");
        let page = DefaultPage::default().render(
            &PageView::Done {
                approved: true,
                action: "/device",
            },
            &req,
        );
        assert_eq!(page.status(), None);
        assert!(page.body().contains("<style nonce=\"abc\">"));
        assert!(page.csp().to_string().contains("style-src 'nonce-abc'"));
    }
}
