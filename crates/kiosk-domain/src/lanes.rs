//! Lanes: where waiting tickets stand, with bounded work per request.
//!
//! A lane ([`Lane`]) is an append-only list of positions. Placing a ticket
//! takes a position with `increment` on the lane's `seq`, writes the ticket
//! record saying "I wait at (lane, pos)" and the slot naming the ticket,
//! then *settles* the position: `increment` on its `fate` by 1. Callers
//! walk a lane from its `head` (a hint: every position below it is known
//! not to wait) and classify each position:
//!
//! - **live**: slot and record present, and the record still waits there;
//! - **gone**: slot and record present, and the ticket moved on (called,
//!   cancelled, transferred: a record never returns to a position it left);
//! - **open**: slot or record missing: its placer is still writing, failed,
//!   or died. A caller that must walk past an open position (a later one is
//!   already decided) *passes* it: `increment` on its `fate` by [`PASSED`].
//!   Whoever increments first decides: a passer that gets exactly
//!   `k × PASSED` found no placer before it, and the position is void;
//!   a placer that gets `PASSED` or more was passed, and places its ticket
//!   again, in the service's `moved` lane, before it answers. So a ticket
//!   is never acknowledged at a position that callers skip, and nothing
//!   waits for a placer that died.
//!
//! **Moving a waiting or called ticket** (a transfer, or a ticket placed
//! again) cannot write its record and slot together: the record changes by
//! compare-and-swap. So the slot comes first and the record last, and the
//! record never names a position before that position is decided:
//!
//! 1. take a position; write its slot as *pending*, `{id}@{rev}`: "ticket
//!    `id` moves here from record revision `rev`";
//! 2. settle its fate (a caller that passed the empty slot first voids it);
//! 3. *reserve* it: compare-and-swap the slot to `{id}@{rev}!` (a caller
//!    that found it pending and voided it first, `void`, wins instead);
//! 4. compare-and-swap the record from revision `rev` to the new place.
//!
//! A reserved slot whose record is still at `rev` is a move its mover
//! did not finish (slow, failed, killed): the first caller that reads it
//! decides it. A ticket placed again after losing its position is moved
//! (step 4, the same write), so a mover that dies never strands it; a
//! transfer is undone (the record goes one revision on, unchanged), so a
//! failed transfer never lands after its counter was told it failed. A
//! pending slot is voided like an empty one. A record that moved past
//! `rev` another way leaves the slot gone.
//!
//! `left` counts positions that stopped waiting (calls, cancels, transfers
//! out, voided positions), so a lane's waiting count is `seq − left`
//! without reading its entries. A request that dies between its record
//! write and its `left` increment leaves the count one too high for the
//! rest of that business day (lanes are per day); the count is used for
//! the board, `queue_full` and estimates, never for who is called.

use chrono::{DateTime, NaiveDate, Utc};

use crate::catalog::Branch;
use crate::error::DomainError;
use crate::keys::{self, Lane, LaneKind};
use crate::record::TicketRecord;
use crate::store::{Store, StoreError};

/// What a passer adds to a position's fate (a placer adds 1).
pub(crate) const PASSED: i64 = 1_000_000;

/// Positions read per batch while walking a lane.
pub(crate) const SCAN_BATCH: u32 = 32;

/// Most positions one call walks past in one lane before it stops (it
/// saves how far it got: the next call goes on from there).
pub(crate) const MAX_WALK: u32 = 2048;

/// Up to this many positions ahead, `waiting_ahead` is counted exactly;
/// beyond, it is the lane's positions ahead (an upper bound).
pub const EXACT_AHEAD: u32 = 128;

/// The lane day of a branch at `now`: its business day, or `None` where
/// tickets carry over from day to day.
pub(crate) fn lane_day(branch: &Branch, now: DateTime<Utc>) -> Option<NaiveDate> {
    (!branch.carries_over()).then(|| branch.business_day(now))
}

/// The two lanes of a service on a lane day: main first.
pub(crate) fn lanes(branch: &str, service: &str, day: Option<NaiveDate>) -> [Lane; 2] {
    let lane = |kind| Lane {
        branch: branch.to_owned(),
        service: service.to_owned(),
        day,
        kind,
    };
    [lane(LaneKind::Main), lane(LaneKind::Moved)]
}

