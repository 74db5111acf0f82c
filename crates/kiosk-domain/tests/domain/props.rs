//! Property tests: numbering, waiting estimates, call order, and counters
//! interleaving between every read and write of a queue document.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use kiosk_domain::*;
use proptest::prelude::*;

use crate::common::*;

const SERVICES: [&str; 3] = ["deposit", "loan", "fx"];

#[derive(Debug, Clone)]
enum Op {
    /// Issue for service index, after advancing the clock by the given minutes.
    Issue(usize, u16),
    IssueMobile(usize, u8),
    Call(usize),
    Finish(usize, bool),
    Cancel(usize),
    Transfer(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..400u16).prop_map(|(s, m)| Op::Issue(s, m)),
        1 => (0..3usize, 0..4u8).prop_map(|(s, c)| Op::IssueMobile(s, c)),
        2 => (0..4usize).prop_map(Op::Call),
        2 => (0..4usize, any::<bool>()).prop_map(|(c, d)| Op::Finish(c, d)),
        1 => (0..64usize).prop_map(Op::Cancel),
        1 => (0..64usize, 0..3usize).prop_map(|(t, s)| Op::Transfer(t, s)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever happens in between, the numbers issued for each (service,
    /// local day) are exactly 1..=n, each once, and ids are unique.
    #[test]
    fn numbers_are_1_to_n_per_service_and_day(ops in prop::collection::vec(op(), 1..80)) {
        let c = busy_catalog();
        let s = MemoryStore::new();
        let k = Kiosk::new(&c, &s);
        let branch = c.branch("busy").unwrap();
        let staff = counter_caller();
        let mut now = t("2026-03-02T12:00:00Z");
        let mut issued: Vec<TicketView> = Vec::new();
        let mut per_key: BTreeMap<(String, NaiveDate), Vec<String>> = BTreeMap::new();
        for op in ops {
            now += TimeDelta::seconds(1);
            match op {
                Op::Issue(svc, minutes) => {
                    now += TimeDelta::minutes(i64::from(minutes));
                    let v = issue_kiosk(&k, "busy", SERVICES[svc], now).unwrap();
                    per_key.entry((SERVICES[svc].to_string(), branch.business_day(now))).or_default().push(v.number.clone());
                    issued.push(v);
                }
                Op::IssueMobile(svc, cust) => {
                    match issue_mobile(&k, &format!("c{cust}"), "busy", SERVICES[svc], now) {
                        Ok(v) => {
                            per_key.entry((SERVICES[svc].to_string(), branch.business_day(now))).or_default().push(v.number.clone());
                            issued.push(v);
                        }
                        Err(e) => prop_assert_eq!(e.code(), "already_has_ticket"),
                    }
                }
                Op::Call(counter) => {
                    let _ = k.call_next(&staff, "busy", call(&(counter + 1).to_string()), now);
                }
                Op::Finish(counter, done) => {
                    if let Some(v) = k.recall(&staff, "busy", &(counter + 1).to_string(), now).unwrap() {
                        if done { k.complete(&staff, "busy", &v.id, now).unwrap(); }
                        else { k.no_show(&staff, "busy", &v.id, now).unwrap(); }
                    }
                }
                Op::Cancel(i) => {
                    if let Some(v) = issued.get(i) {
                        let _ = k.cancel(&staff, &v.id, now);
                    }
                }
                Op::Transfer(i, svc) => {
                    if let Some(v) = issued.get(i) {
                        let _ = k.transfer(&staff, "busy", &v.id, TransferRequest { service: SERVICES[svc].into() }, now);
                    }
                }
            }
        }
        let codes: BTreeMap<&str, char> = [("deposit", 'A'), ("loan", 'B'), ("fx", 'C')].into_iter().collect();
        for ((service, _day), numbers) in &per_key {
            let expected: Vec<String> = (1..=numbers.len() as u32).map(|n| format_number(codes[service.as_str()], n)).collect();
            prop_assert_eq!(numbers, &expected);
        }
        let ids: BTreeSet<&str> = issued.iter().map(|v| v.id.as_str()).collect();
        prop_assert_eq!(ids.len(), issued.len());
    }

    /// In each service queue, waiting tickets in queue order have
    /// waiting_ahead 0, 1, 2, …, and their estimates start at 0 and never decrease.
    #[test]
    fn positions_and_estimates(
        tickets in prop::collection::vec((0..3usize, 0..3600i64), 1..40),
        cancels in prop::collection::vec(0..40usize, 0..10),
    ) {
        let c = Catalog::dev();
        let s = MemoryStore::new();
        let k = Kiosk::new(&c, &s);
        let base = mon_10();
        let mut views = Vec::new();
        // The clock moves forward: issue times follow the numbers.
        let mut tickets = tickets;
        tickets.sort_by_key(|t| t.1);
        for (svc, offset) in &tickets {
            views.push(issue_kiosk(&k, "demo", SERVICES[*svc], base + TimeDelta::seconds(*offset)).unwrap());
        }
        for i in cancels {
            if let Some(v) = views.get(i) { let _ = k.cancel(&counter_caller(), &v.id, base); }
        }
        for svc in SERVICES {
            let mut waiting: Vec<TicketView> = views
                .iter()
                .filter(|v| v.service == svc)
                .map(|v| k.ticket(&counter_caller(), &v.id, base).unwrap())
                .filter(|v| v.status == TicketStatus::Waiting)
                .collect();
            waiting.sort_by_key(|v| v.waiting_ahead);
            for (i, v) in waiting.iter().enumerate() {
                prop_assert_eq!(v.waiting_ahead as usize, i);
                if i == 0 { prop_assert_eq!(v.estimated_wait_s, 0); }
                else {
                    prop_assert!(v.estimated_wait_s >= waiting[i - 1].estimated_wait_s);
                    // Earlier in line means issued no later.
                    prop_assert!(v.issued_at >= waiting[i - 1].issued_at);
                }
            }
            let q = k.queue("demo", base).unwrap();
            let line = q.services.iter().find(|l| l.service == svc).unwrap();
            prop_assert_eq!(line.waiting as usize, waiting.len());
        }
    }

    /// Counters always call the oldest waiting ticket (issue time, then number).
    #[test]
    fn calls_are_oldest_first(
        tickets in prop::collection::vec((0..3usize, 0..7200i64), 1..40),
        counters in prop::collection::vec(0..3usize, 1..60),
    ) {
        let c = Catalog::dev();
        let s = MemoryStore::new();
        let k = Kiosk::new(&c, &s);
        let staff = counter_caller();
        let base = mon_10();
        let mut issued = Vec::new();
        for (svc, offset) in &tickets {
            issued.push(issue_kiosk(&k, "demo", SERVICES[*svc], base + TimeDelta::seconds(*offset)).unwrap());
        }
        let mut order: Vec<TicketView> = Vec::new();
        for counter in counters.iter().cycle().take(tickets.len() + counters.len()) {
            let counter = (counter + 1).to_string();
            if let Some(current) = k.recall(&staff, "demo", &counter, base).unwrap() {
                k.complete(&staff, "demo", &current.id, base).unwrap();
            }
            if let Some(v) = k.call_next(&staff, "demo", call(&counter), base).unwrap() {
                order.push(v);
            }
        }
        prop_assert_eq!(order.len(), tickets.len());
        let keys: Vec<(DateTime<Utc>, u32)> = order
            .iter()
            .map(|v| (v.issued_at, v.number[2..].parse().unwrap()))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        prop_assert_eq!(keys, sorted);
    }
}

// ------------------------------------------------------------------ interleavings

/// What another component instance does between an operation's read and its
/// compare-and-swap.
#[derive(Debug, Clone, Copy)]
enum Interference {
    Nothing,
    /// Counter (1-based) calls the next ticket and completes it.
    CallAndComplete(u8),
    /// A kiosk issues a ticket for the service.
    Issue(usize),
}

fn interference() -> impl Strategy<Value = Interference> {
    prop_oneof![
        2 => Just(Interference::Nothing),
        2 => (1..=4u8).prop_map(Interference::CallAndComplete),
        1 => (0..3usize).prop_map(Interference::Issue),
    ]
}

/// A store that, right after the operation under test reads a queue
/// document (before it writes it back), lets another "instance" run a whole
/// operation on the same data.
struct InterleavingStore<'c> {
    inner: MemoryStore,
    catalog: &'c Catalog,
    plan: RefCell<VecDeque<Interference>>,
    busy: Cell<bool>,
    clock: Cell<DateTime<Utc>>,
    /// (counter, ticket id) of every call, in order, by anyone.
    calls: RefCell<Vec<(String, String)>>,
    issued: RefCell<Vec<TicketView>>,
}

impl InterleavingStore<'_> {
    fn tick(&self) -> DateTime<Utc> {
        let t = self.clock.get() + TimeDelta::seconds(1);
        self.clock.set(t);
        t
    }

