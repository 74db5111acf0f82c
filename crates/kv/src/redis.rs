//! The Redis backend: Spin's `type = "redis"` key-value store.
//!
//! Keys are used as-is (one Redis URL per store label, as in Spin). Values are
//! plain Redis strings; counters are Redis integers (decimal text, `INCRBY`).
//! Where this module differs from Spin 4.0.2 it is on purpose:
//!
//! - `swap` is one Lua script (compare, then write), whose reply says whether
//!   it wrote. Spin uses WATCH/MULTI/EXEC and takes an aborted EXEC for a
//!   success, reporting swaps that never happened.
//! - `swap` with [`Expected::Absent`] inserts only if the key is still absent.
//! - `set_many` is one `MSET` and `delete_many` one `DEL`: all or nothing.
//! - `list_keys` uses `SCAN`, not `KEYS`, which blocks the server.
//!
//! The connection is a [`ConnectionManager`]: one multiplexed connection
//! shared by every operation, re-established after it drops.

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, ErrorKind, RedisError, Script, ServerErrorKind, Value};

use crate::{
    DEFAULT_TIMEOUT, Expected, KvBackend, KvError, SwapOutcome, check_size, timed_out, too_large,
};

/// Compare-and-swap in one atomic step on the server.
///
/// KEYS[1]: the key. ARGV[1]: `1` if ARGV[2] is the expected value, `0` if the
/// key must be absent. ARGV[3]: the new value.
/// Reply: `{1}` when written; `{0}` or `{0, current}` when not.
const SWAP_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
local matches
if ARGV[1] == '1' then
  matches = (current == ARGV[2])
else
  matches = (current == false)
end
if matches then
  redis.call('SET', KEYS[1], ARGV[3])
  return {1}
end
if current == false then
  return {0}
end
return {0, current}
";

/// Keys asked for per `SCAN` round trip.
const SCAN_COUNT: usize = 1000;

/// A key-value store in Redis, compatible with Spin's `type = "redis"` store.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    swap_script: Script,
    timeout: Duration,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: not shown.
        f.debug_struct("RedisStore")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the Redis server at `url` (`redis://[user:password@]host[:port][/db]`).
    ///
    /// Fails with [`KvError::Unavailable`] within [`DEFAULT_TIMEOUT`] if the
    /// server cannot be reached. Once connected, a dropped connection is
    /// re-established by the next operation.
    pub async fn connect(url: &str) -> Result<Self, KvError> {
        Self::connect_with_timeout(url, DEFAULT_TIMEOUT).await
    }

    /// Like [`connect`](Self::connect), with `timeout` bounding the connection
    /// attempt and then every operation.
    pub async fn connect_with_timeout(url: &str, timeout: Duration) -> Result<Self, KvError> {
        let client = client(url)?;
        let conn = tokio::time::timeout(
            timeout,
            ConnectionManager::new_with_config(client, manager_config(timeout)),
        )
        .await
        .map_err(|_| timed_out("connecting to Redis", timeout))?
        .map_err(|e| map_err(e).context("cannot connect to Redis"))?;
        Ok(Self::from_manager(conn, timeout))
    }

    /// Like [`connect`](Self::connect), but does not contact the server: the
    /// connection is made by the first operation, which fails with
    /// [`KvError::Unavailable`] if the server cannot be reached. This is what
    /// Spin does, so an application starts while its Redis is still coming up.
    /// Only a malformed `url` fails here. (Async only because the connection
    /// task it sets up needs the Tokio runtime.)
    pub async fn connect_lazy(url: &str) -> Result<Self, KvError> {
        let conn =
            ConnectionManager::new_lazy_with_config(client(url)?, manager_config(DEFAULT_TIMEOUT))
                .map_err(map_err)?;
        Ok(Self::from_manager(conn, DEFAULT_TIMEOUT))
    }

    /// Sets how long each operation may take before it fails with
    /// [`KvError::Unavailable`] (default [`DEFAULT_TIMEOUT`]).
    ///
    /// The connection keeps the response timeout it was made with, so this
    /// can shorten the bound but not lengthen it: use
    /// [`connect_with_timeout`](Self::connect_with_timeout) for a longer one.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn from_manager(conn: ConnectionManager, timeout: Duration) -> Self {
        Self {
            conn,
            swap_script: Script::new(SWAP_SCRIPT),
            timeout,
        }
    }

    /// Runs `f` on the shared connection within the operation timeout.
    pub(crate) async fn run<T, F, Fut>(&self, what: &str, f: F) -> Result<T, KvError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        // A clone is a handle on the same multiplexed connection; dropping its
        // request on timeout is safe.
        match tokio::time::timeout(self.timeout, f(self.conn.clone())).await {
            Ok(result) => result.map_err(map_err),
            Err(_) => {
                tracing::warn!(what, "Redis operation timed out");
                Err(timed_out(&format!("Redis {what}"), self.timeout))
            }
        }
    }
}

