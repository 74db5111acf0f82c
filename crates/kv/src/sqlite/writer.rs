//! The writer thread of a [`SqliteStore`](super::SqliteStore) handle: the
//! operations sent to it ([`Job`], [`Op`]), the batching loop that runs them
//! in one transaction, and the savepoint helpers.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use super::{MAX_BATCH, map_err, with_deadline};
use crate::{KvError, timed_out};

/// The sending side of a handle's writer thread. The thread ends once this is
/// dropped and the operations already queued are done.
pub(super) struct Writer {
    pub(super) jobs: mpsc::Sender<Box<dyn Job>>,
    /// Largest batch, read by the thread before each batch.
    pub(super) max_batch: Arc<AtomicUsize>,
    /// Transactions the thread has committed, for tests.
    pub(super) commits: Arc<AtomicU64>,
}

impl Writer {
    pub(super) fn spawn(
        conn: Connection,
        label: Arc<str>,
        location: Arc<str>,
    ) -> Result<Self, KvError> {
        let (jobs, queue) = mpsc::channel();
        let max_batch = Arc::new(AtomicUsize::new(MAX_BATCH));
        let commits = Arc::new(AtomicU64::new(0));
        let thread = WriterThread {
            label,
            location,
            max_batch: max_batch.clone(),
            commits: commits.clone(),
        };
        std::thread::Builder::new()
            .name("kiosk-kv-sqlite-writer".into())
            .spawn(move || thread.run(conn, &queue))
            .map_err(|e| KvError::Other(format!("cannot start the SQLite writer thread: {e}")))?;
        Ok(Self {
            jobs,
            max_batch,
            commits,
        })
    }
}

/// One write for the writer thread, its result type erased.
pub(super) trait Job: Send {
    fn deadline(&self) -> Instant;
    /// Whether the caller has stopped waiting for the answer (timed out or
    /// cancelled): then the operation is not started.
    fn abandoned(&self) -> bool;
    /// Runs the operation (inside its savepoint) and keeps the result for
    /// [`Job::answer`]. Runs it at most once.
    fn run(&mut self, tx: &Transaction<'_>, label: &str);
    /// The error the operation failed with, once run.
    fn error(&self) -> Option<&KvError>;
    /// Answers the caller: the operation's own error if it failed, else
    /// `batch`'s error if the batch did not commit (or the operation was not
    /// run), else its result.
    fn answer(self: Box<Self>, batch: Result<(), &KvError>);
    /// The error of an operation whose deadline passed before its turn.
    fn timed_out(&self) -> KvError;
}

pub(super) struct Op<T, F> {
    pub(super) f: Option<F>,
    pub(super) result: Option<Result<T, KvError>>,
    pub(super) reply: oneshot::Sender<Result<T, KvError>>,
    pub(super) deadline: Instant,
    pub(super) what: &'static str,
    pub(super) timeout: Duration,
}

impl<T, F> Job for Op<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Transaction<'_>, &str) -> Result<T, KvError> + Send + 'static,
{
    fn deadline(&self) -> Instant {
        self.deadline
    }

    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn run(&mut self, tx: &Transaction<'_>, label: &str) {
        let Some(f) = self.f.take() else {
            return;
        };
        let result = catch_unwind(AssertUnwindSafe(|| f(tx, label))).unwrap_or_else(|_| {
            Err(KvError::Other(format!(
                "SQLite {} failed: it panicked",
                self.what
            )))
        });
        self.result = Some(result);
    }

    fn error(&self) -> Option<&KvError> {
        self.result.as_ref()?.as_ref().err()
    }

    fn answer(self: Box<Self>, batch: Result<(), &KvError>) {
        let answer = match (self.result, batch) {
            (Some(Err(own)), _) => Err(own),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (_, Err(batch)) => Err(batch.clone()),
            (None, Ok(())) => Err(KvError::Other(format!("SQLite {} was not run", self.what))),
        };
        // The caller may have given up meanwhile; nothing to do then.
        let _ = self.reply.send(answer);
    }

    fn timed_out(&self) -> KvError {
        timed_out(&format!("SQLite {}", self.what), self.timeout)
    }
}

/// What the writer thread needs besides its connection and queue.
struct WriterThread {
    label: Arc<str>,
    location: Arc<str>,
    max_batch: Arc<AtomicUsize>,
    commits: Arc<AtomicU64>,
}

impl WriterThread {
    fn run(self, mut conn: Connection, queue: &mpsc::Receiver<Box<dyn Job>>) {
        let mut pending = VecDeque::new();
        // Blocks for the first operation; ends when every sender is dropped.
        while let Ok(first) = queue.recv() {
            pending.push_back(first);
            let max = self.max_batch.load(Ordering::Relaxed).max(1);
            while pending.len() < max {
                match queue.try_recv() {
                    Ok(job) => pending.push_back(job),
                    Err(_) => break,
                }
            }
            // A batch may leave operations it could not run (the lock was not
            // taken in time for all of them, or SQLite rolled the transaction
            // back under an earlier one): they go in the next transaction.
            while !pending.is_empty() {
                self.run_batch(&mut conn, &mut pending);
            }
        }
    }

