//! The deterministic scheduler and the store wrapper every simulated
//! request talks to.
//!
//! # One request at a time
//!
//! Each simulated request runs on its own OS thread, over its own
//! [`SimStore`]. Every store operation *parks* the thread: it sends a
//! [`Msg::Parked`] to the scheduler (the test's main thread) and blocks until
//! the scheduler sends it a [`Grant`]. The scheduler grants exactly one parked
//! request at a time and waits until that request parks again or finishes,
//! so at any moment at most one simulated request runs, and which one runs
//! next is the driver's choice (seeded PRNG, or an explicit schedule in the
//! explorer). Nothing else is shared between threads, so a seed replays the
//! same run: thread ids, OS scheduling and real time never influence it.
//!
//! # Store semantics
//!
//! The backing data is one [`MemoryStore`] (plus a write version per key, to
//! model Redis `WATCH`). What a `compare_and_swap` does on it depends on
//! [`Semantics`], modelled on how `kiosk-spin` maps the trait onto
//! `wasi:keyvalue` (`Cas::new`, optionally `cas.current()`, then
//! `atomics::swap`) and on how Spin 4.0.2's stores implement those calls
//! (`crates/key-value-spin`, `crates/key-value-redis`; see
//! /work/shared/KNOWN-TRAPS.md, "Key-value stores"):
//!
//! | semantics | `compare_and_swap(k, None, new)` | `compare_and_swap(k, Some(e), new)` |
//! | --- | --- | --- |
//! | `Exact` | `MemoryStore`: insert only if absent; one scheduling point | `MemoryStore`: write only if equal; one point |
//! | `SpinSqlite` | `Cas::new` reads nothing, `current()` is never called, so `swap` is `INSERT … ON CONFLICT DO UPDATE`: an unconditional upsert that overwrites a concurrent insert, always `Ok(true)`; one point | point 1, `current()`: `SELECT` the value and remember it; `kiosk-spin` compares it with `e` client-side (`Ok(false)` if different, no swap). Point 2, `swap`: `UPDATE … WHERE value = remembered`; 0 rows → `cas-failed` → `Ok(false)`. Correct, but other requests run between the two points |
//! | `SpinRedis` | no `current()`, so nothing is `WATCH`ed: `MULTI SET EXEC` is an unconditional `SET`, `Ok(true)`; one point | point 1, `current()`: `WATCH` + `GET`, compared with `e` client-side. Point 2, `swap`: `MULTI SET EXEC`; if the key was written by anyone since the `WATCH`, `EXEC` aborts and replies nil, which Spin reads as `()`: **reported as success (`Ok(true)`) while nothing was written** |
//!
//! `increment` is atomic in all three (SQLite: one transaction holding the
//! connection mutex; Redis: `INCRBY`), one scheduling point. SQLite stores
//! counters as 8 bytes little-endian, Redis and `MemoryStore` as decimal
//! text, and the wrapper does the same per semantics (the domain reads
//! both). `get`, `set`, `delete` are one point each.
//!
//! `get_many` and `set_many` are *not* atomic here (the trait promises no
//! atomicity, and "on error, any subset may have been written"): at each
//! grant the scheduler says how many of the remaining keys this step takes,
//! so other requests can run between the parts of one batch.
//!
//! # Faults
//!
//! A [`Grant`] can carry a [`Fault`]: the operation fails with a store error
//! without being applied (`ErrBefore`), fails after it was applied
//! (`ErrAfter`: a timeout whose write landed), or the request *crashes*: this
//! operation and every later one of that request fail without being applied
//! or scheduled (a killed host; the driver discards its response). A fault on
//! one part of a batch leaves the parts before it applied (and, for
//! `ErrAfter`, that part too).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::{self, Scope};
use std::time::Duration;

use kiosk_domain::{Catalog, Kiosk, MemoryStore, Store, StoreError};

/// How `compare_and_swap` behaves (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Semantics {
    Exact,
    SpinSqlite,
    SpinRedis,
}

