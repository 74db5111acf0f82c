//! The host configuration file (`kiosk-host up --config FILE`): what belongs
//! to the host and not to the app. One typed struct; every default is in the
//! `Default` impls below and nowhere else (flags only override).
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:3000"
//! max_instances = 256
//!
//! [admin]                        # metrics and health checks; absent: none
//! listen = "127.0.0.1:9180"      # keep it private: loopback or a management network
//!
//! [outbound]
//! max_hops = 4
//! [outbound.defaults]            # every destination
//! max_concurrency = 16
//! timeout = "10s"
//! [outbound.destination."http://127.0.0.1:3999"]
//! max_concurrency = 8
//! timeout = "3s"
//! breaker = { consecutive_failures = 3 }
//!
//! [component.core]               # overrides spin.toml's [component.core.tool.kiosk-host]
//! max_instances = 32
//! outbound_cache = [{ route = "GET /customers/*", ttl = "5s" }]
//! ```
//!
//! Unknown keys are refused with file:line, as for the manifest.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::runtime_config::line_of;

/// The whole host configuration.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// The environment this host serves (`dev`, `stag`, `prod`), named in
    /// its logs.
    pub environment: Option<String>,
    /// The listener and the limits of every request.
    pub server: ServerSettings,
    /// The admin listener: Prometheus metrics and health checks.
    pub admin: AdminSettings,
    /// When the host hands over to a fresh process of itself unasked.
    pub recycle: RecycleSettings,
    /// Policies for outbound HTTP, per destination.
    pub outbound: OutboundSettings,
    /// Per-component settings, by component id (override the manifest's
    /// `[component.ID.tool.kiosk-host]` tables field by field).
    pub component: BTreeMap<String, ComponentSettings>,
    /// Values of application variables this host's environment fixes
    /// (`[variables]`): never secrets, which come from `SPIN_VARIABLE_*`;
    /// see [`HostConfig::app_variables`].
    pub variables: BTreeMap<String, String>,
}

impl HostConfig {
    /// The values this configuration gives the application's variables:
    /// `[variables]`, and `environment` as the variable `environment` when
    /// the application declares one (`declares`) and `[variables]` does not
    /// set it, so the environment a host is configured for is the one its
    /// app knows.
    pub fn app_variables(&self, declares: impl Fn(&str) -> bool) -> BTreeMap<String, String> {
        let mut values = self.variables.clone();
        if let Some(environment) = &self.environment
            && declares("environment")
        {
            values
                .entry("environment".to_string())
                .or_insert_with(|| environment.clone());
        }
        values
    }
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// How long one request may run.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Instances that may run at once, all components together.
    pub max_instances: u32,
    /// Largest linear memory of one instance, in bytes.
    pub max_instance_memory: u64,
    /// Requests that may wait for a free instance.
    pub queue_depth: usize,
    /// How long a request waits for a free instance.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Largest request body forwarded to a component, in bytes.
    pub max_body_bytes: u64,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// On SIGTERM/SIGINT, how long the host still accepts, with `/ready`
    /// already 503, so a load balancer that polls it stops sending first.
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// Allocate instances from a pool (off only for debugging).
    pub pooling: bool,
    /// How long a client may take to send a request head (and, on a
    /// keep-alive connection, to start the next one).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a request body may take to arrive; it is read whole before
    /// the request takes an instance slot (408 past it).
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Bytes of request bodies the host holds at once, all requests
    /// together; past it, requests with bodies get 503 `overloaded`.
    pub body_budget_bytes: u64,
    /// Open connections at once (the host raises its open-file limit to
    /// fit, or lowers this and says so).
    pub max_connections: usize,
    /// Open connections from one peer address.
    pub max_connections_per_peer: usize,
    /// Whether loopback peers are held to the per-peer and rate limits
    /// (off: local load balancers and load generators are exempt).
    pub limit_loopback: bool,
    /// Proxies whose `X-Forwarded-For` names the client (addresses or CIDR
    /// ranges); from anyone else the header is ignored.
    pub trusted_proxies: Vec<Network>,
    /// Requests per client address.
    pub rate_limit: RateLimitSettings,
    /// HTTP/2 limits.
    pub h2: Http2Settings,
    /// HTTPS on `listen` (`[server.tls]`); without it, plain HTTP.
    pub tls: Option<TlsSettings>,
    /// A second listener speaking plain HTTP (say, for a local load
    /// balancer's health checks) while `listen` speaks HTTPS.
    pub plain_listen: Option<SocketAddr>,
    /// A path the host requests (`GET`) from the app before it serves
    /// (empty: none). If the app answers 503 with `error.code`
    /// `misconfigured`, the host does not start and logs the app's message
    /// (see `crate::preflight`).
    pub preflight: String,
}

