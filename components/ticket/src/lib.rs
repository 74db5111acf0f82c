//! `/api/v1/tickets`: issue (`POST`), read (`GET /{id}`) and cancel
//! (`DELETE /{id}`) tickets. Parse, call the domain, answer.
use kiosk_domain::{Credentials, DomainError, IdempotencyKey, parse_issue_request};
use kiosk_spin::{
    Authenticated, Session, api_error, check_body_size, credentials, error, json,
    method_not_allowed, path_segments, random16,
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
    let c = &credentials;
    let response = match (req.method(), segments.as_slice()) {
        (Method::Post, []) => serve(|| issue(c, &req)),
        (Method::Get, [id]) => serve(|| read(c, &req, id)),
        (Method::Delete, [id]) => serve(|| cancel(c, &req, id)),
        (_, []) => method_not_allowed("POST", "use POST /api/v1/tickets"),
        (_, [_]) => method_not_allowed("GET, DELETE", "use GET or DELETE /api/v1/tickets/{id}"),
        _ => api_error(404, "not_found", "no such ticket resource"),
    };
    Ok(response)
}

fn serve(f: impl FnOnce() -> Result<Response, DomainError>) -> Response {
    f().unwrap_or_else(|e| error(&e))
}

fn issue(credentials: &Credentials, req: &Request) -> Result<Response, DomainError> {
    let auth = Authenticated::from_request(credentials, req)?;
    let request = parse_issue_request(req.body())?;
    auth.may_act_at(&request.branch, None)?;
    let idempotency = match req.header("idempotency-key").and_then(|v| v.as_str()) {
        Some(key) => Some(IdempotencyKey::for_body(key, req.body())?),
        None => None,
    };
    let session = auth.open()?;
    let Authenticated { at, caller, .. } = &session.auth;
    let ticket = session
        .kiosk()
        .issue_ticket(caller, request, idempotency, *at, random16())?;
    let mut response = json(201, &ticket);
    response.set_header("location", format!("/api/v1/tickets/{}", ticket.id));
    Ok(response)
}

fn read(credentials: &Credentials, req: &Request, id: &str) -> Result<Response, DomainError> {
    let s = Session::open(credentials, req)?;
    let ticket = s.kiosk().ticket(&s.auth.caller, id, s.auth.at)?;
    s.auth.may_act_at(&ticket.branch, None)?;
    Ok(json(200, &ticket))
}

fn cancel(credentials: &Credentials, req: &Request, id: &str) -> Result<Response, DomainError> {
    let s = Session::open(credentials, req)?;
    // A credential bound to branches cancels only theirs: read the ticket's first.
    if !s.auth.binding.is_unbound() {
        let ticket = s.kiosk().ticket(&s.auth.caller, id, s.auth.at)?;
        s.auth.may_act_at(&ticket.branch, None)?;
    }
    Ok(json(200, &s.kiosk().cancel(&s.auth.caller, id, s.auth.at)?))
}
