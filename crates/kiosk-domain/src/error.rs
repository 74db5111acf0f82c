//! The one error type of the domain, with stable codes and HTTP status hints.

use serde::Serialize;

use crate::store::StoreError;

/// Every way a domain operation can fail.
///
/// [`code`](Self::code) is a stable machine-readable string (the API's error
/// `code` field); [`status`](Self::status) is the HTTP status the API should
/// answer with. `Display` is a human-readable, actionable message that never
/// contains secrets (API keys, token signatures, store connection details).
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The request is malformed: bad JSON, unknown field, bad value. (400)
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Missing, malformed, unknown or expired credentials. (401)
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Authenticated, but this caller may not do this. (403)
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// (404)
    #[error("branch {0:?} does not exist")]
    BranchNotFound(String),
    /// (404)
    #[error("branch {branch:?} offers no service {service:?}")]
    ServiceNotFound { branch: String, service: String },
    /// (404)
    #[error("branch {branch:?} has no counter {counter:?}")]
    CounterNotFound { branch: String, counter: String },
    /// The ticket does not exist, or the caller may not see it (a phone asking
    /// for another customer's ticket gets this too, so existence is not leaked). (404)
    #[error("ticket {0:?} not found")]
    TicketNotFound(String),
    /// Tickets are issued only within business hours. (409: the request is
    /// well-formed; the branch's current state prevents it and the same request
    /// succeeds once the branch opens.)
    #[error("branch {branch:?} is closed now{}", next_open.as_ref().map(|t| format!("; it opens at {t}")).unwrap_or_default())]
    BranchClosed {
        branch: String,
        /// Next opening time, RFC 3339 in the branch's local offset, if any.
        next_open: Option<String>,
    },
    /// A mobile customer already holds an active (waiting or called) ticket at
    /// this branch. (409)
    #[error(
        "you already hold ticket {number} (id {ticket}) at branch {branch:?}; cancel it or wait until it is served before taking another"
    )]
    AlreadyHasTicket {
        branch: String,
        /// Id of the ticket already held.
        ticket: String,
        /// Its display number, e.g. `A-007`.
        number: String,
    },
    /// The service's queue holds as many waiting tickets as the catalog's
    /// `max_waiting` allows. (409: the kiosk can tell the customer; the
    /// same request succeeds once counters have called some.)
    #[error(
        "the {service:?} queue at branch {branch:?} is full ({max_waiting} waiting); please try again once some have been served, or choose another service"
    )]
    QueueFull {
        branch: String,
        service: String,
        /// The catalog's limit.
        max_waiting: u32,
    },
    /// The caller used up its rate (tickets per branch, or core calls) for
    /// the current window. (429, with `Retry-After: retry_after_s`)
    #[error("too many requests: {message}")]
    RateLimited {
        /// Who is limited, the rate, and when to retry.
        message: String,
        /// Seconds until the window ends (at least 1).
        retry_after_s: u64,
    },
    /// The ticket's state does not allow the operation (e.g. cancelling a
    /// called ticket), or concurrent updates kept winning until the retry
    /// budget ran out. (409)
    #[error("conflict: {0}")]
    Conflict(String),
    /// Kiosks issuing tickets and every core write must send an
    /// `Idempotency-Key`. (400)
    #[error(
        "an Idempotency-Key header is required for this request; send a fresh unique key per operation and reuse it only when retrying"
    )]
    IdempotencyKeyRequired,
    /// The key was already used with a different request body. (422)
    #[error(
        "this Idempotency-Key was already used with a different request body; use a new key for a different request"
    )]
    IdempotencyKeyMismatch,
    /// A request with this key is still being processed. (409, with
    /// `Retry-After: retry_after_s`)
    #[error(
        "a request with this Idempotency-Key is still being processed; retry in {retry_after_s} s"
    )]
    IdempotencyInProgress {
        /// Seconds until a retry can get an answer (at least 1).
        retry_after_s: u64,
    },
    /// A core passthrough path that is not canonical: an empty, `.` or `..`
    /// segment, or one containing an encoded dot, slash, backslash or
    /// percent, `;` or `\`. Refused before the allow-list is consulted. (400)
    #[error("invalid core path: {0}")]
    InvalidCorePath(String),
    /// The method and path are not in `core_allowed_routes`, or the route
    /// takes no query string. (403)
    #[error("{0}")]
    CoreRouteNotAllowed(String),
    /// The store failed. The inner error is for logs and is not part of the message. (503)
    #[error("ticket storage is temporarily unavailable; retry shortly")]
    StoreUnavailable(#[source] StoreError),
    /// The deployment cannot serve correctly as configured (e.g. a store
    /// whose compare-and-swap misreports lost races); the message says
    /// what to change and never holds a secret. (503, not worth retrying)
    #[error("{0}")]
    Misconfigured(String),
}

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> Self {
        DomainError::StoreUnavailable(e)
    }
}

