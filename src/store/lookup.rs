//! Finding a presented token: an access token by its digest, a refresh token through the grant
//! its family key names. What revocation (RFC 7009) and introspection (RFC 7662) share.

use super::records::TokenInfo;
use super::traits::{Store, StoreError};
use crate::clock::Timestamp;
use crate::codes::{Digest, RefreshToken};
use crate::family::Grant;

/// A live token found from what a client presented.
pub(crate) enum FoundToken {
    /// An access token (possibly expired: callers check).
    Access(Digest, TokenInfo),
    /// The live refresh token of this grant.
    Refresh(Grant),
}

/// Looks `presented` up as an access token and as a refresh token, in the order `hint`
/// suggests (RFC 7009 2.1 and RFC 7662 2.1: the hint only orders the search; an unknown hint
/// is ignored). A refresh token is found only while it is its grant's live one.
pub(crate) async fn find_token<S: Store>(
    store: &S,
    presented: &str,
    hint: Option<&str>,
    now: Timestamp,
) -> Result<Option<FoundToken>, StoreError> {
    let digest = Digest::of(presented.as_bytes());
    let refresh_first = hint == Some("refresh_token");
    for refresh in [refresh_first, !refresh_first] {
        let found = if refresh {
            refresh_grant(store, presented, &digest, now)
                .await?
                .map(FoundToken::Refresh)
        } else {
            store
                .access_token(&digest, now)
                .await?
                .map(|t| FoundToken::Access(digest, t))
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// The grant whose live refresh token is `presented` (with digest `digest`).
async fn refresh_grant<S: Store>(
    store: &S,
    presented: &str,
    digest: &Digest,
    now: Timestamp,
) -> Result<Option<Grant>, StoreError> {
    let Some(family) = RefreshToken::family_of(presented) else {
        return Ok(None);
    };
    Ok(store
        .grant(&family.grant_id(), now)
        .await?
        .map(|g| g.record)
        .filter(|g| g.refresh_token.is_some_and(|r| r.ct_eq(digest)) && !g.is_expired(now)))
}
