//! The domain's [`Store`] over the host's real key-value backends, and a
//! counting adapter that measures what each request asks of the store.

use std::sync::atomic::{AtomicU64, Ordering};

use kiosk_domain::{Store, StoreError};
use kiosk_kv::{Expected, KvBackend, KvError, SwapOutcome};
use tokio::runtime::Handle;

/// [`Store`] over a [`KvBackend`] (SQLite or Redis), the host-side stores
/// the components reach through `wasi:keyvalue`. The backends are async;
/// each call blocks the calling thread on the benchmark's runtime.
pub struct KvStore<B> {
    backend: B,
    runtime: Handle,
}

impl<B: KvBackend> KvStore<B> {
    pub fn new(backend: B, runtime: Handle) -> Self {
        Self { backend, runtime }
    }
}

fn store_error(what: &str, e: KvError) -> StoreError {
    StoreError(format!("{what}: {e}"))
}

impl<B: KvBackend> Store for KvStore<B> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.runtime
            .block_on(self.backend.get(key))
            .map_err(|e| store_error("get", e))
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.runtime
            .block_on(self.backend.set(key, value))
            .map_err(|e| store_error("set", e))
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.runtime
            .block_on(self.backend.delete(key))
            .map_err(|e| store_error("delete", e))
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.runtime
            .block_on(self.backend.increment(key, delta))
            .map_err(|e| store_error("increment", e))
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        let expected = match expected {
            None => Expected::Absent,
            Some(bytes) => Expected::Value(bytes.to_vec()),
        };
        match self
            .runtime
            .block_on(self.backend.swap(key, &expected, new))
            .map_err(|e| store_error("swap", e))?
        {
            SwapOutcome::Swapped => Ok(true),
            SwapOutcome::Conflict { .. } => Ok(false),
        }
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let found = self
            .runtime
            .block_on(self.backend.get_many(keys))
            .map_err(|e| store_error("get_many", e))?;
        if found.len() != keys.len() {
            return Err(StoreError(format!(
                "get_many answered {} values for {} keys",
                found.len(),
                keys.len()
            )));
        }
        Ok(found.into_iter().map(|(_, v)| v).collect())
    }

    fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        self.runtime
            .block_on(self.backend.set_many(items))
            .map_err(|e| store_error("set_many", e))
    }
}

/// What a [`Counting`] store has been asked so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Calls of the [`Store`] trait: each `get_many` / `set_many` is one
    /// call (one round trip where the backend batches).
    pub ops: u64,
    /// Keys those calls touched (a `get_many` of 9 keys counts 9).
    pub keys: u64,
    /// Value bytes the store returned (`get`, `get_many`), plus the
    /// `expected` bytes of a compare-and-swap: the store reads the current
    /// value to compare (and `wasi:keyvalue` ships it to the guest first).
    pub bytes_read: u64,
    /// Value bytes sent to be stored (`set`, `set_many`, the new value of a
    /// compare-and-swap). Counters (`increment`) count no bytes.
    pub bytes_written: u64,
}

impl Tally {
    pub fn since(self, before: Tally) -> Tally {
        Tally {
            ops: self.ops - before.ops,
            keys: self.keys - before.keys,
            bytes_read: self.bytes_read - before.bytes_read,
            bytes_written: self.bytes_written - before.bytes_written,
        }
    }
}

/// A [`Store`] adapter that counts calls, keys and bytes (atomically, so it
/// can be shared by the fill's threads).
pub struct Counting<S> {
    inner: S,
    ops: AtomicU64,
    keys: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
}

impl<S: Store> Counting<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            ops: AtomicU64::new(0),
            keys: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
        }
    }

    pub fn tally(&self) -> Tally {
        Tally {
            ops: self.ops.load(Ordering::Relaxed),
            keys: self.keys.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
        }
    }

    fn count(&self, keys: usize, read: usize, written: usize) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        self.keys.fetch_add(keys as u64, Ordering::Relaxed);
        self.bytes_read.fetch_add(read as u64, Ordering::Relaxed);
        self.bytes_written
            .fetch_add(written as u64, Ordering::Relaxed);
    }
}

impl<S: Store> Store for Counting<S> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self.inner.get(key);
        let read = value
            .as_ref()
            .ok()
            .and_then(|v| v.as_ref())
            .map_or(0, Vec::len);
        self.count(1, read, 0);
        value
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.count(1, 0, value.len());
        self.inner.set(key, value)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.count(1, 0, 0);
        self.inner.delete(key)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.count(1, 0, 0);
        self.inner.increment(key, delta)
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        self.count(1, expected.map_or(0, <[u8]>::len), new.len());
        self.inner.compare_and_swap(key, expected, new)
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let values = self.inner.get_many(keys);
        let read = values.as_ref().map_or(0, |vs| {
            vs.iter().map(|v| v.as_ref().map_or(0, Vec::len)).sum()
        });
        self.count(keys.len(), read, 0);
        values
    }

    fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        self.count(items.len(), 0, items.iter().map(|(_, v)| v.len()).sum());
        self.inner.set_many(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiosk_domain::MemoryStore;

    #[test]
    fn counts_calls_keys_and_bytes() {
        let s = Counting::new(MemoryStore::new());
        s.set("a", b"hello").unwrap();
        assert_eq!(s.get("a").unwrap().unwrap(), b"hello");
        assert_eq!(
            s.get_many(&["a".into(), "b".into()]).unwrap(),
            vec![Some(b"hello".to_vec()), None]
        );
        assert!(s.compare_and_swap("a", Some(b"hello"), b"hi").unwrap());
        s.increment("n", 2).unwrap();
        assert_eq!(
            s.tally(),
            Tally {
                ops: 5,
                keys: 6,
                bytes_read: 5 + 5 + 5,
                bytes_written: 5 + 2,
            }
        );
    }
}
