use crate::{AllowedHostError, AllowedHosts};

fn hosts(entries: &[&str]) -> AllowedHosts {
    let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
    AllowedHosts::parse(&entries).unwrap_or_else(|e| panic!("{entries:?} should parse: {e}"))
}

fn parse_err(entry: &str) -> AllowedHostError {
    match AllowedHosts::parse(&[entry.to_string()]) {
        Ok(h) => panic!("{entry:?} should be rejected, parsed as {h:?}"),
        Err(e) => e,
    }
}

/// (entries, URL, allowed?)
const CASES: &[(&[&str], &str, bool)] = &[
    // Exact scheme, host and port.
    (
        &["https://api.example.com"],
        "https://api.example.com/v1?x=1",
        true,
    ),
    (
        &["https://api.example.com"],
        "https://other.example.com/",
        false,
    ),
    (
        &["http://example.com:8383"],
        "http://example.com:8383/foo/bar",
        true,
    ),
    (&["http://example.com:8383"], "http://example.com/", false),
    (
        &["http://example.com:8383"],
        "http://example.com:8384/",
        false,
    ),
    // Default ports, on either side.
    (&["https://example.com"], "https://example.com:443/", true),
    (&["https://example.com:443"], "https://example.com/", true),
    (&["https://example.com"], "https://example.com:8443/", false),
    (&["http://example.com/"], "http://example.com", true),
    (&["redis://cache.local"], "redis://cache.local", true),
    (&["redis://cache.local"], "redis://cache.local:6380", false),
    (
        &["postgres://db.local"],
        "postgres://db.local:5432/app",
        true,
    ),
    (
        &["mysql://db.local"],
        "mysql://user:pass@db.local/app",
        true,
    ),
    (&["mqtt://broker.local"], "mqtt://broker.local:1883", true),
    // Scheme mismatch, wildcard scheme, wildcard port.
    (&["https://example.com"], "http://example.com:443/", false),
    (&["*://example.com:443"], "https://example.com/", true),
    (&["*://example.com:*"], "http://example.com:12345/", true),
    (&["*://example.com:*"], "tcp://example.com:5000", true),
    (&["*://example.com:*"], "https://example.org/", false),
    (
        &["https://example.com:*"],
        "https://example.com:9999/",
        true,
    ),
    // Subdomain wildcards: subdomains only.
    (&["https://*.example.com"], "https://a.example.com/", true),
    (&["https://*.example.com"], "https://a.b.example.com/", true),
    (&["https://*.example.com"], "https://example.com/", false),
    (&["https://*.example.com"], "https://myexample.com/", false),
    (
        &["http://*.example2.com:8383"],
        "http://a.example2.com/",
        false,
    ),
    // Port ranges, end excluded.
    (
        &["http://localhost:3000..3010"],
        "http://localhost:3000/",
        true,
    ),
    (
        &["http://localhost:3000..3010"],
        "http://localhost:3009/",
        true,
    ),
    (
        &["http://localhost:3000..3010"],
        "http://localhost:3010/",
        false,
    ),
    (
        &["http://localhost:3000..3010"],
        "http://localhost:2999/",
        false,
    ),
    // CIDR ranges match IP URLs, never names.
    (&["http://10.0.0.0/8"], "http://10.1.2.3/", true),
    (&["http://10.0.0.0/8"], "http://11.0.0.1/", false),
    (&["*://127.0.0.1/24:63551"], "tcp://127.0.0.200:63551", true),
    (&["*://127.0.0.1/32:*"], "http://localhost:80/", false),
    (&["*://10.0.0.0/8:*"], "http://ten.example.com/", false),
    (&["*://ff00::/8:80"], "http://[ff02::1]/", true),
    (&["*://[2001:db8::/32]:*"], "https://[2001:db8::1]/", true),
    (&["http://2001:db8::/32"], "http://[2001:db9::1]/", false),
    (&["redis://10.0.0.0/8"], "redis://10.9.9.9", true),
    // IP literal entries.
    (&["http://192.168.1.1"], "http://192.168.1.1/", true),
    (
        &["http://192.168.1.1:3002"],
        "http://192.168.1.1:3002/",
        true,
    ),
    (&["http://192.168.1.1"], "http://192.168.1.2/", false),
    (&["http://[::1]:8001"], "http://[::1]:8001/", true),
    (&["http://127.0.0.1"], "http://localhost/", false),
    // Case-insensitive scheme and host.
    (
        &["HTTPS://API.Example.COM"],
        "https://api.example.com/",
        true,
    ),
    (&["https://*.Example.com"], "https://A.EXAMPLE.COM/", true),
    (&["REDIS://Cache.Local"], "redis://CACHE.local", true),
    (&["https://bücher.example"], "https://BÜCHER.example/", true),
    (
        &["http://my_service.internal:8080"],
        "http://my_service.internal:8080/",
        true,
    ),
    // Allow everything.
    (&["*://*:*"], "https://anything.example/", true),
    (&["*://*:*"], "tcp://10.0.0.1:1", true),
    (&["*://*:443"], "https://anything.example/", true),
    (&["*://*:443"], "http://anything.example/", false),
    // Self requests: host self.alt, or no host at all.
    (&["http://self"], "http://self.alt/api", true),
    (&["https://self.alt"], "http://self.alt:1234/", true),
    (&["*://*:*"], "http://self.alt/", true),
    (&["redis://self"], "http://self.alt/", false),
    (&["https://*.example.com"], "http://self.alt/", false),
    (&["http://self"], "http://self.example.com/", false),
    (&["http://self"], "file:///etc/passwd", true),
    (&["https://example.com"], "file:///etc/passwd", false),
    // Several entries: any may match.
    (
        &["*://spin.fermyon.dev:443", "http://example.com:8383"],
        "https://spin.fermyon.dev/",
        true,
    ),
    (
        &["*://spin.fermyon.dev:443", "http://example.com:8383"],
        "http://google.com/",
        false,
    ),
    // No entries.
    (&[], "https://example.com/", false),
];

