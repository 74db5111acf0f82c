//! The clients and what they send: kiosks, phones, counter terminals and
//! readers, each behaving like the real app would.
//!
//! - **Kiosks** (two per branch) issue with a fresh `Idempotency-Key`;
//!   sometimes they retry an earlier key with the same body (a client
//!   timeout; the first attempt may still be running) or reuse a key with
//!   another body (a bug in a kiosk). A kiosk may have two requests in flight.
//! - **Phones** (a small pool of customer refs, so `already_has_ticket`
//!   happens) issue at any branch, sometimes with a key, read and cancel
//!   the ticket they know of (from an issue response, or named by an
//!   `already_has_ticket` answer).
//! - **Counter terminals** (one request at a time each) call the next
//!   ticket, then complete it, mark it no-show or transfer it; after an
//!   answer they cannot trust (store error, crash, `conflict`) they `recall`
//!   to learn what they hold, and they retry a finishing request that failed
//!   with a store error. Counter staff also cancel or transfer other
//!   tickets of their branch now and then.
//! - **Readers** read tickets and queue boards.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kiosk_domain::{
    CallRequest, Caller, Catalog, Channel, DomainError, IdempotencyKey, IssueRequest, Kiosk,
    QueueView, Store, TicketView, TransferRequest,
};

use crate::model::{Model, status_of};
use crate::rng::Rng;
use crate::sched::Work;

/// What one request does.
#[derive(Debug, Clone)]
pub enum Action {
    IssueKiosk {
        kiosk: String,
        branch: String,
        service: String,
        key: String,
        random: [u8; 16],
    },
    IssuePhone {
        customer: String,
        branch: String,
        service: String,
        key: Option<String>,
        random: [u8; 16],
    },
    CallNext {
        branch: String,
        counter: String,
        services: Option<Vec<String>>,
    },
    Recall {
        branch: String,
        counter: String,
    },
    Transfer {
        branch: String,
        counter: String,
        ticket: String,
        service: String,
    },
    Complete {
        branch: String,
        counter: String,
        ticket: String,
        call: u64,
    },
    NoShow {
        branch: String,
        counter: String,
        ticket: String,
        call: u64,
    },
    CancelPhone {
        customer: String,
        ticket: String,
    },
    CancelCounter {
        branch: String,
        counter: String,
        ticket: String,
    },
    ReadTicket {
        caller: Caller,
        ticket: String,
    },
    ReadQueue {
        branch: String,
    },
}

/// Request kinds, for statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    IssueKiosk,
    IssuePhone,
    CallNext,
    Recall,
    Transfer,
    Complete,
    NoShow,
    CancelPhone,
    CancelCounter,
    ReadTicket,
    ReadQueue,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::IssueKiosk => "issue (kiosk)",
            Kind::IssuePhone => "issue (phone)",
            Kind::CallNext => "call_next",
            Kind::Recall => "recall",
            Kind::Transfer => "transfer",
            Kind::Complete => "complete",
            Kind::NoShow => "no_show",
            Kind::CancelPhone => "cancel (phone)",
            Kind::CancelCounter => "cancel (counter)",
            Kind::ReadTicket => "ticket",
            Kind::ReadQueue => "queue",
        }
    }
}

impl Action {
    pub fn kind(&self) -> Kind {
        match self {
            Action::IssueKiosk { .. } => Kind::IssueKiosk,
            Action::IssuePhone { .. } => Kind::IssuePhone,
            Action::CallNext { .. } => Kind::CallNext,
            Action::Recall { .. } => Kind::Recall,
            Action::Transfer { .. } => Kind::Transfer,
            Action::Complete { .. } => Kind::Complete,
            Action::NoShow { .. } => Kind::NoShow,
            Action::CancelPhone { .. } => Kind::CancelPhone,
            Action::CancelCounter { .. } => Kind::CancelCounter,
            Action::ReadTicket { .. } => Kind::ReadTicket,
            Action::ReadQueue { .. } => Kind::ReadQueue,
        }
    }

