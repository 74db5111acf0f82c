//! One size on one store: fill the line through the public API, let the
//! counters catch up, then measure each operation in cycles that keep the
//! line at its length.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use kiosk_domain::{
    CallRequest, Caller, Catalog, Channel, DomainError, IdempotencyKey, IssueRequest, Kiosk, Store,
    TicketView, TransferRequest,
};

use crate::store::{Counting, Tally};

pub const BRANCH: &str = "scale";
/// The service the line waits in.
pub const SERVICE: &str = "deposit";
/// The service transfers move tickets to.
pub const OTHER_SERVICE: &str = "loan";
pub const COUNTER: &str = "1";

/// The operations measured, in report order.
pub const OPERATIONS: [&str; 7] = [
    "issue",
    "ticket",
    "queue",
    "transfer",
    "cancel",
    "call_next",
    "complete",
];

/// Simulated clock: Monday 2026-03-02 10:00 in Seoul, advanced by each
/// request (1 ms per fill issue, [`STEP_MS`] per cycle request), so runs
/// are repeatable and stay within one business day.
pub struct Clock {
    base: DateTime<Utc>,
    ms: AtomicI64,
}

/// Simulated time between two requests of a measurement cycle. A cycle
/// (9 requests, 2 of them finishing a ticket) spans 3 minutes, so about
/// ten finished tickets are still in today's queue document
/// (FINISHED_RETENTION, 15 min) at any time, as at a small branch
/// finishing a ticket every minute or two; 60 cycles stay within one
/// business day.
pub const STEP_MS: i64 = 20_000;

impl Clock {
    pub fn new() -> Self {
        Self {
            base: "2026-03-02T01:00:00Z".parse().expect("valid instant"),
            ms: AtomicI64::new(0),
        }
    }

    pub fn advance(&self, ms: i64) -> DateTime<Utc> {
        let at = self.ms.fetch_add(ms, Ordering::Relaxed) + ms;
        self.base + TimeDelta::milliseconds(at)
    }
}

/// Distinct 128-bit values standing in for the host's CSPRNG (each size
/// uses a fresh store, so distinct within a process is enough).
fn random() -> [u8; 16] {
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut r = [0u8; 16];
    r[..8].copy_from_slice(&n.to_be_bytes());
    r[8..].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    r
}

/// A kiosk issue with a fresh idempotency key, as the ticket component does.
pub fn issue<S: Store>(
    kiosk: &Kiosk<'_, S>,
    caller: &Caller,
    now: DateTime<Utc>,
) -> Result<TicketView, DomainError> {
    static KEYS: AtomicU64 = AtomicU64::new(1);
    let request = IssueRequest {
        branch: BRANCH.into(),
        service: SERVICE.into(),
        channel: Channel::Kiosk,
        customer_ref: None,
    };
    let body = serde_json::to_vec(&request).expect("requests serialize");
    let key = IdempotencyKey::for_body(
        &format!("queue-scale-{}", KEYS.fetch_add(1, Ordering::Relaxed)),
        &body,
    )?;
    kiosk.issue_ticket(caller, request, Some(key), now, random())
}

/// A ticket the benchmark knows to be waiting in [`SERVICE`], in line order.
#[derive(Debug, Clone)]
struct Waiting {
    issued_at: DateTime<Utc>,
    number: u32,
    id: String,
}

impl Waiting {
    fn of(view: &TicketView) -> Self {
        let number = view
            .number
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        Self {
            issued_at: view.issued_at,
            number,
            id: view.id.clone(),
        }
    }
}

/// Limits of one size's run.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time to fill one size: issuing, and then (bounded by the same
    /// amount again) settling.
    pub fill_budget: Duration,
    pub fill_threads: usize,
    /// Settled once a transfer reads at most this many keys.
    pub settle_keys: u64,
    /// Most measurement cycles.
    pub cycles: usize,
    /// Measurement stops after this long (after at least [`MIN_CYCLES`]).
    pub sample_budget: Duration,
    /// Unmeasured cycles before measuring.
    pub warmup_cycles: usize,
}

/// Cycles measured even past the sample budget (up to 3 × the budget).
pub const MIN_CYCLES: usize = 3;

/// How often the fill reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// A settle shorter than this says nothing about how settling grows with
/// the line (it is the cost of a couple of requests).
const MEASURABLE_SETTLE_S: f64 = 0.25;

/// Share of the fill budget that issuing plus the predicted settle may take.
const PREDICTION_MARGIN: f64 = 0.9;

/// How settling is taken to grow with the line when predicting a fill.
/// Today's counters merge at most 1000 issued tickets per action, and each
/// action reads and rewrites the whole queue document: quadratic, and
/// worse on a loaded machine or on Redis with an append-only file (2.3
/// measured from 10k to 68k), so the prediction assumes 2.5.
const SETTLE_GROWTH: f64 = 2.5;

