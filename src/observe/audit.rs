//! Audit events: typed records of what happened to whom, for the application's audit trail.

use std::fmt;
use std::net::IpAddr;

use crate::clock::Timestamp;
use crate::ids::{ClientId, GrantId, Subject};
use crate::scope::Scope;

/// Receives the flow's [`AuditEvent`]s. Set with
/// [`DeviceFlowBuilder::audit`](crate::DeviceFlowBuilder::audit); a closure
/// `Fn(&AuditEvent)` is one.
///
/// `record` is called on the request path, after the decision it reports is stored: keep it
/// quick and never block (send the event to a channel for a database or a SIEM). It cannot
/// refuse the request.
pub trait AuditSink: Send + Sync + 'static {
    /// Takes one event.
    fn record(&self, event: &AuditEvent);
}

impl<F> AuditSink for F
where
    F: Fn(&AuditEvent) + Send + Sync + 'static,
{
    fn record(&self, event: &AuditEvent) {
        self(event)
    }
}

/// One audited event: when, from where, and what.
///
/// It carries identifiers only (client id, grant id, subject, the request's source address):
/// never a device code, user code, token or digest, so it may be stored and shown freely.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditEvent {
    /// When, by the flow's clock.
    pub at: Timestamp,
    /// The address of the request that caused it (after trusted proxies), where known: `None`
    /// without a [`ClientAddr`](crate::ClientAddr), and for calls from the application
    /// ([`DeviceFlow::revoke_device`](crate::DeviceFlow::revoke_device) and the like).
    pub source: Option<IpAddr>,
    /// What happened.
    pub action: AuditAction,
}

impl AuditEvent {
    pub(crate) fn new(at: Timestamp, source: Option<IpAddr>, action: AuditAction) -> Self {
        AuditEvent { at, source, action }
    }
}

/// What happened, with who was involved.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditAction {
    /// A device asked for codes, and a pending device grant was created (RFC 8628 3.1). The
    /// grant has no id until it is redeemed.
    DeviceAuthorized {
        /// The client the device authenticated as.
        client_id: ClientId,
        /// The scope the grant is for.
        scope: Scope,
    },
    /// An end user approved a device's request on the verification page.
    Approved {
        /// The client asking.
        client_id: ClientId,
        /// The end user who approved.
        subject: Subject,
        /// The scope approved.
        scope: Scope,
    },
    /// An end user denied a device's request on the verification page.
    Denied {
        /// The client asking.
        client_id: ClientId,
        /// The end user who denied.
        subject: Subject,
    },
    /// A device redeemed its approved device code: a grant was created and tokens issued.
    TokensIssued {
        /// The client.
        client_id: ClientId,
        /// The end user who approved.
        subject: Subject,
        /// The new grant.
        grant_id: GrantId,
        /// The tokens' scope.
        scope: Scope,
    },
    /// A refresh token was exchanged for a new pair.
    Refreshed {
        /// The client.
        client_id: ClientId,
        /// The grant's end user.
        subject: Subject,
        /// The grant.
        grant_id: GrantId,
        /// The new access token's scope.
        scope: Scope,
        /// True for the retry of a refresh whose reply was lost (within the grace period).
        retry: bool,
    },
    /// A token or a whole grant was revoked.
    Revoked {
        /// The client the token or grant belongs to.
        client_id: ClientId,
        /// Its end user.
        subject: Subject,
        /// The grant, if the token belongs to one (every token issued by the flow does).
        grant_id: Option<GrantId>,
        /// Why.
        reason: RevocationReason,
    },
    /// A refresh token of a grant was presented after it was rotated away (RFC 9700 4.14.2):
    /// someone holds a copy, and the whole grant is revoked.
    RefreshTokenReuse {
        /// The client.
        client_id: ClientId,
        /// The grant's end user.
        subject: Subject,
        /// The grant, now revoked.
        grant_id: GrantId,
    },
    /// A signed-in end user entered a user code that matches no grant.
    WrongUserCode {
        /// Who entered it.
        subject: Subject,
    },
    /// A request was refused by one of the flow's limits.
    LimitHit {
        /// Which.
        limit: Limit,
        /// The client, where the limit counts one (and it is a registered client).
        client_id: Option<ClientId>,
        /// The end user, where the limit counts one.
        subject: Option<Subject>,
    },
}