    /// The ticket this request acts on, if it names one.
    pub fn ticket(&self) -> Option<&str> {
        match self {
            Action::Transfer { ticket, .. }
            | Action::Complete { ticket, .. }
            | Action::NoShow { ticket, .. }
            | Action::CancelPhone { ticket, .. }
            | Action::CancelCounter { ticket, .. }
            | Action::ReadTicket { ticket, .. } => Some(ticket),
            _ => None,
        }
    }

    /// The id the ticket of an issue gets if it is issued anew.
    pub fn new_ticket_id(&self) -> Option<String> {
        match self {
            Action::IssueKiosk { random, .. } | Action::IssuePhone { random, .. } => {
                Some(kiosk_domain::ticket_id(*random))
            }
            _ => None,
        }
    }
}

/// What a request answered.
#[derive(Debug)]
pub enum Outcome {
    View(Result<TicketView, DomainError>),
    MaybeView(Result<Option<TicketView>, DomainError>),
    Queue(Result<QueueView, DomainError>),
}

impl Outcome {
    /// One line for traces.
    pub fn summary(&self) -> String {
        fn view(v: &TicketView) -> String {
            format!(
                "{} {} {}/{} {}{}",
                &v.id[..6],
                v.number,
                v.branch,
                v.service,
                status_of(v).name(),
                v.counter
                    .as_deref()
                    .map(|c| format!(" @{c}"))
                    .unwrap_or_default()
            )
        }
        match self {
            Outcome::View(Ok(v)) | Outcome::MaybeView(Ok(Some(v))) => format!("ok {}", view(v)),
            Outcome::MaybeView(Ok(None)) => "ok none".into(),
            Outcome::Queue(Ok(q)) => format!(
                "ok queue open={} waiting={:?}",
                q.open,
                q.services.iter().map(|s| s.waiting).collect::<Vec<_>>()
            ),
            Outcome::View(Err(e)) | Outcome::MaybeView(Err(e)) | Outcome::Queue(Err(e)) => {
                format!("error {}: {e}", e.code())
            }
        }
    }

    pub fn error(&self) -> Option<&DomainError> {
        match self {
            Outcome::View(Err(e)) | Outcome::MaybeView(Err(e)) | Outcome::Queue(Err(e)) => Some(e),
            _ => None,
        }
    }
}

pub fn counter_caller(branch: &str, counter: &str) -> Caller {
    Caller::Counter {
        id: format!("staff-{branch}-{counter}"),
    }
}

pub fn kiosk_caller(kiosk: &str) -> Caller {
    Caller::Kiosk { id: kiosk.into() }
}

pub fn phone_caller(customer: &str) -> Caller {
    Caller::Mobile {
        customer_ref: customer.into(),
    }
}

fn key_for(key: &str, request: &IssueRequest) -> IdempotencyKey {
    let body = serde_json::to_vec(request).expect("requests serialize");
    IdempotencyKey::for_body(key, &body).expect("valid key")
}

