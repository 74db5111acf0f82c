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
    /// Its ticket moved on.
    Gone,
    /// Not (fully) written yet.
    Open,
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
    let ids: Vec<Option<String>> = slots
        .into_iter()
        .map(|v| v.and_then(|b| String::from_utf8(b).ok()))
        .collect();
    let record_keys: Vec<String> = ids.iter().flatten().map(|id| keys::ticket(id)).collect();
    let mut records = if record_keys.is_empty() {
        Vec::new()
    } else {
        store.get_many(&record_keys)?
    }
    .into_iter();
    let mut ids = ids.into_iter();
    let mut out = Vec::with_capacity(ranges.len());
    for (lane, from, to) in ranges {
        let mut entries = Vec::with_capacity((to - from) as usize);
        for pos in *from..*to {
            let entry = match ids.next().flatten() {
                None => Entry::Open,
                Some(id) => match records.next().flatten() {
                    None => Entry::Open,
                    Some(bytes) => match TicketRecord::parse(&keys::ticket(&id), &bytes) {
                        Err(_) => Entry::Open,
                        Ok(r) if r.lane == **lane && r.pos == pos && r.waits() => {
                            Entry::Live(Box::new(r), bytes)
                        }
                        Ok(_) => Entry::Gone,
                    },
                },
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
        let mut opens: Vec<u32> = Vec::new();
        while pos < end && pos - start < MAX_WALK {
            let to = (pos + SCAN_BATCH).min(end);
            let entries = read_entries(store, &[(lane, pos, to)])?
                .pop()
                .unwrap_or_default();
            for (p, entry) in entries {
                if let Entry::Open = entry {
                    opens.push(p);
                    continue;
                }
                // Something after them is decided: pass the open ones.
                for o in opens.drain(..) {
                    match pass(store, lane, o)? {
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
        raise_head(store, lane, start, opens.first().copied().unwrap_or(pos));
        return Ok(None);
    }
    Ok(None)
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
