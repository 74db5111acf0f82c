//! `/api/v1/core/{path}`: forwards allow-listed calls to the core banking
//! system. Only kiosks and counters may call it; the path must be canonical
//! and `METHOD /path` in `core_allowed_routes`; the client's credentials
//! never reach the core, its key id does (`x-kiosk-client`); every call
//! carries a request id and is bounded by `core_timeout_ms` as a whole.
//! Writes need an `Idempotency-Key` and take effect once per caller and key
//! (see `kiosk_domain::CoreWrites`). A failing core, or the host's policy
//! refusing the call, is 503 (`core_unavailable`, or `core_busy` at the
//! host's concurrency cap), a silent one 504, all with `Retry-After`. Each
//! kiosk and counter key has a rate of calls (the catalog's
//! `limits.core_calls`): past it, 429 `rate_limited` with `Retry-After`.
use std::time::Duration;

use kiosk_domain::{
    CoreOutcome, CoreReply, CoreRoutes, CoreWrite, CoreWrites, Credentials, DomainError,
    IdempotencyKey, Rate, core_client, core_write_fingerprint, core_write_lease, is_core_write,
    rate,
};
use kiosk_spin::outbound::{CallError, Refusal, Reply, call, split_base};
use kiosk_spin::{
    Authenticated, KvStore, api_error, catalog, check_body_size, credentials, error, request_id,
};
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

/// Request headers passed on to the core (everything else stays here).
const FORWARDED_HEADERS: &[&str] = &["content-type", "accept", "accept-language"];

/// Set on an answer that repeats a recorded one (here or at the core).
const REPLAYED_HEADER: &str = "idempotent-replayed";

/// `Retry-After` for a core that failed or timed out.
const CORE_RETRY_AFTER_S: u64 = 5;

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let request_id = request_id(&req);
    let mut response = match credentials() {
        Ok(credentials) => forward(&credentials, &req, &request_id).unwrap_or_else(|r| r),
        Err(misconfigured) => misconfigured,
    };
    response.set_header("x-request-id", request_id);
    Ok(response)
}

/// Where the core is and how long a call may take.
struct Core {
    https: bool,
    authority: String,
    timeout: Duration,
}

