//! A circuit breaker per destination: closed → open after consecutive
//! failures or a failure ratio over a sliding window; open → half-open after
//! a cool-down, when one probe call decides (success closes, failure
//! reopens). While open, calls fail at once without touching the destination.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::BreakerSettings;

/// Buckets of the sliding window.
const BUCKETS: usize = 10;

/// The breaker of one destination.
#[derive(Debug)]
pub struct Breaker {
    destination: String,
    settings: BreakerSettings,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    mode: Mode,
    consecutive_failures: u32,
    /// `(bucket start, successes, failures)`, oldest first.
    window: [(Option<Instant>, u32, u32); BUCKETS],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// Leave to call, as the breaker decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The circuit is closed.
    Normal,
    /// The one call that decides whether a half-open circuit closes.
    Probe,
}

/// How a call ended, for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    Success,
    Failure,
    /// Abandoned by the caller before an answer: says nothing about the destination.
    Abandoned,
}

impl Breaker {
    /// A closed breaker for `destination`.
    pub fn new(destination: String, settings: BreakerSettings) -> Self {
        Self {
            destination,
            settings,
            state: Mutex::new(State {
                mode: Mode::Closed,
                consecutive_failures: 0,
                window: [(None, 0, 0); BUCKETS],
            }),
        }
    }

    /// Whether a call may go now; `Err(seconds)` until it may be tried again.
    pub fn admit(&self, now: Instant) -> Result<Admission, u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.mode {
            Mode::Closed => Ok(Admission::Normal),
            Mode::Open { until } if now < until => Err(ceil_secs(until - now)),
            Mode::Open { .. } => {
                tracing::info!(destination = %self.destination, "circuit half-open: one probe call goes through");
                state.mode = Mode::HalfOpen { probing: true };
                Ok(Admission::Probe)
            }
            Mode::HalfOpen { probing: true } => Err(1),
            Mode::HalfOpen { probing: false } => {
                state.mode = Mode::HalfOpen { probing: true };
                Ok(Admission::Probe)
            }
        }
    }

    /// Records how an admitted call ended.
    pub fn record(&self, admission: Admission, result: CallResult, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if admission == Admission::Probe {
            match result {
                CallResult::Success => {
                    tracing::info!(destination = %self.destination, "circuit closed: the probe call succeeded");
                    state.mode = Mode::Closed;
                    state.consecutive_failures = 0;
                    state.window = [(None, 0, 0); BUCKETS];
                }
                CallResult::Failure => {
                    tracing::warn!(
                        destination = %self.destination,
                        cool_down_ms = self.settings.cool_down.as_millis() as u64,
                        "circuit reopened: the probe call failed"
                    );
                    state.mode = Mode::Open {
                        until: now + self.settings.cool_down,
                    };
                }
                CallResult::Abandoned => state.mode = Mode::HalfOpen { probing: false },
            }
            return;
        }
        if state.mode != Mode::Closed {
            // A late answer of a call admitted before the circuit opened.
            return;
        }
        let bucket = self.bucket(&mut state, now);
        match result {
            CallResult::Success => {
                state.consecutive_failures = 0;
                state.window[bucket].1 += 1;
            }
            CallResult::Failure => {
                state.consecutive_failures += 1;
                state.window[bucket].2 += 1;
            }
            CallResult::Abandoned => return,
        }
        let (calls, failures) = state
            .window
            .iter()
            .fold((0, 0), |(c, f), (_, ok, bad)| (c + ok + bad, f + bad));
        let by_count = state.consecutive_failures >= self.settings.consecutive_failures.max(1);
        let by_ratio = calls >= self.settings.min_calls.max(1)
            && f64::from(failures) >= self.settings.failure_ratio * f64::from(calls);
        if by_count || by_ratio {
            tracing::warn!(
                destination = %self.destination,
                consecutive_failures = state.consecutive_failures,
                window_calls = calls,
                window_failures = failures,
                cool_down_ms = self.settings.cool_down.as_millis() as u64,
                "circuit opened: calls fail at once until the cool-down ends"
            );
            state.mode = Mode::Open {
                until: now + self.settings.cool_down,
            };
        }
    }

    /// Whether the circuit is open or half-open.
    pub fn is_open(&self) -> bool {
        !matches!(
            self.state.lock().unwrap_or_else(|p| p.into_inner()).mode,
            Mode::Closed
        )
    }

    /// The window bucket for `now`, recycling buckets that fell out of the window.
    fn bucket(&self, state: &mut State, now: Instant) -> usize {
        let width = (self.settings.window / BUCKETS as u32).max(Duration::from_millis(1));
        for slot in state.window.iter_mut() {
            if slot
                .0
                .is_some_and(|start| now.duration_since(start) >= self.settings.window)
            {
                *slot = (None, 0, 0);
            }
        }
        if let Some(index) = state.window.iter().position(|slot| {
            slot.0
                .is_some_and(|start| now.duration_since(start) < width)
        }) {
            return index;
        }
        // A new bucket in the oldest (or an empty) place.
        let index = state
            .window
            .iter()
            .enumerate()
            .min_by_key(|(_, slot)| slot.0)
            .map_or(0, |(i, _)| i);
        state.window[index] = (Some(now), 0, 0);
        index
    }
}