/// `[server.tls]`: the certificates of the HTTPS listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The default certificate chain (PEM), relative to this file.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, RSA or EC).
    pub key: PathBuf,
    /// How long a client may take to finish its TLS handshake.
    #[serde(
        default = "TlsSettings::default_handshake_timeout",
        with = "humantime_serde"
    )]
    pub handshake_timeout: Duration,
    /// What a client asking for a name no certificate has gets.
    #[serde(default)]
    pub unknown_server_name: UnknownServerName,
    /// More certificates, chosen by the name the client asks for (SNI).
    #[serde(default)]
    pub sni: Vec<SniCertificate>,
    /// Ask clients for a certificate issued by this CA (PEM); a verified
    /// one's subject reaches the app as `kiosk-client-cn`.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Revocation lists (PEM) checked for client certificates.
    #[serde(default)]
    pub client_crl: Vec<PathBuf>,
    /// Path prefixes only clients with a verified certificate may request
    /// (403 `client_certificate_required` before any instance).
    #[serde(default)]
    pub require_client_cert: Vec<String>,
}

impl TlsSettings {
    fn default_handshake_timeout() -> Duration {
        Duration::from_secs(10)
    }

    /// Settings with only a certificate and key (the `--tls-cert` and `--tls-key` flags).
    pub fn with_files(cert: PathBuf, key: PathBuf) -> Self {
        Self {
            cert,
            key,
            handshake_timeout: Self::default_handshake_timeout(),
            unknown_server_name: UnknownServerName::default(),
            sni: Vec::new(),
            client_ca: None,
            client_crl: Vec::new(),
            require_client_cert: Vec::new(),
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        self.cert = base.join(&self.cert);
        self.key = base.join(&self.key);
        for entry in &mut self.sni {
            entry.cert = base.join(&entry.cert);
            entry.key = base.join(&entry.key);
        }
        if let Some(ca) = &mut self.client_ca {
            *ca = base.join(&*ca);
        }
        for crl in &mut self.client_crl {
            *crl = base.join(&*crl);
        }
    }
}

/// `unknown_server_name`: `"default"` (the default certificate) or `"refuse"`
/// (the handshake fails cleanly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownServerName {
    #[default]
    Default,
    Refuse,
}

/// `[[server.tls.sni]]`: a certificate for some names (`*.example.com` allowed).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniCertificate {
    pub server_names: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// An address or a CIDR range (`10.0.0.5`, `10.0.0.0/8`, `::1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Network(ipnet::IpNet);

impl TryFrom<String> for Network {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(net) = text.parse::<ipnet::IpNet>() {
            return Ok(Self(net.trunc()));
        }
        text.parse::<std::net::IpAddr>()
            .map(|ip| Self(ipnet::IpNet::from(ip)))
            .map_err(|_| format!("`{text}` is not an IP address or CIDR range"))
    }
}

impl Network {
    /// Whether `ip` is in this range.
    pub fn contains(&self, ip: &std::net::IpAddr) -> bool {
        self.0.contains(ip)
    }
}

/// `[server.rate_limit]`: a token bucket per client address.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Sustained requests per second (0: no limit).
    pub per_second: f64,
    /// Requests that may come at once after a quiet spell.
    pub burst: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            per_second: 50.0,
            burst: 100,
        }
    }
}

