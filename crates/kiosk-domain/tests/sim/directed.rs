//! Directed tests: the known bugs of the old queue-document design, each
//! forced with a fixed sequence or by exploring every interleaving of two
//! requests ([`explore`]). Each failed on that design and passes now.

use std::cell::Cell;

use chrono::{DateTime, TimeDelta, Utc};
use kiosk_domain::{
    CallRequest, Catalog, Channel, DomainError, IdempotencyKey, IssueRequest, Kiosk, Store,
    StoreError, TicketView, ticket_id,
};

use crate::model::{Status, status_of};
use crate::sched::{Backend, Explored, Semantics, explore};
use crate::workload::{self, Action, Outcome, counter_caller, kiosk_caller, phone_caller};
use crate::world;

/// Schedules per exploration: exhaustive when the requests have fewer
/// interleavings, else half depth-first and half at random (see
/// [`explore`]). Keeps each directed test within seconds.
const BUDGET: usize = 3_000;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn random(n: u64) -> [u8; 16] {
    let mut r = [0u8; 16];
    r[..8].copy_from_slice(&n.to_be_bytes());
    r[8..].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    r
}

fn issue_request(branch: &str, service: &str, channel: Channel) -> IssueRequest {
    IssueRequest {
        branch: branch.into(),
        service: service.into(),
        channel,
        customer_ref: None,
    }
}

fn kiosk_issue<S: Store>(
    k: &Kiosk<'_, S>,
    branch: &str,
    service: &str,
    key: &str,
    n: u64,
    now: DateTime<Utc>,
) -> Result<TicketView, DomainError> {
    let r = issue_request(branch, service, Channel::Kiosk);
    let key = IdempotencyKey::for_body(key, &serde_json::to_vec(&r).unwrap()).unwrap();
    k.issue_ticket(&kiosk_caller("kiosk-1"), r, Some(key), now, random(n))
}

fn call<S: Store>(
    k: &Kiosk<'_, S>,
    branch: &str,
    counter: &str,
    now: DateTime<Utc>,
) -> Result<Option<TicketView>, DomainError> {
    k.call_next(
        &counter_caller(branch, counter),
        branch,
        CallRequest {
            counter: counter.into(),
            services: None,
        },
        now,
    )
}

/// Every counter of `branch` calls and completes until nobody is called.
/// Returns the ids served.
fn drain<S: Store>(k: &Kiosk<'_, S>, branch: &str, now: DateTime<Utc>) -> Vec<String> {
    let counters: Vec<String> = k
        .catalog()
        .branch(branch)
        .unwrap()
        .counters
        .iter()
        .map(|c| c.id.clone())
        .collect();
    let mut served = Vec::new();
    for _ in 0..10_000 {
        let mut any = false;
        for c in &counters {
            if let Some(v) = call(k, branch, c, now).unwrap() {
                k.complete(&counter_caller(branch, c), branch, &v.id, now)
                    .unwrap();
                served.push(v.id);
                any = true;
            }
        }
        if !any {
            return served;
        }
    }
    panic!("the drain does not end");
}

/// (a) A backlog of more than 1,000 tickets in one service (nobody
/// calling), then the last one is cancelled: it must be cancelled. The
/// current code merges at most `MERGE_BATCH` (1,000) numbers per document
/// write, so the last ticket is not in the document and cancel answers
/// `ticket_not_found`.
#[test]
fn backlog_over_a_thousand_then_cancel_the_last() {
    let catalog = Catalog::from_json(
        r#"{"limits":{"kiosk_tickets":{"limit":100000000,"per":"minute"}},
        "branches":[{"id":"big","name":"Big","time_zone":"Asia/Seoul","always_open":true,
        "services":[{"id":"deposit","code":"A","minutes":5,"max_waiting":100000}],
        "counters":[{"id":"1","services":["deposit"]}]}]}"#,
    )
    .unwrap();
    let store = Backend::new(Semantics::Exact);
    let k = Kiosk::new(&catalog, &store);
    let start = t("2026-03-02T01:00:00Z");
    let mut last = None;
    for i in 0..1_070u64 {
        let now = start + TimeDelta::milliseconds(i as i64 * 100);
        last = Some(kiosk_issue(&k, "big", "deposit", &format!("k{i}"), i, now).unwrap());
    }
    let last = last.unwrap();
    assert_eq!(last.number, "A-1070");
    assert_eq!(last.waiting_ahead, 1_069);
    let now = start + TimeDelta::minutes(5);
    let read = k
        .ticket(&counter_caller("big", "1"), &last.id, now)
        .unwrap();
    assert_eq!(status_of(&read), Status::Waiting);
    let cancelled = k
        .cancel(&counter_caller("big", "1"), &last.id, now)
        .unwrap_or_else(|e| panic!("cancelling the 1,070th waiting ticket: {} ({e})", e.code()));
    assert_eq!(status_of(&cancelled), Status::Cancelled);
}

