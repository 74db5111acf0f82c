//! Stored documents: ticket records and the per-branch queue document.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{Branch, Service};
use crate::model::{Channel, TicketStatus, TicketView};

/// How long a finished (done / no-show / cancelled) ticket stays in the queue
/// document after finishing. Its final state is also archived in its ticket
/// document right after the transition; keeping it here for a while means a
/// crash between the two writes does not lose the final state (a read finding
/// it here re-archives it).
pub const FINISHED_RETENTION: TimeDelta = TimeDelta::minutes(15);

/// How many service times the queue document keeps per service (the most
/// recent ones; older ones are dropped as new ones come in).
pub const SERVICE_TIME_SAMPLES: usize = 20;

/// How many recorded service times a service needs before its average
/// replaces the catalog's default minutes in waiting estimates.
pub const MIN_SERVICE_TIME_SAMPLES: usize = 5;

/// Longest plausible service time. A completed ticket whose service time
/// (completed − called) is longer than this, or not positive, is not recorded.
pub const MAX_SERVICE_TIME: TimeDelta = TimeDelta::hours(4);

/// One ticket. Stored in the queue document while active (and shortly after),
/// and as `ticket:{id}` (written at issue, overwritten with the final state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TicketRecord {
    pub id: String,
    pub branch: String,
    /// Local business day of issue (the number's day).
    pub day: NaiveDate,
    /// Letter code of the service it was issued for.
    pub code: char,
    /// Per-branch, per-service, per-day number (from `increment`).
    pub number: u32,
    /// Service it was issued for.
    pub issued_for: String,
    /// Service whose queue it is in now.
    pub service: String,
    pub channel: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_ref: Option<String>,
    pub issued_at: DateTime<Utc>,
    pub status: TicketStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub called_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl TicketRecord {
    /// Display number, e.g. `A-007`.
    pub fn display_number(&self) -> String {
        format_number(self.code, self.number)
    }

    /// Queue order: issue time, then number, then id (a total order).
    pub fn order(&self, other: &Self) -> Ordering {
        (self.issued_at, self.number, &self.id).cmp(&(other.issued_at, other.number, &other.id))
    }

    /// Whether `customer_ref` took this ticket on a phone.
    pub fn owned_by_mobile(&self, customer_ref: &str) -> bool {
        self.channel == Channel::Mobile && self.customer_ref.as_deref() == Some(customer_ref)
    }

    /// The API view; `doc` (the branch's queue document) gives the position
    /// of a waiting ticket and its service's recorded service times, `branch`
    /// the service's default minutes and counters.
    pub fn view(&self, branch: Option<&Branch>, doc: Option<&QueueDoc>) -> TicketView {
        self.view_behind(branch, doc, 0)
    }

    /// [`view`](Self::view) of a waiting ticket that also has `unmerged`
    /// tickets ahead of it which are not in `doc` yet (see `crate::intake`).
    pub fn view_behind(
        &self,
        branch: Option<&Branch>,
        doc: Option<&QueueDoc>,
        unmerged: u32,
    ) -> TicketView {
        let (waiting_ahead, estimated_wait_s) = match (self.status, doc) {
            (TicketStatus::Waiting, Some(doc)) => {
                let ahead = doc.waiting_ahead(self).saturating_add(unmerged);
                let estimate = branch
                    .and_then(|b| {
                        let s = b.service(&self.service)?;
                        Some(doc.estimate_wait_s(b, s, ahead))
                    })
                    .unwrap_or(0);
                (ahead, estimate)
            }
            _ => (0, 0),
        };
        TicketView {
            id: self.id.clone(),
            number: self.display_number(),
            branch: self.branch.clone(),
            service: self.service.clone(),
            channel: self.channel,
            status: self.status,
            issued_at: self.issued_at,
            waiting_ahead,
            estimated_wait_s,
            counter: self.counter.clone(),
            called_at: self.called_at,
        }
    }
}

/// `A-007`: letter code, dash, number with at least 3 digits.
pub fn format_number(code: char, number: u32) -> String {
    format!("{code}-{number:03}")
}

/// A display number with the local day it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mark {
    pub code: char,
    pub number: u32,
    pub day: NaiveDate,
}

/// Per-service state in the queue document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServiceMarks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_issued: Option<Mark>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_called: Option<Mark>,
    /// Service times in seconds of the last [`SERVICE_TIME_SAMPLES`] tickets
    /// completed in this service, oldest first. Absent in documents written
    /// before service times were recorded (read as empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_times_s: Vec<u32>,
    /// How far the issue log of this service has been merged into the
    /// document (see `crate::intake`). Absent in documents written before
    /// the issue log existed: their `last_issued` mark says the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<Merged>,
}

