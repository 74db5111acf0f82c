//! Allocates memory without bound until the host's memory limit stops it.
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(_req: Request) -> anyhow::Result<impl IntoResponse> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    // 4 GiB in 1 MiB chunks: far past any sane per-instance limit.
    for _ in 0..4096 {
        hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
    }
    Ok(Response::new(200, format!("allocated {} MiB", hoard.len())))
}
