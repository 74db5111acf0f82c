//! The key-value store the domain keeps its state in.
//!
//! Components implement [`Store`] over `wasi:keyvalue` (SQLite or a shared Redis);
//! tests use [`MemoryStore`]. Only [`Store::increment`] and
//! [`Store::compare_and_swap`] are atomic, and the domain relies on nothing else:
//! plain `get`/`set`/`delete` may interleave arbitrarily with other instances.
//! [`Store::get_many`] and [`Store::set_many`] are one round trip each where
//! the backend has batches (`wasi:keyvalue/batch`); the domain does not rely
//! on them being atomic either.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

/// A failure of the store itself (connection lost, timeout, backend error).
///
/// The text is for logs only: [`crate::DomainError::StoreUnavailable`] never
/// shows it to clients, because a backend message may contain addresses or
/// credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "store error: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// Escapes one part of a store key: `%` and `:` are %-encoded, so a part
/// containing `:` cannot be mistaken for two parts.
pub(crate) fn escape_key_part(s: &str) -> String {
    s.replace('%', "%25").replace(':', "%3A")
}

/// Parses a stored JSON document whose `v` must be `schema`; anything
/// else is a store error naming the key, the version found and the one
/// this build reads (the text is for logs only).
pub(crate) fn parse_versioned<T: serde::de::DeserializeOwned>(
    what: &str,
    key: &str,
    bytes: &[u8],
    schema: u32,
) -> Result<T, StoreError> {
    #[derive(serde::Deserialize)]
    struct Version {
        v: Option<u32>,
    }
    let unreadable = |why: String| StoreError(format!("{what} at {key:?} is not readable: {why}"));
    let version = serde_json::from_slice::<Version>(bytes)
        .map_err(|e| unreadable(e.to_string()))?
        .v;
    if version != Some(schema) {
        return Err(unreadable(format!(
            "schema version {version:?}, this build reads {schema}"
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| unreadable(e.to_string()))
}

/// The store operations the domain needs.
pub trait Store {
    /// The value at `key`, or `None` if absent.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes `value` at `key` unconditionally.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key`; removing an absent key is not an error.
    fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Atomic add; absent counts as 0; returns the new value.
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError>;
    /// Writes `new` only if the current value equals `expected` (None = key absent).
    /// Ok(true) if written, Ok(false) on conflict.
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError>;
    /// The values at `keys`, in the same order. One `get` per key unless the
    /// store has a batch read.
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        keys.iter().map(|k| self.get(k)).collect()
    }
    /// Writes every pair. One `set` per pair unless the store has a batch
    /// write. On error, any subset may have been written.
    fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        items.iter().try_for_each(|(k, v)| self.set(k, v))
    }
}

impl<T: Store + ?Sized> Store for &T {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        (**self).set(key, value)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        (**self).delete(key)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        (**self).increment(key, delta)
    }
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        (**self).compare_and_swap(key, expected, new)
    }
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        (**self).get_many(keys)
    }
    fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        (**self).set_many(items)
    }
}

/// In-memory [`Store`]: a `Mutex<BTreeMap>`. Every operation is atomic.
///
/// Counters are stored as decimal text (as Redis `INCRBY` does), so
/// [`Store::get`] on a counter key returns e.g. `b"7"`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// All keys currently stored, in order (for tests and debugging).
    pub fn keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A panic while holding the lock cannot leave the map half-written
        // (every operation is a single map call), so a poisoned lock is safe to use.
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.lock().insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.lock().remove(key);
        Ok(())
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let mut map = self.lock();
        let current = match map.get(key) {
            None => 0,
            Some(bytes) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| StoreError(format!("value at {key:?} is not an integer")))?,
        };
        let new = current
            .checked_add(delta)
            .ok_or_else(|| StoreError(format!("increment of {key:?} overflows")))?;
        map.insert(key.to_owned(), new.to_string().into_bytes());
        Ok(new)
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        let mut map = self.lock();
        if map.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        map.insert(key.to_owned(), new.to_vec());
        Ok(true)
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let map = self.lock();
        Ok(keys.iter().map(|k| map.get(k).cloned()).collect())
    }

    fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let mut map = self.lock();
        for (k, v) in items {
            map.insert(k.clone(), v.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increment_starts_at_zero_and_counts() {
        let s = MemoryStore::new();
        assert_eq!(s.increment("n", 1).unwrap(), 1);
        assert_eq!(s.increment("n", 5).unwrap(), 6);
        assert_eq!(s.get("n").unwrap().unwrap(), b"6");
    }

    #[test]
    fn increment_of_non_integer_fails() {
        let s = MemoryStore::new();
        s.set("n", b"x").unwrap();
        assert!(s.increment("n", 1).is_err());
    }

    #[test]
    fn compare_and_swap_semantics() {
        let s = MemoryStore::new();
        assert!(s.compare_and_swap("k", None, b"a").unwrap());
        assert!(!s.compare_and_swap("k", None, b"b").unwrap());
        assert!(!s.compare_and_swap("k", Some(b"x"), b"b").unwrap());
        assert!(s.compare_and_swap("k", Some(b"a"), b"b").unwrap());
        assert_eq!(s.get("k").unwrap().unwrap(), b"b");
        s.delete("k").unwrap();
        assert_eq!(s.get("k").unwrap(), None);
        assert!(!s.compare_and_swap("k", Some(b"b"), b"c").unwrap());
    }
}
