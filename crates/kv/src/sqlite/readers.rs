//! The reader connections of a file-backed store: a fixed [`Pool`] of them
//! and the [`Lease`] that hands one out.

use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::lock;
use crate::KvError;

/// A fixed set of connections; a semaphore permit stands for an idle one.
pub(super) struct Pool {
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    pub(super) fn new(conns: Vec<Connection>) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(conns.len())),
            idle: Mutex::new(conns),
        })
    }

    /// An idle connection now, if there is one.
    pub(super) fn try_lease(self: &Arc<Self>) -> Option<Lease> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        let conn = lock(&self.idle).pop()?;
        Some(Lease {
            conn: Some(conn),
            pool: self.clone(),
            _permit: permit,
        })
    }

    /// Waits (FIFO) for an idle connection.
    pub(super) async fn lease(self: &Arc<Self>) -> Result<Lease, KvError> {
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
pub(super) struct Lease {
    conn: Option<Connection>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    pub(super) fn conn(&mut self) -> &mut Connection {
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
