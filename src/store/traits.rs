//! The [`Store`] trait a backend implements, and the errors it reports.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::records::{Client, IssuedTokens, RefreshTokenRecord, TokenInfo, Versioned};
use crate::clock::Timestamp;
use crate::codes::Digest;
use crate::error::{ErrorCode, OAuthError};
use crate::grant::DeviceGrant;

/// A failure of the store itself (not of the client's request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The backend cannot be reached right now; answered `temporarily_unavailable` (503).
    Unavailable(String),
    /// The backend failed otherwise; answered `server_error` (500).
    Backend(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(m) => write!(f, "store unavailable: {m}"),
            StoreError::Backend(m) => write!(f, "store failed: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// The credential store behind every endpoint and the bearer layer.
///
/// Keys are always [`Digest`]s of codes and tokens: a store never sees a usable secret. Methods
/// that read take `now` so a backend can hide expired records without a clock of its own;
/// records carry their own expiry, and a store may drop a record once `now` passes the time
/// documented on each method.
///
/// Implement it with `async fn`; the futures must be `Send`.
pub trait Store: Send + Sync + 'static {
    /// Looks up a registered client.
    fn client(&self, client_id: &str) -> impl Future<Output = StoreResult<Option<Client>>> + Send;

    /// Inserts a new grant under `device_code`, indexed by `grant.user_code`, unless either key
    /// is already taken by a live record: then nothing is written and `Ok(false)` is returned
    /// (the caller draws a new user code). Keep it until [`DeviceGrant::retain_until`].
    fn insert_grant(
        &self,
        device_code: Digest,
        grant: DeviceGrant,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// The grant stored under `device_code`.
    fn grant(
        &self,
        device_code: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<Versioned<DeviceGrant>>>> + Send;

    /// The grant indexed by `user_code`, with its device-code key.
    fn grant_by_user_code(
        &self,
        user_code: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<(Digest, Versioned<DeviceGrant>)>>> + Send;

    /// Compare-and-swap: replaces the grant under `device_code` with `grant` if and only if its
    /// version is still `expected_version` (the new version is `expected_version + 1`), and in
    /// the same atomic step stores `issue`'s tokens. Returns `Ok(false)`, writing nothing, when
    /// the version moved or the grant is gone. This is what makes issuance exactly-once.
    fn replace_grant(
        &self,
        device_code: &Digest,
        expected_version: u64,
        grant: DeviceGrant,
        issue: Option<IssuedTokens>,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// The access token stored under `token` (expired ones may be returned; callers check).
    fn access_token(
        &self,
        token: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<TokenInfo>>> + Send;

    /// The refresh token stored under `token`.
    fn refresh_token(
        &self,
        token: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<RefreshTokenRecord>>> + Send;

    /// Take-once: atomically removes the refresh token `old` (and the access token issued with
    /// it) and stores `issue`. Returns `Ok(false)`, writing nothing, when `old` is already gone,
    /// so of many racing refreshes exactly one succeeds.
    fn rotate_refresh_token(
        &self,
        old: &Digest,
        issue: IssuedTokens,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Deletes an access token. Returns whether it existed.
    fn revoke_access_token(&self, token: &Digest)
        -> impl Future<Output = StoreResult<bool>> + Send;

    /// Deletes a refresh token and the access token issued with it. Returns whether it existed.
    fn revoke_refresh_token(
        &self,
        token: &Digest,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Adds one to the counter `key` and returns the new count. A counter that does not exist
    /// (or has expired) starts at 1 and expires `window` after `now`. Used to limit user-code
    /// guessing across every instance that shares the store.
    fn increment_counter(
        &self,
        key: &str,
        window: Duration,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<u64>> + Send;

    /// The counter `key`, or 0 if absent or expired.
    fn counter(&self, key: &str, now: Timestamp) -> impl Future<Output = StoreResult<u64>> + Send;
}

impl<S: Store + ?Sized> Store for Arc<S> {
    fn client(&self, client_id: &str) -> impl Future<Output = StoreResult<Option<Client>>> + Send {
        (**self).client(client_id)
    }
    fn insert_grant(
        &self,
        device_code: Digest,
        grant: DeviceGrant,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send {
        (**self).insert_grant(device_code, grant, now)
    }
    fn grant(
        &self,
        device_code: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<Versioned<DeviceGrant>>>> + Send {
        (**self).grant(device_code, now)
    }
    fn grant_by_user_code(
        &self,
        user_code: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<(Digest, Versioned<DeviceGrant>)>>> + Send {
        (**self).grant_by_user_code(user_code, now)
    }
    fn replace_grant(
        &self,
        device_code: &Digest,
        expected_version: u64,
        grant: DeviceGrant,
        issue: Option<IssuedTokens>,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send {
        (**self).replace_grant(device_code, expected_version, grant, issue, now)
    }
    fn access_token(
        &self,
        token: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<TokenInfo>>> + Send {
        (**self).access_token(token, now)
    }
    fn refresh_token(
        &self,
        token: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<RefreshTokenRecord>>> + Send {
        (**self).refresh_token(token, now)
    }
    fn rotate_refresh_token(
        &self,
        old: &Digest,
        issue: IssuedTokens,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send {
        (**self).rotate_refresh_token(old, issue, now)
    }
    fn revoke_access_token(
        &self,
        token: &Digest,
    ) -> impl Future<Output = StoreResult<bool>> + Send {
        (**self).revoke_access_token(token)
    }
    fn revoke_refresh_token(
        &self,
        token: &Digest,
    ) -> impl Future<Output = StoreResult<bool>> + Send {
        (**self).revoke_refresh_token(token)
    }
    fn increment_counter(
        &self,
        key: &str,
        window: Duration,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<u64>> + Send {
        (**self).increment_counter(key, window, now)
    }
    fn counter(&self, key: &str, now: Timestamp) -> impl Future<Output = StoreResult<u64>> + Send {
        (**self).counter(key, now)
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "the credential store is unavailable; retry later",
            )
            .with_retry_after(1),
            StoreError::Backend(_) => {
                OAuthError::new(ErrorCode::ServerError, "the credential store failed")
            }
        }
    }
}

/// A token found by its digest.
pub(crate) enum FoundToken {
    Access(TokenInfo),
    Refresh(RefreshTokenRecord),
}

/// Looks a token up as an access token and as a refresh token, in the order `hint` suggests
/// (RFC 7009 2.1 and RFC 7662 2.1: the hint only orders the search; an unknown hint is ignored).
pub(crate) async fn find_token<S: Store>(
    store: &S,
    digest: &Digest,
    hint: Option<&str>,
    now: Timestamp,
) -> Result<Option<FoundToken>, StoreError> {
    let refresh_first = hint == Some("refresh_token");
    for refresh in [refresh_first, !refresh_first] {
        let found = if refresh {
            store
                .refresh_token(digest, now)
                .await?
                .map(FoundToken::Refresh)
        } else {
            store
                .access_token(digest, now)
                .await?
                .map(FoundToken::Access)
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn store_errors_map_to_500_and_503() {
        let e: OAuthError = StoreError::Unavailable("down".into()).into();
        assert_eq!(e.code(), ErrorCode::TemporarilyUnavailable);
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        let e: OAuthError = StoreError::Backend("bad".into()).into();
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
