//! Rates per credential: how many tickets a kiosk key or a phone customer
//! may take, and how many calls a kiosk or counter key may send through the
//! core passthrough, per fixed time window.
//!
//! # Counting
//!
//! A window is a fixed slice of unix time, `[start, start + period)`, with
//! `start` a multiple of the period (minutes start at :00 seconds, hours at
//! :00 minutes UTC). Each admission is one atomic `increment` of
//! `rate:{subject}:{start}` ([`rate_key`]); the request is admitted while
//! the new count is at most the limit, else refused with `rate_limited` and
//! `Retry-After` = seconds until the window ends. The count is shared by
//! every host using the store; refused requests count too, so a client that
//! keeps pushing stays refused until the window ends. Fixed windows let a
//! client take up to twice the limit across a window boundary (the end of
//! one window and the start of the next); they cost one increment per
//! request, where a sliding window would cost more.
//!
//! # Sweeping old windows
//!
//! The request that opens a window (its increment returned 1) logs the
//! window's key in the `rate` retention log, due an hour after the window
//! ends, and takes one sweep step (the crate's `retention` module): each window
//! logged deletes up to two older ones, so the keys alive are those of the
//! last two hours plus whatever traffic has not yet caught up on, and a
//! request never does more than a fixed number of extra store calls (only
//! when it opens a window).

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::DomainError;
use crate::retention;
use crate::store::{Store, escape_key_part};

/// The length of a rate's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// 60 seconds.
    Minute,
    /// 3600 seconds.
    Hour,
}

impl Period {
    /// Length in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Period::Minute => 60,
            Period::Hour => 3600,
        }
    }

    /// `"minute"` or `"hour"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Minute => "minute",
            Period::Hour => "hour",
        }
    }
}

/// At most `limit` admissions per `per`, per credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Admissions per window (at least 1).
    pub limit: u32,
    /// The window.
    pub per: Period,
}

impl Rate {
    /// Tickets a kiosk key may take per branch when the catalog says nothing:
    /// two a second on average, far above a real lobby's pace.
    pub const KIOSK_TICKETS: Rate = Rate {
        limit: 120,
        per: Period::Minute,
    };
    /// Tickets a phone customer may take per branch when the catalog says
    /// nothing: a customer who cancels and takes again a few times an hour.
    pub const PHONE_TICKETS: Rate = Rate {
        limit: 3,
        per: Period::Hour,
    };
    /// Core passthrough calls per kiosk or counter key when the catalog says
    /// nothing: one a second on average.
    pub const CORE_CALLS: Rate = Rate {
        limit: 60,
        per: Period::Minute,
    };
}

/// A fixed window of unix seconds, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First second of the window, a multiple of its period.
    pub start: i64,
    /// First second after it.
    pub end: i64,
}

impl Window {
    /// The window of `period` that contains the unix second `at`.
    pub fn containing(at: i64, period: Period) -> Window {
        let p = period.seconds();
        let start = at.div_euclid(p) * p;
        Window {
            start,
            end: start.saturating_add(p),
        }
    }

    /// Seconds from `at` (inside the window) until the window ends: at
    /// least 1, at most the period.
    pub fn retry_after_s(&self, at: i64) -> u64 {
        u64::try_from(self.end.saturating_sub(at))
            .unwrap_or(1)
            .max(1)
    }
}

/// What a rate is counted for.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// Tickets taken by a kiosk key or a phone customer at a branch.
    Tickets {
        /// The branch id.
        branch: &'a str,
        /// The caller taking them.
        caller: &'a Caller,
    },
    /// Core passthrough calls by a kiosk or counter key.
    CoreCalls {
        /// The caller making them.
        caller: &'a Caller,
    },
}

impl Subject<'_> {
    /// `tickets:{branch}:{scope}` or `core:{scope}`, where scope is
    /// `kiosk/{id}`, `counter/{id}` or `mobile/{customer_ref}`; `:` and `%`
    /// in each part are %-escaped, so no two subjects share a key.
    pub fn key_part(&self) -> String {
        match self {
            Subject::Tickets { branch, caller } => format!(
                "tickets:{}:{}",
                escape_key_part(branch),
                escape_key_part(&caller.idempotency_scope())
            ),
            Subject::CoreCalls { caller } => {
                format!("core:{}", escape_key_part(&caller.idempotency_scope()))
            }
        }
    }

    /// Who is limited, for the refusal's message.
    fn describe(&self) -> String {
        let who = |caller: &Caller| match caller {
            Caller::Kiosk { .. } => "this kiosk key",
            Caller::Counter { .. } => "this counter key",
            Caller::Mobile { .. } => "you",
        };
        match self {
            Subject::Tickets { branch, caller } => {
                format!("{} may take tickets at branch {branch:?}", who(caller))
            }
            Subject::CoreCalls { caller } => {
                format!("{} may call the core banking system", who(caller))
            }
        }
    }
}

