//! Key-value storage backends of kiosk-host.
//!
//! Guests use Spin's key-value API (`fermyon:spin/key-value@2.0.0` and
//! `wasi:keyvalue@0.2.0-draft2` store/atomics/batch); the host maps those calls
//! onto [`KvBackend`], which every backend implements:
//!
//! - [`SqliteStore`]: an embedded SQLite file, Spin's `type = "spin"` store. The
//!   schema is Spin 4.0.2's, so a file written by Spin can be served by
//!   kiosk-host and the other way round.
//! - [`RedisStore`]: Spin's `type = "redis"` store.
//! - [`FencedStore`]: a [`RedisStore`] whose sequence keys never hand out a
//!   number twice after Redis loses writes (see [`fence`]).
//!
//! Semantics follow Spin 4.0.2 except where Spin has known bugs (see the
//! backend modules): compare-and-swap on an absent key is insert-if-absent,
//! atomics hold across processes, and a malformed counter is an error instead of
//! a panic.
//!
//! Every operation is bounded in time ([`DEFAULT_TIMEOUT`], changed with
//! `with_timeout`): a store that is down, unreachable or locked answers
//! [`KvError::Unavailable`] instead of hanging the guest.

#![deny(missing_docs)]

pub mod fence;
mod redis;
mod sqlite;

#[cfg(feature = "testing")]
pub mod testing;

use std::time::Duration;

pub use crate::fence::{FenceConfig, FenceStatus, FencedStore};
pub use crate::redis::{RedisPersistence, RedisStore};
pub use crate::sqlite::SqliteStore;

/// How long one operation may take before it fails with
/// [`KvError::Unavailable`], unless changed with `with_timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest value, in bytes, that is stored or read back (128 MiB).
///
/// Larger writes fail with [`KvError::TooLarge`] before reaching the store, and
/// so do reads of larger values written by someone else, so that one entry
/// cannot make the host allocate without bound.
pub const MAX_VALUE_SIZE: usize = 128 * 1024 * 1024;

/// A key-value store that the host serves to guests.
///
/// Object safe: the host holds `Arc<dyn KvBackend>`. Every method is bounded in
/// time and never panics on stored data.
#[async_trait::async_trait]
pub trait KvBackend: Send + Sync + 'static {
    /// The value at `key`, or `None` if there is none.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Stores `value` at `key`, replacing any previous value.
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError>;
    /// Removes `key`; removing an absent key succeeds.
    async fn delete(&self, key: &str) -> Result<(), KvError>;
    /// Whether `key` has a value.
    async fn exists(&self, key: &str) -> Result<bool, KvError>;
    /// Every key of the store, in no particular order.
    async fn list_keys(&self) -> Result<Vec<String>, KvError>;
    /// The values of `keys`, in request order; an absent key gives `None`.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError>;
    /// Stores every item, all or nothing.
    async fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), KvError>;
    /// Removes every key in `keys`, all or nothing; absent keys are ignored.
    async fn delete_many(&self, keys: &[String]) -> Result<(), KvError>;
    /// Adds `delta` to the integer at `key` (absent counts as 0) and returns the new value, atomically
    /// across every process sharing the store.
    ///
    /// A stored value that is not an integer in the backend's counter format,
    /// or a result that would overflow `i64`, is [`KvError::InvalidValue`].
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError>;
    /// Compare-and-swap: writes `new` only if the stored value is still `expected`
    /// (`Expected::Absent` = insert only if the key does not exist). Atomic across processes.
    async fn swap(
        &self,
        key: &str,
        expected: &Expected,
        new: &[u8],
    ) -> Result<SwapOutcome, KvError>;
}

/// What [`KvBackend::swap`] expects to find at the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// The key must not exist: the swap is an insert-if-absent.
    Absent,
    /// The key must hold exactly these bytes.
    Value(Vec<u8>),
}

/// The result of [`KvBackend::swap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapOutcome {
    /// The stored value matched and has been replaced.
    Swapped,
    /// The stored value did not match; nothing was written.
    Conflict {
        /// The value stored now (`None` if the key is absent), so that a
        /// retry loop needs no extra read.
        current: Option<Vec<u8>>,
    },
}

/// Why a key-value operation failed.
///
/// Every variant carries a human-readable message for logs; the variant is what
/// the host maps onto the guest-visible error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The store is down, unreachable, timed out or busy past its timeout.
    #[error("key-value store unavailable: {0}")]
    Unavailable(String),
    /// The store is out of space: disk full, Redis OOM / maxmemory.
    #[error("key-value store full: {0}")]
    Full(String),
    /// The stored value cannot be used as asked, e.g. incrementing a value that
    /// is not an integer.
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// A value is larger than [`MAX_VALUE_SIZE`].
    #[error("value too large: {0}")]
    TooLarge(String),
    /// Any other failure.
    #[error("key-value store error: {0}")]
    Other(String),
}

impl KvError {
    /// The same error with `context` put before its message.
    fn context(self, context: &str) -> Self {
        match self {
            Self::Unavailable(m) => Self::Unavailable(format!("{context}: {m}")),
            Self::Full(m) => Self::Full(format!("{context}: {m}")),
            Self::InvalidValue(m) => Self::InvalidValue(format!("{context}: {m}")),
            Self::TooLarge(m) => Self::TooLarge(format!("{context}: {m}")),
            Self::Other(m) => Self::Other(format!("{context}: {m}")),
        }
    }
}

/// Fails with [`KvError::TooLarge`] if `value` exceeds [`MAX_VALUE_SIZE`].
fn check_size(key: &str, value: &[u8]) -> Result<(), KvError> {
    if value.len() > MAX_VALUE_SIZE {
        return Err(too_large(key, value.len()));
    }
    Ok(())
}

fn too_large(key: &str, len: usize) -> KvError {
    KvError::TooLarge(format!(
        "value of key {key:?} is {len} bytes, over the limit of {MAX_VALUE_SIZE} bytes"
    ))
}

fn timed_out(what: &str, timeout: Duration) -> KvError {
    KvError::Unavailable(format!("{what} did not complete within {timeout:?}"))
}
