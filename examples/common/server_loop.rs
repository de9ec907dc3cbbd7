//! A hyper 1.x server loop fit for the internet, shared by the examples (`#[path]` module).
//!
//! What a bare `loop { accept; spawn(serve_connection) }` lacks, and how this loop gets it,
//! with hyper's own settings wherever they exist:
//!
//! - **Slow or endless request heads** (slowloris): `http1::Builder::header_read_timeout`, on
//!   hyper's `TokioTimer`. Hyper starts that timer whenever the connection waits for a request
//!   head, which includes the wait for the next request on a kept-alive connection: so the same
//!   setting closes **idle keep-alive connections**. `max_buf_size` bounds the memory one
//!   connection's head can take (hyper's default is about 400 KB) and `max_headers` their
//!   number.
//! - **Slow request bodies**: the flow's own `body_read_timeout` (408).
//! - **Too many connections**: a Tokio semaphore permit is held per connection; at the cap the
//!   loop stops accepting, and new connections wait in the kernel's backlog instead of each
//!   taking memory and a file handle.
//! - **Accept errors** (out of file handles above all): retrying at once spins at 100 % CPU
//!   and floods the log, so the loop waits, doubling from 5 ms to 1 s while the errors last,
//!   and logs at most one line per 10 s with the count.
//! - **Where requests come from**: each request gets the TCP peer address as a `ClientAddr`
//!   extension, which the flow's per-source limits read.
#![allow(dead_code)] // each example uses part of it

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::Service;
use tower_device_flow::ClientAddr;

/// The loop's settings.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// Time to receive a request head, and to wait idle for the next one (default 10 s).
    pub header_read_timeout: Duration,
    /// Open connections at most (default 4 096).
    pub max_connections: usize,
    /// Largest request head in bytes (default 16 KiB; hyper's minimum is 8 KiB).
    pub max_head_bytes: usize,
    /// Most header fields in a request (default 64).
    pub max_headers: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_head_bytes: 16 * 1024,
            max_headers: 64,
        }
    }
}

/// The hyper connection settings of the loop.
pub fn http1_builder(limits: &ServerLimits) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_head_bytes.max(8192))
        .max_headers(limits.max_headers);
    b
}

/// Logs accept errors at most once per period, with how many there were.
struct ErrorLog {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorLog {
    fn error(&mut self, e: &io::Error) {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < self.period => self.suppressed += 1,
            _ => {
                if self.suppressed > 0 {
                    eprintln!(
                        "accept failed: {e} ({} more since the last message; backing off)",
                        self.suppressed
                    );
                } else {
                    eprintln!("accept failed: {e} (backing off)");
                }
                self.last = Some(now);
                self.suppressed = 0;
            }
        }
    }
}

/// True for an accept error that concerns only the one connection (retry at once).
fn connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Serves `app` on `listener` for ever, with the protections above.
pub async fn serve<A, B>(listener: TcpListener, app: A, limits: ServerLimits)
where
    A: Service<Request<Incoming>, Response = http::Response<B>> + Clone + Send + 'static,
    A::Future: Send + 'static,
    A::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let builder = http1_builder(&limits);
    let mut log = ErrorLog {
        period: Duration::from_secs(10),
        last: None,
        suppressed: 0,
    };
    let mut backoff = Duration::ZERO;
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return; // the semaphore is never closed
        };
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => {
                backoff = Duration::ZERO;
                conn
            }
            Err(e) if connection_error(&e) => continue,
            Err(e) => {
                // Out of file handles (EMFILE/ENFILE) or memory: the error repeats until
                // another connection closes, so wait instead of spinning.
                backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                log.error(&e);
                drop(permit);
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = with_client_addr(app.clone(), peer);
        let builder = builder.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = builder
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .await;
        });
    }
}

/// `app` with the peer address in every request's extensions.
#[derive(Clone, Debug)]
pub struct WithClientAddr<A> {
    inner: A,
    peer: SocketAddr,
}

/// Wraps `app` so every request carries `peer` as its [`ClientAddr`].
pub fn with_client_addr<A>(app: A, peer: SocketAddr) -> WithClientAddr<A> {
    WithClientAddr { inner: app, peer }
}

impl<A, B> Service<Request<B>> for WithClientAddr<A>
where
    A: Service<Request<B>>,
{
    type Response = A::Response;
    type Error = A::Error;
    type Future = A::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.extensions_mut().insert(ClientAddr(self.peer));
        self.inner.call(req)
    }
}