/// `[server.h2]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Http2Settings {
    /// Streams a client may have open on one connection.
    pub max_concurrent_streams: u32,
    /// Streams reset by the client before the host accepted them (the
    /// "rapid reset" flood); past it the connection is closed.
    pub max_pending_accept_reset_streams: usize,
    /// Streams the host had to reset for protocol errors before the
    /// connection is closed.
    pub max_local_error_reset_streams: usize,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 128,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 256,
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            request_timeout: Duration::from_secs(30),
            max_instances: 256,
            max_instance_memory: 64 * 1024 * 1024,
            queue_depth: 1024,
            queue_timeout: Duration::from_secs(2),
            max_body_bytes: 10 * 1024 * 1024,
            drain_timeout: Duration::from_secs(30),
            drain_delay: Duration::ZERO,
            pooling: true,
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            body_budget_bytes: 256 * 1024 * 1024,
            max_connections: 10_000,
            max_connections_per_peer: 256,
            limit_loopback: false,
            trusted_proxies: Vec::new(),
            rate_limit: RateLimitSettings::default(),
            h2: Http2Settings::default(),
            tls: None,
            plain_listen: None,
            preflight: String::new(),
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Address of the admin listener (`/metrics`, `/ready`, `/live`), plain
    /// HTTP; none when absent. It must stay on a private address.
    pub listen: Option<SocketAddr>,
}

// Written out, not derived, so every default stays in a `Default` impl here.
#[allow(clippy::derivable_impls)]
impl Default for AdminSettings {
    fn default() -> Self {
        Self { listen: None }
    }
}

/// `[recycle]`: when the host hands over to a fresh process of itself,
/// as SIGUSR2 asks (see `crate::recycle`), without anyone asking: after a
/// while (periodic recycling), and when it has grown too large.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecycleSettings {
    /// Hand over once the process has served this long (none: never).
    #[serde(with = "humantime_serde")]
    pub after: Option<Duration>,
    /// A random extra wait of up to this much on top of `after`, drawn by
    /// each process, so hosts started together do not recycle together.
    #[serde(with = "humantime_serde")]
    pub spread: Duration,
    /// Hand over once the process's resident memory passes this many
    /// bytes (none: never).
    pub max_resident_bytes: Option<u64>,
    /// How often age and memory are looked at.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// After asking for a handover (which may fail: the new process may not
    /// start), how long before asking again.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
}

impl Default for RecycleSettings {
    fn default() -> Self {
        Self {
            after: None,
            spread: Duration::ZERO,
            max_resident_bytes: None,
            check_interval: Duration::from_secs(10),
            retry_after: Duration::from_secs(300),
        }
    }
}

impl RecycleSettings {
    /// Whether anything ever recycles.
    pub fn enabled(&self) -> bool {
        self.after.is_some() || self.max_resident_bytes.is_some()
    }
}

/// `[outbound]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundSettings {
    /// A request that already passed through this many kiosk-hosts (the
    /// `kiosk-hop-count` header) may not call out again: loops are cut.
    pub max_hops: u32,
    /// The policy of every destination (`[outbound.defaults]`).
    pub defaults: DestinationSettings,
    /// Per destination (`scheme://host:port`), changes to the defaults.
    pub destination: BTreeMap<String, DestinationOverride>,
}

impl Default for OutboundSettings {
    fn default() -> Self {
        Self {
            max_hops: 4,
            defaults: DestinationSettings::default(),
            destination: BTreeMap::new(),
        }
    }
}

impl OutboundSettings {
    /// The policy for `destination` (`scheme://host:port`, as [`destination_key`] builds it).
    pub fn for_destination(&self, destination: &str) -> DestinationSettings {
        match self.destination.get(destination) {
            Some(changes) => changes.apply(&self.defaults),
            None => self.defaults.clone(),
        }
    }
}

/// The outbound policy of one destination.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DestinationSettings {
    /// Calls in flight at once from this host.
    pub max_concurrency: usize,
    /// How long a call beyond the cap waits for a free place before it is refused.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Establishing a connection (TCP).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The whole call: connect, TLS, response head and the whole body.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Idle keep-alive connections kept per destination.
    pub pool_max_idle: usize,
    /// How long an idle connection is kept.
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// The circuit breaker.
    pub breaker: BreakerSettings,
}

impl Default for DestinationSettings {
    fn default() -> Self {
        Self {
            max_concurrency: 16,
            queue_timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
            pool_max_idle: 32,
            pool_idle_timeout: Duration::from_secs(60),
            breaker: BreakerSettings::default(),
        }
    }
}

