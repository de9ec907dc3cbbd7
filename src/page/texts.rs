//! Every string the default verification page shows, in one place, so an application can
//! reword or translate it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::page::view::PageError;

/// A piece of text. `&'static str` for the built-in English, `String` for anything else.
pub type Text = Cow<'static, str>;

/// A heading and what to do next, for one kind of problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The heading.
    pub title: Text,
    /// What happened and what to do next.
    pub detail: Text,
}

impl Message {
    /// A message from a title and a detail.
    pub fn new(title: impl Into<Text>, detail: impl Into<Text>) -> Self {
        Message {
            title: title.into(),
            detail: detail.into(),
        }
    }
}

/// The texts of [`DefaultPage`](crate::page::DefaultPage); [`Default`] is English.
///
/// Texts are plain text, never HTML: the page escapes them. Some hold placeholders in braces,
/// replaced by the page (and shown in bold): `{client}` (the client's name), `{user}` (the
/// signed-in end user), `{code}` (the user code), `{minutes}` (a number of minutes), `{time}`
/// (a time). A placeholder may be left out or moved; unknown ones are shown as written.
///
/// ```
/// use tower_device_flow::verification::{DefaultPage, Texts};
///
/// let mut fr = Texts::default();
/// fr.lang = "fr".into();
/// fr.enter_title = "Connecter un appareil".into();
/// fr.approve = "Autoriser".into();
/// fr.scopes.insert("profile".into(), "Voir votre nom et votre photo".into());
/// let page = DefaultPage::with_texts(fr);
/// # let _ = page;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Texts {
    /// The page's language, for `<html lang>` (default `en`).
    pub lang: Text,
    /// The window title of every page.
    pub title: Text,
    /// Shown above every heading: the name of the service, or what the page is for.
    pub eyebrow: Text,

    /// Heading of the code form.
    pub enter_title: Text,
    /// Under it.
    pub enter_intro: Text,
    /// The code field's label.
    pub code_label: Text,
    /// The hint under the field.
    pub code_hint: Text,
    /// An example code, as the field's placeholder.
    pub code_placeholder: Text,
    /// The form's button.
    pub continue_button: Text,
    /// Who is signed in; `{user}`.
    pub signed_in_as: Text,

    /// Heading of the confirmation; `{client}`.
    pub confirm_title: Text,
    /// Before the list of scopes; `{client}`, `{user}`.
    pub confirm_intro: Text,
    /// The list entry for a request without scopes.
    pub no_scope: Text,
    /// The warning to compare codes; `{code}`.
    pub compare_codes: Text,
    /// Heading of the request's details.
    pub request_details: Text,
    /// Label: the client's identifier.
    pub client_id_label: Text,
    /// Label: when the device asked.
    pub requested_at_label: Text,
    /// Label: the device's network address.
    pub address_label: Text,
    /// Label: the device's software (user agent).
    pub user_agent_label: Text,
    /// Shown for a detail that was not recorded.
    pub unknown: Text,
    /// "just now".
    pub just_now: Text,
    /// A past time; `{minutes}`.
    pub minutes_ago: Text,
    /// When the code stops working; `{minutes}`.
    pub expires_in: Text,
    /// After the code to compare: what a request that is not theirs means.
    pub not_you: Text,
    /// The approve button.
    pub approve: Text,
    /// The deny button.
    pub deny: Text,

    /// After approving.
    pub approved: Message,
    /// After denying.
    pub denied: Message,
    /// The link back to the code form.
    pub enter_another: Text,
    /// A link for "try again" after a problem.
    pub try_again: Text,
    /// The link to the login page, while redirecting there.
    pub sign_in_link: Text,

    /// No pending request has that code.
    pub unknown_code: Message,
    /// The code expired.
    pub expired_code: Message,
    /// The code was already used.
    pub already_used: Message,
    /// Too many attempts; `{minutes}` to wait.
    pub too_many_attempts: Message,
    /// The form had no code.
    pub missing_code: Message,
    /// Not signed in.
    pub sign_in_required: Message,
    /// Posted from another site.
    pub cross_site: Message,
    /// A request the page cannot understand.
    pub bad_request: Message,
    /// The service is unavailable.
    pub unavailable: Message,

    /// What each scope means, in words (`"profile"` → `"See your name and picture"`); a
    /// scope without an entry is shown by its name.
    pub scopes: BTreeMap<String, String>,
}

