//! Writes through the core passthrough take effect once per (caller,
//! `Idempotency-Key`), whether the core honours the key or not.
//!
//! A write ([`is_core_write`]) needs a key. The first request with it claims
//! the key ([`crate::idempotency`]) and goes to the core, carrying the key.
//! Its outcome decides what a retry with the same key and body gets:
//!
//! | first attempt | the key's record | a retry |
//! | --- | --- | --- |
//! | the core answered 2xx–4xx (except 408, 429) | done, with status, content type and body | that answer, replayed |
//! | timed out, connection broke, 5xx, 408, 429 | retry (outcome unknown) | goes to the core again with the same key, for the core to deduplicate |
//! | never sent (refused by the host's policy, denied) | released | goes to the core as new |
//! | still running | pending until the lease ends | `idempotency_in_progress` with `Retry-After` |
//!
//! Another body with the same key is `idempotency_key_mismatch` in every
//! state but released. The API never invents an answer the core did not give.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::error::DomainError;
use crate::idempotency::{Claim, ClaimKey, Claims, Lease, Pending, Purpose};
use crate::model::IdempotencyKey;
use crate::ops::IDEMPOTENCY_RETENTION;
use crate::store::{Store, StoreError};

/// Added to the core timeout for the lease of a write in flight: the store
/// calls around the core call, and scheduling.
pub const CORE_WRITE_LEASE_MARGIN: TimeDelta = TimeDelta::seconds(5);

/// Whether `method` writes: everything but `GET` and `HEAD`.
pub fn is_core_write(method: &str) -> bool {
    !method.eq_ignore_ascii_case("GET") && !method.eq_ignore_ascii_case("HEAD")
}

/// How long a write in flight holds its key: the core timeout rounded up
/// to whole seconds, plus [`CORE_WRITE_LEASE_MARGIN`].
pub fn core_write_lease(core_timeout: Duration) -> TimeDelta {
    let secs = core_timeout.as_millis().div_ceil(1000);
    TimeDelta::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 2_000)) + CORE_WRITE_LEASE_MARGIN
}

/// The fingerprint of a core write: SHA-256 over method, path, query and
/// the SHA-256 of the body, lowercase hex. The same key with any of them
/// different is `idempotency_key_mismatch`.
pub fn core_write_fingerprint(method: &str, path: &str, query: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    for part in [
        method.to_ascii_uppercase().as_bytes(),
        path.as_bytes(),
        query.as_bytes(),
    ] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.update(Sha256::digest(body));
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The core's answer to a write, as recorded for replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreReply {
    /// HTTP status.
    pub status: u16,
    /// The `content-type` the core sent, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The body, base64 in the record.
    #[serde(with = "base64_bytes")]
    pub body: Vec<u8>,
}

impl CoreReply {
    /// Whether this answer is the write's final outcome, to replay: any
    /// 2xx–4xx except 408 and 429, which, like 5xx, say "not now" and leave
    /// the outcome open.
    pub fn is_final(&self) -> bool {
        (200..500).contains(&self.status) && self.status != 408 && self.status != 429
    }
}

mod base64_bytes {
    use super::*;

    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// What to do with a write.
#[derive(Debug)]
pub enum CoreWrite {
    /// Send it to the core (with the key), then [`CoreWrites::finish`] the lease.
    Send(Lease),
    /// The key's first request got this answer: replay it.
    Replay(CoreReply),
}

/// How a write that was [sent](CoreWrite::Send) ended.
#[derive(Debug)]
pub enum CoreOutcome<'a> {
    /// The core answered (final or not: see [`CoreReply::is_final`]).
    Answered(&'a CoreReply),
    /// It may have reached the core: timeout, broken connection.
    Unknown,
    /// It certainly never reached the core: refused by the host's outbound
    /// policy, denied, or not built.
    NotSent,
}

/// Core writes over a store.
pub struct CoreWrites<'a, S: Store> {
    claims: Claims<'a, S>,
}

impl<'a, S: Store> CoreWrites<'a, S> {
    /// Writes whose keys are held for `lease` while in flight (see
    /// [`core_write_lease`]) and remembered for 24 hours.
    pub fn new(store: &'a S, lease: TimeDelta) -> Self {
        CoreWrites {
            claims: Claims::new(store, lease, IDEMPOTENCY_RETENTION),
        }
    }

