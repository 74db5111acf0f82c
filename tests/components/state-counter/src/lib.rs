//! Counts requests in a global: with a fresh instance per request it always answers 1.
use std::sync::atomic::{AtomicU64, Ordering};

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

static SEEN: AtomicU64 = AtomicU64::new(0);

#[http_component]
fn handle(_req: Request) -> anyhow::Result<impl IntoResponse> {
    let n = SEEN.fetch_add(1, Ordering::SeqCst) + 1;
    Ok(Response::new(200, n.to_string()))
}
