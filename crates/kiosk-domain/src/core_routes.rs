//! Who may call the core through the passthrough, and which calls pass.
//!
//! `core_allowed_routes` lists `METHOD /pattern` entries separated by
//! commas; `*` in a pattern matches exactly one path segment, and a
//! trailing `?` (`GET /customers/*?`) lets requests for that entry carry a
//! query string (without it, a request with a query is refused).
//!
//! Before matching, the path must be canonical, because a core or a
//! gateway in front of it may decode or normalise what the allow-list took
//! as one harmless segment (`..%2F_sim%2Fstats`). A path is canonical when
//! every segment is non-empty, is not `.` or `..`, and consists only of
//! RFC 3986 path characters other than `;` (letters, digits, `-._~!$&'()*+,=:@`)
//! and `%XX` escapes other than `%2e` (`.`), `%2f` (`/`), `%5c` (`\`),
//! `%25` (`%`, which would hide the others from a core that decodes twice)
//! and `%00`, in any case.

use crate::auth::Caller;
use crate::error::DomainError;

/// One entry of `core_allowed_routes`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CoreRoute {
    method: String,
    /// Literal segments, or `*` for any one segment.
    segments: Vec<String>,
    /// Whether a query string may follow.
    query: bool,
}

impl CoreRoute {
    fn matches(&self, method: &str, segments: &[&str]) -> bool {
        self.method.eq_ignore_ascii_case(method)
            && self.segments.len() == segments.len()
            && self
                .segments
                .iter()
                .zip(segments)
                .all(|(pattern, segment)| pattern == "*" || pattern == segment)
    }

    fn display(&self) -> String {
        format!(
            "{} /{}{}",
            self.method,
            self.segments.join("/"),
            if self.query { "?" } else { "" }
        )
    }
}

/// `core_allowed_routes`, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CoreRoutes {
    routes: Vec<CoreRoute>,
}

/// A malformed `core_allowed_routes` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("core_allowed_routes entry {entry:?}: {reason}")]
pub struct CoreRoutesError {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub reason: String,
}

impl CoreRoutes {
    /// Parses `METHOD /pattern[?], …`. Empty entries are skipped; an entry
    /// without a method and a path starting with `/`, or whose pattern is
    /// not canonical, is an error naming it.
    pub fn parse(spec: &str) -> Result<CoreRoutes, CoreRoutesError> {
        let mut routes = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let fail = |reason: &str| CoreRoutesError {
                entry: entry.to_owned(),
                reason: reason.to_owned(),
            };
            let (method, pattern) = entry
                .split_once(char::is_whitespace)
                .ok_or_else(|| fail("expected `METHOD /path`"))?;
            let pattern = pattern.trim();
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(fail("the method must be letters only, e.g. GET"));
            }
            let (pattern, query) = match pattern.strip_suffix('?') {
                Some(p) => (p, true),
                None => (pattern, false),
            };
            let segments = canonical_segments(pattern).map_err(|e| match e {
                DomainError::InvalidCorePath(why) => fail(&why),
                other => fail(&other.to_string()),
            })?;
            routes.push(CoreRoute {
                method: method.to_ascii_uppercase(),
                segments: segments.into_iter().map(str::to_owned).collect(),
                query,
            });
        }
        Ok(CoreRoutes { routes })
    }

    /// Whether `method path?query` may go to the core. `path` is the path
    /// below the passthrough's route (`/customers/c-1`); `query` is the raw
    /// query string without `?` (empty for none).
    ///
    /// A path that is not canonical is `invalid_core_path` (400) whatever
    /// the list says; a route that is not listed, or a query on an entry
    /// without `?`, is `core_route_not_allowed` (403).
    pub fn check(&self, method: &str, path: &str, query: &str) -> Result<(), DomainError> {
        let segments = canonical_segments(path)?;
        let mut matching = self
            .routes
            .iter()
            .filter(|r| r.matches(method, &segments))
            .peekable();
        let Some(first) = matching.peek().map(|r| r.display()) else {
            return Err(DomainError::CoreRouteNotAllowed(format!(
                "{method} {path} is not an allowed core route"
            )));
        };
        if !query.is_empty() && !matching.any(|r| r.query) {
            return Err(DomainError::CoreRouteNotAllowed(format!(
                "{method} {path} is allowed ({first}), but queries are not allowed for it; \
                 send it without a query string"
            )));
        }
        Ok(())
    }
}