    /// Claims `key` (fingerprinted with [`core_write_fingerprint`]) for `caller`.
    pub fn begin(
        &self,
        caller: &Caller,
        key: &IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<CoreWrite, DomainError> {
        let claim_key = ClaimKey::new(Purpose::CoreWrite, caller, key.key());
        let claim = self.claims.claim(
            &claim_key,
            key.fingerprint(),
            serde_json::Value::Null,
            now,
            // Nothing of a write can be checked here: only the core knows.
            |_| Ok(Pending::<std::convert::Infallible>::Running),
        )?;
        match claim {
            Claim::Won(lease) => Ok(CoreWrite::Send(lease)),
            Claim::Done(recorded) => serde_json::from_value(recorded)
                .map(CoreWrite::Replay)
                .map_err(|e| {
                    DomainError::StoreUnavailable(StoreError(format!(
                        "recorded core reply at {:?} is not readable: {e}",
                        claim_key.record()
                    )))
                }),
            Claim::Landed(never) => match never {},
        }
    }

    /// Records how the write ended. `Ok(false)` if its lease had lapsed and
    /// another request took the key over (nothing is recorded then).
    pub fn finish(&self, lease: Lease, outcome: CoreOutcome<'_>) -> Result<bool, StoreError> {
        match outcome {
            CoreOutcome::Answered(reply) if reply.is_final() => self.claims.complete(
                lease,
                serde_json::to_value(reply).expect("core replies serialize"),
            ),
            CoreOutcome::Answered(_) | CoreOutcome::Unknown => self.claims.retry(lease),
            CoreOutcome::NotSent => self.claims.release(lease),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_and_head_are_reads() {
        assert!(!is_core_write("GET"));
        assert!(!is_core_write("head"));
        for m in ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
            assert!(is_core_write(m), "{m}");
        }
    }

    #[test]
    fn the_lease_covers_the_timeout_and_a_margin() {
        assert_eq!(
            core_write_lease(Duration::from_millis(3000)),
            TimeDelta::seconds(8)
        );
        assert_eq!(
            core_write_lease(Duration::from_millis(2001)),
            TimeDelta::seconds(8)
        );
        assert_eq!(core_write_lease(Duration::ZERO), TimeDelta::seconds(5));
    }

    #[test]
    fn fingerprints_tell_every_part_apart() {
        let base = core_write_fingerprint("POST", "/transfers", "", b"{}");
        assert_eq!(
            base,
            core_write_fingerprint("post", "/transfers", "", b"{}")
        );
        assert_ne!(base, core_write_fingerprint("PUT", "/transfers", "", b"{}"));
        assert_ne!(base, core_write_fingerprint("POST", "/transfer", "", b"{}"));
        assert_ne!(
            base,
            core_write_fingerprint("POST", "/transfers", "a", b"{}")
        );
        assert_ne!(
            base,
            core_write_fingerprint("POST", "/transfers", "", b"{ }")
        );
        // Parts cannot shift into each other.
        assert_ne!(
            core_write_fingerprint("POST", "/a", "b", b""),
            core_write_fingerprint("POST", "/ab", "", b"")
        );
    }

    #[test]
    fn final_answers_are_2xx_to_4xx_but_not_408_or_429() {
        let reply = |status| CoreReply {
            status,
            content_type: None,
            body: Vec::new(),
        };
        for s in [200, 201, 204, 400, 404, 409, 422] {
            assert!(reply(s).is_final(), "{s}");
        }
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(!reply(s).is_final(), "{s}");
        }
    }

    #[test]
    fn replies_round_trip_through_json_with_a_base64_body() {
        let reply = CoreReply {
            status: 201,
            content_type: Some("application/json".into()),
            body: vec![0, 159, 146, 150, b'{'],
        };
        let json = serde_json::to_value(&reply).unwrap();
        assert_eq!(json["body"], "AJ+Slns=");
        assert_eq!(serde_json::from_value::<CoreReply>(json).unwrap(), reply);
    }
}
