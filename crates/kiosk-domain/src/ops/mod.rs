//! The operations: [`Kiosk`], split by concern: issuing (`issue`), what
//! counters and cancels do to a ticket (`counter`), and reads (`reads`).
//! This module holds what they share: the ticket record's
//! compare-and-swap, placing a ticket in a lane, and positions.

mod counter;
mod issue;
mod reads;

use chrono::{DateTime, TimeDelta, Utc};

use crate::catalog::{Branch, Catalog, Service};
use crate::error::DomainError;
use crate::keys::{self, Lane, LaneKind};
use crate::lanes::{self, Counts};
use crate::model::TicketView;
use crate::record::TicketRecord;
use crate::retention;
use crate::service_times;
use crate::store::{Store, StoreError};

/// Default number of compare-and-swap attempts per operation before
/// `conflict`. Every change is a compare-and-swap of one ticket's record,
/// so only requests acting on the same ticket (or counters racing for the
/// same next ticket) contend; each lost race moves on to what won.
/// Set per [`Kiosk`] with [`Kiosk::with_max_attempts`].
pub const DEFAULT_MAX_ATTEMPTS: u32 = 256;

/// Idempotency records are honoured for this long after the first request;
/// older records count as absent.
pub const IDEMPOTENCY_RETENTION: TimeDelta = TimeDelta::hours(24);

/// A request with a key whose ticket has not landed yet is "in progress"
/// for this long (409 with `Retry-After` until then); after that it is
/// taken to have died and a retry issues anew. Hosts bound a request well
/// below it (kiosk-host: its request deadline).
pub const IDEMPOTENCY_LEASE: TimeDelta = TimeDelta::seconds(30);

/// How often a ticket is placed again when callers keep passing its
/// position before it settles (each time in its service's `moved` lane).
const MAX_PLACEMENTS: u32 = 8;

/// The domain operations over a catalog and a store.
///
/// Every method takes the caller (where access depends on it), the current
/// time `now` from the host clock, and returns a serializable view or a
/// [`DomainError`]. Methods never panic on bad input. Store work per
/// request is bounded whatever the length of the queue and however many
/// tickets were ever issued: see the crate's documentation for the layout
/// and `bench/queue-scale` for the measured costs.
pub struct Kiosk<'a, S: Store> {
    catalog: &'a Catalog,
    store: &'a S,
    max_attempts: u32,
}

fn counter_only(caller: &crate::Caller, action: &str) -> Result<(), DomainError> {
    match caller {
        crate::Caller::Counter { .. } => Ok(()),
        _ => Err(DomainError::Forbidden(format!(
            "only counter staff can {action}"
        ))),
    }
}

/// Values read in a batch, in the order of their keys.
type Values = Vec<Option<Vec<u8>>>;

/// A service's line as read in one batch: its lanes' counts and its
/// recent service times.
pub(crate) struct Line {
    pub lanes: [Lane; 2],
    pub counts: [Counts; 2],
    pub samples: Vec<u32>,
}

impl Line {
    pub fn waiting(&self) -> u32 {
        self.counts[0]
            .waiting()
            .saturating_add(self.counts[1].waiting())
    }

    pub fn counts_of(&self, lane: &Lane) -> Counts {
        if *lane == self.lanes[0] {
            self.counts[0]
        } else {
            self.counts[1]
        }
    }
}

impl<'a, S: Store> Kiosk<'a, S> {
    pub fn new(catalog: &'a Catalog, store: &'a S) -> Self {
        Kiosk {
            catalog,
            store,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// Sets the compare-and-swap attempts per operation (at least 1; the
    /// default is [`DEFAULT_MAX_ATTEMPTS`]).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    pub fn catalog(&self) -> &'a Catalog {
        self.catalog
    }

    fn branch(&self, id: &str) -> Result<&'a Branch, DomainError> {
        self.catalog
            .branch(id)
            .ok_or_else(|| DomainError::BranchNotFound(id.to_owned()))
    }

    fn too_busy(&self, what: &str) -> DomainError {
        DomainError::Conflict(format!(
            "{what} is changing too fast ({} attempts); retry the request",
            self.max_attempts
        ))
    }

    /// The record of ticket `id` and its exact bytes, if it exists.
    fn load(&self, id: &str) -> Result<Option<(TicketRecord, Vec<u8>)>, DomainError> {
        if !crate::is_ticket_id(id) {
            return Ok(None);
        }
        let key = keys::ticket(id);
        match self.store.get(&key)? {
            None => Ok(None),
            Some(bytes) => Ok(Some((TicketRecord::parse(&key, &bytes)?, bytes))),
        }
    }