/// When a destination's circuit opens, and for how long.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// Consecutive failures (5xx, connect error, timeout) that open it.
    pub consecutive_failures: u32,
    /// Failure ratio over `window` that opens it (with at least `min_calls`).
    pub failure_ratio: f64,
    /// Calls in the window before the ratio counts.
    pub min_calls: u32,
    /// The sliding window of the ratio.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How long it stays open before one probe call is let through.
    #[serde(with = "humantime_serde")]
    pub cool_down: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            min_calls: 20,
            window: Duration::from_secs(10),
            cool_down: Duration::from_secs(5),
        }
    }
}

/// `[outbound.destination."URL"]`: only the fields given change the defaults.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DestinationOverride {
    pub max_concurrency: Option<usize>,
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub timeout: Option<Duration>,
    pub pool_max_idle: Option<usize>,
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Option<Duration>,
    pub breaker: BreakerOverride,
}

/// Changes to the default breaker.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerOverride {
    pub consecutive_failures: Option<u32>,
    pub failure_ratio: Option<f64>,
    pub min_calls: Option<u32>,
    #[serde(with = "humantime_serde")]
    pub window: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub cool_down: Option<Duration>,
}

impl DestinationOverride {
    fn apply(&self, base: &DestinationSettings) -> DestinationSettings {
        let b = &self.breaker;
        let base_b = &base.breaker;
        DestinationSettings {
            max_concurrency: self.max_concurrency.unwrap_or(base.max_concurrency),
            queue_timeout: self.queue_timeout.unwrap_or(base.queue_timeout),
            connect_timeout: self.connect_timeout.unwrap_or(base.connect_timeout),
            timeout: self.timeout.unwrap_or(base.timeout),
            pool_max_idle: self.pool_max_idle.unwrap_or(base.pool_max_idle),
            pool_idle_timeout: self.pool_idle_timeout.unwrap_or(base.pool_idle_timeout),
            breaker: BreakerSettings {
                consecutive_failures: b
                    .consecutive_failures
                    .unwrap_or(base_b.consecutive_failures),
                failure_ratio: b.failure_ratio.unwrap_or(base_b.failure_ratio),
                min_calls: b.min_calls.unwrap_or(base_b.min_calls),
                window: b.window.unwrap_or(base_b.window),
                cool_down: b.cool_down.unwrap_or(base_b.cool_down),
            },
        }
    }
}

/// What kiosk-host knows of one component beyond the manifest: from
/// `[component.ID.tool.kiosk-host]` in spin.toml (the app's own knowledge;
/// Spin ignores `tool` tables) and `[component.ID]` in the host
/// configuration, which wins field by field.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComponentSettings {
    /// Instances of this component that may run at once (its bulkhead).
    pub max_instances: Option<u32>,
    /// How long a request waits for one of this component's slots.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Option<Duration>,
    /// Requests that may wait for one of this component's slots.
    pub queue_depth: Option<usize>,
    /// Largest request body this component takes, in bytes (at most the
    /// host's `max_body_bytes`).
    pub max_body_bytes: Option<u64>,
    /// Outbound GETs whose answers may be shared: identical concurrent
    /// calls become one, and the answer is reused for `ttl`.
    pub outbound_cache: Option<Vec<CacheRule>>,
}

/// `{ route = "GET /customers/*", ttl = "5s" }`: `*` is one path segment.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawCacheRule")]
pub struct CacheRule {
    /// The path pattern's segments (`*` matches one segment).
    pub segments: Vec<String>,
    /// How long an answer is reused.
    pub ttl: Duration,
    /// The rule as written, for logs.
    pub route: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCacheRule {
    route: String,
    #[serde(with = "humantime_serde")]
    ttl: Duration,
}

impl TryFrom<RawCacheRule> for CacheRule {
    type Error = String;

