//! The sequence fence: numbering on Redis that never hands out a number
//! twice after Redis goes back in time.
//!
//! A Redis restart without persistence, a crash with `appendfsync everysec`
//! or a failover to a stale replica loses acknowledged writes: a counter
//! rewinds and would hand out numbers again. [`FencedStore`] wraps a
//! [`RedisStore`] and guards the keys the deployment declares as sequences
//! (key prefixes, e.g. `lane-seq:`); every other operation passes through.
//!
//! - Each host keeps a journal (SQLite, in its state dir) of the largest value
//!   it returned per sequence key and of its own write sequence, written
//!   before the value is returned.
//! - Each fenced increment is one Lua script that checks the store's epoch,
//!   increments the key and the host's write sequence together. A sequence not
//!   above the last one the host saw, or an epoch that is gone or changed,
//!   means the store lost writes (or another host saw it first).
//! - The host that sees it sets a new epoch; every host that sees a new epoch
//!   raises every key of its journal to its high-water mark and joins the
//!   epoch's barrier. Fenced increments answer [`KvError::Unavailable`] until
//!   every host that was alive before the rewind has raised its keys, or until
//!   the peer timeout. So a host that never saw the lost numbers learns of
//!   them from the hosts that handed them out, before it numbers again.
//! - A background task per store beats a heartbeat every second and checks
//!   the epoch and the host's own sequence, so an idle host notices too.
//!
//! Only `increment` is fenced: the application uses nothing else on sequence
//! keys, so `set`, `swap` and the batch operations pass through unguarded.
//!
//! Limit: a partial loss (a crash with `appendfsync everysec`, a failover
//! to a stale replica) that lost only another host's writes is noticed when
//! that host next writes or polls (about a second); until then this host can
//! hand out one of those numbers again. Redis `WAIT` after each write narrows
//! the failover case. A peer that does not answer within the peer timeout is
//! named in an `error!` log: numbers it handed out in the lost window may be
//! handed out again.

mod barrier;
mod journal;
mod protocol;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use self::journal::Journal;
use self::protocol::{Epoch, IncrementReply, Protocol, RESERVED_PREFIX};
use crate::{Expected, KvBackend, KvError, RedisStore, SwapOutcome};

/// How long a fenced increment waits for hosts that have not raised their
/// sequences after a rewind, unless configured otherwise.
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// Days a journal keeps a key that was not handed out since, unless
/// configured otherwise.
pub const DEFAULT_JOURNAL_DAYS: u32 = 7;

/// How often a host beats its heartbeat and checks the store.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A peer whose heartbeat is this recent is alive and waited for.
const ALIVE_WINDOW: Duration = Duration::from_secs(10);

/// What the fence guards and how long it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceConfig {
    /// Key prefixes of the sequences (`sequences = ["lane-seq:"]`).
    pub sequences: Vec<String>,
    /// How long to wait for peers to raise their sequences after a rewind.
    pub peer_timeout: Duration,
    /// Days a journal keeps a key that was not handed out since.
    pub journal_days: u32,
    /// Heartbeat and check interval.
    pub poll_interval: Duration,
}

impl FenceConfig {
    /// Fences keys starting with any of `sequences`, with the default timings.
    pub fn new(sequences: Vec<String>) -> Self {
        Self {
            sequences,
            peer_timeout: DEFAULT_PEER_TIMEOUT,
            journal_days: DEFAULT_JOURNAL_DAYS,
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }

    /// After creating an epoch a host waits this long before numbering, so
    /// that every live host has polled (and raised) at least once.
    fn grace(&self) -> Duration {
        self.poll_interval * 2 + Duration::from_millis(500)
    }
}

/// What a fence is doing, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceStatus {
    /// Fenced increments are served (through the barrier of `epoch`).
    pub ready: bool,
    /// The epoch the host went through the barrier of.
    pub epoch: Option<String>,
    /// Times this host saw the store lose writes or change epoch.
    pub recoveries: u64,
    /// Peers (`<host id>/<label>`) that had not raised their sequences when
    /// the last barrier timed out.
    pub unanswered: Vec<String>,
}

