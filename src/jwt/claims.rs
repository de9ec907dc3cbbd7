//! The claims of an RFC 9068 JWT access token, written from a [`TokenInfo`] and read back.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::clock::Timestamp;
use crate::codes::Thumbprint;
use crate::ids::{Audience, ClientId, GrantId, Subject};
use crate::scope::Scope;
use crate::store::TokenInfo;

/// The media type of RFC 9068 access tokens, as the `typ` header carries it.
pub(crate) const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// RFC 9068 2.2 claims, plus this server's `grant_id` and RFC 9449 `cnf`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AccessTokenClaims {
    pub(crate) iss: String,
    pub(crate) sub: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "aud_out",
        deserialize_with = "aud_in"
    )]
    pub(crate) aud: Option<Audience>,
    pub(crate) exp: u64,
    pub(crate) iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) nbf: Option<u64>,
    pub(crate) jti: String,
    pub(crate) client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) grant_id: Option<GrantId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cnf: Option<Confirmation>,
}

/// RFC 7800 confirmation: the DPoP key thumbprint (RFC 9449 6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Confirmation {
    pub(crate) jkt: Thumbprint,
}

impl AccessTokenClaims {
    /// The claims of an access token standing for `info`, issued by `issuer` at `now`.
    pub(crate) fn new(issuer: &str, info: &TokenInfo, jti: String, now: Timestamp) -> Self {
        AccessTokenClaims {
            iss: issuer.to_owned(),
            sub: info.subject.as_str().to_owned(),
            aud: info.audience.clone(),
            exp: info.expires_at.as_unix_secs(),
            iat: now.as_unix_secs(),
            nbf: None,
            jti,
            client_id: info.client_id.as_str().to_owned(),
            scope: (!info.scope.is_empty()).then(|| info.scope.as_str().to_owned()),
            grant_id: info.grant_id,
            cnf: info.cnf.map(|jkt| Confirmation { jkt }),
        }
    }

    /// What the token stands for, or `None` if its scope is not valid scope syntax. The token
    /// is valid until `exp` plus `leeway` seconds.
    pub(crate) fn into_token_info(self, leeway: u64) -> Option<TokenInfo> {
        let scope = match &self.scope {
            Some(s) => Scope::parse(s).ok()?,
            None => Scope::default(),
        };
        let expires_at =
            Timestamp::from_unix_millis(self.exp.saturating_add(leeway).saturating_mul(1000));
        Some(
            TokenInfo::new(
                Subject::new(&self.sub),
                ClientId::new(&self.client_id),
                scope,
                expires_at,
            )
            .with_grant_id(self.grant_id)
            .with_audience(self.aud)
            .with_cnf(self.cnf.map(|c| c.jkt)),
        )
    }
}

/// One resource as a string, several as an array (RFC 7519 4.1.3).
fn aud_out<S: Serializer>(aud: &Option<Audience>, s: S) -> Result<S::Ok, S::Error> {
    match aud {
        Some(a) if a.iter().count() == 1 => s.serialize_str(a.as_str()),
        Some(a) => s.collect_seq(a.iter()),
        None => s.serialize_none(),
    }
}

fn aud_in<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Audience>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let resources = match OneOrMany::deserialize(d)? {
        OneOrMany::One(r) => vec![r],
        OneOrMany::Many(v) => v,
    };
    Audience::from_resources(resources)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_round_trip_with_one_or_many_audiences() {
        let now = Timestamp::from_unix_millis(1_700_000_000_000);
        for aud in [
            Some(Audience::from_resources(["https://api"]).unwrap()),
            Some(Audience::from_resources(["https://a", "https://b"]).unwrap()),
            None,
        ] {
            let info = TokenInfo::new(
                Subject::new("alice"),
                ClientId::new("tv"),
                Scope::parse("profile email").unwrap(),
                now.saturating_add(std::time::Duration::from_secs(60)),
            )
            .with_grant_id(Some(GrantId::from_bytes([7; 16])))
            .with_audience(aud.clone())
            .with_cnf(Some(Thumbprint::from_bytes([1; 32])));
            let claims = AccessTokenClaims::new("https://as", &info, "j".into(), now);
            let json = serde_json::to_value(&claims).unwrap();
            match &aud {
                Some(a) if a.iter().count() == 1 => assert!(json["aud"].is_string()),
                Some(_) => assert!(json["aud"].is_array()),
                None => assert!(json.get("aud").is_none()),
            }
            assert_eq!(
                json["cnf"]["jkt"],
                Thumbprint::from_bytes([1; 32]).to_string()
            );
            let back: AccessTokenClaims = serde_json::from_value(json).unwrap();
            assert_eq!(back.clone().into_token_info(0).unwrap(), info.clone());
            // The leeway lengthens the accepted life, in whole seconds.
            let lenient = back.into_token_info(5).unwrap();
            assert_eq!(
                lenient.expires_at,
                info.expires_at
                    .saturating_add(std::time::Duration::from_secs(5))
            );
        }
    }

    #[test]
    fn bad_scope_or_audience_is_no_token() {
        let json = serde_json::json!({
            "iss": "https://as", "sub": "a", "exp": 1, "iat": 0, "jti": "j",
            "client_id": "c", "scope": "bad\"scope"
        });
        let claims: AccessTokenClaims = serde_json::from_value(json).unwrap();
        assert!(claims.into_token_info(0).is_none());
        let json = serde_json::json!({
            "iss": "https://as", "sub": "a", "exp": 1, "iat": 0, "jti": "j",
            "client_id": "c", "aud": "not a uri"
        });
        assert!(serde_json::from_value::<AccessTokenClaims>(json).is_err());
    }
}
