//! Idempotency keys: of all requests a caller sends with one key, one does
//! the work; the others get its result, learn that it is still running
//! (`idempotency_in_progress`, with a retry delay), or, with another request
//! body, `idempotency_key_mismatch`. Ticket issuance and core writes both
//! use it.
//!
//! # Claims that hold on every store
//!
//! Spin's compare-and-swap on an absent key is an unconditional upsert, so
//! "insert the record if absent" by compare-and-swap would let two requests
//! both believe they won. Claims use only what is atomic on every store:
//!
//! - **Creating a record.** A claimant increments the lock counter of the
//!   current [`CLAIM_LOCK_EPOCH`] (`idem-lock:…:{epoch}`), then reads, in
//!   one batch, the record and the counters of the two neighbouring epochs.
//!   It wins if its increment returned 1, the record is absent and both
//!   neighbours are 0; it then writes the record. A claimant that finds the
//!   record absent without winning gives its increment back and is told the
//!   key is in progress (the winner is between its increment and its write).
//!   Two claimants in neighbouring epochs each increment, then read the
//!   other's counter, so at least one sees the other and steps back. A
//!   winner that dies before writing its record leaves its epoch's counter
//!   at 1, which blocks the key until that epoch's neighbour has passed
//!   (at most two epochs): counters further back are never read.
//! - **Changing a record** (completing, releasing, taking over an expired
//!   or released one): compare-and-swap against the exact bytes read, which
//!   is correct on every store.
//!
//! A winner must write its record within one epoch of reading the clock
//! (store calls are bounded well below that on kiosk-host), and hosts
//! sharing a store must agree on the time to well within an epoch.
//!
//! # Records
//!
//! `idem:{purpose}:{scope}:{key}` holds JSON
//! `{"v":1,"fp","state","at","until","keep","data"}`: the schema version
//! ([`IDEMPOTENCY_SCHEMA`]), the request fingerprint, the state (`pending`,
//! `done`, `retry`, `released`), the unix second of the claim (the retention
//! counts from it), the end of the pending lease, until when the sweep keeps
//! it (`keep`: a claim that takes a record over, as each new ticket of a
//! phone at a branch does, restarts its retention), and the caller's data
//! (for a pending ticket: its id; when done: the result to replay). The
//! retention sweep ([`crate::retention`]) deletes records past `keep` and
//! lock counters older than two epochs.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Caller;
use crate::error::DomainError;
use crate::retention;
use crate::store::{Store, StoreError, escape_key_part, parse_versioned};

/// Version of the record format this build writes and reads.
pub const IDEMPOTENCY_SCHEMA: u32 = 1;

/// Width of the time slices that lock counters are kept per.
pub const CLAIM_LOCK_EPOCH: TimeDelta = TimeDelta::seconds(10);

/// Retry delay (seconds) answered while a winner is between its lock and
/// its record.
const CLAIMING_RETRY_AFTER_S: u64 = 1;

/// What a key is used for: keys of different purposes never collide, even
/// when a caller reuses one key string for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `POST /api/v1/tickets`.
    Ticket,
    /// A write through the core passthrough.
    CoreWrite,
    /// A phone's active ticket at a branch (the "key" is the branch id).
    Phone,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Ticket => "ticket",
            Purpose::CoreWrite => "core",
            Purpose::Phone => "phone",
        }
    }
}

/// The store keys of one caller's idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimKey {
    record: String,
    lock_prefix: String,
}

impl ClaimKey {
    /// The keys of `key` sent by `caller` for `purpose`:
    /// `idem:{purpose}:{scope}:{key}` and `idem-lock:{purpose}:{scope}:{key}:{epoch}`,
    /// where `scope` is `kiosk/{id}`, `counter/{id}` or `mobile/{customer_ref}`
    /// and `:` and `%` in scope and key are %-escaped.
    pub fn new(purpose: Purpose, caller: &Caller, key: &str) -> Self {
        let tail = format!(
            "{}:{}:{}",
            purpose.as_str(),
            escape_key_part(&caller.idempotency_scope()),
            escape_key_part(key)
        );
        ClaimKey {
            record: format!("idem:{tail}"),
            lock_prefix: format!("idem-lock:{tail}"),
        }
    }

