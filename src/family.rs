//! A grant and its token family: what an approved device holds, how its refresh token rotates,
//! how a retry after a lost reply is told apart from a stolen token, and what reuse means
//! (RFC 9700 4.14.2). Plain synchronous rules, like [`crate::grant`]; a store only keeps
//! [`Grant`]s and swaps them by version.
//!
//! ```text
//!   redemption ──▶ Grant { refresh: R1, access: A1 }
//!   refresh R1 ──▶ Grant { refresh: R2, access: A2, superseded: R1 at t }   (A1 revoked)
//!   refresh R1 again, before t + grace   ──▶ retry:  { refresh: R3, access: A3, superseded: R1 at t }
//!                                                    (A2 revoked; R2 is now spent too)
//!   refresh R1 (after grace), R2, or any other token of the grant  ──▶ reuse: the grant is revoked
//! ```
//!
//! Every refresh token of a grant carries the grant's [`FamilyKey`](crate::codes::FamilyKey),
//! so a token presented again after its rotation still names its grant; that is what lets the
//! server tell reuse (revoke everything) from a token it has never seen (refuse it).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::codes::{Digest, Thumbprint};
use crate::ids::{Audience, ClientId, GrantId, Subject};
use crate::scope::Scope;

/// How long after a rotation the refresh token it replaced may still be presented once more
/// and be answered (a retry after a lost reply) rather than treated as reuse. Default 30 s.
pub const DEFAULT_REFRESH_GRACE: Duration = Duration::from_secs(30);

/// An approved grant: one end user's approval of one client's device, and the tokens it holds
/// now. Created when the device redeems its approved device code; it ends when it expires, is
/// revoked, or a reused refresh token reveals a theft.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The grant's stable id.
    pub id: GrantId,
    /// The client the grant is for; only it may refresh.
    pub client_id: ClientId,
    /// The end user who approved.
    pub subject: Subject,
    /// The scope the end user approved: the most any refresh may ask for.
    pub scope: Scope,
    /// The resources the tokens are for (RFC 8707), if the device named any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<Audience>,
    /// When the end user approved.
    pub approved_at: Timestamp,
    /// When tokens were last issued from the grant (its redemption or latest refresh).
    pub last_used_at: Timestamp,
    /// When the grant ends by itself: its refresh token's expiry, or its access token's when it
    /// has no refresh token. A store may drop it then.
    pub expires_at: Timestamp,
    /// Digest of the grant's live access token, revoked with the grant.
    pub access_token: Digest,
    /// Digest of the grant's live refresh token, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Digest>,
    /// The refresh token the latest rotation replaced, and when: presented again within the
    /// grace period it is a retry; later, reuse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded: Option<Superseded>,
    /// The DPoP key the refresh token is bound to (RFC 9449 5: public clients only), so a
    /// refresh must prove possession of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Thumbprint>,
}

/// A refresh token replaced by a rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Superseded {
    /// Its digest.
    pub refresh_token: Digest,
    /// When it was replaced.
    pub at: Timestamp,
}

/// What a presented refresh token of a grant is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presented {
    /// The grant's live refresh token: rotate it.
    Current,
    /// The token the latest rotation replaced, within the grace period: most likely the device
    /// never received the rotation's reply. Answer with a fresh pair and revoke the pair it
    /// replaces.
    Retry,
    /// Any other token of the grant: rotated away, replaced by a retry, or presented after the
    /// grace period. Someone holds a copy: revoke the whole grant.
    Reused,
}

/// The tokens a new grant or a rotation issues, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewTokens {
    /// Digest of the new access token.
    pub access_token: Digest,
    /// Digest of the new refresh token, if one is issued.
    pub refresh_token: Option<Digest>,
    /// When the grant ends after this issue (see [`Grant::expires_at`]).
    pub expires_at: Timestamp,
}

/// A rotation, ready for the store: the grant's successor and the access token it revokes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// The grant after the rotation, to store by compare-and-swap.
    pub next: Grant,
    /// The access token of the replaced pair, deleted in the same step.
    pub revoke: Digest,
}

