//! HTTP load benchmark of DPoP (RFC 9449): the demo's construction (the endpoints layer in
//! front of `/api/public`, unprotected, and `/api/me`, guarded) over real loopback
//! connections, with the guarded route called with a bearer token and with DPoP-bound tokens
//! (ES256 and EdDSA proofs).
//!
//! ```text
//! cargo bench --bench dpop_http
//! cargo bench --features ring --bench dpop_http   # ES256 proofs checked by ring
//! BENCH_CONNS=32 BENCH_SECS=3 BENCH_WARMUP_SECS=1 BENCH_ROUNDS=3 BENCH_PROOFS=150000 cargo bench --bench dpop_http
//! ```
//!
//! Scenarios: (P) `GET /api/public`, the denominator; (B) `GET /api/me` with a bearer token;
//! (D-ES256) and (D-EdDSA) `GET /api/me` with a DPoP-bound token and a fresh proof per
//! request, each checked in full (signature, claims, `ath`) and claimed once in the store.
//!
//! Every proof is accepted once, so the load generator cannot reuse them, and signing them
//! while the server runs would put the client's cost into the figure. So each DPoP round first
//! signs `BENCH_PROOFS` proofs (default 150 000, on every core, not timed), then sends them;
//! a round that runs out stops early and says so, and its requests/s are counted up to then.
//! The server's `iat` window is one hour for the run, so proofs signed before a round are
//! still fresh (the window does not change what a check costs).
//!
//! `BENCH_CONNS` keep-alive connections (default 32) each send one request at a time for
//! `BENCH_WARMUP_SECS` (1, not recorded) then `BENCH_SECS` (3); `BENCH_ROUNDS` (3) rounds,
//! interleaved; the median round's requests/s and the process CPU time per request (server
//! and load generator) are reported. Only 127.0.0.1 is contacted; every loop ends by its
//! deadline or when its proofs run out.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tower::{service_fn, Layer, ServiceExt};
use tower_device_flow::dpop::DpopConfig;
use tower_device_flow::TokenInfo;

mod dpop_client;
use dpop_client::Key;

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

struct Config {
    conns: usize,
    secs: f64,
    warmup_secs: f64,
    rounds: usize,
    proofs: usize,
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(value.to_string())));
    *res.status_mut() = status;
    res.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    res
}

/// The demo server's construction (examples/device_server.rs), on a fresh 127.0.0.1 port.
async fn serve(
    listener: TcpListener,
    flow: tower_device_flow::DeviceFlow<tower_device_flow::MemoryStore>,
) {
    let me = flow
        .require_oauth("profile")
        .layer(service_fn(|req: Request<Incoming>| async move {
            let body = match req.extensions().get::<TokenInfo>() {
                Some(t) => {
                    serde_json::json!({"sub": t.subject.as_str(), "scope": t.scope.as_str()})
                }
                None => serde_json::json!({}),
            };
            Ok::<_, Infallible>(json(StatusCode::OK, body))
        }));
    let api = service_fn(move |req: Request<Incoming>| {
        let me = me.clone();
        async move {
            Ok::<_, Infallible>(match req.uri().path() {
                "/api/me" => me.oneshot(req).await?.map(Either::Left),
                "/api/public" => {
                    json(StatusCode::OK, serde_json::json!({"ok": true})).map(Either::Right)
                }
                _ => json(StatusCode::NOT_FOUND, serde_json::json!({})).map(Either::Right),
            })
        }
    });
    let app = flow.endpoints_layer().layer(api);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// What every request of a scenario carries: `Authorization`, and a `DPoP` proof taken from
/// `proofs` in turn (each used once).
#[derive(Clone)]
struct Shape {
    path: &'static str,
    authorization: Option<HeaderValue>,
    proofs: Arc<[HeaderValue]>,
    next: Arc<AtomicUsize>,
}

impl Shape {
    /// The next request, or `None` once the proofs ran out.
    fn request(&self, addr: SocketAddr) -> Option<Request<Full<Bytes>>> {
        let mut req = Request::get(self.path)
            .header("host", addr.to_string())
            .body(Full::default())
            .ok()?;
        if let Some(a) = &self.authorization {
            req.headers_mut().insert("authorization", a.clone());
        }
        if !self.proofs.is_empty() {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            req.headers_mut()
                .insert("dpop", self.proofs.get(i)?.clone());
        }
        Some(req)
    }
}

struct Round {
    rps: f64,
    cpu_us: f64,
    ran_out: bool,
    unexpected: u64,
}

/// Process CPU time (all threads), from `/proc/self/task/*/schedstat`.
fn process_cpu() -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        total += stat.split(' ').next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

async fn run_round(cfg: &Config, addr: SocketAddr, shape: &Shape) -> Round {
    let record_from = Instant::now() + Duration::from_secs_f64(cfg.warmup_secs);
    let until = record_from + Duration::from_secs_f64(cfg.secs);
    let mut tasks = Vec::new();
    for _ in 0..cfg.conns {
        let shape = shape.clone();
        tasks.push(tokio::spawn(async move {
            let (mut count, mut unexpected, mut last, mut ran_out) =
                (0u64, 0u64, record_from, false);
            let Ok(stream) = TcpStream::connect(addr).await else {
                return (0, 1, last, false);
            };
            let _ = stream.set_nodelay(true);
            let Ok((mut sender, conn)) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
            else {
                return (0, 1, last, false);
            };
            tokio::spawn(async move {
                let _ = conn.await;
            });
            while Instant::now() < until {
                let Some(req) = shape.request(addr) else {
                    ran_out = true;
                    break;
                };
                if sender.ready().await.is_err() {
                    unexpected += 1;
                    break;
                }
                let Ok(res) = sender.send_request(req).await else {
                    unexpected += 1;
                    break;
                };
                let ok = res.status() == StatusCode::OK;
                let _ = res.into_body().collect().await;
                let now = Instant::now();
                if now >= record_from {
                    count += 1;
                    unexpected += u64::from(!ok);
                    last = now;
                }
            }
            (count, unexpected, last, ran_out)
        }));
    }
    // CPU from the start of recording; the warm-up is excluded.
    tokio::time::sleep_until(record_from.into()).await;
    let cpu_start = process_cpu();
    let (mut total, mut unexpected, mut end, mut ran_out) = (0u64, 0u64, record_from, false);
    for t in tasks {
        if let Ok((c, u, last, out)) = t.await {
            total += c;
            unexpected += u;
            end = end.max(last);
            ran_out |= out;
        }
    }
    let cpu_end = process_cpu();
    let elapsed = end
        .saturating_duration_since(record_from)
        .as_secs_f64()
        .max(1e-9);
    let cpu_us = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) if total > 0 => (b - a).as_secs_f64() * 1e6 / total as f64,
        _ => f64::NAN,
    };
    Round {
        rps: total as f64 / elapsed,
        cpu_us,
        ran_out,
        unexpected,
    }
}

