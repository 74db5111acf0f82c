//! The embedded SQLite backend: Spin's `type = "spin"` key-value store.
//!
//! The table is Spin 4.0.2's (`spin_key_value`, one row per `(store, key)`,
//! `store` being the store's label), so files interchange with Spin. Where
//! this module differs from Spin it is on purpose:
//!
//! - Writes that read first (`increment`, `swap`) run in `BEGIN IMMEDIATE`
//!   transactions. Spin uses deferred ones, whose read lock cannot be upgraded
//!   while another process writes the file (SQLITE_BUSY without waiting).
//! - `swap` with [`Expected::Absent`] inserts only if the key is still absent;
//!   Spin upserts unconditionally and overwrites a concurrent insert.
//! - A counter that is not 8 bytes long is [`KvError::InvalidValue`]; Spin
//!   panics.
//!
//! Connections: one writer and a few readers per store handle. SQLite admits
//! one writer per file at a time, so writers of one handle queue on an async
//! FIFO lock instead of polling the file lock against each other; readers run
//! beside the writer thanks to WAL. All SQLite calls run on tokio's blocking
//! pool.

use std::cell::Cell;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior, params};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    DEFAULT_TIMEOUT, Expected, KvBackend, KvError, MAX_VALUE_SIZE, SwapOutcome, check_size,
    timed_out, too_large,
};

/// Spin 4.0.2's schema, verbatim, so that files interchange.
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS spin_key_value (store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (store, key))";

/// Reads the value and its size; the value itself only when it is within
/// [`MAX_VALUE_SIZE`], so an oversized row is refused without loading it
/// (SQLite takes a blob's size from the record header).
const SELECT_VALUE: &str = "SELECT octet_length(value), CASE WHEN octet_length(value) <= ?3 THEN value END FROM spin_key_value WHERE store = ?1 AND key = ?2";
const UPSERT: &str = "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3) ON CONFLICT(store, key) DO UPDATE SET value = excluded.value";
const DELETE: &str = "DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2";
const EXISTS: &str = "SELECT 1 FROM spin_key_value WHERE store = ?1 AND key = ?2";
const LIST_KEYS: &str = "SELECT key FROM spin_key_value WHERE store = ?1";

/// Reader connections per file-backed handle: enough to overlap reads with the
/// writer on a small machine without holding many file descriptors.
const READERS: usize = 4;

/// How long a connection sleeps between attempts to take a lock another
/// connection holds. Short and constant on purpose: SQLite's own busy handler
/// backs off to 100 ms sleeps, so a waiter polls rarely and can be starved by
/// a process that commits back to back, failing long before its deadline.
const BUSY_POLL: Duration = Duration::from_millis(1);

/// How long past the deadline the async side waits for the blocking side
/// before giving up on it, so that the blocking side's own (more precise)
/// busy or interrupt error usually wins.
const GRACE: Duration = Duration::from_millis(50);

