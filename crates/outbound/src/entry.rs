//! One parsed `allowed_outbound_hosts` entry and how it matches requests.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::{AllowedHostError, RequestHost};

/// The default port of the schemes Spin knows.
pub(crate) fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "redis" => Some(6379),
        "mysql" => Some(3306),
        "postgres" => Some(5432),
        "mqtt" => Some(1883),
        _ => None,
    }
}

/// One entry: `scheme://host[:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The entry as written (the template, for a rendered entry).
    pub(crate) original: String,
    scheme: SchemePattern,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum SchemePattern {
    Any,
    /// Lower case.
    Exact(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    /// `*`
    Any,
    /// `self` or `self.alt`
    ToSelf,
    /// `*.example.com`, stored as `.example.com` (lower case).
    Subdomain(String),
    /// A lower-case name.
    Name(String),
    /// An IP address.
    Ip(IpAddr),
    /// A CIDR range (host bits cleared).
    Cidr(IpNet),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PortPattern {
    Any,
    Exact(u16),
    /// `start..end`, end excluded.
    Range(u16, u16),
}

impl Entry {
    /// Parses one entry; errors name `original`.
    pub(crate) fn parse(original: &str) -> Result<Self, AllowedHostError> {
        let entry = || original.to_string();
        let text = original.trim();

        if text.is_empty() {
            return Err(AllowedHostError::Empty { entry: entry() });
        }
        if text == "insecure:allow-all" {
            return Err(AllowedHostError::InsecureAllowAll { entry: entry() });
        }
        if text.contains("{{") {
            return Err(AllowedHostError::UnrenderedTemplate { entry: entry() });
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(AllowedHostError::MissingScheme { entry: entry() });
        };

        let scheme = parse_scheme(original, scheme)?;

        if rest.contains('?') || rest.contains('#') {
            return Err(AllowedHostError::HasQuery { entry: entry() });
        }
        if rest.contains('@') {
            return Err(AllowedHostError::HasUserinfo { entry: entry() });
        }
        if rest.contains(['{', '}', ',']) {
            return Err(AllowedHostError::UnsupportedList { entry: entry() });
        }

        let (host, port) = split_authority(original, rest)?;
        let host = parse_host(original, host)?;
        let port = parse_port(original, port, &scheme)?;

        Ok(Self {
            original: original.to_string(),
            scheme,
            host,
            port,
        })
    }

    /// Whether a request (`scheme` lower case, `port` already defaulted)
    /// matches this entry.
    pub(crate) fn allows(&self, scheme: &str, host: &RequestHost, port: Option<u16>) -> bool {
        self.scheme.allows(scheme) && self.host.allows(host) && self.port.allows(port)
    }

    /// Whether this entry allows requests to the app itself.
    pub(crate) fn allows_self(&self) -> bool {
        matches!(self.host, HostPattern::Any | HostPattern::ToSelf)
            && (self.scheme.allows("http") || self.scheme.allows("https"))
    }
}

impl SchemePattern {
    fn allows(&self, scheme: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(s) => s == scheme,
        }
    }
}

impl HostPattern {
    fn allows(&self, host: &RequestHost) -> bool {
        match (self, host) {
            (Self::Any, _) => true,
            (Self::ToSelf, _) => false,
            (Self::Subdomain(suffix), RequestHost::Name(name)) => {
                name.len() > suffix.len() && name.ends_with(suffix.as_str())
            }
            (Self::Name(n), RequestHost::Name(name)) => n == name,
            (Self::Ip(ip), RequestHost::Ip(addr)) => ip == addr,
            (Self::Cidr(net), RequestHost::Ip(addr)) => net.contains(addr),
            _ => false,
        }
    }
}

impl PortPattern {
    fn allows(&self, port: Option<u16>) -> bool {
        match (self, port) {
            (Self::Any, _) => true,
            (_, None) => false,
            (Self::Exact(p), Some(port)) => *p == port,
            (Self::Range(start, end), Some(port)) => (*start..*end).contains(&port),
        }
    }
}

fn parse_scheme(entry: &str, scheme: &str) -> Result<SchemePattern, AllowedHostError> {
    if scheme == "*" {
        return Ok(SchemePattern::Any);
    }
    if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(AllowedHostError::InvalidScheme {
            entry: entry.to_string(),
            scheme: scheme.to_string(),
        });
    }
    Ok(SchemePattern::Exact(scheme.to_ascii_lowercase()))
}

