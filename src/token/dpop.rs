//! DPoP at the token endpoint (RFC 9449 5, 8): checks the request's proof, claims it once in the
//! store, and says which key the new tokens are bound to.

use http::{HeaderMap, HeaderValue, Method, Response};

use crate::codes::Thumbprint;
use crate::config::Shared;
use crate::error::OAuthError;
use crate::response::OAuthBody;
use crate::store::{Client, Store};

/// What DPoP makes of one token request.
#[derive(Default)]
pub(super) struct Pop {
    /// The key the new tokens are bound to, if the request proved possession of one.
    pub(super) jkt: Option<Thumbprint>,
    /// The nonce to hand out with the answer (when nonces are on and the request had a proof).
    next_nonce: Option<String>,
}

impl Pop {
    /// The answer, with a `DPoP-Nonce` for the next proof if there is one to give (RFC 9449
    /// 8.2).
    pub(super) fn answer(
        self,
        result: Result<Response<OAuthBody>, OAuthError>,
    ) -> Result<Response<OAuthBody>, OAuthError> {
        let Some(nonce) = self.next_nonce else {
            return result;
        };
        match result {
            Ok(mut res) => {
                if let Ok(v) = HeaderValue::try_from(nonce) {
                    res.headers_mut().insert("dpop-nonce", v);
                }
                Ok(res)
            }
            Err(e) => Err(e.with_dpop_nonce(nonce)),
        }
    }
}

/// The DPoP verdict on a token request of `client`.
#[cfg(feature = "dpop")]
pub(super) async fn check<S: Store>(
    shared: &Shared<S>,
    method: &Method,
    headers: &HeaderMap,
    client: &Client,
) -> Result<Pop, OAuthError> {
    use crate::dpop::{proof_header, DpopPolicy, Htu, ProofError, ProofRequest};
    use crate::error::ErrorCode;

    let required = client.dpop() == DpopPolicy::Required;
    let Some(config) = &shared.config.dpop else {
        if required {
            return Err(OAuthError::invalid_request(
                "this client must use DPoP, which this server has turned off",
            ));
        }
        return Ok(Pop::default());
    };
    let now = shared.clock.now();
    let refuse = |e: ProofError| {
        let error = OAuthError::new(e.code(), e.description());
        match config.nonce_issuer() {
            Some(nonces) => error.with_dpop_nonce(nonces.issue(now)),
            None => error,
        }
    };
    let Some(proof) = proof_header(headers).map_err(refuse)? else {
        // RFC 9449 5.2: a client registered as always using DPoP is refused without a proof.
        return if required {
            Err(refuse(ProofError::Missing))
        } else {
            Ok(Pop::default())
        };
    };
    // The token endpoint's own URL, as the metadata publishes it.
    let htu = Htu::parse(&format!(
        "{}{}",
        shared.config.issuer, shared.config.paths.token
    ))
    .ok_or_else(|| {
        OAuthError::new(
            ErrorCode::ServerError,
            "the issuer is not an http(s) URL: DPoP proofs cannot be checked",
        )
    })?;
    let request = ProofRequest {
        method: method.as_str(),
        htu: &htu,
        access_token: None,
    };
    let proof = config.check(proof, &request, now).map_err(refuse)?;
    if !shared
        .store
        .claim_once(proof.replay_key(), proof.replay_until(), now)
        .await?
    {
        tracing::warn!(
            security_event = "dpop_proof_replay",
            client_id = client.id().as_str(),
            "a DPoP proof was presented again at the token endpoint"
        );
        return Err(refuse(ProofError::Replayed));
    }
    Ok(Pop {
        jkt: Some(*proof.jkt()),
        next_nonce: config.nonce_issuer().map(|n| n.issue(now)),
    })
}

/// Without the `dpop` feature, proofs are ignored (RFC 9449 is unknown to this server).
#[cfg(not(feature = "dpop"))]
pub(super) async fn check<S: Store>(
    _shared: &Shared<S>,
    _method: &Method,
    _headers: &HeaderMap,
    _client: &Client,
) -> Result<Pop, OAuthError> {
    Ok(Pop::default())
}
