//! The end user's pages: what the verification page shows at each step, replaceable, and the
//! look that every end-user page of the crate shares.
//!
//! The verification service asks a [`VerificationPage`] to render a [`PageView`] (enter the
//! code, confirm, done, sign in, a problem) for a [`PageRequest`] (headers for the locale,
//! the status it means to answer, a fresh CSP nonce) and answers with the [`Page`] it gets:
//! body, and if the page wants, its own status, headers and [`ContentSecurityPolicy`].
//! [`DefaultPage`] takes every string from [`Texts`]; [`layout`] and [`STYLESHEET`] give other
//! pages (a list of connected devices, a login form) the same look.
//!
//! A page in the end user's language, with the application's own stylesheet:
//!
//! ```
//! use tower_device_flow::verification::{
//!     ContentSecurityPolicy, DefaultPage, Page, PageRequest, PageView, Texts, VerificationPage,
//! };
//!
//! struct Localized {
//!     en: DefaultPage,
//!     fr: DefaultPage,
//! }
//!
//! impl VerificationPage for Localized {
//!     fn render(&self, view: &PageView<'_>, request: &PageRequest<'_>) -> Page {
//!         let page = match request.preferred_language(&["en", "fr"]) {
//!             Some("fr") => &self.fr,
//!             _ => &self.en,
//!         };
//!         let html = page
//!             .html(view, request.nonce())
//!             .replace("</head>", "<link rel=\"stylesheet\" href=\"https://cdn.example.com/brand.css\"></head>");
//!         Page::html(html, request)
//!             .with_csp(ContentSecurityPolicy::strict(request.nonce()).allow("style-src", "https://cdn.example.com"))
//!             .with_header(http::header::VARY, http::HeaderValue::from_static("accept-language"))
//!     }
//! }
//!
//! let mut fr = Texts::default();
//! fr.lang = "fr".into();
//! fr.enter_title = "Connecter un appareil".into();
//! let page = Localized { en: DefaultPage::default(), fr: DefaultPage::with_texts(fr) };
//! # let _ = page;
//! ```

mod default;
mod layout;
mod texts;
mod view;

pub use default::DefaultPage;
pub use layout::{escape_html, fill, format_rfc3339, format_utc, layout, minutes_ceil, STYLESHEET};
pub use texts::{Message, Text, Texts};
pub use view::{
    new_nonce, ContentSecurityPolicy, Page, PageError, PageRequest, PageView, VerificationPage,
};