/// How a Redis server keeps what it acknowledged (`CONFIG GET`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisPersistence {
    /// `appendonly`: every write goes to the append-only file.
    pub appendonly: bool,
    /// `appendfsync`: `always`, `everysec` or `no`.
    pub appendfsync: String,
}

impl RedisStore {
    /// The server's persistence settings. Fails where `CONFIG` is disabled
    /// (some managed services rename it).
    pub async fn persistence(&self) -> Result<RedisPersistence, KvError> {
        let get = |name: &'static str| async move {
            let pair: Vec<String> = self
                .run("config get", |mut c| async move {
                    ::redis::cmd("CONFIG")
                        .arg("GET")
                        .arg(name)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            pair.get(1)
                .cloned()
                .ok_or_else(|| KvError::Other(format!("CONFIG GET {name} answered no value")))
        };
        Ok(RedisPersistence {
            appendonly: get("appendonly").await? == "yes",
            appendfsync: get("appendfsync").await?,
        })
    }
}

fn client(url: &str) -> Result<Client, KvError> {
    // The error names the problem, not the URL, which may hold a password.
    Client::open(url).map_err(|e| KvError::Other(format!("invalid Redis URL: {e}")))
}

fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
    // Few, quick reconnection attempts: the operation timeout bounds the wait
    // anyway, and a failed reconnection is retried by the next operation.
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
}