/// Runs `action` at `now` through `k`.
pub fn exec<S: Store>(k: &Kiosk<'_, S>, action: &Action, now: DateTime<Utc>) -> Outcome {
    match action {
        Action::IssueKiosk {
            kiosk,
            branch,
            service,
            key,
            random,
        } => {
            let r = IssueRequest {
                branch: branch.clone(),
                service: service.clone(),
                channel: Channel::Kiosk,
                customer_ref: None,
            };
            let key = key_for(key, &r);
            Outcome::View(k.issue_ticket(&kiosk_caller(kiosk), r, Some(key), now, *random))
        }
        Action::IssuePhone {
            customer,
            branch,
            service,
            key,
            random,
        } => {
            let r = IssueRequest {
                branch: branch.clone(),
                service: service.clone(),
                channel: Channel::Mobile,
                customer_ref: None,
            };
            let key = key.as_deref().map(|key| key_for(key, &r));
            Outcome::View(k.issue_ticket(&phone_caller(customer), r, key, now, *random))
        }
        Action::CallNext {
            branch,
            counter,
            services,
        } => Outcome::MaybeView(k.call_next(
            &counter_caller(branch, counter),
            branch,
            CallRequest {
                counter: counter.clone(),
                services: services.clone(),
            },
            now,
        )),
        Action::Recall { branch, counter } => {
            Outcome::MaybeView(k.recall(&counter_caller(branch, counter), branch, counter, now))
        }
        Action::Transfer {
            branch,
            counter,
            ticket,
            service,
            ..
        } => Outcome::View(k.transfer(
            &counter_caller(branch, counter),
            branch,
            ticket,
            TransferRequest {
                service: service.clone(),
            },
            now,
        )),
        Action::Complete {
            branch,
            counter,
            ticket,
            ..
        } => Outcome::View(k.complete_at(
            &counter_caller(branch, counter),
            branch,
            ticket,
            Some(counter),
            now,
        )),
        Action::NoShow {
            branch,
            counter,
            ticket,
            ..
        } => Outcome::View(k.no_show_at(
            &counter_caller(branch, counter),
            branch,
            ticket,
            Some(counter),
            now,
        )),
        Action::CancelPhone { customer, ticket } => {
            Outcome::View(k.cancel(&phone_caller(customer), ticket, now))
        }
        Action::CancelCounter {
            branch,
            counter,
            ticket,
        } => Outcome::View(k.cancel(&counter_caller(branch, counter), ticket, now)),
        Action::ReadTicket { caller, ticket } => Outcome::View(k.ticket(caller, ticket, now)),
        Action::ReadQueue { branch } => Outcome::Queue(k.queue(branch, now)),
    }
}

/// `action` as a simulated request reading the clock at `now`.
pub fn work<'env>(action: Action, now: DateTime<Utc>) -> Work<'env, Outcome> {
    Box::new(move |k| exec(k, &action, now))
}

struct KioskClient {
    id: String,
    branch: String,
    /// Keys sent so far (most recent last) with the service of their body.
    keys: Vec<(String, String)>,
    in_flight: u32,
}

struct PhoneClient {
    customer: String,
    busy: bool,
    /// The ticket it knows it holds, per branch.
    known: BTreeMap<String, String>,
}

pub struct CounterClient {
    pub branch: String,
    pub counter: String,
    services: Vec<String>,
    pub busy: bool,
    /// The ticket it holds and the model's id of that call.
    pub hold: Option<(String, u64)>,
    /// It cannot trust what it believes it holds: ask with `recall`.
    pub need_recall: bool,
    /// A finishing request to send again (it failed with a store error).
    pub retry: Option<Action>,
}

/// Who sent a request.
#[derive(Debug, Clone, Copy)]
pub enum Client {
    Kiosk(usize),
    Phone(usize),
    Counter(usize),
    Reader,
}

pub struct Workload {
    kiosks: Vec<KioskClient>,
    phones: Vec<PhoneClient>,
    pub counters: Vec<CounterClient>,
    branches: Vec<(String, Vec<String>)>,
    next_key: u64,
    in_flight: BTreeMap<u64, Client>,
    /// Weights: kiosk issue, phone issue, counter, phone read/cancel, reads,
    /// counter cancel/transfer of another ticket.
    mix: [u32; 6],
}

