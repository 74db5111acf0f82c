//! SIGUSR2: hand the listening sockets to a new process, as nginx's binary
//! upgrade and Pingora's graceful upgrade do, so a new binary, app or
//! configuration takes over without refusing a connection.
//!
//! 1. On SIGUSR2 the host starts its executable again (the path it was
//!    started from, so a binary replaced there is the one that runs) with
//!    the same arguments, its listening sockets as file descriptors 3, 4…
//!    (`KIOSK_HANDOVER_FDS` says how many) and its own pid
//!    (`KIOSK_HANDOVER_FROM`). Both processes accept on the same sockets
//!    from then on: the kernel's queue of new connections is never closed.
//! 2. The new process loads the app and passes its preflight like any
//!    start. A new process that fails exits; the old one never stopped
//!    serving, and logs that the handover failed.
//! 3. Once the new process serves, it tells the service manager it is the
//!    main process now (`MAINPID=`, `READY=1`) and sends the old one
//!    SIGQUIT: the old one stops accepting, drains its in-flight requests
//!    and exits, without telling the service manager it stops.

use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// How many listening sockets were handed over (descriptors 3, 4, …).
const FDS_ENV: &str = "KIOSK_HANDOVER_FDS";
/// The pid of the process handing over.
const FROM_ENV: &str = "KIOSK_HANDOVER_FROM";
/// The first handed-over descriptor.
const FIRST_FD: RawFd = 3;

/// What this process was handed at start, if it takes over from another.
pub struct Inherited {
    /// The listening sockets, in the order the old process bound them.
    pub listeners: Vec<std::net::TcpListener>,
    from: i32,
}

/// The sockets handed to this process, read once at start, before any
/// thread starts (and removed from the environment, so nothing started
/// later misreads them).
pub fn inherited() -> anyhow::Result<Option<Inherited>> {
    let Some(count) = std::env::var_os(FDS_ENV) else {
        return Ok(None);
    };
    let from = std::env::var(FROM_ENV).unwrap_or_default();
    // SAFETY: called from `main` before any thread starts.
    unsafe {
        std::env::remove_var(FDS_ENV);
        std::env::remove_var(FROM_ENV);
    }
    let count: RawFd = count
        .to_str()
        .and_then(|c| c.parse().ok())
        .filter(|c| (1..=16).contains(c))
        .context("KIOSK_HANDOVER_FDS is not a count of sockets")?;
    let from: i32 = from
        .parse()
        .ok()
        .filter(|p| *p > 1)
        .context("KIOSK_HANDOVER_FROM is not a process id")?;
    let mut listeners = Vec::new();
    for fd in FIRST_FD..FIRST_FD + count {
        // SAFETY: the old process put a listening socket at each of these
        // descriptors for this process alone; it is owned from here on.
        let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        listener
            .local_addr()
            .with_context(|| format!("handed-over descriptor {fd} is not a listening socket"))?;
        listener.set_nonblocking(true)?;
        set_cloexec(fd)?;
        listeners.push(listener);
    }
    Ok(Some(Inherited { listeners, from }))
}

impl Inherited {
    /// Takes over: this process is the service's main one now, and the
    /// old one drains and exits.
    pub fn take_over(&self) {
        crate::systemd::main_process();
        tracing::info!(
            pid = std::process::id(),
            from = self.from,
            "handover: serving; the old process drains"
        );
        // SAFETY: kill(2) with a pid and a signal number.
        if unsafe { libc::kill(self.from, libc::SIGQUIT) } != 0 {
            tracing::warn!(from = self.from, error = %std::io::Error::last_os_error(), "handover: cannot signal the old process");
        }
    }
}

/// Resolves when a new process has taken over (SIGQUIT).
pub async fn replaced() {
    match signal(SignalKind::quit()) {
        Ok(mut quit) => {
            quit.recv().await;
            tracing::info!("SIGQUIT received: replaced by a new process; draining");
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGQUIT");
            std::future::pending().await
        }
    }
}

