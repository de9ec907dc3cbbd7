//! Resource indicators (RFC 8707): which audience a token request gets.
//!
//! A device names the API it wants a token for with one or more `resource` parameters, at the
//! device authorization request and again, to narrow, at a refresh. The rules, in one place:
//!
//! - at the device authorization request, every named resource must be one the client may ask
//!   for ([`Client::with_resources`](crate::store::Client::with_resources)), or the request is
//!   refused `invalid_target`; a request naming none gets the flow's default audience, if one is
//!   configured, else no audience (a token without `aud`);
//! - at a refresh, the named resources must lie within the grant's audience (a refresh may
//!   narrow, never widen); naming none keeps the grant's audience.

use crate::error::OAuthError;
use crate::form::Form;
use crate::ids::Audience;
use crate::store::Client;

/// The `resource` parameters of a request, as one audience; `None` when there are none.
pub(crate) fn requested(form: &Form) -> Result<Option<Audience>, OAuthError> {
    let mut named = form.get_all("resource").peekable();
    if named.peek().is_none() {
        return Ok(None);
    }
    Audience::from_resources(named).map(Some).map_err(|_| {
        OAuthError::invalid_target("a resource must be an absolute URI without a fragment")
    })
}

/// The audience of a new device grant for `client`, which named `requested`.
pub(crate) fn for_device_authorization(
    client: &Client,
    requested: Option<Audience>,
    default: Option<&Audience>,
) -> Result<Option<Audience>, OAuthError> {
    match requested {
        None => Ok(default.cloned()),
        Some(r) if client.may_request(&r) => Ok(Some(r)),
        Some(_) => Err(OAuthError::invalid_target(
            "a requested resource is not one this client may ask for",
        )),
    }
}

/// The audience of the access token a refresh of a grant for `granted` issues.
pub(crate) fn for_refresh(
    granted: Option<&Audience>,
    requested: Option<Audience>,
) -> Result<Option<Audience>, OAuthError> {
    match (requested, granted) {
        (None, g) => Ok(g.cloned()),
        (Some(r), Some(g)) if r.is_subset_of(g) => Ok(Some(r)),
        (Some(_), _) => Err(OAuthError::invalid_target(
            "a refresh may narrow the resources of the grant, never widen them",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::scope::Scope;

    fn aud(r: &[&str]) -> Audience {
        Audience::from_resources(r).unwrap()
    }

    #[test]
    fn requested_resources() {
        let form = Form::parse(b"resource=https%3A%2F%2Fb&resource=https%3A%2F%2Fa").unwrap();
        assert_eq!(
            requested(&form).unwrap(),
            Some(aud(&["https://a", "https://b"]))
        );
        assert_eq!(requested(&Form::parse(b"scope=x").unwrap()).unwrap(), None);
        let bad = Form::parse(b"resource=relative").unwrap();
        assert_eq!(
            requested(&bad).unwrap_err().code(),
            ErrorCode::InvalidTarget
        );
    }

    #[test]
    fn device_authorization_audience() {
        let scope = Scope::parse("profile").unwrap();
        let plain = Client::public("c", scope.clone());
        let api = aud(&["https://api"]);
        let with = plain
            .clone()
            .with_resources(aud(&["https://api", "https://b"]));
        assert_eq!(for_device_authorization(&plain, None, None).unwrap(), None);
        assert_eq!(
            for_device_authorization(&plain, None, Some(&api)).unwrap(),
            Some(api.clone())
        );
        let err = for_device_authorization(&plain, Some(api.clone()), None).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidTarget);
        assert_eq!(err.status(), 400);
        assert_eq!(
            for_device_authorization(&with, Some(api.clone()), None).unwrap(),
            Some(api.clone())
        );
        let other = aud(&["https://api", "https://evil"]);
        assert!(for_device_authorization(&with, Some(other), None).is_err());
    }

    #[test]
    fn refresh_narrows_never_widens() {
        let both = aud(&["https://a", "https://b"]);
        let a = aud(&["https://a"]);
        assert_eq!(for_refresh(Some(&both), None).unwrap(), Some(both.clone()));
        assert_eq!(
            for_refresh(Some(&both), Some(a.clone())).unwrap(),
            Some(a.clone())
        );
        assert!(for_refresh(Some(&a), Some(both)).is_err());
        assert!(for_refresh(None, Some(a)).is_err());
        assert_eq!(for_refresh(None, None).unwrap(), None);
    }
}