/// One measured request.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub nanos: u64,
    pub tally: Tally,
}

#[derive(Debug, Default, Clone)]
pub struct Fill {
    /// Issuing stopped before the size because settling more was predicted
    /// (from the previous size's fill) not to fit the fill budget.
    pub stopped_by_prediction: bool,
    pub issued: usize,
    pub issue_seconds: f64,
    pub issue_errors: usize,
    pub first_error: Option<String>,
    pub settle_transfers: usize,
    pub settle_seconds: f64,
    /// A transfer read at most `settle_keys` keys (the counters caught up).
    pub settled: bool,
    /// Keys read by the last settle transfer.
    pub settle_last_keys: u64,
}

#[derive(Debug)]
pub struct SizeRun {
    pub target: usize,
    /// Tickets waiting in the service when measuring began (the board's
    /// count); 0 if it was not measured.
    pub reached: u32,
    pub fill: Fill,
    pub warmup_cycles: usize,
    pub cycles: usize,
    pub measure_seconds: f64,
    /// Per operation (see [`OPERATIONS`]), its samples.
    pub samples: Vec<(&'static str, Vec<Sample>)>,
    /// `waiting_ahead` the status read reported for the ticket just issued.
    pub waiting_ahead: Vec<u32>,
    pub errors: Vec<String>,
}

impl SizeRun {
    /// The size was filled and settled as asked.
    pub fn complete(&self) -> bool {
        self.fill.issued >= self.target && self.fill.settled && self.reached > 0
    }
}

/// How long settling `x` issued tickets is predicted to take, judging by
/// the previous size's fill: growing with the line to the power
/// [`SETTLE_GROWTH`]. `None` when that fill says nothing (its settle was
/// too quick to time).
#[derive(Debug, Clone, Copy)]
struct SettlePrediction {
    issued: f64,
    seconds: f64,
}

impl SettlePrediction {
    fn from(previous: &Fill) -> Option<Self> {
        (previous.issued > 0 && previous.settle_seconds >= MEASURABLE_SETTLE_S).then_some(Self {
            issued: previous.issued as f64,
            seconds: previous.settle_seconds,
        })
    }