    /// Runs operations of `pending` in one transaction and answers them.
    /// Those it could not get to stay in `pending`; every call answers at
    /// least one operation or leaves `pending` empty.
    fn run_batch(&self, conn: &mut Connection, pending: &mut VecDeque<Box<dyn Job>>) {
        let (label, location) = (&*self.label, &*self.location);
        let now = Instant::now();
        let mut live = VecDeque::with_capacity(pending.len());
        for job in pending.drain(..) {
            if job.abandoned() {
                continue;
            }
            if job.deadline() <= now {
                let error = job.timed_out();
                job.answer(Err(&error));
                continue;
            }
            live.push_back(job);
        }
        *pending = live;
        // The busy handler waits for the lock until the EARLIEST deadline of the
        // batch, not the latest: no operation then waits (nor is written) past its
        // own deadline, which its caller would take for a failure although the
        // write happened. If another connection holds the lock until then, the
        // operations already due fail and the others try again, in a new batch,
        // until the next deadline.
        let Some(deadline) = pending.iter().map(|job| job.deadline()).min() else {
            return;
        };
        with_deadline(deadline, || {
            let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
                Ok(tx) => tx,
                Err(error) => {
                    let busy = matches!(
                        error.sqlite_error_code(),
                        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                    );
                    let error = map_err(error);
                    if !busy {
                        tracing::warn!(location, %error, "SQLite cannot begin a write transaction");
                        for job in pending.drain(..) {
                            job.answer(Err(&error));
                        }
                        return;
                    }
                    // Busy: fail those due (normally at least the earliest, whose
                    // deadline the busy handler waited for); the others try again.
                    // If SQLite answered busy without waiting, fail them all, as
                    // one transaction per operation would.
                    let now = Instant::now();
                    let (due, rest): (VecDeque<_>, VecDeque<_>) =
                        pending.drain(..).partition(|job| job.deadline() <= now);
                    if due.is_empty() {
                        for job in rest {
                            job.answer(Err(&error));
                        }
                    } else {
                        for job in due {
                            job.answer(Err(&error));
                        }
                        *pending = rest;
                    }
                    return;
                }
            };
            let mut done: Vec<Box<dyn Job>> = Vec::with_capacity(pending.len());
            while let Some(mut job) = pending.pop_front() {
                if job.abandoned() {
                    continue;
                }
                if job.deadline() <= Instant::now() {
                    let error = job.timed_out();
                    job.answer(Err(&error));
                    continue;
                }
                let ran = in_savepoint_raw(&tx, "kv_op", || {
                    job.run(&tx, label);
                    job.error().map_or(Ok(()), |e| Err(e.clone()))
                });
                match ran {
                    // A failed operation is rolled back alone and keeps its error.
                    Ok(()) | Err(SavepointError::Op(_)) => done.push(job),
                    Err(SavepointError::Lost(error)) => {
                        // SQLite rolled the whole transaction back (disk full, I/O
                        // error...): the operations before this one are undone.
                        // Those after it stay in `pending` for the next batch.
                        tracing::warn!(location, %error, "SQLite rolled back a batch of writes");
                        job.answer(Err(&error));
                        for job in done {
                            job.answer(Err(&error));
                        }
                        // Dropping `tx` rolls back whatever is left of it.
                        return;
                    }
                }
            }
            let committed = tx.commit().map_err(map_err);
            if let Err(error) = &committed {
                tracing::warn!(location, %error, "SQLite cannot commit a batch of writes");
            }
            if committed.is_ok() {
                self.commits.fetch_add(1, Ordering::Relaxed);
            }
            for job in done {
                job.answer(committed.as_ref().map(|_| ()));
            }
        });
    }
}

/// Why [`in_savepoint_raw`] failed.
enum SavepointError {
    /// `f` failed; its changes are rolled back, the enclosing transaction is
    /// intact.
    Op(KvError),
    /// The enclosing transaction is gone (SQLite rolled it back after an
    /// error, or a savepoint statement failed): everything since it began is
    /// undone.
    Lost(KvError),
}

/// Runs `f` inside `SAVEPOINT name`: released if `f` succeeds, rolled back to
/// (and released) if it fails. Outside a transaction, the savepoint is one.
fn in_savepoint_raw<T>(
    conn: &Connection,
    name: &str,
    f: impl FnOnce() -> Result<T, KvError>,
) -> Result<T, SavepointError> {
    let exec = |sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([]))
            .map(drop)
            .map_err(|e| SavepointError::Lost(map_err(e)))
    };
    let in_transaction = !conn.is_autocommit();
    exec(&format!("SAVEPOINT {name}"))?;
    let result = f();
    if in_transaction && conn.is_autocommit() {
        // Some errors (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM...) make SQLite
        // roll back the whole transaction, not just the statement.
        return Err(SavepointError::Lost(match result {
            Ok(_) => KvError::Other("SQLite ended the transaction".into()),
            Err(e) => e.context("SQLite rolled back the transaction"),
        }));
    }
    match result {
        Ok(value) => {
            exec(&format!("RELEASE {name}"))?;
            Ok(value)
        }
        Err(error) => {
            exec(&format!("ROLLBACK TO {name}"))?;
            exec(&format!("RELEASE {name}"))?;
            Err(SavepointError::Op(error))
        }
    }
}

/// [`in_savepoint_raw`] for callers that do not care how it failed.
pub(super) fn in_savepoint<T>(
    conn: &Connection,
    name: &str,
    f: impl FnOnce() -> Result<T, KvError>,
) -> Result<T, KvError> {
    in_savepoint_raw(conn, name, f).map_err(|(SavepointError::Op(e) | SavepointError::Lost(e))| e)
}