impl Semantics {
    pub const ALL: [Semantics; 3] = [
        Semantics::Exact,
        Semantics::SpinSqlite,
        Semantics::SpinRedis,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Semantics::Exact => "exact",
            Semantics::SpinSqlite => "spin-sqlite",
            Semantics::SpinRedis => "spin-redis",
        }
    }

    /// The `#[test]` that runs the simulation with these semantics.
    pub fn test_name(self) -> &'static str {
        match self {
            Semantics::Exact => "sim_exact",
            Semantics::SpinSqlite => "sim_spin_sqlite",
            Semantics::SpinRedis => "sim_spin_redis",
        }
    }
}

/// The shared data: a [`MemoryStore`] and a write version per key. Only the
/// running request (or the driver, while every request is parked) touches it.
pub struct Backend {
    mem: MemoryStore,
    versions: Mutex<BTreeMap<String, u64>>,
    pub semantics: Semantics,
}

impl Backend {
    pub fn new(semantics: Semantics) -> Self {
        Backend {
            mem: MemoryStore::new(),
            versions: Mutex::new(BTreeMap::new()),
            semantics,
        }
    }

    /// Forgets everything (between the schedules of an exploration).
    pub fn clear(&self) {
        for k in self.mem.keys() {
            self.mem.delete(&k).expect("memory store");
        }
        self.versions.lock().unwrap().clear();
    }

    /// The data as it stands (for read-only checks through the public API).
    pub fn memory(&self) -> &MemoryStore {
        &self.mem
    }

    fn bump(&self, key: &str) {
        *self
            .versions
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default() += 1;
    }

    fn version(&self, key: &str) -> u64 {
        self.versions.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    fn read(&self, key: &str) -> Option<Vec<u8>> {
        self.mem.get(key).expect("memory store never fails")
    }

    fn write(&self, key: &str, value: &[u8]) {
        self.mem.set(key, value).expect("memory store never fails");
        self.bump(key);
    }

    fn remove(&self, key: &str) {
        self.mem.delete(key).expect("memory store never fails");
        self.bump(key);
    }

    fn add(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let n = match self.semantics {
            Semantics::SpinSqlite => {
                // Spin's SQLite store: 8 bytes little-endian (it panics on
                // anything else; this reports an error instead).
                let current = match self.read(key) {
                    None => 0,
                    Some(v) => i64::from_le_bytes(v.as_slice().try_into().map_err(|_| {
                        StoreError(format!("value at {key:?} is not an 8-byte counter"))
                    })?),
                };
                let n = current
                    .checked_add(delta)
                    .ok_or_else(|| StoreError("overflow".into()))?;
                self.mem.set(key, &n.to_le_bytes()).expect("memory store");
                n
            }
            Semantics::Exact | Semantics::SpinRedis => self.mem.increment(key, delta)?,
        };
        self.bump(key);
        Ok(n)
    }
}

/// Direct, atomic access for setting up directed tests (no scheduling, no
/// faults; counters in the semantics' encoding, exact compare-and-swap).
impl Store for Backend {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read(key))
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write(key, value);
        Ok(())
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.remove(key);
        Ok(())
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.add(key, delta)
    }
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        if self.read(key).as_deref() != expected {
            return Ok(false);
        }
        self.write(key, new);
        Ok(true)
    }
}

/// A read-only view for checks: reads see the backend, writes (a read that
/// repairs something, e.g. re-archiving a ticket) go to a private layer that
/// is thrown away, so checking never changes the simulated system.
pub struct Overlay<'a> {
    base: &'a MemoryStore,
    layer: RefCell<BTreeMap<String, Option<Vec<u8>>>>,
}

impl<'a> Overlay<'a> {
    pub fn new(base: &'a MemoryStore) -> Self {
        Overlay {
            base,
            layer: RefCell::new(BTreeMap::new()),
        }
    }
}

impl Store for Overlay<'_> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.layer.borrow().get(key) {
            Some(v) => Ok(v.clone()),
            None => self.base.get(key),
        }
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.layer
            .borrow_mut()
            .insert(key.to_owned(), Some(value.to_vec()));
        Ok(())
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.layer.borrow_mut().insert(key.to_owned(), None);
        Ok(())
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let current = match self.get(key)? {
            None => 0,
            Some(v) => std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .or_else(|| v.as_slice().try_into().ok().map(i64::from_le_bytes))
                .ok_or_else(|| StoreError("not a counter".into()))?,
        };
        let n = current + delta;
        self.set(key, n.to_string().as_bytes())?;
        Ok(n)
    }
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        if self.get(key)?.as_deref() != expected {
            return Ok(false);
        }
        self.set(key, new)?;
        Ok(true)
    }
}

