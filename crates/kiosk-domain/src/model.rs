//! Request and response types (the API's JSON), and their parsing.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::DomainError;

/// Where a ticket was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Kiosk,
    Mobile,
}

/// Lifecycle of a ticket: `waiting → called → done | no_show`, `waiting → cancelled`;
/// a transfer puts a waiting or called ticket back to `waiting` in another service;
/// a ticket still waiting when its business day ends is `expired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatus {
    Waiting,
    Called,
    Done,
    NoShow,
    Cancelled,
    /// Still waiting when its business day ended (`reason`: `business_day_ended`).
    Expired,
}

impl TicketStatus {
    /// Waiting or called.
    pub fn is_active(self) -> bool {
        matches!(self, TicketStatus::Waiting | TicketStatus::Called)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TicketStatus::Waiting => "waiting",
            TicketStatus::Called => "called",
            TicketStatus::Done => "done",
            TicketStatus::NoShow => "no_show",
            TicketStatus::Cancelled => "cancelled",
            TicketStatus::Expired => "expired",
        }
    }
}

/// Body of `POST /tickets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    pub branch: String,
    pub service: String,
    pub channel: Channel,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub customer_ref: Option<String>,
}

/// Body of a counter's "call next": the counter, optionally narrowed to some
/// of the services it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRequest {
    pub counter: String,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub services: Option<Vec<String>>,
}

/// Body of a transfer: the service whose queue the ticket moves to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    pub service: String,
}

/// Optional body of complete and no-show: the counter whose terminal
/// sends it; the ticket must be called there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndRequest {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub counter: Option<String>,
}

/// An optional field that, when present, must hold a value (`null` is
/// refused like any other wrong type).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// A ticket as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketView {
    /// Unguessable id: 128 random bits, base32 (RFC 4648, lowercase, no padding), 26 characters.
    pub id: String,
    /// Display number, e.g. `A-007` (code of the service it was issued for; kept on transfer).
    pub number: String,
    pub branch: String,
    /// The service whose queue it is in now (changes on transfer).
    pub service: String,
    pub channel: Channel,
    pub status: TicketStatus,
    pub issued_at: DateTime<Utc>,
    /// Waiting tickets of the same service issued earlier (0 unless waiting).
    pub waiting_ahead: u32,
    /// `waiting_ahead × average service time / counters serving the service`
    /// in seconds, rounded down: see [`crate::estimate_wait_s`] and
    /// [`crate::average_service_s`] (0 unless waiting).
    pub estimated_wait_s: u64,
    /// The counter that called it (while called, and after done / no-show).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub called_at: Option<DateTime<Utc>>,
    /// Why an ended ticket ended without being served: `business_day_ended`
    /// for an expired one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One service's line in a [`QueueView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceQueueView {
    pub service: String,
    pub code: String,
    /// Tickets waiting in this service's queue.
    pub waiting: u32,
    /// Number most recently called for this service today (local day), if any.
    pub now_serving: Option<String>,
    /// Number most recently issued for this service today (local day), if any.
    pub last_issued: Option<String>,
    /// Estimated wait in seconds for a ticket issued now:
    /// `waiting × average service time / counters serving the service`
    /// ([`crate::estimate_wait_s`] with [`crate::average_service_s`]).
    pub estimated_wait_s: u64,
}

/// A branch's queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueView {
    pub branch: String,
    /// Whether the branch issues tickets now.
    pub open: bool,
    /// Services in catalog order.
    pub services: Vec<ServiceQueueView>,
    /// All configured counters while the branch is open; after hours, the
    /// counters still serving a called ticket.
    pub counters_open: Vec<String>,
}

/// Parses a request body, which is always a JSON object: serde would also
/// read a struct from an array of its fields in order (`["demo","loan"]`,
/// or `[]` for one whose fields are all optional), which the API does not
/// accept.
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, DomainError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| DomainError::InvalidRequest(e.to_string()))?;
    if !value.is_object() {
        return Err(DomainError::InvalidRequest(
            "the body must be a JSON object".into(),
        ));
    }
    serde_json::from_value(value).map_err(|e| DomainError::InvalidRequest(e.to_string()))
}

/// Parses a `POST /tickets` body; malformed JSON, unknown fields or bad values
/// give `invalid_request` with serde's message.
pub fn parse_issue_request(body: &[u8]) -> Result<IssueRequest, DomainError> {
    parse_json(body)
}

/// Parses a call-next body.
pub fn parse_call_request(body: &[u8]) -> Result<CallRequest, DomainError> {
    parse_json(body)
}

/// Parses a complete or no-show body: empty (or whitespace) is `{}`.
pub fn parse_end_request(body: &[u8]) -> Result<EndRequest, DomainError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(EndRequest::default());
    }
    parse_json(body)
}

/// Parses a transfer body.
pub fn parse_transfer_request(body: &[u8]) -> Result<TransferRequest, DomainError> {
    parse_json(body)
}

/// Longest accepted customer reference.
pub const MAX_CUSTOMER_REF_LEN: usize = 128;

/// A customer reference is 1–128 characters without control characters.
pub(crate) fn validate_customer_ref(s: &str) -> Result<(), DomainError> {
    if s.is_empty() || s.chars().count() > MAX_CUSTOMER_REF_LEN || s.chars().any(char::is_control) {
        return Err(DomainError::InvalidRequest(format!(
            "customer_ref must be 1-{MAX_CUSTOMER_REF_LEN} characters without control characters"
        )));
    }
    Ok(())
}

/// An `Idempotency-Key` with the fingerprint of the request body it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    key: String,
    fingerprint: String,
}

/// Longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

