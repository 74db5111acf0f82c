//! What the clients were told, and the invariants checked against it.
//!
//! The model never reads store keys. It knows every ticket id that can
//! exist (an issue's id is `ticket_id` of the random bytes the harness
//! passed in), what each answer that reached a client said, and which
//! requests were started. After every request ends, the *checker* reads
//! tickets through the public API (`Kiosk::ticket`, as counter staff) over
//! an [`Overlay`] of the store, so checking never changes the simulated
//! system (a read that repairs data writes only into the throw-away layer).
//! All requests are parked then, so the checker sees one consistent state.
//! It reads the tickets the finished request named or was answered every
//! time; every ticket that is or may be active once per (number of such
//! tickets / 12) requests (each read parses the branch's whole queue
//! document in the current design, so this keeps the checking cost per
//! request linear); every ticket ever issued every 128 requests and after
//! the final drain.
//!
//! Invariants (numbers as in the brief):
//! 1. No two active (waiting or called) tickets of a branch and service
//!    show the same display number (checker state).
//! 2. An acknowledged ticket is never lost: it stays readable with its
//!    number, branch and issue time; a final status once read or
//!    acknowledged never changes (an `expired` reading counts once its day
//!    end plus [`EXPIRY_GRACE`] has passed: before that, hosts whose clocks
//!    are behind may rightly still see it waiting); a call acknowledged to
//!    a counter holds until something was sent to end it; a successful
//!    transfer answers the ticket waiting in its new service; domain
//!    answers never say `ticket_not_found` for it; after the final drain
//!    none is still waiting (unless expired) or called without a counter
//!    holding it.
//! 3. A ticket is held by at most one counter: an acknowledged call or
//!    recall to a second counter while the first one's hold is *certain*
//!    (acknowledged, and no transfer, completion or no-show of the ticket
//!    overlapped or followed that call) is a violation. And it is served at
//!    most once: a `done` answer for a call other than the one whose
//!    completion was first answered `done`.
//! 4. Once the model knows a phone's ticket ended, a later issue by that
//!    phone at that branch must not answer `already_has_ticket` naming it.
//! 5. One idempotency key yields at most one ticket (answers and checker),
//!    and a replay answers the first response (id, number, branch, channel,
//!    issued_at; service too unless the ticket was transferred meanwhile;
//!    status and waiting_ahead with [`CHECK_REPLAY_STATE`](crate::CHECK_REPLAY_STATE)).
//! 6. With [`CHECK_EXPIRY`](crate::CHECK_EXPIRY): a ticket still waiting
//!    once its branch's business day has ended (plus a grace for clock skew)
//!    reads `expired`.
//!
//! Statuses are compared through [`status_of`], which goes through the
//! serialized form, so a new status (`expired`) or field (`reason`) needs
//! no change here.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use kiosk_domain::{Branch, Caller, Catalog, DomainError, Kiosk, TicketView};

use crate::rng::Rng;
use crate::sched::{Backend, Finished, Overlay};
use crate::workload::{Action, Outcome};

/// A ticket status as the API serializes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Waiting,
    Called,
    Done,
    NoShow,
    Cancelled,
    /// Coming with the redesign: a waiting ticket whose business day ended.
    Expired,
    Other(String),
}

impl Status {
    pub fn is_active(&self) -> bool {
        matches!(self, Status::Waiting | Status::Called)
    }

    pub fn is_final(&self) -> bool {
        !self.is_active()
    }

    pub fn name(&self) -> &str {
        match self {
            Status::Waiting => "waiting",
            Status::Called => "called",
            Status::Done => "done",
            Status::NoShow => "no_show",
            Status::Cancelled => "cancelled",
            Status::Expired => "expired",
            Status::Other(s) => s,
        }
    }
}

/// The adapter between the domain's views and the model: the status by its
/// serialized name, so that `TicketStatus::Expired` ("expired") slots in
/// without a change here.
pub fn status_of(v: &TicketView) -> Status {
    match serde_json::to_value(v.status) {
        Ok(serde_json::Value::String(s)) => match s.as_str() {
            "waiting" => Status::Waiting,
            "called" => Status::Called,
            "done" => Status::Done,
            "no_show" => Status::NoShow,
            "cancelled" => Status::Cancelled,
            "expired" => Status::Expired,
            _ => Status::Other(s),
        },
        other => Status::Other(format!("{other:?}")),
    }
}