    fn try_from(raw: RawCacheRule) -> Result<Self, String> {
        let Some(("GET", pattern)) = raw.route.trim().split_once(' ') else {
            return Err(format!(
                "cache route `{}`: expected `GET /path/pattern` (only GETs are cached)",
                raw.route
            ));
        };
        let pattern = pattern.trim();
        if !pattern.starts_with('/') || pattern.contains(['?', '#', ' ']) {
            return Err(format!(
                "cache route `{}`: the pattern must be an absolute path without query",
                raw.route
            ));
        }
        if raw.ttl.is_zero() {
            return Err(format!("cache route `{}`: ttl must be above 0", raw.route));
        }
        Ok(CacheRule {
            segments: pattern
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            ttl: raw.ttl,
            route: raw.route,
        })
    }
}

impl CacheRule {
    /// Whether `path` (without query) matches, whole segments only.
    pub fn matches(&self, path: &str) -> bool {
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        let mut count = 0;
        for pattern in &self.segments {
            match segments.next() {
                Some(s) if pattern == "*" || pattern == s => count += 1,
                _ => return false,
            }
        }
        segments.next().is_none() && count == self.segments.len()
    }
}

impl ComponentSettings {
    /// These settings with `over`'s fields where it has them.
    pub fn overridden_by(&self, over: &ComponentSettings) -> ComponentSettings {
        ComponentSettings {
            max_instances: over.max_instances.or(self.max_instances),
            queue_timeout: over.queue_timeout.or(self.queue_timeout),
            queue_depth: over.queue_depth.or(self.queue_depth),
            max_body_bytes: over.max_body_bytes.or(self.max_body_bytes),
            outbound_cache: over
                .outbound_cache
                .clone()
                .or_else(|| self.outbound_cache.clone()),
        }
    }

    /// The limits a component runs with. Components that call out get a
    /// bulkhead of a quarter of the slots and a short queue by default, so
    /// a stuck dependency cannot take the slots of those that do not.
    pub fn resolve(&self, calls_out: bool, server: &ServerSettings) -> ComponentLimits {
        let (default_slots, default_wait) = if calls_out {
            (
                (server.max_instances / 4).max(1),
                Duration::from_millis(100),
            )
        } else {
            (server.max_instances, server.queue_timeout)
        };
        ComponentLimits {
            max_instances: self
                .max_instances
                .unwrap_or(default_slots)
                .clamp(1, server.max_instances.max(1)),
            queue_timeout: self.queue_timeout.unwrap_or(default_wait),
            queue_depth: self.queue_depth.unwrap_or(server.queue_depth),
            max_body_bytes: self
                .max_body_bytes
                .unwrap_or(server.max_body_bytes)
                .min(server.max_body_bytes),
            outbound_cache: self.outbound_cache.clone().unwrap_or_default(),
        }
    }
}

/// A component's resolved limits.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentLimits {
    pub max_instances: u32,
    pub queue_timeout: Duration,
    pub queue_depth: usize,
    pub max_body_bytes: u64,
    pub outbound_cache: Vec<CacheRule>,
}

