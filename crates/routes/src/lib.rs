//! The HTTP route table of a host that runs Spin applications.
//!
//! Matching follows Spin 4.0.2 (`spin-http-routes`), which delegates to
//! [`routefinder`] 0.5.4; this crate uses that same version so that
//! precedence, trailing-slash handling and captures are Spin's own.
//!
//! * Routes are normalised as Spin does: a leading `/` is added if missing
//!   and one trailing `/` is removed. A trailing `/...` (or `/*`) is a
//!   wildcard, `:name` matches one segment (routefinder also splits at `.`,
//!   so `/x/:name.json` works).
//! * Request paths are matched raw (no query, no percent-decoding,
//!   case-sensitive); leading and trailing slashes of the request are
//!   ignored.
//! * The best match wins by routefinder's precedence: segment by segment
//!   from the left, literal > `:param` > wildcard; then more `.` segments;
//!   then fewer segments.
//!
//! A [`RouteMatch`] also gives the values Spin puts into its
//! `spin-matched-route`, `spin-raw-component-route`,
//! `spin-component-route`, `spin-path-info` and `spin-path-match-*`
//! request headers.
//!
//! The crate is pure: it does no I/O.

#![deny(missing_docs)]

use std::{borrow::Cow, collections::HashMap, fmt};

use routefinder::{RouteSpec, Segment};

/// The prefix of the paths the Spin runtime answers itself
/// (`/.well-known/spin/health`, `/.well-known/spin/info`).
///
/// Routes under it are left out of the table and reported through
/// [`RouteTable::warnings`].
pub const WELL_KNOWN_PREFIX: &str = "/.well-known/spin/";

/// The prefix of the header that carries a `:name` capture, as Spin
/// spells it (see [`header_name_for`]).
pub const PATH_MATCH_HEADER_PREFIX: &str = "spin-path-match-";

/// An error in a route of the manifest. Each message names the raw route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// A `*` or `...` that is not the last segment of the route
    /// (e.g. `/a/*/b`, `/a/.../b`). routefinder does not support it.
    #[error(
        "route '{route}': a wildcard (`*` or `...`) is only supported as the last segment of a route"
    )]
    WildcardNotLast {
        /// The route as written in the manifest.
        route: String,
    },
    /// A route routefinder refuses to parse (e.g. an unnamed `:` parameter,
    /// or a named wildcard such as `*rest`).
    #[error("route '{route}' is not a valid route: {reason}")]
    Invalid {
        /// The route as written in the manifest.
        route: String,
        /// routefinder's explanation.
        reason: String,
    },
}

/// The route of one trigger entry: a routable pattern, or a private
/// endpoint (`route = { private = true }`), which is left out of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteConfig {
    /// A route pattern, as written in the manifest.
    Route(String),
    /// A private endpoint: reachable only by service chaining, never routed.
    Private,
}

impl From<String> for RouteConfig {
    fn from(route: String) -> Self {
        Self::Route(route)
    }
}

impl From<&str> for RouteConfig {
    fn from(route: &str) -> Self {
        Self::Route(route.to_owned())
    }
}

impl From<Option<String>> for RouteConfig {
    /// `None` is a private endpoint.
    fn from(route: Option<String>) -> Self {
        route.map_or(Self::Private, Self::Route)
    }
}

impl From<Option<&str>> for RouteConfig {
    /// `None` is a private endpoint.
    fn from(route: Option<&str>) -> Self {
        route.map_or(Self::Private, Self::from)
    }
}

/// A route given more than once (after normalisation): only the last
/// entry is routed, the earlier ones are shadowed. Not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate<T> {
    /// The normalised route (`/` for the root route).
    pub route: String,
    /// The target whose route is shadowed and will never be reached.
    pub shadowed: T,
    /// The target the route leads to (the last entry with this route).
    pub winner: T,
}

/// What a route leads to, with the route strings Spin reports.
#[derive(Debug)]
struct Entry<T> {
    target: T,
    /// The route as written in the manifest.
    raw: String,
    /// The normalised route (Spin's "based route" with base `/`).
    normalized: String,
}

