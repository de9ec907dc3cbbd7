//! The [`Store`] trait a backend implements, and the errors it reports.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::clients::ClientSource;
use super::records::{Count, Insert, IssuedGrant, TokenInfo, Versioned};
// Defined with the records (below the client source, which answers with them too); named here
// as well, where the trait's users look for them.
pub use super::records::{StoreError, StoreResult};
use crate::clock::Timestamp;
use crate::codes::Digest;
use crate::family::{Grant, Rotation};
use crate::grant::DeviceGrant;
use crate::ids::{GrantId, Subject};

/// The credential store behind every endpoint and the bearer layer.
///
/// A store keeps four kinds of record and answers a handful of atomic primitives; every
/// protocol decision is made by the crate's plain rules ([`crate::grant`] for device grants,
/// [`crate::family`] for refresh rotation and reuse) before the store is asked to write:
///
/// | record | key | lives until |
/// |---|---|---|
/// | [`DeviceGrant`] (pending device authorization), indexed by its user code | device-code digest | [`DeviceGrant::retain_until`] |
/// | [`Grant`] (an approved device and its tokens), indexed by subject | [`GrantId`] | [`Grant::expires_at`] |
/// | access token ([`TokenInfo`]) | token digest | [`TokenInfo::expires_at`] |
/// | counters and one-time claims | a string / a digest | the end of their window |
///
/// Keys are always digests: a store never sees a usable code or token. Methods take `now` so a
/// backend can hide expired records without a clock of its own; a store may drop a record once
/// `now` passes the time in the table. Every method documents what it must do atomically:
/// that is the whole contract, and the conformance kit (`store::test_kit`, feature `test-kit`) checks it.
///
/// Implement it with `async fn`; the futures must be `Send`. A store is also a
/// [`ClientSource`] (usually through a [`ClientRegistry`](super::ClientRegistry)).
pub trait Store: ClientSource {
    // ---- device grants (RFC 8628 3.1-3.5) ----

