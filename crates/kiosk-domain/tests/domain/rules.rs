//! One or more tests per business rule.

use kiosk_domain::*;

use crate::common::*;

fn setup() -> (Catalog, MemoryStore) {
    (Catalog::dev(), MemoryStore::new())
}

// ------------------------------------------------------------------ numbering

#[test]
fn numbers_start_at_one_per_service_and_are_formatted() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    let now = mon_10();
    let a1 = issue_kiosk(&k, "demo", "deposit", now).unwrap();
    let a2 = issue_kiosk(&k, "demo", "deposit", now + secs(1)).unwrap();
    let b1 = issue_kiosk(&k, "demo", "loan", now + secs(2)).unwrap();
    let c1 = issue_kiosk(&k, "demo", "fx", now + secs(3)).unwrap();
    let a3 = issue_kiosk(&k, "demo", "deposit", now + secs(4)).unwrap();
    assert_eq!(
        [&a1, &a2, &b1, &c1, &a3].map(|v| v.number.as_str()),
        ["A-001", "A-002", "B-001", "C-001", "A-003"]
    );
    assert_eq!(a1.status, TicketStatus::Waiting);
    assert_eq!(a1.branch, "demo");
    assert_eq!(a1.service, "deposit");
    assert_eq!(a1.channel, Channel::Kiosk);
    assert_eq!(a1.issued_at, now);
    assert_eq!(a1.counter, None);
    assert_eq!(a1.called_at, None);
    assert_eq!(a1.id.len(), 26);
    assert!(
        a1.id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
    );
}

#[test]
fn numbers_are_per_branch() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    let now = mon_10();
    assert_eq!(
        issue_kiosk(&k, "demo", "deposit", now).unwrap().number,
        "A-001"
    );
    assert_eq!(
        issue_kiosk(&k, "gangnam", "deposit", now).unwrap().number,
        "A-001"
    );
    assert_eq!(
        issue_kiosk(&k, "gangnam", "deposit", now).unwrap().number,
        "A-002"
    );
    assert_eq!(
        issue_kiosk(&k, "demo", "deposit", now).unwrap().number,
        "A-002"
    );
}

#[test]
fn numbers_restart_on_the_next_local_day_in_seoul() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    // 2026-03-02 19:00 KST.
    let evening = t("2026-03-02T10:00:00Z");
    assert_eq!(
        issue_kiosk(&k, "demo", "deposit", evening).unwrap().number,
        "A-001"
    );
    assert_eq!(
        issue_kiosk(&k, "demo", "deposit", evening + secs(60))
            .unwrap()
            .number,
        "A-002"
    );
    // 23:30 UTC the same UTC day is 08:30 on 2026-03-03 in Seoul: a new business day.
    let next_local_day = t("2026-03-02T23:30:00Z");
    let v = issue_kiosk(&k, "demo", "deposit", next_local_day).unwrap();
    assert_eq!(v.number, "A-001");
    // Yesterday's waiting tickets ended with their day: nobody is ahead,
    // and no two active tickets show A-001.
    assert_eq!(v.waiting_ahead, 0);
    let q = k.queue("demo", next_local_day).unwrap();
    assert_eq!(q.services[0].last_issued.as_deref(), Some("A-001"));
    assert_eq!(q.services[0].waiting, 1);
    assert!(
        s.keys()
            .contains(&"lane-seq:demo:deposit:2026-03-03:main".to_string())
    );
    assert!(
        s.keys()
            .contains(&"lane-seq:demo:deposit:2026-03-02:main".to_string())
    );
}

// ------------------------------------------------------------------ hours

#[test]
fn closed_branch_does_not_issue() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    // Saturday 2026-03-07 10:00 KST.
    let e = issue_kiosk(&k, "gangnam", "deposit", t("2026-03-07T01:00:00Z")).unwrap_err();
    assert_eq!(e.code(), "branch_closed");
    assert_eq!(e.status(), 409);
    assert!(e.to_string().contains("2026-03-09T09:00:00+09:00"), "{e}");
    // Monday 16:00 KST (closing time is exclusive).
    let e = issue_kiosk(&k, "gangnam", "deposit", t("2026-03-02T07:00:00Z")).unwrap_err();
    assert_eq!(e.code(), "branch_closed");
    // Monday 08:59:59 KST.
    let e = issue_kiosk(&k, "gangnam", "deposit", t("2026-03-01T23:59:59Z")).unwrap_err();
    assert_eq!(e.code(), "branch_closed");
    assert!(issue_kiosk(&k, "gangnam", "deposit", t("2026-03-02T00:00:00Z")).is_ok());
    // No number was used by the refused requests.
    assert_eq!(
        issue_kiosk(&k, "gangnam", "deposit", t("2026-03-02T00:00:01Z"))
            .unwrap()
            .number,
        "A-002"
    );
}

// ------------------------------------------------------------------ validation and auth

#[test]
fn unknown_branch_and_service() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    let e = issue_kiosk(&k, "nowhere", "deposit", mon_10()).unwrap_err();
    assert_eq!((e.code(), e.status()), ("branch_not_found", 404));
    let e = issue_kiosk(&k, "demo", "mortgage", mon_10()).unwrap_err();
    assert_eq!((e.code(), e.status()), ("service_not_found", 404));
    assert!(e.to_string().contains("mortgage"));
    assert_eq!(
        k.queue("nowhere", mon_10()).unwrap_err().code(),
        "branch_not_found"
    );
}

#[test]
fn channels_must_match_the_caller() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    let now = mon_10();
    // Kiosk asking for a mobile ticket.
    let r = req("demo", "deposit", Channel::Mobile);
    let e = k
        .issue_ticket(
            &kiosk_caller(),
            r.clone(),
            Some(fresh_key(&r)),
            now,
            random(),
        )
        .unwrap_err();
    assert_eq!(e.code(), "forbidden");
    // Phone asking for a kiosk ticket.
    let e = k
        .issue_ticket(
            &mobile("c1"),
            req("demo", "deposit", Channel::Kiosk),
            None,
            now,
            random(),
        )
        .unwrap_err();
    assert_eq!(e.code(), "forbidden");
    // Phone issuing for someone else.
    let mut r = req("demo", "deposit", Channel::Mobile);
    r.customer_ref = Some("c2".into());
    let e = k
        .issue_ticket(&mobile("c1"), r, None, now, random())
        .unwrap_err();
    assert_eq!((e.code(), e.status()), ("forbidden", 403));
    // Own customer_ref, explicit or filled in.
    let mut r = req("demo", "deposit", Channel::Mobile);
    r.customer_ref = Some("c1".into());
    let v = k
        .issue_ticket(&mobile("c1"), r, None, now, random())
        .unwrap();
    assert_eq!(v.channel, Channel::Mobile);
    // Counters do not issue.
    let e = k
        .issue_ticket(
            &counter_caller(),
            req("demo", "deposit", Channel::Kiosk),
            None,
            now,
            random(),
        )
        .unwrap_err();
    assert_eq!(e.code(), "forbidden");
}

