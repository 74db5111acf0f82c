//! The issue log: tickets reach the queue document through merges, in
//! order, whatever the timing of their issuers.

use chrono::TimeDelta;
use kiosk_domain::*;

use crate::common::*;

fn doc(s: &impl Store) -> String {
    String::from_utf8(s.get("queue:demo").unwrap().unwrap()).unwrap()
}

#[test]
fn a_ticket_written_after_a_merge_passed_it_is_merged_later_in_its_place() {
    let c = Catalog::dev();
    let s = MemoryStore::new();
    let k = Kiosk::new(&c, &s);
    let staff = counter_caller();
    let now = mon_10();
    let a = issue_kiosk(&k, "demo", "deposit", now).unwrap();
    issue_kiosk(&k, "demo", "deposit", now + secs(1)).unwrap();
    // A-001's issuer is still writing when a counter calls: its slot is missing.
    let slot = "slot:demo:deposit:2026-03-02:1";
    let value = s.get(slot).unwrap().unwrap();
    s.delete(slot).unwrap();
    let first = k
        .call_next(&staff, "demo", call("1"), now + secs(2))
        .unwrap()
        .unwrap();
    assert_eq!(first.number, "A-002");
    assert!(doc(&s).contains("\"holes\""));
    // It lands; the next merge takes it in, ahead of anyone issued later.
    s.set(slot, &value).unwrap();
    let later = issue_kiosk(&k, "demo", "deposit", now + secs(3)).unwrap();
    let second = k
        .call_next(&staff, "demo", call("2"), now + secs(4))
        .unwrap()
        .unwrap();
    assert_eq!(second.id, a.id);
    assert!(!doc(&s).contains("\"holes\""));
    assert_eq!(
        k.ticket(&staff, &later.id, now + secs(4))
            .unwrap()
            .waiting_ahead,
        0
    );
}

#[test]
fn a_number_whose_ticket_never_lands_becomes_a_gap_after_the_lease() {
    let c = Catalog::dev();
    let s = FaultyStore::default();
    let k = Kiosk::new(&c, &s);
    let staff = counter_caller();
    let now = mon_10();
    s.with(|f| f.set_many_error = Some(false));
    assert_eq!(
        issue_kiosk(&k, "demo", "deposit", now).unwrap_err().code(),
        "store_unavailable"
    );
    s.with(|f| f.set_many_error = None);
    let b = issue_kiosk(&k, "demo", "deposit", now + secs(1)).unwrap();
    // The issuer cannot tell a lost number from one still being written.
    assert_eq!((b.number.as_str(), b.waiting_ahead), ("A-002", 1));
    // The board reads the log: one ticket waits.
    assert_eq!(k.queue("demo", now).unwrap().services[0].waiting, 1);
    let called = k
        .call_next(&staff, "demo", call("1"), now + secs(2))
        .unwrap()
        .unwrap();
    assert_eq!(called.id, b.id);
    assert!(doc(&s.inner).contains("\"holes\""));
    // Within the lease the number is still expected; after it, it is a gap.
    k.complete(&staff, "demo", &b.id, now + secs(60)).unwrap();
    assert!(doc(&s.inner).contains("\"holes\""));
    assert_eq!(
        k.call_next(&staff, "demo", call("1"), now + HOLE_LEASE + secs(3))
            .unwrap(),
        None
    );
    assert!(!doc(&s.inner).contains("\"holes\""));
}

#[test]
fn a_long_backlog_is_merged_in_batches_oldest_first() {
    let c = busy_catalog();
    let s = MemoryStore::new();
    let k = Kiosk::new(&c, &s);
    let staff = counter_caller();
    let now = mon_10();
    let n = MERGE_BATCH + 5;
    for i in 0..n {
        issue_kiosk(
            &k,
            "busy",
            "deposit",
            now + TimeDelta::milliseconds(i64::from(i)),
        )
        .unwrap();
    }
    let waiting =
        |k: &Kiosk<'_, MemoryStore>| k.queue("busy", now + secs(5)).unwrap().services[0].waiting;
    assert_eq!(waiting(&k), n);
    let last = format!("A-{n}");
    let board = k.queue("busy", now + secs(5)).unwrap();
    assert_eq!(
        board.services[0].last_issued.as_deref(),
        Some(last.as_str())
    );
    let first = k
        .call_next(&staff, "busy", call("1"), now + secs(5))
        .unwrap()
        .unwrap();
    assert_eq!(first.number, "A-001");
    assert_eq!(waiting(&k), n - 1);
    // The next write merges the rest.
    k.complete(&staff, "busy", &first.id, now + secs(6))
        .unwrap();
    let second = k
        .call_next(&staff, "busy", call("1"), now + secs(7))
        .unwrap()
        .unwrap();
    assert_eq!(second.number, "A-002");
    assert_eq!(waiting(&k), n - 2);
    let board = k.queue("busy", now + secs(7)).unwrap();
    assert_eq!(
        board.services[0].last_issued.as_deref(),
        Some(last.as_str())
    );
}

#[test]
fn tickets_left_from_earlier_days_are_merged_before_todays() {
    let c = Catalog::dev();
    let s = MemoryStore::new();
    let k = Kiosk::new(&c, &s);
    let staff = counter_caller();
    let monday = mon_10();
    let a1 = issue_kiosk(&k, "demo", "deposit", monday).unwrap();
    let a2 = issue_kiosk(&k, "demo", "deposit", monday + secs(1)).unwrap();
    assert_eq!(
        k.call_next(&staff, "demo", call("1"), monday + secs(2))
            .unwrap()
            .unwrap()
            .id,
        a1.id
    );
    // Issued after the last merge on Monday, then nobody calls until Tuesday.
    let a3 = issue_kiosk(&k, "demo", "deposit", monday + secs(3)).unwrap();
    let tuesday = monday + TimeDelta::days(1);
    let t1 = issue_kiosk(&k, "demo", "deposit", tuesday).unwrap();
    assert_eq!((t1.number.as_str(), t1.waiting_ahead), ("A-001", 2));
    assert_eq!(k.queue("demo", tuesday).unwrap().services[0].waiting, 3);
    k.complete(&staff, "demo", &a1.id, tuesday).unwrap();
    let mut order = Vec::new();
    for i in 0..3 {
        let t = k
            .call_next(&staff, "demo", call("1"), tuesday + secs(10 * i + 1))
            .unwrap()
            .unwrap();
        k.complete(&staff, "demo", &t.id, tuesday + secs(10 * i + 5))
            .unwrap();
        order.push(t.id);
    }
    assert_eq!(order, [a2.id, a3.id, t1.id]);
}
