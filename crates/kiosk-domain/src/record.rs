//! The ticket record (`ticket:{id}`) and the one table of status changes.
//!
//! The record is the single truth about a ticket from its issue to its
//! end: every change is one compare-and-swap of it against the exact bytes
//! read (correct on every store this app runs on; see [`crate::store`]).
//! Where it waits is part of the record (`lane`, `pos`): a lane entry that
//! names the ticket counts only while the record says it is still there.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::Branch;
use crate::error::DomainError;
use crate::keys::Lane;
use crate::model::{Channel, TicketStatus, TicketView};
use crate::store::parse_versioned;

/// Version of the ticket record format this build writes and reads.
pub const TICKET_SCHEMA: u32 = 2;

/// Why a ticket ended without being served, shown as the view's `reason`.
pub const REASON_DAY_ENDED: &str = "business_day_ended";

/// What the issue answered, kept so that a replay answers the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FirstAnswer {
    pub waiting_ahead: u32,
    pub estimated_wait_s: u64,
}

/// One ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TicketRecord {
    /// Schema version ([`TICKET_SCHEMA`]).
    pub v: u32,
    pub id: String,
    pub branch: String,
    /// Local business day of issue (the number's day).
    pub day: NaiveDate,
    /// Letter code of the service it was issued for.
    pub code: char,
    /// Per-branch, per-service, per-day number (its main-lane position).
    pub number: u32,
    /// Service it was issued for.
    pub issued_for: String,
    /// Service whose queue it is in now.
    pub service: String,
    pub channel: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_ref: Option<String>,
    pub issued_at: DateTime<Utc>,
    /// Stored status; a waiting ticket past its day's end reads `expired`
    /// ([`TicketRecord::status_at`]) without being written.
    pub status: TicketStatus,
    /// The lane it waits (or waited) in, and its position there.
    pub lane: Lane,
    pub pos: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub called_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The numbers the issue answered with.
    pub first: FirstAnswer,
    /// Revision: 0 as issued, one more with every write. A placement names
    /// the revision it moves the ticket from (see [`crate::lanes`]).
    #[serde(default)]
    pub rev: u64,
}

/// What a counter, phone or kiosk asks of a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Call,
    Transfer,
    Complete,
    NoShow,
    Cancel,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Call => "called",
            Action::Transfer => "transferred",
            Action::Complete => "completed",
            Action::NoShow => "marked no-show",
            Action::Cancel => "cancelled",
        }
    }
}

/// What the table says about an action on a ticket in some status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Write the ticket with this status.
    To(TicketStatus),
    /// It is there already: answer the ticket as it is (a repeated
    /// complete, no-show or cancel).
    Already,
}

/// Every status change a ticket can make, in one place:
///
/// | from \ action | call | transfer | complete | no-show | cancel |
/// | --- | --- | --- | --- | --- | --- |
/// | waiting | called | waiting (moved) | – | – | cancelled |
/// | called | – | waiting (moved) | done | no_show | – |
/// | done | – | – | (already) | – | – |
/// | no_show | – | – | – | (already) | – |
/// | cancelled | – | – | – | – | (already) |
/// | expired | – | – | – | – | – |
///
/// `–` is `conflict`, with a hint where one helps.
pub(crate) fn change(
    record: &TicketRecord,
    status: TicketStatus,
    action: Action,
) -> Result<Change, DomainError> {
    use Action as A;
    use TicketStatus as S;
    let to = match (status, action) {
        (S::Waiting, A::Call) => S::Called,
        (S::Waiting | S::Called, A::Transfer) => S::Waiting,
        (S::Waiting, A::Cancel) => S::Cancelled,
        (S::Called, A::Complete) => S::Done,
        (S::Called, A::NoShow) => S::NoShow,
        (S::Done, A::Complete) | (S::NoShow, A::NoShow) | (S::Cancelled, A::Cancel) => {
            return Ok(Change::Already);
        }
        (from, action) => {
            let hint = match (from, action) {
                (S::Called, A::Cancel) => format!(
                    "; it has been called to counter {}",
                    record.counter.as_deref().unwrap_or("?")
                ),
                (S::Waiting, A::Complete | A::NoShow) => "; call it first".to_owned(),
                (S::Expired, _) => "; its business day has ended".to_owned(),
                (_, A::Transfer) => {
                    "; only waiting or called tickets can be transferred".to_owned()
                }
                _ => String::new(),
            };
            return Err(DomainError::Conflict(format!(
                "ticket {} is {} and cannot be {}{hint}",
                record.display_number(),
                from.as_str(),
                action.verb()
            )));
        }
    };
    Ok(Change::To(to))
}

impl TicketRecord {
    /// Display number, e.g. `A-007`.
    pub fn display_number(&self) -> String {
        format_number(self.code, self.number)
    }

    /// Whether the stored status is waiting (expired or not).
    pub fn waits(&self) -> bool {
        self.status == TicketStatus::Waiting
    }

    /// Whether `customer_ref` took this ticket on a phone.
    pub fn owned_by_mobile(&self, customer_ref: &str) -> bool {
        self.channel == Channel::Mobile && self.customer_ref.as_deref() == Some(customer_ref)
    }