/// The optional `reason` a view may carry after the redesign (for messages).
pub fn reason_of(v: &TicketView) -> Option<String> {
    serde_json::to_value(v)
        .ok()?
        .get("reason")?
        .as_str()
        .map(str::to_owned)
}

/// When a ticket of `branch` issued at `issued_at` stops waiting: the end
/// of its business day. The adapter for invariant 6; with the redesign
/// this becomes `branch.waiting_ends_at(branch.business_day(issued_at))`
/// (`None` where tickets carry over). Until then: the local midnight after
/// its business day (which is what the redesign gives for this harness's
/// catalog on weekdays).
pub fn waiting_ends_at(branch: &Branch, issued_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    branch.waiting_ends_at(branch.business_day(issued_at))
}

/// Whether a ticket reading `status` in view `v` at `now` is settled in a
/// final status. `expired` is settled only once the day end plus
/// [`EXPIRY_GRACE`] has passed: before that, hosts whose clocks are behind
/// may still (rightly, by their clock) treat the ticket as waiting.
fn settled_final(catalog: &Catalog, status: &Status, v: &TicketView, now: DateTime<Utc>) -> bool {
    match status {
        Status::Expired => catalog
            .branch(&v.branch)
            .and_then(|b| waiting_ends_at(b, v.issued_at))
            .is_none_or(|end| now >= end + EXPIRY_GRACE),
        s => s.is_final(),
    }
}

/// Which invariant a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Inv {
    NoPanic,
    UniqueNumber,
    NoLostTicket,
    OneHolder,
    ClaimReleased,
    Idempotency,
    DayExpiry,
    CostBound,
}