    /// Writes `new` over the record read as `old`: `Ok(Some(bytes))` if it
    /// won, `Ok(None)` if the record changed meanwhile.
    /// `new` is a changed copy of the record read: its revision goes one on.
    fn swap(&self, old: &[u8], new: &mut TicketRecord) -> Result<Option<Vec<u8>>, DomainError> {
        new.rev += 1;
        let bytes = new.to_bytes();
        if self
            .store
            .compare_and_swap(&keys::ticket(&new.id), Some(old), &bytes)?
        {
            Ok(Some(bytes))
        } else {
            Ok(None)
        }
    }

    /// Reads the lines of `services` (at branch on lane day `day`) in one
    /// batch, with `extra` keys read along (their values are returned).
    fn lines(
        &self,
        branch: &Branch,
        services: &[&Service],
        day: Option<chrono::NaiveDate>,
        extra: &[String],
    ) -> Result<(Vec<Line>, Values), DomainError> {
        let mut batch: Vec<String> = extra.to_vec();
        let mut plans = Vec::with_capacity(services.len());
        for s in services {
            let lanes = lanes::lanes(&branch.id, &s.id, day);
            for lane in &lanes {
                batch.extend(Counts::keys(lane));
            }
            batch.extend(service_times::keys(&branch.id, &s.id));
            plans.push(lanes);
        }
        let values = self.store.get_many(&batch)?;
        let (extra_values, mut rest) = values.split_at(extra.len());
        let per_service = 6 + service_times::SERVICE_TIME_SAMPLES;
        let mut lines = Vec::with_capacity(plans.len());
        for lanes in plans {
            let (mine, tail) = rest.split_at(per_service);
            rest = tail;
            lines.push(Line {
                counts: [
                    Counts::from_values(&mine[0..3]),
                    Counts::from_values(&mine[3..6]),
                ],
                samples: service_times::samples(&mine[6..]),
                lanes,
            });
        }
        Ok((lines, extra_values.to_vec()))
    }

    /// Moves the ticket (record read as `bytes`) to a new position at the
    /// end of `lane`, waiting in the lane's service (see [`lanes`] for the
    /// four steps); where callers passed or voided that position first,
    /// tries again in its service's `moved` lane. Returns the record as
    /// written, or `Ok(None)` if the record changed meanwhile.
    fn place(
        &self,
        record: TicketRecord,
        bytes: Vec<u8>,
        mut lane: Lane,
    ) -> Result<Option<(TicketRecord, Vec<u8>)>, DomainError> {
        let pending = lanes::pending_slot(&record);
        let reserved = lanes::reserved_slot(&record);
        for _ in 0..MAX_PLACEMENTS {
            let pos = take_position(self.store, &lane)?;
            self.set_slot(&lane, pos, &pending)?;
            retention::TICKETS.record(
                self.store,
                record.issued_at + self.catalog.retention().tickets,
                &[lane.slot(pos), lane.fate(pos)],
            );
            let stands = lanes::settle(self.store, &lane, pos)?;
            if !stands {
                // Passed while its slot was empty: void. Say so, for readers.
                let _ = self.store.set(&lane.slot(pos), lanes::VOID_SLOT);
            }
            if !stands
                || !self
                    .store
                    .compare_and_swap(&lane.slot(pos), Some(&pending), &reserved)?
            {
                lane = Lane {
                    kind: LaneKind::Moved,
                    ..lane
                };
                continue;
            }
            if let Some(moved) = lanes::finish_move(self.store, &record, &bytes, &lane, pos)? {
                return Ok(Some(moved));
            }
            // A caller finished the move for us (answer it as moved, even
            // if it was called since), or the ticket changed meanwhile (its
            // reserved position is then gone).
            return match self.load(&record.id)? {
                Some((now, _)) if now.lane == lane && now.pos == pos => {
                    let moved = lanes::moved_to(&record, &lane, pos);
                    let written = moved.to_bytes();
                    Ok(Some((moved, written)))
                }
                Some((now, _)) => {
                    if now.rev == record.rev + 1 {
                        // Certainly not moved here: the position left.
                        let _ = self.store.increment(&lane.left(), 1);
                    }
                    Ok(None)
                }
                None => Ok(None),
            };
        }
        Err(self.too_busy("this ticket's place"))
    }

    /// Makes sure a waiting ticket stands where callers will find it: its
    /// slot is written and its position settled (what an issue that failed
    /// after writing its record left undone); a position that callers
    /// passed is given up for a new one. Used before a ticket is
    /// acknowledged by a replay, and by reads.
    fn ensure_placed(
        &self,
        record: TicketRecord,
        bytes: Vec<u8>,
    ) -> Result<(TicketRecord, Vec<u8>), DomainError> {
        if !record.waits() {
            return Ok((record, bytes));
        }
        self.set_slot(&record.lane, record.pos, record.id.as_bytes())?;
        self.settle_or_move(record, bytes)
    }

