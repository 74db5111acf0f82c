//! Business rules of kiosk-api: queue-number tickets (번호표) at bank branches.
//!
//! The Spin components parse an HTTP request, authenticate the caller with
//! [`AuthConfig`], call a [`Kiosk`] method, and map the result to HTTP
//! ([`DomainError::status`], [`DomainError::body`], serde views). This crate
//! does no I/O of its own: state lives behind the [`Store`] trait, and the
//! clock (`now`) and randomness (`random`) are passed in.
//!
//! # Rules in brief
//! - Numbers run per branch, per service, per business day (see
//!   [`Branch::business_day`]), from 1, displayed `A-007`. They are taken
//!   with the store's atomic `increment`, so they never repeat. **Gaps**: a
//!   number is skipped only when its ticket is given up after the number
//!   was taken: the store failed before the ticket was written
//!   (`store_unavailable`), or its issuer died; a counter walking past such
//!   a number gives it up for good once a later ticket is written.
//! - Tickets are issued only within business hours (`branch_closed`, 409),
//!   and only while fewer than the service's `max_waiting` tickets wait in
//!   its queue (`queue_full`, 409; approximate by the number of issuers
//!   racing for the last places).
//! - Each kiosk key and each phone customer takes at most its branch's
//!   ticket rate, each kiosk and counter key makes at most the catalog's
//!   rate of core passthrough calls (`rate_limited`, 429, with the seconds
//!   until the window ends): [`rate`].
//! - A phone holds at most one active (waiting or called) ticket per branch.
//! - Waiting estimate: `estimated_wait_s = waiting_ahead × average service
//!   time / counters serving the service` ([`estimate_wait_s`]), where the
//!   average service time is the mean of the service's last
//!   [`SERVICE_TIME_SAMPLES`] measured service times once there are at least
//!   [`MIN_SERVICE_TIME_SAMPLES`], else the catalog's default minutes × 60
//!   ([`average_service_s`]). A service time is `completed_at − called_at` of
//!   a completed ticket, recorded for the service it was completed in;
//!   no-shows, cancels and samples ≤ 0 s or over [`MAX_SERVICE_TIME`] are not
//!   recorded.
//! - Counters call the oldest waiting ticket (by issue time, across the
//!   services they serve); a counter must finish (complete, no-show or
//!   transfer) its called ticket before calling the next one.
//! - Each business day ends ([`Branch::waiting_ends_at`]): tickets still
//!   waiting then read `expired` (reason `business_day_ended`), or, where
//!   the catalog says `carry_over`, stay in line under numbers that never
//!   restart.
//!
//! # Store layout
//! Every key is built in one module (`keys`); every document carries a
//! schema version; every status change goes through one table
//! (`record::change`).
//!
//! | key | value | written by |
//! | --- | --- | --- |
//! | `ticket:{id}` | the ticket record (JSON, `v` = [`TICKET_SCHEMA`]): the one truth about a ticket, including where it waits | `set_many` at issue, then compare-and-swap only |
//! | `lane-seq:{lane}` | positions taken in a lane; for a `main` lane, the ticket number | `increment` only |
//! | `lane-slot:{lane}:{pos}` | the id of the ticket issued there; for a move, `{id}@{rev}` (pending), `{id}@{rev}!` (reserved) or `void` | `set` by its placer; compare-and-swap to reserve or void a move |
//! | `lane-fate:{lane}:{pos}` | who decided a position first: its placer (+1) or a caller passing it while empty (+10^6) | `increment` only |
//! | `lane-left:{lane}` | positions that stopped waiting (waiting = seq − left) | `increment` only |
//! | `lane-head:{lane}` | lowest position that may still wait (a hint) | `set` |
//! | `desk:{branch}:{counter}` | the ticket the counter called last | `set` |
//! | `serving:{branch}:{service}:{day}` | the number called last (board) | `set` |
//! | `service-time-n:{branch}:{service}`, `service-time:{branch}:{service}:{i}` | a ring of the last 20 service times | `increment`, `set` |
//! | `idem:{purpose}:{scope}:{key}`, `idem-lock:…:{epoch}` | idempotency records and their creation locks ([`idempotency`]); `purpose` is `ticket`, `core` or `phone` (a phone's hold on a branch: the key is the branch) | lock `increment`, record `set` once by the winner, then compare-and-swap only |
//! | `rate:…` | rate windows ([`rate`]) | `increment`; deleted by the sweep |
//! | `{log}-log:{hour}`, `{log}-log:{hour}:{n}`, `{log}-swept:{hour}`, `{log}-sweep` | retention logs `rate`, `gc-tickets`, `gc-claims`: the keys falling due in each hour, and the sweep's progress (`retention`) | `increment`, `set`; deleted by the sweep |
//!
//! Nothing grows without end: a ticket's record, slot and fate, each
//! day's lane counters, idempotency records, phone holds, claim locks and
//! rate windows are logged when created and deleted once their retention
//! has passed (the catalog's `retention`: tickets 35 days after issue,
//! idempotency records 24 hours), a few per request that passes.
//!
//! `{lane}` is `{branch}:{service}:{day}:{main|moved}` (`all` instead of
//! the day where the catalog carries tickets over). How lanes stay correct
//! when placers die or fail between their writes is in `lanes`. No
//! operation reads a list whose length grows with the queue or with
//! history: each reads its ticket, a fixed set of counters, and a bounded
//! window of a lane.
//!
//! Decisions use only what is atomic on every store the app runs on:
//! `increment` (a position, a fate, a claim's lock) and compare-and-swap
//! of a key that already exists (a ticket record, an idempotency record).
//! Spin's stores get both right on SQLite; Spin's Redis store misreports a
//! lost compare-and-swap as won, so under `spin up` use its SQLite store
//! (kiosk-host's Redis store is exact).
//!
//! The core passthrough's rules are here too: which calls may go to the
//! core ([`CoreRoutes`], on a canonical path), who may make them
//! ([`core_client`]), and writes that take effect once ([`CoreWrites`]).