/// A counter as stores keep it: decimal text (Redis `INCRBY`, the memory
/// store) or Spin's SQLite format, the i64's 8 bytes little-endian. The two
/// cannot be confused for a real count: 8 little-endian bytes that are all
/// ASCII digits would be a count above 3.4 × 10^18.
pub(crate) fn decode_counter(bytes: &[u8]) -> Option<u64> {
    if !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit) {
        std::str::from_utf8(bytes).ok()?.parse::<u64>().ok()
    } else {
        let le: [u8; 8] = bytes.try_into().ok()?;
        u64::try_from(i64::from_le_bytes(le)).ok()
    }
}

fn counter(v: Option<&Vec<u8>>) -> u32 {
    v.and_then(|b| decode_counter(b))
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// A lane's counters as read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Positions taken (the last position).
    pub taken: u32,
    /// Positions that stopped waiting.
    pub left: u32,
    /// Lowest position that may wait (at least 1).
    pub head: u32,
}

impl Counts {
    pub fn waiting(&self) -> u32 {
        self.taken.saturating_sub(self.left)
    }

    /// The keys [`Counts::from_values`] reads, in order.
    pub fn keys(lane: &Lane) -> [String; 3] {
        [lane.seq(), lane.left(), lane.head()]
    }

    pub fn from_values(values: &[Option<Vec<u8>>]) -> Counts {
        Counts {
            taken: counter(values[0].as_ref()),
            left: counter(values[1].as_ref()),
            head: counter(values[2].as_ref()).max(1),
        }
    }
}

/// What a position holds.
#[derive(Debug)]
pub(crate) enum Entry {
    /// The ticket waits here: its record and the exact bytes read.
    Live(Box<TicketRecord>, Vec<u8>),
    /// Its ticket moved on (or never came: a void position).
    Gone,
    /// Not (fully) written yet.
    Open,
    /// A move here is not decided yet: the slot's exact bytes.
    Pending(Vec<u8>),
    /// A move here was decided but the record (read as these bytes) has
    /// not been moved yet: finish it ([`finish_move`]).
    Reserved(Box<TicketRecord>, Vec<u8>),
}

/// A slot of a void position.
pub(crate) const VOID_SLOT: &[u8] = b"void";

/// What a slot says.
enum Slot<'a> {
    /// An issued ticket, written with its record.
    Issued(&'a str),
    /// A move of the ticket from record revision `rev`, undecided.
    Pending {
        id: &'a str,
        rev: u64,
    },
    /// A move of the ticket from record revision `rev`, decided.
    Reserved {
        id: &'a str,
        rev: u64,
    },
    Void,
}

impl<'a> Slot<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Slot<'a>> {
        if bytes == VOID_SLOT {
            return Some(Slot::Void);
        }
        let text = std::str::from_utf8(bytes).ok()?;
        let Some((id, rev)) = text.split_once('@') else {
            return Some(Slot::Issued(text));
        };
        Some(match rev.strip_suffix('!') {
            Some(rev) => Slot::Reserved {
                id,
                rev: rev.parse().ok()?,
            },
            None => Slot::Pending {
                id,
                rev: rev.parse().ok()?,
            },
        })
    }

    fn id(&self) -> Option<&'a str> {
        match *self {
            Slot::Issued(id) | Slot::Pending { id, .. } | Slot::Reserved { id, .. } => Some(id),
            Slot::Void => None,
        }
    }
}

/// The slot of a pending move of `record` (step 1 of a move).
pub(crate) fn pending_slot(record: &TicketRecord) -> Vec<u8> {
    format!("{}@{}", record.id, record.rev).into_bytes()
}

/// The slot of a reserved move of `record` (step 3 of a move).
pub(crate) fn reserved_slot(record: &TicketRecord) -> Vec<u8> {
    format!("{}@{}!", record.id, record.rev).into_bytes()
}

/// `record` as it waits at `pos` of `lane` after a move: in the lane's
/// service, waiting, one revision on.
pub(crate) fn moved_to(record: &TicketRecord, lane: &Lane, pos: u32) -> TicketRecord {
    let mut next = record.clone();
    next.service = lane.service.clone();
    next.status = crate::TicketStatus::Waiting;
    next.counter = None;
    next.called_at = None;
    next.lane = lane.clone();
    next.pos = pos;
    next.rev = record.rev + 1;
    next
}