    fn seconds(&self, x: usize) -> f64 {
        self.seconds * (x as f64 / self.issued).powf(SETTLE_GROWTH)
    }
}

fn counter_caller() -> Caller {
    Caller::Counter { id: "staff".into() }
}

/// Fills the line to `target` (fewer if the fill budget runs out, or is
/// predicted to from `previous`, the last size's fill on this store kind),
/// settles it, and measures.
pub fn run_size<S: Store + Sync>(
    catalog: &Catalog,
    store: &Counting<S>,
    target: usize,
    previous: Option<&Fill>,
    limits: &Limits,
    log: &(dyn Fn(&str) + Sync),
) -> SizeRun {
    let clock = Clock::new();
    let kiosk = Kiosk::new(catalog, store);
    let counter = counter_caller();
    let mut fill = Fill::default();
    let prediction = previous.and_then(SettlePrediction::from);
    let goal = limits.fill_budget.as_secs_f64() * PREDICTION_MARGIN;
    let stopped_by_prediction = AtomicBool::new(false);

    // ---- issue phase: kiosk issues from several threads at once (the
    // SQLite store commits concurrent writes together).
    let started = Instant::now();
    let deadline = started + limits.fill_budget;
    let next = AtomicUsize::new(0);
    let errors = AtomicUsize::new(0);
    let first_error = Mutex::new(None::<String>);
    let mut waiting: Vec<Waiting> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..limits.fill_threads.max(1))
            .map(|t| {
                let (next, errors, first_error, clock) = (&next, &errors, &first_error, &clock);
                let stopped_by_prediction = &stopped_by_prediction;
                s.spawn(move || {
                    let kiosk = Kiosk::new(catalog, store);
                    let caller = Caller::Kiosk {
                        id: format!("fill-{t}"),
                    };
                    let mut mine = Vec::new();
                    let mut reported = Instant::now();
                    while Instant::now() < deadline && errors.load(Ordering::Relaxed) < 100 {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= target {
                            break;
                        }
                        // Stop where settling one more would not fit the
                        // budget, as far as the previous size tells.
                        if let Some(p) = prediction
                            && started.elapsed().as_secs_f64() + p.seconds(i + 1) > goal
                        {
                            stopped_by_prediction.store(true, Ordering::Relaxed);
                            break;
                        }
                        if t == 0 && reported.elapsed() >= PROGRESS_EVERY {
                            reported = Instant::now();
                            log(&format!(
                                "  ... {} issued after {:.0} s",
                                next.load(Ordering::Relaxed).min(target),
                                started.elapsed().as_secs_f64()
                            ));
                        }
                        match issue(&kiosk, &caller, clock.advance(1)) {
                            Ok(view) => mine.push(Waiting::of(&view)),
                            Err(e) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                first_error
                                    .lock()
                                    .unwrap()
                                    .get_or_insert_with(|| e.to_string());
                            }
                        }
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("fill thread panicked"))
            .collect()
    });
    waiting.sort_by(|a, b| (a.issued_at, a.number, &a.id).cmp(&(b.issued_at, b.number, &b.id)));
    fill.issued = waiting.len();
    fill.issue_seconds = started.elapsed().as_secs_f64();
    fill.issue_errors = errors.load(Ordering::Relaxed);
    fill.first_error = first_error.into_inner().unwrap();
    fill.stopped_by_prediction = stopped_by_prediction.into_inner();
    log(&format!(
        "  issued {} of {target} in {:.1} s{}",
        fill.issued,
        fill.issue_seconds,
        if fill.stopped_by_prediction {
            " (stopped: settling more is predicted not to fit the fill budget)"
        } else if fill.issued < target {
            " (fill budget spent)"
        } else {
            ""
        }
    ));

    // ---- settle phase: the counters act until they have caught up with
    // the burst. A transfer of the oldest ticket to the other service and
    // back leaves the line as it was; today's design merges up to 1000
    // issued tickets into the queue document per counter action.
    let settle_started = Instant::now();
    let settle_deadline = settle_started + limits.fill_budget;
    let mut settle_error = None;
    if let Some(x) = waiting.first().map(|w| w.id.clone()) {
        let max_transfers = 2 * (target / 200 + 10);
        let mut in_other = false;
        while fill.settle_transfers < max_transfers {
            if !in_other && Instant::now() >= settle_deadline {
                break;
            }
            let service = if in_other { SERVICE } else { OTHER_SERVICE };
            let before = store.tally();
            let result = kiosk.transfer(
                &counter,
                BRANCH,
                &x,
                TransferRequest {
                    service: service.into(),
                },
                clock.advance(1),
            );
            fill.settle_transfers += 1;
            fill.settle_last_keys = store.tally().since(before).keys;
            if let Err(e) = result {
                settle_error = Some(format!("settle transfer: {e}"));
                break;
            }
            in_other = !in_other;
            if !in_other && fill.settle_last_keys <= limits.settle_keys {
                fill.settled = true;
                break;
            }
        }
        if in_other {
            // Left in the other service: no longer in the benchmark's line.
            waiting.remove(0);
        }
    }
    fill.settle_seconds = settle_started.elapsed().as_secs_f64();
    log(&format!(
        "  settle: {} transfers in {:.1} s, {} (the last read {} keys)",
        fill.settle_transfers,
        fill.settle_seconds,
        if fill.settled {
            "caught up"
        } else {
            "NOT caught up"
        },
        fill.settle_last_keys
    ));

    let mut run = SizeRun {
        target,
        reached: 0,
        fill,
        warmup_cycles: 0,
        cycles: 0,
        measure_seconds: 0.0,
        samples: OPERATIONS.iter().map(|op| (*op, Vec::new())).collect(),
        waiting_ahead: Vec::new(),
        errors: settle_error.into_iter().collect(),
    };
    if waiting.len() < 2 {
        run.errors
            .push("fewer than 2 tickets waiting after the fill".into());
        return run;
    }
    if !run.fill.settled {
        // Today's counters cannot act on a ticket they have not merged yet
        // (transfer and cancel answer ticket_not_found): not measurable.
        run.errors.push(format!(
            "not measured: the counters had not caught up with the {} tickets issued after {:.0} s",
            run.fill.issued, run.fill.settle_seconds
        ));
        return run;
    }

    let mut cycle = Cycle {
        kiosk: &kiosk,
        store,
        clock: &clock,
        waiting,
        kiosk_caller: Caller::Kiosk { id: "k1".into() },
        counter,
    };
    for _ in 0..limits.warmup_cycles {
        if let Err(e) = cycle.run(None) {
            run.errors.push(format!("warm-up: {e}"));
            return run;
        }
        run.warmup_cycles += 1;
    }
    match kiosk.queue(BRANCH, clock.advance(STEP_MS)) {
        Ok(view) => {
            run.reached = view
                .services
                .iter()
                .find(|s| s.service == SERVICE)
                .map_or(0, |s| s.waiting);
        }
        Err(e) => run.errors.push(format!("queue: {e}")),
    }
    if run.reached as usize != cycle.waiting.len() {
        run.errors.push(format!(
            "the board counts {} waiting, the benchmark {}",
            run.reached,
            cycle.waiting.len()
        ));
    }

    let measuring = Instant::now();
    while run.cycles < limits.cycles {
        let elapsed = measuring.elapsed();
        if elapsed >= limits.sample_budget * 3
            || (run.cycles >= MIN_CYCLES && elapsed >= limits.sample_budget)
        {
            break;
        }
        if let Err(e) = cycle.run(Some(&mut run)) {
            run.errors.push(e);
            break;
        }
        run.cycles += 1;
    }
    run.measure_seconds = measuring.elapsed().as_secs_f64();
    run
}

/// One cycle: an issue, its status, the board, a transfer, a cancel, a
/// call and its completion, and two more issues. The line of [`SERVICE`]
/// is as long after it as before; the ticket transferred stays in
/// [`OTHER_SERVICE`] (one more there per cycle).
struct Cycle<'k, 'a, S: Store> {
    kiosk: &'k Kiosk<'a, Counting<S>>,
    store: &'k Counting<S>,
    clock: &'k Clock,
    /// The line's waiting tickets, oldest first.
    waiting: Vec<Waiting>,
    kiosk_caller: Caller,
    counter: Caller,
}

impl<S: Store> Cycle<'_, '_, S> {
    /// Times `f` and counts its store use into `run` (when measuring).
    fn measure<T>(
        &self,
        run: &mut Option<&mut SizeRun>,
        op: &'static str,
        f: impl FnOnce(&Kiosk<'_, Counting<S>>, DateTime<Utc>) -> Result<T, DomainError>,
    ) -> Result<T, String> {
        let now = self.clock.advance(STEP_MS);
        let before = self.store.tally();
        let started = Instant::now();
        let result = f(self.kiosk, now);
        let nanos = started.elapsed().as_nanos() as u64;
        let tally = self.store.tally().since(before);
        let value = result.map_err(|e| format!("{op}: {e}"))?;
        if let Some(run) = run {
            let samples = run
                .samples
                .iter_mut()
                .find(|(name, _)| *name == op)
                .expect("a known operation");
            samples.1.push(Sample { nanos, tally });
        }
        Ok(value)
    }

    fn run(&mut self, mut run: Option<&mut SizeRun>) -> Result<(), String> {
        // A customer takes a ticket at the back of the line and looks at it.
        let caller = self.kiosk_caller.clone();
        let a = self.measure(&mut run, "issue", |k, now| issue(k, &caller, now))?;
        let viewed = self.measure(&mut run, "ticket", |k, now| k.ticket(&caller, &a.id, now))?;
        if let Some(run) = run.as_deref_mut() {
            run.waiting_ahead.push(viewed.waiting_ahead);
        }
        self.measure(&mut run, "queue", |k, now| k.queue(BRANCH, now))?;
        // A counter moves it to the other service.
        let counter = self.counter.clone();
        self.measure(&mut run, "transfer", |k, now| {
            let request = TransferRequest {
                service: OTHER_SERVICE.into(),
            };
            k.transfer(&counter, BRANCH, &a.id, request, now)
        })?;
        // Someone in the middle of the line gives up.
        let middle = self.waiting.remove(self.waiting.len() / 2);
        self.measure(&mut run, "cancel", |k, now| {
            k.cancel(&counter, &middle.id, now)
        })?;
        // A counter calls the next customer of the line and serves them.
        let called = self.measure(&mut run, "call_next", |k, now| {
            let request = CallRequest {
                counter: COUNTER.into(),
                services: Some(vec![SERVICE.into()]),
            };
            k.call_next(&counter, BRANCH, request, now)
        })?;
        let Some(called) = called else {
            return Err("call_next: nobody waiting".into());
        };
        match self.waiting.iter().position(|w| w.id == called.id) {
            Some(i) => {
                self.waiting.remove(i);
            }
            None => return Err(format!("call_next called {}: not in line", called.number)),
        }
        self.measure(&mut run, "complete", |k, now| {
            k.complete(&counter, BRANCH, &called.id, now)
        })?;
        // Two more customers arrive: the line is as long as before.
        for _ in 0..2 {
            let t = self.measure(&mut run, "issue", |k, now| issue(k, &caller, now))?;
            self.waiting.push(Waiting::of(&t));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settling_is_predicted_from_a_timed_settle_only() {
        let previous = Fill {
            issued: 10_000,
            issue_seconds: 5.0,
            settle_seconds: 1.0,
            ..Fill::default()
        };
        let p = SettlePrediction::from(&previous).unwrap();
        assert!((p.seconds(10_000) - 1.0).abs() < 1e-9);
        assert!((p.seconds(40_000) - 32.0).abs() < 1e-9);
        let quick = Fill {
            settle_seconds: 0.01,
            ..previous
        };
        assert!(SettlePrediction::from(&quick).is_none());
    }
}
