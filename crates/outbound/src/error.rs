//! The error type for rejected `allowed_outbound_hosts` entries.

/// Why an `allowed_outbound_hosts` entry was rejected.
///
/// Every variant carries `entry`: the entry exactly as written in the
/// manifest (before any template rendering), and its message names it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AllowedHostError {
    /// The entry is empty (or only whitespace).
    #[error(
        "allowed_outbound_hosts entry {entry:?} is empty; entries take the form <scheme>://<host>[:<port>]"
    )]
    Empty {
        /// The entry as written.
        entry: String,
    },

    /// The entry is `insecure:allow-all`, which Spin no longer accepts.
    #[error(
        "allowed_outbound_hosts entry {entry:?} is not allowed; use \"*://*:*\" instead if you really want to allow all outbound traffic"
    )]
    InsecureAllowAll {
        /// The entry as written.
        entry: String,
    },

    /// The entry has no `scheme://` prefix.
    #[error(
        "allowed_outbound_hosts entry {entry:?} has no scheme; entries take the form <scheme>://<host>[:<port>], e.g. \"https://example.com\" or \"*://example.com:*\" (\"*://*:*\" allows all outbound traffic)"
    )]
    MissingScheme {
        /// The entry as written.
        entry: String,
    },

    /// The scheme is neither `*` nor made of letters only.
    #[error(
        "allowed_outbound_hosts entry {entry:?} has an invalid scheme {scheme:?}; a scheme must be letters only, or \"*\""
    )]
    InvalidScheme {
        /// The entry as written.
        entry: String,
        /// The scheme part.
        scheme: String,
    },

    /// The entry has a path after the host or port.
    #[error(
        "allowed_outbound_hosts entry {entry:?} has a path; entries take the form <scheme>://<host>[:<port>] with no path"
    )]
    HasPath {
        /// The entry as written.
        entry: String,
    },

    /// The entry has a query (`?...`) or fragment (`#...`).
    #[error(
        "allowed_outbound_hosts entry {entry:?} has a query or fragment; entries take the form <scheme>://<host>[:<port>]"
    )]
    HasQuery {
        /// The entry as written.
        entry: String,
    },

    /// The entry has user information (`user@host`).
    #[error(
        "allowed_outbound_hosts entry {entry:?} has user information (\"...@\"); entries take the form <scheme>://<host>[:<port>]"
    )]
    HasUserinfo {
        /// The entry as written.
        entry: String,
    },

    /// The entry uses a list (`{a,b}` or `a,b`) for its scheme, host or port.
    #[error(
        "allowed_outbound_hosts entry {entry:?} contains a list; lists are not supported, write one entry per scheme, host and port"
    )]
    UnsupportedList {
        /// The entry as written.
        entry: String,
    },

    /// The host uses `*` other than as the whole host or a leading `*.`.
    #[error(
        "allowed_outbound_hosts entry {entry:?} has host {host:?} with a misplaced wildcard; \"*\" may only be the whole host or a leading \"*.\" (as in \"*.example.com\")"
    )]
    InvalidWildcard {
        /// The entry as written.
        entry: String,
        /// The host part.
        host: String,
    },

    /// The host is not a valid name, IP address or CIDR range.
    #[error(
        "allowed_outbound_hosts entry {entry:?} has an invalid host {host:?}; a host is \"*\", \"*.<domain>\", a name, an IP address (IPv6 in brackets, as in \"[::1]\"), a CIDR range, or \"self\""
    )]
    InvalidHost {
        /// The entry as written.
        entry: String,
        /// The host part.
        host: String,
    },

    /// The host looks like a CIDR range (`address/prefix`) but is not one.
    #[error(
        "allowed_outbound_hosts entry {entry:?} has an invalid CIDR range {host:?}; the prefix length must be at most 32 for IPv4 and 128 for IPv6"
    )]
    InvalidCidr {
        /// The entry as written.
        entry: String,
        /// The host part.
        host: String,
    },

    /// No port was given and the scheme has no default port.
    #[error(
        "allowed_outbound_hosts entry {entry:?} has no port and scheme {scheme:?} has no default port; add a port, e.g. \":8080\", \":1000..2000\" or \":*\""
    )]
    MissingPort {
        /// The entry as written.
        entry: String,
        /// The scheme part.
        scheme: String,
    },

    /// The port is not a number from 0 to 65535, `*`, or a range.
    #[error(
        "allowed_outbound_hosts entry {entry:?} has an invalid port {port:?}; a port is a number from 0 to 65535, \"*\", or a range \"start..end\""
    )]
    InvalidPort {
        /// The entry as written.
        entry: String,
        /// The port part.
        port: String,
    },

    /// The port range is not `start..end` with numbers and `start < end`.
    #[error(
        "allowed_outbound_hosts entry {entry:?} has an invalid port range {range:?}; a range is \"start..end\" with port numbers and start < end (end excluded)"
    )]
    InvalidPortRange {
        /// The entry as written.
        entry: String,
        /// The port range part.
        range: String,
    },

    /// The entry contains a `{{ ... }}` variable template, and was given to
    /// [`AllowedHosts::parse`](crate::AllowedHosts::parse), which does not render
    /// templates.
    #[error(
        "allowed_outbound_hosts entry {entry:?} contains a variable template (\"{{{{ ... }}}}\") that was not rendered"
    )]
    UnrenderedTemplate {
        /// The entry as written.
        entry: String,
    },

    /// The caller's renderer failed on a templated entry.
    #[error("allowed_outbound_hosts entry {entry:?} could not be rendered: {message}")]
    Render {
        /// The entry as written.
        entry: String,
        /// The renderer's error message.
        message: String,
    },

    /// A templated entry rendered to something that is not a valid entry.
    #[error(
        "allowed_outbound_hosts entry {entry:?} rendered to {rendered:?}, which is invalid: {error}"
    )]
    Rendered {
        /// The entry as written (the template).
        entry: String,
        /// What the template rendered to.
        rendered: String,
        /// What is wrong with the rendered entry (its `entry` is `rendered`).
        error: Box<AllowedHostError>,
    },
}

impl AllowedHostError {
    /// The entry this error is about, as written in the manifest.
    pub fn entry(&self) -> &str {
        match self {
            Self::Empty { entry }
            | Self::InsecureAllowAll { entry }
            | Self::MissingScheme { entry }
            | Self::InvalidScheme { entry, .. }
            | Self::HasPath { entry }
            | Self::HasQuery { entry }
            | Self::HasUserinfo { entry }
            | Self::UnsupportedList { entry }
            | Self::InvalidWildcard { entry, .. }
            | Self::InvalidHost { entry, .. }
            | Self::InvalidCidr { entry, .. }
            | Self::MissingPort { entry, .. }
            | Self::InvalidPort { entry, .. }
            | Self::InvalidPortRange { entry, .. }
            | Self::UnrenderedTemplate { entry }
            | Self::Render { entry, .. }
            | Self::Rendered { entry, .. } => entry,
        }
    }
}