/// The operation a request is parked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    Get,
    Set,
    Delete,
    Increment,
    /// `compare_and_swap` in one step (`Exact`, or expected = absent on Spin).
    Cas,
    /// First step of a Spin compare-and-swap: `cas.current()`.
    CasRead,
    /// Second step: `swap`.
    CasSwap,
    GetMany,
    SetMany,
}

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Set => "set",
            OpKind::Delete => "delete",
            OpKind::Increment => "increment",
            OpKind::Cas => "cas",
            OpKind::CasRead => "cas.current",
            OpKind::CasSwap => "cas.swap",
            OpKind::GetMany => "get_many",
            OpKind::SetMany => "set_many",
        }
    }
}

/// Where a request is parked.
#[derive(Debug, Clone)]
pub struct Parked {
    pub op: OpKind,
    /// The (first) key; for traces only: the harness never interprets keys.
    pub key: String,
    /// Keys of the batch not applied yet (1 for single-key operations).
    pub remaining: usize,
}

/// What happens to the granted operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    None,
    /// Store error; nothing applied.
    ErrBefore,
    /// Store error after the operation was applied ("maybe written").
    ErrAfter,
    /// The request dies here: nothing more of it is applied.
    Crash,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::ErrBefore => "error-before",
            Fault::ErrAfter => "error-after-write",
            Fault::Crash => "crash",
        }
    }
}

/// The scheduler's answer to a parked request.
#[derive(Debug, Clone, Copy)]
pub struct Grant {
    pub fault: Fault,
    /// For batches: how many of the remaining keys this step applies (≥ 1).
    pub take: usize,
}

impl Grant {
    pub const ALL: Grant = Grant {
        fault: Fault::None,
        take: usize::MAX,
    };
}

/// Store calls (trait methods) and bytes a request used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    pub ops: u32,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// How a request ended.
pub struct Finished<O> {
    /// `None` if the request panicked (the message is in `panic`).
    pub outcome: Option<O>,
    pub panic: Option<String>,
    /// It was crashed: the driver must discard `outcome`.
    pub crashed: bool,
    pub cost: Cost,
}

type AnyOutcome = Box<dyn Any + Send>;

enum Msg {
    Parked(u64, Parked),
    Finished(u64, Finished<AnyOutcome>),
}

/// The store of one simulated request.
pub struct SimStore<'env> {
    id: u64,
    backend: &'env Backend,
    to_sched: Sender<Msg>,
    grants: Receiver<Grant>,
    crashed: Cell<bool>,
    cost: Cell<Cost>,
}

fn crashed_error() -> StoreError {
    StoreError("simulated crash: the host is gone".into())
}

fn injected() -> StoreError {
    StoreError("simulated store error".into())
}

impl SimStore<'_> {
    /// Parks at `op` until granted. `Err` if this request is (or now gets) crashed.
    fn park(&self, op: OpKind, key: &str, remaining: usize) -> Result<Grant, StoreError> {
        if self.crashed.get() {
            return Err(crashed_error());
        }
        self.to_sched
            .send(Msg::Parked(
                self.id,
                Parked {
                    op,
                    key: key.to_owned(),
                    remaining,
                },
            ))
            .expect("scheduler alive");
        let grant = self.grants.recv().expect("scheduler alive");
        if grant.fault == Fault::Crash {
            self.crashed.set(true);
            return Err(crashed_error());
        }
        Ok(grant)
    }

    fn count(&self, ops: u32, read: u64, written: u64) {
        let mut c = self.cost.get();
        c.ops += ops;
        c.bytes_read += read;
        c.bytes_written += written;
        self.cost.set(c);
    }

    /// One single-key step: park, then apply `f` unless the grant says not to.
    fn single<T>(
        &self,
        op: OpKind,
        key: &str,
        f: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let grant = self.park(op, key, 1)?;
        if grant.fault == Fault::ErrBefore {
            return Err(injected());
        }
        let out = f()?;
        if grant.fault == Fault::ErrAfter {
            return Err(injected());
        }
        Ok(out)
    }
}

