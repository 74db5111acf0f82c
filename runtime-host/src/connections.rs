//! Open connections: a cap in all and per peer address, so no one client
//! (and no crowd) can hold every socket. Refusals are counted and reported
//! in the log every few seconds, not one line each.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::ServerSettings;

/// File descriptors kept for everything but client connections (stores,
/// outbound pools, compiled code, logs).
const RESERVED_FDS: u64 = 256;

/// The connection caps of one listener.
#[derive(Debug)]
pub struct ConnectionLimits {
    max: usize,
    per_peer: usize,
    limit_loopback: bool,
    open: AtomicUsize,
    peers: Mutex<HashMap<IpAddr, usize>>,
    /// Refused because `max_connections` were open.
    pub refused_full: AtomicU64,
    /// Refused because the peer had `max_connections_per_peer` open.
    pub refused_peer: AtomicU64,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Full,
    PeerFull,
}

/// One open connection's place; given back when dropped.
#[derive(Debug)]
pub struct ConnectionPlace {
    limits: Arc<ConnectionLimits>,
    peer: Option<IpAddr>,
}

impl ConnectionLimits {
    /// Caps from the server settings; `max_connections` is lowered to what
    /// the open-file limit allows.
    pub fn new(server: &ServerSettings) -> Arc<Self> {
        Arc::new(Self {
            max: fit_open_files(server.max_connections),
            per_peer: server.max_connections_per_peer.max(1),
            limit_loopback: server.limit_loopback,
            open: AtomicUsize::new(0),
            peers: Mutex::new(HashMap::new()),
            refused_full: AtomicU64::new(0),
            refused_peer: AtomicU64::new(0),
        })
    }

    /// Takes a place for a connection from `peer`, or says why not.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<ConnectionPlace, Refused> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            self.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Full);
        }
        let counted = self.limit_loopback || !peer.is_loopback();
        if counted {
            let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            let open = peers.entry(peer).or_insert(0);
            if *open >= self.per_peer {
                drop(peers);
                self.open.fetch_sub(1, Ordering::Relaxed);
                self.refused_peer.fetch_add(1, Ordering::Relaxed);
                return Err(Refused::PeerFull);
            }
            *open += 1;
        }
        Ok(ConnectionPlace {
            limits: self.clone(),
            peer: counted.then_some(peer),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The cap in force (after fitting the open-file limit).
    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for ConnectionPlace {
    fn drop(&mut self) {
        self.limits.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(peer) = self.peer {
            let mut peers = self.limits.peers.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(open) = peers.get_mut(&peer) {
                *open -= 1;
                if *open == 0 {
                    peers.remove(&peer);
                }
            }
        }
    }
}

/// Raises the soft open-file limit to fit `wanted` connections (up to the
/// hard limit) and returns the connections that fit.
fn fit_open_files(wanted: usize) -> usize {
    let needed = wanted as u64 + RESERVED_FDS;
    let (soft, hard) = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit; keeping max_connections");
            return wanted;
        }
    };
    if soft < needed {
        let target = needed.min(hard);
        if let Err(e) = rlimit::setrlimit(rlimit::Resource::NOFILE, target, hard) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
    }
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((soft, hard));
    let fits = soft.saturating_sub(RESERVED_FDS).max(1) as usize;
    if fits < wanted {
        tracing::warn!(
            max_connections = wanted,
            open_file_limit = soft,
            "the open-file limit is too low: at most {fits} connections will be accepted"
        );
        fits
    } else {
        wanted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_peer: usize, limit_loopback: bool) -> Arc<ConnectionLimits> {
        ConnectionLimits::new(&ServerSettings {
            max_connections: max,
            max_connections_per_peer: per_peer,
            limit_loopback,
            ..Default::default()
        })
    }

    #[test]
    fn one_peer_cannot_take_every_place() {
        let limits = limits(10, 2, false);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let a = limits.admit(peer).unwrap();
        let _b = limits.admit(peer).unwrap();
        assert_eq!(limits.admit(peer).unwrap_err(), Refused::PeerFull);
        let _other = limits.admit("10.0.0.2".parse().unwrap()).unwrap();
        drop(a);
        let _c = limits.admit(peer).unwrap();
        assert_eq!(limits.open(), 3);
        assert_eq!(limits.refused_peer.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn loopback_is_exempt_from_the_per_peer_cap_unless_asked() {
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let exempt = limits(10, 1, false);
        let _a = exempt.admit(local).unwrap();
        let _b = exempt.admit(local).unwrap();
        let held = limits(10, 1, true);
        let _c = held.admit(local).unwrap();
        assert_eq!(held.admit(local).unwrap_err(), Refused::PeerFull);
    }

    #[test]
    fn the_total_cap_holds_for_everyone() {
        let limits = limits(2, 10, false);
        let _a = limits.admit("10.0.0.1".parse().unwrap()).unwrap();
        let _b = limits.admit("10.0.0.2".parse().unwrap()).unwrap();
        assert_eq!(
            limits.admit("10.0.0.3".parse().unwrap()).unwrap_err(),
            Refused::Full
        );
        assert_eq!(limits.open(), 2);
    }
}