/// `scheme://host:port` of a URI, the key of its destination policy.
pub fn destination_key(scheme: &str, host: &str, port: Option<u16>) -> String {
    let scheme = scheme.to_ascii_lowercase();
    let port = port.unwrap_or(if scheme == "https" { 443 } else { 80 });
    let host = host.to_ascii_lowercase();
    if host.contains(':') && !host.starts_with('[') {
        format!("{scheme}://[{host}]:{port}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

/// Reads the host configuration file.
pub fn load(path: &Path) -> anyhow::Result<HostConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading host configuration {}: {e}", path.display()))?;
    parse(&text, path)
}

/// Parses host configuration text; `path` names the file in errors.
pub fn parse(text: &str, path: &Path) -> anyhow::Result<HostConfig> {
    let mut config: HostConfig = from_toml(text, path)?;
    if let (Some(environment), Some(variable)) =
        (&config.environment, config.variables.get("environment"))
        && environment != variable
    {
        anyhow::bail!(
            "{}:{}: `environment` and `[variables] environment` disagree; set one",
            path.display(),
            line_of_text(text, "[variables]")
        );
    }
    if config.recycle.check_interval.is_zero() || config.recycle.after.is_some_and(|a| a.is_zero())
    {
        anyhow::bail!(
            "{}:{}: [recycle] `after` and `check_interval` must be longer than zero",
            path.display(),
            line_of_text(text, "[recycle]")
        );
    }
    let preflight = config.server.preflight.trim();
    if !preflight.is_empty() && !preflight.starts_with('/') {
        anyhow::bail!(
            "{}:{}: preflight `{preflight}` is not a path (like \"/health\")",
            path.display(),
            line_of_text(text, "preflight")
        );
    }
    if let Some(admin) = config.admin.listen {
        let serving = [Some(config.server.listen), config.server.plain_listen];
        if serving
            .into_iter()
            .flatten()
            .any(|addr| same_port(addr, admin))
        {
            let at = text.find("[admin]").unwrap_or(0);
            let listen = text[at..].find("listen").map_or(at, |offset| at + offset);
            anyhow::bail!(
                "{}:{}: [admin] listen `{admin}` is also a serving address; give the admin listener its own port",
                path.display(),
                line_of(text, listen)
            );
        }
    }
    // Destination keys are normalised so `http://Core:80` and `http://core` agree.
    let mut destinations = BTreeMap::new();
    for (key, changes) in std::mem::take(&mut config.outbound.destination) {
        let uri: http::Uri = key.parse().map_err(|_| {
            anyhow::anyhow!(
                "{}:{}: outbound destination `{key}` is not a URL like `https://core.bank.example:443`",
                path.display(),
                line_of_text(text, &key)
            )
        })?;
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            anyhow::bail!(
                "{}:{}: outbound destination `{key}` needs a scheme and a host",
                path.display(),
                line_of_text(text, &key)
            );
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        destinations.insert(destination_key(scheme, host, uri.port_u16()), changes);
    }
    config.outbound.destination = destinations;
    // Certificate paths are relative to this file.
    let base = path.parent().unwrap_or(Path::new("."));
    if let Some(tls) = &mut config.server.tls {
        tls.resolve_paths(base);
    }
    Ok(config)
}

/// The `[component.ID.tool.kiosk-host]` tables of a manifest, by component id.
pub fn manifest_component_settings(
    manifest_text: &str,
    path: &Path,
) -> anyhow::Result<BTreeMap<String, ComponentSettings>> {
    #[derive(Deserialize)]
    struct View {
        #[serde(default)]
        component: BTreeMap<String, ComponentView>,
    }
    #[derive(Deserialize)]
    struct ComponentView {
        #[serde(default)]
        tool: ToolView,
    }
    #[derive(Default, Deserialize)]
    struct ToolView {
        #[serde(rename = "kiosk-host")]
        kiosk_host: Option<ComponentSettings>,
    }
    let view: View = from_toml(manifest_text, path)?;
    Ok(view
        .component
        .into_iter()
        .filter_map(|(id, c)| c.tool.kiosk_host.map(|s| (id, s)))
        .collect())
}

fn from_toml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> anyhow::Result<T> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
        anyhow::anyhow!("{}:{line}: {}", path.display(), e.message().trim_end())
    })
}

