//! The host's own record of what it handed out, in an SQLite file of its
//! state dir (`fence-<label>.db`): it survives whatever happens to Redis.
//!
//! - `high_water`: per fenced key, the largest value this host returned.
//! - `meta`: the epoch this host is through the barrier of, and the largest
//!   sequence it saw (`seq`).
//! - `peers`: the hosts' heartbeats at the last reading taken while the
//!   epoch was the host's own, so that after a wipe the host still knows whom
//!   to wait for.
//!
//! WAL with `synchronous=NORMAL`: a committed transaction survives a crash of
//! the process (it is in the WAL file, which the OS keeps); only a power loss
//! of this machine can lose the last commits, and the same power loss takes
//! the host's in-flight answers with it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::KvError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS high_water (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL,
    touched_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS peers (
    host TEXT PRIMARY KEY,
    heartbeat_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value
);
";

/// A host's journal of one fenced store.
pub(crate) struct Journal {
    conn: Mutex<Connection>,
}

/// What the journal holds about the store as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// The epoch the host last went through the barrier of.
    pub epoch: Option<String>,
    /// The largest sequence the host saw.
    pub seq: i64,
}

impl Journal {
    /// Opens (creating if needed) the journal at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, KvError> {
        let conn = Connection::open(path).map_err(|e| err(path, e))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| err(path, e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| err(path, e))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| err(path, e))?;
        conn.execute_batch(SCHEMA).map_err(|e| err(path, e))?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, KvError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(|e| KvError::Unavailable(format!("fence journal: {e}")))
    }

    /// The epoch and sequence recorded.
    pub(crate) fn snapshot(&self) -> Result<Snapshot, KvError> {
        self.with(|c| {
            let epoch: Option<String> = c
                .query_row("SELECT value FROM meta WHERE name = 'epoch'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            let seq: Option<i64> = c
                .query_row("SELECT value FROM meta WHERE name = 'seq'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(Snapshot {
                epoch,
                seq: seq.unwrap_or(0),
            })
        })
    }

    /// Records, in one transaction, that `key` was handed `value` and that
    /// the host's sequence reached `seq`.
    pub(crate) fn record(
        &self,
        key: &str,
        value: i64,
        seq: i64,
        now_ms: i64,
    ) -> Result<(), KvError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.prepare_cached(
                "INSERT INTO high_water (key, value, touched_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE
                 SET value = max(value, excluded.value), touched_ms = excluded.touched_ms",
            )?
            .execute(params![key, value, now_ms])?;
            tx.prepare_cached(
                "INSERT INTO meta (name, value) VALUES ('seq', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
            )?
            .execute(params![seq])?;
            tx.commit()
        })
    }

    /// Every key's high-water mark.
    pub(crate) fn high_water(&self) -> Result<Vec<(String, i64)>, KvError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached("SELECT key, value FROM high_water ORDER BY key")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    /// Records that the host went through the barrier of `epoch`.
    pub(crate) fn set_epoch(&self, epoch: &str) -> Result<(), KvError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO meta (name, value) VALUES ('epoch', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![epoch],
            )
            .map(drop)
        })
    }

    /// Replaces the peer table with a reading of the heartbeats taken at `now_ms`.
    pub(crate) fn set_peers(
        &self,
        hosts: &BTreeMap<String, i64>,
        now_ms: i64,
    ) -> Result<(), KvError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM peers", [])?;
            {
                let mut insert =
                    tx.prepare_cached("INSERT INTO peers (host, heartbeat_ms) VALUES (?1, ?2)")?;
                for (host, ms) in hosts {
                    insert.execute(params![host, ms])?;
                }
            }
            tx.execute(
                "INSERT INTO meta (name, value) VALUES ('peers_read_ms', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![now_ms],
            )?;
            tx.commit()
        })
    }

    /// The peers whose heartbeat, at the last reading, was within `window`
    /// of that reading: the hosts that were alive then.
    pub(crate) fn alive_peers(&self, window: Duration) -> Result<Vec<String>, KvError> {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        self.with(|c| {
            let read_ms: Option<i64> = c
                .query_row(
                    "SELECT value FROM meta WHERE name = 'peers_read_ms'",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(read_ms) = read_ms else {
                return Ok(Vec::new());
            };
            let mut stmt =
                c.prepare_cached("SELECT host FROM peers WHERE heartbeat_ms >= ?1 ORDER BY host")?;
            let rows = stmt.query_map(params![read_ms.saturating_sub(window_ms)], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Forgets keys not handed out since `before_ms`.
    pub(crate) fn prune(&self, before_ms: i64) -> Result<usize, KvError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM high_water WHERE touched_ms < ?1",
                params![before_ms],
            )
        })
    }
}

fn err(path: &Path, e: rusqlite::Error) -> KvError {
    KvError::Other(format!("fence journal {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_water_only_rises_and_old_keys_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("j.db")).unwrap();
        assert_eq!(journal.snapshot().unwrap(), Snapshot::default());
        journal.record("a", 5, 3, 1_000).unwrap();
        journal.record("a", 4, 2, 2_000).unwrap();
        journal.record("b", 1, 4, 500).unwrap();
        assert_eq!(
            journal.high_water().unwrap(),
            vec![("a".into(), 5), ("b".into(), 1)]
        );
        assert_eq!(journal.snapshot().unwrap().seq, 4);
        assert_eq!(journal.prune(1_000).unwrap(), 1);
        assert_eq!(journal.high_water().unwrap(), vec![("a".into(), 5)]);
    }

    #[test]
    fn alive_peers_are_those_heard_from_shortly_before_the_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let journal = Journal::open(&path).unwrap();
        assert!(
            journal
                .alive_peers(Duration::from_secs(10))
                .unwrap()
                .is_empty()
        );
        let hosts = BTreeMap::from([("old".to_string(), 1_000), ("new".to_string(), 95_000)]);
        journal.set_peers(&hosts, 100_000).unwrap();
        journal.set_epoch("3-ab").unwrap();
        drop(journal);
        // What was committed is there after reopening.
        let journal = Journal::open(&path).unwrap();
        assert_eq!(
            journal.alive_peers(Duration::from_secs(10)).unwrap(),
            vec!["new".to_string()]
        );
        assert_eq!(journal.snapshot().unwrap().epoch.as_deref(), Some("3-ab"));
    }
}
