//! The idempotency module on its own and through core writes, over a
//! MemoryStore and over a store whose compare-and-swap on an absent key
//! overwrites (as Spin's do).

use std::collections::BTreeSet;
use std::sync::Barrier;
use std::thread;

use chrono::TimeDelta;
use kiosk_domain::idempotency::{Claim, ClaimKey, Claims, Pending, Purpose};
use kiosk_domain::*;
use serde_json::{Value, json};

use crate::common::*;

const LEASE: TimeDelta = TimeDelta::seconds(8);

fn claims<S: Store>(s: &S) -> Claims<'_, S> {
    Claims::new(s, LEASE, IDEMPOTENCY_RETENTION)
}

fn key() -> ClaimKey {
    ClaimKey::new(Purpose::CoreWrite, &kiosk_caller(), "k-1")
}

/// Claims `key()` with fingerprint `fp` at `at`, never finding a landed attempt.
fn claim<S: Store>(
    s: &S,
    fp: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<Claim<()>, DomainError> {
    claims(s).claim(&key(), fp, Value::Null, at, |_| Ok(Pending::<()>::Running))
}

fn won(c: Result<Claim<()>, DomainError>) -> kiosk_domain::idempotency::Lease {
    match c {
        Ok(Claim::Won(lease)) => lease,
        other => panic!("expected a won claim, got {other:?}"),
    }
}

fn code(c: Result<Claim<()>, DomainError>) -> String {
    match c {
        Ok(Claim::Won(_)) => "won".into(),
        Ok(Claim::Done(v)) => format!("done {v}"),
        Ok(Claim::Landed(())) => "landed".into(),
        Err(e) => e.code().into(),
    }
}

#[test]
fn the_simulated_spin_store_overwrites_on_an_absent_compare_and_swap() {
    // Why claims do not insert by compare-and-swap: here both "win".
    let s = spin_like_store();
    assert!(s.compare_and_swap("k", None, b"first").unwrap());
    assert!(s.compare_and_swap("k", None, b"second").unwrap());
    assert_eq!(s.get("k").unwrap().unwrap(), b"second");
    // On an existing value it is a real compare-and-swap.
    assert!(!s.compare_and_swap("k", Some(b"first"), b"third").unwrap());
}

#[test]
fn one_claim_wins_the_others_wait_then_replay_the_result() {
    for s in [FaultyStore::default(), spin_like_store()] {
        let lease = won(claim(&s, "fp", mon_10()));
        let e = claim(&s, "fp", mon_10() + secs(3)).unwrap_err();
        assert_eq!((e.code(), e.status()), ("idempotency_in_progress", 409));
        assert_eq!(e.retry_after_s(), Some(5), "until the lease ends");
        assert_eq!(
            code(claim(&s, "other", mon_10() + secs(3))),
            "idempotency_key_mismatch"
        );
        assert!(claims(&s).complete(lease, json!({"id": 7})).unwrap());
        assert_eq!(
            code(claim(&s, "fp", mon_10() + secs(60))),
            r#"done {"id":7}"#
        );
        assert_eq!(
            code(claim(&s, "other", mon_10() + secs(60))),
            "idempotency_key_mismatch"
        );
    }
}

#[test]
fn an_unknown_outcome_lets_the_same_request_run_again_at_once() {
    let s = spin_like_store();
    let lease = won(claim(&s, "fp", mon_10()));
    assert!(claims(&s).retry(lease).unwrap());
    assert_eq!(
        code(claim(&s, "other", mon_10() + secs(1))),
        "idempotency_key_mismatch"
    );
    let again = won(claim(&s, "fp", mon_10() + secs(1)));
    assert_eq!(
        code(claim(&s, "fp", mon_10() + secs(2))),
        "idempotency_in_progress"
    );
    assert!(claims(&s).complete(again, json!(1)).unwrap());
    assert_eq!(code(claim(&s, "fp", mon_10() + secs(3))), "done 1");
}

#[test]
fn a_released_key_is_free_for_any_body() {
    let s = spin_like_store();
    let lease = won(claim(&s, "fp", mon_10()));
    assert!(claims(&s).release(lease).unwrap());
    let _ = won(claim(&s, "another body", mon_10() + secs(1)));
}

#[test]
fn a_lapsed_lease_is_taken_over_and_the_first_request_cannot_finish() {
    let s = spin_like_store();
    let first = won(claim(&s, "fp", mon_10()));
    assert_eq!(
        code(claim(&s, "fp", mon_10() + LEASE - secs(1))),
        "idempotency_in_progress"
    );
    let second = won(claim(&s, "fp", mon_10() + LEASE));
    assert!(!claims(&s).complete(first, json!("late")).unwrap());
    assert!(claims(&s).complete(second, json!("second")).unwrap());
    assert_eq!(
        code(claim(&s, "fp", mon_10() + secs(30))),
        r#"done "second""#
    );
}

#[test]
fn records_expire_after_the_retention() {
    let s = MemoryStore::new();
    let lease = won(claim(&s, "fp", mon_10()));
    assert!(claims(&s).complete(lease, json!(1)).unwrap());
    let almost = mon_10() + IDEMPOTENCY_RETENTION - secs(1);
    assert_eq!(code(claim(&s, "other", almost)), "idempotency_key_mismatch");
    let _ = won(claim(&s, "other", mon_10() + IDEMPOTENCY_RETENTION));
}

#[test]
fn a_pending_attempt_that_landed_is_replayed_through_the_callers_check() {
    let s = MemoryStore::new();
    let c = claims(&s);
    let _lease = c
        .claim(&key(), "fp", json!({"ticket": "t-1"}), mon_10(), |_| {
            Ok(Pending::<String>::Running)
        })
        .unwrap();
    let landed = c
        .claim(
            &key(),
            "fp",
            json!({"ticket": "t-2"}),
            mon_10() + secs(1),
            |data| {
                Ok(match data["ticket"].as_str() {
                    Some(t) => Pending::Landed(t.to_owned()),
                    None => Pending::Running,
                })
            },
        )
        .unwrap();
    assert!(
        matches!(landed, Claim::Landed(ref t) if t == "t-1"),
        "{landed:?}"
    );
}

#[test]
fn a_winner_that_died_before_writing_blocks_the_key_for_at_most_two_epochs() {
    let s = spin_like_store();
    let epoch = mon_10()
        .timestamp()
        .div_euclid(CLAIM_LOCK_EPOCH.num_seconds());
    // The winner took the lock and died before writing its record.
    assert_eq!(s.increment(&key().lock(epoch), 1).unwrap(), 1);
    let e = claim(&s, "fp", mon_10()).unwrap_err();
    assert_eq!(
        (e.code(), e.retry_after_s()),
        ("idempotency_in_progress", Some(1))
    );
    // The loser gave its increment back.
    assert_eq!(s.get(&key().lock(epoch)).unwrap().unwrap(), b"1");
    // The next epoch still sees it as a neighbour; the one after does not.
    let next = mon_10() + CLAIM_LOCK_EPOCH;
    assert_eq!(code(claim(&s, "fp", next)), "idempotency_in_progress");
    assert_eq!(s.get(&key().lock(epoch + 1)).unwrap().unwrap(), b"0");
    let _ = won(claim(&s, "fp", mon_10() + CLAIM_LOCK_EPOCH * 2));
}

#[test]
fn claimants_on_both_sides_of_an_epoch_boundary_exclude_each_other() {
    let s = spin_like_store();
    let epoch = mon_10()
        .timestamp()
        .div_euclid(CLAIM_LOCK_EPOCH.num_seconds());
    // A claimant of the next epoch has incremented and not yet written.
    s.increment(&key().lock(epoch + 1), 1).unwrap();
    assert_eq!(code(claim(&s, "fp", mon_10())), "idempotency_in_progress");
    s.increment(&key().lock(epoch + 1), -1).unwrap();
    let _ = won(claim(&s, "fp", mon_10()));
}

#[test]
fn unreadable_or_newer_records_are_a_store_error_not_a_free_key() {
    let s = MemoryStore::new();
    s.set(key().record(), b"released").unwrap();
    assert_eq!(code(claim(&s, "fp", mon_10())), "store_unavailable");
    s.set(
        key().record(),
        br#"{"v":2,"fp":"fp","state":"done","at":0,"until":0}"#,
    )
    .unwrap();
    assert_eq!(code(claim(&s, "fp", mon_10())), "store_unavailable");
}

#[test]
fn sixteen_concurrent_claims_on_a_spin_like_store_have_one_winner() {
    for round in 0..20 {
        let s = spin_like_store();
        let barrier = Barrier::new(16);
        let results: Vec<String> = thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    let (s, barrier) = (&s, &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        code(claim(s, "fp", mon_10()))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners = results.iter().filter(|r| *r == "won").count();
        assert_eq!(winners, 1, "round {round}: {results:?}");
        assert!(
            results
                .iter()
                .all(|r| r == "won" || r == "idempotency_in_progress"),
            "{results:?}"
        );
    }
}

#[test]
fn concurrent_ticket_retries_on_a_spin_like_store_issue_one_ticket() {
    let c = Catalog::dev();
    let s = spin_like_store();
    let r = req("demo", "deposit", Channel::Kiosk);
    let key = IdempotencyKey::for_body("one-key", &serde_json::to_vec(&r).unwrap()).unwrap();
    let barrier = Barrier::new(8);
    let results: Vec<Result<TicketView, DomainError>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (c, s, barrier, r, key) = (&c, &s, &barrier, &r, &key);
                scope.spawn(move || {
                    let k = Kiosk::new(c, s);
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
    assert_eq!(
        s.get("lane-seq:demo:deposit:2026-03-02:main")
            .unwrap()
            .unwrap(),
        b"1"
    );
    // A retry after the dust settles replays the one ticket.
    let again = Kiosk::new(&c, &s)
        .issue_ticket(&kiosk_caller(), r, Some(key), mon_10() + secs(2), random())
        .unwrap();
    assert!(ids.contains(again.id.as_str()));
}

#[test]
fn ticket_and_core_keys_of_one_caller_do_not_collide() {
    let c = Catalog::dev();
    let s = MemoryStore::new();
    let r = req("demo", "deposit", Channel::Kiosk);
    let key = IdempotencyKey::for_body("shared", &serde_json::to_vec(&r).unwrap()).unwrap();
    Kiosk::new(&c, &s)
        .issue_ticket(&kiosk_caller(), r, Some(key), mon_10(), random())
        .unwrap();
    let write = IdempotencyKey::new(
        "shared",
        core_write_fingerprint("POST", "/transfers", "", b"{}"),
    )
    .unwrap();
    let writes = CoreWrites::new(&s, core_write_lease(std::time::Duration::from_secs(3)));
    assert!(matches!(
        writes.begin(&kiosk_caller(), &write, mon_10()).unwrap(),
        CoreWrite::Send(_)
    ));
}

fn transfer_key(body: &[u8]) -> IdempotencyKey {
    IdempotencyKey::new(
        "tr-1",
        core_write_fingerprint("POST", "/transfers", "", body),
    )
    .unwrap()
}

fn reply(status: u16) -> CoreReply {
    CoreReply {
        status,
        content_type: Some("application/json".into()),
        body: br#"{"id":"tr-1"}"#.to_vec(),
    }
}

fn send<S: Store>(
    w: &CoreWrites<'_, S>,
    body: &[u8],
    at: chrono::DateTime<chrono::Utc>,
) -> kiosk_domain::idempotency::Lease {
    match w.begin(&counter_caller(), &transfer_key(body), at).unwrap() {
        CoreWrite::Send(lease) => lease,
        CoreWrite::Replay(r) => panic!("expected to send, got a replay of {r:?}"),
    }
}

#[test]
fn a_core_write_answered_is_replayed_and_another_body_is_a_mismatch() {
    let s = spin_like_store();
    let w = CoreWrites::new(&s, core_write_lease(std::time::Duration::from_secs(3)));
    let lease = send(&w, b"{}", mon_10());
    let e = w
        .begin(&counter_caller(), &transfer_key(b"{}"), mon_10() + secs(1))
        .unwrap_err();
    assert_eq!(
        (e.code(), e.retry_after_s()),
        ("idempotency_in_progress", Some(7))
    );
    assert!(w.finish(lease, CoreOutcome::Answered(&reply(201))).unwrap());
    match w
        .begin(&counter_caller(), &transfer_key(b"{}"), mon_10() + secs(2))
        .unwrap()
    {
        CoreWrite::Replay(r) => assert_eq!(r, reply(201)),
        other => panic!("{other:?}"),
    }
    let e = w
        .begin(
            &counter_caller(),
            &transfer_key(b"{\"x\":1}"),
            mon_10() + secs(2),
        )
        .unwrap_err();
    assert_eq!((e.code(), e.status()), ("idempotency_key_mismatch", 422));
    // Keys are per caller.
    assert!(matches!(
        w.begin(&kiosk_caller(), &transfer_key(b"{}"), mon_10() + secs(2))
            .unwrap(),
        CoreWrite::Send(_)
    ));
}

#[test]
fn a_core_write_with_an_unknown_outcome_goes_to_the_core_again_with_the_same_body_only() {
    let s = MemoryStore::new();
    let w = CoreWrites::new(&s, core_write_lease(std::time::Duration::from_secs(3)));
    for outcome in [
        CoreOutcome::Unknown,
        CoreOutcome::Answered(&reply(503)),
        CoreOutcome::Answered(&reply(429)),
    ] {
        let lease = send(&w, b"{}", mon_10());
        assert!(w.finish(lease, outcome).unwrap());
        let e = w
            .begin(&counter_caller(), &transfer_key(b"{\"x\":1}"), mon_10())
            .unwrap_err();
        assert_eq!(e.code(), "idempotency_key_mismatch");
    }
    // A write that never left is forgotten: any body may use the key.
    let lease = send(&w, b"{}", mon_10());
    assert!(w.finish(lease, CoreOutcome::NotSent).unwrap());
    let lease = send(&w, b"{\"x\":1}", mon_10());
    assert!(w.finish(lease, CoreOutcome::Answered(&reply(400))).unwrap());
    assert!(matches!(
        w.begin(&counter_caller(), &transfer_key(b"{\"x\":1}"), mon_10())
            .unwrap(),
        CoreWrite::Replay(CoreReply { status: 400, .. })
    ));
}
