//! The operations: [`Kiosk`].

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::catalog::{Branch, Catalog};
use crate::error::DomainError;
use crate::idempotency::{Claim, ClaimKey, Claims, Purpose};
use crate::intake::{self, Intake};
use crate::model::{
    CallRequest, Channel, IdempotencyKey, IssueRequest, QueueView, ServiceQueueView, TicketStatus,
    TicketView, TransferRequest, validate_customer_ref,
};
use crate::queue::{QueueDoc, TicketRecord, format_number};
use crate::rate;
use crate::store::{Store, StoreError, escape_key_part as escape};

/// Default number of compare-and-swap attempts per operation before `conflict`.
///
/// The queue update is lock-free: every round of racing compare-and-swaps on
/// a queue document has a winner, so the branch as a whole always makes
/// progress, but one request can keep losing. With many concurrent clients
/// on one branch (e.g. 8 issuers) a small budget such as 16 does run out
/// now and then, which fails the request with `conflict` and, for an issue,
/// voids its number (a gap). 256 makes that rare; a request that loses
/// every time still ends (with `conflict`) after at most 256 reads and
/// writes of the queue document. Set per [`Kiosk`] with
/// [`Kiosk::with_max_attempts`].
pub const DEFAULT_MAX_ATTEMPTS: u32 = 256;

/// Idempotency records are honoured for this long after the first request;
/// older records count as absent.
pub const IDEMPOTENCY_RETENTION: TimeDelta = TimeDelta::hours(24);

/// A request with a key whose ticket has not landed yet is "in progress" for
/// this long (409 with `Retry-After` until then); after that it is taken to
/// have died and a retry issues anew.
pub const IDEMPOTENCY_LEASE: TimeDelta = TimeDelta::seconds(30);

/// The domain operations over a catalog and a store.
///
/// Every method takes the caller (where access depends on it), the current
/// time `now` from the host clock, and returns a serializable view or a
/// [`DomainError`]. Methods never panic on bad input.
///
/// Store round trips on the success path (a compare-and-swap counts as
/// one here; over `wasi:keyvalue` it is two: read, then swap):
///
/// | operation | round trips |
/// | --- | --- |
/// | `issue_ticket` (kiosk) | 7: claim the key (increment its lock, `get_many` record + neighbouring locks, set record; see [`crate::idempotency`]), `get_many` queue document + the service's day counters (the queue's size, then the ticket's position), increment the rate window ([`crate::rate`]; the request opening a window adds up to 13 for its log and sweep), increment number, `set_many` ticket record + slot |
/// | `issue_ticket` (phone) | 6: get claim, `get_many`, increment rate, increment number, CAS claim, `set_many` (+ 3 to claim an idempotency key) |
/// | `ticket` | 1 for a finished ticket, else 2 |
/// | `queue` | 2 (document, counters) + 1 when tickets are not merged yet (their slots) |
/// | `recall` | 1 |
/// | `call_next`, `transfer` | 3 (document, counters, CAS) + 1 when there are new tickets to merge; 2 when nobody waits and nothing is new |
/// | `complete`, `no_show` | 4 (document, counters, CAS, archive record) (+1 to merge) |
/// | `cancel` | 5 (record, document, counters, CAS, archive) (+1 to merge) |
///
/// Issuing never writes the queue document (see the issue log in
/// `crate::intake`), so issuers do not contend with each other or with
/// counters. Each lost compare-and-swap race of a queue document change
/// adds its reads and a CAS; after `max_attempts` lost races the operation
/// fails with `conflict`.
pub struct Kiosk<'a, S: Store> {
    catalog: &'a Catalog,
    store: &'a S,
    max_attempts: u32,
}

/// What an update of the queue document decided.
enum Step<T> {
    /// Write the (modified) document, then return `T`.
    Write(T),
    /// Nothing changed; return `T` without writing.
    Keep(T),
}

/// What a pending ticket claim records ([`crate::idempotency`]): the id
/// the ticket gets. A retry replays that ticket once its record landed.
#[derive(Serialize, Deserialize)]
struct TicketClaim {
    ticket: String,
}

/// `active:{branch}:{customer}`: the ticket a phone took last at a branch.
/// It is the phone's active ticket while that ticket is waiting or called.
#[derive(Serialize, Deserialize)]
struct ActiveClaim {
    ticket: String,
    /// Display number, for `already_has_ticket`.
    number: String,
    /// Unix seconds of the claim.
    at: i64,
}

