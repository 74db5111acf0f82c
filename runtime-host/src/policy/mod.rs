//! The outbound policy per destination (`scheme://host:port`), applied to
//! every outbound HTTP call of every component: a cap on calls in flight
//! with a short bounded wait, a circuit breaker, one deadline for the whole
//! call, pooled keep-alive connections, and shared answers for the GETs an
//! app declares cacheable. A refusal is an answer the guest can read: 503
//! with `Retry-After` and `kiosk-outbound-refused: busy | circuit-open`.

pub mod breaker;
pub mod cache;
mod client;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::Semaphore;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use crate::admin::metrics::OutboundMetrics;
use crate::config::{DestinationSettings, OutboundSettings};

use self::breaker::{Admission, Breaker};
use self::cache::{Cache, FetchError, Shared, Stored, Use};
use self::client::{Client, Guard};

/// The header naming why the host refused an outbound call.
pub const REFUSED_HEADER: &str = "kiosk-outbound-refused";

/// The header counting the kiosk-hosts a request has passed through.
pub const HOP_HEADER: &str = "kiosk-hop-count";

/// Largest answer kept for sharing.
const MAX_SHARED_BODY: usize = 1024 * 1024;

/// Every destination's policy, created on first use.
pub struct Destinations {
    settings: OutboundSettings,
    known: Mutex<HashMap<String, Arc<Destination>>>,
    metrics: OutboundMetrics,
}

impl Destinations {
    /// Destinations governed by `settings`.
    pub fn new(settings: OutboundSettings) -> Arc<Self> {
        Self::with_metrics(settings, OutboundMetrics::default())
    }

    /// The same, counting calls into `metrics`.
    pub fn with_metrics(settings: OutboundSettings, metrics: OutboundMetrics) -> Arc<Self> {
        Arc::new(Self {
            settings,
            known: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// Where outbound calls are counted.
    pub fn metrics(&self) -> &OutboundMetrics {
        &self.metrics
    }

    /// Each destination called so far: its key, calls in flight, and
    /// whether its circuit is open (or half-open).
    pub fn states(&self) -> Vec<(String, usize, bool)> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known
            .values()
            .map(|d| {
                let cap = d.settings.max_concurrency.max(1);
                let in_flight = cap.saturating_sub(d.slots.available_permits());
                (d.key.clone(), in_flight, d.breaker.is_open())
            })
            .collect()
    }

    /// Hops after which outbound calls are refused.
    pub fn max_hops(&self) -> u32 {
        self.settings.max_hops
    }

    /// The policy of `key` (`scheme://host:port`).
    pub fn get(&self, key: &str) -> Arc<Destination> {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Destination::new(
                    key.to_string(),
                    self.settings.for_destination(key),
                ))
            })
            .clone()
    }
}

/// One destination: its cap, breaker, connection pool and shared answers.
pub struct Destination {
    key: String,
    settings: DestinationSettings,
    slots: Arc<Semaphore>,
    breaker: Arc<Breaker>,
    cache: Cache,
    client: Client,
}

/// How a call through the policy went, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Sent to the destination.
    Sent,
    /// Answered from a shared call (in flight or recent).
    Shared,
    /// Refused by the policy.
    Refused(Reason),
}

/// Why the policy refused a call before it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The destination's cap was reached and its short queue timed out.
    Busy,
    /// The destination's circuit is open.
    CircuitOpen,
}

impl Reason {
    /// The value of [`REFUSED_HEADER`] (and of the log's `served`).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Busy => "busy",
            Reason::CircuitOpen => "circuit-open",
        }
    }
}

/// A refusal, with when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub retry_after_s: u64,
}

enum Failure {
    Refused(Refusal),
    Error(HttpError),
}

