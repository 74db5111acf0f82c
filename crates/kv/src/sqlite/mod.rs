//! The embedded SQLite backend: Spin's `type = "spin"` key-value store.
//!
//! The table is Spin 4.0.2's (`spin_key_value`, one row per `(store, key)`,
//! `store` being the store's label), so files interchange with Spin. Where
//! this module differs from Spin it is on purpose:
//!
//! - Writes run in `BEGIN IMMEDIATE` transactions. Spin uses deferred ones,
//!   whose read lock cannot be upgraded while another process writes the file
//!   (SQLITE_BUSY without waiting), which breaks `increment` and `swap`.
//! - `swap` with [`Expected::Absent`] inserts only if the key is still absent;
//!   Spin upserts unconditionally and overwrites a concurrent insert.
//! - A counter that is not 8 bytes long is [`KvError::InvalidValue`]; Spin
//!   panics.
//!
//! # Group commit
//!
//! SQLite admits one writer per file at a time, and with `synchronous=FULL`
//! every commit costs an fsync, so one transaction per write caps a store at a
//! few thousand writes per second however many callers there are. Each store
//! handle therefore has a writer thread that owns its writer connection.
//! Writes are sent to it as operations; it takes the first one queued plus
//! every other already waiting (up to [`MAX_BATCH`]) and runs them all in ONE
//! `BEGIN IMMEDIATE` transaction, in arrival order, each in its own
//! `SAVEPOINT`: an operation that fails (say `increment` on a value that is not
//! a counter) is rolled back alone and the others go on. Then it commits once,
//! one fsync for the batch, and only then answers: an operation is reported
//! done only once the commit containing it succeeded, and if that commit fails
//! every operation of the batch fails with it. Each operation sees the effects
//! of those before it in the batch, exactly as if they had committed one by
//! one, and nobody sees any of them before all are durable, so the batch is
//! indistinguishable from that serial order; across handles and processes the
//! write lock still serialises whole transactions.
//!
//! An operation whose deadline has passed before its turn, or whose caller has
//! stopped waiting, is not run (the first is answered with a timeout).
//!
//! # Checkpoints
//!
//! SQLite copies the WAL back into the database file (a checkpoint) once the
//! log passes 1000 pages, and by default the connection whose commit crossed
//! the mark does it, inside that commit: every write queued behind it waits
//! the checkpoint's copying and fsync out (tens of milliseconds on a VM).
//! Here the writer connection only notes that the log is long, and a
//! checkpointer thread with its own connection runs `PASSIVE` checkpoints,
//! which wait for no lock and let commits go on beside them. SQLite reuses
//! the log from its start only after a checkpoint that copied all of it,
//! which passes racing back-to-back commits rarely manage; so at twice the
//! threshold the writer finishes the job itself, copying only the frames
//! written since the last pass. The passes are small and regular (one every
//! few milliseconds while the log is long), so the disk is never handed a
//! thousand pages at once that a commit's flush would then wait for. Under
//! sustained writes the log file stays about two thresholds long.
//!
//! # Reads
//!
//! A file-backed handle also has a few reader connections; thanks to WAL
//! they run beside the writer and see committed data only. Point reads
//! (`get`, `exists`, `get_many`) run on the caller's thread when a reader is
//! idle, scans (`list_keys`) on tokio's blocking pool. An in-memory store is a single connection, so its writer thread
//! runs its reads too (inside its batches).

mod checkpoint;
mod readers;
mod writer;

use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, params};
use tokio::sync::oneshot;

use self::checkpoint::checkpoint_in_background;
use self::readers::Pool;
use self::writer::{Op, Writer, in_savepoint};
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