    /// The record's store key.
    pub fn record(&self) -> &str {
        &self.record
    }

    /// The lock counter of `epoch`.
    pub fn lock(&self, epoch: i64) -> String {
        format!("{}:{epoch}", self.lock_prefix)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum State {
    /// A request is working on it until `until`.
    Pending,
    /// Finished; `data` is the result to replay.
    Done,
    /// The last attempt's outcome is unknown: the same request may run
    /// again at once (another body is still a mismatch).
    Retry,
    /// The attempt certainly had no effect: the key is free.
    Released,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    v: u32,
    fp: String,
    state: State,
    /// Unix seconds of the claim.
    at: i64,
    /// Unix seconds at which a pending claim lapses.
    until: i64,
    /// Unix seconds until which the sweep keeps it: a claim that took the
    /// record over restarts its retention (0 in records written before).
    #[serde(default)]
    keep: i64,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    data: Value,
}

/// Until when the sweep must keep the idempotency record stored as `bytes`
/// (`None`: not a record this build reads, or one written before records
/// said; deleted when due).
pub(crate) fn kept_until(bytes: &[u8]) -> Option<DateTime<Utc>> {
    let record: Record = serde_json::from_slice(bytes).ok()?;
    (record.keep > 0)
        .then(|| DateTime::from_timestamp(record.keep, 0))
        .flatten()
}

impl Record {
    fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("idempotency records serialize")
    }

    fn parse(key: &str, bytes: &[u8]) -> Result<Record, DomainError> {
        Ok(parse_versioned(
            "idempotency record",
            key,
            bytes,
            IDEMPOTENCY_SCHEMA,
        )?)
    }
}

/// What a claim found.
#[derive(Debug)]
pub enum Claim<R> {
    /// This request owns the key: do the work, then finish the lease with
    /// [`Claims::complete`], [`Claims::retry`] or [`Claims::release`] (or
    /// leave it pending, for work whose landing the next claimant can check).
    Won(Lease),
    /// The key's request finished: the result it recorded.
    Done(Value),
    /// A pending attempt that had landed after all (see [`Claims::claim`]).
    Landed(R),
}

/// A won claim: the record as this request wrote it.
#[derive(Debug, Clone)]
#[must_use = "a won claim is finished with complete, retry or release, or left pending for the next claimant to check"]
pub struct Lease {
    key: String,
    written: Vec<u8>,
    record: Record,
}

/// Claims on idempotency keys in a store.
pub struct Claims<'a, S: Store> {
    store: &'a S,
    lease: TimeDelta,
    retention: TimeDelta,
    max_attempts: u32,
}

/// What became of the attempt behind a pending record, as the caller of
/// [`Claims::claim`] judges it from the record's data.
#[derive(Debug)]
pub enum Pending<R> {
    /// It took effect: answer `R`.
    Landed(R),
    /// It certainly has no effect any more: the key may be taken at once.
    Void,
    /// Unknown yet: `idempotency_in_progress` until the lease ends.
    Running,
}

/// What the rules decided about an existing record.
enum Verdict<R> {
    TakeOver,
    Done(Value),
    Landed(R),
}

impl<'a, S: Store> Claims<'a, S> {
    /// Claims in `store`: a pending claim lapses after `lease`; a record
    /// counts as absent `retention` after its claim.
    pub fn new(store: &'a S, lease: TimeDelta, retention: TimeDelta) -> Self {
        Claims {
            store,
            lease,
            retention,
            max_attempts: 16,
        }
    }