/// SIGUSR2, caught from now on: its default action would end the process.
/// Caught before the host says where it serves, so a handover asked for
/// as soon as it does is never the end of it.
pub fn requests() -> anyhow::Result<Signal> {
    signal(SignalKind::user_defined2()).map_err(|e| anyhow::anyhow!("cannot catch SIGUSR2: {e}"))
}

/// Starts a new process with the listeners on every SIGUSR2 (`usr2`, from
/// [`requests`]) and every reason the recycler sends (`recycling`), until
/// this process stops serving (the caller aborts it then). `exe` is the
/// executable's path as read at start.
pub async fn on_request(
    mut usr2: Signal,
    mut recycling: tokio::sync::mpsc::Receiver<crate::recycle::Reason>,
    exe: PathBuf,
    fds: Vec<RawFd>,
) {
    // One handover at a time: a second SIGUSR2 while a new process starts
    // would leave two processes each believing it is the service.
    let under_way = Arc::new(AtomicBool::new(false));
    loop {
        let why = tokio::select! {
            signal = usr2.recv() => match signal {
                Some(()) => "SIGUSR2 received".to_string(),
                None => return,
            },
            Some(reason) = recycling.recv() => reason,
        };
        if under_way.load(Ordering::SeqCst) {
            tracing::warn!("{why} while a handover is under way: ignored");
            continue;
        }
        tracing::info!(exe = %exe.display(), "{why}: starting a new process to hand over to");
        match spawn(&exe, &fds) {
            Ok(mut child) => {
                let pid = child.id().unwrap_or_default();
                tracing::info!(
                    pid,
                    "handover: new process started; it takes over once it serves"
                );
                under_way.store(true, Ordering::SeqCst);
                let under_way = under_way.clone();
                // A new process that fails exits; this one keeps serving.
                // Awaited, not waited for on a thread: this process ends
                // first, and must not wait for its successor to.
                tokio::spawn(async move {
                    let exited = child.wait().await;
                    under_way.store(false, Ordering::SeqCst);
                    match exited {
                        Ok(status) if status.success() => {}
                        Ok(status) => tracing::error!(
                            pid,
                            %status,
                            "handover failed: the new process exited; this one keeps serving"
                        ),
                        Err(e) => tracing::warn!(
                            pid,
                            error = %e,
                            "handover: cannot wait for the new process"
                        ),
                    }
                });
            }
            Err(e) => tracing::error!("handover failed: {e:#}; this one keeps serving"),
        }
    }
}

fn spawn(exe: &PathBuf, fds: &[RawFd]) -> anyhow::Result<tokio::process::Child> {
    // Copies above any descriptor the child gets, closed on exec: the
    // child's 3, 4… are made from them, so no copy clobbers another.
    let copies: Vec<std::os::fd::OwnedFd> = fds
        .iter()
        .map(|fd| {
            // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor this process owns.
            let copy = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 64) };
            if copy < 0 {
                return Err(std::io::Error::last_os_error()).context("duplicating a listener");
            }
            // SAFETY: a fresh descriptor, owned here.
            Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(copy) })
        })
        .collect::<anyhow::Result<_>>()?;
    let raw: Vec<RawFd> = copies.iter().map(|c| c.as_raw_fd()).collect();
    let mut command = tokio::process::Command::new(exe);
    command
        .args(std::env::args_os().skip(1))
        .env(FDS_ENV, raw.len().to_string())
        .env(FROM_ENV, std::process::id().to_string())
        // The watchdog is the new process's own once it is the main one.
        .env_remove("WATCHDOG_PID");
    // SAFETY: only dup2(2), async-signal-safe, between fork and exec.
    unsafe {
        command.pre_exec(move || {
            for (i, fd) in raw.iter().enumerate() {
                if libc::dup2(*fd, FIRST_FD + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    drop(copies);
    Ok(child)
}

fn set_cloexec(fd: RawFd) -> anyhow::Result<()> {
    // SAFETY: fcntl(F_SETFD) on a descriptor this process owns.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error()).context("marking a handed-over socket");
    }
    Ok(())
}