impl AuditAction {
    /// A short stable name for the action (`device_authorized`, `approved`, ...), for logs
    /// and event types.
    pub fn name(&self) -> &'static str {
        match self {
            AuditAction::DeviceAuthorized { .. } => "device_authorized",
            AuditAction::Approved { .. } => "approved",
            AuditAction::Denied { .. } => "denied",
            AuditAction::TokensIssued { .. } => "tokens_issued",
            AuditAction::Refreshed { .. } => "refreshed",
            AuditAction::Revoked { .. } => "revoked",
            AuditAction::RefreshTokenReuse { .. } => "refresh_token_reuse",
            AuditAction::WrongUserCode { .. } => "wrong_user_code",
            AuditAction::LimitHit { .. } => "limit_hit",
        }
    }
}

/// Why a token or grant was revoked: the `reason` label of
/// [`device_flow_revocations_total`](super::metric::REVOCATIONS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RevocationReason {
    /// A client revoked one of its access tokens (RFC 7009); its grant lives on.
    AccessToken,
    /// A client revoked one of its refresh tokens (RFC 7009), ending the grant.
    RefreshToken,
    /// The end user signed the device out (the connected-devices page, or the application
    /// through [`DeviceFlow::revoke_device`](crate::DeviceFlow::revoke_device) and
    /// [`revoke_all_devices`](crate::DeviceFlow::revoke_all_devices)).
    EndUser,
    /// The application's [`AccountStatus`](crate::AccountStatus) refused the end user: every
    /// grant of theirs ends.
    Account,
    /// A reused refresh token revealed a copy: the grant ends.
    Reuse,
}

impl RevocationReason {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            RevocationReason::AccessToken => "access_token",
            RevocationReason::RefreshToken => "refresh_token",
            RevocationReason::EndUser => "end_user",
            RevocationReason::Account => "account",
            RevocationReason::Reuse => "reuse",
        }
    }

    /// Every reason, in label order.
    pub const ALL: [RevocationReason; 5] = [
        RevocationReason::AccessToken,
        RevocationReason::RefreshToken,
        RevocationReason::EndUser,
        RevocationReason::Account,
        RevocationReason::Reuse,
    ];
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The limits that refuse requests: the `limit` label of
/// [`device_flow_limit_refusals_total`](super::metric::LIMIT_REFUSALS), and
/// [`AuditAction::LimitHit`]'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// The per-source rate of device authorization requests.
    DeviceAuthorizationRate,
    /// The per-source rate of token requests.
    TokenRate,
    /// The per-source rate of verification page POSTs.
    VerificationRate,
    /// The wrong-user-code budgets (per end user, per source).
    UserCodeGuessing,
    /// The failed end-user sign-in budgets on the verification and connected-devices pages.
    EndUserSignIn,
    /// The failed client-secret budgets.
    ClientSecret,
    /// [`max_grants_per_client`](crate::DeviceFlowBuilder::max_grants_per_client).
    GrantsPerClient,
    /// [`max_grants_overall`](crate::DeviceFlowBuilder::max_grants_overall).
    GrantsOverall,
    /// The store's ceiling on pending device grants (`Insert::Full`).
    PendingGrants,
}

impl Limit {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Limit::DeviceAuthorizationRate => "device_authorization_rate",
            Limit::TokenRate => "token_rate",
            Limit::VerificationRate => "verification_rate",
            Limit::UserCodeGuessing => "user_code_guessing",
            Limit::EndUserSignIn => "end_user_sign_in",
            Limit::ClientSecret => "client_secret",
            Limit::GrantsPerClient => "grants_per_client",
            Limit::GrantsOverall => "grants_overall",
            Limit::PendingGrants => "pending_grants",
        }
    }

    /// Every limit, in label order.
    pub const ALL: [Limit; 9] = [
        Limit::DeviceAuthorizationRate,
        Limit::TokenRate,
        Limit::VerificationRate,
        Limit::UserCodeGuessing,
        Limit::EndUserSignIn,
        Limit::ClientSecret,
        Limit::GrantsPerClient,
        Limit::GrantsOverall,
        Limit::PendingGrants,
    ];
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