#[test]
fn kiosk_customer_ref_is_validated() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    let mut r = req("demo", "deposit", Channel::Kiosk);
    r.customer_ref = Some("x".repeat(200));
    let e = k
        .issue_ticket(
            &kiosk_caller(),
            r.clone(),
            Some(fresh_key(&r)),
            mon_10(),
            random(),
        )
        .unwrap_err();
    assert_eq!(e.code(), "invalid_request");
}

#[test]
fn kiosks_must_send_an_idempotency_key() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    let e = k
        .issue_ticket(
            &kiosk_caller(),
            req("demo", "deposit", Channel::Kiosk),
            None,
            mon_10(),
            random(),
        )
        .unwrap_err();
    assert_eq!((e.code(), e.status()), ("idempotency_key_required", 400));
    // Phones may omit it.
    assert!(issue_mobile(&k, "c1", "demo", "deposit", mon_10()).is_ok());
}

#[test]
fn mobile_tokens_authenticate_end_to_end() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    let auth = AuthConfig {
        mobile_secret: b"dev-secret-dev-secret-dev-secret".to_vec(),
        ..AuthConfig::default()
    };
    let token = mint_mobile_token(&auth.mobile_secret, "cust-7", mon_10().timestamp() + 600);
    let caller = auth
        .authenticate(Credential::MobileToken(&token), mon_10())
        .unwrap();
    let v = k
        .issue_ticket(
            &caller,
            req("demo", "fx", Channel::Mobile),
            None,
            mon_10(),
            random(),
        )
        .unwrap();
    assert_eq!(k.ticket(&caller, &v.id, mon_10()).unwrap().id, v.id);
    // A phone cannot act as a counter.
    for e in [
        k.call_next(&caller, "demo", call("1"), mon_10())
            .unwrap_err(),
        k.recall(&caller, "demo", "1", mon_10()).unwrap_err(),
        k.complete(&caller, "demo", &v.id, mon_10()).unwrap_err(),
        k.no_show(&caller, "demo", &v.id, mon_10()).unwrap_err(),
        k.transfer(
            &caller,
            "demo",
            &v.id,
            TransferRequest {
                service: "loan".into(),
            },
            mon_10(),
        )
        .unwrap_err(),
    ] {
        assert_eq!((e.code(), e.status()), ("forbidden", 403));
    }
    // Neither can a kiosk.
    let e = k
        .call_next(&kiosk_caller(), "demo", call("1"), mon_10())
        .unwrap_err();
    assert_eq!(e.code(), "forbidden");
}

// ------------------------------------------------------------------ one active ticket per phone

#[test]
fn a_phone_holds_one_active_ticket_per_branch() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    let now = mon_10();
    let first = issue_mobile(&k, "c1", "demo", "deposit", now).unwrap();
    let e = issue_mobile(&k, "c1", "demo", "loan", now + secs(1)).unwrap_err();
    assert_eq!((e.code(), e.status()), ("already_has_ticket", 409));
    assert!(e.to_string().contains("A-001"), "{e}");
    assert!(e.to_string().contains(&first.id));
    // Other branch, other customer: fine.
    assert!(issue_mobile(&k, "c1", "gangnam", "deposit", now).is_ok());
    assert!(issue_mobile(&k, "c2", "demo", "deposit", now).is_ok());
    // Kiosk tickets do not count.
    assert!(issue_kiosk(&k, "demo", "deposit", now).is_ok());
    // Still active once called.
    let called = k
        .call_next(&counter_caller(), "demo", call("1"), now + secs(2))
        .unwrap()
        .unwrap();
    assert_eq!(called.id, first.id);
    assert_eq!(
        issue_mobile(&k, "c1", "demo", "deposit", now + secs(3))
            .unwrap_err()
            .code(),
        "already_has_ticket"
    );
    // Free again once done.
    k.complete(&counter_caller(), "demo", &first.id, now + secs(4))
        .unwrap();
    let second = issue_mobile(&k, "c1", "demo", "deposit", now + secs(5)).unwrap();
    // And after cancelling.
    k.cancel(&mobile("c1"), &second.id, now + secs(6)).unwrap();
    assert!(issue_mobile(&k, "c1", "demo", "deposit", now + secs(7)).is_ok());
    // The refused requests used no number: c1, c2, kiosk, c1, c1 took A-001..A-005.
    let q = k.queue("demo", now + secs(7)).unwrap();
    assert_eq!(q.services[0].last_issued.as_deref(), Some("A-005"));
}

// ------------------------------------------------------------------ ticket view

#[test]
fn waiting_ahead_and_estimate() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    let now = mon_10();
    let views: Vec<TicketView> = (0..4)
        .map(|i| issue_kiosk(&k, "demo", "loan", now + secs(i)).unwrap())
        .collect();
    issue_kiosk(&k, "demo", "deposit", now).unwrap();
    // loan: 15 min, 3 counters → 300 s per ticket ahead.
    for (i, v) in views.iter().enumerate() {
        assert_eq!(v.waiting_ahead, i as u32);
        assert_eq!(v.estimated_wait_s, i as u64 * 15 * 60 / 3);
    }
    // Views update as the queue moves.
    let last = &views[3];
    assert_eq!(
        k.ticket(&kiosk_caller(), &last.id, now)
            .unwrap()
            .waiting_ahead,
        3
    );
    k.cancel(&counter_caller(), &views[1].id, now).unwrap();
    let v = k.ticket(&kiosk_caller(), &last.id, now).unwrap();
    assert_eq!((v.waiting_ahead, v.estimated_wait_s), (2, 600));
    // Calling: the deposit ticket is not older than the loan ones? All at `now`
    // or later; counter 1 gets the oldest overall.
    let called = k
        .call_next(&counter_caller(), "demo", call("1"), now + secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(called.waiting_ahead, 0);
    assert_eq!(called.estimated_wait_s, 0);
    assert_eq!(called.status, TicketStatus::Called);
    assert_eq!(called.counter.as_deref(), Some("1"));
    assert_eq!(called.called_at, Some(now + secs(10)));
    let v = k.ticket(&kiosk_caller(), &last.id, now).unwrap();
    assert!(v.waiting_ahead <= 2);
}