fn len(v: &Option<Vec<u8>>) -> u64 {
    v.as_ref().map_or(0, |v| v.len() as u64)
}

impl Store for SimStore<'_> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.count(1, 0, 0);
        let v = self.single(OpKind::Get, key, || Ok(self.backend.read(key)))?;
        self.count(0, len(&v), 0);
        Ok(v)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.count(1, 0, value.len() as u64);
        self.single(OpKind::Set, key, || {
            self.backend.write(key, value);
            Ok(())
        })
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.count(1, 0, 0);
        self.single(OpKind::Delete, key, || {
            self.backend.remove(key);
            Ok(())
        })
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.count(1, 8, 8);
        self.single(OpKind::Increment, key, || self.backend.add(key, delta))
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        self.count(1, 0, new.len() as u64);
        let backend = self.backend;
        match (backend.semantics, expected) {
            (Semantics::Exact, _) => self.single(OpKind::Cas, key, || {
                self.count(0, len(&backend.read(key)), 0);
                if backend.read(key).as_deref() != expected {
                    return Ok(false);
                }
                backend.write(key, new);
                Ok(true)
            }),
            // Never `current()`: the swap is an unconditional upsert (SQLite)
            // or an unwatched MULTI/SET/EXEC (Redis).
            (Semantics::SpinSqlite | Semantics::SpinRedis, None) => {
                self.single(OpKind::Cas, key, || {
                    backend.write(key, new);
                    Ok(true)
                })
            }
            (semantics, Some(expected)) => {
                // Step 1: cas.current() (Redis: WATCH, then GET).
                let (current, watched) = self.single(OpKind::CasRead, key, || {
                    Ok((backend.read(key), backend.version(key)))
                })?;
                self.count(0, len(&current), 0);
                if current.as_deref() != Some(expected) {
                    return Ok(false);
                }
                // Step 2: swap.
                self.single(OpKind::CasSwap, key, || match semantics {
                    Semantics::SpinSqlite => {
                        // UPDATE … WHERE value = the value current() read.
                        if backend.read(key) == current {
                            backend.write(key, new);
                            Ok(true)
                        } else {
                            Ok(false)
                        }
                    }
                    _ => {
                        // MULTI SET EXEC under WATCH: aborted if the key was
                        // written since; the nil reply reads as success.
                        if backend.version(key) == watched {
                            backend.write(key, new);
                        }
                        Ok(true)
                    }
                })
            }
        }
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.count(1, 0, 0);
        let mut out = Vec::with_capacity(keys.len());
        while out.len() < keys.len() {
            let rest = &keys[out.len()..];
            let grant = self.park(OpKind::GetMany, &rest[0], rest.len())?;
            if grant.fault == Fault::ErrBefore {
                return Err(injected());
            }
            for k in rest.iter().take(grant.take.max(1)) {
                let v = self.backend.read(k);
                self.count(0, len(&v), 0);
                out.push(v);
            }
            if grant.fault == Fault::ErrAfter {
                return Err(injected());
            }
        }
        Ok(out)
    }

    fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        self.count(1, 0, items.iter().map(|(_, v)| v.len() as u64).sum::<u64>());
        let mut done = 0;
        while done < items.len() {
            let rest = &items[done..];
            let grant = self.park(OpKind::SetMany, &rest[0].0, rest.len())?;
            if grant.fault == Fault::ErrBefore {
                return Err(injected());
            }
            for (k, v) in rest.iter().take(grant.take.max(1)) {
                self.backend.write(k, v);
                done += 1;
            }
            if grant.fault == Fault::ErrAfter {
                return Err(injected());
            }
        }
        Ok(())
    }
}

/// What a simulated request does: a domain call over its own store.
pub type Work<'env, O> = Box<dyn for<'k> FnOnce(&Kiosk<'k, SimStore<'env>>) -> O + Send + 'env>;

struct Live {
    grants: Sender<Grant>,
    parked: Parked,
}

/// Longest a request may run without parking or finishing (real time)
/// before the run is declared stuck (a deadlock in the harness).
const WATCHDOG: Duration = Duration::from_secs(300);