impl IdempotencyKey {
    /// `key` must be 1–255 visible ASCII characters (`invalid_request` otherwise);
    /// `fingerprint` is any string identifying the request body (see [`fingerprint`]).
    pub fn new(key: &str, fingerprint: impl Into<String>) -> Result<Self, DomainError> {
        if key.is_empty()
            || key.len() > MAX_IDEMPOTENCY_KEY_LEN
            || !key.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(DomainError::InvalidRequest(format!(
                "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters (a UUID is a good choice)"
            )));
        }
        Ok(Self {
            key: key.to_owned(),
            fingerprint: fingerprint.into(),
        })
    }

    /// A key fingerprinted with [`fingerprint`] of the raw body.
    pub fn for_body(key: &str, body: &[u8]) -> Result<Self, DomainError> {
        Self::new(key, fingerprint(body))
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// SHA-256 of `body`, lowercase hex: a request fingerprint for [`IdempotencyKey`].
///
/// Components may instead fingerprint the parsed request (e.g. its canonical
/// JSON re-serialization) so that whitespace differences do not count.
pub fn fingerprint(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_issue_request() {
        let r = parse_issue_request(br#"{"branch":"demo","service":"loan","channel":"kiosk"}"#)
            .unwrap();
        assert_eq!(
            r,
            IssueRequest {
                branch: "demo".into(),
                service: "loan".into(),
                channel: Channel::Kiosk,
                customer_ref: None
            }
        );
        let r = parse_issue_request(
            br#"{"branch":"demo","service":"loan","channel":"mobile","customer_ref":"c1"}"#,
        )
        .unwrap();
        assert_eq!(r.customer_ref.as_deref(), Some("c1"));
    }

    #[test]
    fn malformed_issue_requests_are_invalid_request() {
        for (body, needle) in [
            (&b"{"[..], "EOF"),
            (
                br#"{"branch":"demo","service":"loan"}"#,
                "missing field `channel`",
            ),
            (
                br#"{"branch":"demo","service":"loan","channel":"fax"}"#,
                "unknown variant `fax`",
            ),
            (
                br#"{"branch":"demo","service":"loan","channel":"kiosk","x":1}"#,
                "unknown field `x`",
            ),
            (
                br#"{"branch":1,"service":"loan","channel":"kiosk"}"#,
                "invalid type",
            ),
        ] {
            let e = parse_issue_request(body).unwrap_err();
            assert_eq!(e.code(), "invalid_request");
            assert_eq!(e.status(), 400);
            assert!(e.to_string().contains(needle), "{e}");
        }
    }

    #[test]
    fn optional_fields_refuse_null() {
        assert!(parse_end_request(b"").unwrap().counter.is_none());
        assert_eq!(
            parse_end_request(br#"{"counter":"2"}"#)
                .unwrap()
                .counter
                .as_deref(),
            Some("2")
        );
        for body in [
            &br#"{"counter":null}"#[..],
            br#"{"counter":2}"#,
            br#"{"counter":"1","x":1}"#,
        ] {
            assert_eq!(
                parse_end_request(body).unwrap_err().code(),
                "invalid_request"
            );
        }
        assert!(parse_call_request(br#"{"counter":"1","services":null}"#).is_err());
        // A struct read from an array of its fields is no object.
        for body in [&b"[]"[..], b" [\"2\"]", b"\"2\"", b"null"] {
            let e = parse_end_request(body).unwrap_err();
            assert_eq!(e.code(), "invalid_request");
            assert!(
                e.to_string().ends_with("the body must be a JSON object"),
                "{e}"
            );
        }
        assert!(parse_call_request(br#"["1"]"#).is_err());
        assert!(parse_transfer_request(br#"["fx"]"#).is_err());
        assert!(parse_issue_request(br#"["demo","loan","kiosk"]"#).is_err());
        assert!(
            parse_issue_request(
                br#"{"branch":"demo","service":"loan","channel":"mobile","customer_ref":null}"#
            )
            .is_err()
        );
    }

    #[test]
    fn parses_call_and_transfer_requests() {
        assert_eq!(
            parse_call_request(br#"{"counter":"1"}"#).unwrap(),
            CallRequest {
                counter: "1".into(),
                services: None
            }
        );
        assert_eq!(
            parse_call_request(br#"{"counter":"1","services":["fx"]}"#)
                .unwrap()
                .services,
            Some(vec!["fx".to_string()])
        );
        assert!(parse_call_request(br#"{"counter":1}"#).is_err());
        assert_eq!(
            parse_transfer_request(br#"{"service":"fx"}"#)
                .unwrap()
                .service,
            "fx"
        );
        assert!(parse_transfer_request(br#"{"service":"fx","to":"x"}"#).is_err());
    }

    #[test]
    fn idempotency_key_validation() {
        assert!(IdempotencyKey::new("8e03978e-40d5-43e8-bc93-6894a57f9324", "fp").is_ok());
        for bad in ["", "has space", "tab\t", "é", &"k".repeat(256)] {
            assert_eq!(
                IdempotencyKey::new(bad, "fp").unwrap_err().code(),
                "invalid_request"
            );
        }
        let k = IdempotencyKey::for_body("k", b"abc").unwrap();
        assert_eq!(
            k.fingerprint(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn views_serialize_as_documented() {
        let v = TicketView {
            id: "x".into(),
            number: "A-007".into(),
            branch: "demo".into(),
            service: "deposit".into(),
            channel: Channel::Mobile,
            status: TicketStatus::NoShow,
            issued_at: "2026-03-02T01:00:00Z".parse().unwrap(),
            waiting_ahead: 0,
            estimated_wait_s: 0,
            counter: None,
            called_at: None,
            reason: None,
        };
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j["status"], "no_show");
        assert_eq!(j["channel"], "mobile");
        assert_eq!(j["issued_at"], "2026-03-02T01:00:00Z");
        assert!(j.get("counter").is_none());
    }
}