    fn interfere(&self) {
        if self.busy.get() {
            return;
        }
        let Some(step) = self.plan.borrow_mut().pop_front() else {
            return;
        };
        self.busy.set(true);
        let k = Kiosk::new(self.catalog, self).with_max_attempts(1_000);
        match step {
            Interference::Nothing => {}
            Interference::CallAndComplete(counter) => {
                let counter = counter.to_string();
                let now = self.tick();
                match k.call_next(&counter_caller(), "busy", call(&counter), now) {
                    Ok(Some(v)) => {
                        self.calls.borrow_mut().push((counter, v.id.clone()));
                        k.complete(&counter_caller(), "busy", &v.id, now).unwrap();
                    }
                    Ok(None) => {}
                    // The main loop's counter is this one and holds a called ticket.
                    Err(e) => assert_eq!(e.code(), "conflict", "{e}"),
                }
            }
            Interference::Issue(svc) => {
                let v = issue_kiosk(&k, "busy", SERVICES[svc], self.tick()).unwrap();
                self.issued.borrow_mut().push(v);
            }
        }
        self.busy.set(false);
    }
}

impl Store for InterleavingStore<'_> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self.inner.get(key);
        if key.starts_with("queue:") {
            // The caller now holds a snapshot; someone else acts before it writes.
            self.interfere();
        }
        value
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.inner.increment(key, delta)
    }
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        self.inner.compare_and_swap(key, expected, new)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Counters calling while other instances call and issue between every
    /// read and write: each ticket is called exactly once, numbers stay 1..=n.
    #[test]
    fn interleaved_calls_never_share_a_ticket(
        initial in prop::collection::vec(0..3usize, 0..20),
        plan in prop::collection::vec(interference(), 0..60),
        main_counters in prop::collection::vec(1..=4u8, 1..30),
    ) {
        let c = busy_catalog();
        let store = InterleavingStore {
            inner: MemoryStore::new(),
            catalog: &c,
            plan: RefCell::new(VecDeque::new()),
            busy: Cell::new(false),
            clock: Cell::new(mon_10()),
            calls: RefCell::new(Vec::new()),
            issued: RefCell::new(Vec::new()),
        };
        let k = Kiosk::new(&c, &store).with_max_attempts(1_000);
        for svc in &initial {
            let v = issue_kiosk(&k, "busy", SERVICES[*svc], store.tick()).unwrap();
            store.issued.borrow_mut().push(v);
        }
        *store.plan.borrow_mut() = plan.into_iter().collect();
        // The operation under test: counters call (and complete) in turn until
        // everything is served; interference fires after each of their reads.
        let mut idle_rounds = 0;
        let mut turn = main_counters.iter().cycle();
        while idle_rounds < 8 {
            let counter = turn.next().unwrap().to_string();
            let now = store.tick();
            match k.call_next(&counter_caller(), "busy", call(&counter), now).unwrap() {
                Some(v) => {
                    idle_rounds = 0;
                    store.calls.borrow_mut().push((counter.clone(), v.id.clone()));
                    prop_assert_eq!(v.counter.as_deref(), Some(counter.as_str()));
                    k.complete(&counter_caller(), "busy", &v.id, store.tick()).unwrap();
                }
                None => idle_rounds += 1,
            }
            if store.plan.borrow().is_empty() && k.queue("busy", now).unwrap().services.iter().all(|s| s.waiting == 0) {
                break;
            }
        }
        // Stop interfering, then serve what late interference issued.
        store.plan.borrow_mut().clear();
        while let Some(v) = k.call_next(&counter_caller(), "busy", call("1"), store.tick()).unwrap() {
            store.calls.borrow_mut().push(("1".into(), v.id.clone()));
            k.complete(&counter_caller(), "busy", &v.id, store.tick()).unwrap();
        }
        let calls = store.calls.borrow();
        let issued = store.issued.borrow();
        let called: BTreeSet<&str> = calls.iter().map(|(_, id)| id.as_str()).collect();
        prop_assert_eq!(called.len(), calls.len(), "a ticket was called twice");
        let all: BTreeSet<&str> = issued.iter().map(|v| v.id.as_str()).collect();
        prop_assert_eq!(called, all, "every ticket called");
        for svc in SERVICES {
            let mut numbers: Vec<u32> = issued
                .iter()
                .filter(|v| v.service == svc)
                .map(|v| v.number[2..].parse().unwrap())
                .collect();
            numbers.sort();
            prop_assert_eq!(numbers, (1..=issued.iter().filter(|v| v.service == svc).count() as u32).collect::<Vec<_>>());
        }
    }
}
