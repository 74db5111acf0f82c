//! The core banking system as the API sees it: the one simulator of a
//! system we do not have, for development and tests. It answers a few
//! endpoints with stable data, and can be made slow, failing, silent or
//! trickling to exercise the API's protection of the core.
//!
//! Core endpoints:
//! - `GET /health`
//! - `GET /customers/{ref}` and `GET /accounts/{id}/balance`
//! - `POST /transfers`: executes a transfer, answering 201 with
//!   `{"id": "tr-N", "request": BODY, "status": "accepted"}`. With an
//!   `Idempotency-Key` header the core deduplicates, per caller
//!   (`x-kiosk-client`): the same key with the
//!   same body gets the first answer again (same id and status) with
//!   `idempotent-replayed: true`; with another body 422; while the first is
//!   still in progress 409. A transfer answered 503 is not executed and its
//!   key is forgotten, so a retry executes. The last 10,000 keys are
//!   remembered.
//!
//! Simulator endpoints (never counted in stats, never slowed or failed):
//! - `GET /_sim/requests`: the last 100 requests received (method, path,
//!   query, headers), so tests can check what the API forwarded.
//! - `GET /_sim/stats`: `received`, `connections` accepted, `in_flight` now, `max_in_flight` at
//!   once, `transfers_executed` (not replays), `replayed`, and `by_path`
//!   (path → requests).
//! - `POST /_sim/reset-stats`: zeros the stats and answers them (not the
//!   idempotency keys; requests still in flight stay in `in_flight`, where
//!   `max_in_flight` starts again).
//! - `GET /_sim/mode`: the current mode.
//! - `POST /_sim/mode`: a JSON object with any of the mode fields below
//!   sets them and keeps the others; answers the whole mode (400 if invalid).
//!
//! Mode (flags set it at start-up; each request reads it on arrival; the
//! fields are applied in this order: hang, latency, failure, trickle):
//! - `latency_ms` / `--latency-ms N`: delay before every answer.
//! - `fail_every` / `--fail-every N`: 503 to every Nth request (1: outage).
//! - `error_rate` / `--error-rate R`: 503 to this fraction of requests.
//! - `hang` / `--hang`: never answer.
//! - `trickle_ms` / `--trickle-ms N`: status and headers at once, then the
//!   body (padded to 64 bytes) one byte every N ms.
//! - `ignore_idempotency` / `--ignore-idempotency`: every transfer
//!   executes, whatever its `Idempotency-Key`.

mod idempotency;
mod mode;
mod stats;
mod trickle;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};

use crate::idempotency::{Claim, Fingerprint, Known, Memory, Remembered};
use crate::mode::Mode;
use crate::stats::Stats;
use crate::trickle::Trickle;

/// Simulates the core banking system.
#[derive(Debug, Clone, Parser)]
struct Args {
    /// Address to listen on (port 0 picks one; printed as `Listening on http://…`).
    #[arg(long, default_value = "127.0.0.1:3999")]
    listen: std::net::SocketAddr,
    /// The initial mode (see `POST /_sim/mode`).
    #[command(flatten)]
    mode: Mode,
}

/// An answer's body: whole, or trickled.
type AnswerBody = Either<Full<Bytes>, Trickle>;

