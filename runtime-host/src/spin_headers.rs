//! The `spin-*` headers Spin adds to every request, so a component sees the
//! same values under `spin up` and under this host. Client-sent `spin-*`
//! headers are dropped first: a client must not be able to forge them.

use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Request, header};
use kiosk_routes::RouteMatch;

use crate::error::HostError;

/// Facts about the connection a request came in on.
pub struct RequestContext<'a> {
    /// Whether the listener is TLS.
    pub tls: bool,
    /// The request's host (`Host` header, else the URI authority).
    pub host: &'a str,
    /// The peer address.
    pub client: SocketAddr,
}

/// The request's host: the `Host` header, else the URI authority (HTTP/2).
/// Missing, unparsable or disagreeing values are a 400, where Spin drops the
/// connection without an answer.
pub fn request_host<B>(req: &Request<B>) -> Result<String, HostError> {
    let header = match req.headers().get(header::HOST) {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .filter(|v| v.parse::<http::uri::Authority>().is_ok())
                .ok_or_else(|| HostError::BadHost("the Host header is not a valid host".into()))?,
        ),
        None => None,
    };
    let authority = req.uri().authority().map(|a| a.as_str());
    match (header, authority) {
        (Some(h), Some(a)) if !h.eq_ignore_ascii_case(a) => Err(HostError::BadHost(format!(
            "the Host header ({h}) differs from the request target's authority ({a})"
        ))),
        (Some(h), _) => Ok(h.to_string()),
        (None, Some(a)) => Ok(a.to_string()),
        (None, None) => Err(HostError::BadHost("the request has no Host header".into())),
    }
}

/// Replaces any client-sent `spin-*` headers with the host's own values.
pub fn apply<B, T>(req: &mut Request<B>, matched: &RouteMatch<'_, T>, ctx: &RequestContext<'_>) {
    let full_url = format!(
        "{}://{}{}",
        if ctx.tls { "https" } else { "http" },
        ctx.host,
        req.uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/")
    );
    let headers = req.headers_mut();
    strip_client_spin_headers(headers);
    set(headers, "spin-path-info", &matched.path_info());
    set(headers, "spin-full-url", &full_url);
    set(headers, "spin-matched-route", matched.matched_route());
    set(headers, "spin-base-path", "/");
    set(headers, "spin-raw-component-route", matched.raw_route());
    set(headers, "spin-component-route", matched.component_route());
    set(headers, "spin-client-addr", &ctx.client.to_string());
    for (name, value) in matched.named() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(kiosk_routes::header_name_for(name)),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
}

fn strip_client_spin_headers(headers: &mut HeaderMap) {
    let forged: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("spin-"))
        .cloned()
        .collect();
    for name in forged {
        headers.remove(&name);
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    // Values come from the request line and the manifest, both already valid
    // header text; an invalid one is left out rather than failing the request.
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, host: Option<&str>) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        if let Some(host) = host {
            builder = builder.header(header::HOST, host);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn host_comes_from_the_header_or_the_authority() {
        assert_eq!(
            request_host(&request("/x", Some("a.example:3000"))).unwrap(),
            "a.example:3000"
        );
        assert_eq!(
            request_host(&request("http://b.example/x", None)).unwrap(),
            "b.example"
        );
        assert_eq!(
            request_host(&request("http://b.example/x", Some("B.example"))).unwrap(),
            "B.example"
        );
    }

    #[test]
    fn missing_or_conflicting_hosts_are_bad_requests() {
        assert_eq!(
            request_host(&request("/x", None)).unwrap_err().code(),
            "bad_host"
        );
        assert_eq!(
            request_host(&request("http://a.example/x", Some("b.example")))
                .unwrap_err()
                .code(),
            "bad_host"
        );
        assert_eq!(
            request_host(&request("/x", Some("a b")))
                .unwrap_err()
                .code(),
            "bad_host"
        );
    }

    #[test]
    fn client_sent_spin_headers_are_replaced() {
        let table = kiosk_routes::RouteTable::build([("/api/:id".to_string(), 0usize)]).unwrap();
        let matched = table.route("/api/42").unwrap();
        let mut req = request("/api/42?x=1", Some("h:1"));
        req.headers_mut()
            .insert("spin-client-addr", HeaderValue::from_static("6.6.6.6:1"));
        req.headers_mut()
            .insert("spin-evil", HeaderValue::from_static("1"));
        let ctx = RequestContext {
            tls: false,
            host: "h:1",
            client: "127.0.0.1:5555".parse().unwrap(),
        };
        apply(&mut req, &matched, &ctx);
        let h = req.headers();
        assert_eq!(h.get_all("spin-client-addr").iter().count(), 1);
        assert_eq!(h["spin-client-addr"], "127.0.0.1:5555");
        assert!(h.get("spin-evil").is_none());
        assert_eq!(h["spin-full-url"], "http://h:1/api/42?x=1");
        assert_eq!(h["spin-path-match-id"], "42");
        assert_eq!(h["spin-matched-route"], "/api/:id");
        assert_eq!(h["spin-base-path"], "/");
        assert_eq!(h["spin-path-info"], "");
    }
}
