//! Retention: deleting what has served its time, a few keys at a time.
//!
//! `wasi:keyvalue` and Spin's key-value have no expiry and no background
//! work, and the app never lists keys. So whoever creates keys that must
//! go one day logs them under the hour they fall due, and requests that
//! pass sweep the oldest due hour a little at a time:
//!
//! | key | value |
//! | --- | --- |
//! | `{log}-log:{hour}` | how many entries fall due in that hour (`increment`) |
//! | `{log}-log:{hour}:{n}` | the `n`th entry: the keys to delete, one per line |
//! | `{log}-swept:{hour}` | how many of its entries sweepers have claimed (`increment`) |
//! | `{log}-sweep` | the oldest hour not yet swept (decimal) |
//!
//! A sweep step claims up to [`SWEEP_BATCH`] entries of the oldest unswept
//! hour, if that hour has passed, and deletes the keys they name and the
//! entries; an hour whose entries are all claimed is finished (its two
//! counters deleted, the mark moved on). Each request that logs an entry
//! sweeps one step, so each new entry removes up to two due ones: what is
//! kept is what is not due yet plus whatever traffic has not caught up on,
//! and a step costs at most 6 + [`SWEEP_BATCH`] × (keys per entry + 1)
//! store calls (hours in which nothing was logged are skipped, up to two
//! days of them per step). Housekeeping failures never fail a request; their cost is
//! a key left behind. Hosts sharing a store must agree on the time to
//! within an hour.
//!
//! The logs: `rate` (rate windows, an hour after they end), `gc-tickets`
//! (ticket records, their lane positions and each day's lane counters,
//! the catalog's ticket retention after issue) and `gc-claims`
//! (idempotency records and phone holds after their retention, claim locks
//! after two lock epochs).

use chrono::{DateTime, TimeDelta, Utc};

use crate::lanes::decode_counter;
use crate::store::Store;

/// Width of the buckets entries are logged in (an hour).
pub const SWEEP_BUCKET_S: i64 = 3600;

/// Log entries one sweep step claims.
pub const SWEEP_BATCH: u32 = 2;

/// Empty hours one sweep step may skip.
const SKIP_BUCKETS: i64 = 48;

/// Default retention of ticket records, lane positions and day counters
/// after issue (the catalog's `retention.tickets_days`).
pub const DEFAULT_TICKET_RETENTION: TimeDelta = TimeDelta::days(35);

/// One log of keys falling due.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Log {
    name: &'static str,
    /// For keys whose life can be extended after they were logged (a
    /// record taken over): the prefix of those keys, and until when a
    /// stored value must be kept. Such a key is read before it goes, and
    /// logged again for that time if it has not passed.
    kept: Option<(&'static str, KeptUntil)>,
}

/// Until when a stored value must be kept, if it says.
type KeptUntil = fn(&[u8]) -> Option<DateTime<Utc>>;

/// Rate windows.
pub(crate) const RATE: Log = Log {
    name: "rate",
    kept: None,
};
/// Tickets and their lanes.
pub(crate) const TICKETS: Log = Log {
    name: "gc-tickets",
    kept: None,
};
/// Idempotency records, phone holds and their locks.
pub(crate) const CLAIMS: Log = Log {
    name: "gc-claims",
    kept: Some(("idem:", crate::idempotency::kept_until)),
};

impl Log {
    fn count_key(&self, bucket: i64) -> String {
        format!("{}-log:{bucket}", self.name)
    }

    fn entry_key(&self, bucket: i64, n: u32) -> String {
        format!("{}-log:{bucket}:{n}", self.name)
    }

    fn swept_key(&self, bucket: i64) -> String {
        format!("{}-swept:{bucket}", self.name)
    }

    fn mark_key(&self) -> String {
        format!("{}-sweep", self.name)
    }

    /// Logs `keys` for deletion once `due` has passed (2 store calls).
    pub fn record<S: Store>(&self, store: &S, due: DateTime<Utc>, keys: &[String]) {
        let bucket = due.timestamp().div_euclid(SWEEP_BUCKET_S);
        if let Ok(n) = store.increment(&self.count_key(bucket), 1)
            && let Ok(n) = u32::try_from(n)
        {
            let _ = store.set(&self.entry_key(bucket, n), keys.join("\n").as_bytes());
        }
    }

