//! Echoes what the guest sees of its request and its environment, as JSON.
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let headers: Vec<(String, String)> = req
        .headers()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let env: serde_json::Map<String, serde_json::Value> = std::env::vars()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    let body = serde_json::json!({
        "method": req.method().to_string(),
        "uri": req.uri(),
        "path": req.path(),
        "query": req.query(),
        "headers": headers,
        "env": env,
        "args": std::env::args().collect::<Vec<_>>(),
        "body_len": req.body().len(),
    });
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build())
}