/// Every number of `day` up to `through` has been merged (or is a [`Hole`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Merged {
    pub day: NaiveDate,
    pub through: u32,
}

/// A number that was taken but whose ticket was not in the issue log yet
/// when a merge passed it (its issuer was still writing, or failed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hole {
    pub service: String,
    pub day: NaiveDate,
    pub number: u32,
    /// When a merge first found it missing.
    pub since: DateTime<Utc>,
}

/// `queue:{branch}`: every active ticket of the branch (plus recently finished
/// ones) and per-service marks and recent service times. This is the single source of truth for ticket
/// state while a ticket is in it; all changes go through compare-and-swap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct QueueDoc {
    #[serde(default)]
    pub tickets: Vec<TicketRecord>,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceMarks>,
    /// Numbers still expected in the issue log (see [`Hole`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holes: Vec<Hole>,
}

impl QueueDoc {
    /// How far `service`'s issue log is merged. Documents written before
    /// the log existed held every issued ticket, so their `last_issued`
    /// mark is where their log starts.
    pub fn merged_mark(&self, service: &str) -> Option<Merged> {
        let marks = self.services.get(service)?;
        marks.merged.or_else(|| {
            marks.last_issued.as_ref().map(|m| Merged {
                day: m.day,
                through: m.number,
            })
        })
    }

    /// Adds the ticket of a slot from the issue log, unless the slot is
    /// void or unreadable (a gap) or the ticket is here already.
    pub fn admit(&mut self, slot: &[u8]) -> bool {
        if slot == crate::intake::VOID {
            return false;
        }
        let Ok(record) = serde_json::from_slice::<TicketRecord>(slot) else {
            return false;
        };
        if self.find(&record.id).is_some() {
            return false;
        }
        self.mark_issued(&record);
        self.tickets.push(record);
        true
    }

    pub fn find(&self, id: &str) -> Option<&TicketRecord> {
        self.tickets.iter().find(|t| t.id == id)
    }

    pub fn find_mut(&mut self, id: &str) -> Option<&mut TicketRecord> {
        self.tickets.iter_mut().find(|t| t.id == id)
    }

    /// Waiting tickets of `t`'s current service that come before it.
    pub fn waiting_ahead(&self, t: &TicketRecord) -> u32 {
        self.tickets
            .iter()
            .filter(|o| {
                o.status == TicketStatus::Waiting
                    && o.service == t.service
                    && o.order(t) == Ordering::Less
            })
            .count() as u32
    }

    pub fn waiting_in(&self, service: &str) -> u32 {
        self.tickets
            .iter()
            .filter(|o| o.status == TicketStatus::Waiting && o.service == service)
            .count() as u32
    }

    /// The ticket currently called at `counter`.
    pub fn called_at_counter(&self, counter: &str) -> Option<&TicketRecord> {
        self.tickets
            .iter()
            .filter(|t| t.status == TicketStatus::Called && t.counter.as_deref() == Some(counter))
            .max_by_key(|t| t.called_at)
    }

    /// The oldest waiting ticket among `services`.
    pub fn next_waiting(&self, services: &[String]) -> Option<&TicketRecord> {
        self.tickets
            .iter()
            .filter(|t| t.status == TicketStatus::Waiting && services.contains(&t.service))
            .min_by(|a, b| a.order(b))
    }

    pub fn mark_issued(&mut self, t: &TicketRecord) {
        let marks = self.services.entry(t.issued_for.clone()).or_default();
        let newer = match &marks.last_issued {
            None => true,
            Some(m) => (t.day, t.number) > (m.day, m.number),
        };
        if newer {
            marks.last_issued = Some(Mark {
                code: t.code,
                number: t.number,
                day: t.day,
            });
        }
    }

    pub fn mark_called(&mut self, t: &TicketRecord, day: NaiveDate) {
        self.services
            .entry(t.service.clone())
            .or_default()
            .last_called = Some(Mark {
            code: t.code,
            number: t.number,
            day,
        });
    }

