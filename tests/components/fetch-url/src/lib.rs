//! `GET /fetch?url=URL` sends an outbound GET to URL and answers
//! `STATUS BODY`, or 502 with the error the host gave.
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

#[http_component]
async fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let url = req
        .query()
        .split('&')
        .find_map(|kv| kv.strip_prefix("url="))
        .unwrap_or("")
        .to_string();
    let outbound = Request::get(url).build();
    Ok(match spin_sdk::http::send::<_, Response>(outbound).await {
        Ok(response) => {
            let body = String::from_utf8_lossy(response.body()).into_owned();
            Response::new(200, format!("{} {body}", response.status()))
        }
        Err(e) => Response::new(502, format!("{e}")),
    })
}
