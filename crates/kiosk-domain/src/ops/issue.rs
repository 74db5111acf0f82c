//! Issuing a ticket.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::{IDEMPOTENCY_LEASE, Kiosk, take_position};
use crate::auth::Caller;
use crate::catalog::{Branch, Service};
use crate::error::DomainError;
use crate::idempotency::{Claim, ClaimKey, Claims, Lease, Pending, Purpose};
use crate::keys::{self, Lane, LaneKind};
use crate::lanes;
use crate::model::{
    Channel, IdempotencyKey, IssueRequest, TicketStatus, TicketView, validate_customer_ref,
};
use crate::rate;
use crate::record::{FirstAnswer, TICKET_SCHEMA, TicketRecord};
use crate::retention;
use crate::service_times;
use crate::store::{Store, StoreError};

/// What a pending claim records ([`crate::idempotency`]): the id the
/// ticket gets. A retry replays that ticket once its record landed; a
/// phone's claim holds while that ticket is active.
#[derive(Serialize, Deserialize)]
struct TicketClaim {
    ticket: String,
}

impl<'a, S: Store> Kiosk<'a, S> {
    /// Issues a ticket (`POST /tickets`).
    ///
    /// - Kiosks issue with channel `kiosk` and must send an idempotency key;
    ///   phones issue with channel `mobile` for their own `customer_ref`
    ///   (filled in when omitted); counters cannot issue (`forbidden`).
    /// - Same key + same fingerprint (within 24 h) answers what the first
    ///   request answered (the ticket as issued, whatever became of it);
    ///   another fingerprint → `idempotency_key_mismatch`; first request
    ///   still running → `idempotency_in_progress` with a retry delay.
    /// - `random` (128 bits from the host's CSPRNG) becomes the ticket id.
    /// - A service whose queue holds its `max_waiting` tickets refuses with
    ///   `queue_full` (issuers racing for the last places may pass the
    ///   bound by as many as race).
    /// - Then the caller's rate at the branch is counted (`rate_limited`
    ///   past it): the branch's `kiosk_tickets` per kiosk key,
    ///   `phone_tickets` per phone customer. Only requests that would take
    ///   a number count.
    /// - A phone holds at most one active ticket per branch
    ///   (`already_has_ticket`); the hold ends when the ticket ends,
    ///   however it ends.
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
        let Some(service) = branch.service(&request.service) else {
            return Err(DomainError::ServiceNotFound {
                branch: branch.id.clone(),
                service: request.service,
            });
        };
        let id = crate::ticket_id(random);