    /// Sets how many lost compare-and-swap races a claim survives before
    /// `conflict` (at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Claims `key` for a request with fingerprint `fp` at `now`; `data` is
    /// stored with the pending claim (for a ticket: the id it will have).
    ///
    /// An existing record, in this order: older than the retention or
    /// released → taken over; another fingerprint → `idempotency_key_mismatch`;
    /// done → [`Claim::Done`]; retry → taken over; pending → `landed(data)`
    /// decides whether the attempt took effect after all ([`Claim::Landed`]),
    /// certainly has none any more (taken over at once), or is unknown:
    /// `idempotency_in_progress` until the lease ends, then taken over.
    /// Taking over is a compare-and-swap against the bytes read.
    pub fn claim<R>(
        &self,
        key: &ClaimKey,
        fp: &str,
        data: Value,
        now: DateTime<Utc>,
        mut landed: impl FnMut(&Value) -> Result<Pending<R>, DomainError>,
    ) -> Result<Claim<R>, DomainError> {
        let mine = Record {
            v: IDEMPOTENCY_SCHEMA,
            fp: fp.to_owned(),
            state: State::Pending,
            at: now.timestamp(),
            until: (now + self.lease).timestamp(),
            keep: (now + self.retention + self.lease).timestamp(),
            data,
        };
        let Some(mut current) = self.create(key, &mine, now)? else {
            return Ok(Claim::Won(Lease {
                key: key.record.clone(),
                written: mine.to_bytes(),
                record: mine,
            }));
        };
        for _ in 0..self.max_attempts {
            let existing = Record::parse(&key.record, &current)?;
            match self.verdict(&existing, fp, now, &mut landed)? {
                Verdict::Done(result) => return Ok(Claim::Done(result)),
                Verdict::Landed(r) => return Ok(Claim::Landed(r)),
                Verdict::TakeOver => {}
            }
            let written = mine.to_bytes();
            if self
                .store
                .compare_and_swap(&key.record, Some(&current), &written)?
            {
                return Ok(Claim::Won(Lease {
                    key: key.record.clone(),
                    written,
                    record: mine,
                }));
            }
            // Someone changed it meanwhile: decide again on what is there now.
            current = self.store.get(&key.record)?.ok_or_else(|| {
                DomainError::StoreUnavailable(StoreError(format!(
                    "idempotency record at {:?} disappeared",
                    key.record
                )))
            })?;
        }
        Err(DomainError::Conflict(
            "the idempotency key is being used concurrently; retry".into(),
        ))
    }