thread_local! {
    /// Deadline of the operation running on this thread, read by
    /// [`busy_wait`]. SQLite calls the busy handler on the thread that runs the
    /// statement, so a thread-local is exact and needs no locking.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The busy handler of every connection: keeps retrying a locked database
/// until the current operation's deadline. This is the store's busy timeout;
/// it replaces `PRAGMA busy_timeout` so the wait ends at the operation's
/// deadline, not a fixed time after the lock attempt began.
fn busy_wait(_attempts: i32) -> bool {
    let Some(deadline) = DEADLINE.with(Cell::get) else {
        return false;
    };
    let now = Instant::now();
    if now >= deadline {
        return false;
    }
    std::thread::sleep(BUSY_POLL.min(deadline - now));
    true
}

/// Runs `f` with [`DEADLINE`] set to `deadline`.
fn with_deadline<T>(deadline: Instant, f: impl FnOnce() -> T) -> T {
    struct Reset(Option<Instant>);
    impl Drop for Reset {
        fn drop(&mut self) {
            DEADLINE.with(|d| d.set(self.0));
        }
    }
    let _reset = Reset(DEADLINE.with(|d| d.replace(Some(deadline))));
    f()
}

/// A key-value store in an SQLite file (or in memory), compatible with Spin's
/// `type = "spin"` store.
///
/// Several handles, in one process or several, may open the same file; their
/// `increment` and `swap` stay atomic.
pub struct SqliteStore {
    label: Arc<str>,
    /// Where the store is, for messages.
    location: Arc<str>,
    writer: Arc<Pool>,
    /// The reader connections; the writer's pool again for in-memory stores,
    /// whose data lives in its one connection.
    readers: Arc<Pool>,
    timeout: Duration,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.location)
            .field("label", &self.label)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the SQLite file at `path` and serves the
    /// store named `label` from it.
    ///
    /// Sets `journal_mode=WAL` and `synchronous=FULL` and creates Spin's table.
    /// Blocks the calling thread for at most about [`DEFAULT_TIMEOUT`] (while
    /// another process holds the file locked). A missing parent directory is
    /// reported as such.
    pub fn open(path: &Path, label: &str) -> Result<Self, KvError> {
        let location = path.display().to_string();
        let context = |e: KvError| e.context(&format!("cannot open SQLite store {location}"));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(KvError::Other(format!(
                "cannot open SQLite store {location}: directory {} does not exist",
                dir.display()
            )));
        }
        let deadline = Instant::now() + DEFAULT_TIMEOUT;
        // No URI flag: the path is a file name even if it starts with `file:`.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let writer = with_deadline(deadline, || -> Result<Connection, KvError> {
            let conn = Connection::open_with_flags(path, flags).map_err(map_err)?;
            let conn = configure(conn)?;
            conn.execute_batch(CREATE_TABLE).map_err(map_err)?;
            Ok(conn)
        })
        .map_err(context)?;
        let readers = (0..READERS)
            .map(|_| {
                with_deadline(deadline, || {
                    configure(Connection::open_with_flags(path, flags).map_err(map_err)?)
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(context)?;
        Ok(Self {
            label: label.into(),
            location: location.into(),
            writer: Pool::new(vec![writer]),
            readers: Pool::new(readers),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// A private, empty store in memory, gone when the handle is dropped.
    pub fn in_memory(label: &str) -> Result<Self, KvError> {
        let deadline = Instant::now() + DEFAULT_TIMEOUT;
        let conn = with_deadline(deadline, || -> Result<Connection, KvError> {
            let conn = configure(Connection::open_in_memory().map_err(map_err)?)?;
            conn.execute_batch(CREATE_TABLE).map_err(map_err)?;
            Ok(conn)
        })
        .map_err(|e| e.context("cannot create in-memory SQLite store"))?;
        let pool = Pool::new(vec![conn]);
        Ok(Self {
            label: label.into(),
            location: ":memory:".into(),
            writer: pool.clone(),
            readers: pool,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Sets how long each operation may take, waiting for locks included,
    /// before it fails with [`KvError::Unavailable`] (default
    /// [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs `f` on a connection from `pool` on the blocking thread pool,
    /// within the operation timeout.
    async fn run<T, F>(&self, pool: &Arc<Pool>, what: &'static str, f: F) -> Result<T, KvError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &str) -> Result<T, KvError> + Send + 'static,
    {
        let deadline = Instant::now() + self.timeout;
        let tokio_deadline = tokio::time::Instant::from_std(deadline);
        // Per-operation messages leave the file's path out: they may reach
        // the guest. The log has it.
        let not_in_time = || timed_out(&format!("SQLite {what}"), self.timeout);

        let mut lease = tokio::time::timeout_at(tokio_deadline, pool.lease())
            .await
            .map_err(|_| not_in_time())??;
        // Cleared by the blocking side when it is done with the connection, so
        // a late interrupt cannot hit the next operation on that connection.
        let interrupt = Arc::new(Mutex::new(Some(lease.conn().get_interrupt_handle())));
        let interrupt_done = interrupt.clone();
        let label = self.label.clone();
        let task = tokio::task::spawn_blocking(move || {
            let result = with_deadline(deadline, || f(lease.conn(), &label));
            *lock(&interrupt_done) = None;
            drop(lease);
            result
        });
        match tokio::time::timeout_at(tokio_deadline + GRACE, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join_error)) => {
                tracing::error!(location = %self.location, what, %join_error, "SQLite task failed");
                Err(KvError::Other(format!(
                    "SQLite {what} failed: {join_error}"
                )))
            }
            Err(_) => {
                // Stop the statement (a long scan, say) so the connection comes
                // back soon; a stalled fsync cannot be interrupted, but the
                // caller is answered now either way.
                if let Some(handle) = lock(&interrupt).as_ref() {
                    handle.interrupt();
                }
                tracing::warn!(location = %self.location, what, "SQLite operation timed out");
                Err(not_in_time())
            }
        }
    }

    async fn read<T, F>(&self, what: &'static str, f: F) -> Result<T, KvError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &str) -> Result<T, KvError> + Send + 'static,
    {
        self.run(&self.readers, what, f).await
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction on the writer: the write
    /// lock is taken up front, so what `f` reads cannot change before it
    /// commits, in this process or any other.
    async fn write<T, F>(&self, what: &'static str, f: F) -> Result<T, KvError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>, &str) -> Result<T, KvError> + Send + 'static,
    {
        self.run(&self.writer, what, move |conn, label| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let value = f(&tx, label)?;
            tx.commit().map_err(map_err)?;
            Ok(value)
        })
        .await
    }
}

#[async_trait::async_trait]
impl KvBackend for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let key = key.to_owned();
        self.read("get", move |conn, label| read_value(conn, label, &key))
            .await
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        check_size(key, value)?;
        let (key, value) = (key.to_owned(), value.to_owned());
        self.write("set", move |tx, label| upsert(tx, label, &key, &value))
            .await
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        let key = key.to_owned();
        self.write("delete", move |tx, label| {
            tx.prepare_cached(DELETE)
                .and_then(|mut stmt| stmt.execute(params![label, key]))
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn exists(&self, key: &str) -> Result<bool, KvError> {
        let key = key.to_owned();
        self.read("exists", move |conn, label| {
            conn.prepare_cached(EXISTS)
                .and_then(|mut stmt| stmt.exists(params![label, key]))
                .map_err(map_err)
        })
        .await
    }

    async fn list_keys(&self) -> Result<Vec<String>, KvError> {
        self.read("list_keys", move |conn, label| {
            let mut stmt = conn.prepare_cached(LIST_KEYS).map_err(map_err)?;
            let keys = stmt
                .query_map(params![label], |row| row.get::<_, String>(0))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(map_err)?;
            Ok(keys)
        })
        .await
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        let keys = keys.to_vec();
        self.read("get_many", move |conn, label| {
            // One read transaction: every value comes from the same snapshot.
            let tx = conn.transaction().map_err(map_err)?;
            let mut values = Vec::with_capacity(keys.len());
            for key in keys {
                let value = read_value(&tx, label, &key)?;
                values.push((key, value));
            }
            Ok(values)
        })
        .await
    }

    async fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        for (key, value) in items {
            check_size(key, value)?;
        }
        if items.is_empty() {
            return Ok(());
        }
        let items = items.to_vec();
        self.write("set_many", move |tx, label| {
            for (key, value) in &items {
                upsert(tx, label, key, value)?;
            }
            Ok(())
        })
        .await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys = keys.to_vec();
        self.write("delete_many", move |tx, label| {
            let mut stmt = tx.prepare_cached(DELETE).map_err(map_err)?;
            for key in &keys {
                stmt.execute(params![label, key]).map_err(map_err)?;
            }
            Ok(())
        })
        .await
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let key = key.to_owned();
        self.write("increment", move |tx, label| {
            let current = match read_value(tx, label, &key)? {
                None => 0,
                Some(bytes) => decode_counter(&key, &bytes)?,
            };
            let new = current.checked_add(delta).ok_or_else(|| {
                KvError::InvalidValue(format!(
                    "incrementing key {key:?} ({current}) by {delta} overflows a 64-bit integer"
                ))
            })?;
            // Spin's counter format: the i64's 8 bytes, little-endian.
            upsert(tx, label, &key, &new.to_le_bytes())?;
            Ok(new)
        })
        .await
    }

    async fn swap(
        &self,
        key: &str,
        expected: &Expected,
        new: &[u8],
    ) -> Result<SwapOutcome, KvError> {
        check_size(key, new)?;
        let (key, expected, new) = (key.to_owned(), expected.clone(), new.to_owned());
        self.write("swap", move |tx, label| {
            let current = read_value(tx, label, &key)?;
            let matches = match &expected {
                Expected::Absent => current.is_none(),
                Expected::Value(value) => current.as_deref() == Some(value.as_slice()),
            };
            if !matches {
                // Nothing written: committing the empty transaction is a no-op.
                return Ok(SwapOutcome::Conflict { current });
            }
            upsert(tx, label, &key, &new)?;
            Ok(SwapOutcome::Swapped)
        })
        .await
    }
}

/// Decodes Spin's counter format, refusing (not panicking on) anything else.
fn decode_counter(key: &str, bytes: &[u8]) -> Result<i64, KvError> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| {
        KvError::InvalidValue(format!(
            "value of key {key:?} is not a counter: {} bytes, not an 8-byte little-endian integer",
            bytes.len()
        ))
    })?;
    Ok(i64::from_le_bytes(bytes))
}

fn read_value(conn: &Connection, label: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
    let mut stmt = conn.prepare_cached(SELECT_VALUE).map_err(map_err)?;
    let mut rows = stmt
        .query(params![label, key, MAX_VALUE_SIZE as i64])
        .map_err(map_err)?;
    let Some(row) = rows.next().map_err(map_err)? else {
        return Ok(None);
    };
    let len: i64 = row.get(0).map_err(map_err)?;
    match row.get_ref(1).map_err(map_err)? {
        // Spin writes blobs; text written by other tools is taken as its bytes.
        ValueRef::Blob(bytes) | ValueRef::Text(bytes) => Ok(Some(bytes.to_vec())),
        ValueRef::Null => Err(too_large(key, usize::try_from(len).unwrap_or(usize::MAX))),
        other => Err(KvError::InvalidValue(format!(
            "value of key {key:?} is stored as {:?}, not as bytes",
            other.data_type()
        ))),
    }
}

fn upsert(conn: &Connection, label: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
    conn.prepare_cached(UPSERT)
        .and_then(|mut stmt| stmt.execute(params![label, key, value]))
        .map_err(map_err)?;
    Ok(())
}

/// Settings shared by the writer and the readers.
fn configure(mut conn: Connection) -> Result<Connection, KvError> {
    conn.busy_handler(Some(busy_wait)).map_err(map_err)?;
    // WAL lets readers run beside the writer. An in-memory database keeps its
    // `memory` journal, which is what SQLite answers there.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(map_err)?;
    if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
        return Err(KvError::Other(format!(
            "SQLite refused WAL journal mode (got {mode:?})"
        )));
    }
    // FULL: a commit reported to the guest survives a power loss, as in Spin.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(map_err)?;
    Ok(conn)
}

/// Maps an SQLite failure onto the error the guest will see.
fn map_err(error: rusqlite::Error) -> KvError {
    let message = format!("SQLite: {error}");
    let rusqlite::Error::SqliteFailure(failure, _) = &error else {
        return KvError::Other(message);
    };
    match failure.code {
        ErrorCode::DiskFull => KvError::Full(message),
        ErrorCode::TooBig => KvError::TooLarge(message),
        // Busy past the deadline, or interrupted at it: the store is there
        // but could not serve us in time.
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => KvError::Unavailable(format!(
            "{message} (another connection held the lock until the operation's timeout)"
        )),
        ErrorCode::OperationInterrupted => KvError::Unavailable(message),
        ErrorCode::CannotOpen
        | ErrorCode::SystemIoFailure
        | ErrorCode::FileLockingProtocolFailed
        | ErrorCode::PermissionDenied => KvError::Unavailable(message),
        _ => KvError::Other(message),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks leaves nothing half-updated.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A fixed set of connections; a semaphore permit stands for an idle one.
struct Pool {
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    fn new(conns: Vec<Connection>) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(conns.len())),
            idle: Mutex::new(conns),
        })
    }

    /// Waits (FIFO) for an idle connection.
    async fn lease(self: &Arc<Self>) -> Result<Lease, KvError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| KvError::Other("SQLite connection pool closed".into()))?;
        let conn = lock(&self.idle)
            .pop()
            .ok_or_else(|| KvError::Other("SQLite connection pool lost a connection".into()))?;
        Ok(Lease {
            conn: Some(conn),
            pool: self.clone(),
            _permit: permit,
        })
    }
}

/// A connection taken from a [`Pool`]; goes back when dropped (also when the
/// operation panicked), before its permit is released.
struct Lease {
    conn: Option<Connection>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    fn conn(&mut self) -> &mut Connection {
        // Only `drop` takes the connection out.
        self.conn
            .as_mut()
            .expect("lease holds its connection until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            lock(&self.pool.idle).push(conn);
        }
    }
}
