//! The listener: accepts connections (HTTP/1.1 keep-alive and HTTP/2), hands
//! each request to the dispatcher, and drains in-flight requests on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};

use crate::config::ServerSettings;
use crate::connections::{ConnectionLimits, Refused};
use crate::dispatch::{Connection, Dispatcher};
use crate::tls::Tls;

/// At a drain, how long connections just accepted have to send their
/// first request before connections are told to finish.
const FIRST_REQUEST_GRACE: Duration = Duration::from_millis(500);

/// How often refusals (connections and rates) are summed up in the log.
const REFUSAL_REPORT_EVERY: Duration = Duration::from_secs(5);

/// A bound listener and, for HTTPS, its TLS.
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<Arc<Tls>>,
}

impl Listener {
    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// `scheme://address` as bound.
    pub fn url(&self) -> std::io::Result<String> {
        Ok(format!("{}://{}", self.scheme(), self.tcp.local_addr()?))
    }
}

/// Accepts on whichever listener has a connection first.
async fn accept_any(listeners: &[Listener]) -> (std::io::Result<(TcpStream, SocketAddr)>, usize) {
    std::future::poll_fn(|cx| {
        for (index, listener) in listeners.iter().enumerate() {
            if let Poll::Ready(accepted) = listener.tcp.poll_accept(cx) {
                return Poll::Ready((accepted, index));
            }
        }
        Poll::Pending
    })
    .await
}

/// Serves `listeners` until `shutdown` resolves, then stops accepting and
/// waits up to `drain_timeout` for in-flight requests to finish.
/// Returns the number of connections cut at the drain deadline.
pub async fn serve(
    listeners: Vec<Listener>,
    dispatcher: Arc<Dispatcher>,
    settings: &ServerSettings,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
) -> usize {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.h2.max_concurrent_streams)
        .max_pending_accept_reset_streams(settings.h2.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(settings.h2.max_local_error_reset_streams)
        .keep_alive_interval(settings.header_read_timeout)
        .keep_alive_timeout(settings.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let limits = ConnectionLimits::new(settings);
    let reporter = tokio::spawn(report_refusals(limits.clone(), dispatcher.clone()));
    tokio::pin!(shutdown);

    loop {
        let (stream, peer, index) = tokio::select! {
            (accepted, index) = accept_any(&listeners) => match accepted {
                Ok((stream, peer)) => (stream, peer, index),
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let place = match limits.admit(peer.ip()) {
            Ok(place) => place,
            // Closed at once: the peer learns nothing and holds nothing.
            Err(refused) => {
                dispatcher.metrics().refused(match refused {
                    Refused::Full => "max_connections",
                    Refused::PeerFull => "max_connections_per_peer",
                });
                continue;
            }
        };
        let metrics = dispatcher.metrics().clone();
        let open = metrics.connection_opened();
        // Keep-alive clients stall on delayed ACKs without this.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let tls = listeners[index].tls.clone();
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let dispatcher = dispatcher.clone();
        tokio::spawn(async move {
            let (_place, _open) = (place, open);
            let service = |connection: Connection| {
                let connection = Arc::new(connection);
                service_fn(move |req| {
                    let (dispatcher, connection) = (dispatcher.clone(), connection.clone());
                    async move { Ok::<_, Infallible>(dispatcher.handle(req, &connection).await) }
                })
            };
            let result = match tls {
                None => {
                    let service = service(Connection {
                        client: peer,
                        tls: false,
                        identity: None,
                    });
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
                // The handshake runs here, off the accept loop, bounded by
                // its own timeout: a stalled client holds only its socket.
                Some(tls) => match tls.accept(stream).await {
                    Ok((stream, identity)) => {
                        let service = service(Connection {
                            client: peer,
                            tls: true,
                            identity,
                        });
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(connection.into_owned()).await
                    }
                    Err(e) => {
                        tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                        metrics.tls_handshake_failed();
                        return;
                    }
                },
            };
            if let Err(e) = result {
                tracing::debug!(client = %peer, error = %e, "connection ended with an error");
            }
        });
    }

    drop(listeners);
    reporter.abort();
    // A connection accepted just before the signal may not have sent its
    // first request yet, and a graceful shutdown closes a connection with
    // no request under way at once: its client would see it reset. Read
    // those first requests before telling connections to finish.
    tokio::time::sleep(FIRST_REQUEST_GRACE.min(drain_timeout)).await;
    let open = graceful.count();
    tracing::info!(
        connections = open,
        "shutting down: draining in-flight requests"
    );
    match tokio::time::timeout(drain_timeout, graceful.shutdown()).await {
        Ok(()) => {
            tracing::info!("drained");
            0
        }
        Err(_) => {
            tracing::warn!(
                timeout_ms = drain_timeout.as_millis() as u64,
                "drain deadline reached; cutting the remaining connections"
            );
            1
        }
    }
}

/// Logs, every few seconds, how many connections and requests were refused
/// since the last report (nothing when none were).
async fn report_refusals(limits: Arc<ConnectionLimits>, dispatcher: Arc<Dispatcher>) {
    let mut last = (0, 0, 0);
    let mut tick = tokio::time::interval(REFUSAL_REPORT_EVERY);
    loop {
        tick.tick().await;
        let now = (
            limits.refused_full.load(Ordering::Relaxed),
            limits.refused_peer.load(Ordering::Relaxed),
            dispatcher.rate_limiter().limited.load(Ordering::Relaxed),
        );
        if now != last {
            tracing::warn!(
                over_max_connections = now.0 - last.0,
                over_max_connections_per_peer = now.1 - last.1,
                rate_limited = now.2 - last.2,
                open_connections = limits.open(),
                max_connections = limits.max(),
                "refused in the last {} s",
                REFUSAL_REPORT_EVERY.as_secs()
            );
            last = now;
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
