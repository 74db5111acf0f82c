//! Refusing, at first use, a key-value store whose compare-and-swap cannot
//! be trusted.
//!
//! The queue's decisions rest on compare-and-swap of keys that exist
//! (`kiosk_domain`'s store layout). Spin's Redis store runs a swap as
//! `WATCH` / `MULTI` / `EXEC` and reads an aborted `EXEC` as success, so a
//! lost race is reported as won: two counters could both call one ticket.
//! Rather than serve wrongly, the app checks the store once and refuses it
//! by name. The check provokes exactly that race: it opens a swap on a
//! probe key, changes the key behind it, then swaps. An exact store
//! (kiosk-host's stores, Spin's SQLite store) refuses the swap; a store
//! that accepts it is refused for good. The verdict is kept in the store
//! (`kiosk-store-check`), so later requests pay one read.

use spin_sdk::wit::wasi::keyvalue::atomics::{self, Cas, CasError};
use spin_sdk::wit::wasi::keyvalue::store::Bucket;

/// The key holding the verdict, and the verdict of an exact store.
const VERDICT_KEY: &str = "kiosk-store-check";
const EXACT: &[u8] = b"cas-exact:1";

/// What the check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Swaps are exact.
    Exact,
    /// A swap over a changed value was reported as done: the reason, for
    /// the operator.
    Misreports(String),
    /// The store failed while checking (try again later).
    Failed(String),
}

/// Checks `bucket` (one read once it has passed); `nonce` keeps concurrent
/// first checks off each other's probe key.
pub fn check(bucket: &Bucket, nonce: [u8; 16]) -> Verdict {
    match bucket.get(VERDICT_KEY) {
        Ok(Some(v)) if v == EXACT => return Verdict::Exact,
        Ok(_) => {}
        Err(e) => return Verdict::Failed(format!("reading {VERDICT_KEY}: {e:?}")),
    }
    let probe = format!(
        "kiosk-store-check-probe:{}",
        nonce.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let verdict = provoke(bucket, &probe);
    let _ = bucket.delete(&probe);
    if verdict == Verdict::Exact {
        let _ = bucket.set(VERDICT_KEY, EXACT);
    }
    verdict
}

fn provoke(bucket: &Bucket, probe: &str) -> Verdict {
    let failed = |what: &str, e: &dyn std::fmt::Debug| Verdict::Failed(format!("{what}: {e:?}"));
    if let Err(e) = bucket.set(probe, b"a") {
        return failed("set", &e);
    }
    let cas = match Cas::new(bucket, probe) {
        Ok(cas) => cas,
        Err(e) => return failed("cas", &e),
    };
    if let Err(e) = cas.current() {
        return failed("cas current", &e);
    }
    // Someone else writes between the read and the swap.
    if let Err(e) = bucket.set(probe, b"b") {
        return failed("set", &e);
    }
    match atomics::swap(cas, b"c") {
        Err(CasError::CasFailed(_)) => Verdict::Exact,
        Err(CasError::StoreError(e)) => failed("swap", &e),
        Ok(()) => Verdict::Misreports(
            "this key-value store reported a compare-and-swap over a changed value as done \
             (Spin's Redis store does); the queue cannot run on it: use Spin's SQLite store \
             (the default) or kiosk-host's stores"
                .into(),
        ),
    }
}