    /// The status at `now`: a waiting ticket whose business day has ended
    /// (see [`Branch::waiting_ends_at`]) is `expired`.
    pub fn status_at(&self, branch: Option<&Branch>, now: DateTime<Utc>) -> TicketStatus {
        if self.status == TicketStatus::Waiting
            && let Some(b) = branch
            && self.lane.day.is_some()
            && b.waiting_ends_at(self.day).is_some_and(|end| now >= end)
        {
            return TicketStatus::Expired;
        }
        self.status
    }

    /// Queue order among waiting tickets: issue time, then number, then id.
    pub fn order_key(&self) -> (DateTime<Utc>, u32, &str) {
        (self.issued_at, self.number, &self.id)
    }

    /// The API view with the given status, position and estimate.
    pub fn view(
        &self,
        status: TicketStatus,
        waiting_ahead: u32,
        estimated_wait_s: u64,
    ) -> TicketView {
        let waiting = status == TicketStatus::Waiting;
        TicketView {
            id: self.id.clone(),
            number: self.display_number(),
            branch: self.branch.clone(),
            service: self.service.clone(),
            channel: self.channel,
            status,
            issued_at: self.issued_at,
            waiting_ahead: if waiting { waiting_ahead } else { 0 },
            estimated_wait_s: if waiting { estimated_wait_s } else { 0 },
            counter: self.counter.clone(),
            called_at: self.called_at,
            reason: (status == TicketStatus::Expired).then(|| REASON_DAY_ENDED.to_owned()),
        }
    }

    /// The answer the issue gave (what a replay of its idempotency key gets).
    pub fn first_view(&self) -> TicketView {
        let mut view = self.view(
            TicketStatus::Waiting,
            self.first.waiting_ahead,
            self.first.estimated_wait_s,
        );
        view.service = self.issued_for.clone();
        view.counter = None;
        view.called_at = None;
        view
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("ticket records serialize")
    }

    /// Parses a stored record, refusing other schema versions by name.
    pub fn parse(key: &str, bytes: &[u8]) -> Result<TicketRecord, DomainError> {
        Ok(parse_versioned("ticket record", key, bytes, TICKET_SCHEMA)?)
    }
}

/// `A-007`: letter code, dash, number with at least 3 digits.
pub fn format_number(code: char, number: u32) -> String {
    format!("{code}-{number:03}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::LaneKind;

    fn rec(status: TicketStatus) -> TicketRecord {
        let day = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
        TicketRecord {
            v: TICKET_SCHEMA,
            id: "x".into(),
            branch: "demo".into(),
            day,
            code: 'A',
            number: 7,
            issued_for: "deposit".into(),
            service: "deposit".into(),
            channel: Channel::Kiosk,
            customer_ref: None,
            issued_at: "2026-03-02T01:00:00Z".parse().unwrap(),
            status,
            lane: Lane {
                branch: "demo".into(),
                service: "deposit".into(),
                day: Some(day),
                kind: LaneKind::Main,
            },
            pos: 7,
            counter: Some("2".into()),
            called_at: None,
            finished_at: None,
            first: FirstAnswer {
                waiting_ahead: 3,
                estimated_wait_s: 300,
            },
            rev: 0,
        }
    }

    #[test]
    fn format_number_pads_to_three_digits() {
        assert_eq!(format_number('A', 7), "A-007");
        assert_eq!(format_number('C', 1234), "C-1234");
    }

    #[test]
    fn the_table_allows_only_its_changes() {
        use Action::{Call, Cancel, Complete, Transfer};
        use TicketStatus::{Called, Cancelled, Done, Expired, Waiting};
        let all = [Call, Transfer, Complete, Action::NoShow, Cancel];
        let allowed = |from: TicketStatus| -> Vec<(Action, Change)> {
            all.iter()
                .filter_map(|&a| change(&rec(from), from, a).ok().map(|c| (a, c)))
                .collect()
        };
        assert_eq!(
            allowed(Waiting),
            vec![
                (Call, Change::To(Called)),
                (Transfer, Change::To(Waiting)),
                (Cancel, Change::To(Cancelled))
            ]
        );
        assert_eq!(
            allowed(Called),
            vec![
                (Transfer, Change::To(Waiting)),
                (Complete, Change::To(Done)),
                (Action::NoShow, Change::To(TicketStatus::NoShow))
            ]
        );
        assert_eq!(allowed(Done), vec![(Complete, Change::Already)]);
        assert_eq!(
            allowed(TicketStatus::NoShow),
            vec![(Action::NoShow, Change::Already)]
        );
        assert_eq!(allowed(Cancelled), vec![(Cancel, Change::Already)]);
        assert_eq!(allowed(Expired), vec![]);
        let e = change(&rec(Called), Called, Cancel).unwrap_err();
        assert!(e.to_string().contains("called to counter 2"), "{e}");
    }

    #[test]
    fn records_carry_their_schema_version() {
        let r = rec(TicketStatus::Waiting);
        let bytes = r.to_bytes();
        assert_eq!(TicketRecord::parse("k", &bytes).unwrap(), r);
        let old = br#"{"id":"x","status":"waiting"}"#;
        let e = TicketRecord::parse("ticket:x", old).unwrap_err();
        assert!(format!("{e:?}").contains("schema version None"), "{e:?}");
    }

    #[test]
    fn replays_answer_as_first_given() {
        let mut r = rec(TicketStatus::Cancelled);
        r.service = "loan".into();
        let v = r.first_view();
        assert_eq!(v.status, TicketStatus::Waiting);
        assert_eq!((v.waiting_ahead, v.estimated_wait_s), (3, 300));
        assert_eq!(v.service, "deposit");
    }
}