#[test]
fn phones_see_only_their_own_tickets() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    let now = mon_10();
    let mine = issue_mobile(&k, "c1", "demo", "deposit", now).unwrap();
    let kiosk_ticket = issue_kiosk(&k, "demo", "deposit", now).unwrap();
    assert_eq!(k.ticket(&mobile("c1"), &mine.id, now).unwrap(), mine);
    for (caller, id) in [(mobile("c2"), &mine.id), (mobile("c1"), &kiosk_ticket.id)] {
        let e = k.ticket(&caller, id, now).unwrap_err();
        assert_eq!((e.code(), e.status()), ("ticket_not_found", 404));
        let e = k.cancel(&caller, id, now).unwrap_err();
        assert_eq!(e.code(), "ticket_not_found");
    }
    // Kiosks and counters see any ticket.
    assert_eq!(
        k.ticket(&kiosk_caller(), &mine.id, now).unwrap().id,
        mine.id
    );
    assert_eq!(
        k.ticket(&counter_caller(), &mine.id, now).unwrap().id,
        mine.id
    );
}

#[test]
fn unknown_and_malformed_ticket_ids() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    for id in [
        "",
        "nope",
        "aaaaaaaaaaaaaaaaaaaaaaaaaa",
        "../../etc/passwd",
        "queue:demo",
    ] {
        assert_eq!(
            k.ticket(&counter_caller(), id, mon_10())
                .unwrap_err()
                .code(),
            "ticket_not_found"
        );
    }
}

// ------------------------------------------------------------------ cancel

#[test]
fn cancel_rules() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    let now = mon_10();
    let a = issue_mobile(&k, "c1", "demo", "deposit", now).unwrap();
    let b = issue_mobile(&k, "c2", "demo", "deposit", now + secs(1)).unwrap();
    let kt = issue_kiosk(&k, "demo", "deposit", now + secs(2)).unwrap();

    // Kiosks cannot cancel.
    assert_eq!(
        k.cancel(&kiosk_caller(), &kt.id, now).unwrap_err().code(),
        "forbidden"
    );

    let v = k.cancel(&mobile("c2"), &b.id, now + secs(3)).unwrap();
    assert_eq!(v.status, TicketStatus::Cancelled);
    assert_eq!((v.waiting_ahead, v.estimated_wait_s), (0, 0));
    // Cancelling again returns the cancelled ticket.
    assert_eq!(
        k.cancel(&mobile("c2"), &b.id, now + secs(4))
            .unwrap()
            .status,
        TicketStatus::Cancelled
    );
    assert_eq!(
        k.ticket(&mobile("c2"), &b.id, now).unwrap().status,
        TicketStatus::Cancelled
    );

    // A called ticket cannot be cancelled.
    let called = k
        .call_next(&counter_caller(), "demo", call("2"), now + secs(5))
        .unwrap()
        .unwrap();
    assert_eq!(called.id, a.id);
    let e = k.cancel(&mobile("c1"), &a.id, now + secs(6)).unwrap_err();
    assert_eq!((e.code(), e.status()), ("conflict", 409));
    assert!(e.to_string().contains("counter 2"), "{e}");

    // Counter staff may cancel a kiosk ticket.
    assert_eq!(
        k.cancel(&counter_caller(), &kt.id, now + secs(7))
            .unwrap()
            .status,
        TicketStatus::Cancelled
    );
    // Done tickets cannot be cancelled, even long after (from the archive).
    k.complete(&counter_caller(), "demo", &a.id, now + secs(8))
        .unwrap();
    let later = now + secs(3600);
    issue_kiosk(&k, "demo", "loan", later).unwrap();
    let e = k.cancel(&mobile("c1"), &a.id, later).unwrap_err();
    assert_eq!(e.code(), "conflict");
    assert!(e.to_string().contains("done"));
}

// ------------------------------------------------------------------ measured service times

/// Calls the oldest deposit ticket at counter 1 at `called`, completes it at
/// `called + duration`.
fn serve_deposit<S: Store>(k: &Kiosk<'_, S>, called: chrono::DateTime<chrono::Utc>, duration: i64) {
    let staff = counter_caller();
    let v = k
        .call_next(
            &staff,
            "demo",
            CallRequest {
                counter: "1".into(),
                services: Some(vec!["deposit".into()]),
            },
            called,
        )
        .unwrap()
        .expect("a deposit ticket waits");
    k.complete(&staff, "demo", &v.id, called + secs(duration))
        .unwrap();
}

/// The recorded service times of `service`, oldest first (`null` if none).
fn stored_service_times(s: &impl Store, service: &str) -> serde_json::Value {
    let Some(n) = s.get(&format!("service-time-n:demo:{service}")).unwrap() else {
        return serde_json::Value::Null;
    };
    let n: u64 = String::from_utf8(n).unwrap().parse().unwrap();
    let ring = SERVICE_TIME_SAMPLES as u64;
    (n.saturating_sub(ring)..n)
        .map(|i| {
            let v = s
                .get(&format!("service-time:demo:{service}:{}", i % ring))
                .unwrap()
                .unwrap();
            serde_json::Value::from(String::from_utf8(v).unwrap().parse::<u64>().unwrap())
        })
        .collect()
}