/// The segments of a canonical path (see the module docs); `""` has none.
/// Anything else is `invalid_core_path`, naming the first offending segment.
pub fn canonical_segments(path: &str) -> Result<Vec<&str>, DomainError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(DomainError::InvalidCorePath(
            "the path must start with `/`".into(),
        ));
    };
    rest.split('/')
        .enumerate()
        .map(|(i, segment)| {
            segment_problem(segment)
                .map(|why| {
                    Err(DomainError::InvalidCorePath(format!(
                        "segment {} ({segment:?}) {why}",
                        i + 1
                    )))
                })
                .unwrap_or(Ok(segment))
        })
        .collect()
}

/// Why `segment` is not canonical, if it is not.
fn segment_problem(segment: &str) -> Option<&'static str> {
    if segment.is_empty() {
        return Some("is empty (`//` or a trailing `/`)");
    }
    if segment == "." || segment == ".." {
        return Some("is a dot segment");
    }
    let bytes = segment.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let escape = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
                let Some(hex) = escape else {
                    return Some("has a `%` that is not followed by two hex digits");
                };
                let value = hex.iter().fold(0u8, |acc, &h| {
                    // Two hex digits: at most 0xff, no overflow.
                    acc * 16 + char::from(h).to_digit(16).unwrap_or(0) as u8
                });
                if matches!(value, b'.' | b'/' | b'\\' | b'%' | 0) {
                    return Some("encodes `.`, `/`, `\\`, `%` or NUL (%2e, %2f, %5c, %25, %00)");
                }
                i += 3;
            }
            b';' => return Some("contains `;`"),
            b'\\' => return Some("contains `\\`"),
            b if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&b) => i += 1,
            _ => return Some("contains a character that is not allowed in a URL path"),
        }
    }
    None
}