impl Workload {
    pub fn new(catalog: &Catalog, rng: &mut Rng) -> Self {
        let branches: Vec<(String, Vec<String>)> = catalog
            .branches()
            .iter()
            .map(|b| {
                (
                    b.id.clone(),
                    b.services.iter().map(|s| s.id.clone()).collect(),
                )
            })
            .collect();
        let kiosks = catalog
            .branches()
            .iter()
            .flat_map(|b| {
                (1..=2).map(move |n| KioskClient {
                    id: format!("kiosk-{}-{n}", b.id),
                    branch: b.id.clone(),
                    keys: Vec::new(),
                    in_flight: 0,
                })
            })
            .collect();
        let phones = (0..rng.range(3, 6))
            .map(|n| PhoneClient {
                customer: format!("cust-{n}"),
                busy: false,
                known: BTreeMap::new(),
            })
            .collect();
        let counters = catalog
            .branches()
            .iter()
            .flat_map(|b| {
                b.counters.iter().map(move |c| CounterClient {
                    branch: b.id.clone(),
                    counter: c.id.clone(),
                    services: c.services.clone(),
                    busy: false,
                    hold: None,
                    need_recall: false,
                    retry: None,
                })
            })
            .collect();
        // Some runs issue faster than counters serve (queues fill up), some slower.
        let issue = rng.range(14, 34) as u32;
        Workload {
            kiosks,
            phones,
            counters,
            branches,
            next_key: 0,
            in_flight: BTreeMap::new(),
            mix: [issue, issue / 2 + 4, 36, 8, 12, 4],
        }
    }

    fn fresh_key(&mut self) -> String {
        self.next_key += 1;
        format!("key-{}", self.next_key)
    }

    fn service_of(&self, rng: &mut Rng, branch: &str) -> String {
        let services = &self
            .branches
            .iter()
            .find(|(b, _)| b == branch)
            .expect("branch")
            .1;
        rng.pick(services).clone()
    }

    /// The next request some idle client sends, if any client is idle.
    pub fn next(&mut self, rng: &mut Rng, model: &Model) -> Option<(Action, Client)> {
        for _ in 0..8 {
            let made = match rng.weighted(&self.mix) {
                0 => self.kiosk_issue(rng),
                1 => self.phone_issue(rng),
                2 => self.counter_action(rng),
                3 => self.phone_action(rng),
                4 => self.read(rng, model),
                _ => self.counter_cancel_or_transfer(rng, model),
            };
            if made.is_some() {
                return made;
            }
        }
        None
    }

    fn kiosk_issue(&mut self, rng: &mut Rng) -> Option<(Action, Client)> {
        let i = rng.index(self.kiosks.len());
        if self.kiosks[i].in_flight >= 2 {
            return None;
        }
        let branch = self.kiosks[i].branch.clone();
        let roll = rng.below(100);
        let (key, service) = match (roll, self.kiosks[i].keys.is_empty()) {
            (0..=17, false) => {
                // A retry: same key, same body.
                let keys = &self.kiosks[i].keys;
                let recent = &keys[keys.len().saturating_sub(5)..];
                rng.pick(recent).clone()
            }
            (18..=24, false) => {
                // Same key, another body.
                let keys = &self.kiosks[i].keys;
                let (key, _) = rng.pick(&keys[keys.len().saturating_sub(5)..]).clone();
                (key, self.service_of(rng, &branch))
            }
            _ => {
                let key = self.fresh_key();
                let service = self.service_of(rng, &branch);
                self.kiosks[i].keys.push((key.clone(), service.clone()));
                (key, service)
            }
        };
        Some((
            Action::IssueKiosk {
                kiosk: self.kiosks[i].id.clone(),
                branch,
                service,
                key,
                random: rng.bytes16(),
            },
            Client::Kiosk(i),
        ))
    }

    fn phone_issue(&mut self, rng: &mut Rng) -> Option<(Action, Client)> {
        let i = rng.index(self.phones.len());
        if self.phones[i].busy {
            return None;
        }
        let branch = rng.pick(&self.branches).0.clone();
        let service = self.service_of(rng, &branch);
        let key = rng.chance(0.2).then(|| self.fresh_key());
        Some((
            Action::IssuePhone {
                customer: self.phones[i].customer.clone(),
                branch,
                service,
                key,
                random: rng.bytes16(),
            },
            Client::Phone(i),
        ))
    }

