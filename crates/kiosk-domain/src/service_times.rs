//! Measured service times: the last [`SERVICE_TIME_SAMPLES`] of a service,
//! in a ring of keys written by `increment` (which slot) and `set`.

use chrono::{DateTime, TimeDelta, Utc};

use crate::catalog::{Branch, Service};
use crate::keys;
use crate::store::Store;

/// How many service times are kept per service (the most recent ones).
pub const SERVICE_TIME_SAMPLES: usize = 20;

/// How many recorded service times a service needs before their average
/// replaces the catalog's default minutes in waiting estimates.
pub const MIN_SERVICE_TIME_SAMPLES: usize = 5;

/// Longest plausible service time. A completed ticket whose service time
/// (completed − called) is longer than this, or not positive, is not recorded.
pub const MAX_SERVICE_TIME: TimeDelta = TimeDelta::hours(4);

/// The keys [`samples`] reads: the ring's slots.
pub(crate) fn keys(branch: &str, service: &str) -> Vec<String> {
    (0..SERVICE_TIME_SAMPLES as u64)
        .map(|i| keys::service_time(branch, service, i))
        .collect()
}

/// The samples among the values of [`keys`].
pub(crate) fn samples(values: &[Option<Vec<u8>>]) -> Vec<u32> {
    values
        .iter()
        .flatten()
        .filter_map(|v| std::str::from_utf8(v).ok()?.parse::<u32>().ok())
        .collect()
}

/// Average service time in seconds of `service` from its `samples`.
pub(crate) fn average_s(samples: &[u32], service: &Service) -> u32 {
    crate::average_service_s(samples, service.minutes.saturating_mul(60))
}

/// Estimated wait with `ahead` tickets before it.
pub(crate) fn estimate(branch: &Branch, service: &Service, samples: &[u32], ahead: u32) -> u64 {
    crate::estimate_wait_s(
        ahead,
        average_s(samples, service),
        branch.counters_serving(&service.id),
    )
}

/// Records `completed_at − called_at` for `service`, unless it is ≤ 0 s or
/// longer than [`MAX_SERVICE_TIME`]. Best effort: a lost sample only makes
/// the average a little older.
pub(crate) fn record<S: Store>(
    store: &S,
    branch: &str,
    service: &str,
    called_at: DateTime<Utc>,
    completed_at: DateTime<Utc>,
) {
    let secs = (completed_at - called_at).num_seconds();
    if secs <= 0 || secs > MAX_SERVICE_TIME.num_seconds() {
        return;
    }
    let Ok(n) = store.increment(&keys::service_time_count(branch, service), 1) else {
        return;
    };
    let slot = u64::try_from(n - 1).unwrap_or(0) % SERVICE_TIME_SAMPLES as u64;
    let _ = store.set(
        &keys::service_time(branch, service, slot),
        secs.to_string().as_bytes(),
    );
}
