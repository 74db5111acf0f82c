//! The queue's state at its edges: long backlogs, placers that die or are
//! overtaken, writes lost after a change, midnight, and days that end.

use std::sync::Mutex;

use kiosk_domain::*;

use crate::common::*;

/// A store that runs `hook` once, just before the first `set_many` (an
/// issue writing its record and slot): what another request does while
/// that issuer is between taking its number and writing its ticket.
struct Overtaken<'a> {
    inner: &'a MemoryStore,
    hook: Mutex<Option<Box<dyn FnOnce() + Send + 'a>>>,
}

impl Store for Overtaken<'_> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
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
    fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let hook = self.hook.lock().unwrap().take();
        if let Some(hook) = hook {
            hook();
        }
        self.inner.set_many(items)
    }
}

#[test]
fn a_backlog_over_a_thousand_can_be_cancelled_transferred_and_called() {
    let c = busy_catalog();
    let s = MemoryStore::new();
    let k = Kiosk::new(&c, &s);
    let staff = counter_caller();
    let now = mon_10();
    let issued: Vec<TicketView> = (0..1070)
        .map(|_| issue_kiosk(&k, "busy", "deposit", now).unwrap())
        .collect();
    let last = issued.last().unwrap();
    let v = k.ticket(&staff, &last.id, now).unwrap();
    assert_eq!(v.status, TicketStatus::Waiting);
    // Beyond EXACT_AHEAD the count is the positions ahead: exact here.
    assert_eq!(v.waiting_ahead, 1069);
    assert_eq!(
        k.cancel(&staff, &last.id, now).unwrap().status,
        TicketStatus::Cancelled
    );
    let moved = k
        .transfer(
            &staff,
            "busy",
            &issued[1068].id,
            TransferRequest {
                service: "loan".into(),
            },
            now,
        )
        .unwrap();
    assert_eq!((moved.service.as_str(), moved.waiting_ahead), ("loan", 0));
    assert_eq!(
        k.queue("busy", now).unwrap().services[0].waiting,
        1068,
        "1070 issued, one cancelled, one transferred"
    );
    let first = k
        .call_next(&staff, "busy", call("1"), now)
        .unwrap()
        .unwrap();
    assert_eq!(first.number, "A-001");
    // A ticket deep in the line is exactly positioned once it is near.
    let v = k.ticket(&staff, &issued[100].id, now).unwrap();
    assert_eq!(v.waiting_ahead, 99);
}

#[test]
fn a_number_whose_ticket_never_lands_is_passed_once_a_later_one_is_written() {
    let c = busy_catalog();
    let s = MemoryStore::new();
    let k = Kiosk::new(&c, &s);
    let staff = counter_caller();
    let now = mon_10();
    // An issuer took A-001 and died before writing anything.
    assert_eq!(
        s.increment("lane-seq:busy:deposit:2026-03-02:main", 1)
            .unwrap(),
        1
    );
    // Alone at the end, its number is not passed: its issuer may still write.
    assert_eq!(k.call_next(&staff, "busy", call("1"), now).unwrap(), None);
    let b = issue_kiosk(&k, "busy", "deposit", now).unwrap();
    assert_eq!(b.number, "A-002");
    let called = k
        .call_next(&staff, "busy", call("1"), now)
        .unwrap()
        .unwrap();
    assert_eq!(called.id, b.id);
    // Passed once, counted out of the line once.
    assert_eq!(k.queue("busy", now).unwrap().services[0].waiting, 0);
    assert_eq!(
        s.get("lane-head:busy:deposit:2026-03-02:main").unwrap(),
        Some(b"3".to_vec())
    );
}

#[test]
fn an_issuer_overtaken_by_a_call_is_placed_again_before_it_answers() {
    let c = busy_catalog();
    let mem = MemoryStore::new();
    let staff = counter_caller();
    let now = mon_10();
    // A-001 is issued; while its issuer is between its number and its
    // write, A-002 lands and a counter calls: it passes A-001's empty slot.
    let store = Overtaken {
        inner: &mem,
        hook: Mutex::new(Some(Box::new(|| {
            let k = Kiosk::new(&c, &mem);
            let b = issue_kiosk(&k, "busy", "deposit", now).unwrap();
            assert_eq!(b.number, "A-002");
            let called = k
                .call_next(&counter_caller(), "busy", call("1"), now)
                .unwrap()
                .unwrap();
            assert_eq!(called.id, b.id);
        }))),
    };
    let k = Kiosk::new(&c, &store);
    let a = issue_kiosk(&k, "busy", "deposit", now).unwrap();
    assert_eq!(a.number, "A-001");
    // Acknowledged, so it must be callable: it stands in the moved lane.
    assert!(
        mem.get("lane-slot:busy:deposit:2026-03-02:moved:1")
            .unwrap()
            .is_some()
    );
    let k = Kiosk::new(&c, &mem);
    assert_eq!(k.queue("busy", now).unwrap().services[0].waiting, 1);
    let next = k
        .call_next(&staff, "busy", call("2"), now)
        .unwrap()
        .unwrap();
    assert_eq!(next.id, a.id);
}

