//! Property tests: numbering, waiting estimates, call order, counters
//! interleaving between every read and write of a queue document, and the
//! parsers of outside input (catalog, request bodies, ticket ids, mobile
//! tokens, Idempotency-Keys, API key lists, core paths): no panic, every
//! refusal a typed error.

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
                    if let Some(resume) = branch.day_change_until(now) {
                        // Issuing pauses for a minute around midnight.
                        let e = issue_kiosk(&k, "busy", SERVICES[svc], now).unwrap_err();
                        prop_assert_eq!(e.code(), "branch_closed");
                        now = resume;
                    }
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
                        Err(e) if branch.day_change_until(now).is_some() => {
                            prop_assert_eq!(e.code(), "branch_closed")
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

    /// Counters always call the oldest waiting ticket (issue time, then
    /// number), tickets being issued as time passes.
    #[test]
    fn calls_are_oldest_first(
        mut tickets in prop::collection::vec((0..3usize, 0..7200i64), 1..40),
        counters in prop::collection::vec(0..3usize, 1..60),
    ) {
        tickets.sort_by_key(|&(_, offset)| offset);
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

// ------------------------------------------------------------------ parsers of outside input

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "deposit", "loan", "demo", "kiosk", "mobile", "1", "", "minute"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Field names the parsers know, and others.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "branch", "service", "channel", "customer_ref", "counter", "services", "branches",
            "id", "name", "time_zone", "hours", "always_open", "counters", "code", "minutes",
            "max_waiting", "limits", "limit", "per", "kiosk_tickets", "phone_tickets", "core_calls",
        ])
        .prop_map(str::to_string),
        1 => "[a-z_]{0,8}",
    ]
}

/// The development catalog's text with one change: cut short, a byte
/// replaced, or a value swapped for any JSON.
fn mangled_catalog() -> impl Strategy<Value = String> {
    let dev = Catalog::dev_json();
    prop_oneof![
        (0..dev.len())
            .prop_map(move |n| String::from_utf8_lossy(&dev.as_bytes()[..n]).into_owned()),
        (0..dev.len(), any::<u8>()).prop_map(move |(i, b)| {
            let mut bytes = dev.as_bytes().to_vec();
            bytes[i] = b;
            String::from_utf8_lossy(&bytes).into_owned()
        }),
        (0usize..64, json_value()).prop_map(move |(n, v)| {
            // Replace the n-th number, string or literal after a colon.
            let mut doc: serde_json::Value = serde_json::from_str(dev).unwrap();
            let mut seen = 0;
            replace_nth(&mut doc, n, &v, &mut seen);
            doc.to_string()
        }),
    ]
}

fn replace_nth(
    doc: &mut serde_json::Value,
    n: usize,
    with: &serde_json::Value,
    seen: &mut usize,
) -> bool {
    match doc {
        serde_json::Value::Object(m) => m.values_mut().any(|v| replace_nth(v, n, with, seen)),
        serde_json::Value::Array(a) => a.iter_mut().any(|v| replace_nth(v, n, with, seen)),
        leaf => {
            if *seen == n {
                *leaf = with.clone();
                return true;
            }
            *seen += 1;
            false
        }
    }
}