    fn phone_action(&mut self, rng: &mut Rng) -> Option<(Action, Client)> {
        let i = rng.index(self.phones.len());
        let p = &self.phones[i];
        if p.busy || p.known.is_empty() {
            return None;
        }
        let tickets: Vec<&String> = p.known.values().collect();
        let ticket = (*rng.pick(&tickets)).clone();
        let action = if rng.chance(0.6) {
            Action::ReadTicket {
                caller: phone_caller(&p.customer),
                ticket,
            }
        } else {
            Action::CancelPhone {
                customer: p.customer.clone(),
                ticket,
            }
        };
        Some((action, Client::Phone(i)))
    }

    fn counter_action(&mut self, rng: &mut Rng) -> Option<(Action, Client)> {
        let i = rng.index(self.counters.len());
        let c = &self.counters[i];
        if c.busy {
            return None;
        }
        Some((self.counter_next(i, rng), Client::Counter(i)))
    }

    /// What counter `i` does next.
    pub fn counter_next(&self, i: usize, rng: &mut Rng) -> Action {
        let c = &self.counters[i];
        let (branch, counter) = (c.branch.clone(), c.counter.clone());
        if let Some(a) = &c.retry {
            return a.clone();
        }
        if c.need_recall {
            return Action::Recall { branch, counter };
        }
        match &c.hold {
            Some((ticket, call)) => {
                let (ticket, call) = (ticket.clone(), *call);
                // `call` tells the model which call a completion ends.
                match rng.weighted(&[62, 14, 14, 6]) {
                    0 => Action::Complete {
                        branch,
                        counter,
                        ticket,
                        call,
                    },
                    1 => Action::NoShow {
                        branch,
                        counter,
                        ticket,
                        call,
                    },
                    2 => {
                        let services = &self
                            .branches
                            .iter()
                            .find(|(b, _)| *b == branch)
                            .expect("branch")
                            .1;
                        Action::Transfer {
                            service: rng.pick(services).clone(),
                            branch,
                            counter,
                            ticket,
                        }
                    }
                    _ => Action::Recall { branch, counter },
                }
            }
            None => {
                let services = if c.services.len() > 1 && rng.chance(0.2) {
                    Some(vec![rng.pick(&c.services).clone()])
                } else {
                    None
                };
                Action::CallNext {
                    branch,
                    counter,
                    services,
                }
            }
        }
    }

    fn counter_cancel_or_transfer(
        &mut self,
        rng: &mut Rng,
        model: &Model,
    ) -> Option<(Action, Client)> {
        let i = rng.index(self.counters.len());
        let c = &self.counters[i];
        if c.busy {
            return None;
        }
        let ticket = model.some_ticket(rng, Some(&c.branch))?;
        let (branch, counter) = (c.branch.clone(), c.counter.clone());
        let action = if rng.chance(0.6) {
            Action::CancelCounter {
                branch,
                counter,
                ticket,
            }
        } else {
            // Staff move some customer's ticket to another line.
            let service = self.service_of(rng, &branch);
            Action::Transfer {
                branch,
                counter,
                ticket,
                service,
            }
        };
        Some((action, Client::Counter(i)))
    }

    fn read(&mut self, rng: &mut Rng, model: &Model) -> Option<(Action, Client)> {
        if rng.chance(0.4) {
            let branch = rng.pick(&self.branches).0.clone();
            return Some((Action::ReadQueue { branch }, Client::Reader));
        }
        let ticket = model.some_ticket(rng, None)?;
        let caller = if rng.chance(0.5) {
            kiosk_caller("kiosk-reader")
        } else {
            counter_caller("reader", "0")
        };
        Some((Action::ReadTicket { caller, ticket }, Client::Reader))
    }

    pub fn on_start(&mut self, id: u64, client: Client) {
        match client {
            Client::Kiosk(i) => self.kiosks[i].in_flight += 1,
            Client::Phone(i) => self.phones[i].busy = true,
            Client::Counter(i) => self.counters[i].busy = true,
            Client::Reader => {}
        }
        self.in_flight.insert(id, client);
    }