#[test]
fn estimates_use_the_measured_average_after_five_completions() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    let now = mon_10();
    // deposit: default 5 min, 3 counters.
    for i in 0..5 {
        issue_kiosk(&k, "demo", "deposit", now + secs(i)).unwrap();
    }
    let durations = [60, 90, 120, 150, 180]; // mean 120 s
    let mut clock = now + secs(100);
    for d in &durations[..4] {
        serve_deposit(&k, clock, *d);
        clock += secs(*d + 10);
    }
    // Four samples: still the catalog default (300 s per ticket / 3 counters).
    let x = issue_kiosk(&k, "demo", "deposit", clock).unwrap();
    let y = issue_kiosk(&k, "demo", "deposit", clock + secs(1)).unwrap();
    assert_eq!((y.waiting_ahead, y.estimated_wait_s), (2, 2 * 300 / 3));
    assert_eq!(
        k.queue("demo", clock).unwrap().services[0].estimated_wait_s,
        3 * 300 / 3
    );
    // The fifth completion switches to the measured mean.
    serve_deposit(&k, clock + secs(2), durations[4]);
    clock += secs(200);
    let x = k.ticket(&kiosk_caller(), &x.id, clock).unwrap();
    let y = k.ticket(&kiosk_caller(), &y.id, clock).unwrap();
    assert_eq!((x.waiting_ahead, x.estimated_wait_s), (0, 0));
    assert_eq!((y.waiting_ahead, y.estimated_wait_s), (1, 120 / 3));
    let z = issue_kiosk(&k, "demo", "deposit", clock).unwrap();
    assert_eq!((z.waiting_ahead, z.estimated_wait_s), (2, 2 * 120 / 3));
    let q = k.queue("demo", clock).unwrap();
    assert_eq!(
        (q.services[0].waiting, q.services[0].estimated_wait_s),
        (3, 3 * 120 / 3)
    );
    // Other services keep their defaults (loan: 15 min).
    let b1 = issue_kiosk(&k, "demo", "loan", clock).unwrap();
    let b2 = issue_kiosk(&k, "demo", "loan", clock + secs(1)).unwrap();
    assert_eq!(b1.estimated_wait_s, 0);
    assert_eq!(b2.estimated_wait_s, 900 / 3);
    assert_eq!(
        stored_service_times(&s, "deposit"),
        serde_json::json!(durations)
    );
}

#[test]
fn only_the_last_twenty_service_times_count() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    let mut clock = mon_10();
    for i in 0..25 {
        issue_kiosk(&k, "demo", "deposit", clock + secs(i)).unwrap();
    }
    clock += secs(100);
    // Five very slow ones (an hour each), then twenty of 30 s.
    for i in 0..25 {
        let d = if i < 5 { 3600 } else { 30 };
        serve_deposit(&k, clock, d);
        clock += secs(d + 1);
    }
    assert_eq!(
        stored_service_times(&s, "deposit"),
        serde_json::json!(vec![30; 20])
    );
    issue_kiosk(&k, "demo", "deposit", clock).unwrap();
    let v = issue_kiosk(&k, "demo", "deposit", clock + secs(1)).unwrap();
    assert_eq!((v.waiting_ahead, v.estimated_wait_s), (1, 30 / 3));
}

#[test]
fn no_shows_cancels_and_absurd_times_are_not_service_times() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    let staff = counter_caller();
    let mut clock = mon_10();
    for i in 0..12 {
        issue_kiosk(&k, "demo", "deposit", clock + secs(i)).unwrap();
    }
    clock += secs(100);
    // Five no-shows after a minute each.
    for _ in 0..5 {
        let v = k
            .call_next(&staff, "demo", call("1"), clock)
            .unwrap()
            .unwrap();
        k.no_show(&staff, "demo", &v.id, clock + secs(60)).unwrap();
        clock += secs(61);
    }
    // Completed instantly, and after more than four hours.
    serve_deposit(&k, clock, 0);
    clock += secs(1);
    serve_deposit(&k, clock, 4 * 3600 + 1);
    clock += secs(4 * 3600 + 2);
    // A cancelled ticket.
    let c1 = issue_kiosk(&k, "demo", "deposit", clock).unwrap();
    k.cancel(&staff, &c1.id, clock + secs(60)).unwrap();
    assert_eq!(stored_service_times(&s, "deposit"), serde_json::Value::Null);
    // Still the default; four plausible samples do not change that either.
    for d in [10, 20, 30, 40] {
        serve_deposit(&k, clock, d);
        clock += secs(d + 1);
    }
    let q = k.queue("demo", clock).unwrap();
    assert_eq!(q.services[0].waiting, 1);
    assert_eq!(q.services[0].estimated_wait_s, 300 / 3);
    // The fifth: mean of 10, 20, 30, 40 and 4 h exactly = 2900 s.
    serve_deposit(&k, clock, 4 * 3600);
    assert_eq!(
        stored_service_times(&s, "deposit"),
        serde_json::json!([10, 20, 30, 40, 14_400])
    );
    issue_kiosk(&k, "demo", "deposit", clock + secs(4 * 3600)).unwrap();
    let v = issue_kiosk(&k, "demo", "deposit", clock + secs(4 * 3600 + 1)).unwrap();
    assert_eq!((v.waiting_ahead, v.estimated_wait_s), (1, 2900 / 3));
}

#[test]
fn a_transferred_ticket_counts_for_the_service_it_was_completed_in() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    let staff = counter_caller();
    let now = mon_10();
    let a = issue_kiosk(&k, "demo", "deposit", now).unwrap();
    k.call_next(&staff, "demo", call("1"), now + secs(10))
        .unwrap()
        .unwrap();
    // Served at deposit for 5 minutes, then moved to loans.
    k.transfer(
        &staff,
        "demo",
        &a.id,
        TransferRequest {
            service: "loan".into(),
        },
        now + secs(310),
    )
    .unwrap();
    let again = k
        .call_next(&staff, "demo", call("2"), now + secs(400))
        .unwrap()
        .unwrap();
    assert_eq!(again.id, a.id);
    k.complete(&staff, "demo", &a.id, now + secs(1000)).unwrap();
    // Timed from the loan call, recorded for loans only.
    assert_eq!(stored_service_times(&s, "loan"), serde_json::json!([600]));
    assert_eq!(stored_service_times(&s, "deposit"), serde_json::Value::Null);
    // Repeating the completion records nothing more.
    k.complete(&staff, "demo", &a.id, now + secs(2000)).unwrap();
    assert_eq!(stored_service_times(&s, "loan"), serde_json::json!([600]));
}

// ------------------------------------------------------------------ queue view

