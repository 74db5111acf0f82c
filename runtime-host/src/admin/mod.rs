//! The admin listener (`[admin] listen`): Prometheus metrics and the health
//! checks of a load balancer, on plain HTTP/1.1 and a private address.
//!
//! It never runs guest code, takes no instance slot and is not held to the
//! serving listeners' connection caps, so it answers while the app is
//! saturated and while the host drains.
//!
//! - `GET /metrics`: every metric, Prometheus text format.
//! - `GET /ready`: 200 `ready` while the host serves; 503 with the reason
//!   while it starts (before the preflight passed) and from the moment a
//!   drain starts, so a load balancer stops sending first.
//! - `GET /live`: 200 while the runtime turns.

pub mod metrics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::dispatch::Dispatcher;
use crate::policy::Destinations;

pub use self::metrics::HostMetrics;

/// How long an admin client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

/// Where the host is in its life, as `/ready` tells it.
#[derive(Debug)]
pub struct Readiness(AtomicU8);

impl Default for Readiness {
    fn default() -> Self {
        Self(AtomicU8::new(STARTING))
    }
}

impl Readiness {
    /// The preflight passed and the listeners accept.
    pub fn set_ready(&self) {
        self.0.store(READY, Ordering::Relaxed);
    }

    /// A drain started: no new traffic should come.
    pub fn set_draining(&self) {
        self.0.store(DRAINING, Ordering::Relaxed);
    }

    /// Whether `/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed) == READY
    }

    fn answer(&self) -> (StatusCode, &'static str) {
        match self.0.load(Ordering::Relaxed) {
            READY => (StatusCode::OK, "ready\n"),
            DRAINING => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
        }
    }
}

/// What the admin routes read.
struct State {
    metrics: Arc<HostMetrics>,
    dispatcher: Arc<Dispatcher>,
    destinations: Arc<Destinations>,
    readiness: Arc<Readiness>,
}

/// Serves the admin routes on `listener` in the background for the
/// process's life. Returns its address.
pub async fn start(
    listener: TcpListener,
    metrics: Arc<HostMetrics>,
    dispatcher: Arc<Dispatcher>,
    destinations: Arc<Destinations>,
    readiness: Arc<Readiness>,
) -> anyhow::Result<SocketAddr> {
    let local = listener.local_addr()?;
    let state = Arc::new(State {
        metrics,
        dispatcher,
        destinations,
        readiness,
    });
    tokio::spawn(accept_loop(listener, state));
    Ok(local)
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (builder, state) = (builder.clone(), state.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, &req)) }
            });
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

fn route(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/ready" | "/live") {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/metrics" => {
            let body = state.metrics.encode(
                state.dispatcher.slots(),
                &state.destinations,
                state.readiness.is_ready(),
            );
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            response
        }
        "/ready" => {
            let (status, body) = state.readiness.answer();
            text(status, body)
        }
        _ => text(StatusCode::OK, "live\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