    /// Updates the client of request `id` from its answer (`None`: the
    /// client got no answer: crashed or timed out). `call` is the model's
    /// id for a call the answer reported.
    pub fn on_finish(
        &mut self,
        id: u64,
        action: &Action,
        outcome: Option<&Outcome>,
        call: Option<u64>,
    ) {
        let Some(client) = self.in_flight.remove(&id) else {
            return;
        };
        match client {
            Client::Kiosk(i) => self.kiosks[i].in_flight -= 1,
            Client::Reader => {}
            Client::Phone(i) => {
                let p = &mut self.phones[i];
                p.busy = false;
                match (action, outcome) {
                    (Action::IssuePhone { branch, .. }, Some(Outcome::View(Ok(v)))) => {
                        p.known.insert(branch.clone(), v.id.clone());
                    }
                    (
                        Action::IssuePhone { branch, .. },
                        Some(Outcome::View(Err(DomainError::AlreadyHasTicket { ticket, .. }))),
                    ) => {
                        p.known.insert(branch.clone(), ticket.clone());
                    }
                    (Action::ReadTicket { ticket, .. }, Some(Outcome::View(Ok(v))))
                        if !status_of(v).is_active() =>
                    {
                        p.known.retain(|_, t| t != ticket);
                    }
                    (Action::CancelPhone { ticket, .. }, Some(Outcome::View(r)))
                        if r.is_ok()
                            || matches!(r, Err(DomainError::TicketNotFound(_)))
                            || matches!(r, Err(DomainError::Conflict(m)) if !m.contains("called")) =>
                    {
                        p.known.retain(|_, t| t != ticket);
                    }
                    (
                        Action::ReadTicket { ticket, .. },
                        Some(Outcome::View(Err(DomainError::TicketNotFound(_)))),
                    ) => {
                        p.known.retain(|_, t| t != ticket);
                    }
                    _ => {}
                }
            }
            Client::Counter(i) => {
                let c = &mut self.counters[i];
                c.busy = false;
                counter_update(c, action, outcome, call);
            }
        }
    }
}

/// How a counter terminal reacts to an answer.
pub fn counter_update(
    c: &mut CounterClient,
    action: &Action,
    outcome: Option<&Outcome>,
    call: Option<u64>,
) {
    let store_error = |o: Option<&Outcome>| {
        o.is_none_or(|o| matches!(o.error(), Some(DomainError::StoreUnavailable(_))))
    };
    match action {
        Action::CallNext { .. } => match outcome {
            Some(Outcome::MaybeView(Ok(Some(v)))) => {
                c.hold = Some((v.id.clone(), call.expect("the model numbers calls")));
                c.need_recall = false;
            }
            Some(Outcome::MaybeView(Ok(None))) => {}
            // Anything else: it may hold a ticket it does not know of.
            _ => c.need_recall = true,
        },
        Action::Recall { .. } => match outcome {
            Some(Outcome::MaybeView(Ok(Some(v)))) => {
                c.hold = Some((v.id.clone(), call.expect("the model numbers calls")));
                c.need_recall = false;
            }
            Some(Outcome::MaybeView(Ok(None))) => {
                c.hold = None;
                c.need_recall = false;
            }
            _ => c.need_recall = true,
        },
        Action::Complete { ticket, .. }
        | Action::NoShow { ticket, .. }
        | Action::Transfer { ticket, .. } => {
            let own = c.hold.as_ref().is_some_and(|(t, _)| t == ticket)
                || c.retry
                    .as_ref()
                    .is_some_and(|r| r.ticket() == Some(ticket.as_str()));
            if !own {
                // Staff acting on someone else's ticket: nothing to track.
                return;
            }
            if outcome.is_some_and(|o| o.error().is_none()) {
                c.hold = None;
                c.retry = None;
            } else if store_error(outcome) && c.retry.is_none() {
                // Send the same request once more, then ask.
                c.retry = Some(action.clone());
            } else {
                c.retry = None;
                c.need_recall = true;
            }
        }
        _ => {}
    }
}