struct Sim {
    mode: RwLock<Mode>,
    stats: Arc<Stats>,
    /// Numbers transfers; never reset, so ids stay unique.
    transfers: AtomicU64,
    keys: Arc<Mutex<Memory>>,
    log: tokio::sync::Mutex<VecDeque<Value>>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("Listening on http://{}", listener.local_addr()?);
    let sim = Arc::new(Sim {
        mode: RwLock::new(args.mode),
        stats: Arc::default(),
        transfers: AtomicU64::new(0),
        keys: Arc::new(Mutex::new(Memory::new(idempotency::CAPACITY))),
        log: tokio::sync::Mutex::new(VecDeque::new()),
    });
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        sim.stats.connected();
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

fn json(status: StatusCode, value: Value) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: &str) -> Response<Bytes> {
    json(status, json!({ "error": message }))
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
    fn mode(&self) -> Mode {
        *self.mode.read().unwrap_or_else(PoisonError::into_inner)
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<AnswerBody> {
        if req.uri().path().starts_with("/_sim/") {
            return self.control(req).await.map(|b| Either::Left(Full::new(b)));
        }
        let mode = self.mode();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let (n, in_flight) = self.stats.arrive(&path);
        let headers: serde_json::Map<String, Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        // Keys are per caller (`x-kiosk-client`), as a core that audits
        // its callers keeps them: two callers may use the same key string.
        let caller = req
            .headers()
            .get("x-kiosk-client")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let key = req
            .headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(|key| format!("{caller}\u{0}{key}"));
        let query = req.uri().query().unwrap_or("").to_string();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        {
            let mut log = self.log.lock().await;
            log.push_back(json!({
                "method": method.as_str(), "path": path, "query": query, "headers": headers,
            }));
            if log.len() > 100 {
                log.pop_front();
            }
        }
        let transfer = method == Method::POST && path.trim_matches('/') == "transfers";
        // Claimed on arrival, so a second request with the key sees the
        // first one in progress for as long as the first is delayed.
        let claim = match key {
            Some(key) if transfer && !mode.ignore_idempotency => {
                Some(Claim::begin(&self.keys, &key, Fingerprint::of(&body)))
            }
            _ => None,
        };
        if mode.hang {
            std::future::pending::<()>().await;
        }
        if mode.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(mode.latency_ms)).await;
        }
        let response = if (mode.fail_every > 0 && n.is_multiple_of(mode.fail_every))
            || fraction(n) < mode.error_rate
        {
            // Not executed: dropping the claim lets a retry execute.
            error(StatusCode::SERVICE_UNAVAILABLE, "core maintenance")
        } else if transfer {
            self.transfer(&body, claim)
        } else {
            read(&method, &path)
        };
        if mode.trickle_ms > 0 {
            let every = Duration::from_millis(mode.trickle_ms);
            response.map(|b| Either::Right(Trickle::new(b, every, in_flight)))
        } else {
            response.map(|b| Either::Left(Full::new(b)))
        }
    }

    /// `POST /transfers`, deduplicated by `claim` when it has a key.
    fn transfer(&self, body: &Bytes, claim: Option<Result<Claim, Known>>) -> Response<Bytes> {
        match claim {
            None => self.execute(body),
            Some(Ok(claim)) => {
                let response = self.execute(body);
                claim.finish(Remembered {
                    status: response.status(),
                    body: response.body().clone(),
                });
                response
            }
            Some(Err(Known::Replay(answer))) => {
                self.stats.replayed();
                let mut response = Response::new(answer.body);
                *response.status_mut() = answer.status;
                let headers = response.headers_mut();
                headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
                response
            }
            Some(Err(Known::Mismatch)) => error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency key reused with another body",
            ),
            Some(Err(Known::InProgress)) => error(
                StatusCode::CONFLICT,
                "a request with this idempotency key is in progress",
            ),
        }
    }

    fn execute(&self, body: &Bytes) -> Response<Bytes> {
        self.stats.executed();
        let id = self.transfers.fetch_add(1, Ordering::Relaxed) + 1;
        let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        json(
            StatusCode::CREATED,
            json!({"id": format!("tr-{id}"), "request": request, "status": "accepted"}),
        )
    }

    /// The `/_sim/*` endpoints.
    async fn control(&self, req: Request<Incoming>) -> Response<Bytes> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        match (method, path.as_str()) {
            (_, "/_sim/requests") => {
                let log: Vec<_> = self.log.lock().await.iter().cloned().collect();
                json(StatusCode::OK, Value::Array(log))
            }
            (_, "/_sim/stats") => json(StatusCode::OK, self.stats.to_json()),
            (Method::POST, "/_sim/reset-stats") => {
                self.stats.reset();
                json(StatusCode::OK, self.stats.to_json())
            }
            (Method::GET, "/_sim/mode") => json(StatusCode::OK, self.mode().to_json()),
            (Method::POST, "/_sim/mode") => {
                let body = match req.into_body().collect().await {
                    Ok(body) => body.to_bytes(),
                    Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
                };
                let patch: Value = match serde_json::from_slice(&body) {
                    Ok(patch) => patch,
                    Err(e) => {
                        let message = format!("the mode is not JSON: {e}");
                        return error(StatusCode::BAD_REQUEST, &message);
                    }
                };
                let mut mode = self.mode.write().unwrap_or_else(PoisonError::into_inner);
                match mode.apply(&patch) {
                    Ok(()) => json(StatusCode::OK, mode.to_json()),
                    Err(message) => error(StatusCode::BAD_REQUEST, &message),
                }
            }
            (_, "/_sim/mode" | "/_sim/reset-stats") => {
                error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => error(StatusCode::NOT_FOUND, "no such simulator endpoint"),
        }
    }
}

/// The read-only core endpoints.
fn read(method: &Method, path: &str) -> Response<Bytes> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["health"]) => json(StatusCode::OK, json!({"status": "ok"})),
        (&Method::GET, ["customers", customer]) => json(
            StatusCode::OK,
            json!({"customer_ref": customer, "name": "홍길동", "tier": "standard"}),
        ),
        (&Method::GET, ["accounts", account, "balance"]) => json(
            StatusCode::OK,
            json!({"account": account, "balance": "1250000", "currency": "KRW"}),
        ),
        _ => error(StatusCode::NOT_FOUND, "no such core endpoint"),
    }
}
