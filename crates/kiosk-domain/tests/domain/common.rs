//! Fixtures shared by the test modules.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};
use kiosk_domain::*;

pub fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// Monday 2026-03-02 10:00 in Seoul.
pub fn mon_10() -> DateTime<Utc> {
    t("2026-03-02T01:00:00Z")
}

pub fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

pub fn kiosk_caller() -> Caller {
    Caller::Kiosk { id: "k1".into() }
}

pub fn counter_caller() -> Caller {
    Caller::Counter { id: "staff".into() }
}

pub fn mobile(customer: &str) -> Caller {
    Caller::Mobile {
        customer_ref: customer.into(),
    }
}

pub fn req(branch: &str, service: &str, channel: Channel) -> IssueRequest {
    IssueRequest {
        branch: branch.into(),
        service: service.into(),
        channel,
        customer_ref: None,
    }
}

pub fn call(counter: &str) -> CallRequest {
    CallRequest {
        counter: counter.into(),
        services: None,
    }
}

static RANDOM: AtomicU64 = AtomicU64::new(1);

/// Distinct 128-bit values (a stand-in for the host's CSPRNG).
pub fn random() -> [u8; 16] {
    let n = RANDOM.fetch_add(1, Ordering::Relaxed);
    let mut r = [0u8; 16];
    r[..8].copy_from_slice(&n.to_be_bytes());
    r[8..].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    r
}

/// A fresh idempotency key fingerprinting the request.
pub fn fresh_key(request: &IssueRequest) -> IdempotencyKey {
    let n = RANDOM.fetch_add(1, Ordering::Relaxed);
    IdempotencyKey::for_body(&format!("key-{n}"), &serde_json::to_vec(request).unwrap()).unwrap()
}

pub fn issue_kiosk<S: Store>(
    k: &Kiosk<'_, S>,
    branch: &str,
    service: &str,
    now: DateTime<Utc>,
) -> Result<TicketView, DomainError> {
    let r = req(branch, service, Channel::Kiosk);
    let key = fresh_key(&r);
    k.issue_ticket(&kiosk_caller(), r, Some(key), now, random())
}

pub fn issue_mobile<S: Store>(
    k: &Kiosk<'_, S>,
    customer: &str,
    branch: &str,
    service: &str,
    now: DateTime<Utc>,
) -> Result<TicketView, DomainError> {
    k.issue_ticket(
        &mobile(customer),
        req(branch, service, Channel::Mobile),
        None,
        now,
        random(),
    )
}

/// An always-open branch `busy` with four counters serving everything, and
/// limits no test reaches.
pub fn busy_catalog() -> Catalog {
    Catalog::from_json(
        r#"{"limits":{"kiosk_tickets":{"limit":1000000,"per":"minute"},"phone_tickets":{"limit":1000000,"per":"minute"}},
        "branches":[{"id":"busy","name":"Busy","time_zone":"Asia/Seoul","always_open":true,
        "services":[{"id":"deposit","code":"A","minutes":5,"max_waiting":1000000},{"id":"loan","code":"B","minutes":15,"max_waiting":1000000},
                    {"id":"fx","code":"C","minutes":8,"max_waiting":1000000}],
        "counters":[{"id":"1","services":["deposit","loan","fx"]},{"id":"2","services":["deposit","loan","fx"]},
                    {"id":"3","services":["deposit","loan","fx"]},{"id":"4","services":["deposit","loan","fx"]}]}]}"#,
    )
    .unwrap()
}

/// Faults to inject into a [`FaultyStore`].
#[derive(Default)]
pub struct Faults {
    /// Every operation fails with this message.
    pub down: Option<String>,
    /// CAS on keys with this prefix reports a conflict (Ok(false)).
    pub cas_conflict_prefix: Option<String>,
    /// CAS on keys with this prefix fails with a store error (outcome unknown
    /// to the caller); the write is applied first when `apply` is true.
    pub cas_error_prefix: Option<(String, bool)>,
    /// `set` on keys with this prefix fails.
    pub set_error_prefix: Option<String>,
    /// `set_many` fails with a store error (outcome unknown to the caller);
    /// the writes are applied first when this is `Some(true)`.
    pub set_many_error: Option<bool>,
    /// Compare-and-swap with `expected: None` writes whatever is there, as
    /// Spin's stores do (an upsert), instead of inserting only if absent.
    pub cas_absent_overwrites: bool,
    /// After this many more operations every operation fails: a request
    /// killed between two of its operations (a `set_many` counts one, then
    /// one per item, so it can die half-written).
    pub ops_left: Option<u32>,
}

/// A [`FaultyStore`] that behaves like Spin's stores: compare-and-swap on
/// an absent key overwrites.
pub fn spin_like_store() -> FaultyStore {
    let s = FaultyStore::default();
    s.with(|f| f.cas_absent_overwrites = true);
    s
}

/// A [`MemoryStore`] with injectable faults.
#[derive(Default)]
pub struct FaultyStore {
    pub inner: MemoryStore,
    pub faults: Mutex<Faults>,
}

impl FaultyStore {
    pub fn with(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.faults.lock().unwrap());
    }

    fn down(&self) -> Result<(), StoreError> {
        let mut f = self.faults.lock().unwrap();
        match &mut f.ops_left {
            Some(0) => return Err(StoreError("killed".into())),
            Some(n) => *n -= 1,
            None => {}
        }
        match &f.down {
            Some(m) => Err(StoreError(m.clone())),
            None => Ok(()),
        }
    }
}

impl Store for FaultyStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.down()?;
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.down()?;
        if let Some(p) = &self.faults.lock().unwrap().set_error_prefix
            && key.starts_with(p.as_str())
        {
            return Err(StoreError("set failed".into()));
        }
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.down()?;
        self.inner.delete(key)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.down()?;
        self.inner.increment(key, delta)
    }
    fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        self.down()?;
        let fault = self.faults.lock().unwrap().set_many_error;
        if let Some(apply) = fault {
            if apply {
                self.inner.set_many(items)?;
            }
            return Err(StoreError("connection reset by 10.1.2.3:6379".into()));
        }
        for (key, value) in items {
            self.set(key, value)?;
        }
        Ok(())
    }
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        self.down()?;
        let (conflict, error) = {
            let f = self.faults.lock().unwrap();
            (
                f.cas_conflict_prefix
                    .as_ref()
                    .is_some_and(|p| key.starts_with(p.as_str())),
                f.cas_error_prefix
                    .as_ref()
                    .filter(|(p, _)| key.starts_with(p.as_str()))
                    .map(|(_, apply)| *apply),
            )
        };
        if conflict {
            return Ok(false);
        }
        if expected.is_none() && self.faults.lock().unwrap().cas_absent_overwrites {
            self.inner.set(key, new)?;
            return Ok(true);
        }
        if let Some(apply) = error {
            if apply {
                self.inner.compare_and_swap(key, expected, new)?;
            }
            return Err(StoreError(
                "timeout talking to redis://admin:hunter2@10.1.2.3".into(),
            ));
        }
        self.inner.compare_and_swap(key, expected, new)
    }
}
