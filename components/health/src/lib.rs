//! `GET /health`: the app's own health: the store must answer (else 503),
//! and the core is checked with a short timeout so a slow core makes the app
//! `degraded`, never slow.
use std::time::Duration;

use kiosk_domain::Store;
use kiosk_spin::outbound::{call, split_base};
use kiosk_spin::{KvStore, api_error, json};
use spin_sdk::http::{IntoResponse, Method, Request};
use spin_sdk::http_component;

const CORE_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    if *req.method() != Method::Get && *req.method() != Method::Head {
        let mut response = api_error(405, "method_not_allowed", "use GET");
        response.set_header("allow", "GET, HEAD");
        return Ok(response);
    }
    let store = match KvStore::open()
        .map_err(|e| e.to_string())
        .and_then(|s| s.get("health:probe").map(|_| ()).map_err(|e| e.to_string()))
    {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("failing: {e}"),
    };
    let core = check_core();
    let status = if store != "ok" {
        "failing"
    } else if core != "ok" {
        "degraded"
    } else {
        "ok"
    };
    let body = serde_json::json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "checks": { "store": store, "core": core },
    });
    Ok(json(if status == "failing" { 503 } else { 200 }, &body))
}

fn check_core() -> String {
    let base = spin_sdk::variables::get("core_base_url").unwrap_or_default();
    let Some((https, authority)) = split_base(&base) else {
        return "failing: core_base_url is not an http(s) URL".into();
    };
    match call(
        "GET",
        https,
        &authority,
        "/health",
        &[],
        &[],
        CORE_CHECK_TIMEOUT,
    ) {
        Ok(reply) if reply.status < 500 => "ok".into(),
        Ok(reply) => format!("failing: status {}", reply.status),
        Err(e) => format!("failing: {e:?}"),
    }
}