/// A store whose `fail_at`-th write (set, set_many, delete, increment,
/// compare-and-swap, counted from when it was armed) fails without being
/// applied.
struct FailNthWrite<'a> {
    inner: &'a Backend,
    writes: Cell<u32>,
    fail_at: Cell<Option<u32>>,
}

impl FailNthWrite<'_> {
    fn arm(&self, n: u32) {
        self.writes.set(0);
        self.fail_at.set(Some(n));
    }

    fn write(&self) -> Result<(), StoreError> {
        let n = self.writes.get() + 1;
        self.writes.set(n);
        if self.fail_at.get() == Some(n) {
            return Err(StoreError("injected: timeout".into()));
        }
        Ok(())
    }
}

impl Store for FailNthWrite<'_> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write()?;
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.write()?;
        self.inner.delete(key)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.write()?;
        self.inner.increment(key, delta)
    }
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        self.write()?;
        self.inner.compare_and_swap(key, expected, new)
    }
    fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        self.write()?;
        self.inner.set_many(items)
    }
}

/// (b) A lost archive write: a counter completes its called ticket while the
/// store fails exactly the write after the queue-document update (the
/// archive of the final record). Completion is answered `done`; 16 minutes
/// later (the document has dropped finished tickets) the ticket must still
/// read `done`, and its phone must be free to take a new ticket. The current
/// code reads it `waiting` for good and refuses the phone with
/// `already_has_ticket` forever.
#[test]
fn lost_archive_write_after_complete() {
    let catalog = world::catalog();
    let backend = Backend::new(Semantics::Exact);
    let store = FailNthWrite {
        inner: &backend,
        writes: Cell::new(0),
        fail_at: Cell::new(None),
    };
    let k = Kiosk::new(&catalog, &store);
    let now = t("2026-03-02T03:00:00Z");
    let phone = phone_caller("cust-1");
    let mine = k
        .issue_ticket(
            &phone,
            issue_request("allday", "fx", Channel::Mobile),
            None,
            now,
            random(1),
        )
        .unwrap();
    let called = call(&k, "allday", "2", now + TimeDelta::seconds(10))
        .unwrap()
        .unwrap();
    assert_eq!(called.id, mine.id);
    store.arm(2);
    let done = k.complete(
        &counter_caller("allday", "2"),
        "allday",
        &mine.id,
        now + TimeDelta::seconds(70),
    );
    store.fail_at.set(None);
    let later = now + TimeDelta::minutes(17);
    // Other traffic writes the queue again.
    let other = kiosk_issue(&k, "allday", "fx", "other", 2, later).unwrap();
    let served = drain(&k, "allday", later);
    assert!(served.contains(&other.id));
    let read = k.ticket(&phone, &mine.id, later).unwrap();
    match &done {
        Ok(v) => {
            assert_eq!(status_of(v), Status::Done);
            assert_eq!(
                status_of(&read),
                Status::Done,
                "completed (answered done) at {}, read {} minutes later as {:?}",
                now + TimeDelta::seconds(70),
                17,
                status_of(&read)
            );
        }
        // If completing failed, the ticket may be called or done, never waiting again.
        Err(_) => assert_ne!(status_of(&read), Status::Waiting),
    }
    let again = k.issue_ticket(
        &phone,
        issue_request("allday", "fx", Channel::Mobile),
        None,
        later + TimeDelta::seconds(1),
        random(3),
    );
    if status_of(&read) == Status::Done {
        assert!(
            !matches!(&again, Err(DomainError::AlreadyHasTicket { ticket, .. }) if *ticket == mine.id),
            "the phone's finished ticket still blocks it: {again:?}"
        );
    }
}

