//! `GET /health`: the app's own health. The store must answer (else 503,
//! `failing`); the core is checked within 500 ms in all, so a slow core
//! makes the app `degraded`, never slow.
//!
//! Anyone gets `{status, version: {app, environment}}`. A counter
//! (`Authorization: Bearer <counter key>`, or its client certificate where
//! the host verifies them) also gets `checks: {store, core}`, each `ok` or
//! `failing: <short reason>`; the full cause of a store failure goes to the
//! host's log only. A deployment whose credentials are wrong for its
//! environment answers 503 `misconfigured` here too (kiosk-host's
//! preflight asks this route before it serves).
use std::time::Duration;

use kiosk_domain::{Caller, Store};
use kiosk_spin::outbound::{call, split_base};
use kiosk_spin::{Authenticated, KvStore, credentials, json, log, method_not_allowed, request_id};
use spin_sdk::http::{IntoResponse, Method, Request};
use spin_sdk::http_component;

const CORE_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// How the core check names itself to the core (`x-kiosk-client`).
const HEALTH_CLIENT: &str = "kiosk-api-health";

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let credentials = match credentials() {
        Ok(credentials) => credentials,
        Err(misconfigured) => return Ok(misconfigured),
    };
    if *req.method() != Method::Get && *req.method() != Method::Head {
        return Ok(method_not_allowed("GET, HEAD", "use GET"));
    }
    let store = check_store();
    let core = check_core(&request_id(&req));
    let status = if store.is_err() {
        "failing"
    } else if core.is_err() {
        "degraded"
    } else {
        "ok"
    };
    let mut body = serde_json::json!({
        "status": status,
        "version": {
            "app": env!("CARGO_PKG_VERSION"),
            "environment": credentials.environment.as_str(),
        },
    });
    let counter = matches!(
        Authenticated::from_request(&credentials, &req),
        Ok(Authenticated {
            caller: Caller::Counter { .. },
            ..
        })
    );
    if counter {
        body["checks"] = serde_json::json!({ "store": shown(&store), "core": shown(&core) });
    }
    Ok(json(if status == "failing" { 503 } else { 200 }, &body))
}

/// `ok`, or `failing: <reason>`.
fn shown(check: &Result<(), String>) -> String {
    match check {
        Ok(()) => "ok".into(),
        Err(reason) => format!("failing: {reason}"),
    }
}

fn check_store() -> Result<(), String> {
    let outcome = KvStore::open()
        .map_err(|e| ("cannot open", e.to_string()))
        .and_then(|store| {
            store
                .get("health:probe")
                .map(|_| ())
                .map_err(|e| ("read error", e.to_string()))
        });
    outcome.map_err(|(reason, cause)| {
        log(&format!("health: store {reason}: {cause}"));
        reason.to_string()
    })
}

fn check_core(request_id: &str) -> Result<(), String> {
    let base = spin_sdk::variables::get("core_base_url").unwrap_or_default();
    let Some((https, authority)) = split_base(&base) else {
        return Err("core_base_url is not an http(s) URL".into());
    };
    let headers = [
        ("x-request-id".to_string(), request_id.as_bytes().to_vec()),
        (
            "x-kiosk-client".to_string(),
            HEALTH_CLIENT.as_bytes().to_vec(),
        ),
    ];
    match call(
        "GET",
        https,
        &authority,
        "/health",
        &headers,
        &[],
        CORE_CHECK_TIMEOUT,
    ) {
        Ok(reply) if reply.status < 500 => Ok(()),
        Ok(reply) => Err(format!("status {}", reply.status)),
        Err(e) => Err(e.detail()),
    }
}
