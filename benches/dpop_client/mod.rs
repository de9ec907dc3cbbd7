//! What the DPoP benchmarks share: a client key that signs proofs (hand-assembled compact JWS,
//! p256 0.13 / ed25519-dalek 2, as in `tests/dpop.rs`), and a token obtained through the
//! flow's own endpoints, in memory.

#![allow(dead_code)] // each benchmark uses part of it

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tower::{service_fn, Layer, ServiceExt};
use tower_device_flow::{BasicLogin, Client, DeviceFlow, DeviceFlowBuilder, MemoryStore, Scope};

pub const USERS: [(&str, &str); 1] = [("alice", "alice-password")];

/// A DPoP client key.
pub enum Key {
    Es256(p256_client::ecdsa::SigningKey),
    Ed25519(ed25519_client::SigningKey),
}

impl Key {
    pub fn es256() -> Self {
        Key::Es256(p256_client::ecdsa::SigningKey::random(
            &mut rand_core::OsRng,
        ))
    }

    pub fn ed25519() -> Self {
        Key::Ed25519(ed25519_client::SigningKey::generate(&mut rand_core::OsRng))
    }

    pub fn alg(&self) -> &'static str {
        match self {
            Key::Es256(_) => "ES256",
            Key::Ed25519(_) => "EdDSA",
        }
    }

    fn jwk(&self) -> Value {
        match self {
            Key::Es256(k) => {
                let p = k.verifying_key().to_encoded_point(false);
                json!({"kty": "EC", "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(p.x().expect("x")),
                    "y": URL_SAFE_NO_PAD.encode(p.y().expect("y"))})
            }
            Key::Ed25519(k) => json!({"kty": "OKP", "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(k.verifying_key().as_bytes())}),
        }
    }

    fn sign(&self, input: &[u8]) -> Vec<u8> {
        match self {
            Key::Es256(k) => {
                use p256_client::ecdsa::signature::Signer;
                let sig: p256_client::ecdsa::Signature = k.sign(input);
                sig.to_bytes().to_vec()
            }
            Key::Ed25519(k) => {
                use ed25519_client::Signer;
                k.sign(input).to_bytes().to_vec()
            }
        }
    }

    /// A fresh proof for `htm` `htu`, with `ath` of `token` if given, made now.
    pub fn proof(&self, htm: &str, htu: &str, token: Option<&str>) -> String {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let jti = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
        let mut claims = json!({"jti": jti, "htm": htm, "htu": htu, "iat": iat});
        if let Some(t) = token {
            claims["ath"] = URL_SAFE_NO_PAD.encode(Sha256::digest(t.as_bytes())).into();
        }
        let header = json!({"typ": "dpop+jwt", "alg": self.alg(), "jwk": self.jwk()});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = URL_SAFE_NO_PAD.encode(self.sign(input.as_bytes()));
        format!("{input}.{sig}")
    }
}

/// A flow builder on a store with the demo's public client and alice.
pub fn builder(issuer: &str) -> DeviceFlowBuilder<MemoryStore> {
    let scopes = Scope::parse("profile email").expect("scope");
    let store = MemoryStore::builder()
        .client(Client::public("demo-device", scopes))
        .build();
    DeviceFlow::builder(store)
        .issuer(issuer)
        .end_user(BasicLogin::users("device", USERS))
        .interval(std::time::Duration::ZERO)
}

async fn post(
    flow: &DeviceFlow<MemoryStore>,
    path: &str,
    body: &str,
    headers: &[(&str, String)],
) -> (StatusCode, Value) {
    let app = flow
        .endpoints_layer()
        .layer(service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }));
    let mut req = Request::post(path).header("content-type", "application/x-www-form-urlencoded");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let res = app
        .oneshot(req.body(Full::from(body.to_owned())).expect("request"))
        .await
        .expect("infallible");
    let status = res.status();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// An access token of alice for the public client, bound to `key` if given.
pub async fn token(flow: &DeviceFlow<MemoryStore>, key: Option<&Key>) -> String {
    let (status, codes) = post(
        flow,
        "/oauth/device_authorization",
        "client_id=demo-device",
        &[],
    )
    .await;
    assert_eq!(status, 200, "{codes}");
    let user_code = codes["user_code"].as_str().expect("user_code");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:alice-password")
    );
    let (status, _) = post(
        flow,
        "/device",
        &format!("user_code={user_code}&decision=approve"),
        &[("authorization", basic)],
    )
    .await;
    assert_eq!(status, 200);
    let body = format!(
        "grant_type=urn:ietf:params:oauth:grant-type:device_code&client_id=demo-device&device_code={}",
        codes["device_code"].as_str().expect("device_code")
    );
    let headers: Vec<(&str, String)> = key
        .map(|k| {
            (
                "dpop",
                k.proof("POST", &format!("{}/oauth/token", flow.issuer()), None),
            )
        })
        .into_iter()
        .collect();
    let (status, tokens) = post(flow, "/oauth/token", &body, &headers).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(
        tokens["token_type"],
        if key.is_some() { "DPoP" } else { "Bearer" }
    );
    tokens["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}