mod auth;
mod catalog;
mod core_routes;
mod core_writes;
mod error;
pub mod idempotency;
mod keys;
mod lanes;
mod model;
mod ops;
pub mod rate;
mod record;
mod retention;
mod service_times;
mod store;

pub use auth::{
    ApiKey, AuthConfig, Binding, Caller, Credential, Credentials, Environment, Misconfigured,
    mint_mobile_token, verify_mobile_token,
};
pub use catalog::{
    Branch, Catalog, CatalogError, Counter, DAY_CHANGE_MARGIN, DEFAULT_MAX_WAITING,
    DEFAULT_SERVE_AFTER_CLOSE_MINUTES, DayEnd, Hours, Interval, Retention, Service,
};
pub use core_routes::{CoreRoutes, CoreRoutesError, canonical_segments, core_client};
pub use core_writes::{
    CORE_WRITE_LEASE_MARGIN, CoreOutcome, CoreReply, CoreWrite, CoreWrites, core_write_fingerprint,
    core_write_lease, is_core_write,
};
pub use error::{DomainError, ErrorBody};
pub use idempotency::{CLAIM_LOCK_EPOCH, IDEMPOTENCY_SCHEMA};
pub use lanes::EXACT_AHEAD;
pub use model::{
    CallRequest, Channel, EndRequest, IdempotencyKey, IssueRequest, MAX_CUSTOMER_REF_LEN,
    MAX_IDEMPOTENCY_KEY_LEN, QueueView, ServiceQueueView, TicketStatus, TicketView,
    TransferRequest, fingerprint, parse_call_request, parse_end_request, parse_issue_request,
    parse_transfer_request,
};
pub use ops::{DEFAULT_MAX_ATTEMPTS, IDEMPOTENCY_LEASE, IDEMPOTENCY_RETENTION, Kiosk};
pub use rate::{Period, Rate};
pub use record::{REASON_DAY_ENDED, TICKET_SCHEMA, format_number};
pub use service_times::{MAX_SERVICE_TIME, MIN_SERVICE_TIME_SAMPLES, SERVICE_TIME_SAMPLES};
pub use store::{MemoryStore, Store, StoreError};

/// Estimated wait in seconds for a ticket with `waiting_ahead` tickets before it:
///
/// `waiting_ahead × service_s / counters_serving`, rounded down (0 if no
/// counter serves the service). Each counter serving the service is assumed
/// to take one customer every `service_s` seconds. The operations pass the
/// service's [`average_service_s`]: the moving average of its recent measured
/// service times, or the catalog's default minutes × 60 until there are
/// enough. It is 0 for the first in line and never decreases as
/// `waiting_ahead` grows.
pub fn estimate_wait_s(waiting_ahead: u32, service_s: u32, counters_serving: u32) -> u64 {
    if counters_serving == 0 {
        return 0;
    }
    u64::from(waiting_ahead) * u64::from(service_s) / u64::from(counters_serving)
}

