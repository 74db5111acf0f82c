//! Outbound HTTP (`wasi:http/outgoing-handler`): only to the component's
//! `allowed_outbound_hosts`, checked before any connection is made; never
//! back to this host's own listener unless the component lists `self`, and
//! never past the hop limit (a loop through other hosts); then through the
//! destination's policy (`crate::policy`): cap, breaker, one deadline,
//! pooled connections, shared answers. `self.alt` requests go to this
//! host's listener. Every call is one log line (`kiosk_host::outbound`).

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use kiosk_outbound::AllowedHosts;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::config::{CacheRule, OutboundSettings, destination_key};
use crate::policy::{Destinations, HOP_HEADER, Served};

/// One component's outbound policy, shared by all its requests.
#[derive(Clone)]
pub struct OutboundPolicy(Arc<PolicyInner>);

struct PolicyInner {
    component: String,
    allowed: AllowedHosts,
    /// This host's own listener (`host:port`), for `self.alt` requests and the loop guard.
    self_authority: Option<Authority>,
    destinations: Arc<Destinations>,
    /// The component's cacheable GETs.
    cache: Vec<CacheRule>,
}

impl Default for OutboundPolicy {
    fn default() -> Self {
        Self::new(
            String::new(),
            AllowedHosts::none(),
            None,
            Destinations::new(OutboundSettings::default()),
            Vec::new(),
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
    /// This host's own listener, and the component does not list `self`.
    OwnListener,
}

impl OutboundPolicy {
    /// A policy for `component`.
    pub fn new(
        component: String,
        allowed: AllowedHosts,
        self_authority: Option<Authority>,
        destinations: Arc<Destinations>,
        cache: Vec<CacheRule>,
    ) -> Self {
        Self(Arc::new(PolicyInner {
            component,
            allowed,
            self_authority,
            destinations,
            cache,
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
        if !policy.allowed.allows_parts(scheme, host, uri.port_u16()) {
            return Verdict::Denied;
        }
        if !policy.allowed.allows_self() && self.is_own_listener(uri) {
            return Verdict::OwnListener;
        }
        Verdict::Send(uri.clone())
    }

    /// Whether `uri` names this host's own listener (by address; a name
    /// other than `localhost` is caught by the hop limit instead).
    fn is_own_listener(&self, uri: &http::Uri) -> bool {
        let Some(own) = &self.0.self_authority else {
            return false;
        };
        let Ok(own_ip) = own.host().trim_matches(['[', ']']).parse::<IpAddr>() else {
            return false;
        };
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme() == Some(&Scheme::HTTPS) {
                443
            } else {
                80
            });
        if Some(port) != own.port_u16() {
            return false;
        }
        let host = uri.host().unwrap_or("").trim_matches(['[', ']']);
        let targets: Vec<IpAddr> = if host.eq_ignore_ascii_case("localhost") {
            vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ]
        } else {
            host.parse().into_iter().collect()
        };
        targets.iter().any(|ip| {
            *ip == own_ip
                || (own_ip.is_unspecified() && (ip.is_loopback() || ip.is_unspecified()))
                || (own_ip.is_loopback() && ip.is_unspecified())
        })
    }

    /// The cache rule for a GET of `path`, if the component declared one.
    fn cache_rule(&self, method: &http::Method, path: &str) -> Option<&CacheRule> {
        (method == http::Method::GET)
            .then(|| self.0.cache.iter().find(|rule| rule.matches(path)))
            .flatten()
    }
}

/// The `wasi:http` hooks of one request's store.
pub struct OutboundHooks {
    policy: OutboundPolicy,
    /// Kiosk-hosts the incoming request already passed through.
    hops: u32,
}

impl OutboundHooks {
    /// Hooks applying `policy` for a request that passed `hops` hosts before this one.
    pub fn new(policy: OutboundPolicy, hops: u32) -> Self {
        Self { policy, hops }
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

type SendFuture = Box<
    dyn Future<Output = wasmtime_wasi_http::Result<(http::Response<WasiBody>, IoFuture)>> + Send,
>;

/// The guest's own bound on the wait for a response head, if it set one.
fn head_bound(options: Option<RequestOptions>) -> Option<Duration> {
    let options = options?;
    match (options.connect_timeout, options.first_byte_timeout) {
        (None, None) => None,
        (connect, first) => Some(connect.unwrap_or_default() + first.unwrap_or_default()),
    }
}

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        let uri = request.uri().clone();
        let component = self.policy.0.component.clone();
        let target = match self.policy.check(&uri) {
            Verdict::Send(target) => target,
            Verdict::Denied => {
                let scheme = uri.scheme_str().unwrap_or("http");
                let host = uri.host().unwrap_or("");
                tracing::warn!(
                    component = %component,
                    url = %uri,
                    "outbound request denied. To allow it, add {} to the component's manifest entry",
                    AllowedHosts::suggestion(scheme, host, uri.port_u16())
                );
                return Box::new(async { Err(HttpError::HttpRequestDenied) });
            }
            Verdict::OwnListener => {
                tracing::warn!(
                    component = %component,
                    url = %uri,
                    "outbound request denied: it would call this host's own listener (a loop); \
                     list \"http://self\" in allowed_outbound_hosts to call this app"
                );
                return Box::new(async { Err(HttpError::HttpRequestDenied) });
            }
        };
        let max_hops = self.policy.0.destinations.max_hops();
        if self.hops >= max_hops {
            tracing::warn!(
                component = %component,
                url = %uri,
                hops = self.hops,
                "outbound request denied: the request already passed through {max_hops} kiosk-hosts (a loop?)"
            );
            return Box::new(async { Err(HttpError::LoopDetected) });
        }
        request
            .headers_mut()
            .insert(HOP_HEADER, http::HeaderValue::from(self.hops + 1));
        if target != uri
            && let Some(authority) = target.authority()
            && let Ok(host) = http::HeaderValue::from_str(authority.as_str())
        {
            request.headers_mut().insert(http::header::HOST, host);
        }
        let key = destination_key(
            target.scheme_str().unwrap_or("http"),
            target.host().unwrap_or("").trim_matches(['[', ']']),
            target.port_u16(),
        );
        *request.uri_mut() = target;
        let destination = self.policy.0.destinations.get(&key);
        let ttl = self
            .policy
            .cache_rule(request.method(), request.uri().path())
            .map(|rule| rule.ttl);
        let head_by = head_bound(options);
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        let (client, request_id) = (header("x-kiosk-client"), header("x-request-id"));
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let metrics = self.policy.0.destinations.metrics().clone();
        Box::new(async move {
            let started = Instant::now();
            let (result, served) = match ttl {
                Some(ttl) => destination.send_shared(request, ttl, head_by).await,
                None => destination.send(request, head_by).await,
            };
            metrics.record(destination.key(), &result, served);
            let outcome = match &result {
                Ok(response) => response.status().as_u16().to_string(),
                Err(e) => format!("error: {e}"),
            };
            tracing::info!(
                target: "kiosk_host::outbound",
                component = %component,
                method = %method,
                destination = %destination.key(),
                path = %path,
                outcome = %outcome,
                served = %match served {
                    Served::Sent => "sent",
                    Served::Shared => "shared",
                    Served::Refused(reason) => reason.as_str(),
                },
                client = %client,
                request_id = %request_id,
                duration_us = started.elapsed().as_micros() as u64,
            );
            result.map(|response| (response, Box::new(async { Ok(()) }) as IoFuture))
        })
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
            Destinations::new(OutboundSettings::default()),
            Vec::new(),
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
    fn the_own_listener_is_refused_unless_self_is_listed() {
        let p = policy(&[
            "http://127.0.0.1:3000",
            "http://localhost:3000",
            "http://127.0.0.1:3999",
        ]);
        for url in ["http://127.0.0.1:3000/health", "http://localhost:3000/x"] {
            assert_eq!(
                p.check(&url.parse().unwrap()),
                Verdict::OwnListener,
                "{url}"
            );
        }
        let core: http::Uri = "http://127.0.0.1:3999/health".parse().unwrap();
        assert_eq!(p.check(&core), Verdict::Send(core.clone()));
        let with_self = policy(&["http://self", "http://127.0.0.1:3000"]);
        let own: http::Uri = "http://127.0.0.1:3000/x".parse().unwrap();
        assert_eq!(with_self.check(&own), Verdict::Send(own.clone()));
    }

    #[test]
    fn the_guests_head_bound_adds_its_phases() {
        assert_eq!(head_bound(None), None);
        assert_eq!(
            head_bound(Some(RequestOptions {
                connect_timeout: Some(Duration::from_millis(100)),
                first_byte_timeout: Some(Duration::from_millis(400)),
                between_bytes_timeout: None,
            })),
            Some(Duration::from_millis(500))
        );
    }
}
