//! Shared answers for the GETs an app declares cacheable: identical
//! concurrent calls become one call to the destination (the others wait for
//! its answer, as nginx's `proxy_cache_lock`), and the answer is reused for
//! the rule's TTL on this host. Failures are reused for at most a second, so
//! a failing destination is not asked more than once a second per key.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use tokio::sync::OnceCell;

use super::Refusal;

/// Entries kept at most; past it, expired ones are dropped, then new keys
/// are fetched without sharing.
const MAX_ENTRIES: usize = 10_000;

/// How long a failed answer is reused at most.
const FAILURE_TTL: Duration = Duration::from_secs(1);

/// A complete answer, shareable.
#[derive(Debug, Clone)]
pub struct Stored {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// The outcome of one shared call: an answer or why there is none.
pub type Shared = Result<Arc<Stored>, FetchError>;

/// Why a shared call has no answer (a cloneable summary of the error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The policy refused the call before it was sent (not reused).
    Refused(Refusal),
    Timeout,
    ConnectFailed,
    Other(String),
}

/// Whether a shared call's result was fresh, joined or reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// This caller made the call.
    Miss,
    /// This caller waited for an identical call in flight, or reused a recent answer.
    Hit,
}

struct Entry {
    cell: Arc<OnceCell<(Shared, Instant)>>,
    ttl: Duration,
}

impl Entry {
    fn usable(&self, now: Instant) -> bool {
        match self.cell.get() {
            None => true,
            Some((result, at)) => {
                let ttl = match result {
                    Ok(stored) if !stored.status.is_server_error() => self.ttl,
                    Err(FetchError::Refused(_)) => Duration::ZERO,
                    _ => self.ttl.min(FAILURE_TTL),
                };
                now.duration_since(*at) < ttl
            }
        }
    }
}

/// The shared answers of one destination.
#[derive(Default)]
pub struct Cache {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Cache {
    /// The answer for `key`: shared with identical calls in flight or
    /// recent enough, else fetched by this caller with `fetch`.
    pub async fn get_or_fetch<F>(&self, key: String, ttl: Duration, fetch: F) -> (Shared, Use)
    where
        F: Future<Output = Shared>,
    {
        let now = Instant::now();
        let cell = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            match entries.get(&key) {
                Some(entry) if entry.usable(now) => Some(entry.cell.clone()),
                _ => {
                    if entries.len() >= MAX_ENTRIES {
                        entries.retain(|_, entry| entry.usable(now));
                    }
                    if entries.len() >= MAX_ENTRIES {
                        None
                    } else {
                        let cell = Arc::new(OnceCell::new());
                        entries.insert(
                            key,
                            Entry {
                                cell: cell.clone(),
                                ttl,
                            },
                        );
                        Some(cell)
                    }
                }
            }
        };
        let Some(cell) = cell else {
            return (fetch.await, Use::Miss);
        };
        let mut fetched = false;
        let (result, _) = cell
            .get_or_init(|| async {
                fetched = true;
                (fetch.await, Instant::now())
            })
            .await;
        (result.clone(), if fetched { Use::Miss } else { Use::Hit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn ok() -> Shared {
        Ok(Arc::new(Stored {
            status: http::StatusCode::OK,
            headers: http::HeaderMap::new(),
            body: Bytes::from_static(b"{}"),
        }))
    }

    #[tokio::test]
    async fn identical_concurrent_calls_become_one() {
        let cache = Arc::new(Cache::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (cache, calls) = (cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch("k".into(), Duration::from_secs(5), async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        ok()
                    })
                    .await
            }));
        }
        for task in tasks {
            assert!(task.await.unwrap().0.is_ok());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_expire_after_their_ttl_and_failures_after_a_second() {
        let cache = Cache::default();
        let ttl = Duration::from_secs(5);
        assert_eq!(
            cache.get_or_fetch("a".into(), ttl, async { ok() }).await.1,
            Use::Miss
        );
        assert_eq!(
            cache.get_or_fetch("a".into(), ttl, async { ok() }).await.1,
            Use::Hit
        );
        let failed = || async { Err(FetchError::Timeout) };
        assert_eq!(
            cache.get_or_fetch("b".into(), ttl, failed()).await.1,
            Use::Miss
        );
        assert_eq!(
            cache.get_or_fetch("b".into(), ttl, failed()).await.1,
            Use::Hit
        );
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert_eq!(
            cache.get_or_fetch("b".into(), ttl, failed()).await.1,
            Use::Miss
        );
        assert_eq!(
            cache.get_or_fetch("a".into(), ttl, async { ok() }).await.1,
            Use::Hit
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            cache.get_or_fetch("a".into(), ttl, async { ok() }).await.1,
            Use::Miss
        );
    }

    #[tokio::test]
    async fn refusals_are_not_reused() {
        let cache = Cache::default();
        let refused = || async {
            Err(FetchError::Refused(Refusal {
                reason: crate::policy::Reason::Busy,
                retry_after_s: 1,
            }))
        };
        let ttl = Duration::from_secs(5);
        assert_eq!(
            cache.get_or_fetch("r".into(), ttl, refused()).await.1,
            Use::Miss
        );
        assert_eq!(
            cache.get_or_fetch("r".into(), ttl, refused()).await.1,
            Use::Miss
        );
    }
}