impl Grant {
    /// True once the grant has ended by itself.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.expires_at
    }

    /// What `presented` (the digest of a refresh token carrying this grant's family key) is
    /// at `now`, with `grace` allowed for retries.
    pub fn presented(&self, presented: &Digest, now: Timestamp, grace: Duration) -> Presented {
        if self.refresh_token.is_some_and(|r| r.ct_eq(presented)) {
            return Presented::Current;
        }
        match &self.superseded {
            Some(s) if s.refresh_token.ct_eq(presented) && now < s.at.saturating_add(grace) => {
                Presented::Retry
            }
            _ => Presented::Reused,
        }
    }

    /// The grant after answering a [`Current`](Presented::Current) or
    /// [`Retry`](Presented::Retry) presentation with `tokens` at `now`; `None` for
    /// [`Reused`](Presented::Reused), which must revoke the grant instead.
    pub fn rotate(
        &self,
        presented: Presented,
        tokens: NewTokens,
        now: Timestamp,
    ) -> Option<Rotation> {
        let superseded = match presented {
            // The replaced token is the live one; it is the one a retry may present.
            Presented::Current => self.refresh_token.map(|refresh_token| Superseded {
                refresh_token,
                at: now,
            }),
            // A retry keeps the window where it was: it does not grow with every retry, and
            // the pair it replaces (never received, or a thief's) is spent for good.
            Presented::Retry => self.superseded,
            Presented::Reused => return None,
        };
        Some(Rotation {
            revoke: self.access_token,
            next: Grant {
                last_used_at: now,
                expires_at: tokens.expires_at,
                access_token: tokens.access_token,
                refresh_token: tokens.refresh_token,
                superseded,
                ..self.clone()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> Timestamp {
        Timestamp::from_unix_millis(secs * 1000)
    }

    const GRACE: Duration = Duration::from_secs(30);

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn tokens(n: u8) -> NewTokens {
        NewTokens {
            access_token: d(100 + n),
            refresh_token: Some(d(n)),
            expires_at: t(10_000),
        }
    }

    fn grant() -> Grant {
        Grant {
            id: GrantId::from_bytes([1; 16]),
            client_id: ClientId::new("tv"),
            subject: Subject::new("alice"),
            scope: Scope::parse("profile").unwrap(),
            audience: None,
            approved_at: t(90),
            last_used_at: t(100),
            expires_at: t(10_000),
            access_token: d(101),
            refresh_token: Some(d(1)),
            superseded: None,
            cnf: None,
        }
    }

    #[test]
    fn current_token_rotates_and_revokes_its_access_token() {
        let g = grant();
        assert_eq!(g.presented(&d(1), t(200), GRACE), Presented::Current);
        let r = g.rotate(Presented::Current, tokens(2), t(200)).unwrap();
        assert_eq!(r.revoke, d(101));
        assert_eq!(r.next.refresh_token, Some(d(2)));
        assert_eq!(r.next.access_token, d(102));
        assert_eq!(r.next.last_used_at, t(200));
        assert_eq!(
            r.next.superseded,
            Some(Superseded {
                refresh_token: d(1),
                at: t(200)
            })
        );
        assert_eq!(r.next.id, g.id);
        assert_eq!(r.next.approved_at, g.approved_at);
    }

    #[test]
    fn the_replaced_token_is_a_retry_within_grace_then_reuse() {
        let g = grant()
            .rotate(Presented::Current, tokens(2), t(200))
            .unwrap()
            .next;
        assert_eq!(g.presented(&d(1), t(229), GRACE), Presented::Retry);
        assert_eq!(g.presented(&d(1), t(230), GRACE), Presented::Reused);
        assert_eq!(
            g.presented(&d(1), t(201), Duration::ZERO),
            Presented::Reused
        );
        assert_eq!(g.presented(&d(9), t(201), GRACE), Presented::Reused);
    }

    #[test]
    fn a_retry_replaces_the_pair_and_spends_it() {
        let g = grant()
            .rotate(Presented::Current, tokens(2), t(200))
            .unwrap()
            .next;
        let r = g.rotate(Presented::Retry, tokens(3), t(210)).unwrap();
        assert_eq!(r.revoke, d(102));
        let g = r.next;
        assert_eq!(g.refresh_token, Some(d(3)));
        // The window stays where the first rotation put it.
        assert_eq!(g.superseded.unwrap().at, t(200));
        // The pair the retry replaced is reuse from now on; the original still retries.
        assert_eq!(g.presented(&d(2), t(211), GRACE), Presented::Reused);
        assert_eq!(g.presented(&d(1), t(211), GRACE), Presented::Retry);
        assert_eq!(g.presented(&d(3), t(211), GRACE), Presented::Current);
    }

    #[test]
    fn reuse_rotates_nothing() {
        let g = grant();
        assert_eq!(g.presented(&d(7), t(200), GRACE), Presented::Reused);
        assert!(g.rotate(Presented::Reused, tokens(2), t(200)).is_none());
    }

    #[test]
    fn a_grant_without_refresh_token_has_no_current_token() {
        let g = Grant {
            refresh_token: None,
            ..grant()
        };
        assert_eq!(g.presented(&d(1), t(200), GRACE), Presented::Reused);
        assert!(g.is_expired(t(10_000)) && !g.is_expired(t(9_999)));
    }

    #[test]
    fn grants_round_trip_as_json() {
        let g = grant()
            .rotate(Presented::Current, tokens(2), t(200))
            .unwrap()
            .next;
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(serde_json::from_str::<Grant>(&json).unwrap(), g);
    }
}
