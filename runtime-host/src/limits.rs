//! Per-request limits: linear memory, a deadline, and the bounded wait for an
//! instance slot. Everything a single request may consume is bounded here.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::{ResourceLimiter, StoreContextMut, UpdateDeadline};

use crate::config::ServerSettings;
use crate::error::HostError;

/// How often the engine's epoch advances. A running guest checks its deadline
/// (and yields to other requests) at most this far apart.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Largest table a guest may grow to (function references, not bytes).
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// Limits applied to every request's instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest linear memory one instance may grow to, in bytes.
    pub max_memory_bytes: u64,
    /// How long one request may run, from instantiation to the end of its body.
    pub deadline: Duration,
    /// Largest request body the host forwards to a guest, in bytes.
    pub max_body_bytes: u64,
}

impl From<&ServerSettings> for RequestLimits {
    fn from(server: &ServerSettings) -> Self {
        Self {
            max_memory_bytes: server.max_instance_memory,
            deadline: server.request_timeout,
            max_body_bytes: server.max_body_bytes,
        }
    }
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self::from(&ServerSettings::default())
    }
}

/// The marker error a store's epoch callback raises when its deadline passes.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineReached;

impl std::fmt::Display for DeadlineReached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request deadline reached")
    }
}

impl std::error::Error for DeadlineReached {}

/// Installs the deadline on a store: the guest yields to other tasks on every
/// epoch tick and is stopped with [`DeadlineReached`] once `deadline` passes.
pub fn install_deadline<T: 'static>(store: &mut wasmtime::Store<T>, deadline: Instant) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_: StoreContextMut<'_, T>| {
        if Instant::now() >= deadline {
            Err(wasmtime::Error::new(DeadlineReached))
        } else {
            // tokio's own yield puts the task at the back of the run queue;
            // a plain self-wake would be re-polled at once and starve the
            // other requests on this worker.
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        }
    });
}

/// The resource limiter of one instance; remembers whether memory ran out so
/// the host can say so instead of reporting a bare trap.
#[derive(Debug)]
pub struct GuestLimiter {
    max_memory_bytes: usize,
    memory_exceeded: bool,
}

impl GuestLimiter {
    /// A limiter allowing at most `max_memory_bytes` of linear memory.
    pub fn new(max_memory_bytes: u64) -> Self {
        Self {
            max_memory_bytes: usize::try_from(max_memory_bytes).unwrap_or(usize::MAX),
            memory_exceeded: false,
        }
    }

    /// Whether the guest asked for more memory than it may have.
    pub fn memory_exceeded(&self) -> bool {
        self.memory_exceeded
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_memory_bytes && maximum.is_none_or(|max| desired <= max);
        if !allowed {
            self.memory_exceeded = true;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS && maximum.is_none_or(|max| desired <= max))
    }
}

/// Instance slots shared by all requests, with a bounded FIFO wait for a free
/// one. A request that cannot get a slot in time is answered 503 with
/// `Retry-After` rather than queued without bound.
#[derive(Debug)]
pub struct InstanceSlots {
    slots: Arc<Semaphore>,
    size: usize,
    waiting: AtomicUsize,
    max_waiting: usize,
    max_wait: Duration,
}

/// The slots one request holds until its instance is gone.
#[derive(Debug)]
pub struct SlotPermits {
    _host: OwnedSemaphorePermit,
    _own: Option<OwnedSemaphorePermit>,
}

/// Undoes a waiter's count on every exit path.
struct WaiterGuard<'a>(&'a AtomicUsize);

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl InstanceSlots {
    /// `slots` concurrent instances; at most `max_waiting` requests wait, each
    /// for at most `max_wait`.
    pub fn new(slots: usize, max_waiting: usize, max_wait: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots)),
            size: slots,
            waiting: AtomicUsize::new(0),
            max_waiting,
            max_wait,
        }
    }

    /// Takes a slot, waiting in line if all are busy.
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, HostError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(self.overloaded());
        }
        let _waiter = WaiterGuard(&self.waiting);
        match tokio::time::timeout(self.max_wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(self.overloaded()),
        }
    }

    /// Takes a slot of the component's own bulkhead (`own`), then one of
    /// these: a component stuck on a dependency waits for its own slots and
    /// never holds the host's.
    pub async fn acquire_with(
        &self,
        own: Option<&InstanceSlots>,
    ) -> Result<SlotPermits, HostError> {
        let own = match own {
            Some(slots) => Some(slots.acquire().await?),
            None => None,
        };
        Ok(SlotPermits {
            _host: self.acquire().await?,
            _own: own,
        })
    }

    /// Slots held by running requests now.
    pub fn in_use(&self) -> usize {
        self.size.saturating_sub(self.slots.available_permits())
    }

    /// Requests currently waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    fn overloaded(&self) -> HostError {
        HostError::Overloaded {
            retry_after_s: self.max_wait.as_secs().max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_growth_is_refused_past_the_limit_and_remembered() {
        let mut limiter = GuestLimiter::new(1024);
        assert!(limiter.memory_growing(0, 1024, None).unwrap());
        assert!(!limiter.memory_exceeded());
        assert!(!limiter.memory_growing(1024, 1025, None).unwrap());
        assert!(limiter.memory_exceeded());
    }

    #[test]
    fn memory_growth_respects_the_modules_own_maximum() {
        let mut limiter = GuestLimiter::new(1 << 30);
        assert!(!limiter.memory_growing(0, 2048, Some(1024)).unwrap());
    }

    #[test]
    fn tables_are_capped() {
        let mut limiter = GuestLimiter::new(1024);
        assert!(limiter.table_growing(0, 10, None).unwrap());
        assert!(
            !limiter
                .table_growing(0, MAX_TABLE_ELEMENTS + 1, None)
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_full_queue_answers_overloaded_at_once() {
        let slots = InstanceSlots::new(1, 0, Duration::from_secs(60));
        let _held = slots.acquire().await.unwrap();
        let err = slots.acquire().await.unwrap_err();
        assert_eq!(err.code(), "overloaded");
        assert_eq!(slots.waiting(), 0);
    }

    #[tokio::test]
    async fn a_waiter_gets_the_slot_when_it_is_released() {
        let slots = Arc::new(InstanceSlots::new(1, 4, Duration::from_secs(60)));
        let held = slots.acquire().await.unwrap();
        let waiter = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.acquire().await.map(|_| ()) })
        };
        while slots.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        drop(held);
        waiter.await.unwrap().unwrap();
        assert_eq!(slots.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_after_the_wait_bound() {
        let slots = InstanceSlots::new(1, 4, Duration::from_secs(2));
        let _held = slots.acquire().await.unwrap();
        let err = slots.acquire().await.unwrap_err();
        assert_eq!(err, HostError::Overloaded { retry_after_s: 2 });
        assert_eq!(slots.waiting(), 0);
    }
}
