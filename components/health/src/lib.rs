//! `GET /health`: reports that the app is up (checks grow with the app).
use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    if *req.method() != Method::Get && *req.method() != Method::Head {
        let body =
            serde_json::json!({"error": {"code": "method_not_allowed", "message": "use GET"}});
        return Ok(Response::builder()
            .status(405)
            .header("content-type", "application/json")
            .header("allow", "GET, HEAD")
            .body(body.to_string())
            .build());
    }
    let body = serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "checks": {},
    });
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(body.to_string())
        .build())
}