impl Core {
    fn from_variables() -> Result<Core, Response> {
        let base = spin_sdk::variables::get("core_base_url").unwrap_or_default();
        let (https, authority) = split_base(&base)
            .ok_or_else(|| misconfigured("core_base_url is not an http(s) URL"))?;
        let timeout_ms: u64 = spin_sdk::variables::get("core_timeout_ms")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3000);
        Ok(Core {
            https,
            authority,
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    fn call(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(String, Vec<u8>)],
        body: &[u8],
    ) -> Result<Reply, CallError> {
        call(
            method,
            self.https,
            &self.authority,
            path_and_query,
            headers,
            body,
            self.timeout,
        )
    }
}

fn forward(
    credentials: &Credentials,
    req: &Request,
    request_id: &str,
) -> Result<Response, Response> {
    check_body_size(req)?;
    let auth = Authenticated::from_request(credentials, req).map_err(|e| error(&e))?;
    let client = core_client(&auth.caller).map_err(|e| error(&e))?;
    let method = req.method().to_string();
    let path = req
        .header("spin-path-info")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let query = req.query();
    let routes =
        CoreRoutes::parse(&spin_sdk::variables::get("core_allowed_routes").unwrap_or_default())
            .map_err(|e| misconfigured(&e.to_string()))?;
    routes.check(&method, &path, query).map_err(|e| error(&e))?;
    admit(&auth)?;
    let core = Core::from_variables()?;
    let mut headers: Vec<(String, Vec<u8>)> = FORWARDED_HEADERS
        .iter()
        .filter_map(|name| {
            req.header(name)
                .map(|v| (name.to_string(), v.as_bytes().to_vec()))
        })
        .collect();
    headers.push(("x-request-id".into(), request_id.as_bytes().to_vec()));
    headers.push(("x-kiosk-client".into(), client.into_bytes()));
    let path_and_query = match query {
        "" => path.clone(),
        query => format!("{path}?{query}"),
    };
    if !is_core_write(&method) {
        let reply = core.call(&method, &path_and_query, &headers, req.body());
        return Ok(answer(reply.map(core_reply), &core));
    }

    let key = req
        .header("idempotency-key")
        .map(|v| v.as_str().unwrap_or(""))
        .ok_or_else(|| error(&DomainError::IdempotencyKeyRequired))?;
    let fingerprint = core_write_fingerprint(&method, &path, query, req.body());
    let key = IdempotencyKey::new(key, fingerprint).map_err(|e| error(&e))?;
    let store = KvStore::open().map_err(|e| error(&e))?;
    let writes = CoreWrites::new(&store, core_write_lease(core.timeout));
    let lease = match writes
        .begin(&auth.caller, &key, auth.at)
        .map_err(|e| error(&e))?
    {
        CoreWrite::Replay(reply) => return Ok(passthrough(reply, true)),
        CoreWrite::Send(lease) => lease,
    };
    headers.push(("idempotency-key".into(), key.key().as_bytes().to_vec()));
    let reply = core
        .call(&method, &path_and_query, &headers, req.body())
        .map(core_reply);
    let outcome = match &reply {
        Ok((reply, _)) => CoreOutcome::Answered(reply),
        Err(e) if e.never_sent() => CoreOutcome::NotSent,
        Err(_) => CoreOutcome::Unknown,
    };
    match writes.finish(lease, outcome) {
        Ok(true) => {}
        Ok(false) => eprintln!(
            "core write {request_id}: its idempotency lease lapsed before the core answered; \
             the outcome was not recorded"
        ),
        Err(e) => eprintln!("core write {request_id}: recording the outcome failed: {e}"),
    }
    Ok(answer(reply, &core))
}

/// Counts the call against the caller's rate of core calls: `rate_limited`
/// past it. Without a readable catalog the default rate applies, and a
/// store that fails lets the call through: the rate guards the core, whose
/// reads need no store, so a store outage must not stop them (kiosk-host's
/// cap on calls in flight still holds).
fn admit(auth: &Authenticated) -> Result<(), Response> {
    let rate = catalog().map(|c| c.core_calls()).unwrap_or_else(|e| {
        log_cause(
            "core rate: the catalog is unreadable, using the default",
            &e,
        );
        Rate::CORE_CALLS
    });
    let subject = rate::Subject::CoreCalls {
        caller: &auth.caller,
    };
    match KvStore::open().and_then(|store| rate::admit(&store, &subject, rate, auth.at)) {
        Ok(()) => Ok(()),
        Err(e @ DomainError::StoreUnavailable(_)) => {
            log_cause("core rate: not counted, the store failed", &e);
            Ok(())
        }
        Err(e) => Err(error(&e)),
    }
}

fn log_cause(what: &str, e: &DomainError) {
    match e {
        DomainError::StoreUnavailable(cause) => eprintln!("{what}: {cause}"),
        e => eprintln!("{what}: {e}"),
    }
}

/// The core's reply as recorded, and whether the core said it replayed it.
fn core_reply(reply: Reply) -> (CoreReply, bool) {
    let replayed = reply
        .header(REPLAYED_HEADER)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let content_type = reply.header("content-type").map(str::to_string);
    (
        CoreReply {
            status: reply.status,
            content_type,
            body: reply.body,
        },
        replayed,
    )
}

/// The client's answer for a call's result.
fn answer(result: Result<(CoreReply, bool), CallError>, core: &Core) -> Response {
    match result {
        Ok((reply, _)) if reply.status >= 500 => unavailable(
            503,
            &format!("the core answered {}", reply.status),
            CORE_RETRY_AFTER_S,
        ),
        Ok((reply, replayed)) => passthrough(reply, replayed),
        Err(CallError::Refused {
            reason: Refusal::Busy,
            retry_after_s,
        }) => {
            let mut response = api_error(
                503,
                "core_busy",
                "the core has as many calls in flight from this host as it may; retry shortly",
            );
            response.set_header("retry-after", retry_after_s.to_string());
            response
        }
        Err(CallError::Refused {
            reason: Refusal::CircuitOpen,
            retry_after_s,
        }) => unavailable(
            503,
            &format!("the core is failing; calls to it are paused for {retry_after_s} s"),
            retry_after_s,
        ),
        Err(CallError::Timeout) => unavailable(
            504,
            &format!(
                "the core did not answer within {} ms",
                core.timeout.as_millis()
            ),
            CORE_RETRY_AFTER_S,
        ),
        Err(CallError::Denied) => unavailable(
            503,
            "the core is not reachable from this component (allowed_outbound_hosts)",
            CORE_RETRY_AFTER_S,
        ),
        Err(CallError::Invalid(what)) => misconfigured(&format!(
            "the request to the core could not be built ({what})"
        )),
        Err(e @ (CallError::Unreachable(_) | CallError::Failed(_))) => unavailable(
            503,
            &format!("the core is unavailable: {}", e.detail()),
            CORE_RETRY_AFTER_S,
        ),
    }
}

/// The core's answer as the client gets it: status, content type, body.
fn passthrough(reply: CoreReply, replayed: bool) -> Response {
    let mut builder = Response::builder();
    builder.status(reply.status);
    if let Some(content_type) = reply.content_type {
        builder.header("content-type", content_type);
    }
    if replayed {
        builder.header(REPLAYED_HEADER, "true");
    }
    builder.body(reply.body).build()
}

fn unavailable(status: u16, message: &str, retry_after_s: u64) -> Response {
    let mut response = api_error(status, "core_unavailable", message);
    response.set_header("retry-after", retry_after_s.to_string());
    response
}

fn misconfigured(message: &str) -> Response {
    eprintln!("core_misconfigured: {message}");
    api_error(500, "core_misconfigured", message)
}
