//! The admin listener (`[admin] listen`): Prometheus metrics, readiness and
//! liveness, driven over real sockets against the real binary.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{Host, app, client, guest_wasm, run};

/// The basics app with a host configuration of `toml` (written to `dir`).
fn basics_with(dir: &Path, toml: &str) -> Host {
    guest_wasm("hello");
    guest_wasm("sleep");
    let config = write_config(dir, toml);
    Host::start(
        &app("basics").join("spin.toml"),
        &["--config", config.to_str().unwrap()],
    )
}

fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("host.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

/// A scrape: every sample by its series (`name{labels}`), and the declared
/// type of every metric family.
struct Scrape {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    fn value(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Checks `labels` (between the braces) is `name="value",…`.
fn check_labels(labels: &str, line: &str) {
    let mut rest = labels;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad labels in `{line}`"));
        assert!(is_metric_name(name), "bad label name in `{line}`");
        // The value ends at the first quote not escaped by a backslash.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let end = end.unwrap_or_else(|| panic!("unterminated label value in `{line}`"));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Parses the Prometheus text format, panicking on any malformed line.
fn parse_exposition(text: &str) -> Scrape {
    let (mut samples, mut types) = (BTreeMap::new(), BTreeMap::new());
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            assert!(is_metric_name(name), "bad name in `{line}`");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad type in `{line}`"
            );
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment `{line}`");
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in `{line}`")),
        };
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in `{line}`"));
                check_labels(labels, line);
                name
            }
            None => series,
        };
        assert!(is_metric_name(name), "bad name in `{line}`");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "`{line}` has no # TYPE line");
        samples.insert(series.to_string(), value);
    }
    Scrape { samples, types }
}

async fn scrape(http: &reqwest::Client, host: &Host) -> Scrape {
    parse_exposition(&scrape_text(http, host).await)
}