#[test]
fn queue_view() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    let now = mon_10();
    let empty = k.queue("demo", now).unwrap();
    assert!(empty.open);
    assert_eq!(empty.counters_open, vec!["1", "2", "3"]);
    assert_eq!(
        empty
            .services
            .iter()
            .map(|s| (s.service.as_str(), s.code.as_str()))
            .collect::<Vec<_>>(),
        vec![("deposit", "A"), ("loan", "B"), ("fx", "C")]
    );
    assert!(empty.services.iter().all(|s| s.waiting == 0
        && s.now_serving.is_none()
        && s.last_issued.is_none()
        && s.estimated_wait_s == 0));

    for i in 0..4 {
        issue_kiosk(&k, "demo", "deposit", now + secs(i)).unwrap();
    }
    issue_kiosk(&k, "demo", "fx", now + secs(5)).unwrap();
    k.call_next(&counter_caller(), "demo", call("1"), now + secs(6))
        .unwrap();
    let q = k.queue("demo", now + secs(7)).unwrap();
    let dep = &q.services[0];
    assert_eq!(dep.waiting, 3);
    assert_eq!(dep.now_serving.as_deref(), Some("A-001"));
    assert_eq!(dep.last_issued.as_deref(), Some("A-004"));
    assert_eq!(dep.estimated_wait_s, 3 * 5 * 60 / 3);
    let fx = &q.services[2];
    assert_eq!(
        (
            fx.waiting,
            fx.now_serving.as_deref(),
            fx.last_issued.as_deref()
        ),
        (1, None, Some("C-001"))
    );
    assert_eq!(fx.estimated_wait_s, 8 * 60 / 3);
    // Serialized shape.
    let j = serde_json::to_value(&q).unwrap();
    assert_eq!(j["services"][1]["now_serving"], serde_json::Value::Null);
    assert_eq!(j["counters_open"], serde_json::json!(["1", "2", "3"]));

    // Marks are per local day: the next day shows nothing issued or served
    // yet, and yesterday's waiting tickets have expired.
    let tomorrow = now + chrono::TimeDelta::days(1);
    let q = k.queue("demo", tomorrow).unwrap();
    assert_eq!(q.services[0].last_issued, None);
    assert_eq!(q.services[0].now_serving, None);
    assert_eq!(q.services[0].waiting, 0);
}

#[test]
fn queue_view_of_a_closed_branch() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    issue_kiosk(&k, "gangnam", "deposit", mon_10()).unwrap();
    issue_kiosk(&k, "gangnam", "deposit", mon_10()).unwrap();
    k.call_next(&counter_caller(), "gangnam", call("2"), mon_10())
        .unwrap()
        .unwrap();
    // 16:30 KST: closed, counter 2 still serving.
    let q = k.queue("gangnam", t("2026-03-02T07:30:00Z")).unwrap();
    assert!(!q.open);
    assert_eq!(q.counters_open, vec!["2"]);
    assert_eq!(q.services[0].waiting, 1);
    // Counters keep calling the customers already waiting for an hour after closing.
    k.complete(
        &counter_caller(),
        "gangnam",
        &k.recall(&counter_caller(), "gangnam", "2", mon_10())
            .unwrap()
            .unwrap()
            .id,
        t("2026-03-02T07:30:00Z"),
    )
    .unwrap();
    let last = issue_kiosk(&k, "gangnam", "deposit", mon_10()).unwrap();
    assert!(
        k.call_next(
            &counter_caller(),
            "gangnam",
            call("1"),
            t("2026-03-02T07:30:01Z")
        )
        .unwrap()
        .is_some()
    );
    // At 17:00 KST the day's waiting ends: what still waits is expired.
    let end = t("2026-03-02T08:00:00Z");
    assert_eq!(k.queue("gangnam", end).unwrap().services[0].waiting, 0);
    assert!(
        k.call_next(&counter_caller(), "gangnam", call("3"), end)
            .unwrap()
            .is_none()
    );
    let v = k.ticket(&counter_caller(), &last.id, end).unwrap();
    assert_eq!(v.status, TicketStatus::Expired);
    assert_eq!(v.reason.as_deref(), Some(REASON_DAY_ENDED));
    let e = k.cancel(&counter_caller(), &last.id, end).unwrap_err();
    assert!(e.to_string().contains("business day has ended"), "{e}");
}

// ------------------------------------------------------------------ counters

#[test]
fn call_next_takes_the_oldest_across_served_services() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    let now = mon_10();
    let fx = issue_kiosk(&k, "gangnam", "fx", now).unwrap();
    let loan = issue_kiosk(&k, "gangnam", "loan", now + secs(1)).unwrap();
    let dep = issue_kiosk(&k, "gangnam", "deposit", now + secs(2)).unwrap();
    let dep2 = issue_kiosk(&k, "gangnam", "deposit", now + secs(3)).unwrap();
    let staff = counter_caller();
    // Counter 1 serves only deposits: oldest deposit.
    assert_eq!(
        k.call_next(&staff, "gangnam", call("1"), now)
            .unwrap()
            .unwrap()
            .id,
        dep.id
    );
    // Counter 2 serves deposit and fx: fx is older.
    assert_eq!(
        k.call_next(&staff, "gangnam", call("2"), now)
            .unwrap()
            .unwrap()
            .id,
        fx.id
    );
    // Counter 3 narrowed to fx: nobody waits for fx now.
    let narrowed = CallRequest {
        counter: "3".into(),
        services: Some(vec!["fx".into()]),
    };
    assert_eq!(k.call_next(&staff, "gangnam", narrowed, now).unwrap(), None);
    assert_eq!(
        k.call_next(&staff, "gangnam", call("3"), now)
            .unwrap()
            .unwrap()
            .id,
        dep2.id
    );
    assert_eq!(
        k.call_next(&staff, "gangnam", call("4"), now)
            .unwrap()
            .unwrap()
            .id,
        loan.id
    );
    // Counter 4 still serves B-001.
    let e = k.call_next(&staff, "gangnam", call("4"), now).unwrap_err();
    assert_eq!(e.code(), "conflict");
    assert!(e.to_string().contains("B-001"), "{e}");
    k.complete(&staff, "gangnam", &loan.id, now).unwrap();
    assert_eq!(
        k.call_next(&staff, "gangnam", call("4"), now).unwrap(),
        None
    );
}