    /// Creates the record as `mine` if there is none (`Ok(None)`: this
    /// request won); otherwise returns the record's bytes.
    fn create(
        &self,
        key: &ClaimKey,
        mine: &Record,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<u8>>, DomainError> {
        let epoch = now.timestamp().div_euclid(CLAIM_LOCK_EPOCH.num_seconds());
        let lock = key.lock(epoch);
        let n = self.store.increment(&lock, 1)?;
        let mut seen = self
            .store
            .get_many(&[key.record.clone(), key.lock(epoch - 1), key.lock(epoch + 1)])?
            .into_iter();
        let current = seen.next().flatten();
        let neighbours_idle = seen.all(|v| v.as_deref().is_none_or(counter_is_zero));
        let wins = n == 1 && neighbours_idle && current.is_none();
        if n == 1 {
            // The first claimant of an epoch logs its lock for deletion
            // (with the record it creates, when it wins).
            let (due, keys) = if wins {
                (
                    now + self.retention + self.lease,
                    vec![key.record.clone(), lock.clone()],
                )
            } else {
                (now + CLAIM_LOCK_EPOCH * 3, vec![lock.clone()])
            };
            retention::CLAIMS.record(self.store, due, &keys);
            retention::CLAIMS.sweep(self.store, now);
        }
        if let Some(current) = current {
            // Locks only guard creation; an existing record is decided on
            // its own, whatever the counter says.
            return Ok(Some(current));
        }
        if wins {
            if let Err(e) = self.store.set(&key.record, &mine.to_bytes()) {
                // Written or not, nobody is served by the lock any more: a
                // record that landed is decided on its own.
                let _ = self.store.increment(&lock, -1);
                return Err(e.into());
            }
            return Ok(None);
        }
        // The winner is between its lock and its write (or a claimant in the
        // neighbouring epoch is): step back and let the caller retry.
        let _ = self.store.increment(&lock, -1);
        Err(DomainError::IdempotencyInProgress {
            retry_after_s: CLAIMING_RETRY_AFTER_S,
        })
    }

    fn verdict<R>(
        &self,
        existing: &Record,
        fp: &str,
        now: DateTime<Utc>,
        landed: &mut impl FnMut(&Value) -> Result<Pending<R>, DomainError>,
    ) -> Result<Verdict<R>, DomainError> {
        let t = now.timestamp();
        if t - existing.at >= self.retention.num_seconds() || existing.state == State::Released {
            return Ok(Verdict::TakeOver);
        }
        if existing.fp != fp {
            return Err(DomainError::IdempotencyKeyMismatch);
        }
        match existing.state {
            State::Done => Ok(Verdict::Done(existing.data.clone())),
            State::Retry | State::Released => Ok(Verdict::TakeOver),
            State::Pending => {
                match landed(&existing.data)? {
                    Pending::Landed(r) => return Ok(Verdict::Landed(r)),
                    Pending::Void => return Ok(Verdict::TakeOver),
                    Pending::Running => {}
                }
                if t < existing.until {
                    return Err(DomainError::IdempotencyInProgress {
                        retry_after_s: u64::try_from(existing.until - t).unwrap_or(1).max(1),
                    });
                }
                // The first request is taken to have died: take over.
                Ok(Verdict::TakeOver)
            }
        }
    }

    /// Records `result` as the key's outcome: later claims with the same
    /// fingerprint get [`Claim::Done`]. `Ok(false)` if the lease was lost
    /// (another request took the key over after it lapsed).
    pub fn complete(&self, lease: Lease, result: Value) -> Result<bool, StoreError> {
        self.finish(lease, State::Done, result)
    }

    /// The attempt's outcome is unknown (it may or may not have taken
    /// effect): the same request may run again at once, another body is
    /// still a mismatch.
    pub fn retry(&self, lease: Lease) -> Result<bool, StoreError> {
        self.finish(lease, State::Retry, Value::Null)
    }

    /// The attempt certainly had no effect: the key is free, for any body.
    pub fn release(&self, lease: Lease) -> Result<bool, StoreError> {
        self.finish(lease, State::Released, Value::Null)
    }

    fn finish(&self, lease: Lease, state: State, data: Value) -> Result<bool, StoreError> {
        let record = Record {
            state,
            data,
            ..lease.record
        };
        self.store
            .compare_and_swap(&lease.key, Some(&lease.written), &record.to_bytes())
    }
}

/// Whether a lock counter's stored value is zero. Stores encode counters
/// their own way (decimal text, or 8 bytes little-endian as Spin's SQLite
/// does); any other value counts as taken.
fn counter_is_zero(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes).ok().map(str::trim) {
        Some(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            text.bytes().all(|b| b == b'0')
        }
        _ => bytes.len() == 8 && bytes.iter().all(|&b| b == 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_read_as_zero_in_either_encoding() {
        assert!(counter_is_zero(b"0"));
        assert!(counter_is_zero(&[0; 8]));
        assert!(!counter_is_zero(b"1"));
        assert!(!counter_is_zero(b"-1"));
        assert!(!counter_is_zero(&1i64.to_le_bytes()));
        assert!(!counter_is_zero(b""));
        assert!(!counter_is_zero(b"garbage"));
    }

    #[test]
    fn keys_escape_scope_and_key() {
        let caller = Caller::Kiosk { id: "k:1".into() };
        let key = ClaimKey::new(Purpose::CoreWrite, &caller, "a:b%");
        assert_eq!(key.record(), "idem:core:kiosk/k%3A1:a%3Ab%25");
        assert_eq!(key.lock(7), "idem-lock:core:kiosk/k%3A1:a%3Ab%25:7");
        let ticket = ClaimKey::new(Purpose::Ticket, &caller, "a:b%");
        assert_ne!(ticket.record(), key.record());
    }
}
