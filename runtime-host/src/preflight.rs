//! The preflight (`[server] preflight = "/health"`): before the host serves
//! anyone, it asks the app itself, so an app that knows it must not run
//! (its credentials are wrong for its environment, say) stops the start
//! instead of answering every client with an error.
//!
//! The request is `GET <path>` through the real dispatcher (intake,
//! routing, limits, a fresh instance) on a private loopback listener that
//! lives for this one request, before the configured listeners accept
//! anything and before the host announces where it serves.
//!
//! - 503 with `{"error":{"code":"misconfigured","message":…}}`: the host
//!   does not start, and says why with the app's message.
//! - 404 `route_not_found` (the host's own answer): the path is no route of
//!   the app, a mistake in the host configuration: the host does not start.
//! - Anything else (200, a 503 because a store is down for now, …): logged,
//!   and the host starts.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::admin::HostMetrics;
use crate::app::{AppHandle, LoadedApp};
use crate::config::ServerSettings;
use crate::dispatch::{Connection, Dispatcher};

/// The `error.code` with which an app says it must not serve.
pub const MISCONFIGURED: &str = "misconfigured";

/// Runs the preflight `server.preflight` names (nothing when empty).
pub async fn run(dispatcher: &Arc<Dispatcher>, server: &ServerSettings) -> anyhow::Result<()> {
    let path = server.preflight.trim();
    if path.is_empty() {
        return Ok(());
    }
    let tcp = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("preflight: binding a loopback listener")?;
    let address = tcp.local_addr()?;
    // One connection, answered by the dispatcher as any other.
    let serving = {
        let dispatcher = dispatcher.clone();
        tokio::spawn(async move {
            let (stream, client) = tcp.accept().await?;
            let connection = Connection {
                client,
                tls: false,
                identity: None,
            };
            let service = service_fn(move |req| {
                let (dispatcher, connection) = (dispatcher.clone(), connection.clone());
                async move { Ok::<_, Infallible>(dispatcher.handle(req, &connection).await) }
            });
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
                .map_err(std::io::Error::other)
        })
    };
    let url = format!("http://{address}{path}");
    let answer = tokio::time::timeout(server.request_timeout + Duration::from_secs(5), get(&url))
        .await
        .map_err(|_| anyhow::anyhow!("preflight: GET {path} got no answer in time"))
        .and_then(|answer| answer);
    serving.abort();
    let (status, body) = answer?;
    judge(path, status, &body)
}

/// The preflight of a version of the app about to replace the one in
/// force (a reload): the same request, through a dispatcher of its own
/// that counts into the host's `metrics`, so no client meets the new
/// version before it passed. Returns it, ready to put in force.
pub async fn check_version(
    app: LoadedApp,
    metrics: &Arc<HostMetrics>,
    server: &ServerSettings,
) -> anyhow::Result<Arc<LoadedApp>> {
    let handle = Arc::new(AppHandle::new(app));
    let dispatcher = Dispatcher::new(handle.clone(), server, metrics.clone());
    run(&Arc::new(dispatcher), server).await?;
    Ok(handle.current())
}

async fn get(url: &str) -> anyhow::Result<(u16, Bytes)> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .get(url.parse().context("preflight URL")?)
        .await
        .with_context(|| format!("preflight: GET {url}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .context("preflight: reading the answer")?
        .to_bytes();
    Ok((status, body))
}

/// Whether the app's answer lets the host start.
pub fn judge(path: &str, status: u16, body: &[u8]) -> anyhow::Result<()> {
    let error = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").cloned());
    let code = error
        .as_ref()
        .and_then(|e| e.get("code"))
        .and_then(|c| c.as_str());
    let message = error
        .as_ref()
        .and_then(|e| e.get("message"))
        .and_then(|m| m.as_str())
        .unwrap_or("");
    match (status, code) {
        (503, Some(MISCONFIGURED)) => {
            anyhow::bail!("preflight: GET {path} answered 503 {MISCONFIGURED}: {message}")
        }
        (404, Some("route_not_found")) => anyhow::bail!(
            "preflight: GET {path} matches no route of the app; fix `[server] preflight`"
        ),
        _ => {
            tracing::info!(path, status, "preflight passed");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_misconfigured_app_or_a_wrong_path_stops_the_start() {
        let misconfigured =
            br#"{"error":{"code":"misconfigured","message":"kiosk_api_keys holds a development key"}}"#;
        let err = judge("/health", 503, misconfigured)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kiosk_api_keys holds a development key"),
            "{err}"
        );
        let err = judge(
            "/healt",
            404,
            br#"{"error":{"code":"route_not_found","message":"x"}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/healt"), "{err}");
        assert!(judge("/health", 200, br#"{"status":"ok"}"#).is_ok());
        assert!(judge("/health", 503, br#"{"status":"failing"}"#).is_ok());
        assert!(judge("/health", 503, b"not json").is_ok());
        // Another code at the same status is the app's business.
        assert!(
            judge(
                "/x",
                503,
                br#"{"error":{"code":"store_unavailable","message":""}}"#
            )
            .is_ok()
        );
    }
}