/// The HTTP route table: built once from the manifest's routes, then asked
/// for the best match of every request path.
pub struct RouteTable<T> {
    router: routefinder::Router<Entry<T>>,
    warnings: Vec<String>,
    duplicates: Vec<Duplicate<T>>,
}

impl<T: fmt::Debug> fmt::Debug for RouteTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteTable")
            .field(
                "routes",
                &self
                    .router
                    .iter()
                    .map(|(_, e)| (e.raw.as_str(), &e.target))
                    .collect::<Vec<_>>(),
            )
            .field("warnings", &self.warnings)
            .field("duplicates", &self.duplicates)
            .finish()
    }
}

impl<T: Clone> RouteTable<T> {
    /// Builds the table from `(raw route, target)` pairs, in manifest order.
    ///
    /// Routes that are identical once normalised are routed to the last
    /// entry; the others are listed by [`duplicates`](Self::duplicates).
    /// Routes under [`WELL_KNOWN_PREFIX`] are left out and listed by
    /// [`warnings`](Self::warnings). A malformed route is an error.
    pub fn build(entries: impl IntoIterator<Item = (String, T)>) -> Result<Self, RouteError> {
        Self::build_with_private(
            entries
                .into_iter()
                .map(|(route, target)| (RouteConfig::Route(route), target)),
        )
    }

    /// As [`build`](Self::build), for entries that may be private endpoints
    /// ([`RouteConfig::Private`], or `None` for an `Option<&str>` /
    /// `Option<String>` route): those are skipped.
    pub fn build_with_private<R: Into<RouteConfig>>(
        entries: impl IntoIterator<Item = (R, T)>,
    ) -> Result<Self, RouteError> {
        // Dedupe keeping the position of the first occurrence and the value
        // of the last (Spin's `IndexMap::insert`), so routefinder sees the
        // routes in the order Spin gives them: for routes of the same shape
        // routefinder prefers the one added first.
        let mut slots: Vec<Entry<T>> = Vec::new();
        let mut by_route: HashMap<String, usize> = HashMap::new();
        let mut shadowed: Vec<(usize, T)> = Vec::new();
        for (config, target) in entries {
            let raw = match config.into() {
                RouteConfig::Route(raw) => raw,
                RouteConfig::Private => continue,
            };
            let normalized = normalize(&raw);
            match by_route.get(&normalized) {
                Some(&slot) => {
                    let old = std::mem::replace(
                        &mut slots[slot],
                        Entry {
                            target,
                            raw,
                            normalized,
                        },
                    );
                    shadowed.push((slot, old.target));
                }
                None => {
                    by_route.insert(normalized.clone(), slots.len());
                    slots.push(Entry {
                        target,
                        raw,
                        normalized,
                    });
                }
            }
        }

        let duplicates = shadowed
            .into_iter()
            .map(|(slot, target)| {
                let entry = &slots[slot];
                Duplicate {
                    route: display_route(&entry.normalized).to_owned(),
                    shadowed: target,
                    winner: entry.target.clone(),
                }
            })
            .collect();

        let mut router = routefinder::Router::new();
        let mut warnings = Vec::new();
        for entry in slots {
            let spec = parse(&entry.normalized, &entry.raw)?;
            if entry.normalized.starts_with(WELL_KNOWN_PREFIX) {
                warnings.push(format!(
                    "route '{}' is under {WELL_KNOWN_PREFIX}, which the runtime answers itself: \
                     it would never be reached and is left out of the route table",
                    entry.raw
                ));
                continue;
            }
            let Ok(()) = router.add(spec, entry);
        }

        Ok(Self {
            router,
            warnings,
            duplicates,
        })
    }
}

impl<T> RouteTable<T> {
    /// The best match for a request path, or `None` (the caller answers 404).
    ///
    /// `path` is the raw request path without the query: it is not
    /// percent-decoded and matching is case-sensitive.
    pub fn route<'a>(&'a self, path: &'a str) -> Option<RouteMatch<'a, T>> {
        let best = self.router.best_match(path)?;
        Some(RouteMatch {
            entry: best.handler(),
            captures: best.captures(),
            path,
        })
    }

    /// Routes left out of the table because they are under
    /// [`WELL_KNOWN_PREFIX`]; each message names the raw route.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Entries whose route was given again by a later entry.
    pub fn duplicates(&self) -> &[Duplicate<T>] {
        &self.duplicates
    }

