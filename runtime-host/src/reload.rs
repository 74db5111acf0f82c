//! SIGHUP: reload what the host was started from, as nginx does, all or
//! nothing: the host configuration (read again, with the same flags over
//! it), every certificate it names, and the app (its manifest, runtime
//! config, variables and components, compiled and put through the
//! preflight). If anything is wrong, the log says what and everything in
//! force stays. Otherwise the certificates are swapped for new handshakes
//! (open connections keep theirs) and the new version of the app for new
//! requests (those in flight finish on theirs); settings that only a
//! restart can change are named in the log.

use std::sync::Arc;

use crate::cli::UpArgs;
use crate::config::HostConfig;
use crate::dispatch::Dispatcher;
use crate::loader::{Loader, read_manifest};
use crate::preflight;
use crate::tls::Tls;

/// What a reload can change while serving.
pub struct Reloadable {
    /// The flags and file the host was started from.
    pub args: UpArgs,
    /// The configuration in force.
    pub config: HostConfig,
    /// The HTTPS listener's TLS, if it serves HTTPS.
    pub tls: Option<Arc<Tls>>,
    /// Loads new versions of the app.
    pub loader: Arc<Loader>,
    /// Serves the version in force.
    pub dispatcher: Arc<Dispatcher>,
}

impl Reloadable {
    /// Reloads once; returns whether the new configuration is in force.
    pub async fn reload(&mut self) -> bool {
        let outcome = self.try_reload().await;
        self.dispatcher.metrics().reload(outcome.is_ok());
        match outcome {
            Ok(()) => {
                let app = self.dispatcher.app().current();
                let metrics = self.dispatcher.metrics();
                metrics.app_in_force(&app.name, app.version.as_deref());
                metrics.environment_in_force(self.config.environment.as_deref());
                tracing::info!(
                    app = %app.name,
                    version = app.version.as_deref().unwrap_or("-"),
                    "reloaded: the configuration, certificates and app in force are those read now"
                );
                true
            }
            Err(e) => {
                tracing::error!("reload refused, nothing changed: {e:#}");
                false
            }
        }
    }

    async fn try_reload(&mut self) -> anyhow::Result<()> {
        let new = self.args.host_config()?;
        let tls = match (&self.tls, &new.server.tls) {
            (Some(tls), Some(settings)) => Some(tls.prepare(settings)?),
            _ => None,
        };
        // What only a new process changes stays as it is in force (the
        // certificates aside); the rest of the new configuration shapes the
        // app (its `[component]` settings, `[variables]`, `environment`).
        let mut server = self.config.server.clone();
        if self.tls.is_some() && new.server.tls.is_some() {
            server.tls = new.server.tls.clone();
        }
        let next = HostConfig {
            server,
            admin: self.config.admin.clone(),
            recycle: self.config.recycle.clone(),
            outbound: self.config.outbound.clone(),
            ..new.clone()
        };
        let manifest = read_manifest(&self.args.app)?;
        let app = self.loader.load(&manifest, &next).await?;
        let app = preflight::check_version(app, self.dispatcher.metrics(), &next.server).await?;
        // Everything is loaded and checked: put it in force.
        if let (Some(in_force), Some(next)) = (&self.tls, tls) {
            in_force.install(next);
        }
        self.dispatcher.app().replace(app);
        if self.tls.is_some() != new.server.tls.is_some() {
            tracing::warn!("reload: HTTPS on or off takes effect at the next start (or handover)");
        }
        for section in self.needs_restart(&new) {
            tracing::warn!(
                "reload: [{section}] changed; it takes effect at the next start (or handover)"
            );
        }
        self.config = next;
        Ok(())
    }

    /// What changed that only a new process puts in force: the listeners,
    /// the host's limits and engine, and the outbound policies.
    fn needs_restart(&self, new: &HostConfig) -> Vec<&'static str> {
        let old = &self.config;
        let mut server_old = old.server.clone();
        let mut server_new = new.server.clone();
        server_old.tls = None;
        server_new.tls = None;
        let mut changed = Vec::new();
        if server_old != server_new {
            changed.push("server");
        }
        if old.admin != new.admin {
            changed.push("admin");
        }
        if old.recycle != new.recycle {
            changed.push("recycle");
        }
        if old.outbound != new.outbound {
            changed.push("outbound");
        }
        changed
    }
}

/// SIGHUP, caught from now on: its default action would end the process.
pub fn hangups() -> anyhow::Result<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup()).map_err(|e| anyhow::anyhow!("cannot catch SIGHUP: {e}"))
}

/// Reloads on every SIGHUP, for the life of the process (hangups while a
/// reload runs are one more reload after it).
pub async fn on_hangup(mut hangups: tokio::signal::unix::Signal, mut reloadable: Reloadable) {
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading");
        crate::systemd::reloading();
        let status = if reloadable.reload().await {
            "serving; reloaded"
        } else {
            "serving; last reload refused (see the log)"
        };
        crate::systemd::reloaded(status);
    }
}