        let claims = Claims::new(
            self.store,
            IDEMPOTENCY_LEASE,
            self.catalog.retention().idempotency,
        )
        .with_max_attempts(self.max_attempts);
        let lease = match (&idempotency, caller) {
            (None, Caller::Kiosk { .. }) => return Err(DomainError::IdempotencyKeyRequired),
            (None, _) => None,
            (Some(k), _) => {
                let key = ClaimKey::new(Purpose::Ticket, caller, k.key());
                let pending = claim_data(&id);
                match claims.claim(&key, k.fingerprint(), pending, now, |data| {
                    match self.claimed(key.record(), data)? {
                        None => Ok(Pending::Running),
                        Some(record) => Ok(Pending::Landed(record)),
                    }
                })? {
                    Claim::Won(lease) => Some(lease),
                    Claim::Landed(record) => return Ok(record.first_view()),
                    // Ticket claims are never completed (the landed ticket
                    // is the outcome), but a done record would name one too.
                    Claim::Done(data) => {
                        return self
                            .claimed(key.record(), &data)?
                            .map(|r| r.first_view())
                            .ok_or_else(|| {
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
        let result = self.issue_new(
            branch,
            service,
            caller,
            &request,
            &id,
            now,
            &mut maybe_written,
        );
        if result.is_err()
            && !maybe_written
            && let Some(lease) = lease
        {
            // The ticket certainly did not land: a retry with this key runs anew.
            let _ = claims.release(lease);
        }
        // On success the claim stays pending: a retry finds its ticket landed.
        result
    }

    /// The ticket a claim's data names, placed where callers find it, if
    /// its record landed.
    fn claimed(
        &self,
        key: &str,
        data: &serde_json::Value,
    ) -> Result<Option<TicketRecord>, DomainError> {
        let claim = TicketClaim::deserialize(data).map_err(|e| {
            DomainError::StoreUnavailable(StoreError(format!(
                "claim at {key:?} is not readable: {e}"
            )))
        })?;
        match self.load(&claim.ticket)? {
            None => Ok(None),
            Some((record, bytes)) => Ok(Some(self.ensure_placed(record, bytes)?.0)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn issue_new(
        &self,
        branch: &Branch,
        service: &Service,
        caller: &Caller,
        request: &IssueRequest,
        id: &str,
        now: DateTime<Utc>,
        maybe_written: &mut bool,
    ) -> Result<TicketView, DomainError> {
        let closed_until = if branch.is_open_at(now) {
            branch.day_change_until(now).map(Some)
        } else {
            Some(branch.next_opening(now))
        };
        if let Some(next_open) = closed_until {
            return Err(DomainError::BranchClosed {
                branch: branch.id.clone(),
                next_open: next_open.map(|t| {
                    t.with_timezone(&branch.time_zone)
                        .to_rfc3339_opts(SecondsFormat::Secs, true)
                }),
            });
        }
        // A phone that holds a ticket here is refused before anything else.
        let phone = match (request.channel, request.customer_ref.as_deref()) {
            (Channel::Mobile, Some(_)) => Some(self.claim_phone(caller, branch, id, now)?),
            _ => None,
        };
        let day = lanes::lane_day(branch, now);
        let lane = Lane {
            branch: branch.id.clone(),
            service: service.id.clone(),
            day,
            kind: LaneKind::Main,
        };
        let taken = (|| {
            let (mut lines, _) = self.lines(branch, &[service], day, &[])?;
            let line = lines.pop().expect("one service, one line");
            if line.waiting() >= service.max_waiting {
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
            Ok((take_position(self.store, &lane)?, line))
        })();
        let (number, line) = match taken {
            Ok(taken) => taken,
            Err(e) => {
                if let Some((claims, lease)) = phone {
                    // Nothing was written: the phone's hold is free again.
                    let _ = claims.release(lease);
                }
                return Err(e);
            }
        };
        let waiting = line.waiting();
        let record = TicketRecord {
            v: TICKET_SCHEMA,
            id: id.to_owned(),
            branch: branch.id.clone(),
            day: branch.business_day(now),
            code: service.code,
            number,
            issued_for: service.id.clone(),
            service: service.id.clone(),
            channel: request.channel,
            customer_ref: request.customer_ref.clone(),
            issued_at: now,
            status: TicketStatus::Waiting,
            lane: lane.clone(),
            pos: number,
            counter: None,
            called_at: None,
            finished_at: None,
            first: FirstAnswer {
                waiting_ahead: waiting,
                estimated_wait_s: service_times::estimate(branch, service, &line.samples, waiting),
            },
            rev: 0,
        };
        // From here on the ticket may have landed even if a call fails: the
        // claims stay pending, and a retry finds it (and finishes placing it).
        *maybe_written = true;
        let bytes = record.to_bytes();
        self.store.set_many(&[
            (keys::ticket(id), bytes.clone()),
            (lane.slot(number), id.as_bytes().to_vec()),
        ])?;
        // What this ticket leaves behind goes after the retention; the
        // first number of a lane day also logs that day's counters.
        let mut garbage = vec![keys::ticket(id), lane.slot(number), lane.fate(number)];
        if number == 1 && day.is_some() {
            garbage.extend(day_keys(branch, service, day));
        }
        let due = now + self.catalog.retention().tickets;
        retention::TICKETS.record(self.store, due, &garbage);
        retention::TICKETS.sweep(self.store, now);
        let (placed, _) = self.settle_or_move(record, bytes)?;
        Ok(placed.first_view())
    }

    /// Takes the phone's hold on `branch` for ticket `id`, or refuses with
    /// `already_has_ticket` while its last ticket there is active.
    fn claim_phone(
        &self,
        caller: &Caller,
        branch: &Branch,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<(Claims<'a, S>, Lease), DomainError> {
        let claims = Claims::new(
            self.store,
            IDEMPOTENCY_LEASE,
            self.catalog.retention().tickets,
        )
        .with_max_attempts(self.max_attempts);
        let key = ClaimKey::new(Purpose::Phone, caller, &branch.id);
        let held = claims.claim(&key, "phone", claim_data(id), now, |data| {
            let Ok(claim) = TicketClaim::deserialize(data) else {
                return Ok(Pending::Void);
            };
            Ok(match self.load(&claim.ticket)? {
                // Its request is between claiming and writing the ticket,
                // or died there (the claim lapses after the lease).
                None => Pending::Running,
                Some((r, bytes)) if r.status_at(Some(branch), now).is_active() => {
                    // The phone is told it holds this ticket: make sure the
                    // counters can find it (its issue may have died after
                    // writing the record).
                    let (r, _) = self.ensure_placed(r, bytes)?;
                    Pending::Landed((r.id.clone(), r.display_number()))
                }
                Some(_) => Pending::Void,
            })
        });
        match held {
            Ok(Claim::Won(lease)) => Ok((claims, lease)),
            Ok(Claim::Landed((ticket, number))) => Err(DomainError::AlreadyHasTicket {
                branch: branch.id.clone(),
                ticket,
                number,
            }),
            Ok(Claim::Done(_)) => Err(DomainError::StoreUnavailable(StoreError(format!(
                "phone claim at {:?} is in a state this build does not write",
                key.record()
            )))),
            Err(DomainError::IdempotencyInProgress { retry_after_s }) => {
                Err(DomainError::Conflict(format!(
                    "another request of yours is taking a ticket at this branch; retry in {retry_after_s} s"
                )))
            }
            Err(e) => Err(e),
        }
    }
}

fn claim_data(id: &str) -> serde_json::Value {
    serde_json::to_value(TicketClaim {
        ticket: id.to_owned(),
    })
    .expect("ticket claims serialize")
}

/// The counters of a service's lanes on a lane day, and its board mark.
fn day_keys(branch: &Branch, service: &Service, day: Option<chrono::NaiveDate>) -> Vec<String> {
    let mut keys: Vec<String> = lanes::lanes(&branch.id, &service.id, day)
        .iter()
        .flat_map(|lane| [lane.seq(), lane.left(), lane.head()])
        .collect();
    keys.push(keys::serving(&branch.id, &service.id, day));
    keys
}
