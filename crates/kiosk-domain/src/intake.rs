//! The issue log: how issued tickets reach the branch's queue document
//! without issuers writing that document.
//!
//! Issuing takes a number with `increment` on `seq:{branch}:{service}:{day}`
//! and then writes the ticket record, in one `set_many`, at `ticket:{id}` and
//! at its *slot* `slot:{branch}:{service}:{day}:{number}`. That is all: no
//! issuer compare-and-swaps a shared document, so issuers contend neither
//! with each other nor with counters, and issuing costs the same however
//! long the queue is.
//!
//! Whoever next changes the branch's queue document (a counter calling,
//! completing, transferring; a cancel) first *merges* the log into it: per
//! service it reads the counters of the days not yet merged through and the
//! slots of the new numbers, adds their tickets, and advances the service's
//! [`Merged`] mark, all in the same compare-and-swap as its own change.
//! Readers (the queue board) merge into a copy and write nothing.
//!
//! A slot can be missing below its counter: its issuer is between
//! `increment` and `set_many`, or failed there. The merge records a [`Hole`]
//! and looks again on later merges; after [`HOLE_LEASE`] the number is a gap.
//! A request cannot stay between the two writes that long (hosts bound a
//! request far below it), so a ticket never lands after its hole was given
//! up. A slot holding [`VOID`] is a number its issuer gave up on purpose: a
//! gap at once.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

use crate::catalog::Branch;
use crate::error::DomainError;
use crate::queue::{Hole, Merged, QueueDoc, TicketRecord};
use crate::store::Store;

/// Most numbers one merge takes from one service's log; the rest waits for
/// the next merge (which a busy queue soon has). Keeps one request bounded.
pub const MERGE_BATCH: u32 = 1000;

/// How long a merge keeps expecting a missing slot before it counts the
/// number as a gap.
pub const HOLE_LEASE: TimeDelta = TimeDelta::minutes(2);

/// A queue document that has never merged a service looks this many days
/// back for its numbers (so a branch whose tickets were never called yet
/// keeps yesterday's waiting customers, and nothing older than a week).
pub const LOOKBACK_DAYS: u32 = 7;

/// Slot value of a number given up by its issuer.
pub(crate) const VOID: &[u8] = b"void";

pub(crate) fn seq_key(branch: &str, service: &str, day: NaiveDate) -> String {
    format!("seq:{branch}:{service}:{day}")
}

pub(crate) fn slot_key(branch: &str, service: &str, day: NaiveDate, number: u32) -> String {
    format!("slot:{branch}:{service}:{day}:{number}")
}

/// A counter as the store keeps it: decimal text (Redis `INCRBY`, the memory
/// store) or Spin's SQLite format, the i64's 8 bytes little-endian. The two
/// cannot be confused for a real count: 8 little-endian bytes that are all
/// ASCII digits would be a count above 3.4 × 10^18.
pub(crate) fn decode_counter(bytes: &[u8]) -> Option<u32> {
    let value = if !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit) {
        std::str::from_utf8(bytes).ok()?.parse::<u64>().ok()?
    } else {
        let le: [u8; 8] = bytes.try_into().ok()?;
        u64::try_from(i64::from_le_bytes(le)).ok()?
    };
    Some(u32::try_from(value).unwrap_or(u32::MAX))
}

/// One day of one service's log, from `after` (exclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lane {
    service: String,
    day: NaiveDate,
    after: u32,
}

/// The days of `service`'s log a merge on `today` must look at, oldest
/// first: from the service's merged mark (or [`LOOKBACK_DAYS`] back, if it
/// has none) to today.
fn lanes_of(doc: &QueueDoc, service: &str, today: NaiveDate) -> Vec<Lane> {
    let lane = |day, after| Lane {
        service: service.to_owned(),
        day,
        after,
    };
    let oldest = today - TimeDelta::days(i64::from(LOOKBACK_DAYS));
    match doc.merged_mark(service) {
        // The clock went back (or hosts disagree at midnight): finish the
        // mark's day; today's numbers wait until the clock catches up, so no
        // range is ever read twice.
        Some(m) if m.day >= today => vec![lane(m.day, m.through)],
        Some(m) => {
            let mut lanes = Vec::new();
            let mut day = m.day.max(oldest);
            while day <= today {
                lanes.push(lane(day, if day == m.day { m.through } else { 0 }));
                day = day.succ_opt().expect("dates near today have successors");
            }
            lanes
        }
        None => {
            let mut lanes = Vec::new();
            let mut day = oldest;
            while day <= today {
                lanes.push(lane(day, 0));
                day = day.succ_opt().expect("dates near today have successors");
            }
            lanes
        }
    }
}

