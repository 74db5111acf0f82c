//! Idempotency-Key handling of issue_ticket.

use chrono::TimeDelta;
use kiosk_domain::*;

use crate::common::*;

fn body(r: &IssueRequest) -> Vec<u8> {
    serde_json::to_vec(r).unwrap()
}

#[test]
fn same_key_same_body_returns_the_same_ticket() {
    let c = Catalog::dev();
    let s = MemoryStore::new();
    let k = Kiosk::new(&c, &s);
    let r = req("demo", "deposit", Channel::Kiosk);
    let key = IdempotencyKey::for_body("abc-1", &body(&r)).unwrap();
    let first = k
        .issue_ticket(
            &kiosk_caller(),
            r.clone(),
            Some(key.clone()),
            mon_10(),
            random(),
        )
        .unwrap();
    let again = k
        .issue_ticket(
            &kiosk_caller(),
            r.clone(),
            Some(key.clone()),
            mon_10() + secs(5),
            random(),
        )
        .unwrap();
    assert_eq!(again, first);
    // No second number was taken.
    assert_eq!(
        issue_kiosk(&k, "demo", "deposit", mon_10()).unwrap().number,
        "A-002"
    );
    // The replay is the response first given, whatever became of the
    // ticket since (draft-ietf-httpapi-idempotency-key-header).
    k.call_next(&counter_caller(), "demo", call("1"), mon_10() + secs(10))
        .unwrap();
    let replay = k
        .issue_ticket(&kiosk_caller(), r, Some(key), mon_10() + secs(20), random())
        .unwrap();
    assert_eq!(replay, first);
    assert_eq!(replay.status, TicketStatus::Waiting);
    assert_eq!(
        k.ticket(&counter_caller(), &first.id, mon_10() + secs(20))
            .unwrap()
            .status,
        TicketStatus::Called
    );
}

#[test]
fn same_key_different_body_is_a_mismatch() {
    let c = Catalog::dev();
    let s = MemoryStore::new();
    let k = Kiosk::new(&c, &s);
    let r = req("demo", "deposit", Channel::Kiosk);
    let key = IdempotencyKey::for_body("abc-1", &body(&r)).unwrap();
    k.issue_ticket(&kiosk_caller(), r, Some(key), mon_10(), random())
        .unwrap();
    let other = req("demo", "loan", Channel::Kiosk);
    let key = IdempotencyKey::for_body("abc-1", &body(&other)).unwrap();
    let e = k
        .issue_ticket(&kiosk_caller(), other, Some(key), mon_10(), random())
        .unwrap_err();
    assert_eq!((e.code(), e.status()), ("idempotency_key_mismatch", 422));
}

#[test]
fn keys_are_scoped_per_caller() {
    let c = Catalog::dev();
    let s = MemoryStore::new();
    let k = Kiosk::new(&c, &s);
    let r = req("demo", "deposit", Channel::Kiosk);
    let key = IdempotencyKey::for_body("shared:key%", &body(&r)).unwrap();
    let a = k
        .issue_ticket(
            &Caller::Kiosk { id: "k1".into() },
            r.clone(),
            Some(key.clone()),
            mon_10(),
            random(),
        )
        .unwrap();
    let b = k
        .issue_ticket(
            &Caller::Kiosk { id: "k2".into() },
            r,
            Some(key.clone()),
            mon_10(),
            random(),
        )
        .unwrap();
    assert_ne!(a.id, b.id);
    // Phones too: same key, different customers.
    let m = req("demo", "fx", Channel::Mobile);
    let key = IdempotencyKey::for_body("shared:key%", &body(&m)).unwrap();
    let x = k
        .issue_ticket(
            &mobile("c1"),
            m.clone(),
            Some(key.clone()),
            mon_10(),
            random(),
        )
        .unwrap();
    let y = k
        .issue_ticket(
            &mobile("c2"),
            m.clone(),
            Some(key.clone()),
            mon_10(),
            random(),
        )
        .unwrap();
    assert_ne!(x.id, y.id);
    // And the phone's own retry replays.
    assert_eq!(
        k.issue_ticket(&mobile("c1"), m, Some(key), mon_10(), random())
            .unwrap()
            .id,
        x.id
    );
    // A scope containing ':' cannot collide with another one.
    let tricky = Caller::Kiosk {
        id: "k1:shared".into(),
    };
    let r = req("demo", "deposit", Channel::Kiosk);
    let key = IdempotencyKey::for_body("key%", &body(&r)).unwrap();
    let z = k
        .issue_ticket(&tricky, r, Some(key), mon_10(), random())
        .unwrap();
    assert_ne!(z.id, a.id);
}

#[test]
fn keys_expire_after_24_hours() {
    let c = Catalog::dev();
    let s = MemoryStore::new();
    let k = Kiosk::new(&c, &s);
    let r = req("demo", "deposit", Channel::Kiosk);
    let key = IdempotencyKey::for_body("k", &body(&r)).unwrap();
    let first = k
        .issue_ticket(
            &kiosk_caller(),
            r.clone(),
            Some(key.clone()),
            mon_10(),
            random(),
        )
        .unwrap();
    let within = mon_10() + TimeDelta::hours(24) - secs(1);
    assert_eq!(
        k.issue_ticket(
            &kiosk_caller(),
            r.clone(),
            Some(key.clone()),
            within,
            random()
        )
        .unwrap()
        .id,
        first.id
    );
    // After 24 h the key is free again, even for another body.
    let other = req("demo", "loan", Channel::Kiosk);
    let key2 = IdempotencyKey::for_body("k", &body(&other)).unwrap();
    let later = mon_10() + TimeDelta::hours(24);
    let fresh = k
        .issue_ticket(&kiosk_caller(), other, Some(key2), later, random())
        .unwrap();
    assert_ne!(fresh.id, first.id);
    assert_eq!(fresh.number, "B-001");
}