impl Destination {
    fn new(key: String, settings: DestinationSettings) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(settings.max_concurrency.max(1))),
            breaker: Arc::new(Breaker::new(key.clone(), settings.breaker.clone())),
            cache: Cache::default(),
            client: Client::new(&settings),
            key,
            settings,
        }
    }

    /// The `scheme://host:port` key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Sends `request` under the policy. `head_by` bounds the wait for the
    /// response head (the guest's own timeouts), within the destination's deadline.
    pub async fn send(
        &self,
        request: Request<WasiBody>,
        head_by: Option<Duration>,
    ) -> (Result<Response<WasiBody>, HttpError>, Served) {
        match self.call(request, head_by).await {
            Ok(response) => (Ok(response), Served::Sent),
            Err(Failure::Refused(refused)) => {
                (Ok(refusal(refused)), Served::Refused(refused.reason))
            }
            Err(Failure::Error(e)) => (Err(e), Served::Sent),
        }
    }

    /// Sends a cacheable GET: shared with identical calls in flight, or
    /// reused for `ttl`.
    pub async fn send_shared(
        &self,
        request: Request<WasiBody>,
        ttl: Duration,
        head_by: Option<Duration>,
    ) -> (Result<Response<WasiBody>, HttpError>, Served) {
        let accept = request
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // The hop count is part of the key: a call that loops back here must
        // not wait for the call it is part of.
        let hops = request
            .headers()
            .get(HOP_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("0");
        let key = format!("{} {} {accept} {hops}", request.method(), request.uri());
        let fetch = async {
            let response = match self.call(request, head_by).await {
                Ok(response) => response,
                Err(Failure::Refused(refused)) => return Err(FetchError::Refused(refused)),
                Err(Failure::Error(e)) => return Err(summary(&e)),
            };
            let (parts, body) = response.into_parts();
            let body = http_body_util::Limited::new(body, MAX_SHARED_BODY)
                .collect()
                .await
                .map_err(|e| match e.downcast_ref::<HttpError>() {
                    Some(e) => summary(e),
                    None => FetchError::Other("answer too large to share".into()),
                })?
                .to_bytes();
            Ok(Arc::new(Stored {
                status: parts.status,
                headers: parts.headers,
                body,
            }))
        };
        let (shared, used) = self.cache.get_or_fetch(key, ttl, fetch).await;
        let served = match (&shared, used) {
            (Err(FetchError::Refused(refused)), _) => Served::Refused(refused.reason),
            (_, Use::Hit) => Served::Shared,
            (_, Use::Miss) => Served::Sent,
        };
        (answer(shared), served)
    }

    async fn call(
        &self,
        request: Request<WasiBody>,
        head_by: Option<Duration>,
    ) -> Result<Response<WasiBody>, Failure> {
        let admission = self
            .breaker
            .admit(std::time::Instant::now())
            .map_err(|retry_after_s| {
                Failure::Refused(Refusal {
                    reason: Reason::CircuitOpen,
                    retry_after_s,
                })
            })?;
        let permit = match tokio::time::timeout(
            self.settings.queue_timeout,
            self.slots.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            _ => {
                if admission == Admission::Probe {
                    self.breaker.record(
                        admission,
                        breaker::CallResult::Abandoned,
                        std::time::Instant::now(),
                    );
                }
                return Err(Failure::Refused(Refusal {
                    reason: Reason::Busy,
                    retry_after_s: 1,
                }));
            }
        };
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        let head_deadline =
            head_by.map_or(deadline, |d| deadline.min(tokio::time::Instant::now() + d));
        let guard = Guard::new(self.breaker.clone(), admission);
        self.client
            .send(request, deadline, head_deadline, permit, guard)
            .await
            .map_err(Failure::Error)
    }
}

/// The answer a guest reads when the policy refuses its call.
fn refusal(refused: Refusal) -> Response<WasiBody> {
    let (code, message) = match refused.reason {
        Reason::Busy => (
            "outbound_busy",
            "too many calls in flight to this destination; retry later",
        ),
        Reason::CircuitOpen => (
            "outbound_circuit_open",
            "this destination is failing; calls are refused until it recovers",
        ),
    };
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        http::header::RETRY_AFTER,
        HeaderValue::from(refused.retry_after_s),
    );
    headers.insert(
        REFUSED_HEADER,
        HeaderValue::from_static(refused.reason.as_str()),
    );
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn answer(shared: Shared) -> Result<Response<WasiBody>, HttpError> {
    match shared {
        Ok(stored) => {
            let mut response = Response::new(
                Full::new(stored.body.clone())
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            );
            *response.status_mut() = stored.status;
            *response.headers_mut() = stored.headers.clone();
            Ok(response)
        }
        Err(FetchError::Refused(refused)) => Ok(refusal(refused)),
        Err(FetchError::Timeout) => Err(HttpError::ConnectionReadTimeout),
        Err(FetchError::ConnectFailed) => Err(HttpError::ConnectionRefused),
        Err(FetchError::Other(why)) => Err(HttpError::InternalError(Some(why))),
    }
}

fn summary(e: &HttpError) -> FetchError {
    match e {
        HttpError::ConnectionTimeout
        | HttpError::ConnectionReadTimeout
        | HttpError::HttpResponseTimeout => FetchError::Timeout,
        HttpError::ConnectionRefused | HttpError::Connect(_) => FetchError::ConnectFailed,
        other => FetchError::Other(other.to_string()),
    }
}
