//! The core banking system as the API sees it: the one simulator of a
//! system we do not have, for development and tests. It answers a few
//! read-only endpoints with stable data, and can be made slow, failing or
//! silent to exercise the API's protection of the core.
//!
//! Endpoints:
//! - `GET /health`
//! - `GET /customers/{ref}` and `GET /accounts/{id}/balance`
//! - `POST /transfers` (echoes the body with an id)
//! - `GET /_sim/requests`: the last 100 requests received (method, path,
//!   headers), so tests can check what the API forwarded.
//! - `GET /_sim/stats`: requests received, in flight now, and the most in
//!   flight at once (what the API let through to the core).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::sync::Mutex;

/// Simulates the core banking system.
#[derive(Debug, Clone, Parser)]
struct Args {
    /// Address to listen on (port 0 picks one; printed as `Listening on http://…`).
    #[arg(long, default_value = "127.0.0.1:3999")]
    listen: std::net::SocketAddr,
    /// Delay before every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Answer 503 to every Nth request (0: never; 1: an outage).
    #[arg(long, default_value_t = 0)]
    fail_every: u64,
    /// Answer 503 to this fraction of requests, at random (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Accept connections but never answer (a hung core).
    #[arg(long)]
    hang: bool,
}

struct Sim {
    args: Args,
    seen: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    log: Mutex<VecDeque<serde_json::Value>>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("Listening on http://{}", listener.local_addr()?);
    let sim = Arc::new(Sim {
        args,
        seen: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        max_in_flight: AtomicU64::new(0),
        log: Mutex::new(VecDeque::new()),
    });
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let sim = sim.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let sim = sim.clone();
                async move { Ok::<_, Infallible>(sim.answer(req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Counts a request in flight for as long as it lives.
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A cheap pseudo-random fraction in [0, 1) from the request count.
fn fraction(n: u64) -> f64 {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

impl Sim {
    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        if path == "/_sim/requests" {
            let log: Vec<_> = self.log.lock().await.iter().cloned().collect();
            return json(StatusCode::OK, serde_json::Value::Array(log));
        }
        if path == "/_sim/stats" {
            return json(
                StatusCode::OK,
                serde_json::json!({
                    "received": self.seen.load(Ordering::Relaxed),
                    "in_flight": self.in_flight.load(Ordering::Relaxed),
                    "max_in_flight": self.max_in_flight.load(Ordering::Relaxed),
                }),
            );
        }
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
        let _in_flight = InFlight(&self.in_flight);
        let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        let headers: serde_json::Map<String, serde_json::Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        let query = req.uri().query().unwrap_or("").to_string();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        {
            let mut log = self.log.lock().await;
            log.push_back(serde_json::json!({
                "method": method.as_str(), "path": path, "query": query, "headers": headers,
            }));
            if log.len() > 100 {
                log.pop_front();
            }
        }
        if self.args.hang {
            std::future::pending::<()>().await;
        }
        if self.args.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.args.latency_ms)).await;
        }
        if (self.args.fail_every > 0 && n.is_multiple_of(self.args.fail_every))
            || fraction(n) < self.args.error_rate
        {
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": "core maintenance"}),
            );
        }
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (&method, segments.as_slice()) {
            (&Method::GET, ["health"]) => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
            (&Method::GET, ["customers", customer]) => json(
                StatusCode::OK,
                serde_json::json!({"customer_ref": customer, "name": "홍길동", "tier": "standard"}),
            ),
            (&Method::GET, ["accounts", account, "balance"]) => json(
                StatusCode::OK,
                serde_json::json!({"account": account, "balance": "1250000", "currency": "KRW"}),
            ),
            (&Method::POST, ["transfers"]) => {
                let request: serde_json::Value =
                    serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                json(
                    StatusCode::CREATED,
                    serde_json::json!({"id": format!("tr-{n}"), "request": request, "status": "accepted"}),
                )
            }
            _ => json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "no such core endpoint"}),
            ),
        }
    }
}