    /// The number of routes in the table.
    pub fn len(&self) -> usize {
        self.router.len()
    }

    /// Whether the table has no route (every request is a 404).
    pub fn is_empty(&self) -> bool {
        self.router.is_empty()
    }
}

/// The match of a request path: the target and the values of Spin's
/// routing headers.
#[derive(Debug)]
pub struct RouteMatch<'a, T> {
    entry: &'a Entry<T>,
    captures: routefinder::Captures<'a, 'a>,
    path: &'a str,
}

impl<'a, T> RouteMatch<'a, T> {
    /// What the matched route leads to.
    pub fn target(&self) -> &'a T {
        &self.entry.target
    }

    /// The request path that was matched.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The route as written in the manifest (`spin-raw-component-route`).
    pub fn raw_route(&self) -> &'a str {
        &self.entry.raw
    }

    /// The normalised route, wildcard included (`spin-matched-route`):
    /// `/foo/...` for `/foo/...`, `/...` for `/...`, and `""` for `/`.
    pub fn matched_route(&self) -> &'a str {
        &self.entry.normalized
    }

    /// The raw route without a trailing `/...` (`spin-component-route`):
    /// `/foo` for `/foo/...`, `""` for `/...`.
    pub fn component_route(&self) -> &'a str {
        let raw = self.entry.raw.as_str();
        raw.strip_suffix("/...").unwrap_or(raw)
    }

    /// The part of the path the trailing wildcard matched, with a leading
    /// `/` (`spin-path-info`).
    ///
    /// `""` for a route without wildcard and when nothing follows the
    /// wildcard's base; a trailing `/` of the request is kept. For
    /// `/foo/...`: `/foo` gives `""`, `/foo/` gives `/`, `/foo/bar` gives
    /// `/bar`, `/foo/bar/` gives `/bar/`. Borrowed from the path except in
    /// unusual routes such as `/a.*`.
    pub fn path_info(&self) -> Cow<'a, str> {
        let Some(rest) = self.captures.wildcard() else {
            return Cow::Borrowed("");
        };
        let trailing_slash = self.path.ends_with('/');
        if rest.is_empty() {
            return Cow::Borrowed(if trailing_slash { "/" } else { "" });
        }
        // routefinder captures the rest of the path with its leading and
        // trailing slashes trimmed, so it ends where those slashes start.
        // Spin answers "/" + rest (+ "/" if the request ends with one),
        // which is usually a slice of the path itself.
        let end = self.path.trim_end_matches('/').len();
        if let Some(start) = end.checked_sub(rest.len() + 1)
            && self.path.as_bytes()[start] == b'/'
            && self.path[..end].ends_with(rest)
        {
            let stop = if trailing_slash { end + 1 } else { end };
            return Cow::Borrowed(&self.path[start..stop]);
        }
        Cow::Owned(if trailing_slash {
            format!("/{rest}/")
        } else {
            format!("/{rest}")
        })
    }

    /// The `:name` captures as `(name, raw value)` pairs, in route order.
    ///
    /// Values are not percent-decoded. A name used twice in one route is
    /// given once, with its last value (Spin collects them into a map).
    /// See [`header_name_for`] for the header that carries each.
    pub fn named(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let params = self.captures.params();
        params
            .iter()
            .enumerate()
            .filter(move |(i, capture)| {
                !params[i + 1..]
                    .iter()
                    .any(|later| later.name() == capture.name())
            })
            .map(|(_, capture)| (capture.name(), capture.value()))
    }
}

/// The request header that carries the `:name` capture called `name`:
/// Spin builds `SPIN_PATH_MATCH_<NAME>` (upper-cased), then lowercases it
/// and turns `_` into `-`, so `path_segment` gives
/// `spin-path-match-path-segment`.
pub fn header_name_for(name: &str) -> String {
    format!("SPIN_PATH_MATCH_{}", name.to_ascii_uppercase())
        .replace('_', "-")
        .to_ascii_lowercase()
}