/// Whether two listeners would take the same port (port 0 picks a free one
/// each time, so never clashes).
fn same_port(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn line_of_text(text: &str, needle: &str) -> usize {
    text.find(needle).map_or(1, |offset| line_of(text, offset))
}

/// The line of `[component.ID` in `text`, for errors about a component.
pub fn line_of_component(text: &str, id: &str) -> usize {
    line_of_text(text, &format!("component.{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_at(text: &str) -> anyhow::Result<HostConfig> {
        parse(text, Path::new("/etc/kiosk/host.toml"))
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(parse_at("").unwrap(), HostConfig::default());
    }

    #[test]
    fn the_documented_example_holds_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/host.toml");
        assert_eq!(load(&path).unwrap(), HostConfig::default());
    }

    #[test]
    fn the_environment_files_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/env");
        for env in ["dev", "stag", "prod"] {
            let config = load(&dir.join(format!("{env}.toml"))).unwrap();
            assert_eq!(config.environment.as_deref(), Some(env));
            // The app learns its environment, trusts the host's certificate
            // header, and is asked before the host serves.
            let app = config.app_variables(|_| true);
            assert_eq!(app.get("environment").map(String::as_str), Some(env));
            assert_eq!(
                app.get("client_identity_header").map(String::as_str),
                Some("kiosk-client-cn")
            );
            assert_eq!(config.server.preflight, "/health");
            let tls = config.server.tls.expect("HTTPS in every environment");
            assert!(tls.cert.ends_with(format!("certs/{env}.pem")));
            assert!(tls.client_ca.is_some(), "device certificates in {env}");
            let admin = config
                .admin
                .listen
                .expect("an admin listener in every environment");
            assert!(admin.ip().is_loopback(), "a private admin address in {env}");
            if env != "dev" {
                assert!(config.recycle.enabled(), "recycling in {env}");
            }
        }
    }

    #[test]
    fn recycling_with_a_zero_interval_is_refused_with_file_and_line() {
        for text in [
            "[admin]\n\n[recycle]\ncheck_interval = \"0s\"\n",
            "[admin]\n\n[recycle]\nafter = \"0s\"\n",
        ] {
            let err = parse_at(text).unwrap_err().to_string();
            assert!(err.starts_with("/etc/kiosk/host.toml:3:"), "{err}");
        }
        let config = parse_at("[recycle]\nafter = \"1d\"\nspread = \"2h\"\n").unwrap();
        assert_eq!(config.recycle.after, Some(Duration::from_secs(86_400)));
        assert!(parse_at("[recycle]\nafter = 5\n").is_err());
    }

    #[test]
    fn variables_and_the_environment_reach_the_app_only_where_declared() {
        let config = parse_at(
            "environment = \"stag\"\n[variables]\nclient_identity_header = \"kiosk-client-cn\"\n",
        )
        .unwrap();
        let declared = config.app_variables(|_| true);
        assert_eq!(declared["environment"], "stag");
        assert_eq!(declared["client_identity_header"], "kiosk-client-cn");
        let undeclared = config.app_variables(|name| name != "environment");
        assert!(!undeclared.contains_key("environment"));

        let err = parse_at("environment = \"prod\"\n\n[variables]\nenvironment = \"dev\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/etc/kiosk/host.toml:3:"), "{err}");
        let err = parse_at("[variables]\nlimit = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/etc/kiosk/host.toml:2:"), "{err}");
        let err = parse_at("[server]\npreflight = \"health\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/etc/kiosk/host.toml:2:"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_with_file_and_line() {
        let err = parse_at("[server]\nlisten = \"127.0.0.1:1\"\nmax_instance = 3\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("/etc/kiosk/host.toml:3:"), "{text}");
        assert!(text.contains("max_instance"), "{text}");

        let err = parse_at("[outbound.destination.\"http://core:1\"]\ntimeot = \"1s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/etc/kiosk/host.toml:2:"), "{err}");
    }

    #[test]
    fn the_admin_listener_needs_its_own_port() {
        assert_eq!(parse_at("").unwrap().admin.listen, None);
        let config = parse_at("[admin]\nlisten = \"127.0.0.1:9180\"\n").unwrap();
        assert_eq!(config.admin.listen, Some("127.0.0.1:9180".parse().unwrap()));
        let err = parse_at(
            "[server]\nlisten = \"127.0.0.1:9180\"\n\n[admin]\nlisten = \"127.0.0.1:9180\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("/etc/kiosk/host.toml:5:"), "{err}");
        let err = parse_at(
            "[server]\nplain_listen = \"0.0.0.0:8080\"\n[admin]\nlisten = \"127.0.0.1:8080\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("own port"), "{err}");
        let ephemeral = "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n";
        assert!(parse_at(ephemeral).is_ok());
        let err = parse_at("[admin]\nlisten = \"127.0.0.1:1\"\nport = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/etc/kiosk/host.toml:3:"), "{err}");
    }

    #[test]
    fn destinations_override_the_defaults_field_by_field() {
        let config = parse_at(
            r#"
[outbound.defaults]
max_concurrency = 10
timeout = "4s"
breaker = { cool_down = "7s" }
[outbound.destination."HTTP://Core.Bank:80"]
timeout = "1500ms"
breaker = { consecutive_failures = 2 }
"#,
        )
        .unwrap();
        let core = config.outbound.for_destination("http://core.bank:80");
        assert_eq!(core.max_concurrency, 10);
        assert_eq!(core.timeout, Duration::from_millis(1500));
        assert_eq!(core.breaker.consecutive_failures, 2);
        assert_eq!(core.breaker.cool_down, Duration::from_secs(7));
        let other = config.outbound.for_destination("http://other:80");
        assert_eq!(other.timeout, Duration::from_secs(4));
        assert_eq!(other.breaker.cool_down, Duration::from_secs(7));
    }

    #[test]
    fn bad_durations_and_cache_routes_name_their_line() {
        let err = parse_at("[server]\n\nrequest_timeout = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/etc/kiosk/host.toml:3:"), "{err}");
        let err = parse_at(
            "[component.core]\noutbound_cache = [{ route = \"POST /transfers\", ttl = \"5s\" }]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("/etc/kiosk/host.toml:2:"), "{err}");
        assert!(err.contains("only GETs"), "{err}");
    }

    #[test]
    fn cache_rules_match_whole_segments() {
        let rule: CacheRule = toml::from_str::<ComponentSettings>(
            "outbound_cache = [{ route = \"GET /customers/*\", ttl = \"5s\" }]",
        )
        .unwrap()
        .outbound_cache
        .unwrap()
        .remove(0);
        assert!(rule.matches("/customers/c-1"));
        assert!(!rule.matches("/customers"));
        assert!(!rule.matches("/customers/c-1/x"));
        assert!(!rule.matches("/accounts/1"));
    }

    #[test]
    fn the_manifest_tool_table_is_read_and_checked() {
        let text = r#"
spin_manifest_version = 2
[component.core]
source = "x.wasm"
[component.core.tool.kiosk-host]
max_instances = 8
[component.core.tool.other-tool]
anything = 1
"#;
        let settings = manifest_component_settings(text, Path::new("spin.toml")).unwrap();
        assert_eq!(settings["core"].max_instances, Some(8));
        let err = manifest_component_settings(
            "[component.a.tool.kiosk-host]\nmax_instancez = 1\n",
            Path::new("spin.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("spin.toml:2:"), "{err}");
    }

    #[test]
    fn components_that_call_out_get_a_bulkhead_by_default() {
        let server = ServerSettings::default();
        let none = ComponentSettings::default();
        let calls_out = none.resolve(true, &server);
        assert_eq!(calls_out.max_instances, 64);
        assert_eq!(calls_out.queue_timeout, Duration::from_millis(100));
        let local = none.resolve(false, &server);
        assert_eq!(local.max_instances, 256);
        assert_eq!(local.queue_timeout, Duration::from_secs(2));
        let app = ComponentSettings {
            max_instances: Some(8),
            ..Default::default()
        };
        let host = ComponentSettings {
            queue_timeout: Some(Duration::from_millis(5)),
            ..Default::default()
        };
        let merged = app.overridden_by(&host).resolve(true, &server);
        assert_eq!(
            (merged.max_instances, merged.queue_timeout),
            (8, Duration::from_millis(5))
        );
    }

    fn config_line() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            Just("[server]".to_string()),
            Just("[outbound.defaults]".to_string()),
            Just("[outbound.defaults.breaker]".to_string()),
            Just("[server.rate_limit]".to_string()),
            "\\[outbound.destination.\"[ -~]{0,20}\"\\]",
            "\\[component.[a-z]{1,6}\\]",
            "(listen|max_instances|timeout|queue_timeout|burst|per_second|max_concurrency|trusted_proxies|max_body_bytes) = [ -~]{0,16}",
            "outbound_cache = \\[\\{ route = \"[ -~]{0,16}\", ttl = \"[0-9a-z]{0,5}\" \\}\\]",
            "[ -~]{0,30}",
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn any_text_is_a_configuration_or_an_error_with_a_line(text in "\\PC{0,200}") {
            if let Err(e) = parse(&text, Path::new("host.toml")) {
                proptest::prop_assert!(e.to_string().starts_with("host.toml:"), "{e}");
            }
        }

        #[test]
        fn configuration_shaped_text_is_read_or_refused_with_a_line(
            lines in proptest::collection::vec(config_line(), 0..12)
        ) {
            let text = lines.join("\n");
            if let Err(e) = parse(&text, Path::new("host.toml")) {
                proptest::prop_assert!(e.to_string().starts_with("host.toml:"), "{e}");
            }
        }
    }
}
