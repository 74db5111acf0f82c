//! Reads: a ticket, and a branch's board.

use chrono::{DateTime, Utc};

use super::Kiosk;
use crate::auth::Caller;
use crate::error::DomainError;
use crate::keys;
use crate::lanes;
use crate::model::{QueueView, ServiceQueueView, TicketStatus, TicketView};
use crate::record::{TicketRecord, format_number};
use crate::service_times;
use crate::store::Store;

impl<'a, S: Store> Kiosk<'a, S> {
    /// A ticket's current view. Phones see only their own tickets
    /// (`ticket_not_found` otherwise); kiosks and counters see any.
    pub fn ticket(
        &self,
        caller: &Caller,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<TicketView, DomainError> {
        let (record, _) = self.visible(caller, id)?;
        self.view_now(&record, now)
    }

    /// A branch's queues (public: no caller needed). Its store work does
    /// not depend on how many tickets wait: one batch of counters, plus
    /// the records at the counters' desks after hours.
    pub fn queue(&self, branch: &str, now: DateTime<Utc>) -> Result<QueueView, DomainError> {
        let branch = self.branch(branch)?;
        let day = lanes::lane_day(branch, now);
        let ended = day
            .and_then(|d| branch.waiting_ends_at(d))
            .is_some_and(|end| now >= end);
        let open = branch.is_open_at(now);
        let mut extra: Vec<String> = branch
            .services
            .iter()
            .map(|s| keys::serving(&branch.id, &s.id, day))
            .collect();
        if !open {
            extra.extend(
                branch
                    .counters
                    .iter()
                    .map(|c| keys::desk(&branch.id, &c.id)),
            );
        }
        let services: Vec<_> = branch.services.iter().collect();
        let (lines, values) = self.lines(branch, &services, day, &extra)?;
        let (serving, desks) = values.split_at(branch.services.len());
        let text = |v: &Option<Vec<u8>>| v.as_ref().and_then(|b| String::from_utf8(b.clone()).ok());
        let board = branch
            .services
            .iter()
            .zip(&lines)
            .zip(serving)
            .map(|((s, line), serving)| {
                let waiting = if ended { 0 } else { line.waiting() };
                let taken = line.counts[0].taken;
                ServiceQueueView {
                    service: s.id.clone(),
                    code: s.code.to_string(),
                    waiting,
                    now_serving: text(serving),
                    last_issued: (taken > 0).then(|| format_number(s.code, taken)),
                    estimated_wait_s: service_times::estimate(branch, s, &line.samples, waiting),
                }
            })
            .collect();
        let counters_open = if open {
            branch.counters.iter().map(|c| c.id.clone()).collect()
        } else {
            // After hours: the counters still serving a called ticket.
            let ids: Vec<(usize, String)> = desks
                .iter()
                .enumerate()
                .filter_map(|(i, v)| Some((i, text(v)?)))
                .filter(|(_, id)| crate::is_ticket_id(id))
                .collect();
            let keys: Vec<String> = ids.iter().map(|(_, id)| keys::ticket(id)).collect();
            let records = if keys.is_empty() {
                Vec::new()
            } else {
                self.store.get_many(&keys)?
            };
            ids.iter()
                .zip(records)
                .filter_map(|((i, id), bytes)| {
                    let counter = &branch.counters[*i];
                    let r = TicketRecord::parse(&keys::ticket(id), &bytes?).ok()?;
                    (r.status == TicketStatus::Called
                        && r.counter.as_deref() == Some(counter.id.as_str()))
                    .then(|| counter.id.clone())
                })
                .collect()
        };
        Ok(QueueView {
            branch: branch.id.clone(),
            open,
            services: board,
            counters_open,
        })
    }
}