    /// Records the service time of a ticket completed in `service`:
    /// `completed_at − called_at` in whole seconds, kept among the last
    /// [`SERVICE_TIME_SAMPLES`] of that service. Samples ≤ 0 s or longer than
    /// [`MAX_SERVICE_TIME`] are ignored. Returns whether it was recorded.
    pub fn record_service_time(
        &mut self,
        service: &str,
        called_at: DateTime<Utc>,
        completed_at: DateTime<Utc>,
    ) -> bool {
        let secs = (completed_at - called_at).num_seconds();
        if secs <= 0 || secs > MAX_SERVICE_TIME.num_seconds() {
            return false;
        }
        let secs = u32::try_from(secs).expect("at most MAX_SERVICE_TIME");
        let times = &mut self
            .services
            .entry(service.to_owned())
            .or_default()
            .service_times_s;
        times.push(secs);
        if times.len() > SERVICE_TIME_SAMPLES {
            times.drain(..times.len() - SERVICE_TIME_SAMPLES);
        }
        true
    }

    /// The recorded service times of `service` (at most the last
    /// [`SERVICE_TIME_SAMPLES`]), oldest first.
    pub fn service_times(&self, service: &str) -> &[u32] {
        let times = self
            .services
            .get(service)
            .map_or(&[][..], |m| &m.service_times_s[..]);
        &times[times.len().saturating_sub(SERVICE_TIME_SAMPLES)..]
    }

    /// The average service time of `service` in seconds: see [`crate::average_service_s`].
    pub fn average_service_s(&self, service: &Service) -> u32 {
        crate::average_service_s(
            self.service_times(&service.id),
            service.minutes.saturating_mul(60),
        )
    }

    /// Estimated wait with `waiting_ahead` tickets before it in `service` of
    /// `branch`: [`crate::estimate_wait_s`] with the service's average service
    /// time and the counters serving it.
    pub fn estimate_wait_s(&self, branch: &Branch, service: &Service, waiting_ahead: u32) -> u64 {
        crate::estimate_wait_s(
            waiting_ahead,
            self.average_service_s(service),
            branch.counters_serving(&service.id),
        )
    }

