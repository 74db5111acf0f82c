//! The host's outbound policy in front of the core, with the real app
//! (spin.toml), the real kiosk-host and core-sim over loopback: the cap on
//! calls in flight, the circuit breaker, one deadline per call, the bulkhead
//! that keeps ticketing alive behind a hung core, the loop guard, shared
//! reads and health's rate of core checks.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{CoreSim, Host, client, guest_wasm, repo};

const KIOSK: &str = "Bearer dev-kiosk-key";
const COUNTER: &str = "Bearer dev-counter-key";

struct App {
    _state: tempfile::TempDir,
    host: Host,
    core: CoreSim,
    http: reqwest::Client,
}

/// The app against a core-sim started with `core_args`, with a host
/// configuration file holding `config` and extra environment.
fn start(core_args: &[&str], config: &str, env: &[(&str, &str)]) -> App {
    guest_wasm("core");
    let core = CoreSim::start(core_args);
    let state = tempfile::tempdir().unwrap();
    let config_path = state.path().join("host.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut env: Vec<(&str, &str)> = env.to_vec();
    env.push(("SPIN_VARIABLE_CORE_BASE_URL", &core.url));
    let host = Host::start_with_env(
        &repo().join("spin.toml"),
        state.path(),
        &["--config", config_path.to_str().unwrap()],
        &env,
    );
    App {
        _state: state,
        host,
        core,
        http: client(),
    }
}

impl App {
    async fn core_get(&self, path: &str) -> (u16, Option<String>, Value) {
        let response = self
            .http
            .get(self.host.url(&format!("/api/v1/core{path}")))
            .header("authorization", COUNTER)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        (
            status,
            retry_after,
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn sim(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.core.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn set_mode(&self, mode: Value) {
        let response = self
            .http
            .post(format!("{}/_sim/mode", self.core.url))
            .json(&mode)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    async fn received(&self) -> u64 {
        self.sim("/_sim/stats").await["received"].as_u64().unwrap()
    }

    async fn calls_to(&self, path: &str) -> u64 {
        self.sim("/_sim/stats").await["by_path"][path]
            .as_u64()
            .unwrap_or(0)
    }
}

/// What a client saw of one answer.
#[derive(Debug)]
struct Seen {
    status: u16,
    retry_after: bool,
    body: String,
}

impl Seen {
    fn code(&self) -> String {
        let body: Value = serde_json::from_str(&self.body).unwrap_or(Value::Null);
        code(&body).to_string()
    }
}

impl App {
    /// `GET path` with `auth`, sent in a task of its own.
    fn spawn_get(&self, path: &str, auth: &'static str) -> tokio::task::JoinHandle<Seen> {
        let request = self
            .http
            .get(self.host.url(path))
            .header("authorization", auth);
        tokio::spawn(async move {
            let response = request.send().await.unwrap();
            Seen {
                status: response.status().as_u16(),
                retry_after: response.headers().contains_key("retry-after"),
                body: response.text().await.unwrap_or_default(),
            }
        })
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_core_never_has_more_than_the_cap_in_flight_and_the_rest_fail_fast() {
    let app = start(&["--latency-ms", "1000"], "", &[]);
    let mut calls = Vec::new();
    for i in 0..64 {
        calls.push(app.spawn_get(&format!("/api/v1/core/accounts/{i}/balance"), COUNTER));
    }
    let (mut ok, mut busy) = (0, 0);
    for call in calls {
        let seen = call.await.unwrap();
        match (seen.status, seen.retry_after, seen.code()) {
            (200, _, _) => ok += 1,
            (503, true, code) if code == "core_busy" => busy += 1,
            _ => panic!("unexpected answer {seen:?}"),
        }
    }
    let stats = app.sim("/_sim/stats").await;
    let max = stats["max_in_flight"].as_u64().unwrap();
    assert!(max <= 16, "the core saw {max} calls in flight at once");
    assert_eq!(ok + busy, 64);
    assert!(ok >= 16, "the cap's calls went through: {ok}");
    assert!(busy > 0, "calls beyond the cap were refused");
    assert_eq!(stats["received"].as_u64().unwrap(), ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_breaker_opens_fails_fast_half_opens_and_closes() {
    let config = r#"
[outbound.defaults.breaker]
consecutive_failures = 5
cool_down = "1s"
"#;
    let app = start(&["--fail-every", "1"], config, &[]);
    for _ in 0..5 {
        let (status, _, body) = app.core_get("/accounts/1/balance").await;
        assert_eq!((status, code(&body)), (503, "core_unavailable"));
    }
    assert_eq!(app.received().await, 5);
    assert!(app.host.wait_for_log("circuit opened"));
    // Open: refused without touching the core.
    for _ in 0..10 {
        let (status, retry_after, body) = app.core_get("/accounts/1/balance").await;
        assert_eq!((status, code(&body)), (503, "core_unavailable"));
        assert_eq!(retry_after.as_deref(), Some("1"));
    }
    assert_eq!(app.received().await, 5, "an open circuit reached the core");

    // Still failing after the cool-down: the probe reopens it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.core_get("/accounts/1/balance").await;
    assert_eq!(app.received().await, 6);
    assert!(app.host.wait_for_log("circuit reopened"));
    app.core_get("/accounts/1/balance").await;
    assert_eq!(app.received().await, 6);

    // The core recovers: the next probe closes it.
    app.set_mode(json!({"fail_every": 0})).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, _) = app.core_get("/accounts/1/balance").await;
    assert_eq!(status, 200);
    assert!(app.host.wait_for_log("circuit closed"));
    for _ in 0..3 {
        assert_eq!(app.core_get("/accounts/1/balance").await.0, 200);
    }
    assert_eq!(app.received().await, 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trickling_core_is_cut_at_the_hosts_deadline() {
    // The component would wait 20 s; the host's deadline for the core is 1 s.
    let config = r#"
[outbound.defaults]
timeout = "1s"
"#;
    let app = start(
        &["--trickle-ms", "300"],
        config,
        &[("SPIN_VARIABLE_CORE_TIMEOUT_MS", "20000")],
    );
    let started = Instant::now();
    let (status, retry_after, body) = app.core_get("/accounts/1/balance").await;
    assert_eq!((status, code(&body)), (504, "core_unavailable"), "{body}");
    assert!(retry_after.is_some());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the call was held for {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trickling_core_is_cut_at_the_components_own_bound() {
    // The host would wait 10 s; the component bounds the whole call by
    // core_timeout_ms itself (as it must under Spin, which has no deadline).
    let app = start(
        &["--trickle-ms", "300"],
        "",
        &[("SPIN_VARIABLE_CORE_TIMEOUT_MS", "1000")],
    );
    let started = Instant::now();
    let (status, retry_after, body) = app.core_get("/accounts/1/balance").await;
    assert_eq!((status, code(&body)), (504, "core_unavailable"), "{body}");
    assert!(retry_after.is_some());
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_core_with_300_pending_calls_leaves_ticketing_serving() {
    let app = start(
        &["--hang"],
        "",
        &[("SPIN_VARIABLE_CORE_TIMEOUT_MS", "3000")],
    );
    let mut pending = Vec::new();
    for i in 0..300 {
        pending.push(app.spawn_get(&format!("/api/v1/core/accounts/{i}/balance"), KIOSK));
    }
    // While they wait on the core, the branches are served.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..10 {
        let response = app
            .http
            .get(app.host.url("/api/v1/queues/demo"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let issued = app
            .http
            .post(app.host.url("/api/v1/tickets"))
            .header("authorization", KIOSK)
            .header("idempotency-key", uuid_like())
            .json(&json!({"branch": "demo", "service": "deposit", "channel": "kiosk"}))
            .send()
            .await
            .unwrap();
        assert_eq!(issued.status(), 201);
    }
    let mut statuses = std::collections::BTreeMap::new();
    for call in pending {
        *statuses.entry(call.await.unwrap().status).or_insert(0) += 1;
    }
    assert!(
        statuses.keys().all(|s| *s == 503 || *s == 504),
        "{statuses:?}"
    );
    let max = app.sim("/_sim/stats").await["max_in_flight"]
        .as_u64()
        .unwrap();
    assert!(max <= 16, "the hung core held {max} calls");
    // Calls its callers gave up on count as failures: the circuit opens,
    // and later calls fail at once without waiting on the core.
    assert!(app.host.wait_for_log("circuit opened"));
    let (status, _, body) = app.core_get("/accounts/1/balance").await;
    assert_eq!((status, code(&body)), (503, "core_unavailable"));
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "k-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_concurrent_reads_make_one_core_call_and_balances_are_never_shared() {
    let app = start(&["--latency-ms", "300"], "", &[]);
    let mut calls = Vec::new();
    for _ in 0..20 {
        calls.push(app.spawn_get("/api/v1/core/customers/c-7", KIOSK));
    }
    let mut bodies = std::collections::BTreeSet::new();
    for call in calls {
        let seen = call.await.unwrap();
        assert_eq!(seen.status, 200);
        bodies.insert(seen.body);
    }
    assert_eq!(bodies.len(), 1);
    assert_eq!(app.calls_to("/customers/c-7").await, 1);
    // Reused while fresh.
    assert_eq!(app.core_get("/customers/c-7").await.0, 200);
    assert_eq!(app.calls_to("/customers/c-7").await, 1);
    for _ in 0..3 {
        assert_eq!(app.core_get("/accounts/9/balance").await.0, 200);
    }
    assert_eq!(app.calls_to("/accounts/9/balance").await, 3);
    // The log names the caller of every passthrough read, shared or not.
    let log = app.host.stderr();
    assert!(log.contains("served=shared"), "{log}");
    assert!(log.contains("client=counter-dev") || log.contains("client=kiosk-dev"));
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_to_the_core_reuse_pooled_connections() {
    let app = start(&[], "", &[]);
    for i in 0..50 {
        assert_eq!(app.core_get(&format!("/accounts/{i}/balance")).await.0, 200);
    }
    let stats = app.sim("/_sim/stats").await;
    assert_eq!(stats["received"], 50);
    let connections = stats["connections"].as_u64().unwrap();
    assert!(
        connections <= 2,
        "50 sequential calls opened {connections} connections"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_checks_the_core_at_most_once_a_second() {
    let app = start(&[], "", &[]);
    let started = Instant::now();
    let mut checks = Vec::new();
    for _ in 0..40 {
        checks.push(app.spawn_get("/health", KIOSK));
    }
    // Each answers from the shared check; a host starved of CPU may shed
    // some (503 `overloaded`, with Retry-After), never fail otherwise.
    let mut answered = 0;
    for check in checks {
        let seen = check.await.unwrap();
        match seen.status {
            200 => answered += 1,
            503 if seen.retry_after && seen.body.contains("overloaded") => {}
            other => panic!("/health answered {other}: {}", seen.body),
        }
    }
    assert!(answered > 0, "every concurrent /health was shed");
    for _ in 0..20 {
        assert_eq!(
            app.http
                .get(app.host.url("/health"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let seconds = started.elapsed().as_secs() + 1;
    let core_checks = app.calls_to("/health").await;
    assert!(
        core_checks <= seconds,
        "{core_checks} core checks in under {seconds} s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_core_url_pointing_at_the_host_itself_is_refused() {
    guest_wasm("health");
    // A free port, then the host on it with the core pointed at itself.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let own = format!("http://{listen}");
    let state = tempfile::tempdir().unwrap();
    let host = Host::start_with_env(
        &repo().join("spin.toml"),
        state.path(),
        &["--listen", &listen],
        &[("SPIN_VARIABLE_CORE_BASE_URL", &own)],
    );
    let http = client();
    for _ in 0..20 {
        let response = http.get(host.url("/health")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "degraded");
    }
    let response = http
        .get(host.url("/api/v1/core/accounts/1/balance"))
        .header("authorization", COUNTER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(host.wait_for_log("would call this host's own listener"));
    assert!(
        !host.stderr().contains("overloaded"),
        "self-calls took instance slots"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loop_through_two_hosts_is_cut_by_the_hop_limit() {
    guest_wasm("health");
    let ports: Vec<u16> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let states = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let hosts: Vec<Host> = (0..2)
        .map(|i| {
            let listen = format!("127.0.0.1:{}", ports[i]);
            let other = format!("http://localhost:{}", ports[1 - i]);
            Host::start_with_env(
                &repo().join("spin.toml"),
                states[i].path(),
                &["--listen", &listen],
                &[("SPIN_VARIABLE_CORE_BASE_URL", &other)],
            )
        })
        .collect();
    let http = client();
    let response = http.get(hosts[0].url("/health")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let refused = |h: &Host| h.stderr().contains("already passed through");
    let until = Instant::now() + Duration::from_secs(10);
    while !(refused(&hosts[0]) || refused(&hosts[1])) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused(&hosts[0]) || refused(&hosts[1]));
}

#[test]
fn a_host_configuration_with_a_typo_is_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        "[outbound.defaults]\nmax_concurrency = 4\nmax_concurency = 5\n",
    )
    .unwrap();
    let check = || {
        support::run(&[
            "check",
            "-f",
            repo().join("spin.toml").to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ])
    };
    let out = check();
    assert!(!out.status.success());
    assert!(
        out.stderr
            .contains(&format!("{}:3:", config.to_str().unwrap())),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("max_concurency"), "{}", out.stderr);

    std::fs::write(&config, "[component.cor]\nmax_instances = 4\n").unwrap();
    let out = check();
    assert!(!out.status.success());
    assert!(out.stderr.contains(":1: [component.cor]"), "{}", out.stderr);
}
