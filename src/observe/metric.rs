//! Every metric the crate records (feature `metrics`), by name: Prometheus conventions, so
//! counters end in `_total`, durations are histograms in seconds, and every label takes a
//! small fixed set of values (listed here), never a string a client chose.
//!
//! [`ALL`] describes each one; [`describe`](super::describe) hands the descriptions to the
//! installed recorder (the `# HELP` lines of a Prometheus exporter).

use std::fmt;

/// `device_flow_grants_created_total`: device authorizations that created a pending grant.
pub const GRANTS_CREATED: &str = "device_flow_grants_created_total";
/// `device_flow_grants_approved_total`: pending grants an end user approved.
pub const GRANTS_APPROVED: &str = "device_flow_grants_approved_total";
/// `device_flow_grants_denied_total`: pending grants an end user denied.
pub const GRANTS_DENIED: &str = "device_flow_grants_denied_total";
/// `device_flow_grants_expired_total`: polls answered `expired_token` (a device stops polling
/// then, so about once per grant that expired while its device waited).
pub const GRANTS_EXPIRED: &str = "device_flow_grants_expired_total";
/// `device_flow_grants_redeemed_total`: approved device codes redeemed for tokens.
pub const GRANTS_REDEEMED: &str = "device_flow_grants_redeemed_total";
/// `device_flow_polls_total{outcome, error}`: device-code token requests by outcome.
pub const POLLS: &str = "device_flow_polls_total";
/// `device_flow_refreshes_total{outcome, error}`: refresh-token requests by outcome.
pub const REFRESHES: &str = "device_flow_refreshes_total";
/// `device_flow_revocations_total{reason}`: tokens and grants revoked.
pub const REVOCATIONS: &str = "device_flow_revocations_total";
/// `device_flow_refresh_token_reuse_total`: reused refresh tokens detected (each revokes its
/// grant).
pub const REFRESH_TOKEN_REUSE: &str = "device_flow_refresh_token_reuse_total";
/// `device_flow_wrong_user_codes_total`: user codes entered on the verification page that
/// match no grant.
pub const WRONG_USER_CODES: &str = "device_flow_wrong_user_codes_total";
/// `device_flow_limit_refusals_total{limit}`: requests refused by a limit.
pub const LIMIT_REFUSALS: &str = "device_flow_limit_refusals_total";
/// `device_flow_bearer_checks_total{outcome, error}`: requests checked by a bearer layer.
pub const BEARER_CHECKS: &str = "device_flow_bearer_checks_total";
/// `device_flow_store_errors_total{operation}`: store calls that failed.
pub const STORE_ERRORS: &str = "device_flow_store_errors_total";
/// `device_flow_request_duration_seconds{endpoint}`: time to answer a request at an endpoint.
pub const REQUEST_DURATION: &str = "device_flow_request_duration_seconds";
/// `device_flow_store_call_duration_seconds{operation}`: time of one store call.
pub const STORE_CALL_DURATION: &str = "device_flow_store_call_duration_seconds";
/// `device_flow_pending_grants`: device grants waiting for their end user, where the store can
/// tell ([`Store::pending_device_grants`](crate::Store::pending_device_grants)).
pub const PENDING_GRANTS: &str = "device_flow_pending_grants";

/// What kind of metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// A value now.
    Gauge,
    /// A distribution of observed values.
    Histogram,
}

impl Kind {
    /// `counter`, `gauge` or `histogram`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One metric: its name, kind, label names and meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metric {
    /// The name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The label names (a series may leave out `error` where it does not apply).
    pub labels: &'static [&'static str],
    /// What it counts or measures.
    pub help: &'static str,
}