#[test]
fn call_next_validation() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    let staff = counter_caller();
    let e = k
        .call_next(&staff, "gangnam", call("9"), mon_10())
        .unwrap_err();
    assert_eq!((e.code(), e.status()), ("counter_not_found", 404));
    let e = k
        .call_next(
            &staff,
            "gangnam",
            CallRequest {
                counter: "1".into(),
                services: Some(vec!["fx".into()]),
            },
            mon_10(),
        )
        .unwrap_err();
    assert_eq!(e.code(), "conflict");
    assert!(e.to_string().contains("does not serve"));
    let e = k
        .call_next(
            &staff,
            "gangnam",
            CallRequest {
                counter: "1".into(),
                services: Some(vec!["gold".into()]),
            },
            mon_10(),
        )
        .unwrap_err();
    assert_eq!(e.code(), "service_not_found");
    let e = k
        .call_next(
            &staff,
            "gangnam",
            CallRequest {
                counter: "1".into(),
                services: Some(vec![]),
            },
            mon_10(),
        )
        .unwrap_err();
    assert_eq!(e.code(), "invalid_request");
    assert_eq!(
        k.call_next(&staff, "x", call("1"), mon_10())
            .unwrap_err()
            .code(),
        "branch_not_found"
    );
    assert_eq!(
        k.recall(&staff, "gangnam", "9", mon_10())
            .unwrap_err()
            .code(),
        "counter_not_found"
    );
}

#[test]
fn recall_returns_the_called_ticket() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    let staff = counter_caller();
    assert_eq!(k.recall(&staff, "demo", "1", mon_10()).unwrap(), None);
    issue_kiosk(&k, "demo", "deposit", mon_10()).unwrap();
    let called = k
        .call_next(&staff, "demo", call("1"), mon_10() + secs(5))
        .unwrap()
        .unwrap();
    let again = k
        .recall(&staff, "demo", "1", mon_10() + secs(60))
        .unwrap()
        .unwrap();
    assert_eq!(again, called);
    assert_eq!(k.recall(&staff, "demo", "2", mon_10()).unwrap(), None);
    k.no_show(&staff, "demo", &called.id, mon_10() + secs(90))
        .unwrap();
    assert_eq!(k.recall(&staff, "demo", "1", mon_10()).unwrap(), None);
}

#[test]
fn complete_and_no_show() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    let staff = counter_caller();
    let now = mon_10();
    let a = issue_kiosk(&k, "demo", "deposit", now).unwrap();
    let b = issue_kiosk(&k, "demo", "deposit", now + secs(1)).unwrap();
    // Waiting tickets cannot be completed.
    let e = k.complete(&staff, "demo", &a.id, now).unwrap_err();
    assert_eq!(e.code(), "conflict");
    assert!(e.to_string().contains("call it first"), "{e}");
    k.call_next(&staff, "demo", call("1"), now + secs(2))
        .unwrap();
    k.call_next(&staff, "demo", call("2"), now + secs(2))
        .unwrap();
    let done = k.complete(&staff, "demo", &a.id, now + secs(3)).unwrap();
    assert_eq!(done.status, TicketStatus::Done);
    assert_eq!(done.counter.as_deref(), Some("1"));
    let ns = k.no_show(&staff, "demo", &b.id, now + secs(3)).unwrap();
    assert_eq!(ns.status, TicketStatus::NoShow);
    // Repeats are harmless; the other final status is a conflict.
    assert_eq!(
        k.complete(&staff, "demo", &a.id, now + secs(4))
            .unwrap()
            .status,
        TicketStatus::Done
    );
    assert_eq!(
        k.no_show(&staff, "demo", &a.id, now + secs(4))
            .unwrap_err()
            .code(),
        "conflict"
    );
    assert_eq!(
        k.complete(&staff, "demo", &b.id, now + secs(4))
            .unwrap_err()
            .code(),
        "conflict"
    );
    // Wrong branch or unknown id.
    assert_eq!(
        k.complete(&staff, "gangnam", &a.id, now)
            .unwrap_err()
            .code(),
        "ticket_not_found"
    );
    assert_eq!(
        k.complete(&staff, "demo", "nope", now).unwrap_err().code(),
        "ticket_not_found"
    );

    // Long after, other tickets have come and gone: the records still answer.
    let later = now + secs(3600);
    issue_kiosk(&k, "demo", "fx", later).unwrap();
    k.call_next(&staff, "demo", call("3"), later)
        .unwrap()
        .unwrap();
    assert_eq!(
        k.ticket(&staff, &a.id, later).unwrap().status,
        TicketStatus::Done
    );
    assert_eq!(
        k.ticket(&staff, &b.id, later).unwrap().status,
        TicketStatus::NoShow
    );
    assert_eq!(
        k.complete(&staff, "demo", &a.id, later).unwrap().status,
        TicketStatus::Done
    );
    assert_eq!(
        k.no_show(&staff, "demo", &a.id, later).unwrap_err().code(),
        "conflict"
    );
}

