//! Background WAL checkpoints: the writer connection's WAL hook and the
//! checkpointer thread it wakes (see the `sqlite` module docs).

use std::sync::{Arc, mpsc};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};

use super::map_err;
use crate::KvError;

/// WAL length (pages) past which the checkpointer is woken: SQLite's own
/// auto-checkpoint threshold.
const CHECKPOINT_PAGES: i32 = 1000;

/// Shortest time between two background checkpoints.
const CHECKPOINT_PACE: Duration = Duration::from_millis(5);

/// Hands the checkpoints of `writer`'s database to a thread of their own
/// that uses `conn` (see the `sqlite` module docs). The thread ends when
/// `writer` is dropped.
pub(super) fn checkpoint_in_background(
    mut writer: Connection,
    conn: Connection,
    location: Arc<str>,
) -> Result<Connection, KvError> {
    let (wake, woken) = mpsc::sync_channel::<()>(1);
    // Replaces SQLite's auto-checkpoint (itself a WAL hook) on this
    // connection: after each commit, `pages` is the length of the log.
    writer
        .wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages| {
            if pages >= 2 * CHECKPOINT_PAGES {
                // The log restarts from its beginning only at a write after
                // a checkpoint that copied all of it, which passes racing
                // back-to-back commits rarely manage. This one finishes the
                // job: the background passes copied all but the last few
                // milliseconds of frames.
                match wal.checkpoint_v2(rusqlite::wal::CheckpointMode::PASSIVE) {
                    Ok(_) => {}
                    // A background pass is running: the next commit retries.
                    Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) => {}
                    Err(error) => tracing::warn!(%error, "SQLite checkpoint failed"),
                }
            } else if pages >= CHECKPOINT_PAGES {
                // Full: a wake-up is already pending.
                let _ = wake.try_send(());
            }
            Ok(())
        }))
        .map_err(map_err)?;
    std::thread::Builder::new()
        .name("kiosk-kv-sqlite-checkpointer".into())
        .spawn(move || {
            while woken.recv().is_ok() {
                let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                    Ok((row.get::<_, i32>(1)?, row.get::<_, i32>(2)?))
                });
                match result {
                    Ok((log, copied)) => {
                        tracing::debug!(location = %location, log, copied, "SQLite checkpoint")
                    }
                    Err(error) => {
                        tracing::warn!(location = %location, %error, "SQLite checkpoint failed")
                    }
                }
                // Small, regular passes: the disk writes a few pages of the
                // database between commits instead of a thousand at once,
                // which would hold up the commits' own flushes.
                std::thread::sleep(CHECKPOINT_PACE);
            }
        })
        .map_err(|e| KvError::Other(format!("cannot start the SQLite checkpointer thread: {e}")))?;
    Ok(writer)
}
