//! The device grant and its state machine (RFC 8628 3.4-3.5), as plain synchronous code.
//!
//! ```text
//!             decide(Approve)            poll (once)
//!   Pending ──────────────────▶ Approved ─────────────▶ Redeemed
//!      │  ▲                        │
//!      │  └─ poll: authorization_pending / slow_down
//!      │ decide(Deny)              └─ expiry before the poll: expired_token
//!      ▼
//!   Denied ── poll: access_denied
//! ```
//!
//! A store never decides anything: the services read a [`DeviceGrant`], ask it what a poll or a
//! decision means, and write the successor back with a compare-and-swap on its version. Whatever
//! the backend, the rules are the ones in this file.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::codes::Digest;
use crate::error::ErrorCode;
use crate::ids::{Audience, ClientId, Subject};
use crate::scope::Scope;

/// The device code grant type (RFC 8628 3.4).
pub const DEVICE_CODE_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// The refresh token grant type (RFC 6749 6).
pub const REFRESH_TOKEN_GRANT_TYPE: &str = "refresh_token";

/// How much the polling interval grows on each `slow_down` (RFC 8628 3.5).
pub const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

/// How long an expired or redeemed grant is kept, so that late polls still get `expired_token`
/// or a clear `invalid_grant` rather than an unknown code.
pub const RETENTION_AFTER_EXPIRY: Duration = Duration::from_secs(600);

/// Where a grant stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum GrantStatus {
    /// Waiting for the end user.
    Pending,
    /// Approved by `subject`; the next poll receives the tokens.
    Approved {
        /// The end user who approved.
        subject: Subject,
        /// When they approved.
        approved_at: Timestamp,
    },
    /// Denied by the end user.
    Denied,
    /// Tokens were issued; the device code is spent.
    Redeemed,
}

/// A device authorization grant: what the device asked for and where the end user's decision
/// stands. Keyed in the store by the digest of its device code, indexed by its user code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceGrant {
    /// The client the device code was issued to; no other client may redeem it.
    pub client_id: ClientId,
    /// The scope fixed when the grant was created.
    pub scope: Scope,
    /// The resources the tokens will be for (RFC 8707), fixed when the grant was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<Audience>,
    /// Digest of the user code, for the store's index.
    pub user_code: Digest,
    /// When the device asked (shown to the end user, RFC 8628 5.4).
    pub created_at: Timestamp,
    /// When the device code and user code stop being valid.
    pub expires_at: Timestamp,
    /// The minimum polling interval in seconds; grows with every `slow_down`.
    pub interval: u32,
    /// When the device last polled, if it has.
    pub last_poll: Option<Timestamp>,
    /// The end user's decision.
    pub status: GrantStatus,
    /// Where the device authorization request came from, shown to the end user so that a
    /// phished code (a request that is not theirs) stands out (RFC 8628 5.4). Boxed: most of
    /// a grant's life is spent waiting, and an absent origin should cost one word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Box<RequestOrigin>>,
}

/// Where a device authorization request came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestOrigin {
    /// The client's network address, as the server saw it (after trusted proxies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// The `User-Agent` the device sent, cut to [`RequestOrigin::MAX_USER_AGENT`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<Box<str>>,
}

impl RequestOrigin {
    /// The longest user agent kept, in bytes; longer ones are cut at a character boundary.
    pub const MAX_USER_AGENT: usize = 160;

    /// An origin from an address and a user agent (cut to [`MAX_USER_AGENT`](Self::MAX_USER_AGENT)).
    pub fn new(address: Option<IpAddr>, user_agent: Option<&str>) -> Self {
        let user_agent = user_agent.filter(|ua| !ua.is_empty()).map(|ua| {
            let mut end = ua.len().min(Self::MAX_USER_AGENT);
            while !ua.is_char_boundary(end) {
                end -= 1;
            }
            Box::from(&ua[..end])
        });
        RequestOrigin {
            address,
            user_agent,
        }
    }
}

/// What a poll of the token endpoint means for a grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PollOutcome {
    /// `authorization_pending`; store `next` (if any) so the poll time is recorded.
    Pending {
        /// The successor to store, or `None` when nothing that matters changed.
        next: Option<DeviceGrant>,
    },
    /// `slow_down`; store `next`, whose interval is 5 seconds longer.
    SlowDown {
        /// The successor to store.
        next: DeviceGrant,
    },
    /// Issue tokens for `subject` and `scope`, provided `next` (the grant marked redeemed) is
    /// stored by compare-and-swap. Exactly one poll wins that swap.
    Issue {
        /// The grant marked redeemed.
        next: DeviceGrant,
        /// Who approved.
        subject: Subject,
        /// When they approved.
        approved_at: Timestamp,
        /// The scope the tokens carry.
        scope: Scope,
    },
    /// A final answer that changes nothing: `access_denied`, `expired_token` or `invalid_grant`.
    Refuse(ErrorCode),
}

