//! The store as the services see it: every call timed (feature `metrics`), in one place rather
//! than in each backend.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::clients::ClientSource;
use super::records::{Client, Count, Insert, IssuedGrant, StoreResult, TokenInfo, Versioned};
use super::traits::Store;
use crate::clock::Timestamp;
use crate::codes::Digest;
use crate::family::{Grant, Rotation};
use crate::grant::DeviceGrant;
use crate::ids::{GrantId, Subject};
use crate::observe::metric::StoreOperation as Op;
use crate::observe::record::timed;
use crate::scope::Scope;

/// A store whose every call records its duration as
/// [`device_flow_store_call_duration_seconds`](crate::observe::metric::STORE_CALL_DURATION).
pub(crate) struct TimedStore<S>(Arc<S>);

impl<S> TimedStore<S> {
    pub(crate) fn new(store: Arc<S>) -> Self {
        TimedStore(store)
    }

    /// The store itself, untimed (for the bearer layers, which time their own lookups).
    pub(crate) fn inner(&self) -> &Arc<S> {
        &self.0
    }
}

impl<S> Clone for TimedStore<S> {
    fn clone(&self) -> Self {
        TimedStore(self.0.clone())
    }
}

impl<S: ClientSource> ClientSource for TimedStore<S> {
    fn client(&self, client_id: &str) -> impl Future<Output = StoreResult<Option<Client>>> + Send {
        timed(Op::Client, self.0.client(client_id))
    }

    fn known_scopes(&self) -> impl Future<Output = StoreResult<Option<Scope>>> + Send {
        timed(Op::KnownScopes, self.0.known_scopes())
    }
}

impl<S: Store> Store for TimedStore<S> {
    fn insert_device_grant(
        &self,
        device_code: Digest,
        grant: DeviceGrant,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Insert>> + Send {
        timed(
            Op::InsertDeviceGrant,
            self.0.insert_device_grant(device_code, grant, now),
        )
    }
    fn device_grant(
        &self,
        device_code: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<Versioned<DeviceGrant>>>> + Send {
        timed(Op::DeviceGrant, self.0.device_grant(device_code, now))
    }
    fn device_grant_by_user_code(
        &self,
        user_code: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<(Digest, Versioned<DeviceGrant>)>>> + Send {
        timed(
            Op::DeviceGrantByUserCode,
            self.0.device_grant_by_user_code(user_code, now),
        )
    }
    fn replace_device_grant(
        &self,
        device_code: &Digest,
        expected_version: u64,
        grant: DeviceGrant,
        issue: Option<IssuedGrant>,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send {
        timed(
            Op::ReplaceDeviceGrant,
            self.0
                .replace_device_grant(device_code, expected_version, grant, issue, now),
        )
    }
    fn grant(
        &self,
        id: &GrantId,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<Versioned<Grant>>>> + Send {
        timed(Op::Grant, self.0.grant(id, now))
    }
    fn replace_grant(
        &self,
        id: &GrantId,
        expected_version: u64,
        rotation: Rotation,
        access: TokenInfo,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send {
        timed(
            Op::ReplaceGrant,
            self.0
                .replace_grant(id, expected_version, rotation, access, now),
        )
    }
    fn revoke_grant(
        &self,
        id: &GrantId,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<Grant>>> + Send {
        timed(Op::RevokeGrant, self.0.revoke_grant(id, now))
    }
    fn grants_of(
        &self,
        subject: &Subject,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Vec<Grant>>> + Send {
        timed(Op::GrantsOf, self.0.grants_of(subject, now))
    }
    fn revoke_grants_of(
        &self,
        subject: &Subject,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Vec<Grant>>> + Send {
        timed(Op::RevokeGrantsOf, self.0.revoke_grants_of(subject, now))
    }
    fn access_token(
        &self,
        token: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<TokenInfo>>> + Send {
        timed(Op::AccessToken, self.0.access_token(token, now))
    }
    fn revoke_access_token(
        &self,
        token: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send {
        timed(
            Op::RevokeAccessToken,
            self.0.revoke_access_token(token, now),
        )
    }
    fn try_increment(
        &self,
        key: &str,
        max: u64,
        window: Duration,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Count>> + Send {
        timed(
            Op::TryIncrement,
            self.0.try_increment(key, max, window, now),
        )
    }
    fn decrement(&self, key: &str, now: Timestamp) -> impl Future<Output = StoreResult<()>> + Send {
        timed(Op::Decrement, self.0.decrement(key, now))
    }
    fn claim_once(
        &self,
        key: &Digest,
        until: Timestamp,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send {
        timed(Op::ClaimOnce, self.0.claim_once(key, until, now))
    }
    fn pending_device_grants(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<u64>>> + Send {
        timed(Op::PendingDeviceGrants, self.0.pending_device_grants(now))
    }
}