#[test]
fn allows_table() {
    let mut failures = Vec::new();
    for &(entries, url, expected) in CASES {
        let allowed = hosts(entries);
        let url = url::Url::parse(url).unwrap();
        if allowed.allows(&url) != expected {
            failures.push(format!("{entries:?} {url}: expected {expected}"));
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

#[test]
fn allows_parts_matches_uri_pieces() {
    let allowed = hosts(&[
        "https://api.example.com",
        "*://[::1]:*",
        "http://10.0.0.0/8",
    ]);
    assert!(allowed.allows_parts("https", "api.example.com", None));
    assert!(allowed.allows_parts("HTTPS", "API.example.com", Some(443)));
    assert!(!allowed.allows_parts("https", "api.example.com", Some(8443)));
    assert!(!allowed.allows_parts("http", "api.example.com", None));
    assert!(allowed.allows_parts("http", "[::1]", Some(8080)));
    assert!(allowed.allows_parts("http", "::1", Some(8080)));
    assert!(allowed.allows_parts("http", "10.20.30.40", None));
    assert!(!allowed.allows_parts("http", "10.20.30.40", Some(8080)));
    // A scheme without a default port and no port: only `:*` entries match.
    assert!(!hosts(&["tcp://host:80"]).allows_parts("tcp", "host", None));
    assert!(hosts(&["tcp://host:*"]).allows_parts("tcp", "host", None));
}

#[test]
fn self_requests() {
    for (entries, expected) in [
        (&["http://self"][..], true),
        (&["https://self"][..], true),
        (&["http://self.alt"][..], true),
        (&["*://self:*"][..], true),
        (&["*://*:*"][..], true),
        (&["http://*:*"][..], true),
        (&["redis://self"][..], false),
        (&["https://example.com"][..], false),
        (&["http://*.example.com"][..], false),
        (&[][..], false),
    ] {
        let allowed = hosts(entries);
        assert_eq!(allowed.allows_self(), expected, "{entries:?}");
        assert_eq!(
            allowed.allows_parts("http", "", None),
            expected,
            "{entries:?}"
        );
        assert_eq!(
            allowed.allows_parts("https", "self.alt", Some(1)),
            expected,
            "{entries:?}"
        );
    }
    // The port of a self entry is not checked.
    assert!(hosts(&["http://self:9999"]).allows_parts("http", "self.alt", Some(80)));
}

#[test]
fn none_and_empty() {
    let none = AllowedHosts::none();
    assert!(none.is_empty());
    assert!(!none.allows_self());
    assert!(!none.allows(&"https://example.com".parse().unwrap()));
    assert!(hosts(&[]).is_empty());
    assert!(!hosts(&["https://example.com"]).is_empty());
}

#[test]
fn rejected_entries() {
    let cases: &[(&str, &str)] = &[
        (
            "http://a.com/x",
            r#"allowed_outbound_hosts entry "http://a.com/x" has a path; entries take the form <scheme>://<host>[:<port>] with no path"#,
        ),
        (
            "http://a.com:8080/x/y",
            r#"allowed_outbound_hosts entry "http://a.com:8080/x/y" has a path; entries take the form <scheme>://<host>[:<port>] with no path"#,
        ),
        (
            "https://*.a.com/x",
            r#"allowed_outbound_hosts entry "https://*.a.com/x" has a path; entries take the form <scheme>://<host>[:<port>] with no path"#,
        ),
        (
            "https://a.com?x=1",
            r#"allowed_outbound_hosts entry "https://a.com?x=1" has a query or fragment; entries take the form <scheme>://<host>[:<port>]"#,
        ),
        (
            "https://user@a.com",
            r#"allowed_outbound_hosts entry "https://user@a.com" has user information ("...@"); entries take the form <scheme>://<host>[:<port>]"#,
        ),
        (
            "https://{a.com,b.com}",
            r#"allowed_outbound_hosts entry "https://{a.com,b.com}" contains a list; lists are not supported, write one entry per scheme, host and port"#,
        ),
        (
            "https://ex*.com",
            r#"allowed_outbound_hosts entry "https://ex*.com" has host "ex*.com" with a misplaced wildcard; "*" may only be the whole host or a leading "*." (as in "*.example.com")"#,
        ),
        (
            "https://*foo.com",
            r#"allowed_outbound_hosts entry "https://*foo.com" has host "*foo.com" with a misplaced wildcard; "*" may only be the whole host or a leading "*." (as in "*.example.com")"#,
        ),
        (
            "https://*.*.com",
            r#"allowed_outbound_hosts entry "https://*.*.com" has host "*.*.com" with a misplaced wildcard; "*" may only be the whole host or a leading "*." (as in "*.example.com")"#,
        ),
        (
            "example.com",
            r#"allowed_outbound_hosts entry "example.com" has no scheme; entries take the form <scheme>://<host>[:<port>], e.g. "https://example.com" or "*://example.com:*" ("*://*:*" allows all outbound traffic)"#,
        ),
        (
            "example.com:80",
            r#"allowed_outbound_hosts entry "example.com:80" has no scheme; entries take the form <scheme>://<host>[:<port>], e.g. "https://example.com" or "*://example.com:*" ("*://*:*" allows all outbound traffic)"#,
        ),
        (
            "*",
            r#"allowed_outbound_hosts entry "*" has no scheme; entries take the form <scheme>://<host>[:<port>], e.g. "https://example.com" or "*://example.com:*" ("*://*:*" allows all outbound traffic)"#,
        ),
        (
            "h2c+tls://a.com:1",
            r#"allowed_outbound_hosts entry "h2c+tls://a.com:1" has an invalid scheme "h2c+tls"; a scheme must be letters only, or "*""#,
        ),
        (
            "foo://host",
            r#"allowed_outbound_hosts entry "foo://host" has no port and scheme "foo" has no default port; add a port, e.g. ":8080", ":1000..2000" or ":*""#,
        ),
        (
            "*://host",
            r#"allowed_outbound_hosts entry "*://host" has no port and scheme "*" has no default port; add a port, e.g. ":8080", ":1000..2000" or ":*""#,
        ),
        (
            "insecure:allow-all",
            r#"allowed_outbound_hosts entry "insecure:allow-all" is not allowed; use "*://*:*" instead if you really want to allow all outbound traffic"#,
        ),
        (
            "http://a.com:http",
            r#"allowed_outbound_hosts entry "http://a.com:http" has an invalid port "http"; a port is a number from 0 to 65535, "*", or a range "start..end""#,
        ),
        (
            "http://a.com:65536",
            r#"allowed_outbound_hosts entry "http://a.com:65536" has an invalid port "65536"; a port is a number from 0 to 65535, "*", or a range "start..end""#,
        ),
        (
            "http://a.com:80..x",
            r#"allowed_outbound_hosts entry "http://a.com:80..x" has an invalid port range "80..x"; a range is "start..end" with port numbers and start < end (end excluded)"#,
        ),
        (
            "http://a.com:9000..8000",
            r#"allowed_outbound_hosts entry "http://a.com:9000..8000" has an invalid port range "9000..8000"; a range is "start..end" with port numbers and start < end (end excluded)"#,
        ),
        (
            "",
            r#"allowed_outbound_hosts entry "" is empty; entries take the form <scheme>://<host>[:<port>]"#,
        ),
        (
            "   ",
            r#"allowed_outbound_hosts entry "   " is empty; entries take the form <scheme>://<host>[:<port>]"#,
        ),
        (
            "http://",
            r#"allowed_outbound_hosts entry "http://" has an invalid host ""; a host is "*", "*.<domain>", a name, an IP address (IPv6 in brackets, as in "[::1]"), a CIDR range, or "self""#,
        ),
        (
            "http://10.0.0.0/33",
            r#"allowed_outbound_hosts entry "http://10.0.0.0/33" has an invalid CIDR range "10.0.0.0/33"; the prefix length must be at most 32 for IPv4 and 128 for IPv6"#,
        ),
        (
            "https://{{ host }}",
            r#"allowed_outbound_hosts entry "https://{{ host }}" contains a variable template ("{{ ... }}") that was not rendered"#,
        ),
    ];
    let mut failures = Vec::new();
    for &(entry, message) in cases {
        let err = parse_err(entry);
        if err.to_string() != message {
            failures.push(format!("{entry:?}:\n  got:  {err}\n  want: {message}"));
        }
        if err.entry() != entry {
            failures.push(format!("{entry:?}: error names {:?}", err.entry()));
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

#[test]
fn rejected_entry_variants() {
    assert_eq!(
        parse_err("http://a.com/x"),
        AllowedHostError::HasPath {
            entry: "http://a.com/x".into()
        }
    );
    assert_eq!(
        parse_err("foo://host"),
        AllowedHostError::MissingPort {
            entry: "foo://host".into(),
            scheme: "foo".into()
        }
    );
    assert_eq!(
        parse_err("http://a.com:1..1"),
        AllowedHostError::InvalidPortRange {
            entry: "http://a.com:1..1".into(),
            range: "1..1".into()
        }
    );
}

#[test]
fn one_bad_entry_rejects_the_list() {
    let entries = ["https://ok.example.com".to_string(), "nope".to_string()];
    assert_eq!(
        AllowedHosts::parse(&entries).unwrap_err(),
        AllowedHostError::MissingScheme {
            entry: "nope".into()
        }
    );
    // Next to other entries, insecure:allow-all is still rejected.
    let entries = [
        "https://ok.example.com".to_string(),
        "insecure:allow-all".to_string(),
    ];
    assert!(matches!(
        AllowedHosts::parse(&entries),
        Err(AllowedHostError::InsecureAllowAll { .. })
    ));
}

#[test]
fn accepted_entry_forms() {
    for entry in [
        "http://spin.fermyon.dev/",
        "http://spin.fermyon.dev:4444/",
        "http://localhost",
        "http://self",
        "http://self.alt",
        "*://*:*",
        "*://127.0.0.0/24:80",
        "*://ff00::/8:80",
        "http://[::1]",
        "http://[::1]:8001",
        "https://*.example.com:1000..2000",
        "mqtt://broker:0",
        "  https://padded.example.com  ",
    ] {
        hosts(&[entry]);
    }
}

fn render(entry: &str) -> Result<String, String> {
    let vars = [
        ("core_url", "https://core.example.com"),
        ("host", "api.example.com"),
    ];
    let mut out = entry.to_string();
    for (name, value) in vars {
        out = out.replace(&format!("{{{{ {name} }}}}"), value);
    }
    if out.contains("{{") {
        Err(format!("no value for a variable in {entry:?}"))
    } else {
        Ok(out)
    }
}

#[test]
fn parse_templated_renders_then_parses() {
    let entries = [
        "{{ core_url }}".to_string(),
        "https://{{ host }}:8443".to_string(),
        "redis://cache.local".to_string(),
    ];
    let allowed = AllowedHosts::parse_templated(&entries, render).unwrap();
    assert!(allowed.allows(&"https://core.example.com/x".parse().unwrap()));
    assert!(allowed.allows(&"https://api.example.com:8443/".parse().unwrap()));
    assert!(!allowed.allows(&"https://api.example.com/".parse().unwrap()));
    assert!(allowed.allows(&"redis://cache.local".parse().unwrap()));
    // parse() refuses the same templates.
    assert!(matches!(
        AllowedHosts::parse(&entries),
        Err(AllowedHostError::UnrenderedTemplate { entry }) if entry == "{{ core_url }}"
    ));
}

#[test]
fn parse_templated_renders_only_templates() {
    let entries = ["https://plain.example.com".to_string()];
    let allowed =
        AllowedHosts::parse_templated(&entries, |e| Err(format!("renderer called on {e:?}")))
            .unwrap();
    assert!(allowed.allows(&"https://plain.example.com".parse().unwrap()));
}

#[test]
fn parse_templated_names_the_entry_in_errors() {
    let entries = ["https://{{ missing }}".to_string()];
    let err = AllowedHosts::parse_templated(&entries, render).unwrap_err();
    assert_eq!(
        err,
        AllowedHostError::Render {
            entry: "https://{{ missing }}".into(),
            message: r#"no value for a variable in "https://{{ missing }}""#.into(),
        }
    );
    assert_eq!(
        err.to_string(),
        r#"allowed_outbound_hosts entry "https://{{ missing }}" could not be rendered: no value for a variable in "https://{{ missing }}""#
    );

    let entries = ["{{ host }}".to_string()];
    let err = AllowedHosts::parse_templated(&entries, render).unwrap_err();
    assert_eq!(err.entry(), "{{ host }}");
    assert_eq!(
        err.to_string(),
        r#"allowed_outbound_hosts entry "{{ host }}" rendered to "api.example.com", which is invalid: allowed_outbound_hosts entry "api.example.com" has no scheme; entries take the form <scheme>://<host>[:<port>], e.g. "https://example.com" or "*://example.com:*" ("*://*:*" allows all outbound traffic)"#
    );
}

#[test]
fn suggestions() {
    let line = |s: &str| format!("allowed_outbound_hosts = [\"{s}\"]");
    assert_eq!(
        AllowedHosts::suggestion("https", "api.example.com", None),
        line("https://api.example.com")
    );
    assert_eq!(
        AllowedHosts::suggestion("https", "api.example.com", Some(443)),
        line("https://api.example.com")
    );
    assert_eq!(
        AllowedHosts::suggestion("HTTP", "LocalHost", Some(3000)),
        line("http://localhost:3000")
    );
    assert_eq!(
        AllowedHosts::suggestion("redis", "cache", Some(6379)),
        line("redis://cache")
    );
    assert_eq!(
        AllowedHosts::suggestion("http", "::1", Some(8080)),
        line("http://[::1]:8080")
    );
    assert_eq!(
        AllowedHosts::suggestion("tcp", "10.0.0.1", None),
        line("tcp://10.0.0.1:*")
    );
    assert_eq!(
        AllowedHosts::suggestion("http", "self.alt", Some(80)),
        line("http://self")
    );
    // Each suggestion parses and allows what it was made for.
    for (scheme, host, port) in [
        ("https", "api.example.com", None),
        ("http", "localhost", Some(3000)),
        ("http", "[::1]", Some(8080)),
        ("tcp", "10.0.0.1", None),
    ] {
        let s = AllowedHosts::suggestion(scheme, host, port);
        let entry = s
            .strip_prefix("allowed_outbound_hosts = [\"")
            .and_then(|s| s.strip_suffix("\"]"))
            .unwrap();
        assert!(
            hosts(&[entry]).allows_parts(scheme, host, port),
            "{s} should allow {scheme}://{host}:{port:?}"
        );
    }
}