/// Every metric the crate records.
pub const ALL: &[Metric] = &[
    Metric {
        name: GRANTS_CREATED,
        kind: Kind::Counter,
        labels: &[],
        help: "Device authorizations that created a pending grant.",
    },
    Metric {
        name: GRANTS_APPROVED,
        kind: Kind::Counter,
        labels: &[],
        help: "Pending device grants an end user approved.",
    },
    Metric {
        name: GRANTS_DENIED,
        kind: Kind::Counter,
        labels: &[],
        help: "Pending device grants an end user denied.",
    },
    Metric {
        name: GRANTS_EXPIRED,
        kind: Kind::Counter,
        labels: &[],
        help: "Polls answered expired_token: device grants that expired while their device waited.",
    },
    Metric {
        name: GRANTS_REDEEMED,
        kind: Kind::Counter,
        labels: &[],
        help: "Approved device codes redeemed for tokens.",
    },
    Metric {
        name: POLLS,
        kind: Kind::Counter,
        labels: &["outcome", "error"],
        help: "Device-code token requests by outcome: pending, slow_down, issued, or refused with an OAuth error code.",
    },
    Metric {
        name: REFRESHES,
        kind: Kind::Counter,
        labels: &["outcome", "error"],
        help: "Refresh-token requests by outcome: rotated, retried (a lost reply, within the grace period), or refused with an OAuth error code.",
    },
    Metric {
        name: REVOCATIONS,
        kind: Kind::Counter,
        labels: &["reason"],
        help: "Tokens and grants revoked, by reason: access_token, refresh_token, end_user, account, reuse.",
    },
    Metric {
        name: REFRESH_TOKEN_REUSE,
        kind: Kind::Counter,
        labels: &[],
        help: "Reused refresh tokens detected; each revokes its grant.",
    },
    Metric {
        name: WRONG_USER_CODES,
        kind: Kind::Counter,
        labels: &[],
        help: "User codes entered on the verification page that match no grant.",
    },
    Metric {
        name: LIMIT_REFUSALS,
        kind: Kind::Counter,
        labels: &["limit"],
        help: "Requests refused by a limit, by limit.",
    },
    Metric {
        name: BEARER_CHECKS,
        kind: Kind::Counter,
        labels: &["outcome", "error"],
        help: "Requests checked by a bearer layer: allowed, missing (no token), or refused with an OAuth error code.",
    },
    Metric {
        name: STORE_ERRORS,
        kind: Kind::Counter,
        labels: &["operation"],
        help: "Store calls that failed, by operation.",
    },
    Metric {
        name: REQUEST_DURATION,
        kind: Kind::Histogram,
        labels: &["endpoint"],
        help: "Seconds to answer a request, by endpoint.",
    },
    Metric {
        name: STORE_CALL_DURATION,
        kind: Kind::Histogram,
        labels: &["operation"],
        help: "Seconds of one store call, by operation.",
    },
    Metric {
        name: PENDING_GRANTS,
        kind: Kind::Gauge,
        labels: &[],
        help: "Device grants waiting for their end user (where the store can tell).",
    },
];

/// The endpoints: the `endpoint` label of [`REQUEST_DURATION`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// RFC 8628 device authorization.
    DeviceAuthorization,
    /// The token endpoint.
    Token,
    /// The verification page.
    Verification,
    /// RFC 7009 revocation.
    Revocation,
    /// RFC 7662 introspection.
    Introspection,
    /// The connected-devices page.
    ConnectedDevices,
}

impl Endpoint {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Endpoint::DeviceAuthorization => "device_authorization",
            Endpoint::Token => "token",
            Endpoint::Verification => "verification",
            Endpoint::Revocation => "revocation",
            Endpoint::Introspection => "introspection",
            Endpoint::ConnectedDevices => "connected_devices",
        }
    }

    /// Every endpoint, in label order.
    pub const ALL: [Endpoint; 6] = [
        Endpoint::DeviceAuthorization,
        Endpoint::Token,
        Endpoint::Verification,
        Endpoint::Revocation,
        Endpoint::Introspection,
        Endpoint::ConnectedDevices,
    ];
}