    /// Deletes `key`, unless its value says it is kept past `now`: then
    /// it is logged again for that time.
    fn expire<S: Store>(&self, store: &S, key: &str, now: DateTime<Utc>) {
        if let Some((prefix, kept_until)) = self.kept
            && key.starts_with(prefix)
        {
            match store.get(key) {
                Ok(Some(value)) => {
                    if let Some(until) = kept_until(&value).filter(|t| *t > now) {
                        self.record(store, until, &[key.to_owned()]);
                        return;
                    }
                }
                Ok(None) => return,
                // Unreadable now: tried again in an hour, never deleted
                // before its time.
                Err(_) => {
                    let later = now + TimeDelta::seconds(SWEEP_BUCKET_S);
                    self.record(store, later, &[key.to_owned()]);
                    return;
                }
            }
        }
        let _ = store.delete(key);
    }

    /// One bounded step of the sweep at `now`.
    pub fn sweep<S: Store>(&self, store: &S, now: DateTime<Utc>) {
        let current = now.timestamp().div_euclid(SWEEP_BUCKET_S);
        let mark_key = self.mark_key();
        let Ok(mark) = store.get(&mark_key) else {
            return;
        };
        let Some(bucket) = mark
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse::<i64>().ok())
        else {
            // First use (or an unreadable mark): nothing logged so far is
            // due before the current hour. Racing first users write the
            // same value.
            let _ = store.set(&mark_key, current.to_string().as_bytes());
            return;
        };
        if bucket >= current {
            return;
        }
        // Skip hours nobody logged anything in, up to a day of them per
        // step, in one read: quiet nights cost one step, not 24.
        let ahead: Vec<i64> = (bucket..current.min(bucket + SKIP_BUCKETS)).collect();
        let counts: Vec<String> = ahead.iter().map(|&b| self.count_key(b)).collect();
        let Ok(values) = store.get_many(&counts) else {
            return;
        };
        let found = ahead.iter().zip(&values).find_map(|(&b, v)| {
            let n = v.as_deref().and_then(decode_counter)?;
            (n > 0).then(|| (b, u32::try_from(n).unwrap_or(u32::MAX)))
        });
        let Some((bucket_found, logged)) = found else {
            let next = ahead.last().map_or(bucket, |b| b + 1);
            let _ = store.compare_and_swap(
                &mark_key,
                Some(bucket.to_string().as_bytes()),
                next.to_string().as_bytes(),
            );
            return;
        };
        if bucket_found > bucket {
            let _ = store.compare_and_swap(
                &mark_key,
                Some(bucket.to_string().as_bytes()),
                bucket_found.to_string().as_bytes(),
            );
        }
        let bucket = bucket_found;
        let Ok(claimed) = store.increment(&self.swept_key(bucket), i64::from(SWEEP_BATCH)) else {
            return;
        };
        let last = u32::try_from(claimed).unwrap_or(u32::MAX);
        let first = last.saturating_sub(SWEEP_BATCH - 1).max(1);
        let entries: Vec<String> = (first..=last.min(logged))
            .map(|n| self.entry_key(bucket, n))
            .collect();
        if !entries.is_empty()
            && let Ok(names) = store.get_many(&entries)
        {
            for (entry, names) in entries.iter().zip(names) {
                let names = names.unwrap_or_default();
                for name in String::from_utf8_lossy(&names).lines() {
                    if !name.is_empty() {
                        self.expire(store, name, now);
                    }
                }
                let _ = store.delete(entry);
            }
        }
        if last >= logged {
            // Every entry is claimed: the hour is done. A sweeper racing
            // this one on the same hour finishes it the same way.
            let _ = store.compare_and_swap(
                &mark_key,
                Some(bucket.to_string().as_bytes()),
                (bucket + 1).to_string().as_bytes(),
            );
            let _ = store.delete(&self.count_key(bucket));
            let _ = store.delete(&self.swept_key(bucket));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_772_413_200 + h * 3600, 0).unwrap()
    }

    #[test]
    fn logged_keys_go_once_due_and_the_log_goes_with_them() {
        let s = MemoryStore::new();
        TICKETS.sweep(&s, at(0)); // sets the mark
        for i in 0..3 {
            let k = format!("ticket:{i}");
            s.set(&k, b"x").unwrap();
            TICKETS.record(&s, at(1), &[k, format!("slot:{i}")]);
        }
        // Not due yet.
        TICKETS.sweep(&s, at(1));
        assert!(s.get("ticket:0").unwrap().is_some());
        // Due: two entries per step, the hour finished by the second.
        TICKETS.sweep(&s, at(2));
        assert!(s.get("ticket:0").unwrap().is_none());
        assert!(s.get("ticket:2").unwrap().is_some());
        TICKETS.sweep(&s, at(2));
        TICKETS.sweep(&s, at(2));
        let left: Vec<String> = s.keys();
        assert_eq!(left, vec!["gc-tickets-sweep".to_string()], "{left:?}");
    }
}