#[test]
fn a_change_whose_follow_up_writes_fail_is_complete_and_frees_the_phone() {
    let c = busy_catalog();
    let s = FaultyStore::default();
    let k = Kiosk::new(&c, &s);
    let staff = counter_caller();
    let now = mon_10();
    let t = issue_mobile(&k, "c1", "busy", "deposit", now).unwrap();
    k.call_next(&staff, "busy", call("1"), now)
        .unwrap()
        .unwrap();
    // Every write after the record's swap fails (a store timeout, a crash).
    s.with(|f| f.set_error_prefix = Some(String::new()));
    assert_eq!(
        k.complete(&staff, "busy", &t.id, now + secs(60))
            .unwrap()
            .status,
        TicketStatus::Done
    );
    s.with(|f| f.set_error_prefix = None);
    // It reads done, now and a day later, and the phone may take another.
    for at in [now + secs(61), now + chrono::TimeDelta::days(1)] {
        assert_eq!(
            k.ticket(&mobile("c1"), &t.id, at).unwrap().status,
            TicketStatus::Done
        );
    }
    issue_mobile(&k, "c1", "busy", "deposit", now + secs(62)).unwrap();
}

#[test]
fn a_ticket_issued_before_midnight_ends_with_its_day_and_frees_the_phone() {
    let c = Catalog::dev();
    let s = MemoryStore::new();
    let k = Kiosk::new(&c, &s);
    let staff = counter_caller();
    // demo is open around the clock in Seoul. Issuing pauses from 23:59 to
    // 00:01, and the day's waiting ends at 23:59, so hosts whose clocks
    // differ by less than a minute agree on which day a ticket belongs to.
    let e = issue_mobile(&k, "c1", "demo", "deposit", t("2026-03-02T14:59:30Z")).unwrap_err();
    assert_eq!(e.code(), "branch_closed");
    assert!(e.to_string().contains("2026-03-03T00:01:00+09:00"), "{e}");
    // 23:58:59.9 KST, the last moment of the day; a counter's clock is
    // already past 23:59.
    let before = t("2026-03-02T14:58:59.900Z");
    let after = t("2026-03-02T14:59:00.100Z");
    let late = issue_mobile(&k, "c1", "demo", "deposit", before).unwrap();
    assert_eq!(late.status, TicketStatus::Waiting);
    // The counter's clock is already on the next business day.
    assert_eq!(k.call_next(&staff, "demo", call("1"), after).unwrap(), None);
    let v = k.ticket(&mobile("c1"), &late.id, after).unwrap();
    assert_eq!(v.status, TicketStatus::Expired);
    assert_eq!(v.reason.as_deref(), Some(REASON_DAY_ENDED));
    assert_eq!(
        k.cancel(&mobile("c1"), &late.id, after).unwrap_err().code(),
        "conflict"
    );
    // Today's numbering starts afresh, and no active ticket shares A-001.
    let after = t("2026-03-02T15:01:00Z");
    let today = issue_mobile(&k, "c1", "demo", "deposit", after).unwrap();
    assert_eq!((today.number.as_str(), today.waiting_ahead), ("A-001", 0));
    let called = k
        .call_next(&staff, "demo", call("1"), after)
        .unwrap()
        .unwrap();
    assert_eq!(called.id, today.id);
}

fn day_catalog(extra: &str) -> Catalog {
    Catalog::from_json(&format!(
        r#"{{"branches":[{{"id":"air","name":"Airport","time_zone":"Asia/Seoul","always_open":true,{extra}
        "services":[{{"id":"deposit","code":"A","minutes":5}}],
        "counters":[{{"id":"1","services":["deposit"]}}]}}]}}"#
    ))
    .unwrap()
}

