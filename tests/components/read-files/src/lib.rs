//! Reads the guest file named by `?path=/x` and tries to write beside it,
//! to show what the manifest's `files` grant.
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let path = req
        .query()
        .split('&')
        .find_map(|kv| kv.strip_prefix("path="))
        .unwrap_or("/")
        .to_string();
    let (status, body) = match std::fs::read_to_string(&path) {
        Ok(text) => (200, text),
        Err(e) => (404, format!("cannot read {path}: {e}")),
    };
    let write_allowed = std::fs::write(format!("{path}.written"), b"x").is_ok();
    Ok(Response::builder()
        .status(status)
        .header("x-write-allowed", write_allowed.to_string())
        .body(body)
        .build())
}