/// Step 4 of a move: writes `record` (read as `bytes`) at `pos` of `lane`
/// if it is still as read. `Ok(None)` if it changed meanwhile. A ticket
/// that waited in another service leaves its old lane's count.
pub(crate) fn finish_move<S: Store>(
    store: &S,
    record: &TicketRecord,
    bytes: &[u8],
    lane: &Lane,
    pos: u32,
) -> Result<Option<(TicketRecord, Vec<u8>)>, DomainError> {
    let next = moved_to(record, lane, pos);
    let written = next.to_bytes();
    if !store.compare_and_swap(&keys::ticket(&next.id), Some(bytes), &written)? {
        return Ok(None);
    }
    // A ticket placed again in its own service left its old position when
    // that was voided; one transferred from waiting leaves it now.
    if record.waits() && record.service != lane.service {
        let _ = store.increment(&record.lane.left(), 1);
    }
    Ok(Some((next, written)))
}

/// Reads positions `from..to` of several lanes in two round trips (slots,
/// then the records they name). Unreadable records count as open.
pub(crate) fn read_entries<S: Store>(
    store: &S,
    ranges: &[(&Lane, u32, u32)],
) -> Result<Vec<Vec<(u32, Entry)>>, DomainError> {
    let mut slot_keys = Vec::new();
    for (lane, from, to) in ranges {
        slot_keys.extend((*from..*to).map(|p| lane.slot(p)));
    }
    if slot_keys.is_empty() {
        return Ok(ranges.iter().map(|_| Vec::new()).collect());
    }
    let slots = store.get_many(&slot_keys)?;
    let record_keys: Vec<String> = slots
        .iter()
        .filter_map(|v| v.as_deref().and_then(Slot::parse)?.id().map(keys::ticket))
        .collect();
    let mut records = if record_keys.is_empty() {
        Vec::new()
    } else {
        store.get_many(&record_keys)?
    }
    .into_iter();
    let mut slots = slots.into_iter();
    let mut out = Vec::with_capacity(ranges.len());
    for (lane, from, to) in ranges {
        let mut entries = Vec::with_capacity((to - from) as usize);
        for pos in *from..*to {
            let bytes = slots.next().flatten();
            let slot = bytes.as_deref().and_then(Slot::parse);
            let record = match slot.as_ref().and_then(Slot::id) {
                Some(id) => records
                    .next()
                    .flatten()
                    .and_then(|b| Some((TicketRecord::parse(&keys::ticket(id), &b).ok()?, b))),
                None => None,
            };
            let here = |r: &TicketRecord| r.lane == **lane && r.pos == pos && r.waits();
            let entry = match (slot, record) {
                (None, _) => Entry::Open,
                (Some(Slot::Void), _) => Entry::Gone,
                (Some(Slot::Issued(_)), None) => Entry::Open,
                (Some(Slot::Pending { .. } | Slot::Reserved { .. }), None) => Entry::Gone,
                (Some(Slot::Pending { rev, .. }), Some((r, _))) if r.rev == rev => {
                    Entry::Pending(bytes.clone().unwrap_or_default())
                }
                (Some(Slot::Reserved { rev, .. }), Some((r, b))) if r.rev == rev => {
                    Entry::Reserved(Box::new(r), b)
                }
                (Some(_), Some((r, b))) if here(&r) => Entry::Live(Box::new(r), b),
                (Some(_), Some(_)) => Entry::Gone,
            };
            entries.push((pos, entry));
        }
        out.push(entries);
    }
    Ok(out)
}

/// A placer settling its position: `true` if the place stands, `false` if
/// a caller passed it first (place the ticket again).
pub(crate) fn settle<S: Store>(store: &S, lane: &Lane, pos: u32) -> Result<bool, StoreError> {
    Ok(store.increment(&lane.fate(pos), 1)? < PASSED)
}

/// What passing an open position found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// Void: this passer was the first to decide (count it as left).
    VoidedFirst,
    /// Void, decided by an earlier passer.
    Voided,
    /// Its placer settled first: the ticket is there (read it again).
    Placed,
}

/// A caller passing an open position.
pub(crate) fn pass<S: Store>(store: &S, lane: &Lane, pos: u32) -> Result<Pass, StoreError> {
    let v = store.increment(&lane.fate(pos), PASSED)?;
    Ok(if v % PASSED != 0 {
        Pass::Placed
    } else if v == PASSED {
        Pass::VoidedFirst
    } else {
        Pass::Voided
    })
}

/// Raises a lane's head hint to `head` (a plain write: a lower value
/// written by a slower caller only costs a longer walk later).
pub(crate) fn raise_head<S: Store>(store: &S, lane: &Lane, from: u32, head: u32) {
    if head > from {
        let _ = store.set(&lane.head(), head.to_string().as_bytes());
    }
}

