//! Traps (a Rust panic becomes a wasm `unreachable`) before answering.
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    if std::hint::black_box(!req.uri().is_empty()) {
        panic!("deliberate trap");
    }
    Ok(Response::new(200, "unreachable"))
}