/// The caller's identity as sent to the core (`x-kiosk-client`): the id of
/// its API key, never the key. Only kiosks and counters may call the core
/// (`forbidden` for phones). Bytes outside visible ASCII, and `%`, are
/// %-escaped so the id is always a valid header value.
pub fn core_client(caller: &Caller) -> Result<String, DomainError> {
    let id = match caller {
        Caller::Kiosk { id } | Caller::Counter { id } => id,
        Caller::Mobile { .. } => {
            return Err(DomainError::Forbidden(
                "the core passthrough is for kiosks and counters".into(),
            ));
        }
    };
    Ok(id
        .bytes()
        .map(|b| {
            if b.is_ascii_graphic() && b != b'%' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = "GET /customers/*?, GET /accounts/*/balance, POST /transfers";

    fn code(r: Result<(), DomainError>) -> &'static str {
        match r {
            Ok(()) => "ok",
            Err(e) => e.code(),
        }
    }

    #[test]
    fn routes_match_method_and_whole_segments() {
        let routes = CoreRoutes::parse(DEFAULT).unwrap();
        let check = |m: &str, p: &str| code(routes.check(m, p, ""));
        assert_eq!(check("GET", "/customers/c-1"), "ok");
        assert_eq!(check("get", "/customers/c-1"), "ok");
        assert_eq!(check("GET", "/accounts/123/balance"), "ok");
        assert_eq!(check("POST", "/transfers"), "ok");
        assert_eq!(check("DELETE", "/transfers"), "core_route_not_allowed");
        assert_eq!(check("GET", "/customers"), "core_route_not_allowed");
        assert_eq!(
            check("GET", "/customers/c-1/secrets"),
            "core_route_not_allowed"
        );
        assert_eq!(
            check("GET", "/accounts/123/history"),
            "core_route_not_allowed"
        );
        assert_eq!(check("GET", ""), "core_route_not_allowed");
        let none = CoreRoutes::parse("").unwrap();
        assert_eq!(
            code(none.check("GET", "/customers/c-1", "")),
            "core_route_not_allowed"
        );
    }

    #[test]
    fn queries_pass_only_for_entries_with_a_question_mark() {
        let routes = CoreRoutes::parse(DEFAULT).unwrap();
        assert_eq!(
            code(routes.check("GET", "/customers/c-1", "fields=name")),
            "ok"
        );
        let e = routes
            .check("GET", "/accounts/1/balance", "x=1")
            .unwrap_err();
        assert_eq!((e.code(), e.status()), ("core_route_not_allowed", 403));
        assert!(e.to_string().contains("queries are not allowed"), "{e}");
        assert_eq!(
            code(routes.check("POST", "/transfers", "a=b")),
            "core_route_not_allowed"
        );
        // Two entries for one route: the one with `?` lets the query through.
        let both = CoreRoutes::parse("GET /x/*, GET /x/*?").unwrap();
        assert_eq!(code(both.check("GET", "/x/1", "q")), "ok");
    }

    #[test]
    fn paths_that_a_core_could_read_differently_are_refused_before_matching() {
        let routes = CoreRoutes::parse("GET /customers/*, GET /*/*").unwrap();
        for path in [
            "/customers/..",
            "/customers/.",
            "/customers/%2e%2e",
            "/customers/%2E%2e",
            "/customers/..%2F_sim%2Fstats",
            "/customers/..%2f_sim",
            "/customers/..;",
            "/customers/a;b",
            "/customers/..%5C..%5Cadmin",
            "/customers/a%5cb",
            "/customers/a\\b",
            "/customers/%252e%252e",
            "/customers/a%00",
            "/customers/a%zz",
            "/customers/a%2",
            "//customers/x",
            "/customers//x",
            "/customers/x/",
            "/",
            "customers/x",
            "/customers/a b",
            "/customers/a\"b",
            "/customers/caf\u{e9}",
        ] {
            let e = routes.check("GET", path, "").unwrap_err();
            assert_eq!((e.code(), e.status()), ("invalid_core_path", 400), "{path}");
        }
        // Ordinary escapes and characters pass.
        for path in [
            "/customers/j%C3%B6rg",
            "/customers/a.b",
            "/customers/...",
            "/customers/a@b:c",
        ] {
            assert_eq!(code(routes.check("GET", path, "")), "ok", "{path}");
        }
    }

    #[test]
    fn malformed_lists_name_the_entry() {
        for (spec, needle) in [
            ("GET", "expected `METHOD /path`"),
            ("GET customers/*", "must start with `/`"),
            ("G3T /x", "letters only"),
            ("GET /a/../b", "dot segment"),
            ("GET /a//b", "empty"),
        ] {
            let e = CoreRoutes::parse(spec).unwrap_err();
            assert!(e.to_string().contains(needle), "{spec}: {e}");
        }
        assert_eq!(
            CoreRoutes::parse(" GET /a ,, POST /b? ,")
                .unwrap()
                .routes
                .len(),
            2
        );
    }

    #[test]
    fn only_kiosks_and_counters_call_the_core_under_their_key_id() {
        let kiosk = Caller::Kiosk {
            id: "gangnam-kiosk-1".into(),
        };
        assert_eq!(core_client(&kiosk).unwrap(), "gangnam-kiosk-1");
        let counter = Caller::Counter {
            id: "창구 1%".into(),
        };
        assert_eq!(core_client(&counter).unwrap(), "%EC%B0%BD%EA%B5%AC%201%25");
        let phone = Caller::Mobile {
            customer_ref: "c".into(),
        };
        assert_eq!(core_client(&phone).unwrap_err().code(), "forbidden");
    }

    /// Decodes `%XX` escapes once; `None` if an escape is malformed.
    fn decode_once(s: &str) -> Option<String> {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        Some(String::from_utf8_lossy(&out).into_owned())
    }

    proptest::proptest! {
        #[test]
        fn no_input_panics_and_every_allowed_path_is_canonical(
            path in "[/.%25eEfF5cC0;\\\\a-]{0,24}",
            method in "(GET|POST|get)",
            query in "(|q=1)",
        ) {
            let routes = CoreRoutes::parse("GET /*?, GET /*/*?, POST /*/*/*, GET /a/*/*").unwrap();
            if routes.check(&method, &path, &query).is_ok() {
                // However often a core decodes it, no segment becomes a
                // dot segment, an empty one, or splits in two.
                for segment in path.strip_prefix('/').unwrap().split('/') {
                    let mut decoded = segment.to_owned();
                    for _ in 0..3 {
                        proptest::prop_assert!(!decoded.is_empty());
                        proptest::prop_assert!(decoded != "." && decoded != "..", "{}", path);
                        proptest::prop_assert!(!decoded.contains(['/', '\\', ';']), "{}", path);
                        match decode_once(&decoded) {
                            Some(next) => decoded = next,
                            None => break,
                        }
                    }
                }
            }
        }

        #[test]
        fn any_string_is_refused_or_matched_without_panicking(
            spec in "\\PC{0,40}",
            path in "\\PC{0,40}",
            query in "\\PC{0,8}",
        ) {
            if let Ok(routes) = CoreRoutes::parse(&spec) {
                let _ = routes.check("GET", &path, &query);
            }
            let _ = canonical_segments(&path);
        }
    }
}