/// The first live entry of `lane` from its head, passing gone and void
/// positions (at most [`MAX_WALK`]); saves the new head. Open positions
/// are passed only once a later position is decided (their placers are
/// slow or dead, not merely the last ones still writing); open positions
/// at the end of the lane are left to their placers.
pub(crate) fn first_live<S: Store>(
    store: &S,
    lane: &Lane,
    counts: Counts,
) -> Result<Option<(TicketRecord, Vec<u8>)>, DomainError> {
    let end = counts.taken + 1;
    let start = counts.head;
    // A placer that settles while we pass its position sends us back to
    // read it; each does so once, so this ends.
    'walk: for _ in 0..=SCAN_BATCH {
        let mut pos = start;
        // Open positions, with the slot of those pending a move.
        let mut opens: Vec<(u32, Option<Vec<u8>>)> = Vec::new();
        while pos < end && pos - start < MAX_WALK {
            let to = (pos + SCAN_BATCH).min(end);
            let entries = read_entries(store, &[(lane, pos, to)])?
                .pop()
                .unwrap_or_default();
            for (p, entry) in entries {
                let entry = match entry {
                    Entry::Open => {
                        opens.push((p, None));
                        continue;
                    }
                    Entry::Pending(slot) => {
                        opens.push((p, Some(slot)));
                        continue;
                    }
                    Entry::Reserved(record, bytes) => {
                        // Its mover did not finish (slow or dead): decide
                        // the move, read again.
                        settle_move(store, &record, &bytes, lane, p)?;
                        continue 'walk;
                    }
                    decided => decided,
                };
                // Something after them is decided: pass the open ones.
                for (o, pending) in opens.drain(..) {
                    let decided = match pending {
                        None => pass(store, lane, o)?,
                        Some(slot) => void_pending(store, lane, o, &slot)?,
                    };
                    match decided {
                        Pass::VoidedFirst => {
                            let _ = store.increment(&lane.left(), 1);
                        }
                        Pass::Voided => {}
                        Pass::Placed => continue 'walk,
                    }
                }
                if let Entry::Live(record, bytes) = entry {
                    raise_head(store, lane, start, p);
                    return Ok(Some((*record, bytes)));
                }
            }
            pos = to;
        }
        raise_head(
            store,
            lane,
            start,
            opens.first().map_or(pos, |(first, _)| *first),
        );
        return Ok(None);
    }
    Ok(None)
}

/// A caller deciding a reserved move its mover has not finished (step 4 not
/// written: the mover is slow, failed or died). A ticket placed again in
/// its own service after losing its position has no other place: the move
/// is finished. A transfer is undone instead: the record's revision goes
/// one on, unchanged, so the mover's write fails (a live mover tries
/// again) and the ticket stays where its counter last saw it (called
/// there, or waiting in its old queue), as the transfer's failure told.
fn settle_move<S: Store>(
    store: &S,
    record: &TicketRecord,
    bytes: &[u8],
    lane: &Lane,
    pos: u32,
) -> Result<(), DomainError> {
    if record.waits() && record.service == lane.service {
        finish_move(store, record, bytes, lane, pos)?;
    } else {
        let mut same = record.clone();
        same.rev += 1;
        store.compare_and_swap(&keys::ticket(&record.id), Some(bytes), &same.to_bytes())?;
    }
    Ok(())
}

/// A caller voiding a position whose move is pending (slot read as
/// `slot`): `Placed` if its mover reserved it first (read it again).
fn void_pending<S: Store>(
    store: &S,
    lane: &Lane,
    pos: u32,
    slot: &[u8],
) -> Result<Pass, StoreError> {
    Ok(
        if store.compare_and_swap(&lane.slot(pos), Some(slot), VOID_SLOT)? {
            Pass::VoidedFirst
        } else {
            Pass::Placed
        },
    )
}

/// Live entries of `lane` in `from..to` (at most [`EXACT_AHEAD`] positions
/// are read), for counting who is ahead.
pub(crate) fn live_between<S: Store>(
    store: &S,
    lane: &Lane,
    from: u32,
    to: u32,
) -> Result<Vec<TicketRecord>, DomainError> {
    let to = to.min(from.saturating_add(EXACT_AHEAD));
    if from >= to {
        return Ok(Vec::new());
    }
    let entries = read_entries(store, &[(lane, from, to)])?
        .pop()
        .unwrap_or_default();
    Ok(entries
        .into_iter()
        .filter_map(|(_, e)| match e {
            Entry::Live(r, _) => Some(*r),
            _ => None,
        })
        .collect())
}