/// `/metrics` as served, in the Prometheus text format.
async fn scrape_text(http: &reqwest::Client, host: &Host) -> String {
    let response = http.get(host.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

const HELLO_2XX: &str = "kiosk_http_requests_total{component=\"hello\",status_class=\"2xx\"}";

#[tokio::test]
async fn metrics_parse_and_count_each_request() {
    let dir = tempfile::tempdir().unwrap();
    let host = basics_with(dir.path(), ADMIN);
    let http = client();
    let before = scrape(&http, &host).await;
    // Families with labels appear once they have a sample (refusals and
    // outbound calls: see the saturated host's test).
    let expected: BTreeSet<(&str, &str)> = [
        ("kiosk_http_requests_total", "counter"),
        ("kiosk_http_request_duration_seconds", "histogram"),
        ("kiosk_instances_in_use", "gauge"),
        ("kiosk_instance_queue_depth", "gauge"),
        ("kiosk_connections_open", "gauge"),
        ("kiosk_tls_handshake_failures_total", "counter"),
        ("kiosk_build_info", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ]
    .into();
    const N: usize = 5;
    for _ in 0..N {
        let response = http.get(host.url("/hello")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let after = scrape(&http, &host).await;
    for (name, kind) in &expected {
        assert_eq!(
            after.types.get(*name).map(String::as_str),
            Some(*kind),
            "{name}"
        );
    }
    assert!(before.value("process_start_time_seconds").unwrap() > 1.0e9);
    assert!(
        before
            .samples
            .keys()
            .any(|s| s.starts_with("kiosk_build_info{") && s.contains("version=\"")),
        "build info"
    );

    let grown = after.value(HELLO_2XX).unwrap() - before.value(HELLO_2XX).unwrap_or(0.0);
    assert_eq!(grown, N as f64);
    let count = "kiosk_http_request_duration_seconds_count{component=\"hello\"}";
    assert!(after.value(count).unwrap() >= N as f64);
    // The keep-alive client holds at least one connection open.
    assert!(after.value("kiosk_connections_open").unwrap() >= 1.0);
    // Raw paths never become labels.
    assert!(after.samples.keys().all(|s| !s.contains("/hello")));
}

#[tokio::test]
async fn live_and_ready_answer_and_anything_else_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host = basics_with(dir.path(), ADMIN);
    let http = client();
    let live = http.get(host.admin_url("/live")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = http.get(host.admin_url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap().trim(), "ready");
    let unknown = http.get(host.admin_url("/hello")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    let post = http.post(host.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(post.status(), 405);
    let allow = post.headers()["allow"].to_str().unwrap();
    assert!(allow.contains("GET"), "{allow}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_turns_503_when_the_drain_starts_while_requests_finish() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = basics_with(dir.path(), ADMIN);
    let http = client();
    assert_eq!(
        http.get(host.admin_url("/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let in_flight = {
        let (http, url) = (http.clone(), host.url("/sleep?ms=3000"));
        tokio::spawn(async move { http.get(url).send().await.unwrap() })
    };
    // Long enough for the request to be in the guest, well before it ends.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    host.terminate();
    let until = Instant::now() + Duration::from_secs(10);
    let draining = loop {
        let ready = http.get(host.admin_url("/ready")).send().await.unwrap();
        if ready.status() == 503 {
            break ready.text().await.unwrap();
        }
        assert!(Instant::now() < until, "/ready never turned 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(draining.trim(), "draining");
    assert!(
        !in_flight.is_finished(),
        "the slow request was still running when /ready turned 503"
    );
    let response = in_flight.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "slept 3000 ms");
    let status = tokio::task::block_in_place(|| host.wait_exit());
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn a_saturated_host_still_answers_metrics_and_counts_the_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("[server]\nmax_instances = 1\nqueue_depth = 0\n\n{ADMIN}");
    let host = basics_with(dir.path(), &config);
    let http = client();
    let holder = {
        let (http, url) = (http.clone(), host.url("/sleep?ms=3000"));
        tokio::spawn(async move { http.get(url).send().await.unwrap() })
    };
    // Wait (bounded) until the slow request holds the only slot.
    let until = Instant::now() + Duration::from_secs(10);
    while scrape(&http, &host).await.value("kiosk_instances_in_use") != Some(1.0) {
        assert!(Instant::now() < until, "the slot was never taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = http.get(host.url("/hello")).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    let metrics = scrape(&http, &host).await;
    assert_eq!(
        metrics.value("kiosk_http_refused_total{reason=\"overloaded\"}"),
        Some(1.0)
    );
    assert_eq!(
        metrics.value("kiosk_http_requests_total{component=\"hello\",status_class=\"5xx\"}"),
        Some(1.0)
    );
    assert_eq!(metrics.value("kiosk_instances_in_use"), Some(1.0));
    assert_eq!(holder.await.unwrap().status(), 200);
}

#[test]
fn an_admin_address_equal_to_the_serving_one_is_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:39180\"\n\n[admin]\nlisten = \"127.0.0.1:39180\"\n",
    );
    let manifest = app("basics").join("spin.toml");
    let out = run(&[
        "check",
        "-f",
        manifest.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "accepted:\n{}", out.stdout);
    let at = format!("{}:5:", config.display());
    assert!(
        out.stderr.contains(&at),
        "expected `{at}` in:\n{}",
        out.stderr
    );
}

/// A loopback upstream answering every request 200 `ok`.
fn upstream() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    port
}

/// The caps app with an admin listener and `more` host configuration,
/// its `upstream` variable naming a loopback upstream: the host and the
/// upstream's `host:port`.
fn caps_with_upstream(state: &Path, more: &str) -> (Host, String) {
    guest_wasm("fetch-url");
    let upstream = format!("127.0.0.1:{}", upstream());
    let runtime_config = state.join("runtime-config.toml");
    std::fs::write(
        &runtime_config,
        "[key_value_store.shared]\ntype = \"spin\"\npath = \"shared.db\"\n",
    )
    .unwrap();
    let config = write_config(state, &format!("{ADMIN}{more}"));
    let host = Host::start_with_env(
        &app("caps").join("spin.toml"),
        state,
        &[
            "--runtime-config-file",
            runtime_config.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        &[
            ("SPIN_VARIABLE_API_KEY", "s3cret-value"),
            ("SPIN_VARIABLE_UPSTREAM", &upstream),
        ],
    );
    (host, upstream)
}

#[tokio::test]
async fn outbound_calls_are_counted_by_destination_origin() {
    let state = tempfile::tempdir().unwrap();
    let (host, upstream) = caps_with_upstream(state.path(), "");
    let http = client();
    for _ in 0..2 {
        let url = host.url(&format!("/fetch?url=http://{upstream}/some/path"));
        assert_eq!(http.get(url).send().await.unwrap().status(), 200);
    }
    let metrics = scrape(&http, &host).await;
    let destination = format!("destination=\"http://{upstream}\"");
    assert_eq!(
        metrics.value(&format!(
            "kiosk_outbound_requests_total{{{destination},outcome=\"ok\"}}"
        )),
        Some(2.0)
    );
    assert_eq!(
        metrics.value(&format!("kiosk_outbound_in_flight{{{destination}}}")),
        Some(0.0)
    );
    assert_eq!(
        metrics.value(&format!("kiosk_outbound_breaker_open{{{destination}}}")),
        Some(0.0)
    );
    assert!(metrics.samples.keys().all(|s| !s.contains("/some/path")));
}

/// Runs `promtool ARGS` in deploy/prometheus with `stdin`; its output.
fn promtool(args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(args)
        .current_dir(support::repo().join("deploy/prometheus"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[tokio::test]
async fn the_alerts_pass_promtool_and_name_only_metrics_a_host_exposes() {
    // The rules, their unit tests (each alert fires when it should, and
    // not on a rollout or a recycling) and the scrape configuration.
    promtool(&["check", "rules", "kiosk-api.rules.yml"], "");
    promtool(&["test", "rules", "kiosk-api.rules.test.yml"], "");
    promtool(&["check", "config", "prometheus.yml"], "");

    // A host that answered, refused and called out.
    let state = tempfile::tempdir().unwrap();
    let (host, upstream) = caps_with_upstream(state.path(), "[server]\nmax_body_bytes = 64\n");
    let http = client();
    let fetch = host.url(&format!("/fetch?url=http://{upstream}/"));
    assert_eq!(http.get(&fetch).send().await.unwrap().status(), 200);
    let refused = http.post(&fetch).body(vec![b'x'; 1024]).send().await;
    assert_eq!(refused.unwrap().status(), 413);
    let scraped = scrape_text(&http, &host).await;
    assert!(
        scraped.contains("kiosk_http_refused_total{reason=\"body_too_large\"} 1"),
        "{scraped}"
    );
    // promtool's lint of the exposition (names, units, help) finds nothing.
    let lint = promtool(&["check", "metrics"], &scraped);
    assert!(lint.trim().is_empty(), "{lint}");
    // Every metric an alert names is one the host exposes (a histogram's
    // series by its family).
    let rules =
        std::fs::read_to_string(support::repo().join("deploy/prometheus/kiosk-api.rules.yml"))
            .unwrap();
    let named: BTreeSet<&str> = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| w.starts_with("kiosk_") || w.starts_with("process_"))
        .map(|w| w.trim_end_matches("_bucket"))
        .collect();
    assert!(named.len() >= 10, "{named:?}");
    for name in named {
        assert!(
            scraped.contains(&format!("# TYPE {name} ")),
            "an alert uses {name}, which the host does not expose:\n{scraped}"
        );
    }
}

#[tokio::test]
async fn failed_tls_handshakes_are_counted() {
    use std::io::Write;
    guest_wasm("hello");
    let dir = tempfile::tempdir().unwrap();
    let ca = support::ca::Ca::new();
    ca.issue(dir.path(), "dev", &["devkiosk.domain.com"], 1);
    let config = write_config(
        dir.path(),
        &format!("[server.tls]\ncert = \"dev.pem\"\nkey = \"dev.key\"\n\n{ADMIN}"),
    );
    let host = Host::start_in(
        &app("basics").join("spin.toml"),
        dir.path(),
        &["--config", config.to_str().unwrap()],
    );
    // Plain HTTP on the HTTPS port is no handshake.
    let mut stream = std::net::TcpStream::connect(host.tls_addr.unwrap()).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let http = client();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let failures = scrape(&http, &host)
            .await
            .value("kiosk_tls_handshake_failures_total");
        if failures == Some(1.0) {
            break;
        }
        assert!(Instant::now() < until, "failures: {failures:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_drain_delay_new_requests_are_served_while_ready_says_503() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("[server]\ndrain_delay = \"3s\"\n\n{ADMIN}");
    let mut host = basics_with(dir.path(), &config);
    let http = client();
    host.terminate();
    let until = Instant::now() + Duration::from_secs(10);
    while http
        .get(host.admin_url("/ready"))
        .send()
        .await
        .unwrap()
        .status()
        != 503
    {
        assert!(Instant::now() < until, "/ready never turned 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Not ready, still serving: a balancer that has not polled yet loses nothing.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    assert_eq!(
        fresh.get(host.url("/hello")).send().await.unwrap().status(),
        200
    );
    let status = tokio::task::block_in_place(|| host.wait_exit());
    assert!(status.success(), "exit status {status}");
}