#[test]
fn transfer_keeps_number_and_place_in_time() {
    let (c, s) = setup();
    let k = Kiosk::new(&c, &s);
    let staff = counter_caller();
    let now = mon_10();
    let a1 = issue_kiosk(&k, "demo", "deposit", now).unwrap();
    let b1 = issue_kiosk(&k, "demo", "loan", now + secs(10)).unwrap();
    let b2 = issue_kiosk(&k, "demo", "loan", now + secs(20)).unwrap();
    let narrowed = |svc: &str| CallRequest {
        counter: "1".into(),
        services: Some(vec![svc.into()]),
    };
    let called = k
        .call_next(&staff, "demo", narrowed("deposit"), now + secs(30))
        .unwrap()
        .unwrap();
    assert_eq!(called.id, a1.id);
    // The deposit customer needs a loan: A-001 moves to the loan queue, ahead of B-001.
    let moved = k
        .transfer(
            &staff,
            "demo",
            &a1.id,
            TransferRequest {
                service: "loan".into(),
            },
            now + secs(40),
        )
        .unwrap();
    assert_eq!(moved.number, "A-001");
    assert_eq!(moved.service, "loan");
    assert_eq!(moved.status, TicketStatus::Waiting);
    assert_eq!(moved.counter, None);
    assert_eq!(moved.called_at, None);
    assert_eq!(moved.issued_at, now);
    assert_eq!(moved.waiting_ahead, 0);
    assert_eq!(k.ticket(&staff, &b1.id, now).unwrap().waiting_ahead, 1);
    assert_eq!(k.ticket(&staff, &b2.id, now).unwrap().waiting_ahead, 2);
    // Counter 1 is free again and the loan queue calls A-001 first.
    let order: Vec<String> = (0..3)
        .map(|i| {
            let c = format!("{}", i + 1);
            k.call_next(
                &staff,
                "demo",
                CallRequest {
                    counter: c,
                    services: Some(vec!["loan".into()]),
                },
                now + secs(50),
            )
            .unwrap()
            .unwrap()
            .number
        })
        .collect();
    assert_eq!(order, vec!["A-001", "B-001", "B-002"]);
    // Same service, done ticket, unknown service.
    let e = k
        .transfer(
            &staff,
            "demo",
            &b1.id,
            TransferRequest {
                service: "loan".into(),
            },
            now,
        )
        .unwrap_err();
    assert_eq!(e.code(), "conflict");
    k.complete(&staff, "demo", &b1.id, now + secs(60)).unwrap();
    let e = k
        .transfer(
            &staff,
            "demo",
            &b1.id,
            TransferRequest {
                service: "fx".into(),
            },
            now + secs(61),
        )
        .unwrap_err();
    assert_eq!(e.code(), "conflict");
    let e = k
        .transfer(
            &staff,
            "demo",
            &b2.id,
            TransferRequest {
                service: "gold".into(),
            },
            now,
        )
        .unwrap_err();
    assert_eq!(e.code(), "service_not_found");
    let e = k
        .transfer(
            &staff,
            "demo",
            "nope",
            TransferRequest {
                service: "fx".into(),
            },
            now,
        )
        .unwrap_err();
    assert_eq!(e.code(), "ticket_not_found");
    // Queue view: the transferred number does not change loan's last issued.
    let q = k.queue("demo", now + secs(70)).unwrap();
    assert_eq!(q.services[1].last_issued.as_deref(), Some("B-002"));
}

// ------------------------------------------------------------------ store failures

#[test]
fn store_failures_are_store_unavailable_without_details() {
    let c = Catalog::dev();
    let s = FaultyStore::default();
    s.with(|f| f.down = Some("connection refused: redis://admin:hunter2@10.0.0.5".into()));
    let k = Kiosk::new(&c, &s);
    let e = issue_kiosk(&k, "demo", "deposit", mon_10()).unwrap_err();
    assert_eq!((e.code(), e.status()), ("store_unavailable", 503));
    let body = serde_json::to_string(&e.body()).unwrap();
    assert!(
        !body.contains("hunter2") && !body.contains("10.0.0.5"),
        "{body}"
    );
    assert_eq!(
        k.queue("demo", mon_10()).unwrap_err().code(),
        "store_unavailable"
    );
}

#[test]
fn issuing_never_swaps_a_ticket_record() {
    let c = Catalog::dev();
    let s = FaultyStore::default();
    let k = Kiosk::new(&c, &s).with_max_attempts(3);
    let staff = counter_caller();
    assert_eq!(
        issue_kiosk(&k, "demo", "deposit", mon_10()).unwrap().number,
        "A-001"
    );
    // Ticket records are contended without end: counters give up with
    // `conflict`, issuers (who only create records) do not notice.
    s.with(|f| f.cas_conflict_prefix = Some("ticket:".into()));
    let e = k
        .call_next(&staff, "demo", call("1"), mon_10())
        .unwrap_err();
    assert_eq!((e.code(), e.status()), ("conflict", 409));
    let b = issue_kiosk(&k, "demo", "deposit", mon_10() + secs(1)).unwrap();
    assert_eq!((b.number.as_str(), b.waiting_ahead), ("A-002", 1));
    let m = issue_mobile(&k, "c1", "demo", "deposit", mon_10() + secs(2)).unwrap();
    assert_eq!((m.number.as_str(), m.waiting_ahead), ("A-003", 2));
    assert_eq!(k.queue("demo", mon_10()).unwrap().services[0].waiting, 3);
    s.with(|f| f.cas_conflict_prefix = None);
    // Once records can be swapped again, the first call takes the oldest.
    let called = k
        .call_next(&staff, "demo", call("1"), mon_10() + secs(3))
        .unwrap()
        .unwrap();
    assert_eq!(called.number, "A-001");
    let b = k.ticket(&staff, &b.id, mon_10() + secs(3)).unwrap();
    assert_eq!(b.waiting_ahead, 0);
    assert_eq!(
        k.ticket(&staff, &m.id, mon_10() + secs(3))
            .unwrap()
            .waiting_ahead,
        1
    );
}

#[test]
fn the_default_budget_is_256_attempts() {
    let c = Catalog::dev();
    let s = FaultyStore::default();
    let k = Kiosk::new(&c, &s);
    issue_kiosk(&k, "demo", "deposit", mon_10()).unwrap();
    s.with(|f| f.cas_conflict_prefix = Some("ticket:".into()));
    let e = k
        .call_next(&counter_caller(), "demo", call("1"), mon_10())
        .unwrap_err();
    assert_eq!(e.code(), "conflict");
    assert!(
        e.to_string()
            .contains(&format!("({DEFAULT_MAX_ATTEMPTS} attempts)")),
        "{e}"
    );
    assert_eq!(DEFAULT_MAX_ATTEMPTS, 256);
    // with_max_attempts overrides it (and never goes below 1).
    let e = Kiosk::new(&c, &s)
        .with_max_attempts(0)
        .call_next(&counter_caller(), "demo", call("1"), mon_10())
        .unwrap_err();
    assert!(e.to_string().contains("(1 attempts)"), "{e}");
}