/// The store key counting `subject` in the window starting at `window_start`.
pub fn rate_key(subject: &Subject<'_>, window_start: i64) -> String {
    format!("rate:{}:{window_start}", subject.key_part())
}

/// Admits one more request of `subject` under `rate` at `now`, or refuses it
/// with `rate_limited` (and the seconds until its window ends). One
/// `increment`; the request that opens a window also logs it and sweeps old
/// ones (see the module docs). Only the increment's failure fails the call
/// (`store_unavailable`).
pub fn admit<S: Store>(
    store: &S,
    subject: &Subject<'_>,
    rate: Rate,
    now: DateTime<Utc>,
) -> Result<(), DomainError> {
    let at = now.timestamp();
    let window = Window::containing(at, rate.per);
    let key = rate_key(subject, window.start);
    let count = store.increment(&key, 1)?;
    if count == 1 {
        // Deleted an hour after the window ends (see `crate::retention`).
        let end = DateTime::from_timestamp(window.end, 0).unwrap_or(now);
        retention::RATE.record(store, end + TimeDelta::hours(1), &[key]);
        retention::RATE.sweep(store, now);
    }
    if count > i64::from(rate.limit) {
        let retry_after_s = window.retry_after_s(at);
        return Err(DomainError::RateLimited {
            message: format!(
                "{} {} times per {}; retry in {retry_after_s} s",
                subject.describe(),
                rate.limit,
                rate.per.as_str()
            ),
            retry_after_s,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use chrono::TimeDelta;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    fn kiosk() -> Caller {
        Caller::Kiosk { id: "k1".into() }
    }

    #[test]
    fn windows_are_aligned_to_their_period() {
        // 2026-03-02T01:30:17Z.
        let w = Window::containing(1_772_415_017, Period::Minute);
        assert_eq!((w.start, w.end), (1_772_415_000, 1_772_415_060));
        assert_eq!(w.retry_after_s(1_772_415_017), 43);
        assert_eq!(w.retry_after_s(1_772_415_059), 1);
        let h = Window::containing(1_772_415_017, Period::Hour);
        assert_eq!((h.start, h.end), (1_772_413_200, 1_772_416_800));
        assert_eq!(h.retry_after_s(1_772_415_017), 1783);
        assert_eq!(Window::containing(-1, Period::Minute).start, -60);
        assert_eq!(
            Window::containing(0, Period::Hour),
            Window {
                start: 0,
                end: 3600
            }
        );
    }

    #[test]
    fn keys_name_the_subject_and_window() {
        let k = kiosk();
        let phone = Caller::Mobile {
            customer_ref: "a:b%".into(),
        };
        assert_eq!(
            rate_key(
                &Subject::Tickets {
                    branch: "jongno",
                    caller: &k
                },
                60
            ),
            "rate:tickets:jongno:kiosk/k1:60"
        );
        assert_eq!(
            rate_key(
                &Subject::Tickets {
                    branch: "jongno",
                    caller: &phone
                },
                3600
            ),
            "rate:tickets:jongno:mobile/a%3Ab%25:3600"
        );
        assert_eq!(
            rate_key(&Subject::CoreCalls { caller: &k }, 0),
            "rate:core:kiosk/k1:0"
        );
    }

    #[test]
    fn admits_up_to_the_limit_then_refuses_until_the_window_ends() {
        let s = MemoryStore::new();
        let k = kiosk();
        let subject = Subject::Tickets {
            branch: "b",
            caller: &k,
        };
        let rate = Rate {
            limit: 3,
            per: Period::Minute,
        };
        for i in 0..3 {
            admit(&s, &subject, rate, at(6000 + i)).unwrap();
        }
        let e = admit(&s, &subject, rate, at(6010)).unwrap_err();
        assert_eq!(
            (e.code(), e.status(), e.retry_after_s()),
            ("rate_limited", 429, Some(50))
        );
        assert!(e.to_string().contains("3 times per minute"), "{e}");
        // Another credential, another branch: its own count.
        let other = Caller::Kiosk { id: "k2".into() };
        admit(
            &s,
            &Subject::Tickets {
                branch: "b",
                caller: &other,
            },
            rate,
            at(6010),
        )
        .unwrap();
        admit(
            &s,
            &Subject::Tickets {
                branch: "c",
                caller: &k,
            },
            rate,
            at(6010),
        )
        .unwrap();
        // The next window starts afresh.
        admit(&s, &subject, rate, at(6060)).unwrap();
    }

    #[test]
    fn old_windows_are_swept_by_later_requests() {
        let s = MemoryStore::new();
        let rate = Rate {
            limit: 10,
            per: Period::Minute,
        };
        let callers: Vec<Caller> = (0..5)
            .map(|i| Caller::Kiosk {
                id: format!("k{i}"),
            })
            .collect();
        let start = 36_000;
        // Five credentials, one window each per minute, for an hour.
        for minute in 0..60 {
            for c in &callers {
                admit(
                    &s,
                    &Subject::CoreCalls { caller: c },
                    rate,
                    at(start + minute * 60),
                )
                .unwrap();
            }
        }
        let windows = |s: &MemoryStore| s.keys().iter().filter(|k| k.starts_with("rate:")).count();
        assert_eq!(windows(&s), 300);
        // Three hours later, traffic of the same shape deletes the old
        // windows as it opens its own: two old per new.
        let later = start + 3 * 3600;
        for minute in 0..60 {
            for c in &callers {
                admit(
                    &s,
                    &Subject::CoreCalls { caller: c },
                    rate,
                    at(later + minute * 60),
                )
                .unwrap();
            }
        }
        let keys = s.keys();
        let old = keys
            .iter()
            .filter(|k| k.starts_with("rate:"))
            .filter(|k| k.rsplit(':').next().unwrap().parse::<i64>().unwrap() < later)
            .count();
        assert_eq!(old, 0, "old windows left");
        assert_eq!(windows(&s), 300);
        // The logs of swept buckets are gone as well: what is left logs
        // the new windows (300 entries, two hour buckets).
        let logs = keys.iter().filter(|k| k.starts_with("rate-log:")).count();
        assert_eq!(logs, 300 + 2);
        assert!(
            !keys.iter().any(|k| k.starts_with("rate-swept:")),
            "{keys:?}"
        );
    }

    #[test]
    fn a_quiet_store_catches_up_one_bucket_per_opened_window() {
        let s = MemoryStore::new();
        let k = kiosk();
        let rate = Rate {
            limit: 10,
            per: Period::Minute,
        };
        admit(&s, &Subject::CoreCalls { caller: &k }, rate, at(0)).unwrap();
        admit(&s, &Subject::CoreCalls { caller: &k }, rate, at(60)).unwrap();
        // A week later, the next windows walk the mark forward and delete
        // the two old windows on the way.
        let week = TimeDelta::days(7).num_seconds();
        for minute in 0..400 {
            admit(
                &s,
                &Subject::CoreCalls { caller: &k },
                rate,
                at(week + minute * 60),
            )
            .unwrap();
        }
        assert!(s.get("rate:core:kiosk/k1:0").unwrap().is_none());
        assert!(s.get("rate:core:kiosk/k1:60").unwrap().is_none());
    }

    proptest::proptest! {
        #[test]
        fn the_window_contains_its_second(at in -10_000_000_000i64..10_000_000_000, hour in proptest::prelude::any::<bool>()) {
            let period = if hour { Period::Hour } else { Period::Minute };
            let w = Window::containing(at, period);
            proptest::prop_assert!(w.start <= at && at < w.end);
            proptest::prop_assert_eq!(w.end - w.start, period.seconds());
            proptest::prop_assert_eq!(w.start.rem_euclid(period.seconds()), 0);
            let r = w.retry_after_s(at);
            proptest::prop_assert!(r >= 1 && r as i64 <= period.seconds());
            proptest::prop_assert_eq!(Window::containing(w.end - 1, period), w);
            proptest::prop_assert_ne!(Window::containing(w.end, period), w);
        }

        #[test]
        fn exactly_the_limit_is_admitted_per_window(
            limit in 1u32..20,
            offsets in proptest::collection::vec(0i64..180, 1..80),
        ) {
            let s = MemoryStore::new();
            let k = kiosk();
            let subject = Subject::Tickets { branch: "b", caller: &k };
            let rate = Rate { limit, per: Period::Minute };
            let mut offsets = offsets;
            offsets.sort();
            let mut per_window = std::collections::BTreeMap::<i64, (u32, u32)>::new();
            for o in offsets {
                let t = 600_000 + o;
                let w = Window::containing(t, Period::Minute).start;
                let e = per_window.entry(w).or_default();
                match admit(&s, &subject, rate, at(t)) {
                    Ok(()) => e.0 += 1,
                    Err(err) => {
                        proptest::prop_assert_eq!(err.code(), "rate_limited");
                        proptest::prop_assert_eq!(err.retry_after_s(), Some(Window::containing(t, Period::Minute).retry_after_s(t)));
                        e.1 += 1;
                    }
                }
            }
            for (admitted, refused) in per_window.values() {
                proptest::prop_assert!(*admitted <= limit);
                if *refused > 0 {
                    proptest::prop_assert_eq!(*admitted, limit);
                }
            }
        }

        #[test]
        fn distinct_subjects_have_distinct_keys(
            a in "[a-z:%/]{0,6}", b in "[a-z:%/]{0,6}", c in "[a-z:%/]{0,6}", d in "[a-z:%/]{0,6}",
        ) {
            let (ca, cb) = (Caller::Mobile { customer_ref: b.clone() }, Caller::Mobile { customer_ref: d.clone() });
            let ka = rate_key(&Subject::Tickets { branch: &a, caller: &ca }, 0);
            let kb = rate_key(&Subject::Tickets { branch: &c, caller: &cb }, 0);
            proptest::prop_assert_eq!(ka == kb, a == c && b == d);
        }
    }
}
