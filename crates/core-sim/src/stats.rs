//! What reached the simulated core, as `GET /_sim/stats` reports it.
//! Requests to `/_sim/*` are never counted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Value, json};

/// Counters of the requests the core received.
#[derive(Debug, Default)]
pub struct Stats {
    received: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    transfers_executed: AtomicU64,
    replayed: AtomicU64,
    connections: AtomicU64,
    by_path: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    /// Counts a request to `path`; returns its number since the last reset
    /// and a guard that keeps it in flight until dropped.
    pub fn arrive(self: &Arc<Self>, path: &str) -> (u64, InFlight) {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
        let n = self.received.fetch_add(1, Ordering::Relaxed) + 1;
        *self.paths().entry(path.to_string()).or_default() += 1;
        (n, InFlight(self.clone()))
    }

    /// Counts a transfer actually executed.
    pub fn executed(&self) {
        self.transfers_executed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a TCP connection accepted (how well callers reuse them).
    pub fn connected(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an answer replayed for a known idempotency key.
    pub fn replayed(&self) {
        self.replayed.fetch_add(1, Ordering::Relaxed);
    }

    /// Zeros the counters. Requests still in flight stay counted in
    /// `in_flight`, which is also where `max_in_flight` starts again.
    pub fn reset(&self) {
        self.received.store(0, Ordering::Relaxed);
        self.transfers_executed.store(0, Ordering::Relaxed);
        self.replayed.store(0, Ordering::Relaxed);
        self.connections.store(0, Ordering::Relaxed);
        self.paths().clear();
        self.max_in_flight
            .store(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// The counters as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "received": self.received.load(Ordering::Relaxed),
            "in_flight": self.in_flight.load(Ordering::Relaxed),
            "max_in_flight": self.max_in_flight.load(Ordering::Relaxed),
            "transfers_executed": self.transfers_executed.load(Ordering::Relaxed),
            "replayed": self.replayed.load(Ordering::Relaxed),
            "connections": self.connections.load(Ordering::Relaxed),
            "by_path": *self.paths(),
        })
    }

    fn paths(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.by_path.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts a request in flight for as long as it lives.
#[derive(Debug)]
pub struct InFlight(Arc<Stats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_path_and_resets() {
        let stats = Arc::new(Stats::default());
        let (first, a) = stats.arrive("/health");
        let (second, b) = stats.arrive("/health");
        let (_, c) = stats.arrive("/customers/c-1");
        assert_eq!((first, second), (1, 2));
        drop((a, b));
        stats.executed();
        stats.replayed();
        stats.connected();
        assert_eq!(
            stats.to_json(),
            json!({
                "received": 3, "in_flight": 1, "max_in_flight": 3,
                "transfers_executed": 1, "replayed": 1, "connections": 1,
                "by_path": {"/health": 2, "/customers/c-1": 1},
            })
        );
        stats.reset();
        assert_eq!(
            stats.to_json(),
            json!({
                "received": 0, "in_flight": 1, "max_in_flight": 1,
                "transfers_executed": 0, "replayed": 0, "connections": 0, "by_path": {},
            })
        );
        drop(c);
        assert_eq!(stats.to_json()["in_flight"], 0);
        assert_eq!(stats.arrive("/health").0, 1);
    }
}