/// (c) Midnight: a kiosk issue reads its host's clock just before local
/// midnight (day D), a counter call reads another host's clock just after
/// (day D+1), and the two run concurrently. Every interleaving is explored;
/// afterwards counters drain the branch. An issued ticket must then have
/// been served, or read `expired` (day D is over). The current code strands
/// it when the call's merge passes day D before the issue takes its number:
/// the merge moves on to D+1 and never reads day D's log again, so the
/// ticket waits forever (and the phone of such a ticket would be refused
/// for good).
#[test]
fn midnight_issue_before_call_after() {
    let catalog = world::catalog();
    let backend = Backend::new(Semantics::Exact);
    // Mon 2026-03-02 in Seoul; the branch is open 22:00-24:00 and from 00:00.
    // The last half second before issuing pauses for the day change
    // (23:59), and a counter already past midnight.
    let before = t("2026-03-02T14:58:59.500Z");
    let after = t("2026-03-02T15:00:00.500Z");
    let setup = |b: &Backend| {
        let k = Kiosk::new(&catalog, b);
        let at = t("2026-03-02T14:58:30Z");
        let v = kiosk_issue(&k, "seoul", "deposit", "setup", 1, at).unwrap();
        let c = call(&k, "seoul", "2", at).unwrap().unwrap();
        assert_eq!(c.id, v.id);
        k.complete(
            &counter_caller("seoul", "2"),
            "seoul",
            &v.id,
            at + TimeDelta::seconds(5),
        )
        .unwrap();
    };
    let issue = Action::IssueKiosk {
        kiosk: "kiosk-1".into(),
        branch: "seoul".into(),
        service: "deposit".into(),
        key: "late".into(),
        random: random(2),
    };
    let caller = Action::CallNext {
        branch: "seoul".into(),
        counter: "2".into(),
        services: None,
    };
    let new_id = ticket_id(random(2));
    let schedules = explore(
        &backend,
        &catalog,
        &setup,
        &|| {
            vec![
                workload::work(issue.clone(), before),
                workload::work(caller.clone(), after),
            ]
        },
        &mut |b, outcomes| {
            let k = Kiosk::new(&catalog, b);
            let drained_at = after + TimeDelta::seconds(5);
            let mut served = Vec::new();
            if let Some(Outcome::MaybeView(Ok(Some(v)))) = &outcomes[1] {
                k.complete(&counter_caller("seoul", "2"), "seoul", &v.id, drained_at)
                    .map_err(|e| format!("completing the called {}: {e}", v.number))?;
                served.push(v.id.clone());
            }
            served.extend(drain(&k, "seoul", drained_at));
            match &outcomes[0] {
                Some(Outcome::View(Ok(v))) => {
                    assert_eq!(v.id, new_id);
                    let read = k
                        .ticket(&counter_caller("seoul", "1"), &v.id, drained_at)
                        .map_err(|e| format!("issued ticket {} unreadable: {e}", v.number))?;
                    let status = status_of(&read);
                    if !served.contains(&v.id)
                        && status != Status::Expired
                        && status != Status::Done
                    {
                        return Err(format!(
                            "ticket {} issued at 23:58:59.5 reads {} after the counters drained the branch at 00:00:05.5: stranded",
                            v.number,
                            status.name()
                        ));
                    }
                    Ok(())
                }
                Some(Outcome::View(Err(_))) => Ok(()),
                other => Err(format!("unexpected issue outcome {other:?}")),
            }
        },
        BUDGET,
    );
    match schedules {
        Ok(n) => println!("midnight: {n}"),
        Err(e) => panic!("{e}"),
    }
}

/// (d) An idempotent replay answers the response first given, not the
/// ticket's current state: after the ticket was cancelled, a replay of the
/// issue still answers it waiting, with the original `waiting_ahead`.
#[test]
fn replay_answers_the_first_response() {
    let catalog = world::catalog();
    let store = Backend::new(Semantics::Exact);
    let k = Kiosk::new(&catalog, &store);
    let now = t("2026-03-02T03:00:00Z");
    kiosk_issue(&k, "allday", "deposit", "first", 1, now).unwrap();
    let mine = kiosk_issue(
        &k,
        "allday",
        "deposit",
        "second",
        2,
        now + TimeDelta::seconds(1),
    )
    .unwrap();
    assert_eq!(mine.waiting_ahead, 1);
    k.cancel(
        &counter_caller("allday", "1"),
        &mine.id,
        now + TimeDelta::seconds(5),
    )
    .unwrap();
    let replay = kiosk_issue(
        &k,
        "allday",
        "deposit",
        "second",
        3,
        now + TimeDelta::seconds(9),
    )
    .unwrap();
    assert_eq!(replay.id, mine.id);
    assert_eq!(
        (status_of(&replay), replay.waiting_ahead),
        (Status::Waiting, 1),
        "the replay must repeat the first response {mine:?}, got {replay:?}"
    );
    assert_eq!(replay, mine);
}