/// What a lane holds now: numbers `after+1..=end` are read; `counter` is
/// the last number taken.
#[derive(Debug)]
struct Plan {
    lane: Lane,
    end: u32,
    counter: u32,
}

/// The part of a branch's issue log that its queue document has not merged
/// yet, as read from the store. [`Intake::apply`] merges it.
#[derive(Debug)]
pub(crate) struct Intake {
    plans: Vec<Plan>,
    /// Values of the planned slots in plan order, then of the document's holes.
    values: Vec<Option<Vec<u8>>>,
}

impl Intake {
    /// Reads what `doc` (the branch's document as read) has not merged:
    /// one `get_many` of counters, one of slots (none when nothing is new).
    pub fn read<S: Store>(
        store: &S,
        branch: &Branch,
        doc: &QueueDoc,
        today: NaiveDate,
    ) -> Result<Self, DomainError> {
        let lanes: Vec<Lane> = branch
            .services
            .iter()
            .flat_map(|s| lanes_of(doc, &s.id, today))
            .collect();
        let counter_keys: Vec<String> = lanes
            .iter()
            .map(|l| seq_key(&branch.id, &l.service, l.day))
            .collect();
        let counters = store.get_many(&counter_keys)?;
        let mut plans: Vec<Plan> = Vec::new();
        let mut capped: Vec<&str> = Vec::new();
        for (lane, value) in lanes.iter().zip(counters) {
            if capped.contains(&lane.service.as_str()) {
                continue;
            }
            let counter = value.as_deref().and_then(decode_counter).unwrap_or(0);
            let end = counter
                .min(lane.after.saturating_add(MERGE_BATCH))
                .max(lane.after);
            if end < counter {
                // Later days of this service wait until this one is merged.
                capped.push(&lane.service);
            }
            plans.push(Plan {
                lane: lane.clone(),
                end,
                counter,
            });
        }
        let mut slot_keys: Vec<String> = Vec::new();
        for p in &plans {
            for n in p.lane.after + 1..=p.end {
                slot_keys.push(slot_key(&branch.id, &p.lane.service, p.lane.day, n));
            }
        }
        for h in &doc.holes {
            slot_keys.push(slot_key(&branch.id, &h.service, h.day, h.number));
        }
        let values = if slot_keys.is_empty() {
            Vec::new()
        } else {
            store.get_many(&slot_keys)?
        };
        Ok(Intake { plans, values })
    }

    /// Numbers taken in `service` beyond what this intake read (more than
    /// [`MERGE_BATCH`] were new): waiting, as far as anyone can tell.
    pub fn backlog(&self, service: &str) -> u32 {
        self.plans
            .iter()
            .filter(|p| p.lane.service == service)
            .map(|p| p.counter - p.end)
            .sum()
    }

    /// The last number taken in `service` on `day`, if this intake read
    /// that day's counter.
    pub fn last_taken(&self, service: &str, day: NaiveDate) -> Option<u32> {
        self.plans
            .iter()
            .find(|p| p.lane.service == service && p.lane.day == day)
            .map(|p| p.counter)
            .filter(|&n| n > 0)
    }

    /// Merges into `doc` (the document this intake was read against): new
    /// tickets are added, missing slots become holes, holes that filled are
    /// merged and holes older than [`HOLE_LEASE`] dropped, and each
    /// service's mark advances. Returns whether `doc` changed.
    pub fn apply(&self, doc: &mut QueueDoc, now: DateTime<Utc>) -> bool {
        let planned: usize = self
            .plans
            .iter()
            .map(|p| (p.end - p.lane.after) as usize)
            .sum();
        let (plan_values, hole_values) = self.values.split_at(planned.min(self.values.len()));
        let mut changed = false;

        let holes = std::mem::take(&mut doc.holes);
        for (hole, value) in holes.into_iter().zip(hole_values) {
            match value {
                Some(bytes) => {
                    doc.admit(bytes);
                    changed = true;
                }
                None if now - hole.since < HOLE_LEASE => doc.holes.push(hole),
                None => changed = true,
            }
        }

        let mut values = plan_values.iter();
        for p in &self.plans {
            for number in p.lane.after + 1..=p.end {
                changed = true;
                match values.next() {
                    Some(Some(bytes)) => {
                        doc.admit(bytes);
                    }
                    _ => doc.holes.push(Hole {
                        service: p.lane.service.clone(),
                        day: p.lane.day,
                        number,
                        since: now,
                    }),
                }
            }
            let mark = Some(Merged {
                day: p.lane.day,
                through: p.end,
            });
            let marks = doc.services.entry(p.lane.service.clone()).or_default();
            if marks.merged != mark {
                marks.merged = mark;
                changed = true;
            }
        }
        changed
    }
}

