//! The fence's background task: one per store, one step per tick.
//!
//! Ready (or starting): beat the heartbeat, check the epoch and this host's
//! sequence, and keep the peers' heartbeats in the journal. Recovering:
//! settle the epoch, raise every journalled key, join the barrier. At the
//! barrier: wait until every peer alive before the rewind has joined, or the
//! peer timeout passes.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::protocol::Epoch;
use super::{ALIVE_WINDOW, Barrier, Fence, Phase, now_ms};
use crate::KvError;

/// How often a host at the barrier looks at who has joined.
const BARRIER_POLL: Duration = Duration::from_millis(100);

/// How often journals and the heartbeat hash are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Starts the background task of `fence`; it ends once the store is dropped.
pub(super) fn spawn(fence: &Arc<Fence>) {
    let weak: Weak<Fence> = Arc::downgrade(fence);
    let wake = fence.wake.clone();
    tokio::spawn(async move {
        let mut failing = false;
        let mut pruned: Option<Instant> = None;
        loop {
            let delay = {
                let Some(fence) = weak.upgrade() else {
                    return;
                };
                if pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                    fence.prune().await;
                    pruned = Some(Instant::now());
                }
                match fence.tick().await {
                    Ok(delay) => {
                        if failing {
                            tracing::info!(label = %fence.label, "sequence fence reaches Redis again");
                        }
                        failing = false;
                        delay
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(label = %fence.label, error = %e, "sequence fence cannot check Redis; retrying");
                        }
                        failing = true;
                        fence.config.poll_interval
                    }
                }
            };
            if !delay.is_zero() {
                // Woken early when an increment sees trouble.
                let _ = tokio::time::timeout(delay, wake.notified()).await;
            }
        }
    });
}

impl Fence {
    /// One step; returns how long to wait before the next.
    async fn tick(&self) -> Result<Duration, KvError> {
        let phase = self.lock().phase.clone();
        match phase {
            Phase::Checking | Phase::Ready => self.check().await,
            Phase::Recovering { rewound } => self.recover(rewound).await,
            Phase::Barrier(barrier) => self.wait(barrier).await,
        }
    }

    /// Heartbeat, then: is the epoch still ours, and our sequence not behind
    /// what we saw?
    async fn check(&self) -> Result<Duration, KvError> {
        let (mine, last_seq) = {
            let state = self.lock();
            (state.epoch.clone(), state.last_seq)
        };
        let now = now_ms();
        let reading = self.protocol.heartbeat(now).await?;
        let trouble = match &mine {
            None => Some(false),
            Some(mine) if reading.epoch.as_ref() != Some(mine) => Some(false),
            // Our sequence only grows: below what we saw, the store lost it.
            Some(_) if reading.seq < last_seq => Some(true),
            Some(_) => None,
        };
        match trouble {
            None => {
                let journal = self.journal.clone();
                let hosts = reading.hosts;
                tokio::task::spawn_blocking(move || journal.set_peers(&hosts, now))
                    .await
                    .map_err(|e| KvError::Other(format!("fence journal task: {e}")))??;
                let mut state = self.lock();
                if matches!(state.phase, Phase::Checking) && state.epoch == mine {
                    state.phase = Phase::Ready;
                    tracing::info!(label = %self.label, epoch = ?mine.map(|e| e.to_string()), "sequence fence ready");
                }
            }
            Some(rewound) => {
                let mut state = self.lock();
                if matches!(state.phase, Phase::Checking | Phase::Ready) && state.epoch == mine {
                    if mine.is_some() {
                        state.recoveries += 1;
                        if rewound {
                            tracing::error!(
                                label = %self.label,
                                seen = reading.seq,
                                journalled = last_seq,
                                "Redis went back in time (this host's write sequence is behind \
                                 its journal): pausing numbering and raising sequences"
                            );
                        } else {
                            tracing::warn!(
                                label = %self.label,
                                mine = ?mine.as_ref().map(Epoch::as_str),
                                store = ?reading.epoch.as_ref().map(Epoch::as_str),
                                "the store's fence epoch is gone or changed: pausing numbering \
                                 and raising sequences"
                            );
                        }
                    }
                    state.phase = Phase::Recovering { rewound };
                }
                return Ok(Duration::ZERO);
            }
        }
        Ok(self.config.poll_interval)
    }