/// Two concurrent kiosk issues with one idempotency key and one body, under
/// `semantics`, every interleaving: at most one ticket exists afterwards,
/// and two successful answers name the same ticket.
fn same_key_makes_one_ticket(semantics: Semantics) -> Result<Explored, String> {
    let catalog = world::catalog();
    let backend = Backend::new(semantics);
    let now = t("2026-03-02T03:00:00Z");
    let attempt = |n: u64| Action::IssueKiosk {
        kiosk: "kiosk-1".into(),
        branch: "allday".into(),
        service: "deposit".into(),
        key: "same".into(),
        random: random(n),
    };
    let (a, b) = (attempt(1), attempt(2));
    let ids = [ticket_id(random(1)), ticket_id(random(2))];
    explore(
        &backend,
        &catalog,
        &|_| {},
        &|| {
            vec![
                workload::work(a.clone(), now),
                workload::work(b.clone(), now + TimeDelta::milliseconds(300)),
            ]
        },
        &mut |store, outcomes| {
            let k = Kiosk::new(&catalog, store);
            let found: Vec<&String> = ids
                .iter()
                .filter(|id| k.ticket(&counter_caller("allday", "1"), id, now).is_ok())
                .collect();
            if found.len() > 1 {
                return Err(format!("one key and body made {} tickets", found.len()));
            }
            let answered: Vec<&String> = outcomes
                .iter()
                .filter_map(|o| match o {
                    Some(Outcome::View(Ok(v))) => Some(&v.id),
                    _ => None,
                })
                .collect();
            if answered.len() == 2 && answered[0] != answered[1] {
                return Err("two successful answers name different tickets".into());
            }
            // Both waiting customers are served by one drain.
            let served = drain(&k, "allday", now + TimeDelta::seconds(5));
            if served.len() != found.len() {
                return Err(format!(
                    "{} tickets found, {} served",
                    found.len(),
                    served.len()
                ));
            }
            Ok(())
        },
        BUDGET,
    )
}

/// (e) SpinSqlite semantics: two concurrent issues with the same
/// Idempotency-Key and body produce one ticket.
#[test]
fn spin_sqlite_same_key_concurrent_issues_make_one_ticket() {
    let n = same_key_makes_one_ticket(Semantics::SpinSqlite).unwrap_or_else(|e| panic!("{e}"));
    println!("same key, spin-sqlite: {n}");
}

/// (e) The same under the other two semantics.
#[test]
fn exact_and_spin_redis_same_key_concurrent_issues_make_one_ticket() {
    for s in [Semantics::Exact, Semantics::SpinRedis] {
        let n = same_key_makes_one_ticket(s).unwrap_or_else(|e| panic!("{}: {e}", s.name()));
        println!("same key, {}: {n}", s.name());
    }
}

/// Two counters call concurrently at a branch whose queue was never written
/// (one ticket waiting), every interleaving: never both get the ticket.
fn first_calls_get_distinct_tickets(semantics: Semantics) -> Result<Explored, String> {
    let catalog = world::catalog();
    let backend = Backend::new(semantics);
    let now = t("2026-03-02T03:00:00Z");
    let setup = |b: &Backend| {
        let k = Kiosk::new(&catalog, b);
        kiosk_issue(&k, "allday", "fx", "only", 1, now).unwrap();
    };
    let caller = |counter: &str| Action::CallNext {
        branch: "allday".into(),
        counter: counter.into(),
        services: None,
    };
    let (one, two) = (caller("1"), caller("2"));
    explore(
        &backend,
        &catalog,
        &setup,
        &|| {
            vec![
                workload::work(one.clone(), now + TimeDelta::seconds(5)),
                workload::work(two.clone(), now + TimeDelta::seconds(5)),
            ]
        },
        &mut |_, outcomes| match (&outcomes[0], &outcomes[1]) {
            (Some(Outcome::MaybeView(Ok(Some(a)))), Some(Outcome::MaybeView(Ok(Some(b)))))
                if a.id == b.id =>
            {
                Err(format!(
                    "counters 1 and 2 were both answered ticket {} ({})",
                    a.number, a.id
                ))
            }
            _ => Ok(()),
        },
        BUDGET,
    )
}

/// Control: with a correct compare-and-swap the first calls never share a ticket.
#[test]
fn exact_first_calls_get_distinct_tickets() {
    let n = first_calls_get_distinct_tickets(Semantics::Exact).unwrap_or_else(|e| panic!("{e}"));
    println!("first calls, exact: {n}");
}

/// Found by the simulation (invariant 3 under Spin semantics): the first
/// write of a branch's queue document is a compare-and-swap against
/// "absent", which Spin's stores perform as an unconditional upsert. Two
/// counters calling at once on a branch whose document does not exist yet
/// both merge the issue log, both call the oldest ticket, and both writes
/// "succeed": two counters hold one customer.
#[test]
fn spin_sqlite_first_calls_get_distinct_tickets() {
    let n =
        first_calls_get_distinct_tickets(Semantics::SpinSqlite).unwrap_or_else(|e| panic!("{e}"));
    println!("first calls, spin-sqlite: {n}");
}
