//! Requests per client address: a token bucket each, answered 429
//! `rate_limited` with `Retry-After` when empty. Behind a proxy the client
//! is the address its `X-Forwarded-For` names, believed only from the
//! proxies listed as trusted. Loopback clients are exempt unless configured.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::HeaderMap;

use crate::config::{Network, ServerSettings};

/// Buckets kept before idle, refilled ones are dropped.
const MAX_BUCKETS: usize = 100_000;

/// The per-address limiter of one listener.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    limit_loopback: bool,
    trusted: Vec<Network>,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    /// Requests answered 429.
    pub limited: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(server: &ServerSettings) -> Self {
        Self {
            per_second: server.rate_limit.per_second.max(0.0),
            burst: f64::from(server.rate_limit.burst.max(1)),
            limit_loopback: server.limit_loopback,
            trusted: server.trusted_proxies.clone(),
            buckets: Mutex::new(HashMap::new()),
            limited: AtomicU64::new(0),
        }
    }

    /// The client's address: the peer, or, when the peer is a trusted
    /// proxy, the right-most address in `X-Forwarded-For` that is not one.
    pub fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(&peer) {
            return peer;
        }
        let mut client = peer;
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in forwarded.iter().rev() {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                break;
            };
            client = ip;
            if !self.is_trusted(&ip) {
                break;
            }
        }
        client
    }

    fn is_trusted(&self, ip: &IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// Takes one token for `client`; `Err(seconds)` until one is back.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), u64> {
        if self.per_second <= 0.0 || (client.is_loopback() && !self.limit_loopback) {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.per_second;
            drop(buckets);
            self.limited.fetch_add(1, Ordering::Relaxed);
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limiter(per_second: f64, burst: u32, trusted: &[&str]) -> RateLimiter {
        RateLimiter::new(&ServerSettings {
            rate_limit: crate::config::RateLimitSettings { per_second, burst },
            trusted_proxies: trusted
                .iter()
                .map(|t| Network::try_from(t.to_string()).unwrap())
                .collect(),
            ..Default::default()
        })
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let limiter = limiter(2.0, 3, &[]);
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        let t = Instant::now();
        for _ in 0..3 {
            limiter.check(client, t).unwrap();
        }
        assert_eq!(limiter.check(client, t), Err(1));
        limiter
            .check(client, t + Duration::from_millis(500))
            .unwrap();
        assert!(
            limiter
                .check(client, t + Duration::from_millis(500))
                .is_err()
        );
        // Others are not affected.
        limiter.check("203.0.113.10".parse().unwrap(), t).unwrap();
        assert_eq!(limiter.limited.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn loopback_is_exempt_by_default() {
        let limiter = limiter(1.0, 1, &[]);
        let t = Instant::now();
        for _ in 0..10 {
            limiter.check("127.0.0.1".parse().unwrap(), t).unwrap();
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let limiter = limiter(1.0, 1, &["10.0.0.0/8"]);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "198.51.100.7, 203.0.113.5, 10.1.1.1".parse().unwrap(),
        );
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            limiter.client_addr(proxy, &headers),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(limiter.client_addr(stranger, &headers), stranger);
        headers.insert("x-forwarded-for", "not-an-ip".parse().unwrap());
        assert_eq!(limiter.client_addr(proxy, &headers), proxy);
    }
}