fn active_key(branch: &str, customer_ref: &str) -> String {
    format!("active:{}:{}", escape(branch), escape(customer_ref))
}

fn queue_key(branch: &str) -> String {
    format!("queue:{branch}")
}

fn ticket_key(id: &str) -> String {
    format!("ticket:{id}")
}

fn corrupt(key: &str, e: serde_json::Error) -> DomainError {
    DomainError::StoreUnavailable(StoreError(format!(
        "stored value at {key:?} is not readable: {e}"
    )))
}

fn parse_queue(key: &str, bytes: Option<&[u8]>) -> Result<QueueDoc, DomainError> {
    match bytes {
        None => Ok(QueueDoc::default()),
        Some(b) => serde_json::from_slice(b).map_err(|e| corrupt(key, e)),
    }
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("stored documents serialize")
}

fn counter_only(caller: &Caller, action: &str) -> Result<(), DomainError> {
    match caller {
        Caller::Counter { .. } => Ok(()),
        _ => Err(DomainError::Forbidden(format!(
            "only counter staff can {action}"
        ))),
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

    // ---------------------------------------------------------------- issue

    /// Issues a ticket (`POST /tickets`).
    ///
    /// - Kiosks issue with channel `kiosk` and must send an idempotency key;
    ///   phones issue with channel `mobile` for their own `customer_ref`
    ///   (filled in when omitted); counters cannot issue (`forbidden`).
    /// - Same key + same fingerprint (within 24 h) returns the same ticket,
    ///   in its current state; different fingerprint → `idempotency_key_mismatch`;
    ///   first request still running → `idempotency_in_progress`.
    /// - `random` (128 bits from the host's CSPRNG) becomes the ticket id.
    /// - A service whose queue holds its `max_waiting` tickets refuses with
    ///   `queue_full`: waiting tickets in the queue document plus numbers not
    ///   merged into it yet, read before the number is taken (issuers racing
    ///   for the last places may pass the bound by as many as race).
    /// - Then the caller's rate at the branch is counted (`rate_limited`
    ///   past it): the branch's `kiosk_tickets` per kiosk key,
    ///   `phone_tickets` per phone customer. Only requests that would take
    ///   a number count: replays of an idempotency key and requests refused
    ///   earlier (closed, already holding a ticket, queue full) do not.
    pub fn issue_ticket(
        &self,
        caller: &Caller,
        mut request: IssueRequest,
        idempotency: Option<IdempotencyKey>,
        now: DateTime<Utc>,
        random: [u8; 16],
    ) -> Result<TicketView, DomainError> {
        match caller {
            Caller::Kiosk { .. } => {
                if request.channel != Channel::Kiosk {
                    return Err(DomainError::Forbidden(
                        "kiosks issue tickets with channel \"kiosk\"".into(),
                    ));
                }
            }
            Caller::Mobile { customer_ref } => {
                if request.channel != Channel::Mobile {
                    return Err(DomainError::Forbidden(
                        "phones issue tickets with channel \"mobile\"".into(),
                    ));
                }
                match &request.customer_ref {
                    None => request.customer_ref = Some(customer_ref.clone()),
                    Some(r) if r == customer_ref => {}
                    Some(_) => {
                        return Err(DomainError::Forbidden(
                            "customer_ref must be your own (or omitted)".into(),
                        ));
                    }
                }
            }
            Caller::Counter { .. } => {
                return Err(DomainError::Forbidden(
                    "counter staff cannot issue tickets; use a kiosk".into(),
                ));
            }
        }
        if let Some(r) = &request.customer_ref {
            validate_customer_ref(r)?;
        }
        let branch = self.branch(&request.branch)?;
        if branch.service(&request.service).is_none() {
            return Err(DomainError::ServiceNotFound {
                branch: branch.id.clone(),
                service: request.service,
            });
        }
        let id = crate::ticket_id(random);

        let claims = Claims::new(self.store, IDEMPOTENCY_LEASE, IDEMPOTENCY_RETENTION)
            .with_max_attempts(self.max_attempts);
        let lease = match (&idempotency, caller) {
            (None, Caller::Kiosk { .. }) => return Err(DomainError::IdempotencyKeyRequired),
            (None, _) => None,
            (Some(k), _) => {
                let key = ClaimKey::new(Purpose::Ticket, caller, k.key());
                let pending = serde_json::to_value(TicketClaim { ticket: id.clone() })
                    .expect("ticket claims serialize");
                match claims.claim(&key, k.fingerprint(), pending, now, |data| {
                    self.claimed_ticket(key.record(), data)
                })? {
                    Claim::Won(lease) => Some(lease),
                    Claim::Landed(view) => return Ok(view),
                    // Ticket claims are never completed (the landed ticket
                    // is the outcome), but a done record would name one too.
                    Claim::Done(data) => {
                        return self.claimed_ticket(key.record(), &data)?.ok_or_else(|| {
                            DomainError::StoreUnavailable(StoreError(format!(
                                "idempotency record at {:?} names a ticket that was never written",
                                key.record()
                            )))
                        });
                    }
                }
            }
        };

        let mut maybe_written = false;
        let result = self.issue_new(branch, caller, &request, &id, now, &mut maybe_written);
        if result.is_err() && !maybe_written {
            // The ticket definitely did not land: let a retry with this key run anew.
            if let Some(lease) = lease {
                let _ = claims.release(lease);
            }
        }
        // On success the claim stays pending: a retry finds its ticket landed.
        result
    }

    fn issue_new(
        &self,
        branch: &Branch,
        caller: &Caller,
        request: &IssueRequest,
        id: &str,
        now: DateTime<Utc>,
        maybe_written: &mut bool,
    ) -> Result<TicketView, DomainError> {
        if !branch.is_open_at(now) {
            return Err(DomainError::BranchClosed {
                branch: branch.id.clone(),
                next_open: branch.next_opening(now).map(|t| {
                    t.with_timezone(&branch.time_zone)
                        .to_rfc3339_opts(SecondsFormat::Secs, true)
                }),
            });
        }
        let service = branch
            .service(&request.service)
            .expect("checked by the caller");
        let day = branch.business_day(now);
        let mobile_owner = match request.channel {
            Channel::Mobile => request.customer_ref.as_deref(),
            Channel::Kiosk => None,
        };
        // A phone that holds a ticket here is refused before taking a number.
        let seen_claim = match mobile_owner {
            Some(owner) => Some(self.check_active(&branch.id, owner, now)?),
            None => None,
        };

        // The line as it stands, read once: it bounds the queue here and
        // positions the new ticket below.
        let counter_keys = intake::day_counter_keys(&branch.id, &service.id, day);
        let queue = queue_key(&branch.id);
        let mut keys = vec![queue.clone()];
        keys.extend(counter_keys.iter().map(|(_, k)| k.clone()));
        let mut values = self.store.get_many(&keys)?.into_iter();
        let doc = parse_queue(&queue, values.next().flatten().as_deref())?;
        let counters: BTreeMap<NaiveDate, u32> = counter_keys
            .iter()
            .zip(values)
            .filter_map(|((day, _), v)| Some((*day, intake::decode_counter(&v?)?)))
            .collect();
        let taken_today = counters.get(&day).copied().unwrap_or(0);
        // Waiting in the document, plus every number not merged into it
        // yet. Issuers racing here may each see one place left: the bound
        // can be passed by as many tickets as are issued concurrently.
        let waiting = doc
            .waiting_in(&service.id)
            .saturating_add(intake::unmerged_below(
                &doc,
                &service.id,
                day,
                taken_today.saturating_add(1),
                &counters,
            ));
        if waiting >= service.max_waiting {
            return Err(DomainError::QueueFull {
                branch: branch.id.clone(),
                service: service.id.clone(),
                max_waiting: service.max_waiting,
            });
        }
        let rate = match caller {
            Caller::Mobile { .. } => branch.phone_tickets,
            Caller::Kiosk { .. } | Caller::Counter { .. } => branch.kiosk_tickets,
        };
        let subject = rate::Subject::Tickets {
            branch: &branch.id,
            caller,
        };
        rate::admit(self.store, &subject, rate, now)?;

        let seq_key = intake::seq_key(&branch.id, &service.id, day);
        let n = self.store.increment(&seq_key, 1)?;
        let number = u32::try_from(n).map_err(|_| {
            DomainError::StoreUnavailable(StoreError(format!("counter {seq_key:?} holds {n}")))
        })?;
        let slot = intake::slot_key(&branch.id, &service.id, day, number);
        let record = TicketRecord {
            id: id.to_owned(),
            branch: branch.id.clone(),
            day,
            code: service.code,
            number,
            issued_for: service.id.clone(),
            service: service.id.clone(),
            channel: request.channel,
            customer_ref: request.customer_ref.clone(),
            issued_at: now,
            status: TicketStatus::Waiting,
            counter: None,
            called_at: None,
            finished_at: None,
        };
        if let (Some(owner), Some(seen)) = (mobile_owner, seen_claim)
            && let Err(e) = self.take_active(&branch.id, owner, seen, &record, now)
        {
            // Give the number up: merges skip it at once (a documented gap).
            let _ = self.store.set(&slot, intake::VOID);
            return Err(e);
        }
        // From here on the ticket may have landed even if a call fails.
        *maybe_written = true;
        let bytes = to_json(&record);
        self.store
            .set_many(&[(ticket_key(id), bytes.clone()), (slot, bytes)])?;
        // Behind the waiting tickets of the document read above and every
        // number taken before its own that the document has not merged.
        let unmerged = intake::unmerged_ahead(&doc, &record, &counters);
        Ok(record.view_behind(Some(branch), Some(&doc), unmerged))
    }

    /// The view of an active ticket: from the queue document if it is
    /// there, else (not merged yet) positioned behind the document's waiting
    /// tickets and the unmerged numbers before it. One `get_many`.
    fn pending_view(
        &self,
        branch: Option<&Branch>,
        record: &TicketRecord,
    ) -> Result<TicketView, DomainError> {
        let earlier = intake::earlier_counter_keys(&record.branch, record);
        let queue = queue_key(&record.branch);
        let mut keys = vec![queue.clone()];
        keys.extend(earlier.iter().map(|(_, k)| k.clone()));
        let mut values = self.store.get_many(&keys)?.into_iter();
        let doc = parse_queue(&queue, values.next().flatten().as_deref())?;
        if let Some(current) = doc.find(&record.id) {
            if !current.status.is_active() {
                // Finished but maybe not archived (crash between the writes): re-archive.
                let _ = self.store.set(&ticket_key(&current.id), &to_json(current));
            }
            return Ok(current.view(branch, Some(&doc)));
        }
        let counters = earlier
            .iter()
            .zip(values)
            .filter_map(|((day, _), v)| Some((*day, intake::decode_counter(&v?)?)))
            .collect();
        let unmerged = intake::unmerged_ahead(&doc, record, &counters);
        Ok(record.view_behind(branch, Some(&doc), unmerged))
    }

    /// Refuses a phone that holds an active ticket at `branch`
    /// (`already_has_ticket`); otherwise returns the claim as read, for
    /// [`take_active`](Self::take_active).
    fn check_active(
        &self,
        branch: &str,
        customer_ref: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<u8>>, DomainError> {
        let current = self.store.get(&active_key(branch, customer_ref))?;
        if let Some(bytes) = &current {
            self.refuse_if_held(branch, bytes, now)?;
        }
        Ok(current)
    }

    /// `already_has_ticket` if the claim `bytes` holds an active ticket.
    fn refuse_if_held(
        &self,
        branch: &str,
        bytes: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), DomainError> {
        let Ok(claim) = serde_json::from_slice::<ActiveClaim>(bytes) else {
            // Released or unreadable: free.
            return Ok(());
        };
        let held = match self.load_ticket(&claim.ticket)? {
            // Its request is between claiming and writing the ticket, or
            // died there (then the claim lapses after the lease).
            None => now.timestamp() - claim.at < IDEMPOTENCY_LEASE.num_seconds(),
            Some(record) if !record.status.is_active() => false,
            Some(record) => {
                // While it is in the queue document, that is the truth.
                let (_, doc) = self.load_queue(&record.branch)?;
                doc.find(&record.id).is_none_or(|t| t.status.is_active())
            }
        };
        if held {
            return Err(DomainError::AlreadyHasTicket {
                branch: branch.to_owned(),
                ticket: claim.ticket,
                number: claim.number,
            });
        }
        Ok(())
    }

    /// Claims `branch` for the phone's new ticket `record`: compare-and-swap
    /// over the claim `seen` by [`check_active`](Self::check_active),
    /// re-checking whatever a concurrent request wrote meanwhile.
    fn take_active(
        &self,
        branch: &str,
        customer_ref: &str,
        seen: Option<Vec<u8>>,
        record: &TicketRecord,
        now: DateTime<Utc>,
    ) -> Result<(), DomainError> {
        let key = active_key(branch, customer_ref);
        let claim = to_json(&ActiveClaim {
            ticket: record.id.clone(),
            number: record.display_number(),
            at: now.timestamp(),
        });
        let mut expected = seen;
        for _ in 0..self.max_attempts {
            if self
                .store
                .compare_and_swap(&key, expected.as_deref(), &claim)?
            {
                return Ok(());
            }
            let current = self.store.get(&key)?;
            if let Some(bytes) = &current {
                self.refuse_if_held(branch, bytes, now)?;
            }
            expected = current;
        }
        Err(DomainError::Conflict(
            "another request of yours is taking a ticket at this branch; retry".into(),
        ))
    }

    /// The ticket a claim's `data` names, if it was issued for real (its
    /// record landed).
    fn claimed_ticket(
        &self,
        key: &str,
        data: &serde_json::Value,
    ) -> Result<Option<TicketView>, DomainError> {
        let claim = TicketClaim::deserialize(data).map_err(|e| corrupt(key, e))?;
        self.landed_ticket(&claim.ticket)
    }

    /// The ticket if it was issued for real (its record landed).
    fn landed_ticket(&self, id: &str) -> Result<Option<TicketView>, DomainError> {
        match self.load_ticket(id)? {
            Some(record) => self.current_view(record).map(Some),
            None => Ok(None),
        }
    }

    // ---------------------------------------------------------------- reads

    /// A ticket's current view. Phones see only their own tickets
    /// (`ticket_not_found` otherwise); kiosks and counters see any.
    /// `now` is accepted for uniformity; views do not depend on it yet.
    pub fn ticket(
        &self,
        caller: &Caller,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<TicketView, DomainError> {
        let _ = now;
        let record = self.visible_ticket(caller, id)?;
        self.current_view(record)
    }

    fn visible_ticket(&self, caller: &Caller, id: &str) -> Result<TicketRecord, DomainError> {
        let not_found = || DomainError::TicketNotFound(id.to_owned());
        let record = self.load_ticket(id)?.ok_or_else(not_found)?;
        if let Caller::Mobile { customer_ref } = caller
            && !record.owned_by_mobile(customer_ref)
        {
            return Err(not_found());
        }
        Ok(record)
    }

    fn load_ticket(&self, id: &str) -> Result<Option<TicketRecord>, DomainError> {
        if !crate::is_ticket_id(id) {
            return Ok(None);
        }
        let key = ticket_key(id);
        match self.store.get(&key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| corrupt(&key, e)),
        }
    }

    /// View of a ticket from its record: final if archived, else from the
    /// queue document or, not merged yet, from the record.
    fn current_view(&self, record: TicketRecord) -> Result<TicketView, DomainError> {
        let branch = self.catalog.branch(&record.branch);
        if !record.status.is_active() {
            return Ok(record.view(branch, None));
        }
        self.pending_view(branch, &record)
    }

    /// A branch's queues (public: no caller needed).
    pub fn queue(&self, branch: &str, now: DateTime<Utc>) -> Result<QueueView, DomainError> {
        let branch = self.branch(branch)?;
        let (_, mut doc) = self.load_queue(&branch.id)?;
        let today = branch.business_day(now);
        // The board counts tickets not merged yet: merge into this copy.
        let intake = Intake::read(self.store, branch, &doc, today)?;
        intake.apply(&mut doc, now);
        let open = branch.is_open_at(now);
        let services = branch
            .services
            .iter()
            .map(|s| {
                let marks = doc.services.get(&s.id);
                let today_only = |m: Option<&crate::queue::Mark>| {
                    m.filter(|m| m.day == today)
                        .map(|m| format_number(m.code, m.number))
                };
                let waiting = doc.waiting_in(&s.id).saturating_add(intake.backlog(&s.id));
                ServiceQueueView {
                    service: s.id.clone(),
                    code: s.code.to_string(),
                    waiting,
                    now_serving: today_only(marks.and_then(|m| m.last_called.as_ref())),
                    last_issued: if intake.backlog(&s.id) > 0 {
                        // Beyond what was read: the counter knows the last number.
                        intake
                            .last_taken(&s.id, today)
                            .map(|n| format_number(s.code, n))
                    } else {
                        today_only(marks.and_then(|m| m.last_issued.as_ref()))
                    },
                    estimated_wait_s: doc.estimate_wait_s(branch, s, waiting),
                }
            })
            .collect();
        let counters_open = branch
            .counters
            .iter()
            .filter(|c| open || doc.called_at_counter(&c.id).is_some())
            .map(|c| c.id.clone())
            .collect();
        Ok(QueueView {
            branch: branch.id.clone(),
            open,
            services,
            counters_open,
        })
    }

    // ---------------------------------------------------------------- cancel

    /// Cancels a waiting ticket. Phones cancel their own tickets; counter
    /// staff any; kiosks none (`forbidden`). Cancelling a called ticket is
    /// `conflict`; cancelling a cancelled ticket returns it unchanged.
    pub fn cancel(
        &self,
        caller: &Caller,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<TicketView, DomainError> {
        if let Caller::Kiosk { .. } = caller {
            return Err(DomainError::Forbidden(
                "kiosks cannot cancel tickets; cancel on the phone or at a counter".into(),
            ));
        }
        let record = self.visible_ticket(caller, id)?;
        let branch = self.catalog.branch(&record.branch);
        if !record.status.is_active() {
            return finished_result(record, TicketStatus::Cancelled, "cancelled", branch);
        }
        self.finish(&record.branch, branch, id, now, TicketStatus::Cancelled)
    }

    // ---------------------------------------------------------------- counters

    /// Calls the next ticket to `request.counter`: the oldest waiting ticket
    /// (by issue time) among the services the counter serves, optionally
    /// narrowed to `request.services`. `Ok(None)` when nobody waits. A counter
    /// still holding a called ticket must complete, no-show or transfer it
    /// first (`conflict`). Concurrent calls never get the same ticket: the
    /// claim is a compare-and-swap of the queue document.
    pub fn call_next(
        &self,
        caller: &Caller,
        branch: &str,
        request: CallRequest,
        now: DateTime<Utc>,
    ) -> Result<Option<TicketView>, DomainError> {
        counter_only(caller, "call tickets")?;
        let branch = self.branch(branch)?;
        let counter =
            branch
                .counter(&request.counter)
                .ok_or_else(|| DomainError::CounterNotFound {
                    branch: branch.id.clone(),
                    counter: request.counter.clone(),
                })?;
        let services = match request.services {
            None => counter.services.clone(),
            Some(list) => {
                if list.is_empty() {
                    return Err(DomainError::InvalidRequest(
                        "services must not be empty; omit it to call from every service the counter serves".into(),
                    ));
                }
                for s in &list {
                    if branch.service(s).is_none() {
                        return Err(DomainError::ServiceNotFound {
                            branch: branch.id.clone(),
                            service: s.clone(),
                        });
                    }
                    if !counter.services.contains(s) {
                        return Err(DomainError::InvalidRequest(format!(
                            "counter {:?} does not serve {s:?}; it serves {}",
                            counter.id,
                            counter.services.join(", ")
                        )));
                    }
                }
                list
            }
        };
        let today = branch.business_day(now);
        let mut maybe_written = false;
        let (doc, called) = self.update_queue(&branch.id, Some(branch), now, &mut maybe_written, |doc| {
            if let Some(current) = doc.called_at_counter(&counter.id) {
                return Err(DomainError::Conflict(format!(
                    "counter {:?} is still serving {} ({}); complete it, mark it no-show or transfer it before calling the next ticket",
                    counter.id,
                    current.display_number(),
                    current.id
                )));
            }
            let Some(next) = doc.next_waiting(&services).map(|t| t.id.clone()) else {
                return Ok(Step::Keep(None));
            };
            let t = doc.find_mut(&next).expect("just found");
            t.status = TicketStatus::Called;
            t.counter = Some(counter.id.clone());
            t.called_at = Some(now);
            let t = t.clone();
            doc.mark_called(&t, today);
            Ok(Step::Write(Some(t)))
        })?;
        Ok(called.map(|t| t.view(Some(branch), Some(&doc))))
    }

    /// The ticket currently called at `counter`, to announce it again;
    /// `Ok(None)` if the counter has none. Reads only.
    pub fn recall(
        &self,
        caller: &Caller,
        branch: &str,
        counter: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<TicketView>, DomainError> {
        let _ = now;
        counter_only(caller, "recall tickets")?;
        let branch = self.branch(branch)?;
        if branch.counter(counter).is_none() {
            return Err(DomainError::CounterNotFound {
                branch: branch.id.clone(),
                counter: counter.to_owned(),
            });
        }
        let (_, doc) = self.load_queue(&branch.id)?;
        Ok(doc
            .called_at_counter(counter)
            .map(|t| t.view(Some(branch), Some(&doc))))
    }

    /// Moves a waiting or called ticket to `request.service`'s queue. It keeps
    /// its number and its issue time, which orders it in the new queue (it
    /// goes before everyone there who was issued later); a called ticket
    /// becomes waiting again.
    pub fn transfer(
        &self,
        caller: &Caller,
        branch: &str,
        ticket_id: &str,
        request: TransferRequest,
        now: DateTime<Utc>,
    ) -> Result<TicketView, DomainError> {
        counter_only(caller, "transfer tickets")?;
        let branch = self.branch(branch)?;
        let target =
            branch
                .service(&request.service)
                .ok_or_else(|| DomainError::ServiceNotFound {
                    branch: branch.id.clone(),
                    service: request.service.clone(),
                })?;
        let mut maybe_written = false;
        let result =
            self.update_queue(&branch.id, Some(branch), now, &mut maybe_written, |doc| {
                let Some(t) = doc.find_mut(ticket_id) else {
                    return Ok(Step::Keep(None));
                };
                match t.status {
                    TicketStatus::Waiting | TicketStatus::Called => {}
                    s => {
                        return Err(DomainError::Conflict(format!(
                            "ticket {} is {}; only waiting or called tickets can be transferred",
                            t.display_number(),
                            s.as_str()
                        )));
                    }
                }
                if t.service == target.id {
                    return Err(DomainError::InvalidRequest(format!(
                        "ticket {} is already in the {:?} queue",
                        t.display_number(),
                        target.id
                    )));
                }
                t.service = target.id.clone();
                t.status = TicketStatus::Waiting;
                t.counter = None;
                t.called_at = None;
                Ok(Step::Write(Some(t.clone())))
            })?;
        match result {
            (doc, Some(t)) => Ok(t.view(Some(branch), Some(&doc))),
            (_, None) => Err(self.not_transferable(branch, ticket_id)?),
        }
    }

    /// Marks a called ticket done. Completing a done ticket returns it unchanged.
    ///
    /// Its service time (`now − called_at`) is recorded for the service it
    /// was completed in, in the same queue document write, unless it is ≤ 0 s
    /// or longer than [`MAX_SERVICE_TIME`](crate::MAX_SERVICE_TIME); waiting
    /// estimates average the last [`SERVICE_TIME_SAMPLES`](crate::SERVICE_TIME_SAMPLES).
    pub fn complete(
        &self,
        caller: &Caller,
        branch: &str,
        ticket_id: &str,
        now: DateTime<Utc>,
    ) -> Result<TicketView, DomainError> {
        counter_only(caller, "complete tickets")?;
        let b = self.branch(branch)?;
        self.finish(&b.id, Some(b), ticket_id, now, TicketStatus::Done)
    }

    /// Marks a called ticket as a no-show. Repeating it returns the ticket unchanged.
    pub fn no_show(
        &self,
        caller: &Caller,
        branch: &str,
        ticket_id: &str,
        now: DateTime<Utc>,
    ) -> Result<TicketView, DomainError> {
        counter_only(caller, "mark no-shows")?;
        let b = self.branch(branch)?;
        self.finish(&b.id, Some(b), ticket_id, now, TicketStatus::NoShow)
    }

    /// Moves a ticket to a final status (cancelled from waiting; done or
    /// no-show from called), then archives its final record.
    fn finish(
        &self,
        branch_id: &str,
        branch: Option<&Branch>,
        ticket_id: &str,
        now: DateTime<Utc>,
        target: TicketStatus,
    ) -> Result<TicketView, DomainError> {
        let (verb, from) = match target {
            TicketStatus::Cancelled => ("cancelled", TicketStatus::Waiting),
            TicketStatus::Done => ("completed", TicketStatus::Called),
            _ => ("marked no-show", TicketStatus::Called),
        };
        let mut maybe_written = false;
        let (doc, outcome) =
            self.update_queue(branch_id, branch, now, &mut maybe_written, |doc| {
                let Some(t) = doc.find_mut(ticket_id) else {
                    return Ok(Step::Keep(None));
                };
                if t.status == target {
                    return Ok(Step::Keep(Some((t.clone(), false))));
                }
                if t.status != from {
                    let hint = match (t.status, target) {
                        (TicketStatus::Called, TicketStatus::Cancelled) => format!(
                            "; it has been called to counter {}",
                            t.counter.as_deref().unwrap_or("?")
                        ),
                        (TicketStatus::Waiting, _) => "; call it first".to_owned(),
                        _ => String::new(),
                    };
                    return Err(DomainError::Conflict(format!(
                        "ticket {} is {} and cannot be {verb}{hint}",
                        t.display_number(),
                        t.status.as_str()
                    )));
                }
                t.status = target;
                t.finished_at = Some(now);
                let t = t.clone();
                if target == TicketStatus::Done
                    && let Some(called_at) = t.called_at
                {
                    // In the same write: the service it was completed in (after
                    // any transfer), timed from its latest call.
                    doc.record_service_time(&t.service, called_at, now);
                }
                Ok(Step::Write(Some((t, true))))
            })?;
        match outcome {
            Some((t, written)) => {
                if written {
                    // Archive. If this fails the final state is still in the queue
                    // document for FINISHED_RETENTION and a read re-archives it.
                    let _ = self.store.set(&ticket_key(&t.id), &to_json(&t));
                }
                Ok(t.view(branch, Some(&doc)))
            }
            None => {
                let record = self.not_in_queue_record(branch_id, ticket_id)?;
                match record {
                    Some(r) => finished_result(r, target, verb, branch),
                    None => Err(DomainError::TicketNotFound(ticket_id.to_owned())),
                }
            }
        }
    }

    /// The archived record of a ticket of `branch` that is no longer in its queue.
    fn not_in_queue_record(
        &self,
        branch: &str,
        ticket_id: &str,
    ) -> Result<Option<TicketRecord>, DomainError> {
        Ok(self
            .load_ticket(ticket_id)?
            .filter(|r| r.branch == branch && !r.status.is_active()))
    }

    /// The error for transferring a ticket that is not in the queue.
    fn not_transferable(
        &self,
        branch: &Branch,
        ticket_id: &str,
    ) -> Result<DomainError, DomainError> {
        Ok(match self.not_in_queue_record(&branch.id, ticket_id)? {
            Some(r) => DomainError::Conflict(format!(
                "ticket {} is {}; only waiting or called tickets can be transferred",
                r.display_number(),
                r.status.as_str()
            )),
            None => DomainError::TicketNotFound(ticket_id.to_owned()),
        })
    }

    // ---------------------------------------------------------------- queue document

    fn load_queue(&self, branch: &str) -> Result<(Option<Vec<u8>>, QueueDoc), DomainError> {
        let key = queue_key(branch);
        let bytes = self.store.get(&key)?;
        let doc = parse_queue(&key, bytes.as_deref())?;
        Ok((bytes, doc))
    }

    /// Read-modify-CAS loop on `queue:{branch}`. Each attempt reads a fresh
    /// copy of the document, merges the branch's issue log into it (when the
    /// branch is in the catalog), and runs `f` on it; the merge is written
    /// with `f`'s change, or alone if `f` changes nothing. Sets
    /// `maybe_written` when a CAS failed with a store error (the write may or
    /// may not have happened).
    fn update_queue<T>(
        &self,
        branch_id: &str,
        branch: Option<&Branch>,
        now: DateTime<Utc>,
        maybe_written: &mut bool,
        mut f: impl FnMut(&mut QueueDoc) -> Result<Step<T>, DomainError>,
    ) -> Result<(QueueDoc, T), DomainError> {
        let key = queue_key(branch_id);
        for _ in 0..self.max_attempts {
            let (current, mut doc) = self.load_queue(branch_id)?;
            let merged = match branch {
                Some(b) => {
                    Intake::read(self.store, b, &doc, b.business_day(now))?.apply(&mut doc, now)
                }
                None => false,
            };
            let t = match f(&mut doc)? {
                Step::Keep(t) if !merged => return Ok((doc, t)),
                Step::Keep(t) | Step::Write(t) => t,
            };
            doc.prune(now);
            match self
                .store
                .compare_and_swap(&key, current.as_deref(), &to_json(&doc))
            {
                Ok(true) => return Ok((doc, t)),
                Ok(false) => continue,
                Err(e) => {
                    *maybe_written = true;
                    return Err(e.into());
                }
            }
        }
        Err(DomainError::Conflict(format!(
            "the queue of branch {branch_id:?} is changing too fast ({} attempts); retry the request",
            self.max_attempts
        )))
    }
}

/// Result of finishing a ticket that is already finished: the same target
/// status is an idempotent success, any other is `conflict`.
fn finished_result(
    record: TicketRecord,
    target: TicketStatus,
    verb: &str,
    branch: Option<&Branch>,
) -> Result<TicketView, DomainError> {
    if record.status == target {
        Ok(record.view(branch, None))
    } else {
        Err(DomainError::Conflict(format!(
            "ticket {} is {} and cannot be {verb}",
            record.display_number(),
            record.status.as_str()
        )))
    }
}
