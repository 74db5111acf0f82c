//! What counters do to tickets (call, recall, transfer, complete, no-show),
//! and cancelling. Every change is one compare-and-swap of the ticket's
//! record, decided by the transition table ([`crate::record::change`]).

use chrono::{DateTime, Utc};

use super::{Kiosk, counter_only};
use crate::auth::Caller;
use crate::catalog::Branch;
use crate::error::DomainError;
use crate::keys::{self, Lane, LaneKind};
use crate::lanes;
use crate::model::{CallRequest, TicketStatus, TicketView, TransferRequest};
use crate::record::{Action, Change, TicketRecord, change};
use crate::service_times;
use crate::store::Store;

impl<'a, S: Store> Kiosk<'a, S> {
    /// Calls the next ticket to `request.counter`: the oldest waiting ticket
    /// (by issue time) among the services the counter serves, optionally
    /// narrowed to `request.services`. `Ok(None)` when nobody waits (or the
    /// business day's waiting has ended). A counter still holding a called
    /// ticket must complete, no-show or transfer it first (`conflict`).
    /// Concurrent calls never get the same ticket: the call is a
    /// compare-and-swap of the ticket's record.
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
                        // 409, not 400: the request is well-formed; the
                        // catalog's current assignment of services refuses it.
                        return Err(DomainError::Conflict(format!(
                            "counter {:?} does not serve {s:?}; it serves {}",
                            counter.id,
                            counter.services.join(", ")
                        )));
                    }
                }
                list
            }
        };
        let desk = keys::desk(&branch.id, &counter.id);
        if let Some(current) = self.held_at(&desk, &counter.id)? {
            return Err(DomainError::Conflict(format!(
                "counter {:?} is still serving {} ({}); complete it, mark it no-show or transfer it before calling the next ticket",
                counter.id,
                current.display_number(),
                current.id
            )));
        }
        let day = lanes::lane_day(branch, now);
        if let Some(day) = day
            && branch.waiting_ends_at(day).is_some_and(|end| now >= end)
        {
            // The business day's waiting has ended: nothing to call.
            return Ok(None);
        }
        let services: Vec<_> = services.iter().filter_map(|s| branch.service(s)).collect();
        for _ in 0..self.max_attempts {
            let (lines, _) = self.lines(branch, &services, day, &[])?;
            let mut best: Option<(Lane, TicketRecord, Vec<u8>)> = None;
            for line in &lines {
                for (lane, counts) in line.lanes.iter().zip(line.counts) {
                    if counts.taken < counts.head {
                        continue;
                    }
                    let Some((record, bytes)) = lanes::first_live(self.store, lane, counts)? else {
                        continue;
                    };
                    if best
                        .as_ref()
                        .is_none_or(|(_, b, _)| record.order_key() < b.order_key())
                    {
                        best = Some((lane.clone(), record, bytes));
                    }
                }
            }
            let Some((lane, record, bytes)) = best else {
                return Ok(None);
            };
            // The desk first: a call that dies after it leaves the desk
            // naming a ticket that is not called there, which counts as free.
            self.store.set(&desk, record.id.as_bytes())?;
            let Change::To(to) = change(&record, TicketStatus::Waiting, Action::Call)? else {
                continue;
            };
            let mut called = record.clone();
            called.status = to;
            called.counter = Some(counter.id.clone());
            called.called_at = Some(now);
            if self.swap(&bytes, &mut called)?.is_none() {
                continue;
            }
            let _ = self.store.increment(&lane.left(), 1);
            lanes::raise_head(self.store, &lane, 0, called.pos + 1);
            let _ = self.store.set(
                &keys::serving(&branch.id, &called.service, called.lane.day),
                called.display_number().as_bytes(),
            );
            return Ok(Some(called.view(TicketStatus::Called, 0, 0)));
        }
        Err(self.too_busy(&format!("the queue of branch {:?}", branch.id)))
    }

    /// The ticket called at `counter` whose desk key is `desk`, if it is
    /// still called there.
    fn held_at(&self, desk: &str, counter: &str) -> Result<Option<TicketRecord>, DomainError> {
        let Some(id) = self.store.get(desk)? else {
            return Ok(None);
        };
        let Ok(id) = String::from_utf8(id) else {
            return Ok(None);
        };
        Ok(self
            .load(&id)?
            .map(|(r, _)| r)
            .filter(|r| r.status == TicketStatus::Called && r.counter.as_deref() == Some(counter)))
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
        Ok(self
            .held_at(&keys::desk(&branch.id, counter), counter)?
            .map(|r| r.view(TicketStatus::Called, 0, 0)))
    }

    /// Moves a waiting or called ticket to `request.service`'s queue. It
    /// keeps its number and its issue time, which orders it in the new
    /// queue (it goes before everyone there who was issued later); a
    /// called ticket becomes waiting again.
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
        for _ in 0..self.max_attempts {
            let (record, bytes) = self.in_branch(branch, ticket_id)?;
            let status = record.status_at(Some(branch), now);
            change(&record, status, Action::Transfer)?;
            if record.lane.day.is_some()
                && branch
                    .waiting_ends_at(record.day)
                    .is_some_and(|end| now >= end)
            {
                // It would be expired the moment it waits again.
                return Err(DomainError::Conflict(format!(
                    "ticket {} cannot be transferred: its business day's waiting has ended; complete it or mark it no-show",
                    record.display_number()
                )));
            }
            if record.service == target.id {
                return Err(DomainError::Conflict(format!(
                    "ticket {} is already in the {:?} queue",
                    record.display_number(),
                    target.id
                )));
            }
            let lane = Lane {
                branch: branch.id.clone(),
                service: target.id.clone(),
                day: record.lane.day,
                kind: LaneKind::Moved,
            };
            let Some((moved, _)) = self.place(record, bytes, lane)? else {
                continue;
            };
            return self.view_written(&moved, now);
        }
        Err(self.too_busy("this ticket"))
    }

    /// Marks a called ticket done. Completing a done ticket returns it unchanged.
    ///
    /// Its service time (`now − called_at`) is recorded for the service it
    /// was completed in, unless it is ≤ 0 s or longer than
    /// [`MAX_SERVICE_TIME`](crate::MAX_SERVICE_TIME); waiting estimates
    /// average the last [`SERVICE_TIME_SAMPLES`](crate::SERVICE_TIME_SAMPLES).
    pub fn complete(
        &self,
        caller: &Caller,
        branch: &str,
        ticket_id: &str,
        now: DateTime<Utc>,
    ) -> Result<TicketView, DomainError> {
        self.complete_at(caller, branch, ticket_id, None, now)
    }

    /// [`complete`](Self::complete) from `counter`'s terminal: the ticket
    /// must be called at that counter (`conflict` otherwise), so a terminal
    /// showing a ticket that was transferred and called elsewhere since
    /// cannot finish it there.
    pub fn complete_at(
        &self,
        caller: &Caller,
        branch: &str,
        ticket_id: &str,
        counter: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<TicketView, DomainError> {
        self.end_at_counter(caller, branch, ticket_id, counter, now, Action::Complete)
    }

    /// Marks a called ticket as a no-show. Repeating it returns the ticket unchanged.
    pub fn no_show(
        &self,
        caller: &Caller,
        branch: &str,
        ticket_id: &str,
        now: DateTime<Utc>,
    ) -> Result<TicketView, DomainError> {
        self.no_show_at(caller, branch, ticket_id, None, now)
    }

    /// [`no_show`](Self::no_show) from `counter`'s terminal (see
    /// [`complete_at`](Self::complete_at)).
    pub fn no_show_at(
        &self,
        caller: &Caller,
        branch: &str,
        ticket_id: &str,
        counter: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<TicketView, DomainError> {
        self.end_at_counter(caller, branch, ticket_id, counter, now, Action::NoShow)
    }

    fn end_at_counter(
        &self,
        caller: &Caller,
        branch: &str,
        ticket_id: &str,
        counter: Option<&str>,
        now: DateTime<Utc>,
        action: Action,
    ) -> Result<TicketView, DomainError> {
        let what = match action {
            Action::NoShow => "mark no-shows",
            _ => "complete tickets",
        };
        counter_only(caller, what)?;
        let b = self.branch(branch)?;
        if let Some(c) = counter
            && b.counter(c).is_none()
        {
            return Err(DomainError::CounterNotFound {
                branch: b.id.clone(),
                counter: c.to_owned(),
            });
        }
        self.finish(Some(b), None, ticket_id, counter, now, action)
    }

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
        self.finish(None, Some(caller), id, None, now, Action::Cancel)
    }

    /// The record of a ticket of `branch` (`ticket_not_found` for another
    /// branch's).
    fn in_branch(
        &self,
        branch: &Branch,
        ticket_id: &str,
    ) -> Result<(TicketRecord, Vec<u8>), DomainError> {
        self.load(ticket_id)?
            .filter(|(r, _)| r.branch == branch.id)
            .ok_or_else(|| DomainError::TicketNotFound(ticket_id.to_owned()))
    }

    /// Ends a ticket: done or no-show from called, cancelled from waiting.
    /// `branch` limits it to that branch's tickets; `visible_to` to the
    /// tickets a caller may see; `at_counter` to tickets called there.
    fn finish(
        &self,
        branch: Option<&Branch>,
        visible_to: Option<&Caller>,
        ticket_id: &str,
        at_counter: Option<&str>,
        now: DateTime<Utc>,
        action: Action,
    ) -> Result<TicketView, DomainError> {
        for _ in 0..self.max_attempts {
            let (record, bytes) = match (branch, visible_to) {
                (Some(b), _) => self.in_branch(b, ticket_id)?,
                (None, Some(caller)) => self.visible(caller, ticket_id)?,
                (None, None) => unreachable!("finish is limited by branch or caller"),
            };
            if let Some(counter) = at_counter
                && record.counter.as_deref() != Some(counter)
            {
                return Err(DomainError::Conflict(format!(
                    "ticket {} is not called at counter {counter:?}{}",
                    record.display_number(),
                    match (&record.counter, record.status) {
                        (Some(other), TicketStatus::Called) => format!(" but at counter {other:?}"),
                        _ => format!(" (it is {})", record.status.as_str()),
                    }
                )));
            }
            let branch = self.catalog.branch(&record.branch);
            let status = record.status_at(branch, now);
            let to = match change(&record, status, action)? {
                Change::Already => return self.view_now(&record, now),
                Change::To(to) => to,
            };
            let mut ended = record.clone();
            ended.status = to;
            ended.finished_at = Some(now);
            if self.swap(&bytes, &mut ended)?.is_none() {
                continue;
            }
            if record.waits() {
                let _ = self.store.increment(&record.lane.left(), 1);
            }
            if to == TicketStatus::Done
                && let Some(called_at) = ended.called_at
            {
                service_times::record(self.store, &ended.branch, &ended.service, called_at, now);
            }
            return Ok(ended.view(to, 0, 0));
        }
        Err(self.too_busy("this ticket"))
    }

    /// A ticket a caller may see: phones only their own (`ticket_not_found`
    /// otherwise, so existence is not leaked); kiosks and counters any.
    pub(super) fn visible(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(TicketRecord, Vec<u8>), DomainError> {
        let not_found = || DomainError::TicketNotFound(id.to_owned());
        let (record, bytes) = self.load(id)?.ok_or_else(not_found)?;
        if let Caller::Mobile { customer_ref } = caller
            && !record.owned_by_mobile(customer_ref)
        {
            return Err(not_found());
        }
        Ok((record, bytes))
    }
}