/// The JSON error body components can send as is: `{"code": ..., "message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    pub code: &'static str,
    pub message: String,
}

impl DomainError {
    /// Stable error code, e.g. `"ticket_not_found"`.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::InvalidRequest(_) => "invalid_request",
            DomainError::Unauthorized(_) => "unauthorized",
            DomainError::Forbidden(_) => "forbidden",
            DomainError::BranchNotFound(_) => "branch_not_found",
            DomainError::ServiceNotFound { .. } => "service_not_found",
            DomainError::CounterNotFound { .. } => "counter_not_found",
            DomainError::TicketNotFound(_) => "ticket_not_found",
            DomainError::BranchClosed { .. } => "branch_closed",
            DomainError::AlreadyHasTicket { .. } => "already_has_ticket",
            DomainError::QueueFull { .. } => "queue_full",
            DomainError::RateLimited { .. } => "rate_limited",
            DomainError::Conflict(_) => "conflict",
            DomainError::IdempotencyKeyRequired => "idempotency_key_required",
            DomainError::IdempotencyKeyMismatch => "idempotency_key_mismatch",
            DomainError::IdempotencyInProgress { .. } => "idempotency_in_progress",
            DomainError::InvalidCorePath(_) => "invalid_core_path",
            DomainError::CoreRouteNotAllowed(_) => "core_route_not_allowed",
            DomainError::StoreUnavailable(_) => "store_unavailable",
            DomainError::Misconfigured(_) => "misconfigured",
        }
    }

    /// HTTP status code the API should answer with.
    pub fn status(&self) -> u16 {
        match self {
            DomainError::InvalidRequest(_)
            | DomainError::IdempotencyKeyRequired
            | DomainError::InvalidCorePath(_) => 400,
            DomainError::Unauthorized(_) => 401,
            DomainError::Forbidden(_) | DomainError::CoreRouteNotAllowed(_) => 403,
            DomainError::BranchNotFound(_)
            | DomainError::ServiceNotFound { .. }
            | DomainError::CounterNotFound { .. }
            | DomainError::TicketNotFound(_) => 404,
            DomainError::BranchClosed { .. }
            | DomainError::AlreadyHasTicket { .. }
            | DomainError::QueueFull { .. }
            | DomainError::Conflict(_)
            | DomainError::IdempotencyInProgress { .. } => 409,
            DomainError::IdempotencyKeyMismatch => 422,
            DomainError::RateLimited { .. } => 429,
            DomainError::StoreUnavailable(_) | DomainError::Misconfigured(_) => 503,
        }
    }

    /// Seconds a client should wait before retrying (`Retry-After`), for
    /// the errors that are worth retrying unchanged.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            DomainError::IdempotencyInProgress { retry_after_s }
            | DomainError::RateLimited { retry_after_s, .. } => Some(*retry_after_s),
            DomainError::StoreUnavailable(_) => Some(1),
            _ => None,
        }
    }

    /// The error as a JSON-serializable body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code(),
            message: self.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses() {
        let cases: Vec<(DomainError, &str, u16)> = vec![
            (
                DomainError::InvalidRequest("x".into()),
                "invalid_request",
                400,
            ),
            (DomainError::Unauthorized("x".into()), "unauthorized", 401),
            (DomainError::Forbidden("x".into()), "forbidden", 403),
            (
                DomainError::BranchNotFound("b".into()),
                "branch_not_found",
                404,
            ),
            (
                DomainError::ServiceNotFound {
                    branch: "b".into(),
                    service: "s".into(),
                },
                "service_not_found",
                404,
            ),
            (
                DomainError::CounterNotFound {
                    branch: "b".into(),
                    counter: "9".into(),
                },
                "counter_not_found",
                404,
            ),
            (
                DomainError::TicketNotFound("t".into()),
                "ticket_not_found",
                404,
            ),
            (
                DomainError::BranchClosed {
                    branch: "b".into(),
                    next_open: None,
                },
                "branch_closed",
                409,
            ),
            (
                DomainError::AlreadyHasTicket {
                    branch: "b".into(),
                    ticket: "t".into(),
                    number: "A-001".into(),
                },
                "already_has_ticket",
                409,
            ),
            (DomainError::Conflict("x".into()), "conflict", 409),
            (
                DomainError::QueueFull {
                    branch: "b".into(),
                    service: "loan".into(),
                    max_waiting: 20,
                },
                "queue_full",
                409,
            ),
            (
                DomainError::RateLimited {
                    message: "x".into(),
                    retry_after_s: 9,
                },
                "rate_limited",
                429,
            ),
            (
                DomainError::IdempotencyKeyRequired,
                "idempotency_key_required",
                400,
            ),
            (
                DomainError::IdempotencyKeyMismatch,
                "idempotency_key_mismatch",
                422,
            ),
            (
                DomainError::IdempotencyInProgress { retry_after_s: 3 },
                "idempotency_in_progress",
                409,
            ),
            (
                DomainError::InvalidCorePath("x".into()),
                "invalid_core_path",
                400,
            ),
            (
                DomainError::CoreRouteNotAllowed("x".into()),
                "core_route_not_allowed",
                403,
            ),
            (
                DomainError::StoreUnavailable(StoreError("redis://user:pw@host".into())),
                "store_unavailable",
                503,
            ),
        ];
        for (e, code, status) in cases {
            assert_eq!(e.code(), code);
            assert_eq!(e.status(), status, "{code}");
            assert_eq!(e.body().code, code);
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn retry_after_is_given_for_retryable_errors() {
        assert_eq!(
            DomainError::IdempotencyInProgress { retry_after_s: 7 }.retry_after_s(),
            Some(7)
        );
        assert_eq!(
            DomainError::StoreUnavailable(StoreError("x".into())).retry_after_s(),
            Some(1)
        );
        assert_eq!(
            DomainError::RateLimited {
                message: "x".into(),
                retry_after_s: 42
            }
            .retry_after_s(),
            Some(42)
        );
        assert_eq!(DomainError::IdempotencyKeyMismatch.retry_after_s(), None);
    }

    #[test]
    fn store_error_detail_is_not_in_the_message() {
        let e = DomainError::from(StoreError("redis://user:secret@10.0.0.1".into()));
        assert!(!e.to_string().contains("secret"));
        assert!(!serde_json::to_string(&e.body()).unwrap().contains("secret"));
    }

    #[test]
    fn branch_closed_message_names_next_opening() {
        let e = DomainError::BranchClosed {
            branch: "gangnam".into(),
            next_open: Some("2026-03-02T09:00:00+09:00".into()),
        };
        assert_eq!(
            e.to_string(),
            "branch \"gangnam\" is closed now; it opens at 2026-03-02T09:00:00+09:00"
        );
    }
}