fn ceil_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(
            "http://core:80".into(),
            BreakerSettings {
                consecutive_failures: 3,
                failure_ratio: 0.5,
                min_calls: 10,
                window: Duration::from_secs(10),
                cool_down: Duration::from_secs(5),
            },
        )
    }

    fn call(b: &Breaker, result: CallResult, now: Instant) {
        let admission = b.admit(now).expect("admitted");
        b.record(admission, result, now);
    }

    #[test]
    fn consecutive_failures_open_it_and_a_probe_closes_it() {
        let b = breaker();
        let t = Instant::now();
        call(&b, CallResult::Failure, t);
        call(&b, CallResult::Failure, t);
        call(&b, CallResult::Success, t);
        call(&b, CallResult::Failure, t);
        call(&b, CallResult::Failure, t);
        assert!(!b.is_open(), "a success in between resets the count");
        call(&b, CallResult::Failure, t);
        assert!(b.is_open());
        assert_eq!(b.admit(t + Duration::from_millis(1500)), Err(4));
        let later = t + Duration::from_secs(5);
        assert_eq!(b.admit(later), Ok(Admission::Probe));
        assert_eq!(b.admit(later), Err(1), "one probe at a time");
        b.record(Admission::Probe, CallResult::Success, later);
        assert!(!b.is_open());
        assert_eq!(b.admit(later), Ok(Admission::Normal));
    }

    #[test]
    fn a_failed_probe_reopens_and_an_abandoned_one_lets_another_try() {
        let b = breaker();
        let t = Instant::now();
        for _ in 0..3 {
            call(&b, CallResult::Failure, t);
        }
        let t = t + Duration::from_secs(6);
        assert_eq!(b.admit(t), Ok(Admission::Probe));
        b.record(Admission::Probe, CallResult::Abandoned, t);
        assert_eq!(b.admit(t), Ok(Admission::Probe));
        b.record(Admission::Probe, CallResult::Failure, t);
        assert_eq!(b.admit(t), Err(5));
    }

    #[test]
    fn a_failure_ratio_over_the_window_opens_it() {
        let b = breaker();
        let t = Instant::now();
        for i in 0..10 {
            let result = if i % 2 == 0 {
                CallResult::Failure
            } else {
                CallResult::Success
            };
            call(&b, result, t + Duration::from_millis(i * 100));
        }
        assert!(b.is_open(), "5 failures in 10 calls");
    }

    #[test]
    fn old_failures_leave_the_window() {
        let b = breaker();
        let t = Instant::now();
        for i in 0..9 {
            let result = if i % 3 == 0 {
                CallResult::Failure
            } else {
                CallResult::Success
            };
            call(&b, result, t);
        }
        // 20 s later the earlier calls no longer count.
        let later = t + Duration::from_secs(20);
        for _ in 0..9 {
            call(&b, CallResult::Success, later);
        }
        call(&b, CallResult::Failure, later);
        assert!(!b.is_open());
    }
}