    /// Inserts a new device grant under `device_code`, indexed by `grant.user_code`, unless
    /// either key is taken by a live record: then nothing is written and the answer is
    /// [`Insert::Taken`] (the caller draws new codes). A store with a ceiling on pending grants
    /// answers [`Insert::Full`] instead of growing past it. Keep it until
    /// [`DeviceGrant::retain_until`].
    fn insert_device_grant(
        &self,
        device_code: Digest,
        grant: DeviceGrant,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Insert>> + Send;

    /// The device grant stored under `device_code`.
    fn device_grant(
        &self,
        device_code: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<Versioned<DeviceGrant>>>> + Send;

    /// The device grant indexed by `user_code`, with its device-code key.
    fn device_grant_by_user_code(
        &self,
        user_code: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<(Digest, Versioned<DeviceGrant>)>>> + Send;

    /// Compare-and-swap: replaces the device grant under `device_code` with `grant` if and only
    /// if its version is still `expected_version` (the new version is `expected_version + 1`),
    /// and in the same atomic step stores `issue`: the new [`Grant`] (version 0, indexed under
    /// its subject) and its access token under `issue.grant.access_token`. Returns
    /// `Ok(false)`, writing nothing, when the version moved or the grant is gone. This is what
    /// makes redemption exactly-once.
    fn replace_device_grant(
        &self,
        device_code: &Digest,
        expected_version: u64,
        grant: DeviceGrant,
        issue: Option<IssuedGrant>,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    // ---- grants: approved devices and their token families ----

    /// The grant `id`, with its version.
    fn grant(
        &self,
        id: &GrantId,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<Versioned<Grant>>>> + Send;

    /// Compare-and-swap of a rotation: if grant `id` is still at `expected_version`, in one
    /// atomic step store `rotation.next` (version + 1), store `access` under
    /// `rotation.next.access_token`, and delete the access token `rotation.revoke`. Returns
    /// `Ok(false)`, writing nothing, when the version moved or the grant is gone (revoked), so
    /// of racing refreshes exactly one rotates, and no rotation outlives a revocation.
    fn replace_grant(
        &self,
        id: &GrantId,
        expected_version: u64,
        rotation: Rotation,
        access: TokenInfo,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Revokes grant `id`: in one atomic step deletes it, its subject index entry, and the
    /// access token it names *at that moment* (so a rotation that won just before is revoked
    /// too). Returns the grant as it was, or `None` if there was none.
    fn revoke_grant(
        &self,
        id: &GrantId,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<Grant>>> + Send;

    /// The live grants of `subject` (neither expired nor revoked), in no particular order:
    /// every grant whose redemption completed before the call, each as one of its versions
    /// (never half a rotation), and never a grant of another subject. A grant stored or
    /// revoked while the call runs may or may not be listed. The index it reads must not
    /// grow with grants that ended: the connected-devices page lists through it.
    fn grants_of(
        &self,
        subject: &Subject,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Vec<Grant>>> + Send;

    /// Revokes every grant of `subject`, each as [`revoke_grant`](Store::revoke_grant) does,
    /// and returns them. A grant created while this runs may survive it; callers that must
    /// stop a subject for good also refuse it at issuance (the crate's subject check does).
    fn revoke_grants_of(
        &self,
        subject: &Subject,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Vec<Grant>>> + Send;

    // ---- access tokens ----

    /// The access token stored under `token` (expired ones may be returned; callers check).
    fn access_token(
        &self,
        token: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<TokenInfo>>> + Send;

    /// Deletes an access token. Returns whether it existed.
    fn revoke_access_token(
        &self,
        token: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    // ---- limits and one-time values ----

    /// Atomically, in one step: if the counter `key` is below `max`, add one. A counter that
    /// does not exist (or whose window ended) starts a new window of `window` at `now`. The
    /// answer says whether it counted, its value, and when its window ends. No number of
    /// concurrent calls may take a counter past `max`: this is what bounds guessing.
    fn try_increment(
        &self,
        key: &str,
        max: u64,
        window: Duration,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Count>> + Send;

    /// Takes one back from the counter `key` (never below zero), for an attempt that
    /// [`try_increment`](Store::try_increment) reserved and that turned out not to count (a
    /// right code). A missing or ended counter is left alone.
    fn decrement(&self, key: &str, now: Timestamp) -> impl Future<Output = StoreResult<()>> + Send;

    /// Claims the one-time value `key` (a DPoP proof's `jti`) until `until`: `true` the first
    /// time, `false` for every later claim before `until`, atomically across every instance
    /// that shares the store.
    fn claim_once(
        &self,
        key: &Digest,
        until: Timestamp,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// How many device grants are pending (neither decided nor expired), if the store can
    /// tell cheaply; for a gauge. The default says it cannot.
    fn pending_device_grants(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<u64>>> + Send {
        let _ = now;
        std::future::ready(Ok(None))
    }
}

impl<S: Store + ?Sized> Store for Arc<S> {
    fn insert_device_grant(
        &self,
        device_code: Digest,
        grant: DeviceGrant,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Insert>> + Send {
        (**self).insert_device_grant(device_code, grant, now)
    }
    fn device_grant(
        &self,
        device_code: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<Versioned<DeviceGrant>>>> + Send {
        (**self).device_grant(device_code, now)
    }
    fn device_grant_by_user_code(
        &self,
        user_code: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<(Digest, Versioned<DeviceGrant>)>>> + Send {
        (**self).device_grant_by_user_code(user_code, now)
    }
    fn replace_device_grant(
        &self,
        device_code: &Digest,
        expected_version: u64,
        grant: DeviceGrant,
        issue: Option<IssuedGrant>,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send {
        (**self).replace_device_grant(device_code, expected_version, grant, issue, now)
    }
    fn grant(
        &self,
        id: &GrantId,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<Versioned<Grant>>>> + Send {
        (**self).grant(id, now)
    }
    fn replace_grant(
        &self,
        id: &GrantId,
        expected_version: u64,
        rotation: Rotation,
        access: TokenInfo,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send {
        (**self).replace_grant(id, expected_version, rotation, access, now)
    }
    fn revoke_grant(
        &self,
        id: &GrantId,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<Grant>>> + Send {
        (**self).revoke_grant(id, now)
    }
    fn grants_of(
        &self,
        subject: &Subject,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Vec<Grant>>> + Send {
        (**self).grants_of(subject, now)
    }
    fn revoke_grants_of(
        &self,
        subject: &Subject,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Vec<Grant>>> + Send {
        (**self).revoke_grants_of(subject, now)
    }
    fn access_token(
        &self,
        token: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<TokenInfo>>> + Send {
        (**self).access_token(token, now)
    }
    fn revoke_access_token(
        &self,
        token: &Digest,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send {
        (**self).revoke_access_token(token, now)
    }
    fn try_increment(
        &self,
        key: &str,
        max: u64,
        window: Duration,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Count>> + Send {
        (**self).try_increment(key, max, window, now)
    }
    fn decrement(&self, key: &str, now: Timestamp) -> impl Future<Output = StoreResult<()>> + Send {
        (**self).decrement(key, now)
    }
    fn claim_once(
        &self,
        key: &Digest,
        until: Timestamp,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send {
        (**self).claim_once(key, until, now)
    }
    fn pending_device_grants(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<u64>>> + Send {
        (**self).pending_device_grants(now)
    }
}