#[test]
fn archive_failure_is_healed_by_a_read() {
    let c = Catalog::dev();
    let s = FaultyStore::default();
    let k = Kiosk::new(&c, &s);
    let staff = counter_caller();
    let a = issue_kiosk(&k, "demo", "deposit", mon_10()).unwrap();
    k.call_next(&staff, "demo", call("1"), mon_10()).unwrap();
    s.with(|f| f.set_error_prefix = Some("ticket:".into()));
    // The transition itself succeeded.
    assert_eq!(
        k.complete(&staff, "demo", &a.id, mon_10()).unwrap().status,
        TicketStatus::Done
    );
    s.with(|f| f.set_error_prefix = None);
    // A read within the retention finds it in the queue document and re-archives.
    assert_eq!(
        k.ticket(&staff, &a.id, mon_10()).unwrap().status,
        TicketStatus::Done
    );
    let rec =
        String::from_utf8(s.inner.get(&format!("ticket:{}", a.id)).unwrap().unwrap()).unwrap();
    assert!(rec.contains("\"done\""), "{rec}");
}

// ------------------------------------------------------------------ round trips

/// Counts store calls, to keep the round-trip budget honest.
#[derive(Default)]
struct CountingStore {
    inner: MemoryStore,
    calls: std::sync::Mutex<Vec<&'static str>>,
}

impl CountingStore {
    fn take(&self) -> Vec<&'static str> {
        std::mem::take(&mut self.calls.lock().unwrap())
    }
    fn log(&self, op: &'static str) {
        self.calls.lock().unwrap().push(op);
    }
}

impl Store for CountingStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.log("get");
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.log("set");
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.log("delete");
        self.inner.delete(key)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.log("increment");
        self.inner.increment(key, delta)
    }
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        self.log("cas");
        self.inner.compare_and_swap(key, expected, new)
    }
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.log("get_many");
        self.inner.get_many(keys)
    }
    fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        self.log("set_many");
        self.inner.set_many(items)
    }
}

#[test]
fn store_round_trips_per_operation() {
    let c = Catalog::dev();
    let s = CountingStore::default();
    let k = Kiosk::new(&c, &s);
    let staff = counter_caller();
    let now = mon_10();

    let a = issue_kiosk(&k, "demo", "deposit", now).unwrap();
    // Idempotency claim (lock, record + neighbouring locks, then the first
    // claimant of an epoch logs what it creates for retention and takes a
    // sweep step, then the record), the line (lane counters and service
    // times in one batch), the rate window (the first request of a window
    // also logs it and sweeps), the number, ticket record + slot, its
    // retention entry and sweep step, settling the position.
    assert_eq!(
        s.take(),
        [
            "increment",
            "get_many",
            "increment",
            "set",
            "get",
            "set",
            "set",
            "get_many",
            "increment",
            "increment",
            "set",
            "get",
            "set",
            "increment",
            "set_many",
            "increment",
            "set",
            "get",
            "set",
            "increment"
        ]
    );
    // A second later, so that `a` comes first in queue order (tickets of
    // one instant are ordered by number, then by id).
    issue_kiosk(&k, "demo", "fx", now + secs(1)).unwrap();
    assert_eq!(
        s.take(),
        [
            "increment",
            "get_many",
            "increment",
            "set",
            "get",
            "set",
            "get_many",
            "increment",
            "increment",
            "set_many",
            "increment",
            "set",
            "get",
            "increment"
        ]
    );
    issue_mobile(&k, "c1", "demo", "deposit", now).unwrap();
    // The phone's hold on the branch is a claim like an idempotency key's.
    assert_eq!(
        s.take(),
        [
            "increment",
            "get_many",
            "increment",
            "set",
            "get",
            "set",
            "get_many",
            "increment",
            "increment",
            "set",
            "get",
            "increment",
            "set_many",
            "increment",
            "set",
            "get",
            "increment"
        ]
    );

    // A ticket: its record, then its line (nobody ahead to count).
    k.ticket(&staff, &a.id, now).unwrap();
    assert_eq!(s.take(), ["get", "get_many"]);
    // The board: one batch, however long the queue.
    k.queue("demo", now).unwrap();
    assert_eq!(s.take(), ["get_many"]);

    // A call: the desk, the lines, the first window of each lane with
    // tickets (slots, then records), then desk, record, the lane's left
    // count, its head and the board's "now serving". (Which of the deposit
    // tickets issued at `now` comes first depends on their ids, drawn from
    // a counter all tests share: the one called is the one completed.)
    let called = k
        .call_next(&staff, "demo", call("1"), now)
        .unwrap()
        .unwrap();
    assert_eq!(
        s.take(),
        [
            "get",
            "get_many",
            "get_many",
            "get_many",
            "get_many",
            "get_many",
            "set",
            "cas",
            "increment",
            "set",
            "set"
        ]
    );
    k.queue("demo", now).unwrap();
    assert_eq!(s.take(), ["get_many"]);
    k.recall(&staff, "demo", "1", now).unwrap().unwrap();
    assert_eq!(s.take(), ["get", "get"]);
    k.complete(&staff, "demo", &called.id, now).unwrap();
    assert_eq!(s.take(), ["get", "cas"]);
    k.ticket(&staff, &called.id, now).unwrap();
    assert_eq!(s.take(), ["get"]);

    let b = issue_kiosk(&k, "demo", "loan", now).unwrap();
    s.take();
    // A transfer moves the ticket to the target's `moved` lane (position,
    // pending slot, retention log, settle, reserve, record), counts it out
    // of its old lane, then answers its position there.
    k.transfer(
        &staff,
        "demo",
        &b.id,
        TransferRequest {
            service: "fx".into(),
        },
        now,
    )
    .unwrap();
    assert_eq!(
        s.take(),
        [
            "get",
            "increment",
            "set",
            "increment",
            "set",
            "increment",
            "cas",
            "cas",
            "increment",
            "get_many",
            "get_many",
            "get_many"
        ]
    );
    k.cancel(&staff, &b.id, now).unwrap();
    assert_eq!(s.take(), ["get", "cas", "increment"]);

    // Nobody waiting for loans: the loan lane's window is read once, and
    // its head moves past what is gone so the next call starts there.
    let loans = CallRequest {
        counter: "2".into(),
        services: Some(vec!["loan".into()]),
    };
    assert_eq!(
        k.call_next(&staff, "demo", loans.clone(), now).unwrap(),
        None
    );
    assert_eq!(s.take(), ["get", "get_many", "get_many", "get_many", "set"]);
    assert_eq!(k.call_next(&staff, "demo", loans, now).unwrap(), None);
    assert_eq!(s.take(), ["get", "get_many"]);
}
