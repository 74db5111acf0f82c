//! Spin key-value (`fermyon:spin/key-value@2.0.0`) over HTTP:
//! `GET /kv/LABEL/KEY` reads, `PUT` writes the body, `DELETE` deletes,
//! `GET /kv/LABEL` lists keys. Store errors come back as JSON.
use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;
use spin_sdk::key_value::{Error, Store};

fn error(status: u16, e: &Error) -> Response {
    let kind = match e {
        Error::AccessDenied => "access-denied",
        Error::NoSuchStore => "no-such-store",
        Error::StoreTableFull => "store-table-full",
        Error::Other(_) => "other",
    };
    let body = serde_json::json!({"error": kind, "message": e.to_string()});
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let info = req
        .header("spin-path-info")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .trim_start_matches('/')
        .to_string();
    let (label, key) = match info.split_once('/') {
        Some((label, key)) => (label.to_string(), Some(key.to_string())),
        None => (info.clone(), None),
    };
    let store = match Store::open(&label) {
        Ok(store) => store,
        Err(e @ Error::AccessDenied) => return Ok(error(403, &e)),
        Err(e) => return Ok(error(500, &e)),
    };
    let result = match (req.method(), key) {
        (Method::Get, None) => store.get_keys().map(|mut keys| {
            keys.sort();
            Response::new(200, serde_json::to_string(&keys).unwrap())
        }),
        (Method::Get, Some(key)) => store.get(&key).map(|value| match value {
            Some(value) => Response::new(200, value),
            None => Response::new(404, "absent"),
        }),
        (Method::Put, Some(key)) => store.set(&key, req.body()).map(|()| Response::new(204, ())),
        (Method::Delete, Some(key)) => store.delete(&key).map(|()| Response::new(204, ())),
        (Method::Head, Some(key)) => store
            .exists(&key)
            .map(|found| Response::new(if found { 200 } else { 404 }, ())),
        _ => return Ok(Response::new(405, "method not allowed")),
    };
    Ok(result.unwrap_or_else(|e| error(503, &e)))
}
