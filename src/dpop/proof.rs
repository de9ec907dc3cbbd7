//! Checking one DPoP proof JWT (RFC 9449 4.3), cheapest checks first and the signature last,
//! so junk costs little.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::IgnoredAny;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use super::config::{DpopAlgorithm, DpopConfig, ProofError, MAX_PROOF_BYTES};
use super::htu::Htu;
use super::signature::ProofKey;
use crate::clock::Timestamp;
use crate::codes::{Digest, Thumbprint};

/// What a proof must match: the request it came with, as the server sees it.
#[derive(Clone, Copy, Debug)]
pub struct ProofRequest<'a> {
    /// The request's method (`htm`), e.g. `"POST"`.
    pub method: &'a str,
    /// The server's own URI for the request (`htu`), normalized.
    pub htu: &'a Htu,
    /// The access token presented with the request, at a protected resource (then `ath` must
    /// be its hash); `None` at the token endpoint.
    pub access_token: Option<&'a str>,
}

/// A proof that passed every check but the replay check, which needs the store: claim
/// [`replay_key`](Self::replay_key) until [`replay_until`](Self::replay_until) once.
#[derive(Clone, PartialEq, Eq)]
pub struct DpopProof {
    jkt: Thumbprint,
    replay_key: Digest,
    iat: Timestamp,
    replay_until: Timestamp,
}

impl DpopProof {
    /// The RFC 7638 SHA-256 thumbprint of the proof's key: what tokens are bound to
    /// (`cnf.jkt`).
    pub fn jkt(&self) -> &Thumbprint {
        &self.jkt
    }

    /// The proof's creation time (`iat`).
    pub fn issued_at(&self) -> Timestamp {
        self.iat
    }

    /// The one-time key of this proof: SHA-256 over its key thumbprint, its `htu` and its
    /// `jti`, so proofs of different keys or for different URIs never collide (RFC 9449 11.1).
    pub fn replay_key(&self) -> &Digest {
        &self.replay_key
    }

    /// Until when the claim must be kept: the end of the proof's `iat` window, after which the
    /// proof is refused as stale anyway.
    pub fn replay_until(&self) -> Timestamp {
        self.replay_until
    }
}

impl fmt::Debug for DpopProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopProof")
            .field("jkt", &self.jkt)
            .field("iat", &self.iat)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    jwk: Option<Jwk>,
    // RFC 7515 4.1.11: extensions that must be understood; this server understands none.
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

/// The members of a JWK this check reads. Private and symmetric members are only looked for,
/// to refuse them (RFC 9449 4.3 step 7).
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    d: Option<IgnoredAny>,
    #[serde(default)]
    p: Option<IgnoredAny>,
    #[serde(default)]
    q: Option<IgnoredAny>,
    #[serde(default)]
    dp: Option<IgnoredAny>,
    #[serde(default)]
    dq: Option<IgnoredAny>,
    #[serde(default)]
    qi: Option<IgnoredAny>,
    #[serde(default)]
    oth: Option<IgnoredAny>,
    #[serde(default)]
    k: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    htm: Option<String>,
    #[serde(default)]
    htu: Option<String>,
    #[serde(default)]
    iat: Option<f64>,
    #[serde(default)]
    ath: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

/// The longest `jti` accepted: far more than the 96 random bits RFC 9449 4.2 asks for.
const MAX_JTI_BYTES: usize = 256;

fn b64(part: &str) -> Result<Vec<u8>, ProofError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| ProofError::Malformed)
}

/// The members of the JWK's RFC 7638 thumbprint input, in lexicographic order, as JSON.
fn thumbprint(members: &[(&str, &str)]) -> Thumbprint {
    let mut canonical = String::with_capacity(160);
    canonical.push('{');
    for (i, (name, value)) in members.iter().enumerate() {
        if i > 0 {
            canonical.push(',');
        }
        canonical.push('"');
        canonical.push_str(name);
        canonical.push_str("\":");
        // The values come from a parsed JSON string: re-encode them as JSON.
        canonical.push_str(&serde_json::Value::from(*value).to_string());
    }
    canonical.push('}');
    Thumbprint::from_bytes(Sha256::digest(canonical.as_bytes()).into())
}

