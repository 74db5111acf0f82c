//! Never answers: spins the CPU until the host stops it.
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(_req: Request) -> anyhow::Result<impl IntoResponse> {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
        if std::hint::black_box(false) {
            break;
        }
    }
    Ok(Response::new(200, format!("unreachable {n}")))
}
