//! Recycling (`[recycle]`): the host hands over to a fresh process of
//! itself, exactly as on SIGUSR2 (see `crate::handover`), when it has
//! served `after` (plus a random share of `spread`, drawn per process, so
//! hosts started together part ways), or when its resident memory passes
//! `max_resident_bytes`. No connection is refused, nothing is lost: what a
//! daily restart of an application server does, without the restart.
//!
//! The checks run every `check_interval`. A handover that fails (the new
//! process does not start) leaves this one serving; it asks again after
//! `retry_after`.

use std::hash::BuildHasher as _;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::RecycleSettings;

/// Why a handover is asked for, as the log says it.
pub type Reason = String;

/// Watches age and memory for the life of the process, sending a reason to
/// `handovers` when it is time. Ends when nobody takes requests any more.
pub async fn watch(settings: RecycleSettings, handovers: mpsc::Sender<Reason>) {
    let started = Instant::now();
    let due = settings
        .after
        .map(|after| after + share_of(settings.spread));
    if let Some(due) = due {
        tracing::info!(after = ?due, "recycling: a fresh process takes over after this long");
    }
    let first = Instant::now() + settings.check_interval;
    let mut ticks = tokio::time::interval_at(first, settings.check_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let resident = resident_bytes();
        let reason = match (due, settings.max_resident_bytes, resident) {
            (Some(due), _, _) if started.elapsed() >= due => {
                format!(
                    "recycling: served {:?} ([recycle] after)",
                    started.elapsed()
                )
            }
            (_, Some(max), Some(resident)) if resident > max => format!(
                "recycling: resident memory {resident} bytes passed [recycle] max_resident_bytes ({max})"
            ),
            _ => continue,
        };
        if handovers.send(reason).await.is_err() {
            return;
        }
        tokio::time::sleep(settings.retry_after).await;
    }
}

/// A random duration below `spread` (zero for zero), different in each
/// process.
fn share_of(spread: Duration) -> Duration {
    if spread.is_zero() {
        return Duration::ZERO;
    }
    // std's hasher keys are random per process: no generator needed.
    let random = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    let nanos = u64::try_from(spread.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(random % nanos)
}

/// This process's resident memory (Linux: `/proc/self/statm`), if known.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf with a valid name has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spread_is_a_share_below_it() {
        assert_eq!(share_of(Duration::ZERO), Duration::ZERO);
        let spread = Duration::from_secs(3600);
        for _ in 0..100 {
            assert!(share_of(spread) < spread);
        }
        // Not the same draw every time.
        let draws: std::collections::BTreeSet<_> = (0..20).map(|_| share_of(spread)).collect();
        assert!(draws.len() > 1);
    }

    #[test]
    fn resident_memory_is_read() {
        let resident = resident_bytes().expect("Linux /proc");
        assert!(resident > 1024 * 1024, "{resident}");
    }

    #[tokio::test(start_paused = true)]
    async fn it_asks_once_due_and_again_after_retry_after() {
        let settings = RecycleSettings {
            after: Some(Duration::from_secs(60)),
            retry_after: Duration::from_secs(300),
            ..RecycleSettings::default()
        };
        let (send, mut asked) = mpsc::channel(1);
        tokio::spawn(watch(settings, send));
        let first = asked.recv().await.unwrap();
        assert!(first.contains("[recycle] after"), "{first}");
        let at = Instant::now();
        asked.recv().await.unwrap();
        assert!(at.elapsed() >= Duration::from_secs(300));
    }

    #[tokio::test(start_paused = true)]
    async fn it_asks_when_resident_memory_passes_the_limit() {
        let settings = RecycleSettings {
            max_resident_bytes: Some(1024),
            ..RecycleSettings::default()
        };
        let (send, mut asked) = mpsc::channel(1);
        let at = Instant::now();
        tokio::spawn(watch(settings.clone(), send));
        let reason = asked.recv().await.unwrap();
        assert!(reason.contains("max_resident_bytes (1024)"), "{reason}");
        // At the first check, not before.
        assert!(at.elapsed() >= settings.check_interval);
    }
}