/// Bytes of a request body: any bytes, or JSON objects built from the
/// fields the bodies know.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::btree_map(field_name(), json_value(), 0..5).prop_map(|m| {
            serde_json::Value::Object(m.into_iter().collect())
                .to_string()
                .into_bytes()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any text: a catalog, or an error that says where (never a panic).
    #[test]
    fn catalog_text_never_panics(text in ".{0,200}") {
        if let Err(e) = Catalog::from_json(&text) {
            prop_assert!(!e.message.is_empty());
        }
    }

    /// The development catalog with one change: valid, or an error naming
    /// a path inside it or the JSON position.
    #[test]
    fn mangled_catalogs_are_refused_with_a_reason(text in mangled_catalog()) {
        match Catalog::from_json(&text) {
            Ok(c) => {
                prop_assert!(!c.branches().is_empty());
                for b in c.branches() {
                    prop_assert!(b.kiosk_tickets.limit >= 1 && b.phone_tickets.limit >= 1);
                    prop_assert!(b.services.iter().all(|s| s.max_waiting >= 1));
                    prop_assert!(b.services.iter().all(|s| b.counters_serving(&s.id) >= 1));
                }
                prop_assert!(c.core_calls().limit >= 1);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// Request bodies: parsed, or `invalid_request` (400).
    #[test]
    fn request_bodies_parse_or_are_invalid_requests(bytes in body()) {
        for result in [
            parse_issue_request(&bytes).map(|_| ()),
            parse_call_request(&bytes).map(|_| ()),
            parse_transfer_request(&bytes).map(|_| ()),
        ] {
            if let Err(e) = result {
                prop_assert_eq!((e.code(), e.status()), ("invalid_request", 400));
            }
        }
    }

    /// An issue body that parses is then checked by the domain: a ticket or
    /// a typed refusal, never a panic, for any caller.
    #[test]
    fn parsed_issue_bodies_get_an_answer(bytes in body(), who in 0..3u8) {
        let Ok(request) = parse_issue_request(&bytes) else { return Ok(()); };
        let c = Catalog::dev();
        let s = MemoryStore::new();
        let k = Kiosk::new(&c, &s);
        let caller = match who {
            0 => kiosk_caller(),
            1 => mobile("alice"),
            _ => counter_caller(),
        };
        let key = IdempotencyKey::for_body("k", &bytes).unwrap();
        if let Err(e) = k.issue_ticket(&caller, request, Some(key), mon_10(), random()) {
            prop_assert!(matches!(e.status(), 400 | 403 | 404 | 409), "{}", e);
        }
    }

    /// Ticket ids: exactly 26 characters of the lowercase base32 alphabet.
    #[test]
    fn ticket_ids_are_recognised_exactly(s in prop_oneof![".{0,30}", "[a-z2-7]{24,28}", "[a-zA-Z0-9]{26}"]) {
        let expected = s.len() == TICKET_ID_LEN
            && s.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
        prop_assert_eq!(is_ticket_id(&s), expected);
    }

    /// Mobile tokens: any text is a customer or `unauthorized` (401).
    #[test]
    fn mobile_tokens_verify_or_are_unauthorized(
        token in prop_oneof![
            ".{0,80}",
            "[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,60}",
            "[A-Za-z0-9_-]{0,10}\\.[A-Za-z0-9_-]{0,10}\\.[A-Za-z0-9_-]{0,10}",
        ],
    ) {
        if let Err(e) = verify_mobile_token(b"secret", &token, mon_10()) {
            prop_assert_eq!((e.code(), e.status()), ("unauthorized", 401));
        }
    }

    /// A real token with one character changed, or a payload that is any
    /// JSON signed with the right secret: a customer or `unauthorized`.
    #[test]
    fn tampered_or_odd_tokens_are_unauthorized(
        customer in "[A-Za-z0-9_@.-]{1,20}", at in 0usize..200, with in any::<char>(), payload in json_value(),
    ) {
        use base64::Engine as _;
        let token = mint_mobile_token(b"secret", &customer, mon_10().timestamp() + 60);
        prop_assert_eq!(verify_mobile_token(b"secret", &token, mon_10()).unwrap(), customer.clone());
        let mut chars: Vec<char> = token.chars().collect();
        let i = at % chars.len();
        let changed = chars[i] != with;
        chars[i] = with;
        let tampered: String = chars.into_iter().collect();
        match verify_mobile_token(b"secret", &tampered, mon_10()) {
            Ok(who) => prop_assert!(!changed || who == customer),
            Err(e) => prop_assert_eq!(e.code(), "unauthorized"),
        }
        // Signed, but the payload is not `{sub, exp}` as minted.
        use hmac::Mac as _;
        let payload = payload.to_string();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"secret").unwrap();
        mac.update(payload.as_bytes());
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let odd = format!("{}.{}", b64.encode(&payload), b64.encode(mac.finalize().into_bytes()));
        if let Err(e) = verify_mobile_token(b"secret", &odd, mon_10()) {
            prop_assert_eq!(e.code(), "unauthorized");
        }
    }

    /// Idempotency-Keys: accepted exactly when 1–255 visible ASCII
    /// characters, else `invalid_request`.
    #[test]
    fn idempotency_keys_are_accepted_exactly(key in prop_oneof![".{0,40}", "[!-~]{0,300}"]) {
        let expected = !key.is_empty()
            && key.len() <= MAX_IDEMPOTENCY_KEY_LEN
            && key.bytes().all(|b| b.is_ascii_graphic());
        match IdempotencyKey::for_body(&key, b"{}") {
            Ok(k) => {
                prop_assert!(expected);
                prop_assert_eq!(k.key(), key.as_str());
            }
            Err(e) => {
                prop_assert!(!expected);
                prop_assert_eq!(e.code(), "invalid_request");
            }
        }
    }

    /// API key lists: any text parses (empty entries skipped, never a
    /// panic); lists written as `id:key,…` read back as written; any
    /// presented key is a caller or `unauthorized`.
    #[test]
    fn api_key_lists_round_trip(
        spec in ".{0,60}",
        pairs in prop::collection::vec(("[a-z0-9-]{1,8}", "[A-Za-z0-9:._-]{1,12}"), 0..5),
        presented in ".{0,20}",
    ) {
        for k in ApiKey::parse_list(&spec, "kiosk") {
            prop_assert!(!k.id.is_empty() || spec.contains(':'));
            prop_assert!(!k.key.contains(',') && !k.id.contains(','));
        }
        let written: Vec<String> = pairs.iter().map(|(id, key)| format!("{id}:{key}")).collect();
        let parsed = ApiKey::parse_list(&written.join(", "), "kiosk");
        let back: Vec<(String, String)> = parsed.iter().map(|k| (k.id.clone(), k.key.clone())).collect();
        prop_assert_eq!(&back, &pairs);
        let config = AuthConfig {
            kiosk_keys: parsed,
            counter_keys: ApiKey::parse_list(&spec, "counter"),
            mobile_secret: Vec::new(),
        };
        match config.authenticate(Credential::ApiKey(&presented), mon_10()) {
            Ok(Caller::Kiosk { id } | Caller::Counter { id }) => {
                prop_assert!(!presented.is_empty());
                let _ = id;
            }
            Ok(other) => prop_assert!(false, "an API key became {:?}", other),
            Err(e) => prop_assert_eq!(e.code(), "unauthorized"),
        }
    }

    /// Core paths and the allow-list's text: canonical or `invalid_core_path`;
    /// an allow-list or an error naming its entry.
    #[test]
    fn core_paths_and_route_lists_never_panic(path in prop_oneof![".{0,40}", "(/[a-z.%;2eEfF5cC0]{0,4}){0,5}"], spec in ".{0,60}") {
        if let Err(e) = canonical_segments(&path) {
            prop_assert_eq!((e.code(), e.status()), ("invalid_core_path", 400));
        }
        match CoreRoutes::parse(&spec) {
            Ok(routes) => {
                if let Err(e) = routes.check("GET", &path, "") {
                    prop_assert!(matches!(e.code(), "invalid_core_path" | "core_route_not_allowed"), "{}", e);
                }
            }
            Err(e) => prop_assert!(!e.reason.is_empty()),
        }
    }
}