#[test]
fn a_branch_that_carries_over_keeps_its_line_and_never_repeats_a_number() {
    let c = day_catalog(r#""at_day_end":"carry_over","#);
    let s = MemoryStore::new();
    let k = Kiosk::new(&c, &s);
    let evening = t("2026-03-02T14:00:00Z"); // 23:00 KST
    let a = issue_kiosk(&k, "air", "deposit", evening).unwrap();
    issue_kiosk(&k, "air", "deposit", evening).unwrap();
    let morning = evening + chrono::TimeDelta::hours(10);
    let c3 = issue_kiosk(&k, "air", "deposit", morning).unwrap();
    assert_eq!((c3.number.as_str(), c3.waiting_ahead), ("A-003", 2));
    assert_eq!(
        k.ticket(&counter_caller(), &a.id, morning).unwrap().status,
        TicketStatus::Waiting
    );
    let first = k
        .call_next(&counter_caller(), "air", call("1"), morning)
        .unwrap()
        .unwrap();
    assert_eq!(first.id, a.id);
}

#[test]
fn a_day_that_starts_at_four_ends_its_waiting_tickets_at_four() {
    let c = day_catalog(r#""day_starts_at":"04:00","#);
    let s = MemoryStore::new();
    let k = Kiosk::new(&c, &s);
    // 02:00 KST on 2026-03-03 still belongs to the business day of 03-02.
    let night = t("2026-03-02T17:00:00Z");
    let before = issue_kiosk(&k, "air", "deposit", night - chrono::TimeDelta::hours(4)).unwrap();
    let v = issue_kiosk(&k, "air", "deposit", night).unwrap();
    assert_eq!(v.number, "A-002");
    let b = c.branch("air").unwrap();
    // Waiting ends a margin before 04:00; issuing resumes a margin after.
    let four = t("2026-03-02T19:00:00Z");
    assert_eq!(
        b.waiting_ends_at(b.business_day(night)),
        Some(four - DAY_CHANGE_MARGIN)
    );
    assert_eq!(
        k.ticket(&counter_caller(), &before.id, four - DAY_CHANGE_MARGIN)
            .unwrap()
            .status,
        TicketStatus::Expired
    );
    assert_eq!(
        issue_kiosk(&k, "air", "deposit", four).unwrap_err().code(),
        "branch_closed"
    );
    let resume = four + DAY_CHANGE_MARGIN;
    assert_eq!(
        issue_kiosk(&k, "air", "deposit", resume).unwrap().number,
        "A-001"
    );
}

#[test]
fn catalog_day_rules_are_checked() {
    for (extra, needle) in [
        (r#""day_starts_at":"25:00","#, "day_starts_at"),
        (r#""at_day_end":"keep","#, "unknown variant"),
        (r#""serve_after_close_minutes":2000,"#, "at most 1440"),
    ] {
        let json = format!(
            r#"{{"branches":[{{"id":"air","name":"Airport","time_zone":"Asia/Seoul","always_open":true,{extra}
            "services":[{{"id":"deposit","code":"A","minutes":5}}],
            "counters":[{{"id":"1","services":["deposit"]}}]}}]}}"#
        );
        let e = Catalog::from_json(&json).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
}

#[test]
fn a_long_run_of_dead_issuers_does_not_hide_the_ticket_behind_them() {
    let c = busy_catalog();
    let s = MemoryStore::new();
    let k = Kiosk::new(&c, &s);
    let staff = counter_caller();
    let now = mon_10();
    // 40 issuers took numbers and died: more than one batch of empty slots.
    for _ in 0..40 {
        s.increment("lane-seq:busy:deposit:2026-03-02:main", 1)
            .unwrap();
    }
    let t = issue_kiosk(&k, "busy", "deposit", now).unwrap();
    assert_eq!(t.number, "A-041");
    let called = k
        .call_next(&staff, "busy", call("1"), now)
        .unwrap()
        .unwrap();
    assert_eq!(called.id, t.id);
    assert_eq!(k.queue("busy", now).unwrap().services[0].waiting, 0);
}

#[test]
fn a_transfer_killed_at_any_step_leaves_the_ticket_callable() {
    let c = busy_catalog();
    let staff = counter_caller();
    let now = mon_10();
    let to_loan = || TransferRequest {
        service: "loan".into(),
    };
    // A waiting ticket and a called one, each with a ticket behind it in
    // the target lane, transferred by a request killed after 0, 1, 2...
    // store operations, until one runs to its end.
    for called in [false, true] {
        let mut finished = false;
        for budget in 0..64 {
            let s = FaultyStore::default();
            let k = Kiosk::new(&c, &s);
            let t = issue_kiosk(&k, "busy", "deposit", now).unwrap();
            if called {
                k.call_next(&staff, "busy", call("1"), now)
                    .unwrap()
                    .unwrap();
            }
            s.with(|f| f.ops_left = Some(budget));
            let answered = k.transfer(&staff, "busy", &t.id, to_loan(), now).is_ok();
            s.with(|f| f.ops_left = None);
            // Later traffic in the target lane: another transfer lands
            // behind it, so callers must decide the killed one's position.
            let u = issue_kiosk(&k, "busy", "deposit", now).unwrap();
            k.transfer(&staff, "busy", &u.id, to_loan(), now).unwrap();
            let view = k.ticket(&staff, &t.id, now).unwrap();
            let state = format!("killed after {budget} operations (called: {called}): {view:?}");
            if view.status == TicketStatus::Called {
                // Not moved: still at counter 1's desk, where it is ended.
                assert!(!answered, "{state}");
                k.complete(&staff, "busy", &t.id, now).unwrap();
            } else {
                assert_eq!(view.status, TicketStatus::Waiting, "{state}");
                if answered {
                    assert_eq!(view.service, "loan", "{state}");
                }
                // Whatever it reads, counters find it: the two tickets are
                // called, and nothing else.
                let mut seen = Vec::new();
                while let Some(v) = k.call_next(&staff, "busy", call("2"), now).unwrap() {
                    seen.push(v.id.clone());
                    k.complete(&staff, "busy", &v.id, now).unwrap();
                }
                seen.sort();
                let mut want = vec![t.id.clone(), u.id.clone()];
                want.sort();
                assert_eq!(seen, want, "{state}");
            }
            if answered {
                finished = true;
                break;
            }
        }
        assert!(finished, "a transfer with 64 operations to spare finishes");
    }
}
