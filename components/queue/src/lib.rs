//! `/api/v1/queues/{branch}`: the queue board (`GET`, no credentials: it is
//! what the branch's screens show) and the counter actions (`POST .../call`,
//! `.../recall`, `.../tickets/{id}/transfer|complete|no-show`).
use kiosk_domain::{
    Credentials, DomainError, Kiosk, parse_call_request, parse_end_request, parse_transfer_request,
};
use kiosk_spin::{
    Authenticated, KvStore, Session, api_error, catalog, check_body_size, credentials, error, json,
    method_not_allowed, now, path_segments,
};
use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let credentials = match credentials() {
        Ok(credentials) => credentials,
        Err(misconfigured) => return Ok(misconfigured),
    };
    if let Err(response) = check_body_size(&req) {
        return Ok(response);
    }
    let segments = path_segments(&req);
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let c = &credentials;
    let result = match (req.method(), segments.as_slice()) {
        (Method::Get, [branch]) => board(branch),
        (Method::Post, [branch, "call"]) => call(c, &req, branch),
        (Method::Post, [branch, "recall"]) => recall(c, &req, branch),
        (Method::Post, [branch, "tickets", id, action]) => act(c, &req, branch, id, action),
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

fn call(credentials: &Credentials, req: &Request, branch: &str) -> Result<Response, DomainError> {
    let auth = Authenticated::from_request(credentials, req)?;
    let request = parse_call_request(req.body())?;
    auth.may_act_at(branch, Some(&request.counter))?;
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

fn recall(credentials: &Credentials, req: &Request, branch: &str) -> Result<Response, DomainError> {
    let auth = Authenticated::from_request(credentials, req)?;
    let request = parse_call_request(req.body())?;
    auth.may_act_at(branch, Some(&request.counter))?;
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

fn act(
    credentials: &Credentials,
    req: &Request,
    branch: &str,
    id: &str,
    action: &str,
) -> Result<Response, DomainError> {
    let s = Session::open(credentials, req)?;
    s.auth.may_act_at(branch, None)?;
    let (kiosk, caller, at) = (s.kiosk(), &s.auth.caller, s.auth.at);
    // A counter key bound to counters finishes only the tickets they called.
    if !s.auth.binding.counters.is_empty()
        && let Some(counter) = kiosk.ticket(caller, id, at)?.counter
    {
        s.auth.may_act_at(branch, Some(&counter))?;
    }
    let ticket = match action {
        "transfer" => {
            kiosk.transfer(caller, branch, id, parse_transfer_request(req.body())?, at)?
        }
        "complete" | "no-show" => {
            // A terminal may say which counter it is: then the ticket must
            // be called there (a stale screen cannot finish a ticket that
            // was transferred and called elsewhere since).
            let end = parse_end_request(req.body())?;
            if let Some(counter) = &end.counter {
                s.auth.may_act_at(branch, Some(counter))?;
            }
            let counter = end.counter.as_deref();
            if action == "complete" {
                kiosk.complete_at(caller, branch, id, counter, at)?
            } else {
                kiosk.no_show_at(caller, branch, id, counter, at)?
            }
        }
        other => {
            return Err(DomainError::InvalidRequest(format!(
                "unknown ticket action `{other}` (transfer, complete, no-show)"
            )));
        }
    };
    Ok(json(200, &ticket))
}
