//! Answers a greeting: the smallest useful component (wasi:http plus its environment).
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(_req: Request) -> anyhow::Result<impl IntoResponse> {
    let who = std::env::var("GREETING").unwrap_or_else(|_| "world".to_string());
    Ok(Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(format!("Hello, {who}!\n"))
        .build())
}
