//! `wasi:keyvalue/batch` over HTTP on store `default`:
//! `PUT /batch` with a JSON object sets every pair at once,
//! `GET /batch?keys=a,b,c` answers the pairs that exist as a JSON object,
//! `DELETE /batch?keys=a,b` deletes them.
use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;
use spin_sdk::wit::wasi::keyvalue::{batch, store};

fn keys(req: &Request) -> Vec<String> {
    req.query()
        .split('&')
        .find_map(|kv| kv.strip_prefix("keys="))
        .unwrap_or("")
        .split(',')
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect()
}

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let bucket = match store::open("default") {
        Ok(bucket) => bucket,
        Err(e) => return Ok(Response::new(403, format!("open: {e:?}"))),
    };
    let result = match req.method() {
        Method::Put => {
            let pairs: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(req.body())?;
            let pairs: Vec<(String, Vec<u8>)> = pairs
                .into_iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or_default().as_bytes().to_vec()))
                .collect();
            batch::set_many(&bucket, &pairs).map(|()| Response::new(204, ()))
        }
        Method::Get => batch::get_many(&bucket, &keys(&req)).map(|found| {
            let found: serde_json::Map<String, serde_json::Value> = found
                .into_iter()
                .filter_map(|(k, v)| Some((k, String::from_utf8_lossy(&v?).into_owned().into())))
                .collect();
            Response::new(200, serde_json::Value::Object(found).to_string())
        }),
        Method::Delete => batch::delete_many(&bucket, &keys(&req)).map(|()| Response::new(204, ())),
        _ => return Ok(Response::new(405, "method not allowed")),
    };
    Ok(result.unwrap_or_else(|e| Response::new(503, format!("{e:?}"))))
}