/// The key of `jwk` for `alg`, and its thumbprint; `None` if it is not a public key of the kind
/// `alg` verifies with.
fn public_key(jwk: &Jwk, alg: DpopAlgorithm) -> Option<(ProofKey, Thumbprint)> {
    let private = jwk.d.is_some()
        || jwk.p.is_some()
        || jwk.q.is_some()
        || jwk.dp.is_some()
        || jwk.dq.is_some()
        || jwk.qi.is_some()
        || jwk.oth.is_some()
        || jwk.k.is_some();
    if private {
        return None;
    }
    match alg {
        DpopAlgorithm::ES256 | DpopAlgorithm::ES384 => {
            let (crv, len) = if alg == DpopAlgorithm::ES256 {
                ("P-256", 32)
            } else {
                ("P-384", 48)
            };
            let (x, y) = (jwk.x.as_deref()?, jwk.y.as_deref()?);
            if jwk.kty != "EC" || jwk.crv.as_deref() != Some(crv) {
                return None;
            }
            let key = ProofKey::ec(x, y, len)?;
            Some((
                key,
                thumbprint(&[("crv", crv), ("kty", "EC"), ("x", x), ("y", y)]),
            ))
        }
        DpopAlgorithm::EdDSA => {
            let x = jwk.x.as_deref()?;
            if jwk.kty != "OKP" || jwk.crv.as_deref() != Some("Ed25519") {
                return None;
            }
            let key = ProofKey::ed25519(x)?;
            Some((
                key,
                thumbprint(&[("crv", "Ed25519"), ("kty", "OKP"), ("x", x)]),
            ))
        }
        _ => {
            let (n, e) = (jwk.n.as_deref()?, jwk.e.as_deref()?);
            if jwk.kty != "RSA" {
                return None;
            }
            let key = ProofKey::rsa(n, e)?;
            Some((key, thumbprint(&[("e", e), ("kty", "RSA"), ("n", n)])))
        }
    }
}

/// `ath` (RFC 9449 4.2): base64url of the SHA-256 of the access token's ASCII.
fn access_token_hash_matches(ath: &str, token: &str) -> bool {
    let mut claimed = [0u8; 33];
    match URL_SAFE_NO_PAD.decode_slice(ath.as_bytes(), &mut claimed) {
        Ok(32) => {
            let actual: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            claimed[..32].ct_eq(&actual).into()
        }
        _ => false,
    }
}

fn replay_key(jkt: &Thumbprint, htu: &Htu, jti: &str) -> Digest {
    let mut h = Sha256::new();
    h.update(b"tower-device-flow dpop jti\0");
    h.update(jkt.as_bytes());
    // Length-prefixed, so no two (htu, jti) pairs hash the same input.
    h.update((htu.as_str().len() as u64).to_be_bytes());
    h.update(htu.as_str().as_bytes());
    h.update((jti.len() as u64).to_be_bytes());
    h.update(jti.as_bytes());
    Digest::from_bytes(h.finalize().into())
}