/// `n` proofs for `GET url` with `token`, signed on every core.
fn sign_proofs(key: &Key, url: &str, token: &str, n: usize) -> Arc<[HeaderValue]> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per = n.div_ceil(threads);
    let mut out: Vec<HeaderValue> = Vec::with_capacity(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    (0..per)
                        .map(|_| {
                            HeaderValue::from_str(&key.proof("GET", url, Some(token)))
                                .expect("proof header")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            out.extend(h.join().expect("signer thread"));
        }
    });
    out.into()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: then only check
    // that every scenario answers as expected, briefly.
    let benching = std::env::args().any(|a| a == "--bench");
    let cfg = Config {
        conns: env_or("BENCH_CONNS", 32),
        secs: env_or("BENCH_SECS", if benching { 3.0 } else { 0.2 }),
        warmup_secs: env_or("BENCH_WARMUP_SECS", if benching { 1.0 } else { 0.1 }),
        rounds: env_or::<usize>("BENCH_ROUNDS", if benching { 3 } else { 1 }).max(1),
        proofs: env_or("BENCH_PROOFS", if benching { 150_000 } else { 2_000 }),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let issuer = format!("http://{addr}");
        let flow = dpop_client::builder(&issuer)
            .dpop(Some(DpopConfig::default().iat_window(Duration::from_secs(3600))))
            .build();
        let keys = [Key::es256(), Key::ed25519()];
        let bearer = dpop_client::token(&flow, None).await;
        let mut bound = Vec::new();
        for k in &keys {
            bound.push(dpop_client::token(&flow, Some(k)).await);
        }
        serve(listener, flow).await;

        let plain = |path, authorization: Option<String>| Shape {
            path,
            authorization: authorization.map(|a| HeaderValue::from_str(&a).expect("header")),
            proofs: Arc::from(Vec::new()),
            next: Arc::new(AtomicUsize::new(0)),
        };
        let names = ["(P) GET /api/public, unprotected", "(B) GET /api/me, bearer token", "(D-ES256) GET /api/me, DPoP ES256", "(D-EdDSA) GET /api/me, DPoP EdDSA"];
        let mut rps: Vec<Vec<f64>> = vec![Vec::new(); 4];
        let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); 4];
        let mut notes = Vec::new();
        let url = format!("{issuer}/api/me");
        for round in 0..cfg.rounds {
            for s in 0..4 {
                let shape = match s {
                    0 => plain("/api/public", None),
                    1 => plain("/api/me", Some(format!("Bearer {bearer}"))),
                    _ => {
                        let (key, token) = (&keys[s - 2], &bound[s - 2]);
                        Shape {
                            proofs: sign_proofs(key, &url, token, cfg.proofs),
                            ..plain("/api/me", Some(format!("DPoP {token}")))
                        }
                    }
                };
                let r = run_round(&cfg, addr, &shape).await;
                if r.unexpected > 0 {
                    panic!("{}: {} unexpected answers in round {round}", names[s], r.unexpected);
                }
                if r.ran_out {
                    notes.push(format!(
                        "{} round {round}: the {} proofs ran out before the end (raise BENCH_PROOFS)",
                        names[s], cfg.proofs
                    ));
                }
                rps[s].push(r.rps);
                cpu[s].push(r.cpu_us);
            }
        }
        let (base_rps, base_cpu) = (median(&mut rps[0].clone()), median(&mut cpu[0].clone()));
        println!("\n| scenario | req/s (median of {}) | CPU µs/req | req/s ÷ (P) | (P) CPU ÷ CPU |", cfg.rounds);
        println!("|---|---:|---:|---:|---:|");
        for s in 0..4 {
            let (r, c) = (median(&mut rps[s]), median(&mut cpu[s]));
            println!(
                "| {} | {r:.0} | {c:.1} | {:.3} | {:.3} |",
                names[s],
                r / base_rps,
                base_cpu / c
            );
        }
        println!("\nconnections {}, {} s per round after {} s warm-up, {} rounds", cfg.conns, cfg.secs, cfg.warmup_secs, cfg.rounds);
        // Which backend checked the ES256 proofs (the feature `ring`, or RustCrypto).
        let backend = if cfg!(feature = "ring") { "ring" } else { "RustCrypto" };
        println!("ES256 proofs checked by {backend}; EdDSA by ed25519-dalek");
        for n in notes {
            println!("note: {n}");
        }
    });
}