/// The store's operations: the `operation` label of [`STORE_CALL_DURATION`] and
/// [`STORE_ERRORS`], one per [`Store`](crate::Store) method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreOperation {
    /// [`ClientSource::client`](crate::store::ClientSource::client).
    Client,
    /// [`ClientSource::known_scopes`](crate::store::ClientSource::known_scopes).
    KnownScopes,
    /// [`Store::insert_device_grant`](crate::store::Store::insert_device_grant).
    InsertDeviceGrant,
    /// [`Store::device_grant`](crate::store::Store::device_grant).
    DeviceGrant,
    /// [`Store::device_grant_by_user_code`](crate::store::Store::device_grant_by_user_code).
    DeviceGrantByUserCode,
    /// [`Store::replace_device_grant`](crate::store::Store::replace_device_grant).
    ReplaceDeviceGrant,
    /// [`Store::grant`](crate::store::Store::grant).
    Grant,
    /// [`Store::replace_grant`](crate::store::Store::replace_grant).
    ReplaceGrant,
    /// [`Store::revoke_grant`](crate::store::Store::revoke_grant).
    RevokeGrant,
    /// [`Store::grants_of`](crate::store::Store::grants_of).
    GrantsOf,
    /// [`Store::revoke_grants_of`](crate::store::Store::revoke_grants_of).
    RevokeGrantsOf,
    /// [`Store::access_token`](crate::store::Store::access_token).
    AccessToken,
    /// [`Store::revoke_access_token`](crate::store::Store::revoke_access_token).
    RevokeAccessToken,
    /// [`Store::try_increment`](crate::store::Store::try_increment).
    TryIncrement,
    /// [`Store::decrement`](crate::store::Store::decrement).
    Decrement,
    /// [`Store::claim_once`](crate::store::Store::claim_once).
    ClaimOnce,
    /// [`Store::pending_device_grants`](crate::store::Store::pending_device_grants).
    PendingDeviceGrants,
}

impl StoreOperation {
    /// The label value: the method's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            StoreOperation::Client => "client",
            StoreOperation::KnownScopes => "known_scopes",
            StoreOperation::InsertDeviceGrant => "insert_device_grant",
            StoreOperation::DeviceGrant => "device_grant",
            StoreOperation::DeviceGrantByUserCode => "device_grant_by_user_code",
            StoreOperation::ReplaceDeviceGrant => "replace_device_grant",
            StoreOperation::Grant => "grant",
            StoreOperation::ReplaceGrant => "replace_grant",
            StoreOperation::RevokeGrant => "revoke_grant",
            StoreOperation::GrantsOf => "grants_of",
            StoreOperation::RevokeGrantsOf => "revoke_grants_of",
            StoreOperation::AccessToken => "access_token",
            StoreOperation::RevokeAccessToken => "revoke_access_token",
            StoreOperation::TryIncrement => "try_increment",
            StoreOperation::Decrement => "decrement",
            StoreOperation::ClaimOnce => "claim_once",
            StoreOperation::PendingDeviceGrants => "pending_device_grants",
        }
    }

    /// Every operation, in label order.
    pub const ALL: [StoreOperation; 17] = [
        StoreOperation::Client,
        StoreOperation::KnownScopes,
        StoreOperation::InsertDeviceGrant,
        StoreOperation::DeviceGrant,
        StoreOperation::DeviceGrantByUserCode,
        StoreOperation::ReplaceDeviceGrant,
        StoreOperation::Grant,
        StoreOperation::ReplaceGrant,
        StoreOperation::RevokeGrant,
        StoreOperation::GrantsOf,
        StoreOperation::RevokeGrantsOf,
        StoreOperation::AccessToken,
        StoreOperation::RevokeAccessToken,
        StoreOperation::TryIncrement,
        StoreOperation::Decrement,
        StoreOperation::ClaimOnce,
        StoreOperation::PendingDeviceGrants,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} listed twice", m.name);
            assert!(m.name.starts_with("device_flow_"), "{}", m.name);
            assert!(
                m.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                m.name
            );
            match m.kind {
                Kind::Counter => assert!(m.name.ends_with("_total"), "{}", m.name),
                Kind::Histogram => assert!(m.name.ends_with("_seconds"), "{}", m.name),
                Kind::Gauge => assert!(!m.name.ends_with("_total"), "{}", m.name),
            }
        }
    }
}
