//! Parsing and matching of Spin's `allowed_outbound_hosts` entries, as Spin
//! 4.0.2 defines them, for kiosk-host.
//!
//! An entry is `<scheme>://<host>[:<port>]`:
//!
//! * scheme: letters (`https`, `redis`, ...) or `*`;
//! * host: `*`, `*.example.com` (any subdomain, not `example.com` itself), a
//!   name, an IP address (IPv6 in brackets, `[::1]`), a CIDR range
//!   (`10.0.0.0/8`, `ff00::/8`), or `self` / `self.alt` (the app itself);
//! * port: a number, `*`, or a range `start..end` (end excluded). Without a
//!   port the scheme's default is used (http 80, https 443, redis 6379,
//!   mysql 3306, postgres 5432, mqtt 1883); other schemes need a port.
//!
//! Matching is case-insensitive for scheme and host and does no DNS: hosts
//! compare as written, an IP address matches a CIDR range, a name never does.
//!
//! Entries may contain `{{ variable }}` templates; this crate does not resolve
//! them, [`AllowedHosts::parse_templated`] takes a renderer from the caller.
//!
//! ```
//! use kiosk_outbound::AllowedHosts;
//!
//! let allowed = AllowedHosts::parse(&["https://*.example.com".to_string()]).unwrap();
//! assert!(allowed.allows(&"https://api.example.com/v1".parse().unwrap()));
//! assert!(!allowed.allows(&"https://example.com/".parse().unwrap()));
//! ```

#![deny(missing_docs)]

mod entry;
mod error;

#[cfg(test)]
mod tests;

use std::net::IpAddr;

pub use error::AllowedHostError;

use entry::{Entry, default_port};

/// The parsed `allowed_outbound_hosts` of one component.
///
/// The default value, like [`AllowedHosts::none`], denies everything.
#[derive(Clone, Debug, Default)]
pub struct AllowedHosts {
    entries: Vec<Entry>,
}

/// A request's host, normalised for matching.
pub(crate) enum RequestHost {
    /// An IP address (from `1.2.3.4`, `[::1]` or `::1`).
    Ip(IpAddr),
    /// A lower-case name.
    Name(String),
}

impl RequestHost {
    fn parse(host: &str) -> Self {
        let inner = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = inner.parse::<IpAddr>() {
            return Self::Ip(ip);
        }
        match url::Host::parse(host) {
            Ok(url::Host::Ipv4(ip)) => Self::Ip(ip.into()),
            Ok(url::Host::Ipv6(ip)) => Self::Ip(ip.into()),
            Ok(url::Host::Domain(name)) => Self::Name(name),
            Err(_) => Self::Name(host.to_ascii_lowercase()),
        }
    }
}

impl AllowedHosts {
    /// Parses a component's `allowed_outbound_hosts`.
    ///
    /// Entries containing a `{{ ... }}` template are rejected
    /// ([`AllowedHostError::UnrenderedTemplate`]); use
    /// [`parse_templated`](Self::parse_templated) for those.
    pub fn parse(entries: &[String]) -> Result<Self, AllowedHostError> {
        let entries = entries
            .iter()
            .map(|e| Entry::parse(e))
            .collect::<Result<_, _>>()?;
        Ok(Self { entries })
    }

    /// Parses a component's `allowed_outbound_hosts`, rendering each entry
    /// that contains a `{{ ... }}` variable template with `render` first
    /// (entries without one are parsed as written, as Spin does).
    ///
    /// A renderer error becomes [`AllowedHostError::Render`] and an invalid
    /// rendered entry [`AllowedHostError::Rendered`], both naming the entry as
    /// written.
    pub fn parse_templated(
        entries: &[String],
        render: impl Fn(&str) -> Result<String, String>,
    ) -> Result<Self, AllowedHostError> {
        let mut parsed = Vec::with_capacity(entries.len());
        for entry in entries {
            if entry.contains("{{") {
                let rendered = render(entry).map_err(|message| AllowedHostError::Render {
                    entry: entry.clone(),
                    message,
                })?;
                let mut host =
                    Entry::parse(&rendered).map_err(|error| AllowedHostError::Rendered {
                        entry: entry.clone(),
                        rendered: rendered.clone(),
                        error: Box::new(error),
                    })?;
                host.original = entry.clone();
                parsed.push(host);
            } else {
                parsed.push(Entry::parse(entry)?);
            }
        }
        Ok(Self { entries: parsed })
    }

    /// An empty list, which denies every request.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether `url` may be requested.
    ///
    /// A URL with no host or an empty one, or whose host is `self.alt`, is a
    /// request to the app itself and is checked with
    /// [`allows_self`](Self::allows_self). Otherwise the scheme, host and
    /// port (the scheme's default when the URL has none) must match an entry.
    pub fn allows(&self, url: &url::Url) -> bool {
        self.allows_parts(
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.port_or_known_default(),
        )
    }

    /// Whether a request to `scheme://host[:port]` may be made; for callers
    /// holding the parts (e.g. of an `http::Uri`).
    ///
    /// `host` may be a name, an IPv4 address, or an IPv6 address with or
    /// without brackets. An empty host or `self.alt` is a self request
    /// ([`allows_self`](Self::allows_self)). Without `port` the scheme's
    /// default port is used; a scheme without one matches only entries with
    /// port `*`.
    pub fn allows_parts(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let host = host.trim();
        if host.is_empty() || host.eq_ignore_ascii_case("self.alt") {
            return self.allows_self();
        }
        let scheme = scheme.to_ascii_lowercase();
        let port = port.or_else(|| default_port(&scheme));
        let host = RequestHost::parse(host);
        self.entries.iter().any(|e| e.allows(&scheme, &host, port))
    }

    /// Whether a request to the app itself (a relative URL, or host
    /// `self.alt`) may be made: some entry has host `self`, `self.alt` or `*`
    /// and scheme `http`, `https` or `*`. The port is not checked.
    pub fn allows_self(&self) -> bool {
        self.entries.iter().any(Entry::allows_self)
    }

    /// Whether there are no entries (so everything is denied).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The manifest line that would allow a request to
    /// `scheme://host[:port]`, for error messages, e.g.
    /// `allowed_outbound_hosts = ["https://api.example.com"]`.
    ///
    /// The port is shown only when it is not the scheme's default; a scheme
    /// without a default port and no `port` gives `:*`. An empty host or
    /// `self.alt` gives `http://self` (or `https://self`).
    pub fn suggestion(scheme: &str, host: &str, port: Option<u16>) -> String {
        let scheme = scheme.trim().to_ascii_lowercase();
        let host = host.trim();
        let entry = if host.is_empty() || host.eq_ignore_ascii_case("self.alt") {
            let scheme = if scheme == "https" { "https" } else { "http" };
            format!("{scheme}://self")
        } else {
            let scheme = if scheme.is_empty() { "http" } else { &scheme };
            let host = match RequestHost::parse(host) {
                RequestHost::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
                RequestHost::Ip(IpAddr::V4(ip)) => ip.to_string(),
                RequestHost::Name(name) => name,
            };
            let default = default_port(scheme);
            match port {
                Some(p) if Some(p) != default => format!("{scheme}://{host}:{p}"),
                None if default.is_none() => format!("{scheme}://{host}:*"),
                _ => format!("{scheme}://{host}"),
            }
        };
        format!("allowed_outbound_hosts = [\"{entry}\"]")
    }
}