/// The end user's decision on the verification page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Approve on behalf of `subject`.
    Approve(Subject),
    /// Deny.
    Deny,
}

/// Why a decision could not be recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecideError {
    /// The code expired.
    Expired,
    /// Someone already approved or denied it.
    AlreadyDecided,
}

impl DeviceGrant {
    /// A new pending grant.
    pub fn new(
        client_id: ClientId,
        scope: Scope,
        user_code: Digest,
        now: Timestamp,
        expires_in: Duration,
        interval: Duration,
    ) -> Self {
        DeviceGrant {
            client_id,
            scope,
            audience: None,
            user_code,
            created_at: now,
            expires_at: now.saturating_add(expires_in),
            interval: u32::try_from(interval.as_secs()).unwrap_or(u32::MAX),
            last_poll: None,
            status: GrantStatus::Pending,
            origin: None,
        }
    }

    /// The grant for tokens meant for `audience` (RFC 8707).
    pub fn with_audience(mut self, audience: Option<Audience>) -> Self {
        self.audience = audience;
        self
    }

    /// The grant with the request's origin recorded.
    pub fn with_origin(mut self, origin: Option<RequestOrigin>) -> Self {
        self.origin = origin.map(Box::new);
        self
    }

    /// True once the codes have expired.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.expires_at
    }

    /// How long a store should keep the record: past expiry by [`RETENTION_AFTER_EXPIRY`].
    pub fn retain_until(&self) -> Timestamp {
        self.expires_at.saturating_add(RETENTION_AFTER_EXPIRY)
    }

    /// Seconds left before expiry.
    pub fn expires_in(&self, now: Timestamp) -> u64 {
        self.expires_at.saturating_duration_since(now).as_secs()
    }

    /// What a poll by `client_id` at `now` means (RFC 8628 3.5).
    pub fn poll(&self, client_id: &ClientId, now: Timestamp) -> PollOutcome {
        // Another client's poll learns nothing about the grant and changes nothing.
        if &self.client_id != client_id {
            return PollOutcome::Refuse(ErrorCode::InvalidGrant);
        }
        match &self.status {
            GrantStatus::Redeemed => PollOutcome::Refuse(ErrorCode::InvalidGrant),
            _ if self.is_expired(now) => PollOutcome::Refuse(ErrorCode::ExpiredToken),
            GrantStatus::Denied => PollOutcome::Refuse(ErrorCode::AccessDenied),
            GrantStatus::Approved {
                subject,
                approved_at,
            } => PollOutcome::Issue {
                subject: subject.clone(),
                approved_at: *approved_at,
                scope: self.scope.clone(),
                next: DeviceGrant {
                    status: GrantStatus::Redeemed,
                    last_poll: Some(now),
                    ..self.clone()
                },
            },
            GrantStatus::Pending => {
                let interval = Duration::from_secs(u64::from(self.interval));
                let too_soon = self
                    .last_poll
                    .is_some_and(|last| now < last.saturating_add(interval));
                if too_soon {
                    let step = u32::try_from(SLOW_DOWN_STEP.as_secs()).unwrap_or(5);
                    PollOutcome::SlowDown {
                        next: DeviceGrant {
                            interval: self.interval.saturating_add(step),
                            last_poll: Some(now),
                            ..self.clone()
                        },
                    }
                } else if self.interval == 0 {
                    // With no interval there is nothing to enforce, so nothing to write.
                    PollOutcome::Pending { next: None }
                } else {
                    PollOutcome::Pending {
                        next: Some(DeviceGrant {
                            last_poll: Some(now),
                            ..self.clone()
                        }),
                    }
                }
            }
        }
    }

    /// The grant after the end user's `decision` at `now`.
    pub fn decide(&self, decision: Decision, now: Timestamp) -> Result<DeviceGrant, DecideError> {
        if self.status != GrantStatus::Pending {
            return Err(DecideError::AlreadyDecided);
        }
        if self.is_expired(now) {
            return Err(DecideError::Expired);
        }
        let status = match decision {
            Decision::Approve(subject) => GrantStatus::Approved {
                subject,
                approved_at: now,
            },
            Decision::Deny => GrantStatus::Denied,
        };
        Ok(DeviceGrant {
            status,
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> Timestamp {
        Timestamp::from_unix_millis(secs * 1000)
    }

    fn grant() -> DeviceGrant {
        DeviceGrant::new(
            ClientId::new("tv"),
            Scope::parse("profile").unwrap(),
            Digest::of(b"user"),
            t(100),
            Duration::from_secs(600),
            Duration::from_secs(5),
        )
    }

    fn tv() -> ClientId {
        ClientId::new("tv")
    }

    #[test]
    fn first_poll_is_pending_and_records_time() {
        match grant().poll(&tv(), t(101)) {
            PollOutcome::Pending { next: Some(next) } => assert_eq!(next.last_poll, Some(t(101))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn polling_too_soon_slows_down_for_good() {
        let g = grant();
        let PollOutcome::Pending { next: Some(g) } = g.poll(&tv(), t(101)) else {
            panic!()
        };
        let PollOutcome::SlowDown { next: g } = g.poll(&tv(), t(104)) else {
            panic!()
        };
        assert_eq!(g.interval, 10);
        // 9 s later is fine under the old interval but too soon under the new one.
        assert!(matches!(
            g.poll(&tv(), t(113)),
            PollOutcome::SlowDown { .. }
        ));
        assert!(matches!(
            g.poll(&tv(), t(114)),
            PollOutcome::Pending { next: Some(_) }
        ));
    }

    #[test]
    fn polling_exactly_on_interval_is_fine() {
        let PollOutcome::Pending { next: Some(g) } = grant().poll(&tv(), t(101)) else {
            panic!()
        };
        assert!(matches!(g.poll(&tv(), t(106)), PollOutcome::Pending { .. }));
    }

    #[test]
    fn zero_interval_never_writes() {
        let mut g = grant();
        g.interval = 0;
        g.last_poll = Some(t(101));
        assert_eq!(g.poll(&tv(), t(101)), PollOutcome::Pending { next: None });
    }

    #[test]
    fn approved_grant_issues_once() {
        let g = grant()
            .decide(Decision::Approve(Subject::new("alice")), t(102))
            .unwrap();
        let PollOutcome::Issue {
            next,
            subject,
            scope,
            approved_at,
        } = g.poll(&tv(), t(103))
        else {
            panic!()
        };
        assert_eq!(subject.as_str(), "alice");
        assert_eq!(approved_at, t(102));
        assert_eq!(scope.as_str(), "profile");
        assert_eq!(next.status, GrantStatus::Redeemed);
        assert_eq!(
            next.poll(&tv(), t(110)),
            PollOutcome::Refuse(ErrorCode::InvalidGrant)
        );
    }

    #[test]
    fn other_clients_cannot_poll() {
        let g = grant()
            .decide(Decision::Approve(Subject::new("alice")), t(102))
            .unwrap();
        assert_eq!(
            g.poll(&ClientId::new("evil"), t(103)),
            PollOutcome::Refuse(ErrorCode::InvalidGrant)
        );
    }

    #[test]
    fn denied_and_expired() {
        let denied = grant().decide(Decision::Deny, t(102)).unwrap();
        assert_eq!(
            denied.poll(&tv(), t(103)),
            PollOutcome::Refuse(ErrorCode::AccessDenied)
        );
        assert_eq!(
            grant().poll(&tv(), t(700)),
            PollOutcome::Refuse(ErrorCode::ExpiredToken)
        );
        let approved = grant()
            .decide(Decision::Approve(Subject::new("a")), t(102))
            .unwrap();
        assert_eq!(
            approved.poll(&tv(), t(700)),
            PollOutcome::Refuse(ErrorCode::ExpiredToken)
        );
    }

    #[test]
    fn decisions_are_final_and_expire() {
        let approved = grant()
            .decide(Decision::Approve(Subject::new("a")), t(102))
            .unwrap();
        assert_eq!(
            approved.decide(Decision::Deny, t(103)),
            Err(DecideError::AlreadyDecided)
        );
        assert_eq!(
            grant().decide(Decision::Deny, t(700)),
            Err(DecideError::Expired)
        );
        assert_eq!(grant().expires_in(t(100)), 600);
        assert_eq!(grant().retain_until(), t(1300));
    }

    #[test]
    fn origins_keep_a_bounded_user_agent() {
        let long = "é".repeat(200);
        let o = RequestOrigin::new(None, Some(&long));
        let ua = o.user_agent.unwrap();
        assert!(
            ua.len() <= RequestOrigin::MAX_USER_AGENT
                && ua.len() >= RequestOrigin::MAX_USER_AGENT - 1
        );
        assert_eq!(RequestOrigin::new(None, Some("")).user_agent, None);
        let g = grant().with_origin(Some(RequestOrigin::new(
            "10.0.0.1".parse().ok(),
            Some("tv/1.0"),
        )));
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(serde_json::from_str::<DeviceGrant>(&json).unwrap(), g);
    }
}
