//! Threads over one MemoryStore, standing in for many component instances.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Barrier;
use std::thread;

use kiosk_domain::*;

use crate::common::*;

/// Retry budget for these tests: generous, so that starvation under heavy
/// artificial contention cannot void numbers (which would be a legal gap).
const ATTEMPTS: u32 = 1_000;

#[test]
fn sixteen_threads_issue_unique_consecutive_numbers() {
    let c = Catalog::dev();
    let s = MemoryStore::new();
    let per_thread = 10;
    let barrier = Barrier::new(16);
    let views: Vec<TicketView> = thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let (c, s, barrier) = (&c, &s, &barrier);
                scope.spawn(move || {
                    let k = Kiosk::new(c, s).with_max_attempts(ATTEMPTS);
                    barrier.wait();
                    (0..per_thread)
                        .map(|j| {
                            issue_kiosk(&k, "demo", "deposit", mon_10() + secs(i * 100 + j))
                                .unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let n = 16 * per_thread as usize;
    let numbers: BTreeSet<String> = views.iter().map(|v| v.number.clone()).collect();
    let expected: BTreeSet<String> = (1..=n as u32).map(|i| format_number('A', i)).collect();
    assert_eq!(numbers, expected);
    let ids: BTreeSet<&str> = views.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids.len(), n);
    let k = Kiosk::new(&c, &s);
    assert_eq!(
        k.queue("demo", mon_10()).unwrap().services[0].waiting,
        n as u32
    );
    assert_eq!(
        k.queue("demo", mon_10()).unwrap().services[0].last_issued,
        Some(format_number('A', n as u32))
    );
}

/// What the components do: `Kiosk::new` with the default retry budget
/// ([`DEFAULT_MAX_ATTEMPTS`]), 8 concurrent issuers on one branch. Losing
/// 256 races in a row is possible in principle but practically never
/// happens, so no number is voided.
#[test]
fn eight_issuers_with_the_default_budget_leave_no_gaps() {
    assert_eq!(DEFAULT_MAX_ATTEMPTS, 256);
    let c = Catalog::dev();
    let s = MemoryStore::new();
    let per_thread = 25;
    let barrier = Barrier::new(8);
    let views: Vec<TicketView> = thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (c, s, barrier) = (&c, &s, &barrier);
                scope.spawn(move || {
                    let k = Kiosk::new(c, s);
                    barrier.wait();
                    (0..per_thread)
                        .map(|j| {
                            issue_kiosk(&k, "demo", "deposit", mon_10() + secs(i * 100 + j))
                                .unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let n = 8 * per_thread as u32;
    let numbers: BTreeSet<String> = views.iter().map(|v| v.number.clone()).collect();
    let expected: BTreeSet<String> = (1..=n).map(|i| format_number('A', i)).collect();
    assert_eq!(numbers, expected);
    assert_eq!(
        s.get("lane-seq:demo:deposit:2026-03-02:main")
            .unwrap()
            .unwrap(),
        n.to_string().as_bytes()
    );
}

#[test]
fn four_counters_call_each_ticket_exactly_once() {
    let c = busy_catalog();
    let s = MemoryStore::new();
    let k = Kiosk::new(&c, &s);
    let services = ["deposit", "loan", "fx"];
    let issued: BTreeSet<String> = (0..120)
        .map(|i| {
            issue_kiosk(&k, "busy", services[i % 3], mon_10() + secs(i as i64))
                .unwrap()
                .id
        })
        .collect();
    let barrier = Barrier::new(4);
    let calls: Vec<(String, String)> = thread::scope(|scope| {
        let handles: Vec<_> = ["1", "2", "3", "4"]
            .into_iter()
            .map(|counter| {
                let (c, s, barrier) = (&c, &s, &barrier);
                scope.spawn(move || {
                    let k = Kiosk::new(c, s).with_max_attempts(ATTEMPTS);
                    let staff = counter_caller();
                    let mut mine = Vec::new();
                    barrier.wait();
                    while let Some(v) = k
                        .call_next(&staff, "busy", call(counter), mon_10() + secs(500))
                        .unwrap()
                    {
                        assert_eq!(v.counter.as_deref(), Some(counter));
                        k.complete(&staff, "busy", &v.id, mon_10() + secs(501))
                            .unwrap();
                        mine.push((counter.to_string(), v.id));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut times_called: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, id) in &calls {
        *times_called.entry(id.as_str()).or_default() += 1;
    }
    assert_eq!(calls.len(), issued.len(), "every ticket called once");
    assert!(times_called.values().all(|&n| n == 1));
    assert_eq!(
        times_called
            .keys()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
        issued
    );
    for id in &issued {
        assert_eq!(
            k.ticket(&counter_caller(), id, mon_10()).unwrap().status,
            TicketStatus::Done
        );
    }
}

#[test]
fn issuing_and_calling_at_the_same_time() {
    let c = busy_catalog();
    let s = MemoryStore::new();
    let barrier = Barrier::new(6);
    let (issued, called): (Vec<String>, Vec<String>) = thread::scope(|scope| {
        let issuers: Vec<_> = (0..2)
            .map(|i| {
                let (c, s, barrier) = (&c, &s, &barrier);
                scope.spawn(move || {
                    let k = Kiosk::new(c, s).with_max_attempts(ATTEMPTS);
                    barrier.wait();
                    (0..40)
                        .map(|j| {
                            issue_kiosk(&k, "busy", "deposit", mon_10() + secs(i * 100 + j))
                                .unwrap()
                                .id
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let callers: Vec<_> = ["1", "2", "3", "4"]
            .into_iter()
            .map(|counter| {
                let (c, s, barrier) = (&c, &s, &barrier);
                scope.spawn(move || {
                    let k = Kiosk::new(c, s).with_max_attempts(ATTEMPTS);
                    let staff = counter_caller();
                    barrier.wait();
                    let mut mine = Vec::new();
                    for _ in 0..200 {
                        if let Some(v) = k
                            .call_next(&staff, "busy", call(counter), mon_10())
                            .unwrap()
                        {
                            k.no_show(&staff, "busy", &v.id, mon_10()).unwrap();
                            mine.push(v.id);
                        }
                    }
                    mine
                })
            })
            .collect();
        (
            issuers
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect(),
            callers
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect(),
        )
    });
    let called_set: BTreeSet<&String> = called.iter().collect();
    assert_eq!(called_set.len(), called.len(), "no ticket called twice");
    let issued_set: BTreeSet<&String> = issued.iter().collect();
    assert!(called_set.is_subset(&issued_set));
    let k = Kiosk::new(&c, &s);
    let waiting = k.queue("busy", mon_10()).unwrap().services[0].waiting as usize;
    assert_eq!(waiting + called.len(), issued.len());
}

#[test]
fn a_phone_racing_itself_gets_one_ticket() {
    let c = Catalog::dev();
    let s = MemoryStore::new();
    let barrier = Barrier::new(8);
    let results: Vec<Result<TicketView, DomainError>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (c, s, barrier) = (&c, &s, &barrier);
                scope.spawn(move || {
                    let k = Kiosk::new(c, s).with_max_attempts(ATTEMPTS);
                    barrier.wait();
                    issue_mobile(&k, "c1", "demo", "deposit", mon_10())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: Vec<&TicketView> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(ok.len(), 1);
    // The others learn the phone holds a ticket, or, while the winner is
    // still writing it, that another request of theirs is taking one.
    for r in &results {
        if let Err(e) = r {
            assert!(
                e.code() == "already_has_ticket"
                    || (e.code() == "conflict"
                        && e.to_string().contains("another request of yours")),
                "{e:?}"
            );
        }
    }
    let k = Kiosk::new(&c, &s);
    assert_eq!(k.queue("demo", mon_10()).unwrap().services[0].waiting, 1);
}

#[test]
fn concurrent_retries_with_one_key_issue_one_ticket() {
    let c = Catalog::dev();
    let s = MemoryStore::new();
    let r = req("demo", "deposit", Channel::Kiosk);
    let key = IdempotencyKey::for_body("one-key", &serde_json::to_vec(&r).unwrap()).unwrap();
    let barrier = Barrier::new(8);
    let results: Vec<Result<TicketView, DomainError>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (c, s, barrier, r, key) = (&c, &s, &barrier, &r, &key);
                scope.spawn(move || {
                    let k = Kiosk::new(c, s).with_max_attempts(ATTEMPTS);
                    barrier.wait();
                    k.issue_ticket(
                        &kiosk_caller(),
                        r.clone(),
                        Some(key.clone()),
                        mon_10(),
                        random(),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ids: BTreeSet<&str> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|v| v.id.as_str())
        .collect();
    assert_eq!(ids.len(), 1, "{results:?}");
    for r in &results {
        if let Err(e) = r {
            assert_eq!(e.code(), "idempotency_in_progress");
        }
    }
    let k = Kiosk::new(&c, &s);
    assert_eq!(k.queue("demo", mon_10()).unwrap().services[0].waiting, 1);
    assert_eq!(
        s.get("lane-seq:demo:deposit:2026-03-02:main")
            .unwrap()
            .unwrap(),
        b"1"
    );
}

#[test]
fn cancel_racing_a_call_has_one_winner() {
    let c = Catalog::dev();
    for round in 0..20 {
        let s = MemoryStore::new();
        let k = Kiosk::new(&c, &s);
        let v = issue_mobile(&k, "c1", "demo", "deposit", mon_10()).unwrap();
        let barrier = Barrier::new(2);
        let (cancel, called) = thread::scope(|scope| {
            let a = scope.spawn(|| {
                let k = Kiosk::new(&c, &s).with_max_attempts(ATTEMPTS);
                barrier.wait();
                k.cancel(&mobile("c1"), &v.id, mon_10())
            });
            let b = scope.spawn(|| {
                let k = Kiosk::new(&c, &s).with_max_attempts(ATTEMPTS);
                barrier.wait();
                k.call_next(&counter_caller(), "demo", call("1"), mon_10())
            });
            (a.join().unwrap(), b.join().unwrap().unwrap())
        });
        match (cancel, called) {
            (Ok(c), None) => assert_eq!(c.status, TicketStatus::Cancelled),
            (Err(e), Some(t)) => {
                assert_eq!(e.code(), "conflict", "round {round}");
                assert_eq!(t.id, v.id);
            }
            other => panic!("both or neither won: {other:?}"),
        }
    }
}