/// The host's id, created once (random) in `<state_dir>/host-id`.
pub fn host_id(state_dir: &Path) -> Result<String, KvError> {
    let path = state_dir.join("host-id");
    let io = |e: std::io::Error| KvError::Other(format!("host id {}: {e}", path.display()));
    std::fs::create_dir_all(state_dir).map_err(io)?;
    let id = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = protocol::random_hex(12)?;
            // create_new: two processes starting at once agree on one id.
            match std::fs::File::create_new(&path) {
                Ok(mut file) => {
                    file.write_all(id.as_bytes()).map_err(io)?;
                    file.sync_all().map_err(io)?;
                    id
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    std::fs::read_to_string(&path)
                        .map_err(io)?
                        .trim()
                        .to_owned()
                }
                Err(e) => return Err(io(e)),
            }
        }
        Err(e) => return Err(io(e)),
    };
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(KvError::Other(format!(
            "host id {}: {id:?} is not 1 to 64 letters, digits, '-' or '_'",
            path.display()
        )));
    }
    Ok(id)
}

/// A [`RedisStore`] whose sequence keys are fenced against Redis going back
/// in time (see the module docs).
///
/// Dropping it stops its background task within a poll interval.
pub struct FencedStore {
    fence: Arc<Fence>,
}

/// State shared by the store and its background task.
struct Fence {
    label: String,
    /// This store's id among its peers: `<host id>/<label>`.
    host: String,
    redis: RedisStore,
    protocol: Protocol,
    journal: Arc<Journal>,
    config: FenceConfig,
    state: Mutex<State>,
    /// Wakes the background task early (a rewind seen by an increment).
    wake: Arc<Notify>,
}

struct State {
    phase: Phase,
    /// The epoch the host went through the barrier of.
    epoch: Option<Epoch>,
    /// The largest sequence the host saw and journalled.
    last_seq: i64,
    recoveries: u64,
    unanswered: Vec<String>,
}

#[derive(Debug, Clone)]
enum Phase {
    /// Starting: the journal's epoch is still to be compared with the store's.
    Checking,
    /// Fenced increments are served.
    Ready,
    /// The epoch is to be settled and the sequences raised; `rewound`: the
    /// store lost writes within the host's own epoch.
    Recovering { rewound: bool },
    /// Raised; waiting for the peers.
    Barrier(Barrier),
}

#[derive(Debug, Clone)]
struct Barrier {
    epoch: Epoch,
    waiting_for: BTreeSet<String>,
    not_before: Instant,
    deadline: Instant,
}

impl FencedStore {
    /// Fences the keys of `redis` that start with one of `config.sequences`,
    /// as host `host`, with its journal in `<state_dir>/fence-<label>.db`,
    /// and starts the background task (on the current Tokio runtime).
    ///
    /// Returns at once: fenced increments answer [`KvError::Unavailable`]
    /// until the host has checked the store (see [`wait_ready`](Self::wait_ready)).
    pub async fn start(
        redis: RedisStore,
        label: &str,
        state_dir: &Path,
        host: &str,
        config: FenceConfig,
    ) -> Result<Self, KvError> {
        let path = journal_path(state_dir, label);
        std::fs::create_dir_all(state_dir)
            .map_err(|e| KvError::Other(format!("creating {}: {e}", state_dir.display())))?;
        let journal = Journal::open(&path)?;
        let snapshot = journal.snapshot()?;
        // Peers are stores, not processes: two labels of one host on the
        // same Redis database wait for each other like two hosts.
        let peer = format!("{host}/{label}");
        let fence = Arc::new(Fence {
            label: label.to_owned(),
            protocol: Protocol::new(redis.clone(), &peer),
            host: peer,
            redis,
            journal: Arc::new(journal),
            config,
            state: Mutex::new(State {
                phase: Phase::Checking,
                epoch: snapshot.epoch.map(Epoch::new),
                last_seq: snapshot.seq,
                recoveries: 0,
                unanswered: Vec::new(),
            }),
            wake: Arc::new(Notify::new()),
        });
        tracing::info!(
            label,
            host,
            sequences = ?fence.config.sequences,
            journal = %path.display(),
            "sequence fence on"
        );
        barrier::spawn(&fence);
        Ok(Self { fence })
    }

    /// Waits until fenced increments are served, at most `timeout`; returns
    /// whether they are.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        loop {
            if self.status().ready {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the fence is doing now.
    pub fn status(&self) -> FenceStatus {
        let state = self.fence.lock();
        FenceStatus {
            ready: matches!(state.phase, Phase::Ready),
            epoch: state.epoch.as_ref().map(ToString::to_string),
            recoveries: state.recoveries,
            unanswered: state.unanswered.clone(),
        }
    }
}

/// The journal file of store `label` in `state_dir`.
pub fn journal_path(state_dir: &Path, label: &str) -> PathBuf {
    state_dir.join(format!("fence-{label}.db"))
}

impl Fence {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_sequence(&self, key: &str) -> bool {
        self.config.sequences.iter().any(|p| key.starts_with(p))
    }

