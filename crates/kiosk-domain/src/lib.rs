//! Business rules of kiosk-api: queue-number tickets (번호표) at bank branches.
//!
//! The Spin components parse an HTTP request, authenticate the caller with
//! [`AuthConfig`], call a [`Kiosk`] method, and map the result to HTTP
//! ([`DomainError::status`], [`DomainError::body`], serde views). This crate
//! does no I/O of its own: state lives behind the [`Store`] trait, and the
//! clock (`now`) and randomness (`random`) are passed in.
//!
//! # Rules in brief
//! - Numbers run per branch, per service, per local business day (the
//!   calendar date in the branch's time zone), from 1, displayed `A-007`.
//!   They are taken with the store's atomic `increment`, so they never repeat.
//!   **Gaps**: a number is skipped only when its ticket is voided after the
//!   number was taken — the queue update then failed (retry budget exhausted,
//!   `conflict`), or a concurrent request gave the same phone an active ticket
//!   first (`already_has_ticket`), or the store failed mid-way (`store_unavailable`).
//! - Tickets are issued only within business hours (`branch_closed`, 409).
//! - A phone holds at most one active (waiting or called) ticket per branch.
//! - Waiting estimate: see [`estimate_wait_s`].
//! - Counters call the oldest waiting ticket (by issue time, across the
//!   services they serve); a counter must finish (complete, no-show or
//!   transfer) its called ticket before calling the next one.
//!
//! # Store layout
//! | key | value | written by |
//! | --- | --- | --- |
//! | `queue:{branch}` | JSON queue document: active tickets, tickets finished in the last 15 min, per-service last issued / last called marks | compare-and-swap only |
//! | `seq:{branch}:{service}:{YYYY-MM-DD}` | number counter of a local business day | `increment` only |
//! | `ticket:{id}` | JSON ticket record: created (CAS on absent) at issue, overwritten once with the final state (archive) | issue, finishing transitions |
//! | `idem:{scope}:{key}` | JSON `{fp, ticket, at}` idempotency record; `scope` is `kiosk/{id}` or `mobile/{customer_ref}`; `:` and `%` in scope and key are %-escaped | compare-and-swap only |
//!
//! While a ticket is in its branch's queue document, that document is the
//! truth about it; afterwards its ticket record is. Nothing is ever deleted
//! by age (no TTL in the store trait): `seq:` keys and archived `ticket:`
//! records accumulate and need an external sweep.

mod auth;
mod catalog;
mod error;
mod kiosk;
mod model;
mod queue;
mod store;

pub use auth::{ApiKey, AuthConfig, Caller, Credential, mint_mobile_token, verify_mobile_token};
pub use catalog::{Branch, Catalog, CatalogError, Counter, Hours, Interval, Service};
pub use error::{DomainError, ErrorBody};
pub use kiosk::{DEFAULT_MAX_ATTEMPTS, IDEMPOTENCY_LEASE, IDEMPOTENCY_RETENTION, Kiosk};
pub use model::{
    CallRequest, Channel, IdempotencyKey, IssueRequest, MAX_CUSTOMER_REF_LEN,
    MAX_IDEMPOTENCY_KEY_LEN, QueueView, ServiceQueueView, TicketStatus, TicketView,
    TransferRequest, fingerprint, parse_call_request, parse_issue_request, parse_transfer_request,
};
pub use queue::{FINISHED_RETENTION, format_number};
pub use store::{MemoryStore, Store, StoreError};

/// Estimated wait in seconds for a ticket with `waiting_ahead` tickets before it:
///
/// `waiting_ahead × service_minutes × 60 / counters_serving`, rounded down
/// (0 if no counter serves the service). Each counter serving the service is
/// assumed to take one customer every `service_minutes`; the service's
/// default minutes from the catalog are used, not measured times. It is 0 for
/// the first in line and never decreases as `waiting_ahead` grows.
pub fn estimate_wait_s(waiting_ahead: u32, service_minutes: u32, counters_serving: u32) -> u64 {
    if counters_serving == 0 {
        return 0;
    }
    u64::from(waiting_ahead) * u64::from(service_minutes) * 60 / u64::from(counters_serving)
}

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Length of a ticket id: 128 bits in base32 = 26 characters.
pub const TICKET_ID_LEN: usize = 26;

/// Encodes 128 random bits as a ticket id: RFC 4648 base32 alphabet, lowercase, no padding.
pub fn ticket_id(random: [u8; 16]) -> String {
    let mut bits = u128::from_be_bytes(random);
    // 26 characters × 5 bits = 130 bits: the value is right-aligned, so the
    // first character carries only the top 3 bits (it is one of a–h).
    let mut out = [0u8; TICKET_ID_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE32[(bits & 31) as usize];
        bits >>= 5;
    }
    String::from_utf8(out.to_vec()).expect("base32 alphabet is ASCII")
}

/// Whether `s` looks like a ticket id (26 characters of the base32 alphabet).
pub fn is_ticket_id(s: &str) -> bool {
    s.len() == TICKET_ID_LEN && s.bytes().all(|b| BASE32.contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_formula() {
        assert_eq!(estimate_wait_s(0, 5, 3), 0);
        assert_eq!(estimate_wait_s(1, 5, 3), 100);
        assert_eq!(estimate_wait_s(3, 5, 3), 300);
        assert_eq!(estimate_wait_s(2, 15, 1), 1800);
        assert_eq!(estimate_wait_s(5, 15, 0), 0);
        assert_eq!(
            estimate_wait_s(u32::MAX, 1440, 1),
            u64::from(u32::MAX) * 86_400
        );
    }

    #[test]
    fn ticket_ids_are_url_safe_and_distinct() {
        let a = ticket_id([0; 16]);
        let b = ticket_id([0xff; 16]);
        let c = ticket_id([1; 16]);
        assert_eq!(a, "a".repeat(26));
        assert_eq!(b.len(), 26);
        assert!(is_ticket_id(&a) && is_ticket_id(&b) && is_ticket_id(&c));
        assert_ne!(b, c);
        assert!(!is_ticket_id("ABC"));
        assert!(!is_ticket_id(&"1".repeat(26)));
    }

    proptest::proptest! {
        #[test]
        fn estimate_is_monotone_and_zero_first(
            ahead in 0u32..10_000, extra in 0u32..10_000,
            minutes in 1u32..=1440, counters in 1u32..50,
        ) {
            proptest::prop_assert_eq!(estimate_wait_s(0, minutes, counters), 0);
            proptest::prop_assert!(
                estimate_wait_s(ahead, minutes, counters)
                    <= estimate_wait_s(ahead + extra, minutes, counters)
            );
        }

        #[test]
        fn ticket_id_is_injective(a in proptest::array::uniform16(0u8..), b in proptest::array::uniform16(0u8..)) {
            proptest::prop_assert_eq!(a == b, ticket_id(a) == ticket_id(b));
            proptest::prop_assert!(is_ticket_id(&ticket_id(a)));
        }
    }
}
