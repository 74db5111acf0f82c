//! Outbound HTTP (`wasi:http/outgoing-handler`): only to the component's
//! `allowed_outbound_hosts`, checked before any connection is made, with a
//! bound on connect and first byte so a dead upstream cannot hold a guest
//! past its own deadline. `self.alt` requests go to this host's listener.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http_body_util::BodyExt;
use kiosk_outbound::AllowedHosts;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// Upper bounds on every outbound call's timeouts (a guest may ask for less).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundTimeouts {
    /// Establishing the connection (TCP and TLS).
    pub connect: Duration,
    /// From sending the request to the first byte of the response.
    pub first_byte: Duration,
    /// Between two chunks of the response body.
    pub between_bytes: Duration,
}

impl Default for OutboundTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            first_byte: Duration::from_secs(10),
            between_bytes: Duration::from_secs(10),
        }
    }
}

/// One component's outbound policy, shared by all its requests.
#[derive(Clone)]
pub struct OutboundPolicy(Arc<PolicyInner>);

struct PolicyInner {
    component: String,
    allowed: AllowedHosts,
    /// This host's own listener (`host:port`), for `self.alt` requests.
    self_authority: Option<Authority>,
    timeouts: OutboundTimeouts,
}

impl Default for OutboundPolicy {
    fn default() -> Self {
        Self::new(
            String::new(),
            AllowedHosts::none(),
            None,
            OutboundTimeouts::default(),
        )
    }
}

/// Why an outbound request is refused before it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send to this URI (rewritten for `self.alt`).
    Send(http::Uri),
    /// Not allowed by `allowed_outbound_hosts`.
    Denied,
}

impl OutboundPolicy {
    /// A policy for `component`.
    pub fn new(
        component: String,
        allowed: AllowedHosts,
        self_authority: Option<Authority>,
        timeouts: OutboundTimeouts,
    ) -> Self {
        Self(Arc::new(PolicyInner {
            component,
            allowed,
            self_authority,
            timeouts,
        }))
    }

    /// Decides where (and whether) a request to `uri` goes.
    pub fn check(&self, uri: &http::Uri) -> Verdict {
        let policy = &self.0;
        let host = uri.host().unwrap_or("");
        if host.is_empty() || host.eq_ignore_ascii_case("self.alt") {
            return match (&policy.self_authority, policy.allowed.allows_self()) {
                (Some(authority), true) => {
                    let mut parts = uri.clone().into_parts();
                    parts.scheme = Some(Scheme::HTTP);
                    parts.authority = Some(authority.clone());
                    http::Uri::from_parts(parts).map_or(Verdict::Denied, Verdict::Send)
                }
                _ => Verdict::Denied,
            };
        }
        let scheme = uri.scheme_str().unwrap_or("http");
        if policy.allowed.allows_parts(scheme, host, uri.port_u16()) {
            Verdict::Send(uri.clone())
        } else {
            Verdict::Denied
        }
    }

    fn options(&self, asked: Option<RequestOptions>) -> RequestOptions {
        let bound = self.0.timeouts;
        let asked = asked.unwrap_or_default();
        let clamp =
            |asked: Option<Duration>, max: Duration| Some(asked.map_or(max, |a| a.min(max)));
        RequestOptions {
            connect_timeout: clamp(asked.connect_timeout, bound.connect),
            first_byte_timeout: clamp(asked.first_byte_timeout, bound.first_byte),
            between_bytes_timeout: clamp(asked.between_bytes_timeout, bound.between_bytes),
        }
    }
}

/// The `wasi:http` hooks of one request's store.
pub struct OutboundHooks {
    policy: OutboundPolicy,
}

impl OutboundHooks {
    /// Hooks applying `policy`.
    pub fn new(policy: OutboundPolicy) -> Self {
        Self { policy }
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> Box<
        dyn Future<Output = wasmtime_wasi_http::Result<(http::Response<WasiBody>, IoFuture)>>
            + Send,
    > {
        let uri = request.uri().clone();
        match self.policy.check(&uri) {
            Verdict::Denied => {
                let scheme = uri.scheme_str().unwrap_or("http");
                let host = uri.host().unwrap_or("");
                tracing::warn!(
                    component = %self.policy.0.component,
                    url = %uri,
                    "outbound request denied. To allow it, add {} to the component's manifest entry",
                    AllowedHosts::suggestion(scheme, host, uri.port_u16())
                );
                Box::new(async { Err(HttpError::HttpRequestDenied) })
            }
            Verdict::Send(target) => {
                if target != uri
                    && let Some(authority) = target.authority()
                    && let Ok(host) = http::HeaderValue::from_str(authority.as_str())
                {
                    request.headers_mut().insert(http::header::HOST, host);
                }
                *request.uri_mut() = target;
                let options = self.policy.options(options);
                Box::new(async move {
                    let (response, io) =
                        wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
                    Ok((
                        response.map(BodyExt::boxed_unsync),
                        Box::new(io) as IoFuture,
                    ))
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> OutboundPolicy {
        let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        OutboundPolicy::new(
            "web".into(),
            AllowedHosts::parse(&entries).unwrap(),
            Some("127.0.0.1:3000".parse().unwrap()),
            OutboundTimeouts::default(),
        )
    }

    #[test]
    fn allowed_hosts_are_sent_as_is_and_others_denied() {
        let p = policy(&["http://127.0.0.1:3999"]);
        let ok: http::Uri = "http://127.0.0.1:3999/api?x=1".parse().unwrap();
        assert_eq!(p.check(&ok), Verdict::Send(ok.clone()));
        assert_eq!(
            p.check(&"http://127.0.0.1:4000/".parse().unwrap()),
            Verdict::Denied
        );
        assert_eq!(
            p.check(&"https://127.0.0.1:3999/".parse().unwrap()),
            Verdict::Denied
        );
        assert_eq!(OutboundPolicy::default().check(&ok), Verdict::Denied);
    }

    #[test]
    fn self_requests_go_to_the_own_listener_only_when_allowed() {
        let p = policy(&["http://self"]);
        assert_eq!(
            p.check(&"http://self.alt/health?deep=1".parse().unwrap()),
            Verdict::Send("http://127.0.0.1:3000/health?deep=1".parse().unwrap())
        );
        assert_eq!(
            policy(&["http://example.com"]).check(&"http://self.alt/x".parse().unwrap()),
            Verdict::Denied
        );
    }

    #[test]
    fn timeouts_are_capped_by_the_host() {
        let p = policy(&[]);
        let options = p.options(Some(RequestOptions {
            connect_timeout: Some(Duration::from_secs(600)),
            first_byte_timeout: Some(Duration::from_millis(100)),
            between_bytes_timeout: None,
        }));
        assert_eq!(options.connect_timeout, Some(Duration::from_secs(2)));
        assert_eq!(options.first_byte_timeout, Some(Duration::from_millis(100)));
        assert_eq!(options.between_bytes_timeout, Some(Duration::from_secs(10)));
    }
}