impl Texts {
    /// The message for `error`.
    pub fn error(&self, error: PageError) -> &Message {
        match error {
            PageError::UnknownCode => &self.unknown_code,
            PageError::ExpiredCode => &self.expired_code,
            PageError::AlreadyUsed => &self.already_used,
            PageError::TooManyAttempts => &self.too_many_attempts,
            PageError::MissingCode => &self.missing_code,
            PageError::SignInRequired => &self.sign_in_required,
            PageError::CrossSite => &self.cross_site,
            PageError::BadRequest => &self.bad_request,
            PageError::Unavailable => &self.unavailable,
        }
    }

    /// How `scope` is described: its entry in [`scopes`](Self::scopes), or its name.
    pub fn scope<'a>(&'a self, scope: &'a str) -> &'a str {
        self.scopes.get(scope).map_or(scope, String::as_str)
    }
}

impl Default for Texts {
    fn default() -> Self {
        let m = |t: &'static str, d: &'static str| Message::new(t, d);
        Texts {
            lang: "en".into(),
            title: "Connect a device".into(),
            eyebrow: "Device sign-in".into(),

            enter_title: "Connect a device".into(),
            enter_intro: "Enter the code shown on your TV, console or other device.".into(),
            code_label: "Code from your device".into(),
            code_hint: "Upper or lower case, with or without the dash.".into(),
            code_placeholder: "WDJB-MJHT".into(),
            continue_button: "Continue".into(),
            signed_in_as: "Signed in as {user}".into(),

            confirm_title: "Allow {client}?".into(),
            confirm_intro: "{client} is asking to use your account ({user}) to:".into(),
            no_scope: "Sign in to your account".into(),
            compare_codes: "Make sure this code matches the one on your device: {code}".into(),
            request_details: "Where the request came from".into(),
            client_id_label: "Application".into(),
            requested_at_label: "Requested".into(),
            address_label: "Network address".into(),
            user_agent_label: "Device software".into(),
            unknown: "Not recorded".into(),
            just_now: "just now".into(),
            minutes_ago: "{minutes} min ago".into(),
            expires_in: "The code expires in {minutes} min.".into(),
            not_you: "If it does not, if the details below look wrong, or if you did not just \
                      start this on a device of yours, choose Deny: someone may be trying to \
                      get into your account."
                .into(),
            approve: "Allow".into(),
            deny: "Deny".into(),

            approved: m(
                "Device connected",
                "You're all set. Return to your device: it continues on its own within a few \
                 seconds. You can close this page.",
            ),
            denied: m(
                "Request denied",
                "The device was not given access to your account. You can close this page.",
            ),
            enter_another: "Connect another device".into(),
            try_again: "Try again".into(),
            sign_in_link: "Continue to sign in".into(),

            unknown_code: m(
                "That code didn't work",
                "Check the code on your device and type it again. If the device shows no \
                 code, start again on the device.",
            ),
            expired_code: m(
                "That code has expired",
                "Codes work for a few minutes only. Start again on your device to get a new \
                 one, then enter it here.",
            ),
            already_used: m(
                "That code was already used",
                "Someone already approved or denied this request. Start again on your device \
                 to get a new code. If you did not use it, change your password.",
            ),
            too_many_attempts: m(
                "Too many attempts",
                "For your security, entering codes is paused. Try again in {minutes} min.",
            ),
            missing_code: m(
                "Enter the code",
                "Type the code shown on your device, then choose Continue.",
            ),
            sign_in_required: m(
                "Sign in to continue",
                "Sign in to your account to connect a device, then enter the code again.",
            ),
            cross_site: m(
                "Open this page directly",
                "This form was sent from another website, so it was not accepted. Type this \
                 page's address yourself and enter the code here.",
            ),
            bad_request: m(
                "Something went wrong",
                "The form could not be read. Go back to the code form and try again.",
            ),
            unavailable: m(
                "Temporarily unavailable",
                "The service could not answer just now. Wait a moment and try again.",
            ),

            scopes: BTreeMap::new(),
        }
    }
}
