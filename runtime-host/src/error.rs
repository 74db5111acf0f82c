//! Errors the host itself answers with, as `{"error":{"code":…,"message":…}}`.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full};

use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// The body type of every response the host sends.
pub type ResponseBody = HyperOutgoingBody;

/// Why the host (not the guest) produced a response. Each has a stable `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    /// No route matches the request path.
    NotFound,
    /// The request has no usable `Host` / authority, or they disagree.
    BadHost(String),
    /// The request body is larger than the host accepts.
    BodyTooLarge { limit: u64 },
    /// The request body did not arrive within its timeout.
    BodyTimeout { timeout_ms: u64 },
    /// The client stopped sending the body before its end.
    BodyIncomplete,
    /// The path needs a verified client certificate and there was none.
    ClientCertificateRequired,
    /// The client's address sent more requests than its rate allows.
    RateLimited { retry_after_s: u64 },
    /// The guest ran past its deadline and was stopped.
    DeadlineExceeded { component: String, deadline_ms: u64 },
    /// The guest trapped (panic, `unreachable`, stack overflow…).
    GuestTrapped { component: String },
    /// The guest hit its linear-memory limit.
    MemoryLimitExceeded { component: String, limit_bytes: u64 },
    /// The guest returned without producing a response, or set an error.
    NoResponse { component: String },
    /// Every instance slot is busy and the wait queue is full or timed out.
    Overloaded { retry_after_s: u64 },
    /// The host is shutting down and takes no new requests.
    ShuttingDown,
    /// Something failed inside the host while preparing the instance.
    Internal(String),
}

impl HostError {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            HostError::NotFound => "route_not_found",
            HostError::BadHost(_) => "bad_host",
            HostError::BodyTooLarge { .. } => "body_too_large",
            HostError::BodyTimeout { .. } => "body_timeout",
            HostError::BodyIncomplete => "body_incomplete",
            HostError::RateLimited { .. } => "rate_limited",
            HostError::ClientCertificateRequired => "client_certificate_required",
            HostError::DeadlineExceeded { .. } => "deadline_exceeded",
            HostError::GuestTrapped { .. } => "component_trapped",
            HostError::MemoryLimitExceeded { .. } => "memory_limit_exceeded",
            HostError::NoResponse { .. } => "component_no_response",
            HostError::Overloaded { .. } => "overloaded",
            HostError::ShuttingDown => "shutting_down",
            HostError::Internal(_) => "internal_error",
        }
    }

    /// Whether this is the host refusing a request under one of its limits
    /// (rather than a client's mistake or a component's failure).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            HostError::BodyTooLarge { .. }
                | HostError::BodyTimeout { .. }
                | HostError::BodyIncomplete
                | HostError::ClientCertificateRequired
                | HostError::RateLimited { .. }
                | HostError::DeadlineExceeded { .. }
                | HostError::MemoryLimitExceeded { .. }
                | HostError::Overloaded { .. }
                | HostError::ShuttingDown
        )
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            HostError::NotFound => StatusCode::NOT_FOUND,
            HostError::BadHost(_) => StatusCode::BAD_REQUEST,
            HostError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            HostError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            HostError::BodyIncomplete => StatusCode::BAD_REQUEST,
            HostError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            HostError::ClientCertificateRequired => StatusCode::FORBIDDEN,
            HostError::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
            HostError::Overloaded { .. } | HostError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            HostError::GuestTrapped { .. }
            | HostError::MemoryLimitExceeded { .. }
            | HostError::NoResponse { .. }
            | HostError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A message an operator can act on. Never contains guest data.
    pub fn message(&self) -> String {
        match self {
            HostError::NotFound => "no route matches this path".to_string(),
            HostError::BadHost(why) => why.clone(),
            HostError::BodyTooLarge { limit } => {
                format!("request body is larger than {limit} bytes")
            }
            HostError::BodyTimeout { timeout_ms } => {
                format!("the request body did not arrive within {timeout_ms} ms")
            }
            HostError::BodyIncomplete => "the request body ended before its end".to_string(),
            HostError::ClientCertificateRequired => {
                "this path needs a verified client certificate".to_string()
            }
            HostError::RateLimited { .. } => {
                "too many requests from this address; retry after the indicated delay".to_string()
            }
            HostError::DeadlineExceeded {
                component,
                deadline_ms,
            } => format!("component `{component}` did not finish within {deadline_ms} ms"),
            HostError::GuestTrapped { component } => {
                format!("component `{component}` failed while handling the request")
            }
            HostError::MemoryLimitExceeded {
                component,
                limit_bytes,
            } => format!(
                "component `{component}` exceeded its memory limit of {} MiB",
                limit_bytes / (1024 * 1024)
            ),
            HostError::NoResponse { component } => {
                format!("component `{component}` returned without a response")
            }
            HostError::Overloaded { .. } => {
                "all instances are busy; retry after the indicated delay".to_string()
            }
            HostError::ShuttingDown => "the server is shutting down".to_string(),
            HostError::Internal(why) => why.clone(),
        }
    }

    /// The whole HTTP response for this error.
    pub fn into_response(self) -> http::Response<ResponseBody> {
        let body = serde_json::json!({
            "error": { "code": self.code(), "message": self.message() }
        });
        let mut response = http::Response::new(
            Full::new(Bytes::from(body.to_string()))
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let HostError::Overloaded { retry_after_s } | HostError::RateLimited { retry_after_s } =
            self
        {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
        }
        if matches!(
            self,
            HostError::ShuttingDown | HostError::BodyTimeout { .. } | HostError::BodyIncomplete
        ) {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}
