//! SIGHUP: reload what the host was started from, as nginx does, all or
//! nothing. The host configuration is read again (with the same flags over
//! it) and every certificate it names is loaded; if anything is wrong, the
//! log says what and everything in force stays. Otherwise the certificates
//! are swapped for new handshakes (open connections keep theirs), and
//! settings that only a restart can change are named in the log.

use std::sync::Arc;

use crate::cli::UpArgs;
use crate::config::HostConfig;
use crate::tls::Tls;

/// What a reload can change while serving.
pub struct Reloadable {
    /// The flags and file the host was started from.
    pub args: UpArgs,
    /// The configuration in force.
    pub config: HostConfig,
    /// The HTTPS listener's TLS, if it serves HTTPS.
    pub tls: Option<Arc<Tls>>,
}

impl Reloadable {
    /// Reloads once; returns whether the new configuration is in force.
    pub fn reload(&mut self) -> bool {
        let new = match self.args.host_config() {
            Ok(new) => new,
            Err(e) => {
                tracing::error!("reload refused, nothing changed: {e:#}");
                return false;
            }
        };
        match (&self.tls, &new.server.tls) {
            (Some(tls), Some(settings)) => {
                if let Err(e) = tls.reload(settings) {
                    tracing::error!("reload refused, nothing changed: {e:#}");
                    return false;
                }
            }
            (None, None) => {}
            _ => tracing::warn!(
                "reload: HTTPS on or off takes effect at the next start (or handover)"
            ),
        }
        for section in self.needs_restart(&new) {
            tracing::warn!("reload: [{section}] changed; it takes effect at the next start");
        }
        tracing::info!("reloaded: the certificates in force are those of the configuration");
        self.config = new;
        true
    }

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
        if old.outbound != new.outbound {
            changed.push("outbound");
        }
        if old.component != new.component {
            changed.push("component");
        }
        if old.variables != new.variables || old.environment != new.environment {
            changed.push("variables");
        }
        changed
    }
}

/// Reloads on every SIGHUP, for the life of the process.
pub async fn on_hangup(mut reloadable: Reloadable) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP: reload is off");
            return;
        }
    };
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading");
        crate::systemd::reloading();
        let status = if reloadable.reload() {
            "serving; reloaded"
        } else {
            "serving; last reload refused (see the log)"
        };
        crate::systemd::reloaded(status);
    }
}