/// Starts requests on threads and runs them one step at a time.
pub struct Runner<'scope, 'env, O: Send + 'static> {
    scope: &'scope Scope<'scope, 'env>,
    backend: &'env Backend,
    catalog: &'env Catalog,
    to_sched: Sender<Msg>,
    from_requests: Receiver<Msg>,
    live: BTreeMap<u64, Live>,
    next_id: u64,
    _outcome: PhantomData<fn() -> O>,
}

/// What a step led to.
pub enum Step<O> {
    Parked(Parked),
    Finished(Finished<O>),
}

impl<'scope, 'env, O: Send + 'static> Runner<'scope, 'env, O> {
    pub fn new(
        scope: &'scope Scope<'scope, 'env>,
        backend: &'env Backend,
        catalog: &'env Catalog,
    ) -> Self {
        let (to_sched, from_requests) = channel();
        Runner {
            scope,
            backend,
            catalog,
            to_sched,
            from_requests,
            live: BTreeMap::new(),
            next_id: 1,
            _outcome: PhantomData,
        }
    }

    /// Ids of the requests parked now, in order.
    pub fn live(&self) -> Vec<u64> {
        self.live.keys().copied().collect()
    }

    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    pub fn parked(&self, id: u64) -> &Parked {
        &self.live[&id].parked
    }

    /// The id the next started request gets.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Starts `work` on a new thread and runs it to its first store
    /// operation (or to its end). Returns its id.
    pub fn start(&mut self, work: Work<'env, O>) -> (u64, Step<O>) {
        let id = self.next_id;
        self.next_id += 1;
        let (grant_tx, grant_rx) = channel::<Grant>();
        let to_sched = self.to_sched.clone();
        let backend = self.backend;
        let catalog = self.catalog;
        self.scope.spawn(move || {
            let store = SimStore {
                id,
                backend,
                to_sched: to_sched.clone(),
                grants: grant_rx,
                crashed: Cell::new(false),
                cost: Cell::new(Cost::default()),
            };
            let result = {
                let kiosk = Kiosk::new(catalog, &store);
                catch_unwind(AssertUnwindSafe(|| work(&kiosk)))
            };
            let (outcome, panic) = match result {
                Ok(o) => (Some(Box::new(o) as AnyOutcome), None),
                Err(p) => (
                    None,
                    Some(
                        p.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "panic".into()),
                    ),
                ),
            };
            let _ = to_sched.send(Msg::Finished(
                id,
                Finished {
                    outcome,
                    panic,
                    crashed: store.crashed.get(),
                    cost: store.cost.get(),
                },
            ));
        });
        let step = self.wait(id, grant_tx);
        (id, step)
    }

    /// Grants the parked request `id` one step.
    pub fn grant(&mut self, id: u64, grant: Grant) -> Step<O> {
        let live = self.live.remove(&id).expect("granting a parked request");
        live.grants.send(grant).expect("request thread alive");
        self.wait(id, live.grants)
    }

    /// Crashes every parked request (their threads end; results dropped).
    pub fn crash_all(&mut self) {
        for id in self.live() {
            let crash = Grant {
                fault: Fault::Crash,
                take: 1,
            };
            while let Step::Parked(_) = self.grant(id, crash) {}
        }
    }

    /// Waits until `id` (the only running request) parks or finishes.
    fn wait(&mut self, id: u64, grants: Sender<Grant>) -> Step<O> {
        match self.from_requests.recv_timeout(WATCHDOG) {
            Ok(Msg::Parked(pid, parked)) => {
                assert_eq!(pid, id, "only the granted request runs");
                self.live.insert(
                    id,
                    Live {
                        grants,
                        parked: parked.clone(),
                    },
                );
                Step::Parked(parked)
            }
            Ok(Msg::Finished(fid, f)) => {
                assert_eq!(fid, id, "only the granted request runs");
                Step::Finished(Finished {
                    outcome: f
                        .outcome
                        .map(|o| *o.downcast::<O>().expect("outcome of the runner's type")),
                    panic: f.panic,
                    crashed: f.crashed,
                    cost: f.cost,
                })
            }
            Err(e) => panic!("request {id} neither parked nor finished within {WATCHDOG:?}: {e}"),
        }
    }
}

/// Judges one explored schedule: the backend afterwards and each request's
/// outcome (`None` if it panicked).
pub type Check<'a, O> = dyn FnMut(&Backend, Vec<Option<O>>) -> Result<(), String> + 'a;

