//! The host core, driven over real sockets against the real binary.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Host, Load, app, check_fails, client, guest_wasm, raw_exchange, run};

fn basics(extra: &[&str]) -> Host {
    guest_wasm("hello");
    Host::start(&app("basics").join("spin.toml"), extra)
}

/// The status of `GET url`.
async fn get_status(url: String) -> u16 {
    client().get(url).send().await.unwrap().status().as_u16()
}

/// The body of `GET url`.
async fn get_text(url: String) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn json(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

fn header_values<'a>(echo: &'a Value, name: &str) -> Vec<&'a str> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn serves_a_component_over_one_keep_alive_connection() {
    let host = basics(&[]);
    let http = client();
    for _ in 0..3 {
        let response = http.get(host.url("/hello")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/plain");
        assert_eq!(response.text().await.unwrap(), "Hello, kiosk!\n");
    }
    assert!(
        host.wait_for_log("route=/hello"),
        "no request log line:\n{}",
        host.stderr()
    );
    assert!(host.stderr().contains("component=hello"));
    assert!(host.stderr().contains("status=200"));
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served() {
    let host = basics(&[]);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = http.get(host.url("/hello")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.text().await.unwrap(), "Hello, kiosk!\n");
}

#[tokio::test]
async fn every_request_gets_a_fresh_instance() {
    let host = basics(&[]);
    let http = client();
    for _ in 0..5 {
        let body = http
            .get(host.url("/counter"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "1", "state leaked from an earlier request");
    }
}

#[tokio::test]
async fn guests_see_only_the_granted_environment() {
    let host = basics(&["-e", "OVERRIDDEN=cli", "-e", "EXTRA=1"]);
    let echo = json(client().get(host.url("/echo/x")).send().await.unwrap()).await;
    let env = echo["env"].as_object().unwrap();
    assert_eq!(env["FROM_MANIFEST"], "yes");
    assert_eq!(env["OVERRIDDEN"], "cli", "-e must override the manifest");
    assert_eq!(env["EXTRA"], "1");
    assert!(
        !env.contains_key("PATH") && !env.contains_key("HOME"),
        "host env leaked: {env:?}"
    );
    // -e applies to every component.
    assert_eq!(get_text(host.url("/hello")).await, "Hello, kiosk!\n");
    assert_eq!(echo["args"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn spin_headers_are_set_and_client_forgeries_dropped() {
    let host = basics(&[]);
    let echo = json(
        client()
            .get(host.url("/echo/a/b/?q=1"))
            .header("spin-client-addr", "6.6.6.6:66")
            .header("spin-full-url", "http://evil/")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let client_addr = header_values(&echo, "spin-client-addr");
    assert_eq!(client_addr.len(), 1, "{client_addr:?}");
    assert!(client_addr[0].starts_with("127.0.0.1:"));
    assert_eq!(
        header_values(&echo, "spin-full-url"),
        [format!("http://{}/echo/a/b/?q=1", host.addr)]
    );
    assert_eq!(header_values(&echo, "spin-path-info"), ["/a/b/"]);
    assert_eq!(header_values(&echo, "spin-matched-route"), ["/echo/..."]);
    assert_eq!(
        header_values(&echo, "spin-raw-component-route"),
        ["/echo/..."]
    );
    assert_eq!(header_values(&echo, "spin-component-route"), ["/echo"]);
    assert_eq!(header_values(&echo, "spin-base-path"), ["/"]);
    assert!(
        header_values(&echo, "host").is_empty(),
        "wasi:http hides Host"
    );

    let item = json(client().get(host.url("/items/42")).send().await.unwrap()).await;
    assert_eq!(header_values(&item, "spin-path-match-id"), ["42"]);
    assert_eq!(header_values(&item, "spin-path-info"), [""]);
}

#[tokio::test]
async fn routing_follows_spins_rules() {
    let host = basics(&[]);
    let http = client();
    // A wildcard matches its own base path and whole segments only.
    assert_eq!(
        http.get(host.url("/deep/path"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(host.url("/deep/path/x/y"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let miss = http.get(host.url("/deep/pathology")).send().await.unwrap();
    assert_eq!(miss.status(), 404);
    assert_eq!(json(miss).await["error"]["code"], "route_not_found");
    // Trailing slash on an exact route still matches.
    assert_eq!(
        http.get(host.url("/hello/")).send().await.unwrap().status(),
        200
    );
    // Case-sensitive, no decoding.
    assert_eq!(
        http.get(host.url("/HELLO")).send().await.unwrap().status(),
        404
    );
    // The private component has no route at all.
    assert_eq!(
        http.get(host.url("/internal"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn reserved_spin_endpoints_answer_like_spin() {
    let host = basics(&[]);
    let http = client();
    let health = http
        .get(host.url("/.well-known/spin/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "OK");
    let info = http
        .get(host.url("/.well-known/spin/info"))
        .send()
        .await
        .unwrap();
    assert_eq!(info.headers()["content-type"], "application/json");
    assert_eq!(
        info.text().await.unwrap(),
        "{\n  \"name\": \"host-basics\",\n  \"version\": \"0.3.0\"\n}"
    );
    let other = http
        .get(host.url("/.well-known/spin/health/"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

#[tokio::test]
async fn looping_guests_are_stopped_and_do_not_starve_neighbours() {
    let host = basics(&["--request-timeout", "6s"]);
    let http = client();
    // More looping guests than the machine has cores.
    let loops: Vec<_> = (0..4)
        .map(|_| {
            let http = http.clone();
            let url = host.url("/loop");
            tokio::spawn(async move { http.get(url).send().await.unwrap() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..20 {
        let response = http.get(host.url("/hello")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert!(
        loops.iter().all(|l| !l.is_finished()),
        "the neighbours were served only after the loops ended"
    );
    for looping in loops {
        let response = looping.await.unwrap();
        assert_eq!(response.status(), 504);
        let body = json(response).await;
        assert_eq!(body["error"]["code"], "deadline_exceeded");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("loop-forever")
        );
    }
    assert_eq!(
        http.get(host.url("/hello")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn a_guest_waiting_on_the_host_is_stopped_at_its_deadline() {
    let host = basics(&["--request-timeout", "1s"]);
    let response = client()
        .get(host.url("/sleep?ms=60000"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(json(response).await["error"]["code"], "deadline_exceeded");
}

#[tokio::test]
async fn a_trapping_guest_gets_500_json_and_the_server_carries_on() {
    let host = basics(&[]);
    let http = client();
    let response = http.get(host.url("/trap")).send().await.unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(json(response).await["error"]["code"], "component_trapped");
    assert_eq!(
        http.get(host.url("/hello")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn a_guest_past_its_memory_limit_gets_500_json() {
    let host = basics(&["--max-instance-memory", "33554432"]);
    let http = client();
    let response = http.get(host.url("/alloc")).send().await.unwrap();
    assert_eq!(response.status(), 500);
    let body = json(response).await;
    assert_eq!(body["error"]["code"], "memory_limit_exceeded");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("32 MiB")
    );
    assert_eq!(
        http.get(host.url("/hello")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused_before_the_guest_runs() {
    let host = basics(&["--max-body-bytes", "1024"]);
    let http = client();
    let response = http
        .post(host.url("/echo"))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(json(response).await["error"]["code"], "body_too_large");
    let small = json(
        http.post(host.url("/echo"))
            .body(vec![b'x'; 512])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(small["body_len"], 512);
}

#[tokio::test]
async fn files_are_mounted_read_only_and_nothing_else_is_visible() {
    let host = basics(&[]);
    let http = client();
    let greeting = http
        .get(host.url("/files?path=/static/greeting.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(greeting.status(), 200);
    assert_eq!(greeting.headers()["x-write-allowed"], "false");
    assert_eq!(greeting.text().await.unwrap(), "안녕하세요, kiosk\n");
    let mapped = http
        .get(host.url("/files?path=/config/catalog.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(mapped.text().await.unwrap(), "{\"branches\":[\"demo\"]}\n");
    for hidden in ["/static/skip.md", "/etc/passwd", "/data/catalog.json"] {
        let response = http
            .get(host.url(&format!("/files?path={hidden}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{hidden} should not be visible");
    }
    // A component without `files` sees no filesystem at all.
    let echo = json(http.get(host.url("/echo")).send().await.unwrap()).await;
    assert_eq!(echo["method"], "GET");
}

#[tokio::test]
async fn when_all_slots_are_busy_requests_queue_then_get_503() {
    let host = basics(&[
        "--max-instances",
        "1",
        "--queue-depth",
        "1",
        "--queue-timeout",
        "1s",
    ]);
    let http = client();
    let holder = {
        let (http, url) = (http.clone(), host.url("/sleep?ms=3000"));
        tokio::spawn(async move { http.get(url).send().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = {
        let (http, url) = (http.clone(), host.url("/hello"));
        tokio::spawn(async move { http.get(url).send().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rejected = http.get(host.url("/hello")).send().await.unwrap();
    assert_eq!(rejected.status(), 503, "the queue is full");
    assert_eq!(rejected.headers()["retry-after"], "1");
    assert_eq!(json(rejected).await["error"]["code"], "overloaded");
    let queued = queued.await.unwrap();
    assert_eq!(
        queued.status(),
        503,
        "the queued request waited past its bound"
    );
    assert_eq!(holder.await.unwrap().status(), 200);
    assert_eq!(
        http.get(host.url("/hello")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_requests_then_exits_cleanly() {
    let mut host = basics(&[]);
    let http = client();
    let in_flight = {
        let (http, url) = (http.clone(), host.url("/sleep?ms=3000"));
        tokio::spawn(async move { http.get(url).send().await.unwrap() })
    };
    // Long enough for the request to be in the guest, well before it ends.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    host.terminate();
    let response = in_flight.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "slept 3000 ms");
    let status = tokio::task::block_in_place(|| host.wait_exit());
    assert!(status.success(), "exit status {status}");
    assert!(
        std::net::TcpStream::connect(host.addr).is_err(),
        "still accepting after drain"
    );
}

#[test]
fn a_request_without_host_gets_a_json_400() {
    let host = basics(&[]);
    let reply = raw_exchange(
        host.addr,
        b"GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("\"code\":\"bad_host\""), "{reply}");
    let reply = raw_exchange(
        host.addr,
        b"GET http://a.example/hello HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
}

#[test]
fn compiled_components_are_cached_across_restarts() {
    guest_wasm("hello");
    let manifest = app("basics").join("spin.toml");
    let state = tempfile::tempdir().unwrap();
    let state_path = state.path().to_path_buf();
    let first = Host::start_in(&manifest, &state_path, &[]);
    assert!(
        first.stderr().contains("cache=compiled"),
        "{}",
        first.stderr()
    );
    let artifacts = std::fs::read_dir(state_path.join("compiled"))
        .unwrap()
        .count();
    assert!(
        artifacts >= 8,
        "expected one artifact per component, found {artifacts}"
    );
    drop(first);
    // A second process on the same state dir compiles nothing.
    let second = support::kiosk_host()
        .args(["check", "-f"])
        .arg(&manifest)
        .arg("--state-dir")
        .arg(&state_path)
        .env("KIOSK_LOG", "info")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{log}");
    assert!(
        !log.contains("cache=compiled"),
        "recompiled after restart:\n{log}"
    );
    assert!(log.contains("cache=hit"), "{log}");
}

#[test]
fn a_broken_manifest_fails_before_serving_naming_file_and_line() {
    let broken = app("broken");
    let unknown = run(&[
        "up",
        "-f",
        broken.join("unknown-field.toml").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!unknown.status.success());
    assert!(
        unknown.stderr.contains("unknown-field.toml:12"),
        "{}",
        unknown.stderr
    );
    assert!(unknown.stderr.contains("enviroment"), "{}", unknown.stderr);
    assert!(!unknown.stdout.contains("Serving"));

    check_fails(
        &broken.join("missing-component.toml"),
        &["missing-component.toml:8", "helo"],
    );
    check_fails(&broken.join("bad-syntax.toml"), &["bad-syntax.toml:3"]);
}

#[test]
fn build_flag_runs_the_build_command_when_the_wasm_is_missing() {
    let hello = guest_wasm("hello");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("spin.toml"),
        format!(
            r#"spin_manifest_version = 2
[application]
name = "built"
[[trigger.http]]
route = "/hello"
component = "hello"
[component.hello]
source = "out/hello.wasm"
[component.hello.build]
command = "mkdir -p out && cp '{}' out/hello.wasm && echo built >> build.log"
"#,
            hello.display()
        ),
    )
    .unwrap();
    let host = Host::start(&dir.path().join("spin.toml"), &["--build"]);
    assert!(dir.path().join("out/hello.wasm").exists());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("build.log")).unwrap(),
        "built\n"
    );
    drop(host);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_manager_is_told_ready_reloading_and_stopping_and_fed_its_watchdog() {
    use std::os::unix::net::UnixDatagram;
    guest_wasm("hello");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let next = || {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("a notification within 30 s");
        String::from_utf8_lossy(&buf[..n]).trim_end().to_owned()
    };
    // The next message that is not a watchdog ping.
    let next_state = || loop {
        let m = next();
        if m != "WATCHDOG=1" {
            return m;
        }
    };
    let mut host = Host::start_with_env(
        &app("basics").join("spin.toml"),
        dir.path(),
        &[],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    // READY=1 comes once it serves (Host::start returned: it printed its address).
    let ready = next_state();
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving on http://127.0.0.1:"),
        "{ready}"
    );
    assert_eq!(get_status(host.url("/hello")).await, 200);
    // Fed at half the interval: several pings within a few seconds.
    let pings = (0..3).filter(|_| next() == "WATCHDOG=1").count();
    assert!(pings >= 2, "{pings} pings");
    // A reload is bracketed.
    host.hangup();
    let reloading = next_state();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(next_state(), "READY=1\nSTATUS=serving; reloaded");
    // The drain is announced before the process ends.
    host.terminate();
    assert_eq!(next_state(), "STOPPING=1\nSTATUS=draining");
    let status = tokio::task::block_in_place(|| host.wait_exit());
    assert!(status.success(), "exit status {status}");
}

/// How many times the host's log says `needle`, once it says it at least
/// `n` times (30 s at most).
fn wait_for_count(host: &Host, needle: &str, n: usize) -> usize {
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let count = host.stderr().matches(needle).count();
        if count >= n || std::time::Instant::now() > until {
            return count;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_app_under_load_and_a_broken_version_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("spin.toml");
    let (hello, incr) = (guest_wasm("hello"), guest_wasm("kv-incr"));
    let version = |greeting: &str, source: &std::path::Path| {
        format!(
            "spin_manifest_version = 2\n\
             [application]\nname = \"reloaded\"\nversion = \"{greeting}\"\n\
             [[trigger.http]]\nroute = \"/hello\"\ncomponent = \"hello\"\n\
             [[trigger.http]]\nroute = \"/incr/...\"\ncomponent = \"incr\"\n\
             [component.hello]\nsource = {source:?}\nenvironment = {{ GREETING = \"{greeting}\" }}\n\
             [component.incr]\nsource = {incr:?}\nkey_value_stores = [\"default\"]\n"
        )
    };
    std::fs::write(&manifest, version("v0", &hello)).unwrap();
    let config = dir.path().join("host.toml");
    std::fs::write(&config, "[admin]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let host = Host::start(&manifest, &["--config", config.to_str().unwrap()]);
    let http = client();
    // Asserts that /metrics has each of `lines`.
    let metrics_show = |lines: &'static [&'static str]| {
        let url = host.admin_url("/metrics");
        async move {
            let scraped = get_text(url).await;
            for line in lines {
                assert!(
                    scraped.lines().any(|l| l == *line),
                    "no {line} in\n{scraped}"
                );
            }
        }
    };
    let get = |path: &str| get_text(host.url(path));
    let incr = || {
        let (http, url) = (http.clone(), host.url("/incr/visits"));
        async move { http.post(url).send().await.unwrap().text().await.unwrap() }
    };
    assert_eq!(get("/hello").await, "Hello, v0!\n");
    assert_eq!(incr().await, "1");

    // Four clients across five new versions: none of them sees an error,
    // and after each reload new requests get the new version.
    let load = Load::start(&http, &host.url("/hello"), 4);
    for n in 1..=5 {
        let greeting = format!("v{n}");
        std::fs::write(&manifest, version(&greeting, &hello)).unwrap();
        host.hangup();
        assert_eq!(
            wait_for_count(&host, "reloaded: ", n),
            n,
            "{}",
            host.stderr()
        );
        assert_eq!(get("/hello").await, format!("Hello, {greeting}!\n"));
    }
    load.stop_all_served().await;
    // The key-value store is the one the first version opened.
    assert_eq!(incr().await, "2");
    let info = json(
        http.get(host.url("/.well-known/spin/info"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(info["version"], "v5", "{info}");
    metrics_show(&[
        "kiosk_app_info{app=\"reloaded\",version=\"v5\"} 1",
        "kiosk_reloads_total{outcome=\"ok\"} 5",
        "kiosk_reloads_total{outcome=\"refused\"} 0",
        "kiosk_config_last_reload_successful 1",
    ])
    .await;

    // Versions that cannot load are refused, each named in the log, and
    // the one in force keeps serving: a component that does not exist, a
    // manifest that does not parse.
    std::fs::write(
        &manifest,
        version("v6", std::path::Path::new("/nonexistent/hello.wasm")),
    )
    .unwrap();
    host.hangup();
    assert_eq!(wait_for_count(&host, "reload refused", 1), 1);
    assert!(
        host.stderr().contains("/nonexistent/hello.wasm"),
        "{}",
        host.stderr()
    );
    std::fs::write(&manifest, "spin_manifest_version = 2\n[application\n").unwrap();
    host.hangup();
    assert_eq!(wait_for_count(&host, "reload refused", 2), 2);
    assert!(host.stderr().contains("spin.toml:2"), "{}", host.stderr());
    assert_eq!(get("/hello").await, "Hello, v5!\n");
    assert_eq!(incr().await, "3");
    // What an alarm watches.
    metrics_show(&[
        "kiosk_app_info{app=\"reloaded\",version=\"v5\"} 1",
        "kiosk_reloads_total{outcome=\"refused\"} 2",
        "kiosk_config_last_reload_successful 0",
    ])
    .await;

    // A new version with a [server] change: the version is put in force,
    // the host's limits only at the next start, which every reload until
    // then says again.
    std::fs::write(&manifest, version("v7", &hello)).unwrap();
    std::fs::write(
        &config,
        "[admin]\nlisten = \"127.0.0.1:0\"\n[server]\nmax_instances = 8\n",
    )
    .unwrap();
    let pending = "[server] changed; it takes effect at the next start";
    for n in [6, 7] {
        host.hangup();
        assert_eq!(wait_for_count(&host, "reloaded: ", n), n);
        assert_eq!(
            host.stderr().matches(pending).count(),
            n - 5,
            "{}",
            host.stderr()
        );
    }
    assert_eq!(get("/hello").await, "Hello, v7!\n");
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    // As installed, with ExecStart naming this build's binary.
    let unit = std::fs::read_to_string(support::repo().join("deploy/systemd/kiosk-host.service"))
        .unwrap()
        .replace(
            "/usr/local/bin/kiosk-host",
            env!("CARGO_BIN_EXE_kiosk-host"),
        );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kiosk-host.service");
    std::fs::write(&path, unit).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package; scripts/test installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // It exits 0 on unknown keys too, with a warning: any output fails.
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

/// The process that took over from `host` (its `handover: serving` line,
/// in the same log); ended when dropped, as it is no child of the test.
struct Successor(u32);

impl Successor {
    fn of(host: &Host) -> Successor {
        let log = host.stderr();
        let pid = log
            .lines()
            .find(|l| l.contains("handover: serving"))
            .and_then(|l| l.split("pid=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {log}"));
        assert_ne!(pid, host.pid());
        Successor(pid)
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        support::signal(self.0, "TERM");
    }
}

/// Two clients on new connections while `trigger` (or the host itself)
/// starts a handover: the new process serves, the old one drains and exits
/// cleanly, and no request fails. The new process, and how many requests
/// were served.
async fn handover_under_load(host: &mut Host, trigger: impl FnOnce(&Host)) -> (Successor, u32) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let load = Load::start(&fresh, &host.url("/hello"), 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    trigger(host);
    assert!(
        host.wait_for_log("handover: serving; the old process drains"),
        "{}",
        host.stderr()
    );
    let exit = tokio::task::block_in_place(|| host.wait_exit());
    assert!(exit.success(), "old process: {exit}");
    let new = Successor::of(host);
    // Still served, by the new process alone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    (new, load.stop_all_served().await)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigusr2_hands_the_listener_to_a_new_process_without_refusing_a_request() {
    // With an admin listener: it is handed over too.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("host.toml");
    std::fs::write(&config, "[admin]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let mut host = basics(&["--config", config.to_str().unwrap()]);
    let (_new, total) = handover_under_load(&mut host, Host::hand_over).await;
    eprintln!("handover: {total} requests on new connections, none refused");
    let served = get_status(host.url("/hello")).await;
    assert_eq!(served, 200, "served after the old process exited");
    let ready = get_status(host.admin_url("/ready")).await;
    assert_eq!(ready, 200, "the new process answers /ready");
}

#[tokio::test(flavor = "multi_thread")]
async fn recycle_after_hands_over_to_a_fresh_process_without_refusing_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("host.toml");
    let admin = "[admin]\nlisten = \"127.0.0.1:0\"\n";
    std::fs::write(
        &config,
        format!("{admin}[recycle]\nafter = \"3s\"\ncheck_interval = \"200ms\"\n"),
    )
    .unwrap();
    let mut host = basics(&["--config", config.to_str().unwrap()]);
    // The new process reads the configuration as it is when it starts:
    // without [recycle], it does not recycle in turn.
    std::fs::write(&config, admin).unwrap();
    // Nobody asks: the host recycles itself once due.
    let due = |host: &Host| assert!(host.wait_for_log("recycling: served"), "{}", host.stderr());
    let (_new, total) = handover_under_load(&mut host, due).await;
    eprintln!("recycled: {total} requests on new connections, none refused");
    let metrics = get_text(host.admin_url("/metrics")).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("process_resident_memory_bytes ")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handover_to_a_process_that_cannot_start_leaves_the_old_one_serving() {
    guest_wasm("hello");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("host.toml");
    std::fs::write(&config, "[server]\nrequest_timeout = \"10s\"\n").unwrap();
    let host = Host::start(
        &app("basics").join("spin.toml"),
        &["--config", config.to_str().unwrap()],
    );
    // A broken configuration is installed, then a handover is asked for.
    std::fs::write(
        &config,
        "[server]\nrequest_timeout = \"10s\"\nno_such_key = 1\n",
    )
    .unwrap();
    host.hand_over();
    assert!(
        host.wait_for_log("handover failed: the new process exited; this one keeps serving"),
        "{}",
        host.stderr()
    );
    assert!(host.stderr().contains("no_such_key"), "{}", host.stderr());
    assert_eq!(get_status(host.url("/hello")).await, 200);
}
