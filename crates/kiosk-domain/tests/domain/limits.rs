//! Limits: queue size (`queue_full`) and rates per credential
//! (`rate_limited`), on the development catalog's `jongno` (realistic
//! limits) and `demo` (limits for load tests).

use kiosk_domain::*;

use crate::common::*;

fn jongno(service: &str) -> IssueRequest {
    req("jongno", service, Channel::Kiosk)
}

fn issue_as(
    k: &Kiosk<'_, MemoryStore>,
    kiosk: &str,
    service: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<TicketView, DomainError> {
    let r = jongno(service);
    let key = fresh_key(&r);
    let caller = Caller::Kiosk { id: kiosk.into() };
    k.issue_ticket(&caller, r, Some(key), now, random())
}

#[test]
fn a_full_queue_refuses_without_taking_a_number_until_a_ticket_is_called() {
    let c = Catalog::dev();
    let s = MemoryStore::new();
    let k = Kiosk::new(&c, &s);
    let now = mon_10();
    let cap = c
        .branch("jongno")
        .unwrap()
        .service("loan")
        .unwrap()
        .max_waiting;
    for i in 0..cap {
        let v = issue_kiosk(&k, "jongno", "loan", now + secs(i64::from(i))).unwrap();
        assert_eq!(v.waiting_ahead, i);
    }
    // None of them merged into the queue document yet: the log counts.
    let e = issue_kiosk(&k, "jongno", "loan", now + secs(60)).unwrap_err();
    assert_eq!((e.code(), e.status()), ("queue_full", 409));
    assert!(e.to_string().contains("\"loan\""), "{e}");
    let e = issue_mobile(&k, "c1", "jongno", "loan", now + secs(60)).unwrap_err();
    assert_eq!(e.code(), "queue_full");
    // Other services still take tickets.
    issue_kiosk(&k, "jongno", "deposit", now + secs(60)).unwrap();
    // A call leaves cap − 1 waiting: one place, and the next number.
    let called = k
        .call_next(&counter_caller(), "jongno", call("4"), now + secs(61))
        .unwrap()
        .unwrap();
    assert_eq!(called.number, "B-001");
    let v = issue_kiosk(&k, "jongno", "loan", now + secs(62)).unwrap();
    assert_eq!(v.number, format!("B-{:03}", cap + 1));
    assert_eq!(v.waiting_ahead, cap - 1);
    let e = issue_kiosk(&k, "jongno", "loan", now + secs(63)).unwrap_err();
    assert_eq!(e.code(), "queue_full");
    // A cancel frees a place too.
    k.cancel(&counter_caller(), &v.id, now + secs(64)).unwrap();
    issue_kiosk(&k, "jongno", "loan", now + secs(65)).unwrap();
}

#[test]
fn a_kiosk_key_takes_its_rate_per_minute_and_others_are_served() {
    let c = Catalog::dev();
    let s = MemoryStore::new();
    let k = Kiosk::new(&c, &s);
    // 10:00:05 local: 55 s left in the minute.
    let now = mon_10() + secs(5);
    let rate = c.branch("jongno").unwrap().kiosk_tickets;
    assert_eq!(rate, Rate::KIOSK_TICKETS);
    let k1 = Caller::Kiosk { id: "k1".into() };
    let first = jongno("deposit");
    let first_key = fresh_key(&first);
    let one = k
        .issue_ticket(&k1, first.clone(), Some(first_key.clone()), now, random())
        .unwrap();
    // 120 tickets over the three queues (80 + 30 + 20 places).
    for i in 1..rate.limit {
        let service = match i {
            0..75 => "deposit",
            75..100 => "fx",
            _ => "loan",
        };
        issue_as(&k, "k1", service, now).unwrap_or_else(|e| panic!("ticket {i}: {e}"));
    }
    let e = issue_as(&k, "k1", "deposit", now).unwrap_err();
    assert_eq!((e.code(), e.status()), ("rate_limited", 429));
    assert_eq!(e.retry_after_s(), Some(55));
    // A retry of a ticket already issued is no new ticket: answered.
    let again = k
        .issue_ticket(&k1, first, Some(first_key), now, random())
        .unwrap();
    assert_eq!(again.id, one.id);
    // Another kiosk, a phone, and the same kiosk at another branch are served.
    issue_as(&k, "k2", "deposit", now).unwrap();
    issue_mobile(&k, "c1", "jongno", "deposit", now).unwrap();
    k.issue_ticket(
        &Caller::Kiosk { id: "k1".into() },
        req("demo", "deposit", Channel::Kiosk),
        Some(fresh_key(&req("demo", "deposit", Channel::Kiosk))),
        now,
        random(),
    )
    .unwrap();
    // The next minute starts afresh.
    issue_as(&k, "k1", "deposit", now + secs(55)).unwrap();
}

#[test]
fn replays_and_refusals_do_not_count() {
    let c = Catalog::dev();
    let s = MemoryStore::new();
    let k = Kiosk::new(&c, &s);
    let now = mon_10();
    let caller = Caller::Kiosk { id: "k1".into() };
    let r = jongno("deposit");
    let key = fresh_key(&r);
    let first = k
        .issue_ticket(&caller, r.clone(), Some(key.clone()), now, random())
        .unwrap();
    for _ in 0..200 {
        let again = k
            .issue_ticket(&caller, r.clone(), Some(key.clone()), now, random())
            .unwrap();
        assert_eq!(again.id, first.id);
    }
    // Fill loans (20), then be refused 150 times: still 99 tickets left.
    for _ in 0..20 {
        issue_as(&k, "k1", "loan", now).unwrap();
    }
    for _ in 0..150 {
        assert_eq!(
            issue_as(&k, "k1", "loan", now).unwrap_err().code(),
            "queue_full"
        );
    }
    for i in 0..99 {
        let service = if i < 70 { "deposit" } else { "fx" };
        issue_as(&k, "k1", service, now).unwrap_or_else(|e| panic!("ticket {i}: {e}"));
    }
    assert_eq!(
        issue_as(&k, "k1", "fx", now).unwrap_err().code(),
        "rate_limited"
    );
}

#[test]
fn a_phone_takes_three_tickets_an_hour_at_a_branch() {
    let c = Catalog::dev();
    let s = MemoryStore::new();
    let k = Kiosk::new(&c, &s);
    // 10:20 local: 40 minutes left in the hour.
    let now = mon_10() + secs(20 * 60);
    let phone = mobile("alice");
    for i in 0..3 {
        let v = issue_mobile(&k, "alice", "jongno", "fx", now + secs(i)).unwrap();
        k.cancel(&phone, &v.id, now + secs(i)).unwrap();
    }
    let e = issue_mobile(&k, "alice", "jongno", "fx", now + secs(10)).unwrap_err();
    assert_eq!((e.code(), e.status()), ("rate_limited", 429));
    assert_eq!(e.retry_after_s(), Some(40 * 60 - 10));
    // Holding a ticket is refused as before, and does not count.
    issue_mobile(&k, "bob", "jongno", "fx", now).unwrap();
    for _ in 0..5 {
        let e = issue_mobile(&k, "bob", "jongno", "fx", now).unwrap_err();
        assert_eq!(e.code(), "already_has_ticket");
    }
    // Elsewhere, and in the next hour, alice is served.
    issue_mobile(&k, "alice", "demo", "fx", now).unwrap();
    issue_mobile(&k, "alice", "jongno", "fx", now + secs(40 * 60)).unwrap();
}

#[test]
fn demo_takes_a_load_test() {
    let c = Catalog::dev();
    let s = MemoryStore::new();
    let k = Kiosk::new(&c, &s);
    let now = mon_10();
    for _ in 0..1000 {
        issue_kiosk(&k, "demo", "deposit", now).unwrap();
    }
}

#[test]
fn core_calls_are_counted_per_key() {
    let s = MemoryStore::new();
    let rate = Rate {
        limit: 2,
        per: Period::Minute,
    };
    let now = mon_10();
    let kiosk = kiosk_caller();
    let staff = counter_caller();
    let calls = |caller| rate::Subject::CoreCalls { caller };
    rate::admit(&s, &calls(&kiosk), rate, now).unwrap();
    rate::admit(&s, &calls(&kiosk), rate, now).unwrap();
    let e = rate::admit(&s, &calls(&kiosk), rate, now).unwrap_err();
    assert_eq!((e.code(), e.retry_after_s()), ("rate_limited", Some(60)));
    assert!(e.to_string().contains("core banking system"), "{e}");
    rate::admit(&s, &calls(&staff), rate, now).unwrap();
}
