//! `POST /cas/KEY` appends the body and a `,` to the value at KEY with a
//! compare-and-swap retry loop (`wasi:keyvalue/atomics` cas); answers how
//! many attempts it took.
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;
use spin_sdk::wit::wasi::keyvalue::atomics::{self, Cas, CasError};
use spin_sdk::wit::wasi::keyvalue::store;

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let key = req
        .header("spin-path-info")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .trim_start_matches('/')
        .to_string();
    let bucket = match store::open("default") {
        Ok(bucket) => bucket,
        Err(e) => return Ok(Response::new(403, format!("open: {e:?}"))),
    };
    let mut cas = Cas::new(&bucket, &key).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    for attempt in 1..=1000 {
        let mut value = cas
            .current()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .unwrap_or_default();
        value.extend_from_slice(req.body());
        value.push(b',');
        match atomics::swap(cas, &value) {
            Ok(()) => return Ok(Response::new(200, attempt.to_string())),
            Err(CasError::CasFailed(retry)) => cas = retry,
            Err(CasError::StoreError(e)) => return Ok(Response::new(503, format!("swap: {e:?}"))),
        }
    }
    Ok(Response::new(409, "gave up after 1000 attempts"))
}
