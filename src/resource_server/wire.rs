//! What the remote verifiers share: URL checks and the `aud` member.

use std::fmt;

use http::Uri;
use serde::Deserialize;

use crate::ids::Audience;

/// A URL that is not an absolute `http` or `https` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidUrl(pub(crate) String);

impl fmt::Display for InvalidUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not an absolute http(s) URL: {:?}", self.0)
    }
}

impl std::error::Error for InvalidUrl {}

pub(crate) fn absolute_url(url: &str) -> Result<Uri, InvalidUrl> {
    let uri: Uri = url.parse().map_err(|_| InvalidUrl(url.to_owned()))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(InvalidUrl(url.to_owned())),
    }
}

/// `aud` as RFC 7519 allows it: one string or an array.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The audience `aud` names, or `None` if a member is not a resource URI.
pub(crate) fn audience_of(aud: OneOrMany) -> Option<Audience> {
    match aud {
        OneOrMany::One(r) => Audience::from_resources(r.split(' ').filter(|r| !r.is_empty())),
        OneOrMany::Many(v) => Audience::from_resources(v),
    }
    .ok()
}