/// Splits `host[:port][/]` into host and port (empty when absent).
///
/// A bracketed IPv6 host ends at `]`. Otherwise, as in Spin, the port is what
/// follows the last `:`, so an unbracketed IPv6 address or range needs a
/// port (`*://ff00::/8:80`), unless the whole is a CIDR range
/// (`http://2001:db8::/32`).
fn split_authority<'a>(entry: &str, rest: &'a str) -> Result<(&'a str, &'a str), AllowedHostError> {
    let has_path = || AllowedHostError::HasPath {
        entry: entry.to_string(),
    };
    // A trailing slash is allowed ("https://example.com/").
    let authority = rest.trim_end_matches('/');

    if authority.starts_with('[') {
        let Some(close) = authority.find(']') else {
            return Err(AllowedHostError::InvalidHost {
                entry: entry.to_string(),
                host: authority.to_string(),
            });
        };
        let (host, after) = authority.split_at(close + 1);
        return match after.strip_prefix(':') {
            _ if after.is_empty() => Ok((host, "")),
            Some(port) if port.contains('/') => Err(has_path()),
            Some(port) => Ok((host, port)),
            None if after.starts_with('/') => Err(has_path()),
            None => Err(AllowedHostError::InvalidHost {
                entry: entry.to_string(),
                host: authority.to_string(),
            }),
        };
    }

    if authority.contains('/') && authority.parse::<IpNet>().is_ok() {
        return Ok((authority, ""));
    }
    let (host, port) = authority.rsplit_once(':').unwrap_or((authority, ""));
    if port.contains('/') {
        return Err(has_path());
    }
    Ok((host, port))
}

fn parse_host(entry: &str, host: &str) -> Result<HostPattern, AllowedHostError> {
    let invalid = || AllowedHostError::InvalidHost {
        entry: entry.to_string(),
        host: host.to_string(),
    };
    let host = host.trim();
    if host.is_empty() {
        return Err(invalid());
    }
    // An IP address or range, possibly in brackets; any other '/' is a path.
    let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let ip_text = bracketed.unwrap_or(host);
    if let Some((addr, _prefix)) = ip_text.split_once('/') {
        if let Ok(net) = ip_text.parse::<IpNet>() {
            return Ok(HostPattern::Cidr(net.trunc()));
        }
        if addr.parse::<IpAddr>().is_ok() {
            return Err(AllowedHostError::InvalidCidr {
                entry: entry.to_string(),
                host: host.to_string(),
            });
        }
        return Err(AllowedHostError::HasPath {
            entry: entry.to_string(),
        });
    }
    if let Ok(ip) = ip_text.parse::<IpAddr>() {
        return Ok(HostPattern::Ip(ip));
    }
    if bracketed.is_some() {
        return Err(invalid());
    }
    if host == "*" {
        return Ok(HostPattern::Any);
    }
    if host.eq_ignore_ascii_case("self") || host.eq_ignore_ascii_case("self.alt") {
        return Ok(HostPattern::ToSelf);
    }
    if let Some(domain) = host.strip_prefix("*.") {
        if domain.contains('*') {
            return Err(AllowedHostError::InvalidWildcard {
                entry: entry.to_string(),
                host: host.to_string(),
            });
        }
        return match parse_name(domain) {
            Some(name) => Ok(HostPattern::Subdomain(format!(".{name}"))),
            None => Err(invalid()),
        };
    }
    if host.contains('*') {
        return Err(AllowedHostError::InvalidWildcard {
            entry: entry.to_string(),
            host: host.to_string(),
        });
    }

    match url::Host::parse(host) {
        // Forms such as "127.1", which URLs read as IPv4 addresses.
        Ok(url::Host::Ipv4(ip)) => Ok(HostPattern::Ip(ip.into())),
        Ok(url::Host::Ipv6(ip)) => Ok(HostPattern::Ip(ip.into())),
        Ok(url::Host::Domain(_)) => parse_name(host).map(HostPattern::Name).ok_or_else(invalid),
        Err(_) => Err(invalid()),
    }
}

/// A host name, lower case (and IDNA-encoded), or `None` if it is not one.
fn parse_name(name: &str) -> Option<String> {
    match url::Host::parse(name) {
        Ok(url::Host::Domain(name))
            if name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')) =>
        {
            Some(name)
        }
        _ => None,
    }
}

fn parse_port(
    entry: &str,
    port: &str,
    scheme: &SchemePattern,
) -> Result<PortPattern, AllowedHostError> {
    if port.is_empty() {
        let scheme = match scheme {
            SchemePattern::Any => "*",
            SchemePattern::Exact(s) => s.as_str(),
        };
        return default_port(scheme).map(PortPattern::Exact).ok_or_else(|| {
            AllowedHostError::MissingPort {
                entry: entry.to_string(),
                scheme: scheme.to_string(),
            }
        });
    }
    if port == "*" {
        return Ok(PortPattern::Any);
    }
    if let Some((start, end)) = port.split_once("..") {
        let invalid = || AllowedHostError::InvalidPortRange {
            entry: entry.to_string(),
            range: port.to_string(),
        };
        let start = parse_number(start).ok_or_else(invalid)?;
        let end = parse_number(end).ok_or_else(invalid)?;
        if start >= end {
            return Err(invalid());
        }
        return Ok(PortPattern::Range(start, end));
    }
    parse_number(port)
        .map(PortPattern::Exact)
        .ok_or_else(|| AllowedHostError::InvalidPort {
            entry: entry.to_string(),
            port: port.to_string(),
        })
}

/// A port number: ASCII digits only (no sign), at most 65535.
fn parse_number(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}