#[async_trait::async_trait]
impl KvBackend for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let value: Option<Vec<u8>> = self
            .run("get", |mut c| async move {
                ::redis::cmd("GET").arg(key).query_async(&mut c).await
            })
            .await?;
        check_read(key, value)
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        check_size(key, value)?;
        self.run("set", |mut c| async move {
            ::redis::cmd("SET")
                .arg(key)
                .arg(value)
                .exec_async(&mut c)
                .await
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.run("delete", |mut c| async move {
            ::redis::cmd("DEL").arg(key).exec_async(&mut c).await
        })
        .await
    }

    async fn exists(&self, key: &str) -> Result<bool, KvError> {
        self.run("exists", |mut c| async move {
            ::redis::cmd("EXISTS").arg(key).query_async(&mut c).await
        })
        .await
    }

    async fn list_keys(&self) -> Result<Vec<String>, KvError> {
        let raw: Vec<Vec<u8>> = self
            .run("list_keys", |mut c| async move {
                let mut keys = Vec::new();
                let mut cursor: u64 = 0;
                loop {
                    let (next, batch): (u64, Vec<Vec<u8>>) = ::redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(SCAN_COUNT)
                        .query_async(&mut c)
                        .await?;
                    keys.extend(batch);
                    if next == 0 {
                        return Ok(keys);
                    }
                    cursor = next;
                }
            })
            .await?;
        let mut keys: Vec<String> = raw
            .into_iter()
            .filter_map(|key| match String::from_utf8(key) {
                Ok(key) => Some(key),
                Err(e) => {
                    // Guests can only name keys with strings; a binary key was
                    // written by something else and cannot be asked for.
                    tracing::warn!(key = ?e.as_bytes(), "skipping non-UTF-8 Redis key");
                    None
                }
            })
            .collect();
        // SCAN may return a key more than once.
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<Vec<u8>>> = self
            .run("get_many", |mut c| async move {
                ::redis::cmd("MGET").arg(keys).query_async(&mut c).await
            })
            .await?;
        if values.len() != keys.len() {
            return Err(KvError::Other(format!(
                "Redis MGET answered {} values for {} keys",
                values.len(),
                keys.len()
            )));
        }
        keys.iter()
            .zip(values)
            .map(|(key, value)| Ok((key.clone(), check_read(key, value)?)))
            .collect()
    }

    async fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        for (key, value) in items {
            check_size(key, value)?;
        }
        if items.is_empty() {
            return Ok(());
        }
        self.run("set_many", |mut c| async move {
            let mut cmd = ::redis::cmd("MSET");
            for (key, value) in items {
                cmd.arg(key).arg(value);
            }
            cmd.exec_async(&mut c).await
        })
        .await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.run("delete_many", |mut c| async move {
            ::redis::cmd("DEL").arg(keys).exec_async(&mut c).await
        })
        .await
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        self.run("increment", |mut c| async move {
            ::redis::cmd("INCRBY")
                .arg(key)
                .arg(delta)
                .query_async(&mut c)
                .await
        })
        .await
        .map_err(|e| increment_error(key, e))
    }

    async fn swap(
        &self,
        key: &str,
        expected: &Expected,
        new: &[u8],
    ) -> Result<SwapOutcome, KvError> {
        check_size(key, new)?;
        let (flag, expected): (&str, &[u8]) = match expected {
            Expected::Absent => ("0", b""),
            Expected::Value(value) => ("1", value),
        };
        let reply: Value = self
            .run("swap", |mut c| async move {
                self.swap_script
                    .key(key)
                    .arg(flag)
                    .arg(expected)
                    .arg(new)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        // Check the reply instead of assuming success: this is where Spin's
        // WATCH/MULTI/EXEC swap went wrong.
        match reply {
            Value::Array(items) => match items.as_slice() {
                [Value::Int(1)] => Ok(SwapOutcome::Swapped),
                [Value::Int(0)] => Ok(SwapOutcome::Conflict { current: None }),
                [Value::Int(0), Value::BulkString(current)] => Ok(SwapOutcome::Conflict {
                    current: check_read(key, Some(current.clone()))?,
                }),
                _ => Err(unexpected_swap_reply(&items)),
            },
            other => Err(unexpected_swap_reply(&other)),
        }
    }
}

/// An increment's error, naming the key when its value is no counter.
pub(crate) fn increment_error(key: &str, error: KvError) -> KvError {
    match error {
        KvError::InvalidValue(m) => {
            KvError::InvalidValue(format!("cannot increment key {key:?}: {m}"))
        }
        other => other,
    }
}

fn unexpected_swap_reply(reply: &impl std::fmt::Debug) -> KvError {
    KvError::Other(format!(
        "unexpected reply from the Redis swap script: {reply:?}"
    ))
}

/// Applies the read limit to a value read from Redis. Values this crate writes
/// are within it; one written by someone else may not be.
fn check_read(key: &str, value: Option<Vec<u8>>) -> Result<Option<Vec<u8>>, KvError> {
    match value {
        Some(value) if value.len() > crate::MAX_VALUE_SIZE => Err(too_large(key, value.len())),
        value => Ok(value),
    }
}

/// Maps a Redis failure onto the error the guest will see.
fn map_err(error: RedisError) -> KvError {
    let message = format!("Redis: {error}");
    let detail = error.detail().unwrap_or_default();
    let code = error.code().unwrap_or_default();
    if code == "OOM" || detail.contains("OOM command not allowed") {
        // maxmemory reached with a policy that does not evict.
        return KvError::Full(message);
    }
    if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
    {
        return KvError::Unavailable(message);
    }
    match error.kind() {
        ErrorKind::Server(ServerErrorKind::BusyLoading)
        | ErrorKind::Server(ServerErrorKind::MasterDown)
        | ErrorKind::Server(ServerErrorKind::TryAgain)
        | ErrorKind::Server(ServerErrorKind::ClusterDown)
        | ErrorKind::Server(ServerErrorKind::ReadOnly) => KvError::Unavailable(message),
        // Not an integer, or the increment would overflow.
        ErrorKind::Server(ServerErrorKind::ResponseError)
            if detail.contains("not an integer") || detail.contains("overflow") =>
        {
            KvError::InvalidValue(message)
        }
        // The key holds a list, hash... not a string.
        _ if code == "WRONGTYPE" => KvError::InvalidValue(message),
        // "BUSY": a script runs past its time limit; the server answers nothing else.
        _ if code == "BUSY" => KvError::Unavailable(message),
        _ => KvError::Other(message),
    }
}
