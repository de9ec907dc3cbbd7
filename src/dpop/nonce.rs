//! Stateless server nonces (RFC 9449 8, 9): an HMAC-SHA-256 over a time slot, so every
//! instance holding the same secret issues and accepts the same nonces without sharing state.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::clock::Timestamp;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of MAC kept in a nonce: 128 bits, far beyond guessing within a slot.
const TAG_BYTES: usize = 16;

/// Issues and checks DPoP nonces. A nonce names its time slot and carries a MAC of it; it is
/// accepted during its slot and the next, so for between one and two `lifetime`s. Cheap to
/// clone; `Debug` never shows the secret.
#[derive(Clone)]
pub struct DpopNonces {
    mac: Arc<HmacSha256>,
    lifetime_ms: u64,
}

impl DpopNonces {
    /// Nonces keyed by `secret` (use 32 random bytes, the same on every instance) and valid
    /// for at least `lifetime` (at least one second).
    pub fn new(secret: &[u8], lifetime: Duration) -> Self {
        let mac = match HmacSha256::new_from_slice(secret) {
            Ok(mac) => mac,
            // HMAC takes keys of any length; kept total rather than unwrapped.
            Err(_) => HmacSha256::new(&Default::default()),
        };
        let lifetime_ms = u64::try_from(lifetime.as_millis())
            .unwrap_or(u64::MAX)
            .max(1000);
        DpopNonces {
            mac: Arc::new(mac),
            lifetime_ms,
        }
    }

    /// Nonces keyed by a fresh random secret: for a single instance (another instance would
    /// not accept them).
    pub fn random(lifetime: Duration) -> Self {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        Self::new(&secret, lifetime)
    }

    fn tag(&self, slot: u64) -> [u8; TAG_BYTES] {
        let mut mac = (*self.mac).clone();
        mac.update(b"tower-device-flow dpop nonce\0");
        mac.update(&slot.to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }

    fn slot(&self, now: Timestamp) -> u64 {
        now.as_unix_millis() / self.lifetime_ms
    }

    /// The nonce to hand out at `now` (the `DPoP-Nonce` header's value).
    pub fn issue(&self, now: Timestamp) -> String {
        let slot = self.slot(now);
        let mut raw = [0u8; 8 + TAG_BYTES];
        raw[..8].copy_from_slice(&slot.to_be_bytes());
        raw[8..].copy_from_slice(&self.tag(slot));
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// True if `nonce` was issued (by any instance with the same secret) in the current slot
    /// or the one before.
    pub fn accepts(&self, nonce: &str, now: Timestamp) -> bool {
        let mut raw = [0u8; 8 + TAG_BYTES + 1];
        let Ok(len) = URL_SAFE_NO_PAD.decode_slice(nonce.as_bytes(), &mut raw) else {
            return false;
        };
        if len != 8 + TAG_BYTES {
            return false;
        }
        let mut slot = [0u8; 8];
        slot.copy_from_slice(&raw[..8]);
        let slot = u64::from_be_bytes(slot);
        let current = self.slot(now);
        if slot != current && slot.checked_add(1) != Some(current) {
            return false;
        }
        let mut mac = (*self.mac).clone();
        mac.update(b"tower-device-flow dpop nonce\0");
        mac.update(&slot.to_be_bytes());
        // Constant-time comparison of the truncated tag.
        mac.verify_truncated_left(&raw[8..8 + TAG_BYTES]).is_ok()
    }
}

impl fmt::Debug for DpopNonces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopNonces")
            .field("lifetime_ms", &self.lifetime_ms)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_unix_millis(secs * 1000)
    }

    #[test]
    fn accepted_for_its_slot_and_the_next() {
        let n = DpopNonces::new(b"shared secret of the deployment", Duration::from_secs(60));
        let nonce = n.issue(at(6_000));
        assert!(n.accepts(&nonce, at(6_000)));
        assert!(n.accepts(&nonce, at(6_059)));
        assert!(n.accepts(&nonce, at(6_119)));
        assert!(!n.accepts(&nonce, at(6_120)));
        assert!(!n.accepts(&nonce, at(5_999)), "not before it was issued");
    }

    #[test]
    fn instances_with_the_same_secret_agree_others_do_not() {
        let a = DpopNonces::new(b"k", Duration::from_secs(60));
        let b = DpopNonces::new(b"k", Duration::from_secs(60));
        let c = DpopNonces::new(b"other", Duration::from_secs(60));
        let nonce = a.issue(at(100));
        assert!(b.accepts(&nonce, at(100)));
        assert!(!c.accepts(&nonce, at(100)));
        assert!(!DpopNonces::random(Duration::from_secs(60)).accepts(&nonce, at(100)));
    }

    #[test]
    fn forged_or_malformed_nonces_are_refused() {
        let n = DpopNonces::new(b"k", Duration::from_secs(60));
        let nonce = n.issue(at(100));
        let mut raw = URL_SAFE_NO_PAD.decode(&nonce).unwrap();
        raw[20] ^= 1;
        assert!(!n.accepts(&URL_SAFE_NO_PAD.encode(&raw), at(100)));
        for bad in [
            "",
            "x",
            "not base64!",
            &nonce[..nonce.len() - 1],
            &format!("{nonce}AA"),
        ] {
            assert!(!n.accepts(bad, at(100)), "{bad}");
        }
    }
}
