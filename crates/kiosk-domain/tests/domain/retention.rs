//! Bounded state: what has served its retention goes, swept by the
//! requests that pass, so the store stops growing under steady traffic.

use chrono::TimeDelta;
use kiosk_domain::*;

use crate::common::*;

/// One day of a small branch: `n` kiosk tickets and one phone ticket,
/// each called and completed (or cancelled).
fn day_of_traffic(k: &Kiosk<'_, MemoryStore>, day: i64, n: usize) -> Vec<String> {
    let staff = counter_caller();
    let morning = mon_10() + TimeDelta::days(day);
    let mut ids = Vec::new();
    for i in 0..n {
        let at = morning + secs(i as i64 * 600);
        let t = issue_kiosk(k, "demo", "deposit", at).unwrap();
        let called = k.call_next(&staff, "demo", call("1"), at).unwrap().unwrap();
        k.complete(&staff, "demo", &called.id, at + secs(120))
            .unwrap();
        ids.push(t.id);
    }
    let phone = issue_mobile(k, "c1", "demo", "loan", morning).unwrap();
    k.cancel(&mobile("c1"), &phone.id, morning + secs(5))
        .unwrap();
    ids.push(phone.id);
    ids
}

#[test]
fn tickets_go_after_their_retention_and_the_store_stops_growing() {
    let c = Catalog::dev();
    let s = MemoryStore::new();
    let k = Kiosk::new(&c, &s);
    assert_eq!(c.retention().tickets, TimeDelta::days(35));
    let first = day_of_traffic(&k, 0, 5);
    let mut sizes = Vec::new();
    for day in 1..80 {
        day_of_traffic(&k, day, 5);
        sizes.push(s.keys().len());
    }
    // Day 0's tickets were swept once due: they read as unknown.
    let later = mon_10() + TimeDelta::days(80);
    for id in &first {
        assert_eq!(
            k.ticket(&counter_caller(), id, later).unwrap_err().code(),
            "ticket_not_found"
        );
    }
    // Growth stops once the first tickets fall due (day 35): from then
    // on, each day adds about what it removes.
    let at_40 = sizes[39];
    let at_79 = sizes[78];
    assert!(
        at_79 <= at_40 + at_40 / 20,
        "keys kept growing: {at_40} on day 40, {at_79} on day 79"
    );
    assert!(sizes[30] > sizes[5] * 3, "{sizes:?}");
    // Nothing of day 0 is left under any key naming its date.
    assert!(
        !s.keys().iter().any(|k| k.contains("2026-03-02")),
        "{:?}",
        s.keys()
            .iter()
            .filter(|k| k.contains("2026-03-02"))
            .collect::<Vec<_>>()
    );
}

#[test]
fn retention_is_configurable_and_checked() {
    let c = Catalog::from_json(
        r#"{"retention":{"tickets_days":7,"idempotency_hours":2},"branches":[{"id":"b","name":"B","time_zone":"Asia/Seoul","always_open":true,
        "services":[{"id":"deposit","code":"A","minutes":5}],"counters":[{"id":"1","services":["deposit"]}]}]}"#,
    )
    .unwrap();
    assert_eq!(c.retention().tickets, TimeDelta::days(7));
    assert_eq!(c.retention().idempotency, TimeDelta::hours(2));
    let e = Catalog::from_json(
        r#"{"retention":{"tickets_days":0},"branches":[{"id":"b","name":"B","time_zone":"Asia/Seoul","always_open":true,
        "services":[{"id":"deposit","code":"A","minutes":5}],"counters":[{"id":"1","services":["deposit"]}]}]}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("retention.tickets_days"), "{e}");
}

#[test]
fn a_phone_that_comes_back_keeps_its_hold_past_its_first_retention() {
    // A regular: one ticket at `demo` on day 0, another on day 30 that is
    // still waiting on day 36, when day 0's hold falls due and is swept.
    let c = Catalog::dev();
    let s = MemoryStore::new();
    let k = Kiosk::new(&c, &s);
    let day = |d: i64| mon_10() + TimeDelta::days(d);
    let first = issue_mobile(&k, "c1", "demo", "loan", day(0)).unwrap();
    k.cancel(&mobile("c1"), &first.id, day(0) + secs(5))
        .unwrap();
    let held = issue_mobile(&k, "c1", "demo", "loan", day(36) - secs(3600)).unwrap();
    // Traffic that sweeps what falls due on day 36.
    for i in 0..40 {
        let at = day(36) + secs(i * 60);
        let t = issue_kiosk(&k, "demo", "deposit", at).unwrap();
        k.cancel(&counter_caller(), &t.id, at).unwrap();
    }
    let again = issue_mobile(&k, "c1", "demo", "loan", day(36) + secs(3000)).unwrap_err();
    assert_eq!(again.code(), "already_has_ticket", "{again}");
    assert!(again.to_string().contains(&held.id), "{again}");
}
