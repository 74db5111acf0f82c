//! `/api/v1/core/{path}`: forwards allow-listed calls to the core banking
//! system. Only kiosks and counters may call it; only the methods and paths
//! in `core_allowed_routes` pass; the client's credentials never reach the
//! core; every call carries a request id and is bounded by `core_timeout_ms`.
//! A failed or slow core is `core_unavailable` (503 / 504) with `Retry-After`.
use std::time::Duration;

use kiosk_domain::{Caller, DomainError};
use kiosk_spin::outbound::{CallError, call, split_base};
use kiosk_spin::{api_error, authenticate, check_body_size, error, now, random16};
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

/// Request headers passed on to the core (everything else stays here).
const FORWARDED_HEADERS: &[&str] = &["content-type", "accept", "accept-language"];

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    if let Err(response) = check_body_size(&req) {
        return Ok(response);
    }
    match authenticate(&req, now()) {
        Ok(Caller::Kiosk { .. } | Caller::Counter { .. }) => {}
        Ok(Caller::Mobile { .. }) => {
            return Ok(error(&DomainError::Forbidden(
                "the core passthrough is for kiosks and counters".into(),
            )));
        }
        Err(e) => return Ok(error(&e)),
    }
    let path = req
        .header("spin-path-info")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let method = req.method().to_string();
    let allowed = spin_sdk::variables::get("core_allowed_routes").unwrap_or_default();
    if !route_allowed(&allowed, &method, &path) {
        return Ok(api_error(
            403,
            "core_route_not_allowed",
            &format!("{method} {path} is not an allowed core route"),
        ));
    }
    let request_id = request_id(&req);
    let base = spin_sdk::variables::get("core_base_url").unwrap_or_default();
    let Some((https, authority)) = split_base(&base) else {
        return Ok(api_error(
            500,
            "core_misconfigured",
            "core_base_url is not an http(s) URL",
        ));
    };
    let timeout_ms: u64 = spin_sdk::variables::get("core_timeout_ms")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let mut headers: Vec<(String, Vec<u8>)> = FORWARDED_HEADERS
        .iter()
        .filter_map(|name| {
            req.header(name)
                .map(|v| (name.to_string(), v.as_bytes().to_vec()))
        })
        .collect();
    headers.push(("x-request-id".into(), request_id.clone().into_bytes()));
    let path_and_query = match req.query() {
        "" => path.clone(),
        query => format!("{path}?{query}"),
    };
    let reply = call(
        &method,
        https,
        &authority,
        &path_and_query,
        &headers,
        req.body(),
        Duration::from_millis(timeout_ms),
    );
    let mut response = match reply {
        Ok(reply) if reply.status >= 500 => {
            unavailable(503, &format!("the core answered {}", reply.status))
        }
        Ok(reply) => {
            let mut builder = Response::builder();
            builder.status(reply.status);
            for (name, value) in &reply.headers {
                if name.eq_ignore_ascii_case("content-type") {
                    builder.header("content-type", String::from_utf8_lossy(value).into_owned());
                }
            }
            builder.body(reply.body).build()
        }
        Err(CallError::Timeout) => unavailable(
            504,
            &format!("the core did not answer within {timeout_ms} ms"),
        ),
        Err(CallError::Denied) => unavailable(
            503,
            "the core is not reachable from this component (allowed_outbound_hosts)",
        ),
        Err(CallError::Unavailable(why)) => {
            unavailable(503, &format!("the core is unavailable: {why}"))
        }
    };
    response.set_header("x-request-id", request_id);
    Ok(response)
}

fn unavailable(status: u16, message: &str) -> Response {
    let mut response = api_error(status, "core_unavailable", message);
    response.set_header("retry-after", "5");
    response
}

/// `METHOD /pattern, …` where `*` matches one path segment.
fn route_allowed(spec: &str, method: &str, path: &str) -> bool {
    let path: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    spec.split(',')
        .filter_map(|entry| entry.trim().split_once(' '))
        .any(|(m, pattern)| {
            let pattern: Vec<&str> = pattern
                .trim()
                .split('/')
                .filter(|s| !s.is_empty())
                .collect();
            m.eq_ignore_ascii_case(method)
                && pattern.len() == path.len()
                && pattern.iter().zip(&path).all(|(p, s)| *p == "*" || p == s)
        })
}

/// The client's `x-request-id` when it is a sane token, else a new one.
fn request_id(req: &Request) -> String {
    req.header("x-request-id")
        .and_then(|v| v.as_str())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string)
        .unwrap_or_else(|| random16().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_method_and_whole_segments() {
        let spec = "GET /customers/*, GET /accounts/*/balance, POST /transfers";
        assert!(route_allowed(spec, "GET", "/customers/c-1"));
        assert!(route_allowed(spec, "GET", "/accounts/123/balance"));
        assert!(route_allowed(spec, "POST", "/transfers"));
        assert!(!route_allowed(spec, "DELETE", "/transfers"));
        assert!(!route_allowed(spec, "GET", "/customers"));
        assert!(!route_allowed(spec, "GET", "/customers/c-1/secrets"));
        assert!(!route_allowed(spec, "GET", "/accounts/123/history"));
        assert!(!route_allowed("", "GET", "/customers/c-1"));
    }

    #[test]
    fn base_urls_split_into_scheme_and_authority() {
        assert_eq!(
            split_base("http://127.0.0.1:3999"),
            Some((false, "127.0.0.1:3999".into()))
        );
        assert_eq!(
            split_base("https://core.bank.example/"),
            Some((true, "core.bank.example".into()))
        );
        assert_eq!(split_base("ftp://x"), None);
        assert_eq!(split_base("http://x/api"), None);
    }
}
