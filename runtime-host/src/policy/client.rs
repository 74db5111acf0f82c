//! Sending one call: hyper's pooled client (keep-alive connections per
//! destination), one deadline for the whole call, and a response body that
//! holds the destination's slot and tells the breaker how the call ended.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use super::breaker::{Admission, Breaker, CallResult};
use crate::config::DestinationSettings;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The connection pool of one destination.
pub struct Client {
    inner: hyper_util::client::legacy::Client<Connector, WasiBody>,
}

impl Client {
    pub fn new(settings: &DestinationSettings) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle)
            .build(https);
        Self { inner }
    }

    /// Sends `request`; the head must come by `head_deadline` and the whole
    /// body by `deadline`. The slot is held until the body ends.
    pub async fn send(
        &self,
        request: Request<WasiBody>,
        deadline: Instant,
        head_deadline: Instant,
        permit: OwnedSemaphorePermit,
        mut guard: Guard,
    ) -> Result<Response<WasiBody>, HttpError> {
        let response =
            match tokio::time::timeout_at(head_deadline, self.inner.request(request)).await {
                Err(_elapsed) => {
                    guard.finish(CallResult::Failure);
                    return Err(HttpError::ConnectionReadTimeout);
                }
                Ok(Err(e)) => {
                    guard.finish(CallResult::Failure);
                    return Err(client_error(&e));
                }
                Ok(Ok(response)) => response,
            };
        if response.status().is_server_error() {
            guard.finish(CallResult::Failure);
        } else {
            // The head is fine: a body the guest stops reading is no failure.
            guard.on_drop = CallResult::Success;
        }
        Ok(response.map(|incoming| {
            GuardedBody {
                incoming,
                deadline: Box::pin(tokio::time::sleep_until(deadline)),
                permit: Some(permit),
                guard,
            }
            .boxed_unsync()
        }))
    }
}

/// Reports one call's end to the breaker exactly once.
pub struct Guard {
    breaker: Arc<Breaker>,
    admission: Option<Admission>,
    on_drop: CallResult,
}

impl Guard {
    /// A guard for a call about to be sent. Dropped before the response
    /// head, the call counts as failed: its caller gave up waiting (its own
    /// timeout), which is what a hung destination looks like from here.
    pub fn new(breaker: Arc<Breaker>, admission: Admission) -> Self {
        Self {
            breaker,
            admission: Some(admission),
            on_drop: CallResult::Failure,
        }
    }

    fn finish(&mut self, result: CallResult) {
        if let Some(admission) = self.admission.take() {
            self.breaker
                .record(admission, result, std::time::Instant::now());
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.finish(self.on_drop);
    }
}

/// The response body as the guest reads it.
struct GuardedBody {
    incoming: Incoming,
    deadline: Pin<Box<Sleep>>,
    permit: Option<OwnedSemaphorePermit>,
    guard: Guard,
}

impl GuardedBody {
    fn end(&mut self, result: CallResult) {
        self.guard.finish(result);
        self.permit = None;
    }
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = self.get_mut();
        if this.permit.is_none() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(None) => {
                this.end(CallResult::Success);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(e))) => {
                this.end(CallResult::Failure);
                Poll::Ready(Some(Err(HttpError::from(e))))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.end(CallResult::Failure);
                    Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.permit.is_none() || self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

/// The `wasi:http` error code for a failed call.
fn client_error(e: &hyper_util::client::legacy::Error) -> HttpError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut timed_out = false;
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
        }
        source = cause.source();
    }
    if e.is_connect() {
        if timed_out {
            HttpError::ConnectionTimeout
        } else {
            HttpError::ConnectionRefused
        }
    } else {
        tracing::debug!("outbound call failed: {e:?}");
        HttpError::ConnectionTerminated
    }
}