/// How an exploration went.
#[derive(Debug, Clone, Copy)]
pub struct Explored {
    pub schedules: usize,
    /// Every schedule was run (else: the first half of the budget in
    /// depth-first order, the second half at random).
    pub exhaustive: bool,
}

impl std::fmt::Display for Explored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.exhaustive {
            "all of them"
        } else {
            "half depth-first, half at random"
        };
        write!(f, "{} schedules ({how})", self.schedules)
    }
}

/// Runs the requests `make` builds concurrently under every schedule (which
/// parked request takes the next store step), without faults: a
/// depth-first enumeration of the choice points, up to half of `budget`
/// schedules; if there are more, `budget / 2` further schedules chosen at
/// random (seeded, so the same ones every time). Before each schedule the
/// backend is cleared and `setup` runs on it (directly, atomically); after
/// it `check` judges the backend and the outcomes. Returns what ran, or the
/// first failing schedule (its choices) and why.
pub fn explore<'env, O: Send + 'static>(
    backend: &'env Backend,
    catalog: &'env Catalog,
    setup: &dyn Fn(&Backend),
    make: &dyn Fn() -> Vec<Work<'env, O>>,
    check: &mut Check<'_, O>,
    budget: usize,
) -> Result<Explored, String> {
    let half = (budget / 2).max(1);
    let mut prefix: Vec<usize> = Vec::new();
    let mut count = 0;
    // Depth-first.
    loop {
        let (taken, branching) =
            run_schedule(backend, catalog, setup, make, check, &mut |i, _| {
                prefix.get(i).copied().unwrap_or(0)
            })?;
        count += 1;
        // The next schedule: bump the deepest choice that has alternatives left.
        let mut next = taken;
        loop {
            match next.pop() {
                None => {
                    return Ok(Explored {
                        schedules: count,
                        exhaustive: true,
                    });
                }
                Some(c) if c + 1 < branching[next.len()] => {
                    next.push(c + 1);
                    break;
                }
                Some(_) => {}
            }
        }
        prefix = next;
        if count >= half {
            break;
        }
    }
    // At random.
    let mut rng = crate::rng::Rng::new(0x5eed);
    for _ in 0..half {
        run_schedule(backend, catalog, setup, make, check, &mut |_, n| {
            rng.index(n)
        })?;
        count += 1;
    }
    Ok(Explored {
        schedules: count,
        exhaustive: false,
    })
}

/// One schedule of [`explore`]: `choose(i, n)` picks which of the `n`
/// parked requests goes at the `i`-th choice point. Returns the choices
/// made and how many there were at each point.
fn run_schedule<'env, O: Send + 'static>(
    backend: &'env Backend,
    catalog: &'env Catalog,
    setup: &dyn Fn(&Backend),
    make: &dyn Fn() -> Vec<Work<'env, O>>,
    check: &mut Check<'_, O>,
    choose: &mut dyn FnMut(usize, usize) -> usize,
) -> Result<(Vec<usize>, Vec<usize>), String> {
    backend.clear();
    setup(backend);
    let mut taken: Vec<usize> = Vec::new();
    let mut branching: Vec<usize> = Vec::new();
    let outcomes = thread::scope(|scope| {
        let mut runner: Runner<'_, 'env, O> = Runner::new(scope, backend, catalog);
        let works = make();
        let mut slots: Vec<Option<O>> = works.iter().map(|_| None).collect();
        let mut index = BTreeMap::new();
        for (i, work) in works.into_iter().enumerate() {
            let (id, step) = runner.start(work);
            index.insert(id, i);
            if let Step::Finished(f) = step {
                slots[i] = f.outcome;
            }
        }
        while runner.live_count() > 0 {
            let live = runner.live();
            let choice = if live.len() == 1 {
                0
            } else {
                let c = choose(taken.len(), live.len()).min(live.len() - 1);
                taken.push(c);
                branching.push(live.len());
                c
            };
            let id = live[choice];
            if let Step::Finished(f) = runner.grant(id, Grant::ALL) {
                slots[index[&id]] = f.outcome;
            }
        }
        slots
    });
    check(backend, outcomes).map_err(|e| format!("schedule {taken:?}: {e}"))?;
    Ok((taken, branching))
}
