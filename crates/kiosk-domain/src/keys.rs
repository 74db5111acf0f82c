//! Every store key the queue uses, built in one place.
//!
//! Parts that come from callers (customer references, idempotency keys)
//! are %-escaped so that a `:` inside one cannot be read as two parts;
//! branch, service and counter ids are catalog ids (no `:`), and ticket
//! ids are base32.
//!
//! A *lane* is one ordered list of a service's tickets for one business
//! day: `main` takes issued tickets in number order, `moved` takes
//! tickets transferred in (and tickets re-placed after their first place
//! was given up). Branches that carry waiting tickets over from one day
//! to the next have one lane pair for all days (`all` instead of a date).

use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
/// Which of a service's two lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LaneKind {
    /// Issued tickets, by number.
    Main,
    /// Tickets transferred in or re-placed, in the order they arrived.
    Moved,
}

/// One lane: branch, service, business day (`None`: every day) and kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Lane {
    pub branch: String,
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<NaiveDate>,
    pub kind: LaneKind,
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            LaneKind::Main => "main",
            LaneKind::Moved => "moved",
        };
        match self.day {
            Some(day) => write!(f, "{}:{}:{day}:{kind}", self.branch, self.service),
            None => write!(f, "{}:{}:all:{kind}", self.branch, self.service),
        }
    }
}

impl Lane {
    /// Positions taken in this lane (`increment` only). For the main lane
    /// this is the ticket number.
    pub fn seq(&self) -> String {
        format!("lane-seq:{self}")
    }

    /// The ticket id placed at `pos` (set once by the placer).
    pub fn slot(&self, pos: u32) -> String {
        format!("lane-slot:{self}:{pos}")
    }

    /// Who decided a position's fate first: the placer (+1) or a caller
    /// passing it while it was empty ([`crate::lanes::PASSED`]).
    pub fn fate(&self, pos: u32) -> String {
        format!("lane-fate:{self}:{pos}")
    }

    /// Positions that stopped waiting (`increment` only): waiting = seq − left.
    pub fn left(&self) -> String {
        format!("lane-left:{self}")
    }

    /// Lowest position that may still wait (a hint, only ever raised).
    pub fn head(&self) -> String {
        format!("lane-head:{self}")
    }
}

/// `ticket:{id}`: the ticket record, the one truth about a ticket.
pub(crate) fn ticket(id: &str) -> String {
    format!("ticket:{id}")
}

/// `desk:{branch}:{counter}`: the ticket a counter called last.
pub(crate) fn desk(branch: &str, counter: &str) -> String {
    format!("desk:{branch}:{counter}")
}

/// `serving:{branch}:{service}:{day}`: the number called last (display).
pub(crate) fn serving(branch: &str, service: &str, day: Option<NaiveDate>) -> String {
    match day {
        Some(day) => format!("serving:{branch}:{service}:{day}"),
        None => format!("serving:{branch}:{service}:all"),
    }
}

/// `service-time-n:{branch}:{service}`: how many service times were recorded.
pub(crate) fn service_time_count(branch: &str, service: &str) -> String {
    format!("service-time-n:{branch}:{service}")
}

/// `service-time:{branch}:{service}:{i}`: ring of the last samples.
pub(crate) fn service_time(branch: &str, service: &str, i: u64) -> String {
    format!("service-time:{branch}:{service}:{i}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_name_their_day_and_kind() {
        let lane = Lane {
            branch: "demo".into(),
            service: "loan".into(),
            day: NaiveDate::from_ymd_opt(2026, 3, 2),
            kind: LaneKind::Main,
        };
        assert_eq!(lane.seq(), "lane-seq:demo:loan:2026-03-02:main");
        assert_eq!(lane.slot(7), "lane-slot:demo:loan:2026-03-02:main:7");
        let all = Lane {
            day: None,
            kind: LaneKind::Moved,
            ..lane
        };
        assert_eq!(all.left(), "lane-left:demo:loan:all:moved");
    }
}