    /// Drops finished tickets older than [`FINISHED_RETENTION`].
    pub fn prune(&mut self, now: DateTime<Utc>) {
        self.tickets.retain(|t| match t.finished_at {
            Some(f) if !t.status.is_active() => f + FINISHED_RETENTION > now,
            _ => true,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, number: u32, service: &str, at: &str, status: TicketStatus) -> TicketRecord {
        TicketRecord {
            id: id.into(),
            branch: "demo".into(),
            day: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
            code: 'A',
            number,
            issued_for: service.into(),
            service: service.into(),
            channel: Channel::Kiosk,
            customer_ref: None,
            issued_at: at.parse().unwrap(),
            status,
            counter: None,
            called_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn format_number_pads_to_three_digits() {
        assert_eq!(format_number('A', 7), "A-007");
        assert_eq!(format_number('B', 42), "B-042");
        assert_eq!(format_number('C', 1234), "C-1234");
    }

    #[test]
    fn order_and_positions() {
        let doc = QueueDoc {
            tickets: vec![
                rec(
                    "c",
                    3,
                    "deposit",
                    "2026-03-02T01:00:03Z",
                    TicketStatus::Waiting,
                ),
                rec(
                    "a",
                    1,
                    "deposit",
                    "2026-03-02T01:00:01Z",
                    TicketStatus::Called,
                ),
                rec(
                    "b",
                    2,
                    "deposit",
                    "2026-03-02T01:00:02Z",
                    TicketStatus::Waiting,
                ),
                rec(
                    "x",
                    1,
                    "loan",
                    "2026-03-02T01:00:00Z",
                    TicketStatus::Waiting,
                ),
            ],
            services: BTreeMap::new(),
            holes: Vec::new(),
        };
        assert_eq!(doc.waiting_ahead(doc.find("c").unwrap()), 1);
        assert_eq!(doc.waiting_ahead(doc.find("b").unwrap()), 0);
        assert_eq!(doc.waiting_in("deposit"), 2);
        assert_eq!(doc.next_waiting(&["deposit".into()]).unwrap().id, "b");
        assert_eq!(
            doc.next_waiting(&["deposit".into(), "loan".into()])
                .unwrap()
                .id,
            "x"
        );
        assert!(doc.next_waiting(&["fx".into()]).is_none());
    }

    #[test]
    fn prune_keeps_active_and_recent() {
        let now: DateTime<Utc> = "2026-03-02T02:00:00Z".parse().unwrap();
        let mut old = rec(
            "old",
            1,
            "deposit",
            "2026-03-02T01:00:00Z",
            TicketStatus::Done,
        );
        old.finished_at = Some(now - TimeDelta::minutes(16));
        let mut recent = rec(
            "recent",
            2,
            "deposit",
            "2026-03-02T01:00:00Z",
            TicketStatus::Cancelled,
        );
        recent.finished_at = Some(now - TimeDelta::minutes(5));
        let waiting = rec(
            "w",
            3,
            "deposit",
            "2026-03-01T01:00:00Z",
            TicketStatus::Waiting,
        );
        let mut doc = QueueDoc {
            tickets: vec![old, recent, waiting],
            services: BTreeMap::new(),
            holes: Vec::new(),
        };
        doc.prune(now);
        let ids: Vec<&str> = doc.tickets.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, vec!["recent", "w"]);
    }

    fn at(secs: i64) -> DateTime<Utc> {
        "2026-03-02T01:00:00Z".parse::<DateTime<Utc>>().unwrap() + TimeDelta::seconds(secs)
    }

    #[test]
    fn service_times_keep_only_the_last_twenty() {
        let mut doc = QueueDoc::default();
        for i in 1..=25 {
            assert!(doc.record_service_time("deposit", at(0), at(i)));
        }
        let expected: Vec<u32> = (6..=25).collect();
        assert_eq!(doc.service_times("deposit"), &expected[..]);
        assert_eq!(
            doc.services["deposit"].service_times_s.len(),
            SERVICE_TIME_SAMPLES
        );
        assert!(doc.service_times("loan").is_empty());
    }

    #[test]
    fn absurd_service_times_are_ignored() {
        let mut doc = QueueDoc::default();
        let four_hours = MAX_SERVICE_TIME.num_seconds();
        assert!(!doc.record_service_time("deposit", at(10), at(10)));
        assert!(!doc.record_service_time("deposit", at(10), at(5)));
        assert!(!doc.record_service_time("deposit", at(0), at(four_hours + 1)));
        assert!(!doc.record_service_time("deposit", at(0), at(100) + TimeDelta::days(3)));
        // Sub-second: 0 whole seconds.
        assert!(!doc.record_service_time("deposit", at(0), at(0) + TimeDelta::milliseconds(900)));
        assert!(!doc.services.contains_key("deposit"));
        assert!(doc.record_service_time("deposit", at(0), at(1)));
        assert!(doc.record_service_time("deposit", at(0), at(four_hours)));
        assert_eq!(doc.service_times("deposit"), &[1, four_hours as u32]);
    }

    fn deposit() -> Service {
        Service {
            id: "deposit".into(),
            name: "Deposits".into(),
            code: 'A',
            minutes: 5,
            max_waiting: 100,
        }
    }

    #[test]
    fn average_switches_from_default_to_measured_at_five_samples() {
        let mut doc = QueueDoc::default();
        assert_eq!(doc.average_service_s(&deposit()), 300);
        for s in [60, 90, 120, 150] {
            doc.record_service_time("deposit", at(0), at(s));
            assert_eq!(doc.average_service_s(&deposit()), 300);
        }
        doc.record_service_time("deposit", at(0), at(180));
        assert_eq!(doc.average_service_s(&deposit()), 120);
        // Ignored samples do not count towards the five.
        let mut doc = QueueDoc::default();
        for _ in 0..10 {
            doc.record_service_time("deposit", at(0), at(0));
        }
        assert_eq!(doc.average_service_s(&deposit()), 300);
    }

    #[test]
    fn old_queue_documents_are_readable() {
        let old = r#"{"tickets":[],"services":{"deposit":{"last_issued":{"code":"A","number":3,"day":"2026-03-02"}}}}"#;
        let mut doc: QueueDoc = serde_json::from_str(old).unwrap();
        assert!(doc.service_times("deposit").is_empty());
        assert_eq!(doc.average_service_s(&deposit()), 300);
        // No samples: the field is not written, so the document looks as before.
        assert_eq!(serde_json::to_string(&doc).unwrap(), old);
        doc.record_service_time("deposit", at(0), at(42));
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(
            json["services"]["deposit"]["service_times_s"],
            serde_json::json!([42])
        );
        let back: QueueDoc = serde_json::from_value(json).unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn overlong_stored_sample_lists_are_read_as_their_last_twenty() {
        let times: Vec<u32> = (1..=30).collect();
        let json = serde_json::json!({"services": {"deposit": {"service_times_s": times}}});
        let doc: QueueDoc = serde_json::from_value(json).unwrap();
        let expected: Vec<u32> = (11..=30).collect();
        assert_eq!(doc.service_times("deposit"), &expected[..]);
    }
}