impl DpopConfig {
    /// Checks `proof` (the `DPoP` header's value) against `request` at `now`: RFC 9449 4.3
    /// steps 2 to 12, all but the replay check (claim the answer's
    /// [`replay_key`](DpopProof::replay_key) for that) and, at a resource, the comparison of the
    /// proof's key with the token's (compare [`jkt`](DpopProof::jkt) with the token's `cnf`).
    pub fn check(
        &self,
        proof: &str,
        request: &ProofRequest<'_>,
        now: Timestamp,
    ) -> Result<DpopProof, ProofError> {
        if proof.len() > MAX_PROOF_BYTES {
            return Err(ProofError::Malformed);
        }
        let mut parts = proof.split('.');
        let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ProofError::Malformed);
        };
        if header_b64.is_empty() || claims_b64.is_empty() || signature_b64.is_empty() {
            return Err(ProofError::Malformed);
        }

        // The header: typ, alg, jwk (steps 3 to 5, 7).
        let header: Header =
            serde_json::from_slice(&b64(header_b64)?).map_err(|_| ProofError::Malformed)?;
        if header.crit.is_some() {
            return Err(ProofError::Malformed);
        }
        let typ = header.typ.as_deref().ok_or(ProofError::Malformed)?;
        // Media type names are case-insensitive, and `application/` may be left out (RFC 7515
        // 4.1.9).
        let typ = typ
            .get(..12)
            .filter(|p| p.eq_ignore_ascii_case("application/"))
            .map_or(typ, |_| &typ[12..]);
        if !typ.eq_ignore_ascii_case("dpop+jwt") {
            return Err(ProofError::Type);
        }
        let alg = header.alg.as_deref().ok_or(ProofError::Malformed)?;
        let alg = DpopAlgorithm::from_name(alg)
            .filter(|a| self.algorithms.contains(a))
            .ok_or(ProofError::Algorithm)?;
        let jwk = header.jwk.as_ref().ok_or(ProofError::Malformed)?;
        let (key, jkt) = public_key(jwk, alg).ok_or(ProofError::Key)?;

        // The claims (steps 3, 8 to 12).
        let claims: Claims =
            serde_json::from_slice(&b64(claims_b64)?).map_err(|_| ProofError::Malformed)?;
        let (Some(jti), Some(htm), Some(htu), Some(iat)) =
            (&claims.jti, &claims.htm, &claims.htu, claims.iat)
        else {
            return Err(ProofError::Malformed);
        };
        if jti.is_empty() || jti.len() > MAX_JTI_BYTES {
            return Err(ProofError::Malformed);
        }
        if htm != request.method {
            return Err(ProofError::Method);
        }
        if Htu::parse(htu).as_ref() != Some(request.htu) {
            return Err(ProofError::Uri);
        }
        if !iat.is_finite() || iat < 0.0 {
            return Err(ProofError::Malformed);
        }
        // Whole milliseconds; a NumericDate may have a fraction (RFC 7519 2).
        let iat = Timestamp::from_unix_millis((iat * 1000.0) as u64);
        let window = self.window;
        if now.saturating_duration_since(iat) > window
            || iat.saturating_duration_since(now) > window
        {
            return Err(ProofError::Time);
        }
        if let Some(token) = request.access_token {
            match &claims.ath {
                Some(ath) if access_token_hash_matches(ath, token) => {}
                _ => return Err(ProofError::AccessTokenHash),
            }
        }
        if let Some(nonces) = &self.nonces {
            match &claims.nonce {
                Some(n) if nonces.accepts(n, now) => {}
                _ => return Err(ProofError::UseNonce),
            }
        }

        // The signature last: the one expensive step (step 6).
        let signature = b64(signature_b64)?;
        let signed = &proof[..header_b64.len() + 1 + claims_b64.len()];
        if !key.verifies(alg, signed.as_bytes(), signature) {
            return Err(ProofError::Signature);
        }
        Ok(DpopProof {
            replay_key: replay_key(&jkt, request.htu, jti),
            jkt,
            iat,
            replay_until: iat.saturating_add(window),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The proof of RFC 9449 figure 2: a token request signed by the RFC's authors.
    const RFC_TOKEN_PROOF: &str = concat!(
        "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6Ik",
        "VDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCR",
        "nMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JE",
        "QSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIj",
        "oiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwia",
        "WF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg",
        "4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg",
    );

    /// The proof of RFC 9449 figure 13: a resource request with `ath`.
    const RFC_RESOURCE_PROOF: &str = concat!(
        "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6Ik",
        "VDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCR",
        "nMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JE",
        "QSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIj",
        "oiR0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0Z",
        "WRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNF",
        "c05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.2oW9RP35yRqzhrtNP86L-Ey71E",
        "OptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA",
    );

    const RFC_ACCESS_TOKEN: &str = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";
    const RFC_JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";

    fn secs(s: u64) -> Timestamp {
        Timestamp::from_unix_millis(s * 1000)
    }

    fn token_request(htu: &Htu) -> ProofRequest<'_> {
        ProofRequest {
            method: "POST",
            htu,
            access_token: None,
        }
    }

    #[test]
    fn accepts_the_rfc_token_request_proof() {
        let htu = Htu::parse("https://server.example.com/token").unwrap();
        let proof = DpopConfig::default()
            .check(RFC_TOKEN_PROOF, &token_request(&htu), secs(1_562_262_620))
            .unwrap();
        assert_eq!(proof.jkt().to_string(), RFC_JKT);
        assert_eq!(proof.issued_at(), secs(1_562_262_616));
        assert_eq!(proof.replay_until(), secs(1_562_262_676));
    }

    #[test]
    fn accepts_the_rfc_resource_proof_and_checks_ath() {
        let htu = Htu::parse("https://resource.example.org/protectedresource").unwrap();
        let mut request = ProofRequest {
            method: "GET",
            htu: &htu,
            access_token: Some(RFC_ACCESS_TOKEN),
        };
        let config = DpopConfig::default();
        let now = secs(1_562_262_618);
        let proof = config.check(RFC_RESOURCE_PROOF, &request, now).unwrap();
        assert_eq!(proof.jkt().to_string(), RFC_JKT);
        request.access_token = Some("another token");
        assert_eq!(
            config.check(RFC_RESOURCE_PROOF, &request, now),
            Err(ProofError::AccessTokenHash)
        );
        request.access_token = Some(RFC_ACCESS_TOKEN);
        request.method = "POST";
        assert_eq!(
            config.check(RFC_RESOURCE_PROOF, &request, now),
            Err(ProofError::Method)
        );
    }

    #[test]
    fn refuses_the_rfc_proof_elsewhere_later_or_unsigned() {
        let htu = Htu::parse("https://server.example.com/token").unwrap();
        let config = DpopConfig::default().iat_window(Duration::from_secs(60));
        let ok_at = secs(1_562_262_616);
        let other = Htu::parse("https://server.example.com/other").unwrap();
        assert_eq!(
            config.check(RFC_TOKEN_PROOF, &token_request(&other), ok_at),
            Err(ProofError::Uri)
        );
        for stale in [secs(1_562_262_677), secs(1_562_262_555)] {
            assert_eq!(
                config.check(RFC_TOKEN_PROOF, &token_request(&htu), stale),
                Err(ProofError::Time)
            );
        }
        // The same header and claims with another signature.
        let (signed, _) = RFC_TOKEN_PROOF.rsplit_once('.').unwrap();
        let forged = format!("{signed}.{}", URL_SAFE_NO_PAD.encode([7u8; 64]));
        assert_eq!(
            config.check(&forged, &token_request(&htu), ok_at),
            Err(ProofError::Signature)
        );
        // Only ES256 accepted? Then yes; only EdDSA? Then no.
        let eddsa = DpopConfig::default().algorithms([DpopAlgorithm::EdDSA]);
        assert_eq!(
            eddsa.check(RFC_TOKEN_PROOF, &token_request(&htu), ok_at),
            Err(ProofError::Algorithm)
        );
    }

    /// The RFC proof with its header replaced by `header` (the signature no longer matches,
    /// but every one of these is refused before the signature is looked at).
    fn with_header(header: serde_json::Value) -> String {
        let (_, rest) = RFC_TOKEN_PROOF.split_once('.').unwrap();
        format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()))
    }

    #[test]
    fn refuses_headers_a_dpop_proof_may_not_have() {
        let htu = Htu::parse("https://server.example.com/token").unwrap();
        let now = secs(1_562_262_616);
        let config = DpopConfig::default();
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256",
            "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
            "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
        });
        let mut private = jwk.clone();
        private["d"] = "ZXZpbA".into();
        let cases = [
            (
                serde_json::json!({"typ": "dpop+jwt", "alg": "none", "jwk": jwk}),
                ProofError::Algorithm,
            ),
            (
                serde_json::json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": jwk}),
                ProofError::Algorithm,
            ),
            (
                serde_json::json!({"typ": "dpop+jwt", "alg": "ES512", "jwk": jwk}),
                ProofError::Algorithm,
            ),
            (
                serde_json::json!({"typ": "JWT", "alg": "ES256", "jwk": jwk}),
                ProofError::Type,
            ),
            (
                serde_json::json!({"alg": "ES256", "jwk": jwk}),
                ProofError::Malformed,
            ),
            (
                serde_json::json!({"typ": "dpop+jwt", "alg": "ES256"}),
                ProofError::Malformed,
            ),
            (
                serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": private}),
                ProofError::Key,
            ),
            (
                serde_json::json!({"typ": "dpop+jwt", "alg": "ES384", "jwk": jwk}),
                ProofError::Key,
            ),
            (
                serde_json::json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk}),
                ProofError::Key,
            ),
            (
                serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": {"kty": "oct", "k": "c2VjcmV0"}}),
                ProofError::Key,
            ),
            (
                serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk, "crit": ["b64"]}),
                ProofError::Malformed,
            ),
        ];
        for (header, want) in cases {
            assert_eq!(
                config.check(&with_header(header.clone()), &token_request(&htu), now),
                Err(want),
                "{header}"
            );
        }
        // `application/dpop+jwt` is the same media type.
        let same = with_header(
            serde_json::json!({"typ": "application/DPoP+JWT", "alg": "ES256", "jwk": jwk}),
        );
        assert_eq!(
            config.check(&same, &token_request(&htu), now),
            Err(ProofError::Signature),
            "got past the typ check to the signature"
        );
    }

    #[test]
    fn refuses_what_is_not_a_compact_jws() {
        let htu = Htu::parse("https://server.example.com/token").unwrap();
        let now = secs(1_562_262_616);
        let config = DpopConfig::default();
        let long = "a".repeat(MAX_PROOF_BYTES + 1);
        for bad in ["", "a.b", "a.b.c.d", "..", "a..c", "!!.??.**", &long] {
            assert_eq!(
                config.check(bad, &token_request(&htu), now),
                Err(ProofError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let t = thumbprint(&[("e", "AQAB"), ("kty", "RSA"), ("n", n)]);
        assert_eq!(t.to_string(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn rfc9449_example_key_thumbprint() {
        // The key of RFC 9449 figure 4; its thumbprint is the jkt of figure 9.
        let t = thumbprint(&[
            ("crv", "P-256"),
            ("kty", "EC"),
            ("x", "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs"),
            ("y", "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA"),
        ]);
        assert_eq!(t.to_string(), "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I");
    }

    #[test]
    fn rfc9449_example_ath() {
        // RFC 9449 figures 13 and 14.
        assert!(access_token_hash_matches(
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo",
            "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
        ));
        assert!(!access_token_hash_matches(
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo",
            "another-token"
        ));
        assert!(!access_token_hash_matches("short", "x"));
    }
}