#[test]
fn retry_while_in_progress_then_takeover_after_the_lease() {
    let c = Catalog::dev();
    let s = FaultyStore::default();
    let k = Kiosk::new(&c, &s);
    let r = req("demo", "deposit", Channel::Kiosk);
    let key = IdempotencyKey::for_body("k", &body(&r)).unwrap();
    // Writing the ticket fails in a way that leaves its outcome unknown (not applied here).
    s.with(|f| f.set_many_error = Some(false));
    let e = k
        .issue_ticket(
            &kiosk_caller(),
            r.clone(),
            Some(key.clone()),
            mon_10(),
            random(),
        )
        .unwrap_err();
    assert_eq!(e.code(), "store_unavailable");
    s.with(|f| f.set_many_error = None);
    // The first request may still be running: 409.
    let e = k
        .issue_ticket(
            &kiosk_caller(),
            r.clone(),
            Some(key.clone()),
            mon_10() + secs(5),
            random(),
        )
        .unwrap_err();
    assert_eq!((e.code(), e.status()), ("idempotency_in_progress", 409));
    // A different body is still a mismatch.
    let other = req("demo", "fx", Channel::Kiosk);
    let key_other = IdempotencyKey::for_body("k", &body(&other)).unwrap();
    assert_eq!(
        k.issue_ticket(
            &kiosk_caller(),
            other,
            Some(key_other),
            mon_10() + secs(5),
            random()
        )
        .unwrap_err()
        .code(),
        "idempotency_key_mismatch"
    );
    // After the lease the first request is taken to have died.
    let v = k
        .issue_ticket(
            &kiosk_caller(),
            r.clone(),
            Some(key.clone()),
            mon_10() + IDEMPOTENCY_LEASE,
            random(),
        )
        .unwrap();
    assert_eq!(v.number, "A-002"); // A-001 was voided by the failed attempt
    assert_eq!(
        k.issue_ticket(&kiosk_caller(), r, Some(key), mon_10() + secs(60), random())
            .unwrap()
            .id,
        v.id
    );
}

#[test]
fn an_ambiguous_failure_that_did_land_replays() {
    let c = Catalog::dev();
    let s = FaultyStore::default();
    let k = Kiosk::new(&c, &s);
    let r = req("demo", "deposit", Channel::Kiosk);
    let key = IdempotencyKey::for_body("k", &body(&r)).unwrap();
    // The ticket is written but the reply is lost.
    s.with(|f| f.set_many_error = Some(true));
    let rnd = random();
    let e = k
        .issue_ticket(&kiosk_caller(), r.clone(), Some(key.clone()), mon_10(), rnd)
        .unwrap_err();
    assert_eq!(e.code(), "store_unavailable");
    s.with(|f| f.set_many_error = None);
    // The retry gets the ticket that landed, not a second one.
    let v = k
        .issue_ticket(&kiosk_caller(), r, Some(key), mon_10() + secs(1), random())
        .unwrap();
    assert_eq!(v.id, ticket_id(rnd));
    assert_eq!(v.number, "A-001");
    assert_eq!(k.queue("demo", mon_10()).unwrap().services[0].waiting, 1);
}

#[test]
fn refused_requests_release_the_key() {
    let c = Catalog::dev();
    let s = MemoryStore::new();
    let k = Kiosk::new(&c, &s);
    let r = req("gangnam", "deposit", Channel::Kiosk);
    let key = IdempotencyKey::for_body("k", &body(&r)).unwrap();
    let saturday = t("2026-03-07T01:00:00Z");
    let e = k
        .issue_ticket(
            &kiosk_caller(),
            r.clone(),
            Some(key.clone()),
            saturday,
            random(),
        )
        .unwrap_err();
    assert_eq!(e.code(), "branch_closed");
    // Same key when open: issues (the refusal was not stored as the outcome).
    let v = k
        .issue_ticket(&kiosk_caller(), r, Some(key), mon_10(), random())
        .unwrap();
    assert_eq!(v.number, "A-001");

    // Phones: already_has_ticket releases too.
    let m = req("demo", "deposit", Channel::Mobile);
    issue_mobile(&k, "c1", "demo", "loan", mon_10()).unwrap();
    let key = IdempotencyKey::for_body("m", &body(&m)).unwrap();
    assert_eq!(
        k.issue_ticket(
            &mobile("c1"),
            m.clone(),
            Some(key.clone()),
            mon_10(),
            random()
        )
        .unwrap_err()
        .code(),
        "already_has_ticket"
    );
    let held = k.queue("demo", mon_10()).unwrap();
    assert_eq!(held.services[1].waiting, 1);
    let loan_id = {
        let staff = counter_caller();
        let v = k
            .call_next(&staff, "demo", call("1"), mon_10())
            .unwrap()
            .unwrap();
        k.complete(&staff, "demo", &v.id, mon_10()).unwrap();
        v.id
    };
    assert!(!loan_id.is_empty());
    assert!(
        k.issue_ticket(&mobile("c1"), m, Some(key), mon_10(), random())
            .is_ok()
    );
}
