//! The service manager's side of the host's life (systemd's `sd_notify`
//! protocol; a no-op without `NOTIFY_SOCKET`): `READY=1` once the app
//! passed its preflight and the listeners accept, `RELOADING=1` then
//! `READY=1` around each SIGHUP reload, `STOPPING=1` when the drain begins,
//! and `WATCHDOG=1` at half the interval systemd asks for
//! (`WatchdogSec=`). The watchdog is fed from the same runtime that serves,
//! only while that runtime still turns: a host that hangs stops feeding it,
//! and systemd restarts it (`Restart=on-failure` in
//! `deploy/systemd/kiosk-host.service`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

/// Whether start-up has finished: reloads report only after it.
static STARTED: AtomicBool = AtomicBool::new(false);

/// Tells the service manager the host serves; `status` is shown by
/// `systemctl status`.
pub fn ready(status: &str) {
    STARTED.store(true, Ordering::SeqCst);
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells the service manager this process is the service's main one now
/// (it took over from another, see [`crate::handover`]) and serves.
pub fn main_process() {
    STARTED.store(true, Ordering::SeqCst);
    send(&[
        NotifyState::MainPid(std::process::id()),
        NotifyState::Ready,
        NotifyState::Status("serving; took over by handover"),
    ]);
}

/// Tells the service manager a reload began (a SIGHUP during start-up is
/// not reported: start-up ends with its own `READY=1`).
pub fn reloading() {
    if STARTED.load(Ordering::SeqCst) {
        send(&[
            NotifyState::Reloading,
            NotifyState::monotonic_usec_now().unwrap_or(NotifyState::Status("reloading")),
        ]);
    }
}

/// Tells the service manager a reload ended, in force or refused.
pub fn reloaded(status: &str) {
    if STARTED.load(Ordering::SeqCst) {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }
}

/// Tells the service manager the host is draining to stop.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// The watchdog interval the service manager asked for: `WATCHDOG_USEC`,
/// unless `WATCHDOG_PID` names another process (as libsystemd's
/// `sd_watchdog_enabled` reads them).
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Feeds the watchdog every half interval for the life of the process, if
/// the service manager asked for one.
pub fn spawn_watchdog() {
    let Some(interval) = watchdog_interval() else {
        return;
    };
    let every = (interval / 2).max(Duration::from_millis(10));
    tracing::info!(?interval, "feeding the service manager's watchdog");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    });
}

/// Sends `states`; without `NOTIFY_SOCKET` (no service manager) nothing.
fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}