    /// Writes the slot naming `id` at `pos`, trying a failed write twice
    /// more (a ticket whose record is placed but whose slot is missing is
    /// found only by its readers, who place it again).
    fn set_slot(&self, lane: &Lane, pos: u32, slot: &[u8]) -> Result<(), DomainError> {
        let mut result = self.store.set(&lane.slot(pos), slot);
        for _ in 0..2 {
            if result.is_ok() {
                break;
            }
            result = self.store.set(&lane.slot(pos), slot);
        }
        Ok(result?)
    }

    /// Settles a waiting ticket's position (its record and slot written);
    /// if callers passed it first, places the ticket again in its
    /// service's `moved` lane.
    fn settle_or_move(
        &self,
        record: TicketRecord,
        bytes: Vec<u8>,
    ) -> Result<(TicketRecord, Vec<u8>), DomainError> {
        let lane = record.lane.clone();
        if lanes::settle(self.store, &lane, record.pos)? {
            return Ok((record, bytes));
        }
        let moved = Lane {
            kind: LaneKind::Moved,
            ..lane
        };
        match self.place(record.clone(), bytes, moved)? {
            Some(placed) => Ok(placed),
            // Changed meanwhile (called, cancelled): read what it is now.
            None => self
                .load(&record.id)?
                .ok_or_else(|| DomainError::TicketNotFound(record.id.clone())),
        }
    }

    /// Waiting tickets ahead of a waiting `record` and its estimate:
    /// live entries before it in its lane (exact up to
    /// [`lanes::EXACT_AHEAD`] positions), plus those of its service's other
    /// lane that come before it in queue order.
    ///
    /// `Ok(None)` if callers have walked past its position: it was given up
    /// before it settled (see [`Kiosk::ensure_placed`]).
    fn position(
        &self,
        branch: &Branch,
        record: &TicketRecord,
    ) -> Result<Option<(u32, u64)>, DomainError> {
        let Some(service) = branch.service(&record.service) else {
            return Ok(Some((0, 0)));
        };
        let (lines, _) = self.lines(branch, &[service], record.lane.day, &[])?;
        let line = &lines[0];
        let own = line.counts_of(&record.lane);
        if record.pos < own.head {
            return Ok(None);
        }
        let other_lane = line
            .lanes
            .iter()
            .find(|l| **l != record.lane)
            .expect("two lanes");
        let other = line.counts_of(other_lane);
        let mut ahead = if record.pos.saturating_sub(own.head) > lanes::EXACT_AHEAD {
            record.pos - own.head
        } else {
            lanes::live_between(self.store, &record.lane, own.head, record.pos)?.len() as u32
        };
        let before = lanes::live_between(self.store, other_lane, other.head, other.taken + 1)?;
        ahead = ahead.saturating_add(
            before
                .iter()
                .filter(|o| o.order_key() < record.order_key())
                .count() as u32,
        );
        Ok(Some((
            ahead,
            service_times::estimate(branch, service, &line.samples, ahead),
        )))
    }

    /// The view of `record` at `now`, or `None` for a waiting ticket whose
    /// position callers have walked past (see [`Kiosk::position`]).
    fn view_if_standing(
        &self,
        record: &TicketRecord,
        now: DateTime<Utc>,
    ) -> Result<Option<TicketView>, DomainError> {
        let branch = self.catalog.branch(&record.branch);
        let status = record.status_at(branch, now);
        let Some(b) = branch.filter(|_| status == crate::TicketStatus::Waiting) else {
            return Ok(Some(record.view(status, 0, 0)));
        };
        Ok(self
            .position(b, record)?
            .map(|(ahead, estimate)| record.view(status, ahead, estimate)))
    }

    /// The view of a ticket just written by this request: its position if
    /// it still stands there, else none (what happened to it since is for
    /// the next read to tell).
    fn view_written(
        &self,
        record: &TicketRecord,
        now: DateTime<Utc>,
    ) -> Result<TicketView, DomainError> {
        match self.view_if_standing(record, now)? {
            Some(view) => Ok(view),
            None => {
                let status = record.status_at(self.catalog.branch(&record.branch), now);
                Ok(record.view(status, 0, 0))
            }
        }
    }

    /// The current view of a ticket at `now`. A waiting ticket whose
    /// position callers passed before it settled is placed again first.
    fn view_now(
        &self,
        record: &TicketRecord,
        now: DateTime<Utc>,
    ) -> Result<TicketView, DomainError> {
        if let Some(view) = self.view_if_standing(record, now)? {
            return Ok(view);
        }
        let (record, bytes) = self
            .load(&record.id)?
            .ok_or_else(|| DomainError::TicketNotFound(record.id.clone()))?;
        let (placed, _) = self.ensure_placed(record, bytes)?;
        self.view_written(&placed, now)
    }
}

/// Takes the next position of `lane`.
fn take_position<S: Store>(store: &S, lane: &Lane) -> Result<u32, DomainError> {
    let n = store.increment(&lane.seq(), 1)?;
    u32::try_from(n).map_err(|_| {
        DomainError::StoreUnavailable(StoreError(format!("counter {:?} holds {n}", lane.seq())))
    })
}