    /// Settles the epoch, raises every journalled key to its high-water
    /// mark and joins the barrier.
    async fn recover(&self, rewound: bool) -> Result<Duration, KvError> {
        let (mine, seq) = {
            let state = self.lock();
            (state.epoch.clone(), state.last_seq)
        };
        let (epoch, created) = self.protocol.settle(mine.as_ref(), rewound).await?;
        let journal = self.journal.clone();
        let (high_water, alive) = tokio::task::spawn_blocking(move || {
            Ok::<_, KvError>((journal.high_water()?, journal.alive_peers(ALIVE_WINDOW)?))
        })
        .await
        .map_err(|e| KvError::Other(format!("fence journal task: {e}")))??;
        if !self.protocol.raise(&epoch, seq, &high_water).await? {
            // The epoch changed again meanwhile: settle again.
            self.lock().phase = Phase::Recovering { rewound: false };
            return Ok(Duration::ZERO);
        }
        let waiting_for = alive.into_iter().filter(|h| *h != self.host).collect();
        let now = Instant::now();
        tracing::info!(
            label = %self.label,
            epoch = %epoch,
            created,
            raised = high_water.len(),
            waiting_for = ?waiting_for,
            "raised this host's sequences; waiting for the peers to raise theirs"
        );
        self.lock().phase = Phase::Barrier(Barrier {
            epoch,
            waiting_for,
            not_before: if created {
                now + self.config.grace()
            } else {
                now
            },
            deadline: now + self.config.peer_timeout,
        });
        Ok(Duration::ZERO)
    }

    /// One look at who has raised; through when all have, or at the deadline.
    async fn wait(&self, mut barrier: Barrier) -> Result<Duration, KvError> {
        let now = now_ms();
        let reading = self.protocol.heartbeat(now).await?;
        if reading.epoch.as_ref() != Some(&barrier.epoch) {
            self.lock().phase = Phase::Recovering { rewound: false };
            return Ok(Duration::ZERO);
        }
        let raised = self.protocol.raised(&barrier.epoch).await?;
        // Hosts heard from lately are waited for too, even if the journal's
        // last reading predates them.
        let window = i64::try_from(ALIVE_WINDOW.as_millis()).unwrap_or(i64::MAX);
        barrier.waiting_for.extend(
            reading
                .hosts
                .into_iter()
                .filter(|(host, ms)| *host != self.host && *ms >= now - window)
                .map(|(host, _)| host),
        );
        let missing: Vec<String> = barrier
            .waiting_for
            .iter()
            .filter(|host| !raised.contains(*host))
            .cloned()
            .collect();
        let at = Instant::now();
        if missing.is_empty() && at >= barrier.not_before {
            self.pass(barrier.epoch, Vec::new()).await?;
            return Ok(self.config.poll_interval);
        }
        if at >= barrier.deadline {
            tracing::error!(
                label = %self.label,
                epoch = %barrier.epoch,
                peers = ?missing,
                timeout = ?self.config.peer_timeout,
                "peers did not raise their sequences within the peer timeout: numbering \
                 resumes, and numbers these peers handed out in the lost window may be \
                 handed out again"
            );
            self.pass(barrier.epoch, missing).await?;
            return Ok(self.config.poll_interval);
        }
        self.lock().phase = Phase::Barrier(barrier);
        Ok(BARRIER_POLL)
    }

    /// Through the barrier of `epoch`: numbering resumes.
    async fn pass(&self, epoch: Epoch, unanswered: Vec<String>) -> Result<(), KvError> {
        let journal = self.journal.clone();
        let token = epoch.to_string();
        tokio::task::spawn_blocking(move || journal.set_epoch(&token))
            .await
            .map_err(|e| KvError::Other(format!("fence journal task: {e}")))??;
        tracing::info!(label = %self.label, epoch = %epoch, "through the fence barrier: numbering resumes");
        let mut state = self.lock();
        state.epoch = Some(epoch);
        state.unanswered = unanswered;
        state.phase = Phase::Ready;
        Ok(())
    }

    /// Forgets journalled keys and heartbeats older than the journal's days.
    async fn prune(&self) {
        let days = i64::from(self.config.journal_days);
        let before = now_ms() - days * 24 * 3600 * 1000;
        let journal = self.journal.clone();
        match tokio::task::spawn_blocking(move || journal.prune(before)).await {
            Ok(Ok(removed)) if removed > 0 => {
                tracing::info!(label = %self.label, removed, "pruned old keys from the fence journal")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(label = %self.label, error = %e, "cannot prune the fence journal")
            }
            Err(e) => {
                tracing::warn!(label = %self.label, error = %e, "cannot prune the fence journal")
            }
        }
        if let Err(e) = self.protocol.prune_hosts(before).await {
            tracing::debug!(label = %self.label, error = %e, "cannot prune the fence heartbeats");
        }
    }
}
