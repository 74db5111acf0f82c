//! `/api/v1/queues/{branch}`: the queue board (`GET`, no credentials: it is
//! what the branch's screens show) and the counter actions (`POST .../call`,
//! `.../recall`, `.../tickets/{id}/transfer|complete|no-show`).
use kiosk_domain::{DomainError, Kiosk, parse_call_request, parse_transfer_request};
use kiosk_spin::{
    Authenticated, KvStore, Session, api_error, catalog, check_body_size, error, json,
    method_not_allowed, now, path_segments,
};
use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    if let Err(response) = check_body_size(&req) {
        return Ok(response);
    }
    let segments = path_segments(&req);
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let result = match (req.method(), segments.as_slice()) {
        (Method::Get, [branch]) => board(branch),
        (Method::Post, [branch, "call"]) => call(&req, branch),
        (Method::Post, [branch, "recall"]) => recall(&req, branch),
        (Method::Post, [branch, "tickets", id, action]) => act(&req, branch, id, action),
        (_, [_]) => return Ok(method_not_allowed("GET", "use GET for the queue board")),
        (_, [_, "call" | "recall"]) | (_, [_, "tickets", _, _]) => {
            return Ok(method_not_allowed("POST", "use POST for counter actions"));
        }
        _ => return Ok(api_error(404, "not_found", "no such queue resource")),
    };
    Ok(result.unwrap_or_else(|e| error(&e)))
}

fn board(branch: &str) -> Result<Response, DomainError> {
    let catalog = catalog()?;
    let store = KvStore::open()?;
    Ok(json(
        200,
        &Kiosk::new(&catalog, &store).queue(branch, now())?,
    ))
}

fn call(req: &Request, branch: &str) -> Result<Response, DomainError> {
    let auth = Authenticated::from_request(req)?;
    let request = parse_call_request(req.body())?;
    let s = auth.open()?;
    Ok(
        match s
            .kiosk()
            .call_next(&s.auth.caller, branch, request, s.auth.at)?
        {
            Some(ticket) => json(200, &ticket),
            None => Response::new(204, ()),
        },
    )
}

fn recall(req: &Request, branch: &str) -> Result<Response, DomainError> {
    let auth = Authenticated::from_request(req)?;
    let request = parse_call_request(req.body())?;
    let s = auth.open()?;
    Ok(
        match s
            .kiosk()
            .recall(&s.auth.caller, branch, &request.counter, s.auth.at)?
        {
            Some(ticket) => json(200, &ticket),
            None => Response::new(204, ()),
        },
    )
}

fn act(req: &Request, branch: &str, id: &str, action: &str) -> Result<Response, DomainError> {
    let s = Session::open(req)?;
    let (kiosk, caller, at) = (s.kiosk(), &s.auth.caller, s.auth.at);
    let ticket = match action {
        "transfer" => {
            kiosk.transfer(caller, branch, id, parse_transfer_request(req.body())?, at)?
        }
        "complete" => kiosk.complete(caller, branch, id, at)?,
        "no-show" => kiosk.no_show(caller, branch, id, at)?,
        other => {
            return Err(DomainError::InvalidRequest(format!(
                "unknown ticket action `{other}` (transfer, complete, no-show)"
            )));
        }
    };
    Ok(json(200, &ticket))
}
