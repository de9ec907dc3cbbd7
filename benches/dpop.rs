//! Criterion benchmarks of DPoP (RFC 9449): the proof check alone (ES256, EdDSA), `htu`
//! normalization, and one call of the bearer layer with a bearer token and with a DPoP-bound
//! token and a fresh proof (replay claim in the `MemoryStore` included).
//!
//! ```text
//! cargo bench --bench dpop
//! cargo bench --features ring --bench dpop   # ES256 proofs checked by ring
//! ```
//!
//! Proofs are signed outside the timed part. The layer's futures complete on their first poll
//! with `MemoryStore`, so they are driven by a poll-once executor, as in `benches/micro.rs`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{Request, Response};
use http_body_util::Full;
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_device_flow::dpop::{DpopConfig, Htu, ProofRequest};
use tower_device_flow::{Clock, SystemClock};

mod dpop_client;
use dpop_client::Key;

const ISSUER: &str = "http://127.0.0.1:8080";

struct NoopWake;

impl Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}

fn poll_once<F: Future>(f: F) -> F::Output {
    static WAKER: OnceLock<Waker> = OnceLock::new();
    let waker = WAKER.get_or_init(|| Waker::from(Arc::new(NoopWake)));
    let mut cx = Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("not ready on the first poll"),
    }
}

fn proof_check(c: &mut Criterion) {
    let config = DpopConfig::default();
    let htu = Htu::parse(&format!("{ISSUER}/api/me")).expect("htu");
    let token = "an-access-token-of-43-characters-aaaaaaaaaa";
    let mut g = c.benchmark_group("dpop");
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for key in [Key::es256(), Key::ed25519()] {
        // `check` leaves the replay claim to its caller, so one proof can be checked again and
        // again: what is timed is parsing, the claims and the signature.
        let proof = key.proof("GET", htu.as_str(), Some(token));
        let request = ProofRequest {
            method: "GET",
            htu: &htu,
            access_token: Some(token),
        };
        g.bench_function(format!("check_{}", key.alg()), |b| {
            b.iter(|| {
                let now = SystemClock.now();
                config.check(&proof, &request, now).expect("valid proof")
            })
        });
    }
    g.bench_function("htu_parse", |b| {
        b.iter(|| Htu::parse("https://API.example.com:443/a/./b/%7Euser?q=1").expect("htu"))
    });
    g.finish();
}

fn layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let flow = dpop_client::builder(ISSUER).build();
    let keys = [Key::es256(), Key::ed25519()];
    let bearer = rt.block_on(dpop_client::token(&flow, None));
    let bound: Vec<String> = keys
        .iter()
        .map(|k| rt.block_on(dpop_client::token(&flow, Some(k))))
        .collect();
    let passthrough = service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
    });
    let guarded = flow.require_oauth("profile").layer(passthrough);
    let request = |scheme: &str, token: &str, proof: Option<String>| {
        let mut req = Request::get("/api/me").header("authorization", format!("{scheme} {token}"));
        if let Some(p) = proof {
            req = req.header("dpop", p);
        }
        req.body(Full::<Bytes>::default()).expect("request")
    };

    let mut g = c.benchmark_group("dpop_layer");
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let mut svc = guarded.clone();
    g.bench_function("bearer_token", |b| {
        b.iter_batched(
            || request("Bearer", &bearer, None),
            |req| {
                poll_once(svc.ready()).expect("ready");
                let res = poll_once(svc.call(req)).expect("infallible");
                assert_eq!(res.status(), 200);
            },
            BatchSize::SmallInput,
        )
    });
    for (key, token) in keys.iter().zip(&bound) {
        let mut svc = guarded.clone();
        let htu = format!("{ISSUER}/api/me");
        g.bench_function(format!("dpop_token_{}", key.alg()), |b| {
            b.iter_batched(
                // A fresh proof per call (each is accepted once), signed outside the timing.
                || request("DPoP", token, Some(key.proof("GET", &htu, Some(token)))),
                |req| {
                    poll_once(svc.ready()).expect("ready");
                    let res = poll_once(svc.call(req)).expect("infallible");
                    assert_eq!(res.status(), 200);
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, proof_check, layer);
criterion_main!(benches);