/// The most operations the writer thread commits in one transaction. Bounds
/// how long the first operation of a batch waits for the last (each one is a
/// few microseconds next to the fsync) and the size of the transaction.
const MAX_BATCH: usize = 256;

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
    /// Deadline of the operation (or batch) running on this thread, read by
    /// [`busy_wait`]. SQLite calls the busy handler on the thread that runs
    /// the statement, so a thread-local is exact and needs no locking.
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
/// `increment` and `swap` stay atomic. Each handle has a writer thread (see
/// the module docs), which ends when the handle is dropped.
pub struct SqliteStore {
    label: Arc<str>,
    /// Where the store is, for messages.
    location: Arc<str>,
    writer: Writer,
    /// The reader connections of a file-backed store; `None` for an
    /// in-memory store, whose data lives in the writer's one connection, so
    /// its reads go through the writer thread.
    readers: Option<Arc<Pool>>,
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
        let location: Arc<str> = path.display().to_string().into();
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
        let checkpointer = with_deadline(deadline, || {
            configure(Connection::open_with_flags(path, flags).map_err(map_err)?)
        })
        .map_err(context)?;
        let writer =
            checkpoint_in_background(writer, checkpointer, location.clone()).map_err(context)?;
        let readers = (0..READERS)
            .map(|_| {
                with_deadline(deadline, || {
                    configure(Connection::open_with_flags(path, flags).map_err(map_err)?)
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(context)?;
        let label: Arc<str> = label.into();
        Ok(Self {
            writer: Writer::spawn(writer, label.clone(), location.clone()).map_err(context)?,
            label,
            location,
            readers: Some(Pool::new(readers)),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// A private, empty store in memory, gone when the handle is dropped.
    pub fn in_memory(label: &str) -> Result<Self, KvError> {
        let context = |e: KvError| e.context("cannot create in-memory SQLite store");
        let deadline = Instant::now() + DEFAULT_TIMEOUT;
        let conn = with_deadline(deadline, || -> Result<Connection, KvError> {
            let conn = configure(Connection::open_in_memory().map_err(map_err)?)?;
            conn.execute_batch(CREATE_TABLE).map_err(map_err)?;
            Ok(conn)
        })
        .map_err(context)?;
        let label: Arc<str> = label.into();
        let location: Arc<str> = ":memory:".into();
        Ok(Self {
            writer: Writer::spawn(conn, label.clone(), location.clone()).map_err(context)?,
            label,
            location,
            readers: None,
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

    /// Caps how many writes the writer thread commits together (default
    /// [`MAX_BATCH`]); 1 gives one transaction, one fsync, per write. For
    /// benchmarks and tests.
    #[doc(hidden)]
    pub fn with_max_batch(self, max_batch: usize) -> Self {
        self.writer
            .max_batch
            .store(max_batch.clamp(1, MAX_BATCH), Ordering::Relaxed);
        self
    }

    /// How many write transactions this handle has committed so far (each one
    /// a batch of writes). For tests.
    #[doc(hidden)]
    pub fn commits(&self) -> u64 {
        self.writer.commits.load(Ordering::Relaxed)
    }

    /// A point read (a few keys by primary key): on the calling thread when
    /// a reader connection is idle, else as [`read`](Self::read) does.
    ///
    /// Such a read takes microseconds (WAL readers wait for no lock; the
    /// pages are in SQLite's cache or the OS's), less than the two thread
    /// switches of a hop to the blocking pool and back, which dominated a
    /// ticket's reads. The busy handler still ends any wait at the deadline.
    async fn point_read<T, F>(&self, what: &'static str, f: F) -> Result<T, KvError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &str) -> Result<T, KvError> + Send + 'static,
    {
        if let Some(mut lease) = self.readers.as_ref().and_then(|r| r.try_lease()) {
            let deadline = Instant::now() + self.timeout;
            return with_deadline(deadline, || f(lease.conn(), &self.label));
        }
        self.read(what, f).await
    }

    /// Runs `f` on a reader connection on the blocking thread pool, within the
    /// operation timeout; on an in-memory store, on the writer thread.
    async fn read<T, F>(&self, what: &'static str, f: F) -> Result<T, KvError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &str) -> Result<T, KvError> + Send + 'static,
    {
        match &self.readers {
            Some(readers) => self.run_on_reader(readers, what, f).await,
            // Inside a write transaction of the one connection: it sees every
            // write answered before, and is answered only after the commit,
            // so it never reports data that could still be rolled back.
            None => self.write(what, move |tx, label| f(tx, label)).await,
        }
    }

    async fn run_on_reader<T, F>(
        &self,
        pool: &Arc<Pool>,
        what: &'static str,
        f: F,
    ) -> Result<T, KvError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &str) -> Result<T, KvError> + Send + 'static,
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
                // back soon; the caller is answered now either way.
                if let Some(handle) = lock(&interrupt).as_ref() {
                    handle.interrupt();
                }
                tracing::warn!(location = %self.location, what, "SQLite operation timed out");
                Err(not_in_time())
            }
        }
    }

    /// Runs `f` on the writer thread, in a `BEGIN IMMEDIATE` transaction
    /// shared with the other writes of its batch (see the module docs): the
    /// write lock is taken up front, so what `f` reads cannot change before it
    /// commits, in this process or any other. Answers once that transaction
    /// has committed.
    async fn write<T, F>(&self, what: &'static str, f: F) -> Result<T, KvError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, &str) -> Result<T, KvError> + Send + 'static,
    {
        let deadline = Instant::now() + self.timeout;
        let (reply, answer) = oneshot::channel();
        let op = Op {
            f: Some(f),
            result: None,
            reply,
            deadline,
            what,
            timeout: self.timeout,
        };
        let stopped = || {
            tracing::error!(location = %self.location, what, "SQLite writer thread has stopped");
            KvError::Other(format!(
                "SQLite {what} failed: the store's writer thread has stopped"
            ))
        };
        self.writer.jobs.send(Box::new(op)).map_err(|_| stopped())?;
        let tokio_deadline = tokio::time::Instant::from_std(deadline);
        match tokio::time::timeout_at(tokio_deadline + GRACE, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(stopped()),
            Err(_) => {
                // Dropping `answer` tells the writer thread not to start this
                // operation if it has not yet. One already running is not
                // interrupted: that would roll back its whole batch.
                tracing::warn!(location = %self.location, what, "SQLite operation timed out");
                Err(timed_out(&format!("SQLite {what}"), self.timeout))
            }
        }
    }
}

#[async_trait::async_trait]
impl KvBackend for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let key = key.to_owned();
        self.point_read("get", move |conn, label| read_value(conn, label, &key))
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
        self.point_read("exists", move |conn, label| {
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
        self.point_read("get_many", move |conn, label| {
            // One read transaction, so every value comes from the same
            // snapshot. A savepoint, because on an in-memory store this runs
            // inside the writer's transaction already.
            in_savepoint(conn, "kv_get_many", || {
                let mut values = Vec::with_capacity(keys.len());
                for key in keys {
                    let value = read_value(conn, label, &key)?;
                    values.push((key, value));
                }
                Ok(values)
            })
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
        // All or nothing: the writer runs the operation in a savepoint.
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
