//! `POST /incr/KEY?store=LABEL&by=N`: atomic increment through
//! `wasi:keyvalue/atomics`; answers the new value.
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;
use spin_sdk::wit::wasi::keyvalue::{atomics, store};

fn query<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.query()
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let key = req
        .header("spin-path-info")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .trim_start_matches('/')
        .to_string();
    let label = query(&req, "store").unwrap_or("default");
    let by: i64 = query(&req, "by").and_then(|v| v.parse().ok()).unwrap_or(1);
    let bucket = match store::open(label) {
        Ok(bucket) => bucket,
        Err(e) => return Ok(Response::new(403, format!("open: {e:?}"))),
    };
    Ok(match atomics::increment(&bucket, &key, by) {
        Ok(value) => Response::new(200, value.to_string()),
        Err(e) => Response::new(503, format!("increment: {e:?}")),
    })
}