/// The counters a ticket's position needs besides the queue document: the
/// days before its own that its service may not have merged yet.
pub(crate) fn earlier_counter_keys(
    branch: &str,
    record: &TicketRecord,
) -> Vec<(NaiveDate, String)> {
    (1..=LOOKBACK_DAYS)
        .rev()
        .map(|k| record.day - TimeDelta::days(i64::from(k)))
        .map(|day| (day, seq_key(branch, &record.issued_for, day)))
        .collect()
}

/// The counters of `service`'s log on `day` and the [`LOOKBACK_DAYS`]
/// days before it, oldest first: what a count of its unmerged tickets needs
/// besides the queue document.
pub(crate) fn day_counter_keys(
    branch: &str,
    service: &str,
    day: NaiveDate,
) -> Vec<(NaiveDate, String)> {
    (0..=LOOKBACK_DAYS)
        .rev()
        .map(|k| day - TimeDelta::days(i64::from(k)))
        .map(|day| (day, seq_key(branch, service, day)))
        .collect()
}

/// Tickets of `record`'s service that were issued before it and are not in
/// `doc` yet (its log is not merged that far): numbers of earlier days
/// beyond the merged mark, per `earlier` (counter by day, see
/// [`earlier_counter_keys`]), plus the smaller numbers of its own day. A
/// number given up or still missing is counted too, until a merge passes it.
pub(crate) fn unmerged_ahead(
    doc: &QueueDoc,
    record: &TicketRecord,
    earlier: &BTreeMap<NaiveDate, u32>,
) -> u32 {
    unmerged_below(doc, &record.issued_for, record.day, record.number, earlier)
}

/// Numbers of `service` taken before number `number` of `day` that `doc`
/// has not merged yet (see [`unmerged_ahead`]); `counters` are the day
/// counters of earlier days (later days are ignored).
pub(crate) fn unmerged_below(
    doc: &QueueDoc,
    service: &str,
    day: NaiveDate,
    number: u32,
    counters: &BTreeMap<NaiveDate, u32>,
) -> u32 {
    let own = |after: u32| (number.saturating_sub(1)).saturating_sub(after);
    let earlier_after = |from: Option<Merged>| -> u32 {
        counters
            .iter()
            .filter(|(d, _)| **d < day)
            .map(|(day, counter)| match from {
                Some(m) if *day < m.day => 0,
                Some(m) if *day == m.day => counter.saturating_sub(m.through),
                _ => *counter,
            })
            .fold(0u32, u32::saturating_add)
    };
    match doc.merged_mark(service) {
        Some(m) if m.day > day => 0,
        Some(m) if m.day == day => own(m.through),
        mark => earlier_after(mark).saturating_add(own(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn counters_decode_in_both_formats() {
        assert_eq!(decode_counter(b"7"), Some(7));
        assert_eq!(decode_counter(b"12345678"), Some(12_345_678));
        assert_eq!(decode_counter(&7i64.to_le_bytes()), Some(7));
        assert_eq!(decode_counter(&300i64.to_le_bytes()), Some(300));
        assert_eq!(decode_counter(&(-1i64).to_le_bytes()), None);
        assert_eq!(decode_counter(b""), None);
        assert_eq!(decode_counter(b"x"), None);
        assert_eq!(decode_counter(b"99999999999"), Some(u32::MAX));
    }

    #[test]
    fn lanes_run_from_the_mark_to_today() {
        let mut doc = QueueDoc::default();
        let today = day("2026-03-04");
        let lanes = lanes_of(&doc, "deposit", today);
        assert_eq!(lanes.len(), LOOKBACK_DAYS as usize + 1);
        assert_eq!(lanes[0].day, day("2026-02-25"));
        assert!(lanes.iter().all(|l| l.after == 0));

        doc.services.entry("deposit".into()).or_default().merged = Some(Merged {
            day: day("2026-03-02"),
            through: 9,
        });
        let lanes = lanes_of(&doc, "deposit", today);
        let got: Vec<(NaiveDate, u32)> = lanes.iter().map(|l| (l.day, l.after)).collect();
        assert_eq!(
            got,
            [
                (day("2026-03-02"), 9),
                (day("2026-03-03"), 0),
                (day("2026-03-04"), 0)
            ]
        );
        // A mark ahead of the clock: only the mark's day.
        let lanes = lanes_of(&doc, "deposit", day("2026-03-01"));
        assert_eq!(lanes.len(), 1);
        assert_eq!((lanes[0].day, lanes[0].after), (day("2026-03-02"), 9));
    }
}