/// Spin's normalisation (base `/`): add a leading `/` if missing, remove
/// one trailing `/`. The root route `/` becomes `""`.
fn normalize(raw: &str) -> String {
    let mut route = if raw.starts_with('/') {
        raw.to_owned()
    } else {
        format!("/{raw}")
    };
    if route.ends_with('/') {
        route.pop();
    }
    route
}

/// How a normalised route is shown to people: `/` for the root route.
fn display_route(normalized: &str) -> &str {
    if normalized.is_empty() {
        "/"
    } else {
        normalized
    }
}

/// Parses a normalised route as Spin does (`/...` becomes routefinder's
/// `/*`), refusing what routefinder would mis-handle: a wildcard that is
/// not the last segment (routefinder panics matching it).
fn parse(normalized: &str, raw: &str) -> Result<RouteSpec, RouteError> {
    let source: Cow<'_, str> = match normalized.strip_suffix("/...") {
        Some(base) => format!("{base}/*").into(),
        None => normalized.into(),
    };
    let wildcard_not_last = || RouteError::WildcardNotLast {
        route: raw.to_owned(),
    };
    if source.split('/').any(|segment| segment == "...") {
        return Err(wildcard_not_last());
    }
    let spec: RouteSpec = source.parse().map_err(|reason| RouteError::Invalid {
        route: raw.to_owned(),
        reason,
    })?;
    let segments = spec.segments();
    if segments
        .iter()
        .position(|segment| matches!(segment, Segment::Wildcard))
        .is_some_and(|at| at + 1 != segments.len())
    {
        return Err(wildcard_not_last());
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Case = (
        &'static [(&'static str, &'static str)],
        &'static str,
        Option<&'static str>,
        &'static str,
        &'static [(&'static str, &'static str)],
    );

    fn table(routes: &[(&str, &'static str)]) -> RouteTable<&'static str> {
        RouteTable::build(routes.iter().map(|(r, t)| (r.to_string(), *t))).unwrap()
    }

    /// (routes as (raw route, target), request path, expected winner,
    /// expected path_info, expected captures)
    const CASES: &[Case] = &[
        // exact
        (&[("/foo", "A")], "/foo", Some("A"), "", &[]),
        (&[("/foo", "A")], "/foo/bar", None, "", &[]),
        (&[("/foo", "A")], "/", None, "", &[]),
        // trailing and doubled request slashes are ignored
        (&[("/foo", "A")], "/foo/", Some("A"), "", &[]),
        (&[("/foo", "A")], "//foo", Some("A"), "", &[]),
        (&[("/foo", "A")], "/foo//", Some("A"), "", &[]),
        // a trailing slash in the route is removed
        (&[("/foo/", "A")], "/foo", Some("A"), "", &[]),
        // the query is the caller's to strip
        (&[("/foo", "A")], "/foo?x=1", None, "", &[]),
        // wildcard: base, base with slash, sub-paths
        (&[("/foo/...", "W")], "/foo", Some("W"), "", &[]),
        (&[("/foo/...", "W")], "/foo/", Some("W"), "/", &[]),
        (&[("/foo/...", "W")], "/foo/bar", Some("W"), "/bar", &[]),
        (&[("/foo/...", "W")], "/foo/bar/", Some("W"), "/bar/", &[]),
        (
            &[("/foo/...", "W")],
            "/foo/bar/baz",
            Some("W"),
            "/bar/baz",
            &[],
        ),
        (&[("/foo/...", "W")], "//foo/bar", Some("W"), "/bar", &[]),
        // a wildcard is not a string prefix
        (&[("/foo/...", "W")], "/foobar", None, "", &[]),
        (&[("/deep/path/...", "D")], "/deep/pathology", None, "", &[]),
        (
            &[("/deep/path/...", "D")],
            "/deep/path/x",
            Some("D"),
            "/x",
            &[],
        ),
        // `/*` is a wildcard too
        (&[("/foo/*", "S")], "/foo", Some("S"), "", &[]),
        (&[("/foo/*", "S")], "/foo/a/b", Some("S"), "/a/b", &[]),
        // catch-all
        (&[("/...", "ALL")], "/", Some("ALL"), "/", &[]),
        (&[("/...", "ALL")], "/a/b", Some("ALL"), "/a/b", &[]),
        (&[("/...", "ALL")], "/a/b/", Some("ALL"), "/a/b/", &[]),
        // `/` versus `/...`
        (
            &[("/...", "ALL"), ("/", "ROOT")],
            "/",
            Some("ROOT"),
            "",
            &[],
        ),
        (
            &[("/...", "ALL"), ("/", "ROOT")],
            "/x",
            Some("ALL"),
            "/x",
            &[],
        ),
        // precedence: exact over wildcard, longer literal prefix first
        (
            &[("/foo/...", "W"), ("/foo", "E")],
            "/foo",
            Some("E"),
            "",
            &[],
        ),
        (
            &[("/foo/...", "W"), ("/foo", "E")],
            "/foo/x",
            Some("W"),
            "/x",
            &[],
        ),
        (
            &[("/a/...", "A"), ("/a/b/...", "AB")],
            "/a/b/c",
            Some("AB"),
            "/c",
            &[],
        ),
        (
            &[("/a/b/...", "AB"), ("/a/...", "A")],
            "/a/bc",
            Some("A"),
            "/bc",
            &[],
        ),
        // precedence: leftmost literal beats leftmost param
        (
            &[("/:y/b/c", "Y"), ("/a/:x/c", "X")],
            "/a/b/c",
            Some("X"),
            "",
            &[("x", "b")],
        ),
        // literal > param > wildcard
        (
            &[("/...", "ALL"), ("/:p", "P"), ("/lit", "L")],
            "/lit",
            Some("L"),
            "",
            &[],
        ),
        (
            &[("/...", "ALL"), ("/:p", "P"), ("/lit", "L")],
            "/other",
            Some("P"),
            "",
            &[("p", "other")],
        ),
        (
            &[("/...", "ALL"), ("/:p", "P")],
            "/other/x",
            Some("ALL"),
            "/other/x",
            &[],
        ),
        // `:name` and `:name.json` (more dots win)
        (
            &[("/x/:name", "N"), ("/x/:name.json", "J")],
            "/x/report.json",
            Some("J"),
            "",
            &[("name", "report")],
        ),
        (
            &[("/x/:name", "N"), ("/x/:name.json", "J")],
            "/x/report",
            Some("N"),
            "",
            &[("name", "report")],
        ),
        (&[("/x/:name.json", "J")], "/x/report.txt", None, "", &[]),
        // params with a wildcard
        (
            &[("/1/:two/...", "T")],
            "/1/2/3/",
            Some("T"),
            "/3/",
            &[("two", "2")],
        ),
        // percent-encoding is kept and not decoded
        (&[("/caf%C3%A9", "P")], "/caf%C3%A9", Some("P"), "", &[]),
        (&[("/caf%C3%A9", "P")], "/café", None, "", &[]),
        (&[("/a b", "S")], "/a%20b", None, "", &[]),
        (
            &[("/user/:name", "U")],
            "/user/j%C3%B6rg",
            Some("U"),
            "",
            &[("name", "j%C3%B6rg")],
        ),
        (
            &[("/files/...", "F")],
            "/files/a%2Fb",
            Some("F"),
            "/a%2Fb",
            &[],
        ),
        // case-sensitive
        (&[("/Foo", "F")], "/foo", None, "", &[]),
        (&[("/Foo", "F")], "/Foo", Some("F"), "", &[]),
        // identical routes: the last one wins
        (&[("/foo", "A"), ("/foo", "B")], "/foo", Some("B"), "", &[]),
        (&[("/foo", "A"), ("foo/", "B")], "/foo", Some("B"), "", &[]),
        // reserved routes are left out
        (
            &[("/.well-known/spin/x", "R"), ("/...", "ALL")],
            "/.well-known/spin/x",
            Some("ALL"),
            "/.well-known/spin/x",
            &[],
        ),
        // a route without a leading slash is normalised
        (&[("foo/...", "W")], "/foo/x", Some("W"), "/x", &[]),
        (&[("foo", "A")], "/foo", Some("A"), "", &[]),
        // no routes at all
        (&[], "/", None, "", &[]),
    ];

    #[test]
    fn route_table_cases() {
        for (i, (routes, path, winner, path_info, captures)) in CASES.iter().enumerate() {
            let table = table(routes);
            let m = table.route(path);
            let ctx = format!("case {i}: routes {routes:?}, path {path:?}");
            assert_eq!(m.as_ref().map(|m| *m.target()), *winner, "{ctx}: winner");
            if let Some(m) = m {
                assert_eq!(m.path_info(), *path_info, "{ctx}: path_info");
                assert_eq!(m.named().collect::<Vec<_>>(), *captures, "{ctx}: captures");
            }
        }
    }

    fn one(route: &str, path: &str) -> (String, String, String, String) {
        let table = RouteTable::build([(route.to_string(), ())]).unwrap();
        let m = table
            .route(path)
            .unwrap_or_else(|| panic!("{route} should match {path}"));
        (
            m.raw_route().to_owned(),
            m.matched_route().to_owned(),
            m.component_route().to_owned(),
            m.path_info().into_owned(),
        )
    }

    #[test]
    fn header_values() {
        // (raw, matched, component, path_info)
        assert_eq!(
            one("/foo/...", "/foo/bar"),
            s4("/foo/...", "/foo/...", "/foo", "/bar")
        );
        assert_eq!(one("/", "/"), s4("/", "", "/", ""));
        assert_eq!(one("/...", "/"), s4("/...", "/...", "", "/"));
        assert_eq!(one("/...", "/a/b"), s4("/...", "/...", "", "/a/b"));
        assert_eq!(one("/foo", "/foo/"), s4("/foo", "/foo", "/foo", ""));
        assert_eq!(one("/foo/", "/foo"), s4("/foo/", "/foo", "/foo/", ""));
        assert_eq!(one("foo/...", "/foo"), s4("foo/...", "/foo/...", "foo", ""));
        assert_eq!(
            one("/foo/*", "/foo/x"),
            s4("/foo/*", "/foo/*", "/foo/*", "/x")
        );
        assert_eq!(
            one("/foo/.../", "/foo/x/"),
            s4("/foo/.../", "/foo/...", "/foo/.../", "/x/")
        );
        assert_eq!(one("/:id", "/7"), s4("/:id", "/:id", "/:id", ""));
    }

    fn s4(a: &str, b: &str, c: &str, d: &str) -> (String, String, String, String) {
        (a.into(), b.into(), c.into(), d.into())
    }

    #[test]
    fn path_info_borrows_the_path() {
        let table = RouteTable::build([("/foo/...".to_string(), ())]).unwrap();
        for path in ["/foo", "/foo/", "/foo/bar", "/foo/bar/", "//foo//bar//"] {
            assert!(matches!(
                table.route(path).unwrap().path_info(),
                Cow::Borrowed(_)
            ));
        }
        assert_eq!(table.route("//foo//bar//").unwrap().path_info(), "//bar/");
    }

    #[test]
    fn header_names() {
        assert_eq!(header_name_for("id"), "spin-path-match-id");
        assert_eq!(
            header_name_for("path_segment"),
            "spin-path-match-path-segment"
        );
        assert_eq!(header_name_for("userId"), "spin-path-match-userid");
        assert!(header_name_for("x").starts_with(PATH_MATCH_HEADER_PREFIX));
    }

    #[test]
    fn repeated_param_name_keeps_last_value() {
        let table = table(&[("/:a/:a", "T")]);
        let m = table.route("/x/y").unwrap();
        assert_eq!(m.named().collect::<Vec<_>>(), [("a", "y")]);
    }

    #[test]
    fn duplicates_are_reported_last_wins() {
        let table = table(&[
            ("/", "root-1"),
            ("/foo", "foo-1"),
            ("/foo", "foo-2"),
            ("/foo/", "foo-3"),
            ("/", "root-2"),
            ("/whee/...", "whee"),
        ]);
        assert_eq!(table.len(), 3);
        assert_eq!(
            table.duplicates(),
            [
                Duplicate {
                    route: "/foo".into(),
                    shadowed: "foo-1",
                    winner: "foo-3"
                },
                Duplicate {
                    route: "/foo".into(),
                    shadowed: "foo-2",
                    winner: "foo-3"
                },
                Duplicate {
                    route: "/".into(),
                    shadowed: "root-1",
                    winner: "root-2"
                },
            ]
        );
        assert_eq!(*table.route("/foo").unwrap().target(), "foo-3");
        assert_eq!(table.route("/foo").unwrap().raw_route(), "/foo/");
        assert_eq!(*table.route("/").unwrap().target(), "root-2");
        assert!(table.warnings().is_empty());
    }

    #[test]
    fn no_duplicates_for_distinct_routes() {
        let table = table(&[("/", "a"), ("/foo", "b"), ("/bar", "c"), ("/whee/...", "d")]);
        assert_eq!(table.len(), 4);
        assert!(table.duplicates().is_empty());
    }

    #[test]
    fn reserved_routes_become_warnings() {
        let table = table(&[
            ("/.well-known/spin/x", "r1"),
            ("/.well-known/spin/...", "r2"),
            ("/.well-known/spin", "ok1"),
            ("/.well-known/spindle/...", "ok2"),
            ("/ok", "ok3"),
        ]);
        assert_eq!(table.len(), 3);
        assert_eq!(table.warnings().len(), 2);
        assert!(table.warnings()[0].contains("'/.well-known/spin/x'"));
        assert!(table.warnings()[1].contains("'/.well-known/spin/...'"));
        assert!(table.route("/.well-known/spin/x").is_none());
        assert_eq!(*table.route("/.well-known/spin").unwrap().target(), "ok1");
        assert_eq!(
            *table.route("/.well-known/spindle/a").unwrap().target(),
            "ok2"
        );
    }

    #[test]
    fn malformed_routes_are_errors_naming_the_route() {
        for route in [
            "/a/*/b",
            "/a/.../b",
            "/.../b",
            "/*/...",
            "/files/*.json",
            "/a/...//",
        ] {
            let err = RouteTable::build([(route.to_string(), ())]).unwrap_err();
            assert_eq!(
                err,
                RouteError::WildcardNotLast {
                    route: route.into()
                },
                "{route}"
            );
            assert!(err.to_string().contains(&format!("'{route}'")));
        }
        for route in ["/:", "/a/:/b", "/*rest"] {
            let err = RouteTable::build([(route.to_string(), ())]).unwrap_err();
            assert!(matches!(err, RouteError::Invalid { .. }), "{route}: {err}");
            assert!(err.to_string().contains(&format!("'{route}'")), "{err}");
        }
    }

    #[test]
    fn private_entries_are_skipped() {
        let table = RouteTable::build_with_private([(Some("/a"), 1), (None, 2), (Some("/..."), 3)])
            .unwrap();
        assert_eq!(table.len(), 2);
        assert_eq!(*table.route("/a").unwrap().target(), 1);
        assert_eq!(*table.route("/b").unwrap().target(), 3);

        let table = RouteTable::build_with_private([
            (RouteConfig::Private, "p"),
            (RouteConfig::from("/..."), "w"),
        ])
        .unwrap();
        assert_eq!(table.len(), 1);
        assert!(table.duplicates().is_empty());
    }

    #[test]
    fn empty_route_is_the_root() {
        let table = table(&[("", "R")]);
        let m = table.route("/").unwrap();
        assert_eq!(
            (*m.target(), m.matched_route(), m.raw_route()),
            ("R", "", "")
        );
        assert!(table.route("/x").is_none());
    }

    /// routefinder quirk kept for Spin compatibility: among routes of the
    /// same shape that match one path, the first one given wins.
    #[test]
    fn same_shape_first_wins() {
        let table = table(&[("/:a", "A"), ("/:b", "B")]);
        assert_eq!(*table.route("/x").unwrap().target(), "A");
        let table = table_rev();
        assert_eq!(*table.route("/foo/x").unwrap().target(), "STAR");
    }

    fn table_rev() -> RouteTable<&'static str> {
        table(&[("/foo/*", "STAR"), ("/foo/...", "DOTS")])
    }

    /// A wildcard glued to a literal by a dot (`/a.*`) is a wildcard for
    /// routefinder, and Spin's path_info is then "/" + the rest.
    #[test]
    fn dotted_wildcard() {
        let table = table(&[("/a.*", "T")]);
        let m = table.route("/a.xyz").unwrap();
        assert_eq!(m.path_info(), "/xyz");
        assert!(matches!(m.path_info(), Cow::Owned(_)));
    }
}