impl Inv {
    pub fn name(self) -> &'static str {
        match self {
            Inv::NoPanic => "0 domain never panics",
            Inv::UniqueNumber => "1 unique active display numbers",
            Inv::NoLostTicket => "2 acknowledged tickets are never lost",
            Inv::OneHolder => "3 one counter holds / serves a ticket once",
            Inv::ClaimReleased => "4 a phone's claim is released when its ticket ends",
            Inv::Idempotency => "5 one ticket per idempotency key, replay = first response",
            Inv::DayExpiry => "6 waiting tickets expire when the business day ends",
            Inv::CostBound => "cost bound per request",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Violation {
    pub inv: Inv,
    pub step: u64,
    pub detail: String,
}

/// What the checker last read of a ticket.
#[derive(Debug, Clone)]
struct Seen {
    /// `None`: not found.
    view: Option<(Status, TicketView)>,
    /// In a final status that no host may leave any more (see [`settled_final`]).
    settled: bool,
}

#[derive(Debug, Clone)]
struct Hold {
    counter: String,
    call: u64,
    /// No request that could end this hold was sent since it was acknowledged.
    certain: bool,
}

/// Everything known about one ticket id.
#[derive(Debug)]
struct TicketModel {
    branch: String,
    phone: Option<String>,
    key: Option<KeyId>,
    /// The issue request that would create it.
    issue_req: u64,
    issue_ended: bool,
    /// The first view of it a client received (issue or replay).
    acked: Option<TicketView>,
    /// Named to a phone by `already_has_ticket`.
    revealed: bool,
    ever_found: bool,
    /// A final status answered to a client, and the step it was answered at.
    final_acked: Option<(Status, u64)>,
    /// Step at which the model first knew it ended.
    ended_at: Option<u64>,
    seen: Option<Seen>,
    hold: Option<Hold>,
    /// The call whose completion was first answered `done`.
    served: Option<u64>,
    transferred: bool,
    /// Lifetimes (start step, end step once it ended) of requests that may
    /// end a hold on it (transfer, complete, no-show), by request id.
    releases: BTreeMap<u64, (u64, Option<u64>)>,
}

impl TicketModel {
    fn is_acked(&self) -> bool {
        self.acked.is_some() || (self.revealed && self.ever_found)
    }

    fn seen_status(&self) -> Option<&Status> {
        self.seen.as_ref()?.view.as_ref().map(|(s, _)| s)
    }

    /// Found, and not (yet) settled in a final status: read it often.
    fn seen_live(&self) -> bool {
        self.seen
            .as_ref()
            .is_some_and(|s| s.view.is_some() && !s.settled)
    }
}

/// (caller scope, key).
type KeyId = (String, String);

#[derive(Debug, Default)]
struct KeyModel {
    /// The first successful answer: the view and its request's body service.
    first: Option<(TicketView, String)>,
    /// Every ticket id an attempt with this key would create.
    attempts: Vec<String>,
}

struct ReqInfo {
    action: Action,
    start: u64,
}

/// Which tickets a state check reads.
pub enum Scope {
    Touched(Vec<String>),
    Active,
    All,
}

/// Knobs from the harness.
#[derive(Debug, Clone, Copy)]
pub struct Checks {
    pub replay_state: bool,
    pub expiry: bool,
}

/// Grace after a business day ends before its waiting tickets must read
/// expired: clock skew between hosts plus the request timeout.
pub const EXPIRY_GRACE: TimeDelta = TimeDelta::seconds(10);

pub struct Model {
    tickets: BTreeMap<String, TicketModel>,
    keys: BTreeMap<KeyId, KeyModel>,
    requests: BTreeMap<u64, ReqInfo>,
    next_call: u64,
    pub violations: Vec<Violation>,
    reported: BTreeSet<(Inv, String)>,
    checks: Checks,
    snapshots: u64,
}

fn scope_of(action: &Action) -> Option<KeyId> {
    match action {
        Action::IssueKiosk { kiosk, key, .. } => Some((format!("kiosk/{kiosk}"), key.clone())),
        Action::IssuePhone {
            customer,
            key: Some(key),
            ..
        } => Some((format!("mobile/{customer}"), key.clone())),
        _ => None,
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

impl Model {
    pub fn new(checks: Checks) -> Self {
        Model {
            tickets: BTreeMap::new(),
            keys: BTreeMap::new(),
            requests: BTreeMap::new(),
            next_call: 1,
            violations: Vec::new(),
            reported: BTreeSet::new(),
            checks,
            snapshots: 0,
        }
    }

    /// Records a violation (once per invariant and subject).
    pub fn violate(&mut self, inv: Inv, step: u64, subject: &str, detail: String) {
        if self.reported.insert((inv, subject.to_owned())) {
            self.violations.push(Violation { inv, step, detail });
        }
    }

    /// A ticket some client has heard of (acknowledged), optionally at `branch`.
    pub fn some_ticket(&self, rng: &mut Rng, branch: Option<&str>) -> Option<String> {
        let ids: Vec<&String> = self
            .tickets
            .iter()
            .filter(|(_, t)| t.acked.is_some() && branch.is_none_or(|b| t.branch == b))
            .filter(|(_, t)| t.seen_status().is_none_or(Status::is_active) || rng.chance(0.1))
            .map(|(id, _)| id)
            .collect();
        (!ids.is_empty()).then(|| (*rng.pick(&ids)).clone())
    }

    /// A request starts at `step`.
    pub fn on_start(&mut self, id: u64, action: &Action, step: u64) {
        if let Some(tid) = action.new_ticket_id() {
            let (branch, phone) = match action {
                Action::IssueKiosk { branch, .. } => (branch.clone(), None),
                Action::IssuePhone {
                    branch, customer, ..
                } => (branch.clone(), Some(customer.clone())),
                _ => unreachable!(),
            };
            let key = scope_of(action);
            if let Some(k) = &key {
                self.keys
                    .entry(k.clone())
                    .or_default()
                    .attempts
                    .push(tid.clone());
            }
            self.tickets.insert(
                tid,
                TicketModel {
                    branch,
                    phone,
                    key,
                    issue_req: id,
                    issue_ended: false,
                    acked: None,
                    revealed: false,
                    ever_found: false,
                    final_acked: None,
                    ended_at: None,
                    seen: None,
                    hold: None,
                    served: None,
                    transferred: false,
                    releases: BTreeMap::new(),
                },
            );
        }
        // A request that may end a counter's hold makes that hold uncertain.
        if let Action::Complete { ticket, .. }
        | Action::NoShow { ticket, .. }
        | Action::Transfer { ticket, .. } = action
            && let Some(t) = self.tickets.get_mut(ticket)
        {
            if let Some(h) = &mut t.hold {
                h.certain = false;
            }
            if matches!(action, Action::Transfer { .. }) {
                t.transferred = true;
            }
            t.releases.insert(id, (step, None));
        }
        self.requests.insert(
            id,
            ReqInfo {
                action: action.clone(),
                start: step,
            },
        );
    }

    /// A request ended at `step`; checks its answer. Returns the model's id
    /// of a call the answer reports (call_next / recall).
    pub fn on_finish(&mut self, id: u64, finished: &Finished<Outcome>, step: u64) -> Option<u64> {
        let info = self.requests.remove(&id).expect("started");
        let action = info.action;
        if let Some(t) = action.ticket().and_then(|t| self.tickets.get_mut(t))
            && let Some(r) = t.releases.get_mut(&id)
        {
            r.1 = Some(step);
        }
        if let Some(tid) = action.new_ticket_id()
            && let Some(t) = self.tickets.get_mut(&tid)
        {
            t.issue_ended = true;
        }
        if let Some(p) = &finished.panic {
            self.violate(
                Inv::NoPanic,
                step,
                &format!("panic {}", action.kind().name()),
                format!("{} panicked: {p}", action.kind().name()),
            );
            return None;
        }
        if finished.crashed {
            return None;
        }
        let outcome = finished.outcome.as_ref().expect("not panicked");
        match (&action, outcome) {
            (Action::IssueKiosk { .. } | Action::IssuePhone { .. }, Outcome::View(r)) => {
                self.issued(&action, info.start, r, step);
                None
            }
            (
                Action::CallNext { counter, .. } | Action::Recall { counter, .. },
                Outcome::MaybeView(Ok(Some(v))),
            ) => Some(self.called(&action, counter, v, info.start, step)),
            (Action::Recall { counter, branch }, Outcome::MaybeView(Ok(None))) => {
                let lost: Vec<String> = self
                    .tickets
                    .iter()
                    .filter(|(_, t)| {
                        t.branch == *branch
                            && t.hold
                                .as_ref()
                                .is_some_and(|h| h.certain && h.counter == *counter)
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                for tid in lost {
                    self.violate(
                        Inv::NoLostTicket,
                        step,
                        &tid,
                        format!(
                            "counter {branch}/{counter} was answered ticket {} by a call and sent nothing to end it, but recall says it holds nothing",
                            short(&tid)
                        ),
                    );
                }
                None
            }
            (
                Action::Complete { ticket, call, .. } | Action::NoShow { ticket, call, .. },
                Outcome::View(Ok(v)),
            ) => {
                let expected = if matches!(action, Action::Complete { .. }) {
                    Status::Done
                } else {
                    Status::NoShow
                };
                self.finished(ticket, &expected, v, step);
                if expected == Status::Done
                    && let Some(t) = self.tickets.get_mut(ticket)
                {
                    match t.served {
                        None => t.served = Some(*call),
                        Some(first) if first != *call => {
                            let detail = format!(
                                "ticket {} ({}) answered done for call #{call} after call #{first} was already completed: served twice",
                                short(ticket),
                                v.number
                            );
                            self.violate(Inv::OneHolder, step, ticket, detail);
                        }
                        Some(_) => {}
                    }
                }
                if let Some(t) = self.tickets.get_mut(ticket) {
                    t.hold = None;
                }
                None
            }
            (
                Action::Transfer {
                    ticket, service, ..
                },
                Outcome::View(Ok(v)),
            ) => {
                if status_of(v) != Status::Waiting || v.service != *service {
                    self.violate(
                        Inv::NoLostTicket,
                        step,
                        ticket,
                        format!(
                            "transfer of {} to {service} answered {} in {}",
                            short(ticket),
                            status_of(v).name(),
                            v.service
                        ),
                    );
                }
                if let Some(t) = self.tickets.get_mut(ticket) {
                    t.hold = None;
                }
                None
            }
            (
                Action::CancelPhone { ticket, .. } | Action::CancelCounter { ticket, .. },
                Outcome::View(Ok(v)),
            ) => {
                self.finished(ticket, &Status::Cancelled, v, step);
                None
            }
            (Action::ReadTicket { ticket, .. }, Outcome::View(Ok(v))) => {
                let status = status_of(v);
                if let Some(t) = self.tickets.get(ticket)
                    && let Some((f, at)) = &t.final_acked
                    && *at < info.start
                    && *f != status
                {
                    let detail = format!(
                        "ticket {} ({}) was answered {} but a later read says {}",
                        short(ticket),
                        v.number,
                        f.name(),
                        status.name()
                    );
                    self.violate(Inv::NoLostTicket, step, ticket, detail);
                }
                None
            }
            (_, Outcome::View(Err(DomainError::TicketNotFound(_)))) => {
                let ticket = action.ticket().expect("names a ticket").to_owned();
                if self
                    .tickets
                    .get(&ticket)
                    .is_some_and(|t| t.acked.is_some() && t.seen_status().is_some())
                {
                    let detail = format!(
                        "{} of acknowledged ticket {} answered ticket_not_found",
                        action.kind().name(),
                        short(&ticket)
                    );
                    self.violate(Inv::NoLostTicket, step, &ticket, detail);
                }
                None
            }
            _ => None,
        }
    }

    fn issued(
        &mut self,
        action: &Action,
        start: u64,
        result: &Result<TicketView, DomainError>,
        step: u64,
    ) {
        let own = action.new_ticket_id().expect("an issue");
        let key = scope_of(action);
        let body_service = match action {
            Action::IssueKiosk { service, .. } | Action::IssuePhone { service, .. } => {
                service.clone()
            }
            _ => unreachable!(),
        };
        match result {
            Ok(v) => {
                match self.tickets.get_mut(&v.id) {
                    Some(t) => {
                        if t.acked.is_none() {
                            t.acked = Some(v.clone());
                        }
                    }
                    None => {
                        let detail =
                            format!("an issue answered ticket {} that no request created", v.id);
                        self.violate(Inv::Idempotency, step, &v.id, detail);
                        return;
                    }
                }
                if v.id == own && status_of(v) != Status::Waiting {
                    let detail = format!(
                        "a new ticket {} was answered {}",
                        short(&v.id),
                        status_of(v).name()
                    );
                    self.violate(Inv::NoLostTicket, step, &v.id, detail);
                }
                let Some(key) = key else { return };
                let transferred = self.tickets.get(&v.id).is_some_and(|t| t.transferred);
                let km = self.keys.entry(key.clone()).or_default();
                match &km.first {
                    None => km.first = Some((v.clone(), body_service)),
                    Some((first, first_service)) => {
                        let mut diffs = Vec::new();
                        if first.id != v.id {
                            diffs.push(format!("id {} vs {}", short(&first.id), short(&v.id)));
                        }
                        if first.number != v.number {
                            diffs.push(format!("number {} vs {}", first.number, v.number));
                        }
                        if first.branch != v.branch {
                            diffs.push("branch".into());
                        }
                        if first.channel != v.channel {
                            diffs.push("channel".into());
                        }
                        if first.issued_at != v.issued_at {
                            diffs.push("issued_at".into());
                        }
                        if *first_service != body_service {
                            diffs.push(format!(
                                "a body for {body_service} succeeded on a key first used for {first_service}"
                            ));
                        }
                        let state_checked = self.checks.replay_state;
                        if first.service != v.service && (state_checked || !transferred) {
                            diffs.push(format!("service {} vs {}", first.service, v.service));
                        }
                        if state_checked {
                            if first.status != v.status {
                                diffs.push(format!(
                                    "status {} vs {}",
                                    status_of(first).name(),
                                    status_of(v).name()
                                ));
                            }
                            if first.waiting_ahead != v.waiting_ahead {
                                diffs.push(format!(
                                    "waiting_ahead {} vs {}",
                                    first.waiting_ahead, v.waiting_ahead
                                ));
                            }
                        }
                        if !diffs.is_empty() {
                            let detail = format!(
                                "key {:?} of {}: replay differs from the first response: {}",
                                key.1,
                                key.0,
                                diffs.join(", ")
                            );
                            self.violate(Inv::Idempotency, step, &format!("{key:?}"), detail);
                        }
                    }
                }
            }
            Err(DomainError::AlreadyHasTicket { ticket, branch, .. }) => {
                let Some(t) = self.tickets.get_mut(ticket) else {
                    let detail =
                        format!("already_has_ticket names {ticket}, which no request created");
                    self.violate(Inv::ClaimReleased, step, ticket, detail);
                    return;
                };
                t.revealed = true;
                if let Some(ended) = t.ended_at
                    && ended < start
                {
                    let detail = format!(
                        "phone {} was refused at {branch} with already_has_ticket naming {}, which had ended (step {ended}) before the request started (step {start})",
                        t.phone.as_deref().unwrap_or("?"),
                        short(ticket)
                    );
                    self.violate(Inv::ClaimReleased, step, ticket, detail);
                }
            }
            Err(_) => {}
        }
    }

    fn called(
        &mut self,
        action: &Action,
        counter: &str,
        v: &TicketView,
        start: u64,
        step: u64,
    ) -> u64 {
        let status = status_of(v);
        let kind = action.kind().name();
        if status != Status::Called || v.counter.as_deref() != Some(counter) {
            let detail = format!(
                "{kind} at counter {counter} answered {} {} at {:?}",
                short(&v.id),
                status.name(),
                v.counter
            );
            self.violate(Inv::OneHolder, step, &v.id, detail);
        }
        let call = self.next_call;
        self.next_call += 1;
        let Some(t) = self.tickets.get_mut(&v.id) else {
            return call;
        };
        // A transfer, completion or no-show of this ticket that overlapped
        // this request may have taken effect after it: the hold it reports
        // is then not certain.
        let certain = !t
            .releases
            .values()
            .any(|&(s, e)| s < step && e.is_none_or(|e| e > start));
        t.releases.retain(|_, (_, e)| e.is_none_or(|e| e > start));
        if let Some((f, _)) = &t.final_acked {
            let detail = format!(
                "{kind} at counter {counter} answered {} ({}), which was already answered {}",
                short(&v.id),
                v.number,
                f.name()
            );
            self.violate(Inv::NoLostTicket, step, &v.id, detail);
            return call;
        }
        match &t.hold {
            Some(h) if h.counter == counter => {
                let same = h.call;
                t.hold = Some(Hold {
                    counter: counter.to_owned(),
                    call: if matches!(action, Action::Recall { .. }) {
                        same
                    } else {
                        call
                    },
                    certain,
                });
                t.hold.as_ref().map_or(call, |h| h.call)
            }
            Some(h) if h.certain && certain => {
                let detail = format!(
                    "{kind} gave ticket {} ({}) to counter {counter} while counter {} holds it (call #{})",
                    short(&v.id),
                    v.number,
                    h.counter,
                    h.call
                );
                let subject = v.id.clone();
                self.violate(Inv::OneHolder, step, &subject, detail);
                call
            }
            _ => {
                t.hold = Some(Hold {
                    counter: counter.to_owned(),
                    call,
                    certain,
                });
                call
            }
        }
    }

    /// A finishing request answered `v`, expected to show `expected`.
    fn finished(&mut self, ticket: &str, expected: &Status, v: &TicketView, step: u64) {
        let status = status_of(v);
        if status != *expected {
            let detail = format!(
                "finishing {} as {} answered {}",
                short(ticket),
                expected.name(),
                status.name()
            );
            self.violate(Inv::NoLostTicket, step, ticket, detail);
        }
        let Some(t) = self.tickets.get_mut(ticket) else {
            return;
        };
        if t.ended_at.is_none() {
            t.ended_at = Some(step);
        }
        let conflict = match &t.final_acked {
            None => {
                t.final_acked = Some((status.clone(), step));
                None
            }
            Some((f, _)) if *f != status => Some(format!(
                "ticket {} ({}) was answered {} and later {}",
                short(ticket),
                v.number,
                f.name(),
                status.name()
            )),
            Some(_) => None,
        };
        if let Some(detail) = conflict {
            self.violate(Inv::NoLostTicket, step, ticket, detail);
        }
    }

    /// Reads tickets through the public API and checks invariants 1, 2, 3,
    /// 5 and 6 on that state. [`Scope::Touched`] reads only the given
    /// tickets (those a request just named or answered); [`Scope::Active`]
    /// every ticket that is or may be active (and checks unique numbers);
    /// [`Scope::All`] every ticket, including finished and never-found ones.
    pub fn check_state(
        &mut self,
        catalog: &Catalog,
        backend: &Backend,
        now: DateTime<Utc>,
        step: u64,
        scope: Scope,
    ) {
        self.snapshots += 1;
        let whole = !matches!(scope, Scope::Touched(_));
        let touched: BTreeSet<String> = match &scope {
            Scope::Touched(ids) => ids.iter().cloned().collect(),
            _ => BTreeSet::new(),
        };
        let full = matches!(scope, Scope::All);
        let overlay = Overlay::new(backend.memory());
        let kiosk = Kiosk::new(catalog, &overlay);
        let checker = Caller::Counter {
            id: "sim-checker".into(),
        };
        let mut found_active: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
        let mut described: BTreeMap<String, String> = BTreeMap::new();
        let mut found_per_key: BTreeMap<KeyId, Vec<String>> = BTreeMap::new();
        let mut pending: Vec<(Inv, String, String)> = Vec::new();
        for (id, t) in self.tickets.iter_mut() {
            let hot = match t.seen_status() {
                None => !t.issue_ended || t.seen.is_none(),
                Some(_) => t.seen_live(),
            } || t.hold.is_some();
            let read = match &scope {
                Scope::Touched(_) => touched.contains(id),
                Scope::Active => hot,
                Scope::All => true,
            };
            if !read {
                if let (Some(k), Some(_)) = (&t.key, t.seen_status()) {
                    found_per_key.entry(k.clone()).or_default().push(id.clone());
                }
                continue;
            }
            let view = match kiosk.ticket(&checker, id, now) {
                Ok(v) => Some(v),
                Err(DomainError::TicketNotFound(_)) => None,
                Err(e) => {
                    pending.push((
                        Inv::NoLostTicket,
                        id.clone(),
                        format!("ticket {} cannot be read: {} ({e})", short(id), e.code()),
                    ));
                    continue;
                }
            };
            let before = t
                .seen
                .as_ref()
                .filter(|s| s.settled)
                .and_then(|s| s.view.as_ref().map(|(st, _)| st.clone()));
            let now_status = view.as_ref().map(status_of);
            let settled = match (&view, &now_status) {
                (Some(v), Some(s)) => settled_final(catalog, s, v, now),
                _ => false,
            };
            match (&view, &now_status) {
                (Some(v), Some(s)) => {
                    t.ever_found = true;
                    if s.is_active() {
                        found_active
                            .entry((v.branch.clone(), v.service.clone(), v.number.clone()))
                            .or_default()
                            .push(id.clone());
                        described.insert(
                            id.clone(),
                            format!(
                                "{} ({}, issued {})",
                                short(id),
                                s.name(),
                                v.issued_at.format("%m-%d %H:%M:%S%.3f UTC")
                            ),
                        );
                    }
                    if let Some(k) = &t.key {
                        found_per_key.entry(k.clone()).or_default().push(id.clone());
                    }
                    if let Some(a) = &t.acked
                        && (a.number != v.number
                            || a.branch != v.branch
                            || a.issued_at != v.issued_at)
                    {
                        pending.push((
                            Inv::NoLostTicket,
                            id.clone(),
                            format!(
                                "ticket {} was answered as {} {} issued {} but reads {} {} issued {}",
                                short(id),
                                a.branch,
                                a.number,
                                a.issued_at,
                                v.branch,
                                v.number,
                                v.issued_at
                            ),
                        ));
                    }
                    if settled && t.ended_at.is_none() {
                        t.ended_at = Some(step);
                    }
                }
                _ => {
                    if t.is_acked() {
                        pending.push((
                            Inv::NoLostTicket,
                            id.clone(),
                            format!(
                                "acknowledged ticket {} (issued by r{}) is not found",
                                short(id),
                                t.issue_req
                            ),
                        ));
                    }
                }
            }
            let number = view.as_ref().map_or("?".to_owned(), |v| v.number.clone());
            let reads = now_status
                .as_ref()
                .map_or("not found", Status::name)
                .to_owned()
                + &view
                    .as_ref()
                    .and_then(reason_of)
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
            if let Some(b) = &before
                && now_status.as_ref() != Some(b)
            {
                pending.push((
                    Inv::NoLostTicket,
                    id.clone(),
                    format!(
                        "ticket {} ({number}) read {} before and now reads {reads}",
                        short(id),
                        b.name()
                    ),
                ));
            }
            if let Some((f, _)) = &t.final_acked
                && now_status.as_ref() != Some(f)
            {
                pending.push((
                    Inv::NoLostTicket,
                    id.clone(),
                    format!(
                        "ticket {} ({number}) was answered {} to a client but now reads {reads}",
                        short(id),
                        f.name()
                    ),
                ));
            }
            if let Some(h) = &t.hold
                && h.certain
            {
                let at = view.as_ref().and_then(|v| v.counter.clone());
                if now_status != Some(Status::Called) || at.as_deref() != Some(h.counter.as_str()) {
                    pending.push((
                        Inv::NoLostTicket,
                        id.clone(),
                        format!(
                            "counter {} was answered a call of ticket {} ({number}) and sent nothing to end it, but it reads {reads} at {at:?}",
                            h.counter,
                            short(id)
                        ),
                    ));
                }
            }
            if self.checks.expiry
                && now_status == Some(Status::Waiting)
                && let Some(v) = &view
                && let Some(b) = catalog.branch(&v.branch)
                && let Some(end) = waiting_ends_at(b, v.issued_at)
                && now >= end + EXPIRY_GRACE
            {
                pending.push((
                    Inv::DayExpiry,
                    id.clone(),
                    format!(
                        "ticket {} ({number}) of business day {} still reads waiting at {}, after its day ended at {}",
                        short(id),
                        b.business_day(v.issued_at),
                        now.with_timezone(&b.time_zone),
                        end.with_timezone(&b.time_zone)
                    ),
                ));
            }
            t.seen = Some(Seen {
                view: view.map(|v| (status_of(&v), v)),
                settled,
            });
        }
        if !whole {
            found_active.clear();
            found_per_key.clear();
        }
        let _ = full;
        for ((branch, service, number), ids) in found_active {
            if ids.len() > 1 {
                let subject = format!("{branch}/{service}/{number}");
                let detail = format!(
                    "{} active tickets of {branch}/{service} show {number}: {}",
                    ids.len(),
                    ids.iter()
                        .map(|i| described
                            .get(i)
                            .cloned()
                            .unwrap_or_else(|| short(i).to_owned()))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                pending.push((Inv::UniqueNumber, subject, detail));
            }
        }
        for (key, ids) in found_per_key {
            if ids.len() > 1 {
                let detail = format!(
                    "key {:?} of {} yielded {} tickets: {}",
                    key.1,
                    key.0,
                    ids.len(),
                    ids.iter().map(|i| short(i)).collect::<Vec<_>>().join(", ")
                );
                pending.push((Inv::Idempotency, format!("{key:?}"), detail));
            }
        }
        for (inv, subject, detail) in pending {
            self.violate(inv, step, &subject, detail);
        }
    }

    /// Tickets that are or may be active (what a [`Scope::Active`] check reads).
    pub fn hot_count(&self) -> usize {
        self.tickets
            .values()
            .filter(|t| {
                t.hold.is_some()
                    || match t.seen_status() {
                        None => !t.issue_ended || t.seen.is_none(),
                        Some(_) => t.seen_live(),
                    }
            })
            .count()
    }

    /// After the final drain: acknowledged tickets still waiting (and not
    /// expired) or called with nobody holding them are stranded.
    pub fn check_stranded(&mut self, step: u64, holders: &BTreeSet<String>) {
        let mut stranded = Vec::new();
        for (id, t) in &self.tickets {
            if !t.is_acked() {
                continue;
            }
            let Some(Seen {
                view: Some((status, v)),
                ..
            }) = &t.seen
            else {
                continue;
            };
            match status {
                Status::Waiting => stranded.push((
                    id.clone(),
                    format!(
                        "acknowledged ticket {} ({} at {}/{}, issued {} by r{}) still waits after the drain: no counter can call it",
                        short(id),
                        v.number,
                        v.branch,
                        v.service,
                        v.issued_at,
                        t.issue_req
                    ),
                )),
                Status::Called if !holders.contains(id) => stranded.push((
                    id.clone(),
                    format!(
                        "acknowledged ticket {} ({}) reads called at {:?} after the drain, but no counter holds it",
                        short(id),
                        v.number,
                        v.counter
                    ),
                )),
                _ => {}
            }
        }
        for (id, detail) in stranded {
            self.violate(Inv::NoLostTicket, step, &format!("stranded {id}"), detail);
        }
    }

    /// Tickets the model holds (for coverage).
    pub fn ticket_count(&self) -> usize {
        self.tickets.len()
    }

    /// How many tickets were acknowledged to a client.
    pub fn acked_count(&self) -> usize {
        self.tickets.values().filter(|t| t.acked.is_some()).count()
    }
}