    fn paused(&self) -> KvError {
        KvError::Unavailable(format!(
            "store `{}`: numbering is paused while the hosts recover from Redis losing \
             writes; retry shortly",
            self.label
        ))
    }

    /// One fenced increment (see the module docs).
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let (epoch, last_seq) = {
            let state = self.lock();
            match (&state.phase, &state.epoch) {
                (Phase::Ready, Some(epoch)) => (epoch.clone(), state.last_seq),
                _ => return Err(self.paused()),
            }
        };
        let (value, seq) = match self.protocol.increment(&epoch, key, delta).await? {
            IncrementReply::Fenced => {
                self.trouble(&epoch, false, "the store's fence epoch is gone or changed");
                return Err(self.paused());
            }
            // Any sequence this host saw before sending was given out before
            // this script ran: seeing one again means the store went back.
            // (A reply lost to a timeout only makes the next one jump.)
            IncrementReply::Counted { seq, .. } if seq <= last_seq => {
                self.trouble(&epoch, true, "the store handed out a write sequence again");
                return Err(self.paused());
            }
            IncrementReply::Counted { value, seq } => (value, seq),
        };
        let journal = self.journal.clone();
        let owned = key.to_owned();
        tokio::task::spawn_blocking(move || journal.record(&owned, value, seq, now_ms()))
            .await
            .map_err(|e| KvError::Other(format!("fence journal task: {e}")))??;
        // The value is in the journal; a recovery that starts from here on
        // raises the key above it. One that started before may not have: then
        // the value is not handed out.
        let mut state = self.lock();
        if !matches!(state.phase, Phase::Ready) || state.epoch.as_ref() != Some(&epoch) {
            return Err(self.paused());
        }
        state.last_seq = state.last_seq.max(seq);
        Ok(value)
    }

    /// Stops numbering and has the background task recover, unless it
    /// already is, or `seen_in` is no longer the host's epoch.
    fn trouble(&self, seen_in: &Epoch, rewound: bool, what: &str) {
        {
            let mut state = self.lock();
            if !matches!(state.phase, Phase::Ready | Phase::Checking)
                || state.epoch.as_ref() != Some(seen_in)
            {
                return;
            }
            state.phase = Phase::Recovering { rewound };
            state.recoveries += 1;
        }
        if rewound {
            tracing::error!(
                label = %self.label,
                epoch = %seen_in,
                "Redis went back in time ({what}): pausing numbering and raising sequences"
            );
        } else {
            tracing::warn!(
                label = %self.label,
                epoch = %seen_in,
                "{what}: pausing numbering and raising sequences"
            );
        }
        self.wake.notify_one();
    }

    fn check_writable(&self, key: &str) -> Result<(), KvError> {
        if key.starts_with(RESERVED_PREFIX) {
            return Err(KvError::Other(format!(
                "key {key:?}: the prefix {RESERVED_PREFIX:?} is reserved for the sequence fence"
            )));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl KvBackend for FencedStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.fence.redis.get(key).await
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.fence.check_writable(key)?;
        self.fence.redis.set(key, value).await
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.fence.check_writable(key)?;
        self.fence.redis.delete(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool, KvError> {
        self.fence.redis.exists(key).await
    }

    async fn list_keys(&self) -> Result<Vec<String>, KvError> {
        let mut keys = self.fence.redis.list_keys().await?;
        keys.retain(|key| !key.starts_with(RESERVED_PREFIX));
        Ok(keys)
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        self.fence.redis.get_many(keys).await
    }

    async fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        for (key, _) in items {
            self.fence.check_writable(key)?;
        }
        self.fence.redis.set_many(items).await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        for key in keys {
            self.fence.check_writable(key)?;
        }
        self.fence.redis.delete_many(keys).await
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        self.fence.check_writable(key)?;
        if self.fence.is_sequence(key) {
            self.fence.increment(key, delta).await
        } else {
            self.fence.redis.increment(key, delta).await
        }
    }

    async fn swap(
        &self,
        key: &str,
        expected: &Expected,
        new: &[u8],
    ) -> Result<SwapOutcome, KvError> {
        self.fence.check_writable(key)?;
        self.fence.redis.swap(key, expected, new).await
    }
}

/// Now, in unix milliseconds.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