/// Average service time in seconds of one service: the mean of `samples`
/// (rounded down) when there are at least [`MIN_SERVICE_TIME_SAMPLES`],
/// otherwise `default_s` (the catalog's default minutes × 60).
///
/// `samples` are the service times recorded in the queue document (the last
/// [`SERVICE_TIME_SAMPLES`] completions, each in `1..=`[`MAX_SERVICE_TIME`]);
/// this function averages whatever it is given. The mean lies between the
/// smallest and the largest sample.
pub fn average_service_s(samples: &[u32], default_s: u32) -> u32 {
    if samples.len() < MIN_SERVICE_TIME_SAMPLES {
        return default_s;
    }
    let sum: u64 = samples.iter().map(|&s| u64::from(s)).sum();
    // The mean of u32 values is at most their maximum, so it fits.
    u32::try_from(sum / samples.len() as u64).expect("mean of u32 values fits in u32")
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
        assert_eq!(estimate_wait_s(0, 300, 3), 0);
        assert_eq!(estimate_wait_s(1, 300, 3), 100);
        assert_eq!(estimate_wait_s(3, 300, 3), 300);
        assert_eq!(estimate_wait_s(2, 900, 1), 1800);
        assert_eq!(estimate_wait_s(5, 900, 0), 0);
        // Rounded down.
        assert_eq!(estimate_wait_s(1, 100, 3), 33);
        assert_eq!(estimate_wait_s(2, 100, 3), 66);
        assert_eq!(
            estimate_wait_s(u32::MAX, 86_400, 1),
            u64::from(u32::MAX) * 86_400
        );
        assert_eq!(
            estimate_wait_s(u32::MAX, u32::MAX, 1),
            u64::from(u32::MAX) * u64::from(u32::MAX)
        );
    }

    #[test]
    fn average_uses_the_default_below_five_samples() {
        assert_eq!(average_service_s(&[], 300), 300);
        assert_eq!(average_service_s(&[60], 300), 300);
        assert_eq!(average_service_s(&[60, 60, 60, 60], 300), 300);
    }

    #[test]
    fn average_is_the_mean_from_five_samples() {
        assert_eq!(average_service_s(&[60, 90, 120, 150, 180], 300), 120);
        // Rounded down: 601 / 5.
        assert_eq!(average_service_s(&[100, 100, 100, 100, 201], 300), 120);
        assert_eq!(average_service_s(&[1; 20], 300), 1);
        assert_eq!(average_service_s(&[u32::MAX; 20], 300), u32::MAX);
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
            service_s in 1u32..=86_400, counters in 1u32..50,
        ) {
            proptest::prop_assert_eq!(estimate_wait_s(0, service_s, counters), 0);
            proptest::prop_assert!(
                estimate_wait_s(ahead, service_s, counters)
                    <= estimate_wait_s(ahead + extra, service_s, counters)
            );
        }

        #[test]
        fn estimate_is_never_negative_and_never_exceeds_one_counter(
            ahead in proptest::prelude::any::<u32>(),
            service_s in proptest::prelude::any::<u32>(),
            counters in proptest::prelude::any::<u32>(),
        ) {
            // u64 cannot be negative; it also cannot overflow and is at most
            // what a single counter would take.
            let e = estimate_wait_s(ahead, service_s, counters);
            proptest::prop_assert!(e <= u64::from(ahead) * u64::from(service_s));
        }

        #[test]
        fn average_lies_between_min_and_max_sample(
            samples in proptest::collection::vec(1u32..=14_400, 0..=SERVICE_TIME_SAMPLES),
            default_s in 60u32..=86_400,
        ) {
            let avg = average_service_s(&samples, default_s);
            if samples.len() < MIN_SERVICE_TIME_SAMPLES {
                proptest::prop_assert_eq!(avg, default_s);
            } else {
                let min = *samples.iter().min().unwrap();
                let max = *samples.iter().max().unwrap();
                proptest::prop_assert!(min <= avg && avg <= max, "{} not in {}..={}", avg, min, max);
            }
        }

        #[test]
        fn average_of_any_u32_samples_lies_between_min_and_max(
            samples in proptest::collection::vec(proptest::prelude::any::<u32>(), 5..64),
        ) {
            let avg = average_service_s(&samples, 300);
            proptest::prop_assert!(*samples.iter().min().unwrap() <= avg);
            proptest::prop_assert!(avg <= *samples.iter().max().unwrap());
        }

        #[test]
        fn ticket_id_is_injective(a in proptest::array::uniform16(0u8..), b in proptest::array::uniform16(0u8..)) {
            proptest::prop_assert_eq!(a == b, ticket_id(a) == ticket_id(b));
            proptest::prop_assert!(is_ticket_id(&ticket_id(a)));
        }
    }
}
