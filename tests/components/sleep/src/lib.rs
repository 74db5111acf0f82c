//! Waits `?ms=N` milliseconds (on the host clock, not the CPU) before answering.
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let ms: u64 = req
        .query()
        .split('&')
        .find_map(|kv| kv.strip_prefix("ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    std::thread::sleep(std::time::Duration::from_millis(ms));
    Ok(Response::new(200, format!("slept {ms} ms")))
}
